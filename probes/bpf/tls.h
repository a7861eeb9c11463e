/* TLS plaintext from OpenSSL-style libraries (a shared libssl.so*, or a binary holding the
 * SSL_* symbols itself): uprobes at the entry of SSL_write, SSL_read, SSL_write_ex and
 * SSL_read_ex remember the call's arguments by thread; one uretprobe at their return hands
 * the plaintext to on_payload, on the connection the call used.
 *
 * Which connection: the fd of the first TCP socket syscall (read/write/sendmsg/...) the
 * thread makes inside the call (the data syscalls' exit program reports it, tls_call_saw_fd), as
 * Pixie does; the SSL object remembers it (`tls_fds`) for calls that need no syscall (a
 * read served from the library's buffer). Reading the fd out of the SSL struct's BIO would
 * need per-version offsets. The loader attaches these programs where the symbols are
 * (probes/src/tls.rs, the attach points' registry). */
#ifndef L7TAP_TLS_H
#define L7TAP_TLS_H

#include <bpf/bpf_tracing.h>
#include "common.h"
#include "conn.h"
#include "payload.h"

/* A TLS library call, from its entry to its return. */
struct tls_call {
	__u64 ssl;       /* SSL * */
	__u64 buf;       /* the plaintext's buffer */
	__u64 len_out;   /* SSL_*_ex: where the library stores the byte count; 0 otherwise */
	__s32 fd;        /* the first TCP socket the call used, -1 none yet */
	__u8 direction;  /* enum l7_direction */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct tls_call);
} tls_calls SEC(".maps");

struct tls_ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tls_ssl_key);
	__type(value, __s32); /* fd */
} tls_fds SEC(".maps");

/* Whether thread `tid` is inside a TLS library call. */
static __always_inline int tls_call_of(__u32 tid)
{
	return bpf_map_lookup_elem(&tls_calls, &tid) != 0;
}

/* A socket syscall of thread `tid` on the connection `c` (fd `fd`): if the thread is inside
 * a TLS library call, that call's connection is this one, and it is encrypted. */
static __always_inline void tls_call_saw_fd(__u32 tid, struct conn_state *c, __u32 fd)
{
	struct tls_call *call = bpf_map_lookup_elem(&tls_calls, &tid);
	if (!call)
		return;
	if (call->fd < 0)
		call->fd = fd;
	conn_mark_tls(c);
}

static __always_inline void tls_count(int lost)
{
	struct l7_counters *cnt = counters_get();
	if (!cnt)
		return;
	if (lost)
		cnt->tls_lost++;
	else
		cnt->tls_payloads++;
}

static __always_inline int tls_enter(struct pt_regs *ctx, __u8 direction, int ex)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((id >> 32) == self_tgid)
		return 0;
	struct tls_call call = {
		.ssl = PT_REGS_PARM1(ctx),
		.buf = PT_REGS_PARM2(ctx),
		.len_out = ex ? PT_REGS_PARM4(ctx) : 0,
		.fd = -1,
		.direction = direction,
	};
	__u32 tid = id;
	if (bpf_map_update_elem(&tls_calls, &tid, &call, BPF_ANY))
		tls_count(1);
	return 0;
}

/* int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe")
int tls_write_enter(struct pt_regs *ctx) { return tls_enter(ctx, L7_DIR_EGRESS, 0); }

/* int SSL_read(SSL *ssl, void *buf, int num) */
SEC("uprobe")
int tls_read_enter(struct pt_regs *ctx) { return tls_enter(ctx, L7_DIR_INGRESS, 0); }

/* int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written) */
SEC("uprobe")
int tls_write_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, L7_DIR_EGRESS, 1); }

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe")
int tls_read_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, L7_DIR_INGRESS, 1); }

/* The return of any of the four: the plaintext moved (SSL_read/SSL_write: the return value;
 * the _ex variants: 1 and the count they stored) goes to on_payload, timestamped now. One
 * program for all four returns: the verifier checks on_payload once more, not four times. */
SEC("uretprobe")
int tls_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id, tgid = id >> 32;
	struct tls_call *found = bpf_map_lookup_elem(&tls_calls, &tid);
	if (!found)
		return 0;
	struct tls_call call = *found;
	bpf_map_delete_elem(&tls_calls, &tid);
	long ret = PT_REGS_RC(ctx);
	__u64 len = 0;
	if (call.len_out) {
		if (ret != 1 || bpf_probe_read_user(&len, sizeof(len), (void *)call.len_out))
			return 0;
	} else {
		if (ret <= 0)
			return 0;
		len = ret;
	}
	if (len == 0)
		return 0;
	struct tls_ssl_key sk = { .ssl = call.ssl, .tgid = tgid };
	__s32 fd = call.fd;
	if (fd >= 0) {
		bpf_map_update_elem(&tls_fds, &sk, &fd, BPF_ANY);
	} else {
		__s32 *known = bpf_map_lookup_elem(&tls_fds, &sk);
		if (!known) {
			tls_count(1); /* no syscall seen on this SSL object yet: no connection */
			return 0;
		}
		fd = *known;
	}
	__u64 key = conn_key(tgid, fd);
	struct conn_state *c = conn_tcp(key, fd);
	if (!c) {
		tls_count(1);
		return 0;
	}
	conn_mark_tls(c);
	if (c->ignored)
		return 0; /* its plaintext spent the budget: not a watched protocol */
	tls_count(0);
	struct user_payload src = { .addr = call.buf, .iovcnt = 0 };
	on_payload(ctx, c, key, call.direction, &src, len, bpf_ktime_get_ns());
	return 0;
}

#endif
