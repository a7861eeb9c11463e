/* What every part of the kernel program shares: headers, kernel constants, the globals the
 * loader sets before load, and the per-CPU counters. */
#ifndef L7TAP_COMMON_H
#define L7TAP_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "l7tap_events.h"

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define TCP_CLOSE 7
#define EINPROGRESS 115

/* Set by the loader before load. */
volatile const __u32 self_tgid = 0;
/* Payload bytes captured per syscall segment and last bytes of a cut syscall segment sent as
 * a tail event (0: none; at most L7_MAX_TAIL), per protocol, indexed by wire id; the
 * defaults are those of the protocol list. Why per protocol: ZooKeeper servers answer
 * pipelined requests in large writes, every reply counts; ClickHouse's large writes are data
 * blocks the parser skips by their sizes, and a client reads a large result in reads of up to
 * ~1 MiB, the last of which ends with the response's final packets (ProfileInfo, Progress,
 * an empty Data block, EndOfStream: ~40 bytes on 18.16; or an Exception with its stack
 * trace, up to ~5.4 KiB on 18.16): the parser finds the query's end in the tail. */
#define CAPTURE_BYTES_DEFAULT(c_name, id, rust, name, family, interface, capture, tail) [id] = capture,
#define TAIL_BYTES_DEFAULT(c_name, id, rust, name, family, interface, capture, tail) [id] = tail,
volatile const __u32 capture_bytes[L7_PROTO_LIMIT] = { L7_PROTOCOLS(CAPTURE_BYTES_DEFAULT) };
volatile const __u32 tail_bytes[L7_PROTO_LIMIT] = { L7_PROTOCOLS(TAIL_BYTES_DEFAULT) };
#undef CAPTURE_BYTES_DEFAULT
#undef TAIL_BYTES_DEFAULT
volatile const __u32 classify_budget = 16;
volatile const __u32 transport = L7_TRANSPORT_PERF;
/* Ring buffer fill level above which the reader is woken at once. */
volatile const __u64 ring_wakeup_bytes = 1 << 20;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l7_counters);
} counters SEC(".maps");

static __always_inline struct l7_counters *counters_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

#endif
