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

/* Whether the window starts with a TLS record header: content type change_cipher_spec,
 * alert, handshake or application_data (20-23), version 3.x (SSL 3.0 to TLS 1.3's legacy
 * 3.3), and a record length within TLS's bound (2^14 + 2048). No watched protocol starts
 * so: a ClickHouse packet type is below 20 and a ZooKeeper frame of 0x1403.... bytes is
 * far over any limit; HTTP starts with a letter. */
static __always_inline int tls_record_header(const struct window *w, __u32 n)
{
	if (n < 5)
		return 0;
	__u8 type = w->b[0];
	__u16 len = ((__u16)w->b[3] << 8) | w->b[4];
	return type >= 20 && type <= 23 && w->b[1] == 3 && w->b[2] <= 4 && len > 0 &&
	       len <= 16384 + 2048;
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
