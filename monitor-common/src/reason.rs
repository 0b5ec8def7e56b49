//! Per-reason packet counters (`REASONS` map).
//!
//! Ids 0..16 are *outcomes*: every packet the program sees ends in exactly one of them, so
//! they sum to the packets seen. Ids 16.. are *anomalies and events* counted on top.
//! Wire ids: never renumber; leave retired ids as holes.

/// Outcome: classified, outbound (inside → remote).
pub const OUTBOUND: u32 = 0;
/// Outcome: classified, inbound (remote → inside).
pub const INBOUND: u32 = 1;
/// Outcome: both addresses inside.
pub const INTERNAL: u32 = 2;
/// Outcome: neither address inside.
pub const TRANSIT: u32 = 3;
/// Outcome: not IPv4/IPv6 (ARP, LLDP, PPPoE discovery, PPP control protocols such as LCP,
/// an MPLS payload that is not IP: see `MPLS_NON_IP`).
pub const NON_IP: u32 = 4;
/// Outcome: frame too short for its Ethernet or VLAN header, a PPPoE session header cut
/// or not version/type 1/1 with code 0, an MPLS label stack cut before its bottom.
pub const MALFORMED_L2: u32 = 5;
/// Outcome: truncated IPv4 header, IHL < 5, or version mismatch.
pub const MALFORMED_IPV4: u32 = 6;
/// Outcome: truncated IPv6 header.
pub const MALFORMED_IPV6: u32 = 7;
/// Outcome: more VLAN tags than the parser follows (2).
pub const VLAN_DEPTH: u32 = 8;
/// Outcome: a link-scoped packet, never routed off the link: a multicast, broadcast or
/// link-local address on either side (IPv6 ND/MLD, DHCP, mDNS, IGMP, ...).
pub const LINK_LOCAL: u32 = 9;
/// Outcome: an MPLS label stack deeper than the parser follows (8 labels) without its
/// bottom of stack; passes unclassified.
pub const MPLS_DEPTH: u32 = 10;
/// Outcome: a frame with an encapsulation that could not be handed to the encapsulation
/// program (not loaded: never, as the daemon and replay load it); passes unclassified.
pub const ENCAP_MISSED: u32 = 11;

/// Anomaly: TCP/UDP header truncated; classified by addresses with ports 0.
pub const MALFORMED_L4: u32 = 16;
/// Anomaly: IPv6 extension header chain longer than the parser follows, or truncated;
/// classified by addresses with ports 0.
pub const IPV6_EXT_LIMIT: u32 = 17;
/// Event: a non-first IPv4/IPv6 fragment (classified by addresses, ports unknown).
pub const FRAGMENT: u32 = 18;
/// Anomaly: a ring buffer reservation failed; the event was lost.
pub const RINGBUF_DROPPED: u32 = 19;
/// Anomaly: a flow could not be inserted into the flow table.
pub const FLOW_INSERT_FAILED: u32 = 20;
/// Event: a flow event was submitted to the ring buffer.
pub const RINGBUF_SUBMITTED: u32 = 21;
/// Event: a new flow entered the flow table.
pub const FLOW_CREATED: u32 = 22;
/// Event: a violation packet of an enforcing group was dropped (`XDP_DROP`/`TC_ACT_SHOT`).
pub const POLICY_DROPPED: u32 = 23;
/// Event: a violation packet of a group that does not enforce passed (what enforcing
/// would have dropped).
pub const POLICY_DRY_RUN: u32 = 24;

/// Event: a packet was attributed to a watch entry (and counted in `WATCH_COUNTERS`).
pub const WATCH_HIT: u32 = 25;
/// Event: a packet's address passed the watch prefilter bitmap, so the watch maps were
/// looked up (hits and the bitmap's false positives).
pub const WATCH_PROBE: u32 = 26;
/// Event: a DNS answer (from port 53) was copied into the ring buffer.
pub const DNS_COPIED: u32 = 27;
/// Anomaly: a DNS answer was longer than `watch::DNS_COPY` and was cut there.
pub const DNS_TRUNCATED: u32 = 28;
/// Anomaly: a DNS answer could not be read from the packet; nothing was copied.
pub const DNS_LOAD_FAILED: u32 = 29;
/// Event: a ClientHello packet was copied into the ring buffer.
pub const TLS_HELLO_COPIED: u32 = 30;
/// Event: a ClientHello packet longer than `watch::HELLO_COPY` was cut for the copy.
pub const TLS_HELLO_CUT: u32 = 31;
/// Event: the bytes of a packet to TCP port 443 could not be read for the ClientHello check
/// or the copy.
pub const TLS_LOAD_FAILED: u32 = 32;

