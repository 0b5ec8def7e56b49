//! Header parsing: Ethernet, up to two VLAN tags (802.1Q, 802.1ad/QinQ), IPv4 with options
//! and fragments, IPv6 with a bounded chain of extension headers, TCP/UDP ports, ICMP type.
//!
//! Every read goes through [`ptr_at`], which checks the packet bounds; offsets are masked
//! where the verifier would otherwise lose their range.

use core::ptr::read_unaligned;

use monitor_common::{
    flow::{FAMILY_V4, FAMILY_V6},
    reason,
};

use crate::maps::count;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const ETH_P_QINQ_OLD: u16 = 0x9100;
/// VLAN tags followed; a frame with more is counted as `vlan_depth` and not parsed.
const MAX_VLAN: usize = 2;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_MH: u8 = 135;
/// IPv6 extension headers followed, as Cilium bounds it; a longer chain is counted as
/// `ipv6_ext_limit` and the packet is classified by its addresses alone.
pub const MAX_IPV6_EXT: usize = 8;

/// What the classifier needs of a packet.
pub struct Packet {
    pub family: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// Layer-3 bytes: the IP packet's own length, headers included.
    pub l3_bytes: u64,
}

/// A bounds-checked pointer to a `T` at `off` bytes into the packet.
#[inline(always)]
fn ptr_at<T>(start: usize, end: usize, off: usize) -> Option<*const T> {
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

#[inline(always)]
fn read<T: Copy>(start: usize, end: usize, off: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that the whole `T` lies inside the packet.
    ptr_at::<T>(start, end, off).map(|p| unsafe { read_unaligned(p) })
}

/// Parses a frame; `Err` carries the outcome reason when it is not a classifiable IP packet.
/// `wire_len` is the frame's length as the hook sees it (used when an IP length is 0).
#[inline(always)]
pub fn parse(start: usize, end: usize, wire_len: u32) -> Result<Packet, u32> {
    let mut proto: u16 = read::<[u8; 2]>(start, end, 12)
        .map(u16::from_be_bytes)
        .ok_or(reason::MALFORMED_L2)?;
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD && proto != ETH_P_QINQ_OLD {
            break;
        }
        proto = read::<[u8; 2]>(start, end, off + 2)
            .map(u16::from_be_bytes)
            .ok_or(reason::MALFORMED_L2)?;
        off += 4;
    }
    let wire_l3 = u64::from(wire_len).saturating_sub(off as u64);
    match proto {
        ETH_P_IP => ipv4(start, end, off, wire_l3),
        ETH_P_IPV6 => ipv6(start, end, off, wire_l3),
        ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_OLD => Err(reason::VLAN_DEPTH),
        _ => Err(reason::NON_IP),
    }
}

#[inline(always)]
fn ipv4(start: usize, end: usize, off: usize, wire_l3: u64) -> Result<Packet, u32> {
    // version/IHL, ..., total length, id, flags+fragment offset, ttl, protocol, ..., addresses
    let hdr: [u8; 20] = read(start, end, off).ok_or(reason::MALFORMED_IPV4)?;
    let ihl = usize::from(hdr[0] & 0x0f) * 4;
    if hdr[0] >> 4 != 4 || ihl < 20 {
        return Err(reason::MALFORMED_IPV4);
    }
    let total = u16::from_be_bytes([hdr[2], hdr[3]]);
    if total != 0 && usize::from(total) < ihl {
        return Err(reason::MALFORMED_IPV4);
    }
    let mut p = Packet {
        family: FAMILY_V4,
        proto: hdr[9],
        tcp_flags: 0,
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
        // A zero total length is what TSO/BIG TCP super-packets carry: use the frame.
        l3_bytes: if total == 0 {
            wire_l3
        } else {
            u64::from(total)
        },
    };
    p.src[..4].copy_from_slice(&hdr[12..16]);
    p.dst[..4].copy_from_slice(&hdr[16..20]);
    let frag_off = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
    if frag_off != 0 {
        // A later fragment: no transport header, classified by its addresses.
        count(reason::FRAGMENT);
        return Ok(p);
    }
    // IHL is at most 60: the mask keeps the verifier's range proof.
    transport(start, end, (off + ihl) & 0x3ff, &mut p);
    Ok(p)
}

#[inline(always)]
fn ipv6(start: usize, end: usize, off: usize, wire_l3: u64) -> Result<Packet, u32> {
    let hdr: [u8; 40] = read(start, end, off).ok_or(reason::MALFORMED_IPV6)?;
    if hdr[0] >> 4 != 6 {
        return Err(reason::MALFORMED_IPV6);
    }
    let payload = u16::from_be_bytes([hdr[4], hdr[5]]);
    let mut p = Packet {
        family: FAMILY_V6,
        proto: hdr[6],
        tcp_flags: 0,
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
        // Payload length 0 is a jumbogram or a GSO super-packet: use the frame.
        l3_bytes: if payload == 0 {
            wire_l3
        } else {
            40 + u64::from(payload)
        },
    };
    p.src.copy_from_slice(&hdr[8..24]);
    p.dst.copy_from_slice(&hdr[24..40]);

    let mut next = hdr[6];
    let mut off = off + 40;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH => {
                let Some(ext) = read::<[u8; 2]>(start, end, off) else {
                    count(reason::IPV6_EXT_LIMIT);
                    return Ok(p);
                };
                next = ext[0];
                off += (usize::from(ext[1]) + 1) * 8;
            }
            IPPROTO_AH => {
                let Some(ext) = read::<[u8; 2]>(start, end, off) else {
                    count(reason::IPV6_EXT_LIMIT);
                    return Ok(p);
                };
                next = ext[0];
                off += (usize::from(ext[1]) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let Some(ext) = read::<[u8; 4]>(start, end, off) else {
                    count(reason::IPV6_EXT_LIMIT);
                    return Ok(p);
                };
                next = ext[0];
                p.proto = next;
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    count(reason::FRAGMENT);
                    return Ok(p);
                }
                off += 8;
            }
            _ => {
                p.proto = next;
                // The chain above adds at most 8 × 2 KiB: the mask keeps the verifier's range
                // proof without cutting a real offset.
                transport(start, end, off & 0x7fff, &mut p);
                return Ok(p);
            }
        }
        // Keeps the verifier's range proof across iterations.
        off &= 0x7fff;
    }
    p.proto = next;
    count(reason::IPV6_EXT_LIMIT);
    Ok(p)
}

/// Ports (TCP, UDP) or type/code (ICMP, ICMPv6, as NetFlow puts them in the destination port).
#[inline(always)]
fn transport(start: usize, end: usize, off: usize, p: &mut Packet) {
    match p.proto {
        IPPROTO_TCP => match read::<[u8; 14]>(start, end, off) {
            Some(h) => {
                p.sport = u16::from_be_bytes([h[0], h[1]]);
                p.dport = u16::from_be_bytes([h[2], h[3]]);
                p.tcp_flags = h[13];
            }
            None => count(reason::MALFORMED_L4),
        },
        IPPROTO_UDP => match read::<[u8; 4]>(start, end, off) {
            Some(h) => {
                p.sport = u16::from_be_bytes([h[0], h[1]]);
                p.dport = u16::from_be_bytes([h[2], h[3]]);
            }
            None => count(reason::MALFORMED_L4),
        },
        IPPROTO_ICMP | IPPROTO_ICMPV6 => match read::<[u8; 2]>(start, end, off) {
            Some(h) => p.dport = u16::from_be_bytes(h),
            None => count(reason::MALFORMED_L4),
        },
        _ => {}
    }
}
