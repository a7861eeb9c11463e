// SPDX-License-Identifier: GPL-2.0
/* l7tap kernel probes: syscall tracepoints that classify TCP connections as ClickHouse
 * native or ZooKeeper on their first bytes and send only those connections' payloads to
 * user space.
 *
 * Cost model: a syscall on an fd that is not (or no longer) interesting costs one hash
 * lookup at enter and one at exit, with no copy and no event. Only the first sight of an
 * fd walks task->files to learn whether it is a TCP socket, and only unclassified TCP
 * sockets get their first bytes inspected, a bounded number of times.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "l7tap_events.h"

char LICENSE[] SEC("license") = "GPL";

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define TCP_CLOSE 7
#define EINPROGRESS 115

/* Segments of an iovec syscall sent as their own events; the rest is reported as cut. */
#define MAX_SEGMENTS 8
/* iovecs a gathered syscall can have (IOV_MAX), and the payload bytes of one gathered event:
 * half the payload, because the verifier does not relate the bounds of offset and length
 * (see gather_iovec). */
#define MAX_GATHER 1024
#define GATHER_BYTES (L7_MAX_PAYLOAD / 2)
#define MAX_PIECES L7_MAX_PIECES
/* Bytes the classifier looks at. */
#define WINDOW 256

/* The classifier's view of a payload's first bytes. The checks below are global
 * (non-inlined) functions taking it: the verifier checks each once, on its own, instead of
 * every combination of their loops. */
struct window {
	__u8 b[WINDOW];
};

/* Set by the loader before load. */
volatile const __u32 self_tgid = 0;
/* Payload bytes captured per syscall segment, per protocol (ZooKeeper servers answer
 * pipelined requests in large writes; ClickHouse's large writes are data blocks the parser
 * skips by their sizes). */
volatile const __u32 capture_bytes_clickhouse = 16384;
volatile const __u32 capture_bytes_zookeeper = 65536;
/* Last bytes of a cut ClickHouse syscall sent as a tail event (0: none; at most
 * L7_MAX_TAIL). A client reads a large result in reads of up to ~1 MiB, and the last of
 * them ends with the response's final packets (ProfileInfo, Progress, an empty Data block,
 * EndOfStream: ~40 bytes on 18.16; or an Exception with its stack trace, up to ~5.4 KiB on
 * 18.16): the parser finds the query's end there. */
volatile const __u32 tail_bytes_clickhouse = 8192;
volatile const __u32 classify_budget = 16;
volatile const __u32 transport = L7_TRANSPORT_PERF;
/* Ring buffer fill level above which the reader is woken at once. */
volatile const __u64 ring_wakeup_bytes = 1 << 20;

struct conn_state {
	__u64 start_ns;
	__u64 sk;
	__u32 pending_len; /* a 4-byte read's value, waiting for the body (JVM servers) */
	__u8 protocol;
	__u8 role;
	__u8 ignored;
	__u8 attempts;
};

enum syscall_kind { SYSCALL_DATA = 0, SYSCALL_CONNECT = 1 };

struct syscall_args {
	__u64 key;
	__u64 buf; /* buffer, or iovec array when iovcnt > 0 */
	__u32 iovcnt;
	__u8 direction;
	__u8 kind;
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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct syscall_args);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* struct sock * */
	__type(value, struct sock_owner);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l7_data_event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l7_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} ring SEC(".maps");

static __always_inline struct l7_counters *counters_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

/* Sends one event to user space; failures are counted here, never silent. */
static __always_inline void output(void *ctx, void *data, __u64 size, __u64 payload)
{
	long err;
	if (transport == L7_TRANSPORT_RINGBUF)
		/* No wakeup per event (a self-interrupt inside the traced syscall): the reader
		 * polls every few milliseconds; it is woken only once the buffer fills up. */
		err = bpf_ringbuf_output(&ring, data, size,
					 bpf_ringbuf_query(&ring, BPF_RB_AVAIL_DATA) > ring_wakeup_bytes
						 ? BPF_RB_FORCE_WAKEUP
						 : BPF_RB_NO_WAKEUP);
	else
		err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, data, size);
	struct l7_counters *c = counters_get();
	if (!c)
		return;
	if (err) {
		c->events_failed++;
		c->bytes_failed += payload;
		c->last_error = err;
	} else {
		c->events_emitted++;
		c->bytes_emitted += payload;
	}
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

static __always_inline __u64 conn_key(__u32 tgid, __u32 fd)
{
	return ((__u64)tgid << 32) | fd;
}

