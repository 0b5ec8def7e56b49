//! Crafted frames for the kernel tests: byte-exact builders, so malformed and truncated
//! variants are easy to derive. Checksums are left zero (the classifier never reads them).
//!
//! # Panics
//! The builders panic on impossible packets (over 64 KiB, options not in words).
#![expect(
    clippy::missing_panics_doc,
    reason = "documented once for the module above"
)]

use std::net::{Ipv4Addr, Ipv6Addr};

use monitor_common::flow::{FAMILY_V4, FlowKey};

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMPV6: u8 = 58;
pub const HOPOPTS: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DSTOPTS: u8 = 60;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// An Ethernet frame with VLAN tags `(tpid, vid)`, outermost first.
#[must_use]
pub fn eth(vlans: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for (tpid, vid) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[must_use]
pub fn eth_v4(ip: &[u8]) -> Vec<u8> {
    eth(&[], 0x0800, ip)
}

#[must_use]
pub fn eth_v6(ip: &[u8]) -> Vec<u8> {
    eth(&[], 0x86dd, ip)
}

/// An ARP request (who-has 192.0.2.1).
#[must_use]
pub fn arp() -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&SRC_MAC);
    p.extend_from_slice(&[192, 0, 2, 10]);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[192, 0, 2, 1]);
    eth(&[], 0x0806, &p)
}

#[must_use]
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, proto, &[], 0, payload)
}

/// IPv4 with `options` (a multiple of 4 bytes) and the raw flags/fragment-offset field.
#[must_use]
pub fn ipv4_with(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert!(
        options.len().is_multiple_of(4) && options.len() <= 40,
        "IPv4 options come in words, at most 10"
    );
    let hlen = 20 + options.len();
    let total = u16::try_from(hlen + payload.len()).expect("IPv4 packet too long");
    let mut p = Vec::with_capacity(usize::from(total));
    p.push(0x40 | (hlen / 4) as u8);
    p.push(0);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(options);
    p.extend_from_slice(payload);
    p
}

/// Fills in the header checksum of the IPv4 packet `p`. The builders leave it zero: the
/// classifier never reads it, but a Linux stack drops such a packet on arrival.
pub fn set_ipv4_checksum(p: &mut [u8]) {
    let hlen = usize::from(p[0] & 0x0f) * 4;
    p[10..12].fill(0);
    let mut sum: u32 = p[..hlen]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// IPv6 with a chain of 8-byte extension headers (`ext` lists their types, in order).
#[must_use]
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, ext: &[u8], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, _) in ext.iter().enumerate() {
        let next = ext.get(i + 1).copied().unwrap_or(proto);
        // next header, length 0 (8 bytes), then padding (PadN for options; routing type 0).
        body.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    body.extend_from_slice(payload);
    ipv6_raw(src, dst, ext.first().copied().unwrap_or(proto), &body)
}

/// IPv6 carrying a fragment header: `offset` in 8-byte units, `more` = M flag.
#[must_use]
pub fn ipv6_fragment(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    offset: u16,
    more: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = vec![proto, 0];
    body.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 42]);
    body.extend_from_slice(payload);
    ipv6_raw(src, dst, FRAGMENT, &body)
}

fn ipv6_raw(src: Ipv6Addr, dst: Ipv6Addr, next: u8, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + body.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(
        &u16::try_from(body.len())
            .expect("IPv6 payload too long")
            .to_be_bytes(),
    );
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(body);
    p
}

#[must_use]
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(
        &u16::try_from(8 + payload.len())
            .expect("UDP too long")
            .to_be_bytes(),
    );
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A 20-byte TCP header with `flags`, then `payload`.
#[must_use]
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(20 + payload.len());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    p
}

/// An ICMP or ICMPv6 message of `kind`/`code` with an 4-byte rest of header.
#[must_use]
pub fn icmp(kind: u8, code: u8) -> Vec<u8> {
    vec![kind, code, 0, 0, 0, 1, 0, 1]
}

/// The flow table key of an IPv4 flow, from the inside's point of view.
#[must_use]
pub fn v4_key(inside: Ipv4Addr, remote: Ipv4Addr, proto: u8, iport: u16, rport: u16) -> FlowKey {
    let mut k = FlowKey {
        proto,
        family: FAMILY_V4,
        inside_port: iport,
        remote_port: rport,
        ..FlowKey::default()
    };
    k.inside[..4].copy_from_slice(&inside.octets());
    k.remote[..4].copy_from_slice(&remote.octets());
    k
}

