/* Classification: decides on a payload's first bytes whether an unclassified connection
 * speaks a watched protocol, and announces it (open event, socket ownership). */
#ifndef L7TAP_CLASSIFY_H
#define L7TAP_CLASSIFY_H

#include "conn.h"
#include "self.h"
#include "window.h"
#include "classify_clickhouse.h"
#include "classify_zookeeper.h"
#include "classify_clickhouse_http.h"

/* The connection was just classified (its protocol and role set): the open event, and its
 * socket's ownership for the end of the connection. */
static __always_inline void classified(void *ctx, struct conn_state *c, __u64 key, __u8 direction,
				       __u64 ts, __u8 detect)
{
	struct l7_event_header hdr = {};
	conn_header(&hdr, c, key, direction, ts);
	emit_open(ctx, &hdr, c->sk, detect, c->tls ? L7_OPEN_TLS : 0);
	conn_own_sock(c, &hdr.conn);
}

/* Runs the classifier of each protocol of L7_PROTOCOLS, in list order, until one detects
 * its protocol or holds the payload: `classify_<C_NAME>(input, verdict)` returns a detect
 * code (enum l7_detect, 0: not this protocol) and sets the verdict's role. A line added to
 * the list without its classifier is a compile error here. */
#define CLASSIFY_WITH(c_name, ...)                                          \
	if (!detect && !verdict.hold_len) {                                  \
		detect = classify_##c_name(&in, &verdict);                   \
		protocol = detect ? L7_PROTO_##c_name : L7_PROTO_UNKNOWN;    \
	}

/* Decides whether the connection speaks a watched protocol, on the first bytes of a payload
 * (see on_payload for the arguments); returns 1 when classified, having sent the open event.
 * `prefix_len` is then 4 if a held length prefix came before the payload. */
static __always_inline int classify(void *ctx, struct conn_state *c, __u64 key, __u8 direction,
				    const struct user_payload *src, __u64 ret, __u64 ts,
				    __u32 *prefix_len)
{
	/* The server end of a connection l7tap opened (self.h): given up, never classified. */
	if (c->role != L7_ROLE_CLIENT && self_end_is_peer(c->sk)) {
		c->ignored = 1;
		return 0;
	}
	struct l7_data_event *ev = scratch_event();
	if (!ev)
		return 0;
	__u32 pending = c->pending_len;
	c->pending_len = 0;
	if (pending && ret != pending)
		pending = 0;
	struct classify_input in = {
		.win = (struct window *)ev->payload,
		.len = ret,
		.frame = ret + (pending ? 4 : 0),
		.sk = c->sk,
		.iovcnt = src->iovcnt,
		.ingress = direction == L7_DIR_INGRESS,
	};
	in.n = read_window(ev->payload, src, ret, pending);
	/* A TLS record's header (a handshake before the uprobes saw a library call, or any
	 * record before they were attached): the connection is encrypted; its ciphertext spends
	 * none of the budget and is never classified. Plaintext (c->tls set) is not checked. */
	if (!c->tls && tls_record_header(in.win, in.n)) {
		conn_mark_tls(c);
		return 0;
	}
	struct classify_verdict verdict = {};
	__u8 detect = 0, protocol = L7_PROTO_UNKNOWN;
	L7_PROTOCOLS(CLASSIFY_WITH)
	if (verdict.hold_len) {
		c->pending_len = verdict.hold_len;
		return 0;
	}
	struct l7_counters *cnt = counters_get();
	if (cnt)
		cnt->classify_checks++;
	if (protocol == L7_PROTO_UNKNOWN) {
		/* 1-byte writes (ClickHouse pings) do not use up the budget */
		if (ret > 1 && ++c->attempts >= classify_budget) {
			c->ignored = 1;
			if (cnt)
				cnt->ignored++;
		}
		return 0;
	}
	c->protocol = protocol;
	if (c->role == L7_ROLE_UNKNOWN)
		c->role = verdict.role;
	if (cnt)
		cnt->classified++;
	classified(ctx, c, key, direction, ts, detect);
	*prefix_len = pending ? 4 : 0;
	return 1;
}

#endif