/* ---------------------------------------------------------------- syscall enter */

static __always_inline int enter_data(long fd_arg, __u64 buf, __u32 iovcnt, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (tgid == self_tgid || fd_arg < 0)
		return 0;
	__u32 fd = fd_arg;
	__u64 key = conn_key(tgid, fd);
	struct conn_state *c = bpf_map_lookup_elem(&conns, &key);
	if (c) {
		if (c->ignored)
			return 0;
	} else {
		/* First sight of this fd (opened before the capture, or not a socket). */
		struct conn_state fresh = {};
		fresh.sk = tcp_sock_of_fd(fd);
		fresh.ignored = fresh.sk == 0;
		fresh.start_ns = bpf_ktime_get_ns();
		bpf_map_update_elem(&conns, &key, &fresh, BPF_ANY);
		if (fresh.ignored)
			return 0;
	}
	struct syscall_args args = {
		.key = key, .buf = buf, .iovcnt = iovcnt, .direction = direction,
		.kind = SYSCALL_DATA,
	};
	__u32 tid = id;
	bpf_map_update_elem(&inflight, &tid, &args, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, L7_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_read")
int enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, L7_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, L7_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, L7_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	__u32 n = ctx->args[2];
	return n ? enter_data(ctx->args[0], ctx->args[1], n, L7_DIR_EGRESS) : 0;
}

SEC("tracepoint/syscalls/sys_enter_readv")
int enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	__u32 n = ctx->args[2];
	return n ? enter_data(ctx->args[0], ctx->args[1], n, L7_DIR_INGRESS) : 0;
}

