/* Connection state: what the kernel program remembers about each fd it has seen (the `conns`
 * table), which socket belongs to which connection (`socks`), how a new fd is tracked, and
 * how a connection ends (close(2) of its fd, or its TCP socket reaching CLOSE). */
#ifndef L7TAP_CONN_H
#define L7TAP_CONN_H

#include "common.h"
#include "emit.h"

struct conn_state {
	__u64 start_ns;
	__u64 sk;
	__u32 pending_len; /* a 4-byte read's value, waiting for the body (JVM servers) */
	__u8 protocol;
	__u8 role;
	__u8 ignored;
	__u8 attempts;
	/* Encrypted (TLS): a TLS library call used the fd, or its first bytes were a TLS record.
	 * Its syscall payload (ciphertext) is never sent nor classified; its plaintext comes
	 * from the TLS uprobes (tls.h). */
	__u8 tls;
};

struct sock_owner {
	struct l7_conn_id id;
	__u8 protocol;
	__u8 role;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* tgid << 32 | fd */
	__type(value, struct conn_state);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* struct sock * */
	__type(value, struct sock_owner);
} socks SEC(".maps");

static __always_inline __u64 conn_key(__u32 tgid, __u32 fd)
{
	return ((__u64)tgid << 32) | fd;
}

/* The struct sock of `fd` if it is a TCP (IPv4/IPv6 stream) socket, else 0. */
static __always_inline __u64 tcp_sock_of_fd(__u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return 0;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = 0;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return 0;
	umode_t mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return 0;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return 0;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (BPF_CORE_READ(sk, sk_type) != SOCK_STREAM)
		return 0;
	return (__u64)sk;
}

/* Remembers the fd of the current process as a new connection (role known from connect or
 * accept, else unknown), or as ignored when it is not a TCP socket. Returns 1 if it is a TCP
 * socket. */
static __always_inline int conn_track_new(__u64 key, __u32 fd, __u8 role)
{
	struct conn_state fresh = {};
	fresh.sk = tcp_sock_of_fd(fd);
	fresh.ignored = fresh.sk == 0;
	fresh.start_ns = bpf_ktime_get_ns();
	fresh.role = role;
	bpf_map_update_elem(&conns, &key, &fresh, BPF_ANY);
	return !fresh.ignored;
}

/* The state of the fd `key`, tracked now if it was never seen (opened before the capture,
 * or not a socket); 0 if it is not a TCP socket (or the table refused it). */
static __always_inline struct conn_state *conn_tcp(__u64 key, __u32 fd)
{
	struct conn_state *c = bpf_map_lookup_elem(&conns, &key);
	if (!c) {
		if (!conn_track_new(key, fd, L7_ROLE_UNKNOWN))
			return 0;
		c = bpf_map_lookup_elem(&conns, &key);
	}
	if (!c || !c->sk)
		return 0;
	return c;
}

/* The connection is encrypted: from now on only TLS plaintext feeds it. A socket given up
 * after the classifier's budget (spent on ciphertext before the uprobes saw it) is watched
 * again, with a fresh budget. */
static __always_inline void conn_mark_tls(struct conn_state *c)
{
	c->tls = 1;
	if (c->ignored && c->protocol == L7_PROTO_UNKNOWN) {
		c->ignored = 0;
		c->attempts = 0;
	}
}

/* The header of the connection's events (kind left for the emitter to set). */
static __always_inline void conn_header(struct l7_event_header *hdr, const struct conn_state *c,
					__u64 key, __u8 direction, __u64 ts)
{
	hdr->ts_ns = ts;
	hdr->conn.start_ns = c->start_ns;
	hdr->conn.tgid = key >> 32;
	hdr->conn.fd = (__u32)key;
	hdr->tid = bpf_get_current_pid_tgid();
	hdr->kind = 0;
	hdr->protocol = c->protocol;
	hdr->role = c->role;
	hdr->direction = direction;
}

/* Records that the connection `id`, just classified, owns its socket: the socket's TCP_CLOSE
 * then ends the connection even without close(2). */
static __always_inline void conn_own_sock(const struct conn_state *c, const struct l7_conn_id *id)
{
	struct sock_owner owner = { .protocol = c->protocol, .role = c->role };
	owner.id = *id;
	__u64 sk = c->sk;
	bpf_map_update_elem(&socks, &sk, &owner, BPF_ANY);
}

/* close(2) of `fd`: a classified connection ends (close event); the fd is forgotten. */
static __always_inline void conn_close_fd(void *ctx, __u32 tgid, __u32 fd)
{
	__u64 key = conn_key(tgid, fd);
	struct conn_state *c = bpf_map_lookup_elem(&conns, &key);
	if (!c)
		return;
	if (c->protocol != L7_PROTO_UNKNOWN) {
		struct l7_conn_id conn = { .start_ns = c->start_ns, .tgid = tgid, .fd = fd };
		emit_close(ctx, &conn, c->protocol, c->role);
		__u64 sk = c->sk;
		bpf_map_delete_elem(&socks, &sk);
	}
	bpf_map_delete_elem(&conns, &key);
}

/* The socket `sk` reached TCP_CLOSE: if a connection owns it, that connection ends. */
static __always_inline void conn_close_sock(void *ctx, __u64 sk)
{
	struct sock_owner *owner = bpf_map_lookup_elem(&socks, &sk);
	if (!owner)
		return;
	struct sock_owner copy = *owner;
	bpf_map_delete_elem(&socks, &sk);
	emit_close(ctx, &copy.id, copy.protocol, copy.role);
	/* Forget the fd too (the fd may be gone without close(2), e.g. dup2 over it), unless it
	 * already names a newer connection. */
	__u64 key = conn_key(copy.id.tgid, copy.id.fd);
	struct conn_state *c = bpf_map_lookup_elem(&conns, &key);
	if (c && c->start_ns == copy.id.start_ns)
		bpf_map_delete_elem(&conns, &key);
}

#endif
