/* l7tap's own connections (its ClickHouse output's inserts): never captured. Its client end
 * is never tracked (every program skips the tgid `self_tgid`); the server end, a socket of
 * another process, is recognised by its peer: each connect(2) of l7tap records its local end
 * (network namespace, address, port) in `self_ends`, and a connection whose remote end is
 * one of them is given up before its first classification. The record is made when connect
 * returns (the local port is bound by then), before l7tap writes its first byte, so it is
 * there when the server reads that byte. */
#ifndef L7TAP_SELF_H
#define L7TAP_SELF_H

#include "common.h"

/* One end of a TCP connection; IPv4 addresses in their IPv4-mapped IPv6 form, so that an
 * IPv4 client and an IPv6 (dual-stack) server socket agree. */
struct self_end {
	__u32 netns;
	__u16 port;
	__u16 pad;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct self_end);
	__type(value, __u8);
} self_ends SEC(".maps");

/* The local (`remote` = 0) or remote end of the socket `sk`. */
static __always_inline void self_end_of(struct self_end *end, __u64 sk, int remote)
{
	struct sock *s = (struct sock *)sk;
	__u16 family = BPF_CORE_READ(s, __sk_common.skc_family);
	end->netns = BPF_CORE_READ(s, __sk_common.skc_net.net, ns.inum);
	if (remote)
		end->port = bpf_ntohs(BPF_CORE_READ(s, __sk_common.skc_dport));
	else
		end->port = BPF_CORE_READ(s, __sk_common.skc_num);
	if (family == AF_INET) {
		end->addr[10] = 0xff;
		end->addr[11] = 0xff;
		if (remote)
			BPF_CORE_READ_INTO((__u32 *)&end->addr[12], s, __sk_common.skc_daddr);
		else
			BPF_CORE_READ_INTO((__u32 *)&end->addr[12], s, __sk_common.skc_rcv_saddr);
	} else if (remote) {
		BPF_CORE_READ_INTO(&end->addr, s, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO(&end->addr, s, __sk_common.skc_v6_rcv_saddr);
	}
}

/* l7tap connected the TCP socket `sk`: remember its local end. */
static __always_inline void self_end_record(__u64 sk)
{
	struct self_end end = {};
	__u8 one = 1;
	self_end_of(&end, sk, 0);
	bpf_map_update_elem(&self_ends, &end, &one, BPF_ANY);
}

/* Whether the peer of the socket `sk` is a connection l7tap opened. */
static __always_inline int self_end_is_peer(__u64 sk)
{
	struct self_end end = {};
	self_end_of(&end, sk, 1);
	return bpf_map_lookup_elem(&self_ends, &end) != 0;
}

#endif
