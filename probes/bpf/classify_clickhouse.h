/* ClickHouse native protocol detection: a client's or server's Hello, or a client's Query
 * (a connection open before the capture started). */
#ifndef L7TAP_CLASSIFY_CLICKHOUSE_H
#define L7TAP_CLASSIFY_CLICKHOUSE_H

#include "classify_window.h"

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

/* The ClickHouse native classifier (dispatched from L7_PROTOCOLS): Hello or Query. */
static __always_inline __u8 classify_CLICKHOUSE(const struct classify_input *in,
						struct classify_verdict *v)
{
	__u8 detect = 0;
	if (ch_hello(in->win, in->n))
		detect = L7_DETECT_CH_HELLO;
	else if (ch_query(in->win, in->n))
		detect = L7_DETECT_CH_QUERY;
	if (detect)
		v->role = request_role(in);
	return detect;
}

#endif
