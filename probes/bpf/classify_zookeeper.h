/* ZooKeeper detection: a ConnectRequest or ConnectResponse, a request with a known opcode
 * (and path), a reply with a plausible zxid and error, or a four-letter word. */
#ifndef L7TAP_CLASSIFY_ZOOKEEPER_H
#define L7TAP_CLASSIFY_ZOOKEEPER_H

#include "classify_window.h"

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

/* The ZooKeeper classifier (dispatched from L7_PROTOCOLS). Two cases come before the frame
 * checks: a four-letter word (mntr, ruok, ...) sent alone as a plain 4-byte payload (or 5
 * with a newline); and a JVM server's read of a frame's 4-byte length on its own, which is
 * held for the next payload, its body (see struct classify_verdict). */
static __always_inline __u8 classify_ZOOKEEPER(const struct classify_input *in,
					       struct classify_verdict *v)
{
	const __u8 *w = in->win->b;
	if (!in->iovcnt && in->n == in->len && (in->len == 4 || in->len == 5)) {
		if ((in->len == 4 || w[4] == '\n') && zk_four_letter_word(w)) {
			v->role = request_role(in);
			return L7_DETECT_ZK_4LW;
		}
		__u32 len = be32_at(w, 0);
		if (in->ingress && in->len == 4 && len >= 8 && len <= 0xFFFFF) {
			v->hold_len = len;
			return 0;
		}
	}
	__u8 detect = zk_request(in->win, in->n, in->frame);
	if (detect) {
		v->role = request_role(in);
		return detect;
	}
	detect = zk_reply(in->win, in->n, in->frame);
	if (detect)
		v->role = reply_role(in);
	return detect;
}

#endif
