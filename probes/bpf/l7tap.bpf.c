// SPDX-License-Identifier: GPL-2.0
/* l7tap kernel probes: syscall tracepoints that classify TCP connections as ClickHouse
 * native or ZooKeeper on their first bytes and send only those connections' payloads to
 * user space.
 *
 * Cost model: a data syscall is traced at its exit only. One that moved nothing costs a
 * lookup of the thread's TLS call; one on an fd that is not (or no longer) interesting
 * costs one hash lookup more, with no copy and no event. Only the first sight of an
 * fd walks task->files to learn whether it is a TCP socket, and only unclassified TCP
 * sockets get their first bytes inspected, a bounded number of times.
 *
 * This file holds the syscall programs; the rest is in headers included here (one BPF
 * object): common.h (globals, counters), emit.h (output and events), conn.h (connection
 * state), window.h and classify_<protocol>.h (detection), classify.h (classification),
 * payload.h (on_payload: the one path of payload, from classification to data events).
 */
#include "common.h"
#include "emit.h"
#include "conn.h"
#include "payload.h"
#include "tls.h"
#include "go_tls.h"

char LICENSE[] SEC("license") = "GPL";

/* SYSCALL_SELF_CONNECT: a connect(2) of l7tap itself, whose local end self.h records. */
enum syscall_kind { SYSCALL_CONNECT = 1, SYSCALL_SELF_CONNECT = 2 };

/* A connect(2)'s arguments, from its enter to its exit. */
struct syscall_args {
	__u64 key;
	__u8 kind;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct syscall_args);
} inflight SEC(".maps");

/* ---------------------------------------------------------------- data syscalls
 *
 * The data syscalls (read, write, sendto, recvfrom, readv, writev, recvmsg, sendmsg) are
 * traced at their exit only: the exit knows the byte count, and reads the arguments back
 * from the registers the syscall entry saved (they are the caller's and stay unchanged but
 * for the return value). An enter program would double the programs run on every traced
 * syscall on the host and need a map write and delete per call to carry the arguments. */

/* x86-64 syscall numbers (the probes are built for x86 only: build.rs, __TARGET_ARCH_x86). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47

/* What a data syscall moved, and where: fd, the user buffer or iovec array, direction. */
struct data_call {
	long fd;
	struct user_payload src;
	__u8 direction;
};

/* The data syscall `nr`'s arguments, read back from the current task's saved user registers;
 * 0 if `nr` is not a data syscall or they cannot be read. */
static __always_inline int data_call_args(long nr, struct data_call *call)
{
	/* A trusted kernel pointer: its fields are read by plain loads, no helper call. */
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	call->fd = PT_REGS_PARM1_SYSCALL(regs);
	__u64 arg2 = PT_REGS_PARM2_SYSCALL(regs);
	switch (nr) {
	case NR_WRITE:
	case NR_SENDTO:
		call->direction = L7_DIR_EGRESS;
		call->src.addr = arg2;
		return 1;
	case NR_READ:
	case NR_RECVFROM:
		call->direction = L7_DIR_INGRESS;
		call->src.addr = arg2;
		return 1;
	case NR_WRITEV:
	case NR_READV:
		call->direction = nr == NR_WRITEV ? L7_DIR_EGRESS : L7_DIR_INGRESS;
		call->src.addr = arg2;
		call->src.iovcnt = PT_REGS_PARM3_SYSCALL(regs);
		return call->src.iovcnt != 0;
	case NR_SENDMSG:
	case NR_RECVMSG: {
		/* The kernel writes back only the msghdr's lengths and flags: msg_iov is the
		 * caller's. */
		struct user_msghdr msg = {};
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)arg2))
			return 0;
		call->direction = nr == NR_SENDMSG ? L7_DIR_EGRESS : L7_DIR_INGRESS;
		call->src.addr = (__u64)msg.msg_iov;
		call->src.iovcnt = msg.msg_iovlen;
		return call->src.iovcnt != 0;
	}
	default:
		return 0;
	}
}

/* One program for the exits of every data syscall: their tracepoints share one context
 * layout, so the loader attaches this program to each of them. The verifier then checks it
 * once, not eight times (about 0.5 s each). */
SEC("tracepoint/syscalls/sys_exit_read")
int exit_data_syscall(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 tid = id;
	if (tgid == self_tgid)
		return 0;
	long ret = ctx->ret;
	/* A call that moved nothing matters only inside a TLS library call (tls.h): it still
	 * names the call's connection (a non-blocking read that would block). */
	if (ret <= 0 && !tls_call_of(tid))
		return 0;
	struct data_call call = {};
	if (!data_call_args(ctx->id, &call) || call.fd < 0)
		return 0;
	__u32 fd = call.fd;
	__u64 key = conn_key(tgid, fd);
	struct conn_state *c = conn_tcp(key, fd);
	if (!c)
		return 0;
	/* Inside a TLS library call: this socket is the call's connection (tls.h). A connection
	 * classified on its plaintext bytes is not encrypted (a TLS record is never classified,
	 * classify.h): it skips the lookup, one hash lookup per payload. */
	if (c->protocol == L7_PROTO_UNKNOWN || c->tls)
		tls_call_saw_fd(tid, c, fd);
	if (ret <= 0 || c->ignored || c->tls)
		return 0; /* nothing moved, given up, or ciphertext: no payload */
	on_payload(ctx, c, key, call.direction, &call.src, ret, bpf_ktime_get_ns());
	return 0;
}

/* ---------------------------------------------------------------- connection lifecycle */

SEC("tracepoint/syscalls/sys_enter_connect")
int enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	long fd = ctx->args[0];
	if (fd < 0)
		return 0;
	struct syscall_args args = {
		.key = conn_key(tgid, fd),
		.kind = tgid == self_tgid ? SYSCALL_SELF_CONNECT : SYSCALL_CONNECT,
	};
	__u32 tid = id;
	bpf_map_update_elem(&inflight, &tid, &args, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	long fd = ctx->args[0];
	if (tgid == self_tgid || fd < 0)
		return 0;
	conn_close_fd(ctx, tgid, fd);
	return 0;
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
	if (ctx->ret != 0 && ctx->ret != -EINPROGRESS)
		return 0;
	if (args.kind == SYSCALL_SELF_CONNECT) {
		__u64 sk = tcp_sock_of_fd((__u32)args.key);
		if (sk)
			self_end_record(sk);
		return 0;
	}
	if (args.kind != SYSCALL_CONNECT)
		return 0;
	conn_track_new(args.key, (__u32)args.key, L7_ROLE_CLIENT);
	return 0;
}

static __always_inline int exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((id >> 32) == self_tgid || ctx->ret < 0)
		return 0;
	conn_track_new(conn_key(id >> 32, ctx->ret), ctx->ret, L7_ROLE_SERVER);
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
	conn_close_sock(ctx, (__u64)ctx->skaddr);
	return 0;
}