static __always_inline int enter_msg(long fd, __u64 msg_ptr, __u8 direction)
{
	struct user_msghdr msg = {};
	if (bpf_probe_read_user(&msg, sizeof(msg), (void *)msg_ptr))
		return 0;
	if (!msg.msg_iovlen)
		return 0;
	return enter_data(fd, (__u64)msg.msg_iov, msg.msg_iovlen, direction);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_msg(ctx->args[0], ctx->args[1], L7_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_msg(ctx->args[0], ctx->args[1], L7_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	long fd = ctx->args[0];
	if (tgid == self_tgid || fd < 0)
		return 0;
	struct syscall_args args = { .key = conn_key(tgid, fd), .kind = SYSCALL_CONNECT };
	__u32 tid = id;
	bpf_map_update_elem(&inflight, &tid, &args, BPF_ANY);
	return 0;
}

static __always_inline void emit_close(void *ctx, struct l7_conn_id *conn, __u8 protocol, __u8 role)
{
	struct l7_event_header ev = {};
	ev.ts_ns = bpf_ktime_get_ns();
	ev.conn = *conn;
	ev.tid = bpf_get_current_pid_tgid();
	ev.kind = L7_EVENT_CLOSE;
	ev.protocol = protocol;
	ev.role = role;
	output(ctx, &ev, sizeof(ev), 0);
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	long fd = ctx->args[0];
	if (tgid == self_tgid || fd < 0)
		return 0;
	__u64 key = conn_key(tgid, fd);
	struct conn_state *c = bpf_map_lookup_elem(&conns, &key);
	if (!c)
		return 0;
	if (c->protocol != L7_PROTO_UNKNOWN) {
		struct l7_conn_id conn = { .start_ns = c->start_ns, .tgid = tgid, .fd = fd };
		emit_close(ctx, &conn, c->protocol, c->role);
		__u64 sk = c->sk;
		bpf_map_delete_elem(&socks, &sk);
	}
	bpf_map_delete_elem(&conns, &key);
	return 0;
}

/* ---------------------------------------------------------------- classification */

static __always_inline __u32 be32_at(const __u8 *w, __u32 off)
{
	off &= WINDOW - 1;
	if (off > WINDOW - 4)
		return 0;
	return ((__u32)w[off] << 24) | ((__u32)w[off + 1] << 16) | ((__u32)w[off + 2] << 8) |
	       (__u32)w[off + 3];
}

static __always_inline int printable(__u8 b)
{
	return b >= 0x20 && b < 0x7f;
}

static __always_inline int id_char(__u8 b)
{
	return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
	       b == '-' || b == '_' || b == '.' || b == ':';
}

/* All `len` bytes at `off` are printable (id_only: query-id characters). */
__noinline int string_ok(struct window *win, __u32 off, __u32 len, int id_only)
{
	if (!win)
		return 0;
	const __u8 *w = win->b;
	for (__u32 i = 0; i < 64; i++) {
		if (i >= len)
			break;
		__u8 b = w[(off + i) & (WINDOW - 1)];
		if (id_only ? !id_char(b) : !printable(b))
			return 0;
	}
	return 1;
}

/* ClickHouse Hello (client's or server's): 00, name, major, minor, revision 1.1.54xxx. */
__noinline int ch_hello(struct window *win, __u32 n)
{
	if (!win)
		return 0;
	const __u8 *w = win->b;
	if (n < 8 || w[0] != 0)
		return 0;
	__u32 name = w[1];
	if (name < 1 || name > 63 || n < 2 + name + 5)
		return 0;
	if (!string_ok(win, 2, name, 0))
		return 0;
	__u32 p = (2 + name) & 127;
	return w[p] < 0x80 && w[p + 1] < 0x80 && (w[p + 2] & 0x80) && (w[p + 3] & 0x80) &&
	       w[p + 4] == 0x03;
}

/* ClickHouse Query: 01, query_id, ClientInfo starting with kind 1|2, initial_user,
 * initial_query_id, then the length of a non-empty initial_address. */
__noinline int ch_query(struct window *win, __u32 n)
{
	if (!win)
		return 0;
	const __u8 *w = win->b;
	if (n < 8 || w[0] != 1)
		return 0;
	__u32 qid = w[1];
	if (qid > 64 || !string_ok(win, 2, qid, 1))
		return 0;
	__u32 p = 2 + qid;
	__u8 kind = w[p & (WINDOW - 1)];
	if (kind != 1 && kind != 2)
		return 0;
	__u32 user = w[(p + 1) & (WINDOW - 1)];
	if (user > 63 || !string_ok(win, p + 2, user, 0))
		return 0;
	p = p + 2 + user;
	__u32 iqid = w[p & (WINDOW - 1)];
	if (iqid > 64 || !string_ok(win, p + 1, iqid, 1))
		return 0;
	p = p + 1 + iqid;
	__u32 addr = w[p & (WINDOW - 1)];
	if (p >= n || addr < 1 || addr > 63)
		return 0;
	return string_ok(win, p + 1, addr, 0);
}

static __always_inline int zk_known_op(__s32 op)
{
	return (op >= 1 && op <= 9) || (op >= 11 && op <= 22) || (op >= 100 && op <= 107) ||
	       op == -11 || (op >= 500 && op <= 507);
}

static __always_inline int zk_path_op(__s32 op)
{
	return (op >= 1 && op <= 8) || op == 9 || op == 12 || op == 13 || op == 15 || op == 17 ||
	       op == 18 || op == 19 || op == 21 || op == 104 || op == 106;
}

/* ZooKeeper ConnectRequest or a request; `frame` is the frame's length incl. its prefix. */
__noinline int zk_request(struct window *win, __u32 n, __u64 frame)
{
	if (!win)
		return 0;
	const __u8 *w = win->b;
	if (n < 12)
		return 0;
	__u32 len = be32_at(w, 0);
	if (len < 8 || len > 0xFFFFF || frame < (__u64)len + 4)
		return 0;
	/* ConnectRequest: version 0, 10 or 11, password length 16 at 28 (or 29 with 11). */
	if ((len == 44 || len == 45) && n >= 33) {
		__u32 version = be32_at(w, 4);
		if ((version == 0 || version == 10 || version == 11) &&
		    (be32_at(w, 28) == 16 || be32_at(w, 29) == 16))
			return L7_DETECT_ZK_CONNECT;
	}
	__s32 xid = be32_at(w, 4);
	__s32 op = be32_at(w, 8);
	if (!(xid > 0 || xid == -2 || xid == -4 || xid == -8) || !zk_known_op(op))
		return 0;
	if (xid == -2)
		return (op == 11 && len == 8) ? L7_DETECT_ZK_REQUEST : 0;
	if (zk_path_op(op)) {
		if (n < 17)
			return 0;
		__u32 plen = be32_at(w, 12);
		return (plen >= 1 && plen <= len - 8 && w[16] == '/') ? L7_DETECT_ZK_REQUEST : 0;
	}
	if (op == 14) /* multi: a MultiHeader with a known sub-op, done = false */
		return (n >= 17 && zk_known_op(be32_at(w, 12)) && w[16] == 0) ? L7_DETECT_ZK_REQUEST : 0;
	return 0;
}

/* ZooKeeper ConnectResponse, or a reply with a plausible zxid and error code. */
__noinline int zk_reply(struct window *win, __u32 n, __u64 frame)
{
	if (!win)
		return 0;
	const __u8 *w = win->b;
	if (n < 20)
		return 0;
	__u32 len = be32_at(w, 0);
	if (len < 16 || len > 0xFFFFF || frame < (__u64)len + 4)
		return 0;
	if ((len == 36 || len == 37) && n >= 24 && be32_at(w, 20) == 16) {
		__u32 version = be32_at(w, 4);
		if (version == 0 || version == 10 || version == 11 || version == 42)
			return L7_DETECT_ZK_CONNECT;
	}
	__s32 xid = be32_at(w, 4);
	__u32 zxid_hi = be32_at(w, 8);
	__s32 err = be32_at(w, 16);
	int err_ok = err == 0 || (err <= -1 && err >= -15) || (err <= -100 && err >= -127);
	if (!err_ok || (err != 0 && len != 16))
		return 0;
	if (xid == -2) /* ping reply */
		return len == 16 ? L7_DETECT_ZK_REPLY : 0;
	/* zxid: epoch in the high word, small; counter non-zero in practice */
	if (xid > 0 && zxid_hi < 0x10000 && (zxid_hi | be32_at(w, 12)) != 0)
		return L7_DETECT_ZK_REPLY;
	return 0;
}

/* The four-letter words of ZooKeeper 3.8 (FourLetterCommands.java). */
static __always_inline int zk_four_letter_word(const __u8 *w)
{
	__u32 v = ((__u32)w[0] << 24) | ((__u32)w[1] << 16) | ((__u32)w[2] << 8) | w[3];
#define WORD(a, b, c, d) (((__u32)(a) << 24) | ((__u32)(b) << 16) | ((__u32)(c) << 8) | (d))
	switch (v) {
	case WORD('r', 'u', 'o', 'k'): case WORD('m', 'n', 't', 'r'): case WORD('s', 't', 'a', 't'):
	case WORD('s', 'r', 'v', 'r'): case WORD('c', 'o', 'n', 'f'): case WORD('c', 'o', 'n', 's'):
	case WORD('c', 'r', 's', 't'): case WORD('d', 'u', 'm', 'p'): case WORD('e', 'n', 'v', 'i'):
	case WORD('s', 'r', 's', 't'): case WORD('w', 'c', 'h', 'c'): case WORD('w', 'c', 'h', 'p'):
	case WORD('w', 'c', 'h', 's'): case WORD('i', 's', 'r', 'o'): case WORD('g', 't', 'm', 'k'):
	case WORD('d', 'i', 'r', 's'): case WORD('h', 'a', 's', 'h'):
		return 1;
	}
#undef WORD
	return 0;
}

/* Copies up to WINDOW bytes from the start of the syscall's data into `w`. */
static __always_inline __u32 read_window(__u8 *w, const struct syscall_args *args, __u64 ret,
					 __u32 pending_len)
{
	__u32 off = 0;
	if (pending_len) {
		/* the 4-byte length read by the previous syscall precedes this body */
		w[0] = pending_len >> 24;
		w[1] = pending_len >> 16;
		w[2] = pending_len >> 8;
		w[3] = pending_len;
		off = 4;
	}
	if (!args->iovcnt) {
		__u32 len = ret < WINDOW - 4 ? ret : WINDOW - 4;
		barrier_var(len);
		if (len > WINDOW - 4)
			len = WINDOW - 4;
		if (bpf_probe_read_user(&w[off & 7], len, (void *)args->buf))
			return 0;
		return off + len;
	}
	__u64 left = ret;
	for (int i = 0; i < 4; i++) {
		if (i >= args->iovcnt || left == 0 || off >= WINDOW / 2)
			break;
		struct iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(args->buf + i * sizeof(iov))))
			break;
		__u64 len = iov.iov_len < left ? iov.iov_len : left;
		left -= len;
		if (len > WINDOW / 2)
			len = WINDOW / 2;
		__u32 take = len;
		barrier_var(take);
		if (take > WINDOW / 2)
			take = WINDOW / 2;
		__u32 at = off & (WINDOW / 2 - 1);
		if (bpf_probe_read_user(&w[at], take, iov.iov_base))
			break;
		off = at + take;
	}
	return off;
}

