/* The one definition of what the kernel probes send to user space.
 *
 * Included by the BPF programs (with vmlinux.h types) and by abi/build.rs's layout dump (with
 * <linux/types.h>), which prints the offsets, constants and the protocol enum that
 * abi/src/events.rs reads: a change here reaches Rust through the build, never by hand.
 */
#ifndef L7TAP_EVENTS_H
#define L7TAP_EVENTS_H

/* Largest payload one data event can carry; the loader sets the effective limit
 * (capture_bytes) at or below it. A power of two: the BPF program masks lengths with it. */
#define L7_MAX_PAYLOAD 16384
/* A syscall segment larger than one event is sent as up to this many events, so up to
 * L7_MAX_PIECES * L7_MAX_PAYLOAD bytes of it can be captured. */
#define L7_MAX_PIECES 4
/* Largest tail of a cut syscall sent on its own (see L7_DATA_TAIL); a power of two. */
#define L7_MAX_TAIL 8192

/* l7_data_event.flags */
/* The event carries the LAST bytes of a syscall segment whose middle was cut: the event
 * before it (same connection, timestamp and segment) holds the segment's first bytes and
 * reports the middle as cut. The captured bytes end the segment. */
#define L7_DATA_TAIL 1
/* The connection is encrypted: the payload is TLS plaintext (as L7_OPEN_TLS). */
#define L7_DATA_TLS 2

/* l7_open_event.flags */
/* The connection is encrypted (TLS): its payload is the plaintext read from the TLS library
 * by uprobes (probes/bpf/tls.h); its ciphertext on the syscalls is not sent. */
#define L7_OPEN_TLS 1

enum l7_event_kind {
	L7_EVENT_DATA = 1,  /* bytes of one syscall (or one iovec segment of it) */
	L7_EVENT_OPEN = 2,  /* a connection was classified: its facts follow */
	L7_EVENT_CLOSE = 3, /* the connection's fd was closed or its TCP socket reached CLOSE */
};

/* The protocols l7tap watches: the one list. Each line registers a protocol for the kernel
 * programs and, through the generated Rust enum `Protocol` (abi/build.rs), for user space:
 *
 *   X(C_NAME, wire id, RustVariant, "name", "family", "interface", capture bytes, tail bytes)
 *
 * - wire id: the value of L7_PROTO_<C_NAME> in events (never reused; 0 means unknown);
 * - name: the protocol's own name (command line, counters, recordings);
 * - family and interface: what `requests` and `intervals` show, so that one server's
 *   queries group together whatever interface carried them;
 * - capture bytes: default payload bytes captured per syscall segment;
 * - tail bytes: default last bytes of a cut syscall sent as a tail event (0: none).
 *
 * Adding a line is a compile error in every place that must handle the new protocol (the
 * kernel's classifier dispatch, the parser factory, the sink's detail columns); see
 * ARCHITECTURE.md, "Adding a protocol". */
#define L7_PROTOCOLS(X)                                                                   \
	X(CLICKHOUSE, 1, ClickHouse, "clickhouse", "clickhouse", "native", 16384, 8192)    \
	X(ZOOKEEPER, 2, ZooKeeper, "zookeeper", "zookeeper", "native", 65536, 0)           \
	X(CLICKHOUSE_HTTP, 3, ClickHouseHttp, "clickhouse_http", "clickhouse", "http", 16384, 8192)

#define L7_PROTO_ENUM_ENTRY(c_name, id, ...) L7_PROTO_##c_name = id,
enum l7_protocol {
	L7_PROTO_UNKNOWN = 0,
	L7_PROTOCOLS(L7_PROTO_ENUM_ENTRY)
};
#undef L7_PROTO_ENUM_ENTRY
/* Wire ids are dense (1..L7_PROTO_COUNT; the layout dump checks it), so an array of
 * L7_PROTO_LIMIT entries can be indexed by any wire id. */
#define L7_PROTO_COUNT_ENTRY(...) +1
enum { L7_PROTO_COUNT = 0 L7_PROTOCOLS(L7_PROTO_COUNT_ENTRY) };
#undef L7_PROTO_COUNT_ENTRY
#define L7_PROTO_LIMIT (L7_PROTO_COUNT + 1)

enum l7_role {
	L7_ROLE_UNKNOWN = 0,
	L7_ROLE_CLIENT = 1, /* the process connected, or sent the first request */
	L7_ROLE_SERVER = 2, /* the process accepted, or received the first request */
};

