// SPDX-License-Identifier: GPL-2.0
/* l7tap kernel probes: syscall tracepoints that classify TCP connections as ClickHouse
 * native or ZooKeeper on their first bytes and send only those connections' payloads to
 * user space.
 *
 * Cost model: a syscall on an fd that is not (or no longer) interesting costs one hash
 * lookup at enter and one at exit, with no copy and no event. Only the first sight of an
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
enum syscall_kind { SYSCALL_DATA = 0, SYSCALL_CONNECT = 1, SYSCALL_SELF_CONNECT = 2 };

/* A syscall's arguments, from its enter to its exit. */
struct syscall_args {
	__u64 key;
	struct user_payload src; /* for SYSCALL_DATA */
	__u8 direction;
	__u8 kind;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct syscall_args);
} inflight SEC(".maps");

/* ---------------------------------------------------------------- syscall enter */

static __always_inline int enter_data(long fd_arg, __u64 buf, __u32 iovcnt, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (tgid == self_tgid || fd_arg < 0)
		return 0;
	__u32 fd = fd_arg;
	__u64 key = conn_key(tgid, fd);
	struct conn_state *c = conn_tcp(key, fd);
	if (!c)
		return 0;
	__u32 tid = id;
	/* Inside a TLS library call: this socket is the call's connection (tls.h). */
	tls_call_saw_fd(tid, c, fd);
	if (c->ignored || c->tls)
		return 0; /* given up, or ciphertext: no payload */
	struct syscall_args args = {
		.key = key, .src = { .addr = buf, .iovcnt = iovcnt }, .direction = direction,
		.kind = SYSCALL_DATA,
	};
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

/* ---------------------------------------------------------------- syscall exit */

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
	if (!c || c->ignored || c->tls)
		return 0;
	on_payload(ctx, c, args.key, args.direction, &args.src, ret, bpf_ktime_get_ns());
	return 0;
}

/* One program for the exits of every data syscall (write, read, sendto, recvfrom, writev,
 * readv, sendmsg, recvmsg): their tracepoints share one context layout, so the loader
 * attaches this program to each of them. The verifier then checks it once, not eight times
 * (about 0.5 s each). */
SEC("tracepoint/syscalls/sys_exit_read")
int exit_data_syscall(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx, ctx->ret); }
/* ---------------------------------------------------------------- connection lifecycle */

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
