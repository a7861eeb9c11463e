// SPDX-License-Identifier: GPL-2.0
/* The floor of a tracepoint-based agent: one program that returns at once, attached by
 * `l7tap-floor` to every tracepoint the probes use (probes/src/lib.rs, PROGRAMS). What the
 * watched programs lose under it is what any agent on these tracepoints costs them before it
 * does any work (ci/bench.sh's floor rows). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tracepoint")
int nothing(void *ctx)
{
	return 0;
}