enum l7_direction {
	L7_DIR_EGRESS = 0,  /* the observed process sent the bytes */
	L7_DIR_INGRESS = 1, /* the observed process received them */
};

/* How the classification was made (reported once per connection). */
enum l7_detect {
	L7_DETECT_NONE = 0,
	L7_DETECT_CH_HELLO = 1,
	L7_DETECT_CH_QUERY = 2,
	L7_DETECT_ZK_CONNECT = 3,
	L7_DETECT_ZK_REQUEST = 4,
	L7_DETECT_ZK_REPLY = 5,
	L7_DETECT_ZK_4LW = 6, /* a four-letter word (mntr, ruok, ...) opening a connection */
	L7_DETECT_CH_HTTP_REQUEST = 7,  /* an HTTP/1.x request to a ClickHouse HTTP port */
	L7_DETECT_CH_HTTP_RESPONSE = 8, /* an HTTP/1.x response with X-ClickHouse-* headers */
};

/* Entries of the kernel's table of ClickHouse HTTP server ports (set by the loader). */
#define L7_CLICKHOUSE_HTTP_MAX_PORTS 8

/* A connection: the process, its fd and the time the agent first saw that fd as this
 * connection. A reused fd gets a new start_ns, so it is never mistaken for the old one. */
struct l7_conn_id {
	__u64 start_ns;
	__u32 tgid;
	__s32 fd;
};

struct l7_event_header {
	__u64 ts_ns; /* bpf_ktime_get_ns() at syscall exit (CLOCK_MONOTONIC) */
	struct l7_conn_id conn;
	__u32 tid;
	__u8 kind;      /* enum l7_event_kind */
	__u8 protocol;  /* enum l7_protocol */
	__u8 role;      /* enum l7_role */
	__u8 direction; /* enum l7_direction */
};

/* L7_EVENT_DATA: the header, then `captured` payload bytes. The syscall moved `total`
 * bytes in this segment (or, for a tail, in this last part of it); `total - captured` of
 * them were cut. The `total`s of a segment's events add up to the bytes it moved. */
struct l7_data_event {
	struct l7_event_header hdr;
	__u64 total;
	__u32 captured;
	__u16 segment; /* iovec index within the syscall (0 for plain buffers) */
	__u16 flags;   /* L7_DATA_* */
	__u8 payload[L7_MAX_PAYLOAD];
};

/* L7_EVENT_OPEN: sent once, when the connection is classified. Addresses are in network
 * byte order as in struct sock_common; IPv4 uses the first 4 bytes. Ports are host order. */
struct l7_open_event {
	struct l7_event_header hdr;
	__u64 cgroup_id;
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 local_port;
	__u16 remote_port;
	__u8 detect; /* enum l7_detect */
	__u8 flags;  /* L7_OPEN_* */
	__u8 local_addr[16];
	__u8 remote_addr[16];
	char comm[16];
	/* The socket's network namespace (inode of its struct net's ns): with the addresses, the
	 * key that joins the two ends of a local connection. 0 when unknown. */
	__u32 netns;
	__u32 _pad2;
	/* The start of the process's argv[0], read by the probe: a short-lived client may have
	 * exited before user space reads /proc, and comm is cut at 15 bytes. */
	char argv0[32];
};

/* L7_EVENT_CLOSE carries only the header. */

/* Per-CPU counters kept by the BPF program itself (the loader's loss records undercount). */
struct l7_counters {
	__u64 events_emitted;  /* successful outputs */
	__u64 bytes_emitted;   /* payload bytes in successful outputs */
	__u64 events_failed;   /* outputs that failed: lost events */
	__u64 bytes_failed;    /* payload bytes in failed outputs */
	__u64 classify_checks; /* payloads inspected by the classifier */
	__u64 classified;      /* connections classified */
	__u64 ignored;         /* sockets given up after the classify budget */
	__s64 last_error;      /* errno of the last failed output (diagnostics) */
	__u64 tls_payloads;    /* plaintext chunks a TLS library call returned on a connection */
	__u64 tls_lost;        /* plaintext chunks lost: their connection unknown (no fd seen) or
				* the call not recorded (in-flight table full) */
};

/* Which transport the program outputs to (set at load time). */
enum l7_transport {
	L7_TRANSPORT_PERF = 0,
	L7_TRANSPORT_RINGBUF = 1,
};

#endif
