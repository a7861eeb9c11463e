/* The classifier's view of a payload in the kernel: its first bytes copied into a window
 * (classify_window.h holds what a classifier sees and decides), the configured ports and the
 * connection's server port, which the classifiers read through the kernel. */
#ifndef L7TAP_WINDOW_H
#define L7TAP_WINDOW_H

#include "common.h"
#include "emit.h"
#include "classify_window.h"

/* Server ports of ClickHouse's HTTP interface (0: an unused entry), set by the loader. */
volatile const __u16 clickhouse_http_ports[L7_CLICKHOUSE_HTTP_MAX_PORTS] = { 8123 };

/* The port at the server's end of the connection if the payload is a request: the local
 * port when the observed process received it, the remote port when it sent it. */
static __always_inline __u16 classify_server_port(const struct classify_input *in)
{
	struct sock *sk = (struct sock *)in->sk;
	return in->ingress ? BPF_CORE_READ(sk, __sk_common.skc_num)
			   : bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

/* Copies up to WINDOW bytes from the start of the payload at `src` (`ret` bytes) into `w`,
 * after the 4 bytes of `pending_len` if it is set. Returns the bytes in the window. */
static __always_inline __u32 read_window(__u8 *w, const struct user_payload *src, __u64 ret,
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
	if (!src->iovcnt) {
		__u32 len = ret < WINDOW - 4 ? ret : WINDOW - 4;
		barrier_var(len);
		if (len > WINDOW - 4)
			len = WINDOW - 4;
		if (bpf_probe_read_user(&w[off & 7], len, (void *)src->addr))
			return 0;
		return off + len;
	}
	__u64 left = ret;
	for (int i = 0; i < 4; i++) {
		if (i >= src->iovcnt || left == 0 || off >= WINDOW / 2)
			break;
		struct iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(src->addr + i * sizeof(iov))))
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

#endif
