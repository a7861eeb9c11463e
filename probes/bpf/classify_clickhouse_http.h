/* ClickHouse over HTTP detection: an HTTP/1.x request to one of ClickHouse's HTTP ports, or
 * an HTTP/1.x response whose headers name ClickHouse (X-ClickHouse-...). Plain HTTP to other
 * servers matches neither. */
#ifndef L7TAP_CLASSIFY_CLICKHOUSE_HTTP_H
#define L7TAP_CLASSIFY_CLICKHOUSE_HTTP_H

#include "classify_window.h"

#define WORD(a, b, c, d) (((__u32)(a) << 24) | ((__u32)(b) << 16) | ((__u32)(c) << 8) | (d))

/* Length of the HTTP method and its space at the start of `w` (n >= 8 bytes), or 0. */
static __always_inline __u32 http_method_len(const __u8 *w)
{
	__u32 first = be32_at(w, 0), second = be32_at(w, 4);
	switch (first) {
	case WORD('G', 'E', 'T', ' '):
	case WORD('P', 'U', 'T', ' '):
		return 4;
	case WORD('P', 'O', 'S', 'T'):
	case WORD('H', 'E', 'A', 'D'):
		return w[4] == ' ' ? 5 : 0;
	case WORD('P', 'A', 'T', 'C'):
		return (second >> 16) == (('H' << 8) | ' ') ? 6 : 0;
	case WORD('T', 'R', 'A', 'C'):
		return (second >> 16) == (('E' << 8) | ' ') ? 6 : 0;
	case WORD('D', 'E', 'L', 'E'):
		return (second >> 8) == (('T' << 16) | ('E' << 8) | ' ') ? 7 : 0;
	case WORD('O', 'P', 'T', 'I'):
		return second == WORD('O', 'N', 'S', ' ') ? 8 : 0;
	case WORD('C', 'O', 'N', 'N'):
		return second == WORD('E', 'C', 'T', ' ') ? 8 : 0;
	}
	return 0;
}

/* An HTTP/1.x request line: a method, then " HTTP/1." before the line ends. */
__noinline int http_request_line(struct window *win, __u32 n)
{
	if (!win)
		return 0;
	const __u8 *w = win->b;
	if (n < 16) /* "GET / HTTP/1.1\r\n" */
		return 0;
	if (!http_method_len(w))
		return 0;
	/* past the shortest method and its space (no method holds " HTTP/1.") */
	for (__u32 i = 4; i < WINDOW - 8; i++) {
		if (i + 8 > n)
			return 0;
		__u8 b = w[i];
		if (b == '\r' || b == '\n')
			return 0;
		if (b == ' ' && w[i + 1] == 'H' && w[i + 2] == 'T' && w[i + 3] == 'T' &&
		    w[i + 4] == 'P' && w[i + 5] == '/' && w[i + 6] == '1' && w[i + 7] == '.')
			return 1;
	}
	return 0;
}

/* Byte `b` is the lowercase letter `lower` in either case: setting bit 5 maps only 'A'-'Z'
 * onto 'a'-'z' (and 'a'-'z' onto themselves), with no branch for the verifier to follow. */
#define IS_LETTER(b, lower) (((b) | 0x20) == (lower))

/* An HTTP/1.x response with a header named X-ClickHouse-... (any case) among the headers in
 * the window (ClickHouse 18.16 sends X-ClickHouse-Server-Display-Name). */
__noinline int http_clickhouse_response(struct window *win, __u32 n)
{
	if (!win)
		return 0;
	const __u8 *w = win->b;
	if (n < 16 || be32_at(w, 0) != WORD('H', 'T', 'T', 'P') || w[4] != '/' || w[5] != '1' ||
	    w[6] != '.')
		return 0;
	const __u32 name = sizeof("x-clickhouse-") - 1;
	for (__u32 i = 8; i < WINDOW - name; i++) {
		if (i + name > n)
			return 0;
		if (w[i - 1] != '\n')
			continue;
		if (w[i] == '\r' || w[i] == '\n')
			return 0; /* the end of the headers */
		if (IS_LETTER(w[i], 'x') && w[i + 1] == '-' && IS_LETTER(w[i + 2], 'c') &&
		    IS_LETTER(w[i + 3], 'l') && IS_LETTER(w[i + 4], 'i') &&
		    IS_LETTER(w[i + 5], 'c') && IS_LETTER(w[i + 6], 'k') &&
		    IS_LETTER(w[i + 7], 'h') && IS_LETTER(w[i + 8], 'o') &&
		    IS_LETTER(w[i + 9], 'u') && IS_LETTER(w[i + 10], 's') &&
		    IS_LETTER(w[i + 11], 'e') && w[i + 12] == '-')
			return 1;
	}
	return 0;
}

#undef WORD
#undef IS_LETTER

/* Whether `port` is one of ClickHouse's HTTP ports. */
static __always_inline int clickhouse_http_port(__u16 port)
{
	for (int i = 0; i < L7_CLICKHOUSE_HTTP_MAX_PORTS; i++) {
		if (clickhouse_http_ports[i] && clickhouse_http_ports[i] == port)
			return 1;
	}
	return 0;
}

/* The ClickHouse HTTP classifier (dispatched from L7_PROTOCOLS). A request counts only on a
 * ClickHouse HTTP port at the server's end of the connection: the local port when the
 * observed process received the request, the remote port when it sent it. */
static __always_inline __u8 classify_CLICKHOUSE_HTTP(const struct classify_input *in,
						     struct classify_verdict *v)
{
	if (http_request_line(in->win, in->n)) {
		if (!clickhouse_http_port(classify_server_port(in)))
			return 0;
		v->role = request_role(in);
		return L7_DETECT_CH_HTTP_REQUEST;
	}
	if (http_clickhouse_response(in->win, in->n)) {
		v->role = reply_role(in);
		return L7_DETECT_CH_HTTP_RESPONSE;
	}
	return 0;
}

#endif
