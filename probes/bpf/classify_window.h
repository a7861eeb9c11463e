/* What a protocol's classifier sees of one payload and decides, and the checks every
 * classifier shares: plain C with no BPF helper, so that the classify_<protocol>.h files also
 * compile for the host (ingest/c/classify_host.c, which `l7tap replay FILE.pcap` calls).
 *
 * The includer provides the __u8/__u32/__u64 types, __always_inline and __noinline, and,
 * before classify_clickhouse_http.h, `clickhouse_http_ports[]` and
 * `classify_server_port(in)` (the kernel's are in window.h). */
#ifndef L7TAP_CLASSIFY_WINDOW_H
#define L7TAP_CLASSIFY_WINDOW_H

#include "l7tap_events.h"

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

#endif
