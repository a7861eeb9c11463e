/* Classification: decides on a payload's first bytes whether an unclassified connection
 * speaks a watched protocol, and announces it (open event, socket ownership). */
#ifndef L7TAP_CLASSIFY_H
#define L7TAP_CLASSIFY_H

#include "conn.h"
#include "window.h"
#include "classify_clickhouse.h"
#include "classify_zookeeper.h"

/* The connection was just classified (its protocol and role set): the open event, and its
 * socket's ownership for the end of the connection. */
static __always_inline void classified(void *ctx, struct conn_state *c, __u64 key, __u8 direction,
				       __u64 ts, __u8 detect)
{
	struct l7_event_header hdr = {};
	conn_header(&hdr, c, key, direction, ts);
	emit_open(ctx, &hdr, c->sk, detect);
	conn_own_sock(c, &hdr.conn);
}

/* Decides whether the connection speaks a watched protocol; returns 1 when classified. */
static __always_inline int classify(void *ctx, struct conn_state *c, __u64 key, __u8 direction,
				    const struct user_payload *src, __u64 ret, __u64 ts,
				    __u32 *prefix_len)
{
	struct l7_data_event *ev = scratch_event();
	if (!ev)
		return 0;
	__u8 *w = ev->payload;
	__u8 ingress = direction == L7_DIR_INGRESS;

	/* A JVM server reads a ZooKeeper frame's 4-byte length, then its body; the same first
	 * 4 bytes can also be a four-letter word (mntr, ruok, ...), sent alone. */
	__u32 pending = c->pending_len;
	c->pending_len = 0;
	if ((ret == 4 || ret == 5) && !src->iovcnt) {
		__u8 word[5] = {};
		bpf_probe_read_user(&word, ret == 5 ? 5 : 4, (void *)src->addr);
		if ((ret == 4 || word[4] == '\n') && zk_four_letter_word(word)) {
			c->protocol = L7_PROTO_ZOOKEEPER;
			if (c->role == L7_ROLE_UNKNOWN)
				c->role = ingress ? L7_ROLE_SERVER : L7_ROLE_CLIENT;
			struct l7_counters *cnt = counters_get();
			if (cnt)
				cnt->classified++;
			classified(ctx, c, key, direction, ts, L7_DETECT_ZK_4LW);
			return 1;
		}
		__u32 len = ((__u32)word[0] << 24) | ((__u32)word[1] << 16) | ((__u32)word[2] << 8) | word[3];
		if (ingress && ret == 4 && len >= 8 && len <= 0xFFFFF) {
			c->pending_len = len;
			return 0;
		}
	}
	if (pending && ret != pending)
		pending = 0;

	struct l7_counters *cnt = counters_get();
	if (cnt)
		cnt->classify_checks++;
	__u32 n = read_window(w, src, ret, pending);
	__u64 frame = ret + (pending ? 4 : 0);
	__u8 detect = 0, role = 0, protocol = 0;
	__u8 sender = ingress ? L7_ROLE_SERVER : L7_ROLE_CLIENT;   /* role if these are requests */
	__u8 answerer = ingress ? L7_ROLE_CLIENT : L7_ROLE_SERVER; /* role if these are replies */

	struct window *win = (struct window *)w;
	if (ch_hello(win, n)) {
		detect = L7_DETECT_CH_HELLO, protocol = L7_PROTO_CLICKHOUSE, role = sender;
	} else if (ch_query(win, n)) {
		detect = L7_DETECT_CH_QUERY, protocol = L7_PROTO_CLICKHOUSE, role = sender;
	} else if ((detect = zk_request(win, n, frame))) {
		protocol = L7_PROTO_ZOOKEEPER, role = sender;
	} else if ((detect = zk_reply(win, n, frame))) {
		protocol = L7_PROTO_ZOOKEEPER, role = answerer;
	}
	if (!protocol) {
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
		c->role = role;
	if (cnt)
		cnt->classified++;
	classified(ctx, c, key, direction, ts, detect);
	*prefix_len = pending ? 4 : 0;
	return 1;
}

#endif