static __always_inline void emit_open(void *ctx, struct conn_state *c, __u64 key, __u8 detect,
				     __u64 ts)
{
	struct l7_open_event ev = {};
	/* the classifying syscall's time: the open event sorts just before its data */
	ev.hdr.ts_ns = ts;
	ev.hdr.conn.start_ns = c->start_ns;
	ev.hdr.conn.tgid = key >> 32;
	ev.hdr.conn.fd = (__u32)key;
	ev.hdr.tid = bpf_get_current_pid_tgid();
	ev.hdr.kind = L7_EVENT_OPEN;
	ev.hdr.protocol = c->protocol;
	ev.hdr.role = c->role;
	ev.cgroup_id = bpf_get_current_cgroup_id();
	ev.detect = detect;
	/* the process's name (its main thread's), not the calling thread's */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&ev.comm, task, group_leader, comm);
	struct sock *sk = (struct sock *)c->sk;
	ev.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	ev.local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	ev.remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (ev.family == AF_INET) {
		BPF_CORE_READ_INTO(&ev.local_addr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO(&ev.remote_addr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO(&ev.local_addr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&ev.remote_addr, sk, __sk_common.skc_v6_daddr);
	}
	output(ctx, &ev, sizeof(ev), 0);

	struct sock_owner owner = { .protocol = c->protocol, .role = c->role };
	owner.id = ev.hdr.conn;
	__u64 skp = c->sk;
	bpf_map_update_elem(&socks, &skp, &owner, BPF_ANY);
}

/* Decides whether the connection speaks a watched protocol; returns 1 when classified. */
static __always_inline int classify(void *ctx, struct conn_state *c, struct syscall_args *args,
				    __u64 ret, __u64 ts, __u32 *prefix_len)
{
	__u32 zero = 0;
	struct l7_data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	__u8 *w = ev->payload;
	__u8 ingress = args->direction == L7_DIR_INGRESS;

	/* A JVM server reads a ZooKeeper frame's 4-byte length, then its body; the same first
	 * 4 bytes can also be a four-letter word (mntr, ruok, ...), sent alone. */
	__u32 pending = c->pending_len;
	c->pending_len = 0;
	if ((ret == 4 || ret == 5) && !args->iovcnt) {
		__u8 word[5] = {};
		bpf_probe_read_user(&word, ret == 5 ? 5 : 4, (void *)args->buf);
		if ((ret == 4 || word[4] == '\n') && zk_four_letter_word(word)) {
			c->protocol = L7_PROTO_ZOOKEEPER;
			if (c->role == L7_ROLE_UNKNOWN)
				c->role = ingress ? L7_ROLE_SERVER : L7_ROLE_CLIENT;
			struct l7_counters *cnt = counters_get();
			if (cnt)
				cnt->classified++;
			emit_open(ctx, c, args->key, L7_DETECT_ZK_4LW, ts);
			return 1;
		}
		__u32 len = ((__u32)word[0] << 24) | ((__u32)word[1] << 16) | ((__u32)word[2] << 8) | word[3];
		if (ingress && ret == 4 && len >= 8 && len <= 0xFFFFF) {
			c->pending_len = len;
			return 0;
		}
	}
	if (pending && ret != pending)
		pending = 0;

	struct l7_counters *cnt = counters_get();
	if (cnt)
		cnt->classify_checks++;
	__u32 n = read_window(w, args, ret, pending);
	__u64 frame = ret + (pending ? 4 : 0);
	__u8 detect = 0, role = 0, protocol = 0;
	__u8 sender = ingress ? L7_ROLE_SERVER : L7_ROLE_CLIENT;   /* role if these are requests */
	__u8 answerer = ingress ? L7_ROLE_CLIENT : L7_ROLE_SERVER; /* role if these are replies */

	struct window *win = (struct window *)w;
	if (ch_hello(win, n)) {
		detect = L7_DETECT_CH_HELLO, protocol = L7_PROTO_CLICKHOUSE, role = sender;
	} else if (ch_query(win, n)) {
		detect = L7_DETECT_CH_QUERY, protocol = L7_PROTO_CLICKHOUSE, role = sender;
	} else if ((detect = zk_request(win, n, frame))) {
		protocol = L7_PROTO_ZOOKEEPER, role = sender;
	} else if ((detect = zk_reply(win, n, frame))) {
		protocol = L7_PROTO_ZOOKEEPER, role = answerer;
	}
	if (!protocol) {
		/* 1-byte writes (ClickHouse pings) do not use up the budget */
		if (ret > 1 && ++c->attempts >= classify_budget) {
			c->ignored = 1;
			if (cnt)
				cnt->ignored++;
		}
		return 0;
	}
	c->protocol = protocol;
	if (c->role == L7_ROLE_UNKNOWN)
		c->role = role;
	if (cnt)
		cnt->classified++;
	emit_open(ctx, c, args->key, detect, ts);
	*prefix_len = pending ? 4 : 0;
	return 1;
}

/* ---------------------------------------------------------------- data events */

static __always_inline void fill_header(struct l7_data_event *ev, struct conn_state *c,
					struct syscall_args *args, __u64 ts)
{
	ev->hdr.ts_ns = ts;
	ev->hdr.conn.start_ns = c->start_ns;
	ev->hdr.conn.tgid = args->key >> 32;
	ev->hdr.conn.fd = (__u32)args->key;
	ev->hdr.tid = bpf_get_current_pid_tgid();
	ev->hdr.kind = L7_EVENT_DATA;
	ev->hdr.protocol = c->protocol;
	ev->hdr.role = c->role;
	ev->hdr.direction = args->direction;
	ev->flags = 0;
}

/* Sends the data event `ev` carrying `captured` payload bytes. */
static __always_inline void send_data(void *ctx, struct l7_data_event *ev, __u32 captured)
{
	ev->captured = captured;
	__u64 size = offsetof(struct l7_data_event, payload) + captured;
	barrier_var(size);
	if (size > sizeof(*ev))
		size = sizeof(*ev);
	output(ctx, ev, size, captured);
}

/* Data events for `len` bytes at `base`: the first `limit` bytes (the connection's capture
 * limit, up to MAX_PIECES * L7_MAX_PAYLOAD) in pieces of at most L7_MAX_PAYLOAD, the last
 * piece also counting the cut rest in its `total`. */
static __always_inline void emit_segment(void *ctx, struct l7_data_event *ev, __u64 base,
					 __u64 len, __u16 segment, __u32 limit)
{
	__u64 left = len;
	__u64 budget = limit;
	ev->segment = segment;
	for (int piece = 0; piece < MAX_PIECES; piece++) {
		__u32 take = left < L7_MAX_PAYLOAD ? left : L7_MAX_PAYLOAD;
		if (take > budget)
			take = budget;
		barrier_var(take);
		if (take > L7_MAX_PAYLOAD)
			take = L7_MAX_PAYLOAD;
		budget -= take;
		/* the last piece carries what remains uncaptured */
		int last = budget == 0 || left == take || piece == MAX_PIECES - 1;
		ev->total = last ? left : take;
		if (take && bpf_probe_read_user(ev->payload, take, (void *)base))
			take = 0; /* unreadable: report the bytes as cut */
		send_data(ctx, ev, take);
		if (last)
			break;
		left -= take;
		base += take;
	}
}

/* Bytes of a cut segment of `len` bytes to send as its tail: only on ClickHouse connections,
 * and only past the capture limit (an uncut segment costs this one comparison). */
static __always_inline __u64 tail_len(struct conn_state *c, __u64 len, __u32 limit)
{
	if (len <= limit || c->protocol != L7_PROTO_CLICKHOUSE)
		return 0;
	__u64 cut = len - limit;
	return cut < tail_bytes_clickhouse ? cut : tail_bytes_clickhouse;
}

/* The tail event of a segment ending at `end`: its last `len` bytes (at most L7_MAX_TAIL),
 * flagged L7_DATA_TAIL. The head event was sent just before with `total` excluding them. */
static __always_inline void emit_tail(void *ctx, struct l7_data_event *ev, __u64 end, __u64 len,
				      __u16 segment)
{
	__u32 take = len < L7_MAX_TAIL ? len : L7_MAX_TAIL;
	barrier_var(take);
	if (take > L7_MAX_TAIL)
		take = L7_MAX_TAIL;
	ev->segment = segment;
	ev->flags = L7_DATA_TAIL;
	ev->total = take;
	if (bpf_probe_read_user(ev->payload, take, (void *)(end - take)))
		take = 0; /* unreadable: reported as cut */
	send_data(ctx, ev, take);
	ev->flags = 0;
}

/* State of gathering a writev/readv's iovecs into one event (bpf_loop callback context). */
struct gather_state {
	__u64 iov_array;
	__u64 left; /* bytes of the syscall not gathered yet */
	__u32 iovcnt;
	__u32 next;  /* next iovec */
	__u32 off;    /* bytes gathered */
	__u32 failed; /* an iovec was unreadable or larger than GATHER_BYTES */
};

/* bpf_loop callback: appends the next iovec to the scratch event, or stops when it does not
 * fit. The verifier checks this body once, whatever the number of iovecs (an unrolled loop
 * of hundreds exceeds its budget). */
static long gather_iovec(__u32 i, void *data)
{
	struct gather_state *g = data;
	if (g->next >= g->iovcnt || g->left == 0)
		return 1;
	__u32 zero = 0;
	struct l7_data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		goto fail;
	struct iovec iov = {};
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(g->iov_array + g->next * sizeof(iov))))
		goto fail;
	__u64 len = iov.iov_len < g->left ? iov.iov_len : g->left;
	if (len == 0) {
		g->next++;
		return 0;
	}
	if (len > GATHER_BYTES)
		goto fail;
	if (g->off + len > GATHER_BYTES)
		return 1; /* full: the rest is cut */
	/* The mask and the clamp never change a value (checked just above); they bound the
	 * registers the copy uses, for the verifier. */
	__u32 at = g->off;
	barrier_var(at);
	at &= GATHER_BYTES - 1; /* a power of two */
	__u32 take = len;
	barrier_var(take);
	if (take > GATHER_BYTES)
		take = GATHER_BYTES;
	if (bpf_probe_read_user(ev->payload + at, take, iov.iov_base))
		goto fail;
	g->off += take;
	g->left -= len;
	g->next++;
	return 0;
