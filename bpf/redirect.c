// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// modgate's transparent redirect: TC programs that hand a pod's TCP
// connections to configured destinations to the local proxy's socket with
// bpf_sk_assign, so the proxy's accepted socket reports the original
// destination as its local address. No packet is rewritten and no
// connection table is kept (see ../shared/EBPF.md).
//
//   capture_egress  at the pod interface's egress (in-pod shape): packets
//                   to a captured destination are redirected into lo's
//                   ingress.
//   capture_ingress at lo's ingress (in-pod) or the host-side veth's
//                   ingress (node-level): packets to a captured
//                   destination are assigned to the established socket of
//                   their connection, or else to the proxy's listener; if
//                   there is none they are dropped (fail closed). They get
//                   route_mark, which policy routing turns into a local
//                   route.
//
// Everything changeable lives in maps: the captured prefixes (LPM tries,
// IPv4 and IPv6), the captured ports, and the config (proxy port, marks,
// lo's ifindex). Map keys for addresses and ports are in network byte
// order. Traffic that is not ours gets TC_ACT_UNSPEC, so the next program
// in a TCX chain (the CNI's) decides.

//go:build ignore

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

struct lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, struct lpm_v4);
	__type(value, __u8);
} capture_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, struct lpm_v6);
	__type(value, __u8);
} capture_v6 SEC(".maps");

// Destination ports to capture, in network byte order.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} capture_ports SEC(".maps");

struct settings {
	__u16 proxy_port; // network byte order
	__u16 _pad;
	__u32 exempt_mark; // packets with (mark & exempt_mask) == exempt_mark pass
	__u32 exempt_mask;
	__u32 route_mark;  // set on captured packets for the local policy route
	__u32 lo_ifindex;  // where capture_egress redirects to
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} config SEC(".maps");

// Verdicts, counted per CPU.
enum verdict {
	VERDICT_NOT_TCP,        // not IPv4/IPv6 TCP: passed
	VERDICT_NO_MATCH,       // not a captured destination: passed
	VERDICT_EXEMPT,         // the proxy's own (marked) traffic: passed
	VERDICT_REDIRECTED,     // capture_egress: sent to lo's ingress
	VERDICT_ASSIGNED,       // capture_ingress: given to a socket
	VERDICT_NO_SOCKET,      // captured, but no proxy socket: dropped
	VERDICT_ASSIGN_FAILED,  // captured, bpf_sk_assign refused: dropped
	VERDICT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VERDICT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 v)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &v);
	if (n)
		*n += 1;
}

// flow is what the programs need of a packet.
struct flow {
	struct bpf_sock_tuple tuple;
	__u8 v6;
};

// lookup finds the TCP socket for f's tuple in the current netns. The
// tuple's size is a constant on each branch, as the verifier wants.
static __always_inline struct bpf_sock *lookup(struct __sk_buff *skb, struct flow *f)
{
	if (f->v6)
		return bpf_skc_lookup_tcp(skb, &f->tuple, sizeof(f->tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
	return bpf_skc_lookup_tcp(skb, &f->tuple, sizeof(f->tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
}

// parse fills f for an IPv4 or IPv6 TCP packet with an Ethernet header
// and reports whether it is one.
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return 0;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl < 5)
			return 0;
		struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
		if ((void *)(tcp + 1) > end)
			return 0;
		f->tuple.ipv4.saddr = ip->saddr;
		f->tuple.ipv4.daddr = ip->daddr;
		f->tuple.ipv4.sport = tcp->source;
		f->tuple.ipv4.dport = tcp->dest;
		f->v6 = 0;
		return 1;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return 0;
		struct tcphdr *tcp = (void *)(ip6 + 1);
		if ((void *)(tcp + 1) > end)
			return 0;
		__builtin_memcpy(f->tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(f->tuple.ipv6.daddr, &ip6->daddr, 16);
		f->tuple.ipv6.sport = tcp->source;
		f->tuple.ipv6.dport = tcp->dest;
		f->v6 = 1;
		return 1;
	}
	return 0;
}

// captured reports whether f goes to a captured prefix and port.
static __always_inline int captured(struct flow *f)
{
	__u16 port = f->v6 ? f->tuple.ipv6.dport : f->tuple.ipv4.dport;
	if (!bpf_map_lookup_elem(&capture_ports, &port))
		return 0;
	if (f->v6) {
		struct lpm_v6 k = {.prefixlen = 128};
		__builtin_memcpy(k.addr, f->tuple.ipv6.daddr, 16);
		return bpf_map_lookup_elem(&capture_v6, &k) != 0;
	}
	struct lpm_v4 k = {.prefixlen = 32};
	__builtin_memcpy(k.addr, &f->tuple.ipv4.daddr, 4);
	return bpf_map_lookup_elem(&capture_v4, &k) != 0;
}

// classify returns the config and whether skb is ours: a TCP packet to a
// captured destination, not exempt. It counts the other verdicts.
static __always_inline struct settings *classify(struct __sk_buff *skb, struct flow *f)
{
	__u32 zero = 0;
	struct settings *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return 0;
	if (!parse(skb, f)) {
		count(VERDICT_NOT_TCP);
		return 0;
	}
	if (cfg->exempt_mask && (skb->mark & cfg->exempt_mask) == cfg->exempt_mark) {
		count(VERDICT_EXEMPT);
		return 0;
	}
	if (!captured(f)) {
		count(VERDICT_NO_MATCH);
		return 0;
	}
	return cfg;
}

SEC("tc")
int capture_egress(struct __sk_buff *skb)
{
	struct flow f = {};
	struct settings *cfg = classify(skb, &f);
	if (!cfg)
		return TC_ACT_UNSPEC;
	count(VERDICT_REDIRECTED);
	return bpf_redirect(cfg->lo_ifindex, BPF_F_INGRESS);
}

SEC("tc")
int capture_ingress(struct __sk_buff *skb)
{
	struct flow f = {};
	struct settings *cfg = classify(skb, &f);
	if (!cfg)
		return TC_ACT_UNSPEC;

	// The connection's own socket first (not a listener, not TIME_WAIT).
	struct bpf_sock *sk = lookup(skb, &f);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN && sk->state != BPF_TCP_TIME_WAIT)
			goto assign;
		bpf_sk_release(sk);
	}
	// Else the proxy's listener: any address, the proxy's port.
	if (f.v6) {
		__builtin_memset(f.tuple.ipv6.daddr, 0, 16);
		f.tuple.ipv6.dport = cfg->proxy_port;
	} else {
		f.tuple.ipv4.daddr = 0;
		f.tuple.ipv4.dport = cfg->proxy_port;
	}
	sk = lookup(skb, &f);
	if (!sk) {
		count(VERDICT_NO_SOCKET);
		return TC_ACT_SHOT;
	}
	if (sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		count(VERDICT_NO_SOCKET);
		return TC_ACT_SHOT;
	}

assign:;
	long err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(VERDICT_ASSIGN_FAILED);
		return TC_ACT_SHOT;
	}
	skb->mark = cfg->route_mark;
	// Redirected from another device's egress, the packet is addressed to
	// a MAC that is not lo's: make the stack take it.
	bpf_skb_change_type(skb, 0 /* PACKET_HOST */);
	count(VERDICT_ASSIGNED);
	return TC_ACT_OK;
}
