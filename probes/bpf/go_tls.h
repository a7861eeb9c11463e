/* TLS plaintext from Go's crypto/tls: uprobes at the entry of crypto/tls.(*Conn).Write and
 * crypto/tls.(*Conn).Read, and at each of their RET instructions (never uretprobes: Go moves
 * goroutine stacks, and a rewritten return address on a moved stack crashes the program).
 *
 * Go's register ABI (Go >= 1.17, amd64): at entry RAX is the receiver (*tls.Conn), RBX and
 * RCX the []byte's pointer and length; at a RET RAX is the byte count n (RBX, RCX the
 * error). R14 always holds the current goroutine (g), so a call is keyed by goroutine: a
 * goroutine may resume on another thread between its entry and its return.
 *
 * Which connection: the fd read out of the *tls.Conn at entry: conn (a net.Conn interface)
 * -> its data, a *net.TCPConn -> conn.fd (*netFD) -> pfd.Sysfd, at offsets the loader
 * writes per binary (go_tls_binaries, from a table keyed by the binary's Go version,
 * probes/src/go_tls.rs). The interface's itab must be the binary's
 * `go.itab.*net.TCPConn,net.Conn`: another net.Conn (a Unix socket, a wrapper type) is not
 * read. Binaries are told apart by their executable file (device, inode); a position
 * independent binary's load address is the entry's IP minus the function's address. */
#ifndef L7TAP_GO_TLS_H
#define L7TAP_GO_TLS_H

#include <bpf/bpf_tracing.h>
#include "common.h"
#include "conn.h"
#include "payload.h"
#include "tls.h"

/* A Go executable (task->mm->exe_file). */
struct go_exe_key {
	__u64 ino;
	__u32 dev; /* the kernel's dev_t: major << 20 | minor */
	__u32 _pad;
};

/* What the programs need of one Go binary (written by the loader before it attaches). */
struct go_tls_binary {
	__u64 write_addr;    /* crypto/tls.(*Conn).Write, link-time address */
	__u64 read_addr;     /* crypto/tls.(*Conn).Read */
	__u64 tcp_conn_itab; /* go.itab.*net.TCPConn,net.Conn */
	__u32 conn_iface;    /* tls.Conn.conn (net.Conn: itab, data) */
	__u32 tcp_conn_fd;   /* net.TCPConn.conn.fd (*netFD) */
	__u32 netfd_sysfd;   /* netFD.pfd.Sysfd (int) */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct go_exe_key);
	__type(value, struct go_tls_binary);
} go_tls_binaries SEC(".maps");

struct go_call_key {
	__u64 g;
	__u32 tgid;
	__u32 _pad;
};

struct go_tls_call {
	__u64 buf;
	__s32 fd;
	__u8 direction;
};

/* LRU: a call that never returns (a panic unwinding through it) leaves its entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_call_key);
	__type(value, struct go_tls_call);
} go_tls_calls SEC(".maps");

static __always_inline int go_tls_enter(struct pt_regs *ctx, __u8 direction)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (tgid == self_tgid)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct inode *exe = BPF_CORE_READ(task, mm, exe_file, f_inode);
	struct go_exe_key ek = {
		.ino = BPF_CORE_READ(exe, i_ino),
		.dev = BPF_CORE_READ(exe, i_sb, s_dev),
	};
	struct go_tls_binary *bin = bpf_map_lookup_elem(&go_tls_binaries, &ek);
	if (!bin) {
		tls_count(1); /* crypto/tls in a file that is not the executable */
		return 0;
	}
	__u64 func = direction == L7_DIR_EGRESS ? bin->write_addr : bin->read_addr;
	__u64 load_bias = PT_REGS_IP(ctx) - func;
	__u64 iface[2] = {};
	if (bpf_probe_read_user(iface, sizeof(iface), (void *)(ctx->ax + bin->conn_iface)) ||
	    iface[0] != load_bias + bin->tcp_conn_itab) {
		tls_count(1); /* not over a *net.TCPConn: no connection l7tap knows */
		return 0;
	}
	__u64 netfd = 0;
	__s64 sysfd = -1;
	if (bpf_probe_read_user(&netfd, sizeof(netfd), (void *)(iface[1] + bin->tcp_conn_fd)) ||
	    bpf_probe_read_user(&sysfd, sizeof(sysfd), (void *)(netfd + bin->netfd_sysfd)) ||
	    sysfd < 0 || sysfd > 0x7fffffff) {
		tls_count(1);
		return 0;
	}
	__u32 fd = sysfd;
	__u64 key = conn_key(tgid, fd);
	struct conn_state *c = conn_tcp(key, fd);
	if (!c) {
		tls_count(1);
		return 0;
	}
	/* From now on its syscalls carry ciphertext: none reaches a parser. */
	conn_mark_tls(c);
	struct go_tls_call call = { .buf = ctx->bx, .fd = fd, .direction = direction };
	struct go_call_key gk = { .g = ctx->r14, .tgid = tgid };
	if (bpf_map_update_elem(&go_tls_calls, &gk, &call, BPF_ANY))
		tls_count(1);
	return 0;
}

/* func (c *Conn) Write(b []byte) (int, error) */
SEC("uprobe")
int go_tls_write_enter(struct pt_regs *ctx) { return go_tls_enter(ctx, L7_DIR_EGRESS); }

/* func (c *Conn) Read(b []byte) (int, error) */
SEC("uprobe")
int go_tls_read_enter(struct pt_regs *ctx) { return go_tls_enter(ctx, L7_DIR_INGRESS); }

/* A RET of either: the n bytes moved (RAX) go to on_payload, timestamped now. */
SEC("uprobe")
int go_tls_return(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_call_key gk = { .g = ctx->r14, .tgid = tgid };
	struct go_tls_call *found = bpf_map_lookup_elem(&go_tls_calls, &gk);
	if (!found)
		return 0;
	struct go_tls_call call = *found;
	bpf_map_delete_elem(&go_tls_calls, &gk);
	long n = ctx->ax;
	if (n <= 0)
		return 0;
	__u64 key = conn_key(tgid, call.fd);
	struct conn_state *c = conn_tcp(key, call.fd);
	if (!c) {
		tls_count(1);
		return 0;
	}
	conn_mark_tls(c);
	if (c->ignored)
		return 0; /* its plaintext spent the budget: not a watched protocol */
	tls_count(0);
	struct user_payload src = { .addr = call.buf, .iovcnt = 0 };
	on_payload(ctx, c, key, call.direction, &src, n, bpf_ktime_get_ns());
	return 0;
}

#endif