fail:
	g->failed = 1;
	return 1;
}

/* Pipelining clients hand writev hundreds of small iovecs (one per request), more than the
 * MAX_SEGMENTS sent one by one: copies them back to back into one event of up to
 * GATHER_BYTES, the rest reported as cut. Returns 0, having sent nothing, if an iovec is
 * larger than GATHER_BYTES or unreadable, or if the capture limit is below GATHER_BYTES:
 * the syscall then goes segment by segment. (A bound taken from the limit, or several
 * events per syscall, made the verifier give up.) */
static __always_inline int emit_gathered(void *ctx, struct l7_data_event *ev,
					 struct syscall_args *args, __u64 ret, __u32 limit)
{
	if (limit < GATHER_BYTES)
		return 0;
	struct gather_state g = {
		.iov_array = args->buf,
		.left = ret,
		.iovcnt = args->iovcnt,
	};
	bpf_loop(MAX_GATHER, gather_iovec, &g, 0);
	if (g.failed)
		return 0;
	ev->total = g.off + g.left;
	ev->segment = 0;
	send_data(ctx, ev, g.off);
	return 1;
}

static __always_inline void emit_data(void *ctx, struct conn_state *c, struct syscall_args *args,
				      __u64 ret, __u64 ts)
{

	__u32 zero = 0;
	struct l7_data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return;
	fill_header(ev, c, args, ts);
	__u32 limit = c->protocol == L7_PROTO_ZOOKEEPER ? capture_bytes_zookeeper
							 : capture_bytes_clickhouse;
	if (!args->iovcnt) {
		__u64 tail = tail_len(c, ret, limit);
		emit_segment(ctx, ev, args->buf, ret - tail, 0, limit);
		if (tail)
			emit_tail(ctx, ev, args->buf + ret, tail, 0);
		return;
	}
	if (args->iovcnt > MAX_SEGMENTS && emit_gathered(ctx, ev, args, ret, limit))
		return;
	__u64 left = ret;
	/* the last segment's tail, sent after the loop (one copy of emit_tail to verify) */
	__u64 tail = 0, tail_end = 0;
	__u16 tail_segment = 0;
	for (int i = 0; i < MAX_SEGMENTS; i++) {
		if (i >= args->iovcnt || left == 0)
			break;
		struct iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(args->buf + i * sizeof(iov))))
			break;
		__u64 len = iov.iov_len < left ? iov.iov_len : left;
		left -= len;
		__u64 t = left ? 0 : tail_len(c, len, limit);
		if (len)
			emit_segment(ctx, ev, (__u64)iov.iov_base, len - t, i, limit);
		if (t) {
			tail = t;
			tail_end = (__u64)iov.iov_base + len;
			tail_segment = i;
		}
	}
	if (tail)
		emit_tail(ctx, ev, tail_end, tail, tail_segment);
	if (left) {
		/* more segments than sent one by one: the rest is reported as cut bytes */
		ev->total = left;
		ev->captured = 0;
		ev->segment = MAX_SEGMENTS;
		output(ctx, ev, offsetof(struct l7_data_event, payload), 0);
	}
}

