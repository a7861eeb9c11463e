/* The classifier's view of a payload: its first bytes copied into a window, and the checks
 * every protocol's classifier shares. */
#ifndef L7TAP_WINDOW_H
#define L7TAP_WINDOW_H

#include "common.h"
#include "emit.h"

/* Bytes the classifier looks at. */
#define WINDOW 256

/* The classifier's view of a payload's first bytes. The checks of each protocol are global
 * (non-inlined) functions taking it: the verifier checks each once, on its own, instead of
 * every combination of their loops. */
struct window {
	__u8 b[WINDOW];
};

static __always_inline __u32 be32_at(const __u8 *w, __u32 off)
{
	off &= WINDOW - 1;
	if (off > WINDOW - 4)
		return 0;
	return ((__u32)w[off] << 24) | ((__u32)w[off + 1] << 16) | ((__u32)w[off + 2] << 8) |
	       (__u32)w[off + 3];
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

/* What a protocol's classifier sees of one payload. */
struct classify_input {
	struct window *win; /* the payload's first bytes (after a held length prefix) */
	__u64 len;          /* bytes of the payload */
	__u64 frame;        /* bytes of the payload and of its held prefix */
	__u64 sk;           /* the connection's struct sock */
	__u32 n;            /* bytes in the window */
	__u32 iovcnt;       /* 0: a plain buffer; else iovecs */
	__u8 ingress;       /* the observed process received the payload */
};

/* What a classifier decides besides its detect code. */
struct classify_verdict {
	__u8 role; /* the observed process's role, when detected */
	/* Not detected, but the payload (4 bytes) may be a frame length read on its own: the
	 * next payload is classified with these 4 bytes before it (JVM servers). */
	__u32 hold_len;
};

/* The observed process's role if the payload is a request: it sent or received it. */
static __always_inline __u8 request_role(const struct classify_input *in)
{
	return in->ingress ? L7_ROLE_SERVER : L7_ROLE_CLIENT;
}

/* The observed process's role if the payload is a reply. */
static __always_inline __u8 reply_role(const struct classify_input *in)
{
	return in->ingress ? L7_ROLE_CLIENT : L7_ROLE_SERVER;
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
