/* Output to user space: the ring buffer or perf buffer, and the events l7tap sends (open,
 * close, data: plain buffers and iovec arrays segment by segment, tails of cut segments, and
 * many small iovecs gathered into one event). Nothing here knows about connection state:
 * callers hand in the event header. */
#ifndef L7TAP_EMIT_H
#define L7TAP_EMIT_H

#include "common.h"

/* Segments of an iovec syscall sent as their own events; the rest is reported as cut. */
#define MAX_SEGMENTS 8
/* iovecs a gathered syscall can have (IOV_MAX), and the payload bytes of one gathered event:
 * half the payload, because the verifier does not relate the bounds of offset and length
 * (see gather_iovec). */
#define MAX_GATHER 1024
#define GATHER_BYTES (L7_MAX_PAYLOAD / 2)
#define MAX_PIECES L7_MAX_PIECES

/* Where a payload is in user memory: one buffer (iovcnt 0) or an array of iovcnt iovecs. */
struct user_payload {
	__u64 addr;
	__u32 iovcnt;
};

/* The data event being built; one per CPU (too large for the stack). Also the classifier's
 * scratch space, before the event is built. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l7_data_event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} ring SEC(".maps");

static __always_inline struct l7_data_event *scratch_event(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

/* A CPU checks how full the ring buffer is at one output in this many (a power of two). */
#define RING_FILL_CHECK_EVERY 16

/* Sends one event to user space; failures are counted here, never silent.
 *
 * Ring buffer: no wakeup per event (a self-interrupt inside the traced syscall); the reader
 * polls every few milliseconds and is woken early once the buffer fills up, or at once for
 * an event with `wake_reader` (a new connection: user space reads the process's identity
 * from /proc while the process is still there). How full the buffer is, is asked at one
 * output in RING_FILL_CHECK_EVERY of each CPU: the query reads the reader's position, a
 * cache line the reader writes, and was in 7 % of the exit program's profile samples when
 * asked at every output. The early wakeup comes at most that many events of the CPU later. */
static __always_inline void output(void *ctx, void *data, __u64 size, __u64 payload,
				   int wake_reader)
{
	long err;
	struct l7_counters *c = counters_get();
	if (transport == L7_TRANSPORT_RINGBUF) {
		__u64 outputs = c ? c->events_emitted + c->events_failed : 0;
		int wake = wake_reader ||
			   ((outputs & (RING_FILL_CHECK_EVERY - 1)) == 0 &&
			    bpf_ringbuf_query(&ring, BPF_RB_AVAIL_DATA) > ring_wakeup_bytes);
		err = bpf_ringbuf_output(&ring, data, size,
					 wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	} else {
		err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, data, size);
	}
	if (!c)
		return;
	if (err) {
		c->events_failed++;
		c->bytes_failed += payload;
		c->last_error = err;
	} else {
		c->events_emitted++;
		c->bytes_emitted += payload;
	}
}

/* ---------------------------------------------------------------- open and close */

static __always_inline void emit_close(void *ctx, struct l7_conn_id *conn, __u8 protocol, __u8 role)
{
	struct l7_event_header ev = {};
	ev.ts_ns = bpf_ktime_get_ns();
	ev.conn = *conn;
	ev.tid = bpf_get_current_pid_tgid();
	ev.kind = L7_EVENT_CLOSE;
	ev.protocol = protocol;
	ev.role = role;
	output(ctx, &ev, sizeof(ev), 0, 0);
}

/* The open event of a connection just classified: `hdr` names it (its ts_ns is the
 * classifying syscall's, so the open event sorts just before its data), `sk` its socket. */