/* The 4 length bytes a JVM server read just before the syscall that classified it. */
static __always_inline void emit_prefix(void *ctx, struct conn_state *c, struct syscall_args *args,
					__u32 len, __u64 ts)
{
	__u32 zero = 0;
	struct l7_data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return;
	fill_header(ev, c, args, ts);
	ev->total = 4;
	ev->captured = 4;
	ev->segment = 0;
	ev->payload[0] = len >> 24;
	ev->payload[1] = len >> 16;
	ev->payload[2] = len >> 8;
	ev->payload[3] = len;
	output(ctx, ev, offsetof(struct l7_data_event, payload) + 4, 4);
}

static __always_inline int exit_data(void *ctx, long ret)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct syscall_args *found = bpf_map_lookup_elem(&inflight, &tid);
	if (!found)
		return 0;
	struct syscall_args args = *found;
	bpf_map_delete_elem(&inflight, &tid);
	if (ret <= 0 || args.kind != SYSCALL_DATA)
		return 0;
	struct conn_state *c = bpf_map_lookup_elem(&conns, &args.key);
	if (!c || c->ignored)
		return 0;
	__u64 ts = bpf_ktime_get_ns();
	if (c->protocol == L7_PROTO_UNKNOWN) {
		__u32 prefix = 0;
		if (!classify(ctx, c, &args, ret, ts, &prefix))
			return 0;
		if (prefix)
			emit_prefix(ctx, c, &args, (__u32)ret, ts); /* the body length was the prefix */
	}
	emit_data(ctx, c, &args, ret, ts);
	return 0;
}

