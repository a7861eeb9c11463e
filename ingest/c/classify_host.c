/* The kernel's classifiers (probes/bpf/classify_<protocol>.h) compiled for the host: one
 * entry point that dispatches over L7_PROTOCOLS in list order, as the kernel's classify()
 * does, for `l7tap replay FILE.pcap` (ingest/src/pcap/classify.rs). The rules are the same
 * source; only what the kernel reads from the socket (the server's port) and the loader's
 * port table come from the caller here. */
#include <linux/types.h>
#include <string.h>

#undef __always_inline
#define __always_inline inline __attribute__((always_inline))
#define __noinline __attribute__((noinline))

#include "l7tap_events.h"
#include "classify_window.h"

/* The ports of the connection a payload travelled on, in place of the kernel's struct sock:
 * `classify_input.sk` points at one. */
struct host_ports {
	__u16 local;  /* the observed process's port */
	__u16 remote; /* its peer's port */
};

/* ClickHouse HTTP server ports of the current call (the loader's global in the kernel). */
static _Thread_local __u16 clickhouse_http_ports[L7_CLICKHOUSE_HTTP_MAX_PORTS];

static __always_inline __u16 classify_server_port(const struct classify_input *in)
{
	const struct host_ports *ports = (const struct host_ports *)(unsigned long)in->sk;
	return in->ingress ? ports->local : ports->remote;
}

#include "classify_clickhouse.h"
#include "classify_zookeeper.h"
#include "classify_clickhouse_http.h"

/* The result of one classification. */
struct l7_host_verdict {
	__u8 detect;   /* enum l7_detect; 0: not classified */
	__u8 protocol; /* enum l7_protocol */
	__u8 role;     /* enum l7_role of the observed process */
	__u32 hold_len; /* see struct classify_verdict */
};

#define HOST_CLASSIFY_WITH(c_name, ...)                                       \
	if (!detect && !verdict.hold_len) {                                    \
		detect = classify_##c_name(&in, &verdict);                     \
		protocol = detect ? L7_PROTO_##c_name : L7_PROTO_UNKNOWN;      \
	}

/* Classifies one payload: `n` bytes of `window` (at most WINDOW, the payload's first bytes,
 * after a held 4-byte prefix when `frame` counts one), of a payload of `len` bytes, received
 * (`ingress`) or sent by the observed process on a connection between `local_port` and
 * `remote_port`; `http_ports` are ClickHouse's HTTP server ports (0: unused). */
void l7_classify(const __u8 *window, __u32 n, __u64 len, __u64 frame, __u8 ingress,
		 __u16 local_port, __u16 remote_port,
		 const __u16 http_ports[L7_CLICKHOUSE_HTTP_MAX_PORTS], struct l7_host_verdict *out)
{
	struct window win;
	memset(&win, 0, sizeof(win));
	if (n > WINDOW)
		n = WINDOW;
	memcpy(win.b, window, n);
	memcpy(clickhouse_http_ports, http_ports, sizeof(clickhouse_http_ports));
	struct host_ports ports = { .local = local_port, .remote = remote_port };
	struct classify_input in = {
		.win = &win,
		.len = len,
		.frame = frame,
		.sk = (__u64)(unsigned long)&ports,
		.n = n,
		.iovcnt = 0,
		.ingress = ingress,
	};
	struct classify_verdict verdict = { 0 };
	__u8 detect = 0, protocol = L7_PROTO_UNKNOWN;
	L7_PROTOCOLS(HOST_CLASSIFY_WITH)
	out->detect = detect;
	out->protocol = protocol;
	out->role = detect ? verdict.role : L7_ROLE_UNKNOWN;
	out->hold_len = verdict.hold_len;
}