// Frames that carry an IP tunnel (GRE, VXLAN, GENEVE): each is counted in exactly one of
// 33..=37, by what its packet was classified by.

/// Event: an IP tunnel's frame classified by its inner packet (one of whose addresses is
/// inside, and neither link-scoped).
pub const TUNNEL_INNER: u32 = 33;
/// Event: an IP tunnel's frame classified by the tunnel's own packet, because its inner
/// packet has no inside address or a link-scoped one (a tunnel a device opens itself).
pub const TUNNEL_OUTER: u32 = 34;
/// Event: an IP tunnel's frame classified by the tunnel's own packet, because its inner
/// frame is not followed: not IPv4/IPv6, cut, or of a kind the parser does not follow
/// (MPLS, another GRE protocol, a GRE routing header, a VXLAN header without the I flag).
pub const TUNNEL_UNPARSED: u32 = 35;
/// Event: tunnels nested deeper than the parser follows (2 levels); classified by the
/// deepest tunnel's own packet.
pub const TUNNEL_DEPTH: u32 = 36;
/// Event: a PPTP frame (enhanced GRE, version 1), classified by the tunnel's own packet
/// (the PPP inside is usually compressed or encrypted).
pub const GRE_PPTP: u32 = 37;
/// Event: an MPLS payload that is not an IP packet: a pseudowire control word (first
/// nibble 0), an associated channel (1), or a frame whose first nibble says 4 or 6 but
/// whose length does not match the frame (an Ethernet pseudowire without control word).
/// The frame's outcome is `non_ip`.
pub const MPLS_NON_IP: u32 = 38;

/// Size of the `REASONS` array.
pub const REASON_ENTRIES: u32 = 40;

/// Number of outcome ids (they sum to the packets seen).
pub const OUTCOMES: u32 = 12;

/// Names as exported in metrics and replay output, by id.
pub const NAMES: [(u32, &str); 35] = [
    (OUTBOUND, "outbound"),
    (INBOUND, "inbound"),
    (INTERNAL, "internal"),
    (TRANSIT, "transit"),
    (NON_IP, "non_ip"),
    (MALFORMED_L2, "malformed_l2"),
    (MALFORMED_IPV4, "malformed_ipv4"),
    (MALFORMED_IPV6, "malformed_ipv6"),
    (VLAN_DEPTH, "vlan_depth"),
    (LINK_LOCAL, "link_local"),
    (MPLS_DEPTH, "mpls_depth"),
    (ENCAP_MISSED, "encap_missed"),
    (MALFORMED_L4, "malformed_l4"),
    (IPV6_EXT_LIMIT, "ipv6_ext_limit"),
    (FRAGMENT, "fragment"),
    (RINGBUF_DROPPED, "ringbuf_dropped"),
    (FLOW_INSERT_FAILED, "flow_insert_failed"),
    (RINGBUF_SUBMITTED, "ringbuf_submitted"),
    (FLOW_CREATED, "flow_created"),
    (POLICY_DROPPED, "policy_dropped"),
    (POLICY_DRY_RUN, "policy_dry_run"),
    (WATCH_HIT, "watch_hit"),
    (WATCH_PROBE, "watch_probe"),
    (DNS_COPIED, "dns_copied"),
    (DNS_TRUNCATED, "dns_truncated"),
    (DNS_LOAD_FAILED, "dns_load_failed"),
    (TLS_HELLO_COPIED, "tls_hello_copied"),
    (TLS_HELLO_CUT, "tls_hello_cut"),
    (TLS_LOAD_FAILED, "tls_load_failed"),
    (TUNNEL_INNER, "tunnel_inner"),
    (TUNNEL_OUTER, "tunnel_outer"),
    (TUNNEL_UNPARSED, "tunnel_unparsed"),
    (TUNNEL_DEPTH, "tunnel_depth"),
    (GRE_PPTP, "gre_pptp"),
    (MPLS_NON_IP, "mpls_non_ip"),
];