/* One program for the exits of every data syscall (write, read, sendto, recvfrom, writev,
 * readv, sendmsg, recvmsg): their tracepoints share one context layout, so the loader
 * attaches this program to each of them. The verifier then checks it once, not eight times
 * (about 0.5 s each). */
SEC("tracepoint/syscalls/sys_exit_read")
int exit_data_syscall(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx, ctx->ret); }

/* ---------------------------------------------------------------- connection lifecycle */

static __always_inline void track_new(__u32 tgid, long fd, __u8 role)
{
	__u64 key = conn_key(tgid, fd);
	struct conn_state fresh = {};
	fresh.sk = tcp_sock_of_fd(fd);
	fresh.ignored = fresh.sk == 0;
	fresh.start_ns = bpf_ktime_get_ns();
	fresh.role = role;
	bpf_map_update_elem(&conns, &key, &fresh, BPF_ANY);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id;
	struct syscall_args *found = bpf_map_lookup_elem(&inflight, &tid);
	if (!found)
		return 0;
	struct syscall_args args = *found;
	bpf_map_delete_elem(&inflight, &tid);
	if (args.kind != SYSCALL_CONNECT || (ctx->ret != 0 && ctx->ret != -EINPROGRESS))
		return 0;
	track_new(id >> 32, (__u32)args.key, L7_ROLE_CLIENT);
	return 0;
}