static __always_inline void emit_open(void *ctx, const struct l7_event_header *hdr, __u64 sk,
				     __u8 detect, __u8 flags)
{
	struct l7_open_event ev = {};
	ev.hdr = *hdr;
	ev.hdr.kind = L7_EVENT_OPEN;
	ev.hdr.direction = 0;
	ev.cgroup_id = bpf_get_current_cgroup_id();
	ev.detect = detect;
	ev.flags = flags;
	/* the process's name (its main thread's), not the calling thread's */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&ev.comm, task, group_leader, comm);
	/* argv[0]'s start: names a process that exits before user space reads /proc */
	unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
	if (arg_start)
		bpf_probe_read_user_str(&ev.argv0, sizeof(ev.argv0), (const void *)arg_start);
	struct sock *s = (struct sock *)sk;
	ev.family = BPF_CORE_READ(s, __sk_common.skc_family);
	ev.local_port = BPF_CORE_READ(s, __sk_common.skc_num);
	ev.remote_port = bpf_ntohs(BPF_CORE_READ(s, __sk_common.skc_dport));
	ev.netns = BPF_CORE_READ(s, __sk_common.skc_net.net, ns.inum);
	if (ev.family == AF_INET) {
		BPF_CORE_READ_INTO(&ev.local_addr, s, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO(&ev.remote_addr, s, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO(&ev.local_addr, s, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&ev.remote_addr, s, __sk_common.skc_v6_daddr);
	}
	output(ctx, &ev, sizeof(ev), 0, 1);
}

/* ---------------------------------------------------------------- data events */

/* Sends the data event `ev` carrying `captured` payload bytes. */
static __always_inline void send_data(void *ctx, struct l7_data_event *ev, __u32 captured)
{
	ev->captured = captured;
	__u64 size = offsetof(struct l7_data_event, payload) + captured;
	barrier_var(size);
	if (size > sizeof(*ev))
		size = sizeof(*ev);
	output(ctx, ev, size, captured, 0);
}

/* Data events for `len` bytes at `base`: the first `limit` bytes (the connection's capture
 * limit, up to MAX_PIECES * L7_MAX_PAYLOAD) in pieces of at most L7_MAX_PAYLOAD, the last
 * piece also counting the cut rest in its `total`. */
static __always_inline void emit_segment(void *ctx, struct l7_data_event *ev, __u64 base,
					 __u64 len, __u16 segment, __u32 limit)
{
	__u64 left = len;
	__u64 budget = limit;
	ev->segment = segment;
	for (int piece = 0; piece < MAX_PIECES; piece++) {
		__u32 take = left < L7_MAX_PAYLOAD ? left : L7_MAX_PAYLOAD;
		if (take > budget)
			take = budget;
		barrier_var(take);
		if (take > L7_MAX_PAYLOAD)
			take = L7_MAX_PAYLOAD;
		budget -= take;
		/* the last piece carries what remains uncaptured */
		int last = budget == 0 || left == take || piece == MAX_PIECES - 1;
		ev->total = last ? left : take;
		if (take && bpf_probe_read_user(ev->payload, take, (void *)base))
			take = 0; /* unreadable: report the bytes as cut */
		send_data(ctx, ev, take);
		if (last)
			break;
		left -= take;
		base += take;
	}
}

/* Bytes of a cut segment of `len` bytes to send as its tail (at most `tail_max`), only past
 * the capture limit (an uncut segment costs this one comparison). */
static __always_inline __u64 tail_len(__u64 len, __u32 limit, __u32 tail_max)
{
	if (len <= limit)
		return 0;
	__u64 cut = len - limit;
	return cut < tail_max ? cut : tail_max;
}

/* The tail event of a segment ending at `end`: its last `len` bytes (at most L7_MAX_TAIL),
 * flagged L7_DATA_TAIL. The head event was sent just before with `total` excluding them. */
static __always_inline void emit_tail(void *ctx, struct l7_data_event *ev, __u64 end, __u64 len,
				      __u16 segment)
{
	__u32 take = len < L7_MAX_TAIL ? len : L7_MAX_TAIL;
	barrier_var(take);
	if (take > L7_MAX_TAIL)
		take = L7_MAX_TAIL;
	ev->segment = segment;
	ev->flags |= L7_DATA_TAIL;
	ev->total = take;
	if (bpf_probe_read_user(ev->payload, take, (void *)(end - take)))
		take = 0; /* unreadable: reported as cut */
	send_data(ctx, ev, take);
	ev->flags &= ~L7_DATA_TAIL;
}

/* State of gathering a writev/readv's iovecs into one event (bpf_loop callback context). */
struct gather_state {
	__u64 iov_array;
	__u64 left; /* bytes of the syscall not gathered yet */
	__u32 iovcnt;
	__u32 next;  /* next iovec */
	__u32 off;    /* bytes gathered */
	__u32 failed; /* an iovec was unreadable or larger than GATHER_BYTES */
};

/* bpf_loop callback: appends the next iovec to the scratch event, or stops when it does not
 * fit. The verifier checks this body once, whatever the number of iovecs (an unrolled loop
 * of hundreds exceeds its budget). */
static long gather_iovec(__u32 i, void *data)
{
	struct gather_state *g = data;
	if (g->next >= g->iovcnt || g->left == 0)
		return 1;
	struct l7_data_event *ev = scratch_event();
	if (!ev)
		goto fail;
	struct iovec iov = {};
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(g->iov_array + g->next * sizeof(iov))))
		goto fail;
	__u64 len = iov.iov_len < g->left ? iov.iov_len : g->left;
	if (len == 0) {
		g->next++;
		return 0;
	}
	if (len > GATHER_BYTES)
		goto fail;
	if (g->off + len > GATHER_BYTES)
		return 1; /* full: the rest is cut */
	/* The mask and the clamp never change a value (checked just above); they bound the
	 * registers the copy uses, for the verifier. */
	__u32 at = g->off;
	barrier_var(at);
	at &= GATHER_BYTES - 1; /* a power of two */
	__u32 take = len;
	barrier_var(take);
	if (take > GATHER_BYTES)
		take = GATHER_BYTES;
	if (bpf_probe_read_user(ev->payload + at, take, iov.iov_base))
		goto fail;
	g->off += take;
	g->left -= len;
	g->next++;
	return 0;