/// EtherTypes of the encapsulations.
pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_PPPOE_DISCOVERY: u16 = 0x8863;
pub const ETH_PPPOE_SESSION: u16 = 0x8864;
pub const ETH_MPLS: u16 = 0x8847;
pub const ETH_MPLS_MULTICAST: u16 = 0x8848;
/// Transparent Ethernet bridging: an Ethernet frame inside GRE or GENEVE.
pub const ETH_TEB: u16 = 0x6558;
pub const GRE: u8 = 47;
pub const PORT_VXLAN: u16 = 4789;
pub const PORT_GENEVE: u16 = 6081;
/// PPP protocol numbers.
pub const PPP_IPV4: u16 = 0x0021;
pub const PPP_IPV6: u16 = 0x0057;
pub const PPP_LCP: u16 = 0xc021;

/// A PPPoE session-stage payload (RFC 2516: version 1, type 1, code 0, session 0x1234) of
/// `ppp`, a PPP frame: [`ppp`] or [`ppp_compressed`].
#[must_use]
pub fn pppoe(ppp: &[u8]) -> Vec<u8> {
    let mut p = vec![0x11, 0x00, 0x12, 0x34];
    p.extend_from_slice(
        &u16::try_from(ppp.len())
            .expect("PPPoE payload too long")
            .to_be_bytes(),
    );
    p.extend_from_slice(ppp);
    p
}

/// A PPP frame: the 2-byte protocol field, then `payload`.
#[must_use]
pub fn ppp(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = protocol.to_be_bytes().to_vec();
    p.extend_from_slice(payload);
    p
}

/// A PPP frame with a compressed (1-byte) protocol field, as protocol-field compression
/// allows for protocols below 0x100.
#[must_use]
pub fn ppp_compressed(protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![protocol];
    p.extend_from_slice(payload);
    p
}

/// An MPLS label stack (`labels`, top first; bottom of stack set on the last; TTL 64),
/// then `payload`.
#[must_use]
pub fn mpls(labels: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 * labels.len() + payload.len());
    for (i, label) in labels.iter().enumerate() {
        let bottom = u32::from(i + 1 == labels.len());
        p.extend_from_slice(&((label << 12) | (bottom << 8) | 64).to_be_bytes());
    }
    p.extend_from_slice(payload);
    p
}

/// A GRE header (RFC 2784/2890) of `protocol`, with the checksum, key and sequence fields
/// `optional` asks for (`(checksum, key, sequence)`), then `payload`.
#[must_use]
pub fn gre(protocol: u16, optional: (bool, bool, bool), payload: &[u8]) -> Vec<u8> {
    let (checksum, key, sequence) = optional;
    let flags = (u16::from(checksum) << 15) | (u16::from(key) << 13) | (u16::from(sequence) << 12);
    let mut p = flags.to_be_bytes().to_vec();
    p.extend_from_slice(&protocol.to_be_bytes());
    for (present, word) in [(checksum, 0u32), (key, 0x0000_1001), (sequence, 7)] {
        if present {
            p.extend_from_slice(&word.to_be_bytes());
        }
    }
    p.extend_from_slice(payload);
    p
}

/// PPTP's enhanced GRE (version 1, key present, RFC 2637) carrying a PPP frame.
#[must_use]
pub fn gre_pptp(payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x20, 0x01, 0x88, 0x0b];
    p.extend_from_slice(
        &u16::try_from(payload.len())
            .expect("PPTP payload too long")
            .to_be_bytes(),
    );
    p.extend_from_slice(&[0x00, 0x2a]); // call id
    p.extend_from_slice(payload);
    p
}

/// A VXLAN header (RFC 7348: I flag, VNI `vni`) and the inner Ethernet frame.
#[must_use]
pub fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut p = vec![0x08, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(inner);
    p
}

/// A GENEVE header (RFC 8926: version 0, VNI 42) of `protocol` with `option_words` 4-byte
/// words of options, then `payload`.
#[must_use]
pub fn geneve(protocol: u16, option_words: u8, payload: &[u8]) -> Vec<u8> {
    assert!(option_words < 64, "GENEVE options are at most 63 words");
    let mut p = vec![option_words, 0];
    p.extend_from_slice(&protocol.to_be_bytes());
    p.extend_from_slice(&(42u32 << 8).to_be_bytes());
    for i in 0..option_words {
        // Option class 0x0102, type i, length 0: one word each.
        p.extend_from_slice(&[0x01, 0x02, i, 0]);
    }
    p.extend_from_slice(payload);
    p
}