static __always_inline int exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((id >> 32) == self_tgid || ctx->ret < 0)
		return 0;
	track_new(id >> 32, ctx->ret, L7_ROLE_SERVER);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept_(struct trace_event_raw_sys_exit *ctx) { return exit_accept(ctx); }
SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct trace_event_raw_sys_exit *ctx) { return exit_accept(ctx); }

/* A socket that reaches TCP_CLOSE without close(2) (its process exited or was killed, or
 * it was reset) still ends its connection. */
struct inet_sock_set_state_ctx {
	__u64 common;
	const void *skaddr;
	int oldstate;
	int newstate;
};

SEC("tracepoint/sock/inet_sock_set_state")
int sock_set_state(struct inet_sock_set_state_ctx *ctx)
{
	if (ctx->newstate != TCP_CLOSE)
		return 0;
	__u64 sk = (__u64)ctx->skaddr;
	struct sock_owner *owner = bpf_map_lookup_elem(&socks, &sk);
	if (!owner)
		return 0;
	struct sock_owner copy = *owner;
	bpf_map_delete_elem(&socks, &sk);
	emit_close(ctx, &copy.id, copy.protocol, copy.role);
	/* Forget the fd too (the fd may be gone without close(2), e.g. dup2 over it), unless it
	 * already names a newer connection. */
	__u64 key = conn_key(copy.id.tgid, copy.id.fd);
	struct conn_state *c = bpf_map_lookup_elem(&conns, &key);
	if (c && c->start_ns == copy.id.start_ns)
		bpf_map_delete_elem(&conns, &key);
	return 0;
}