fail:
	g->failed = 1;
	return 1;
}

/* Pipelining clients hand writev hundreds of small iovecs (one per request), more than the
 * MAX_SEGMENTS sent one by one: copies them back to back into one event of up to
 * GATHER_BYTES, the rest reported as cut. Returns 0, having sent nothing, if an iovec is
 * larger than GATHER_BYTES or unreadable, or if the capture limit is below GATHER_BYTES:
 * the syscall then goes segment by segment. (A bound taken from the limit, or several
 * events per syscall, made the verifier give up.) */
static __always_inline int emit_gathered(void *ctx, struct l7_data_event *ev,
					 const struct user_payload *src, __u64 ret, __u32 limit)
{
	if (limit < GATHER_BYTES)
		return 0;
	struct gather_state g = {
		.iov_array = src->addr,
		.left = ret,
		.iovcnt = src->iovcnt,
	};
	bpf_loop(MAX_GATHER, gather_iovec, &g, 0);
	if (g.failed)
		return 0;
	ev->total = g.off + g.left;
	ev->segment = 0;
	send_data(ctx, ev, g.off);
	return 1;
}

/* Data events for the `ret` bytes a syscall moved at `src`, on the connection and in the
 * direction `hdr` names: up to `limit` bytes per segment, and a tail of up to `tail_max`
 * bytes of a cut plain buffer or last segment. `flags`: the connection's (L7_DATA_TLS). */
static __always_inline void emit_data(void *ctx, const struct l7_event_header *hdr,
				      const struct user_payload *src, __u64 ret, __u32 limit,
				      __u32 tail_max, __u16 flags)
{
	struct l7_data_event *ev = scratch_event();
	if (!ev)
		return;
	ev->hdr = *hdr;
	ev->hdr.kind = L7_EVENT_DATA;
	ev->flags = flags;
	if (!src->iovcnt) {
		__u64 tail = tail_len(ret, limit, tail_max);
		emit_segment(ctx, ev, src->addr, ret - tail, 0, limit);
		if (tail)
			emit_tail(ctx, ev, src->addr + ret, tail, 0);
		return;
	}
	if (src->iovcnt > MAX_SEGMENTS && emit_gathered(ctx, ev, src, ret, limit))
		return;
	__u64 left = ret;
	/* the last segment's tail, sent after the loop (one copy of emit_tail to verify) */
	__u64 tail = 0, tail_end = 0;
	__u16 tail_segment = 0;
	for (int i = 0; i < MAX_SEGMENTS; i++) {
		if (i >= src->iovcnt || left == 0)
			break;
		struct iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(src->addr + i * sizeof(iov))))
			break;
		__u64 len = iov.iov_len < left ? iov.iov_len : left;
		left -= len;
		__u64 t = left ? 0 : tail_len(len, limit, tail_max);
		if (len)
			emit_segment(ctx, ev, (__u64)iov.iov_base, len - t, i, limit);
		if (t) {
			tail = t;
			tail_end = (__u64)iov.iov_base + len;
			tail_segment = i;
		}
	}
	if (tail)
		emit_tail(ctx, ev, tail_end, tail, tail_segment);
	if (left) {
		/* more segments than sent one by one: the rest is reported as cut bytes */
		ev->total = left;
		ev->captured = 0;
		ev->segment = MAX_SEGMENTS;
		output(ctx, ev, offsetof(struct l7_data_event, payload), 0, 0);
	}
}

/* A 4-byte data event holding `value` big-endian: the frame length a JVM server read on its
 * own just before the syscall that classified the connection. */
static __always_inline void emit_prefix(void *ctx, const struct l7_event_header *hdr, __u32 value,
				       __u16 flags)
{
	struct l7_data_event *ev = scratch_event();
	if (!ev)
		return;
	ev->hdr = *hdr;
	ev->hdr.kind = L7_EVENT_DATA;
	ev->flags = flags;
	ev->total = 4;
	ev->captured = 4;
	ev->segment = 0;
	ev->payload[0] = value >> 24;
	ev->payload[1] = value >> 16;
	ev->payload[2] = value >> 8;
	ev->payload[3] = value;
	output(ctx, ev, offsetof(struct l7_data_event, payload) + 4, 4, 0);
}

#endif
