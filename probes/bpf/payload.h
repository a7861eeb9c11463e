/* The one path of a connection's payload: classify it if the connection is not classified
 * yet, then send it. Every source of payload calls on_payload. */
#ifndef L7TAP_PAYLOAD_H
#define L7TAP_PAYLOAD_H

#include "common.h"
#include "emit.h"
#include "conn.h"
#include "classify.h"

#define LIMITS_OF(c_name, ...)                                    \
	case L7_PROTO_##c_name:                                   \
		limit = capture_bytes[L7_PROTO_##c_name];         \
		tail_max = tail_bytes[L7_PROTO_##c_name];         \
		break;

/* on_payload: `len` (> 0) bytes of the connection `key` (tgid << 32 | fd) just moved in
 * `direction` at time `ts`, and are at `src` in the current task's user memory: a plain
 * buffer (`src->iovcnt == 0`) or an array of `src->iovcnt` iovecs.
 *
 * `c` is the connection's entry in `conns`, looked up by the caller and not ignored. If the
 * connection is unclassified, the payload is classified first (and dropped if that fails);
 * then it is sent as data events within the protocol's capture limit, with a tail if it was
 * cut.
 *
 * Callers: the exit program of the data syscalls (exit_data_syscall, a buffer or an iovec
 * array; never on a TLS connection: that is ciphertext), and the return of the TLS library
 * calls (tls_return in tls.h: the plaintext's plain buffer, the connection marked TLS), so
 * plaintext and syscall payload share everything from here on. It runs in the context of the task that moved the bytes: it reads
 * them with bpf_probe_read_user. */
static __always_inline void on_payload(void *ctx, struct conn_state *c, __u64 key, __u8 direction,
				       const struct user_payload *src, __u64 len, __u64 ts)
{
	__u32 prefix = 0;
	if (c->protocol == L7_PROTO_UNKNOWN &&
	    !classify(ctx, c, key, direction, src, len, ts, &prefix))
		return;
	struct l7_event_header hdr = {};
	conn_header(&hdr, c, key, direction, ts);
	__u16 flags = c->tls ? L7_DATA_TLS : 0;
	if (prefix)
		emit_prefix(ctx, &hdr, (__u32)len, flags); /* the body length was the prefix */
	/* The limits are read at constant offsets, one case per protocol: the verifier then
	 * knows their values (the globals are read-only) and checks emit_data once per distinct
	 * pair of limits. Read at the protocol's offset, they are unknown numbers and the
	 * verifier gives up (over 1M instructions). */
	__u32 limit, tail_max;
	switch (c->protocol) {
		L7_PROTOCOLS(LIMITS_OF)
	default:
		return; /* never: the classifier sets only listed protocols */
	}
	emit_data(ctx, &hdr, src, len, limit, tail_max, flags);
}

#endif
