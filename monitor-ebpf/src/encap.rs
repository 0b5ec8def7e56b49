//! Encapsulations, walked off the hot path: a PPPoE session or an MPLS label stack in front
//! of the IP packet, and IP tunnels (GRE, VXLAN, GENEVE) inside it, down to the packet that
//! is classified.
//!
//! The parser (`parse.rs`) recognises an encapsulation where its paths already differ (an
//! EtherType, IP protocol 47, UDP port 4789 or 6081), notes what and where in the per-CPU
//! scratch map `ENCAP`, and returns `DESCEND`; plain frames pay nothing else. Its program
//! then tail-calls the encapsulation program of its hook type (see `main.rs`), in which
//! [`descend`] reads the note back and walks on. The note is all that crosses the tail
//! call.
//!
//! Within the walk, the kind and offset of the next header go through the note again after
//! each step: read back from a map they are unknown values to the verifier, so what follows
//! is verified once, not once per path that led to it (label counts, GRE options, VLAN tags,
//! PPP protocol fields). The depth does too, so that whichever pass ends the walk, the
//! parse of the packet to classify is verified once.
//!
//! What is classified:
//! - PPPoE and MPLS have no addresses of their own: the IP packet inside is the packet.
//! - An IP tunnel is classified by its inner packet when one of the inner addresses is
//!   inside and neither is link-scoped (an ISP or data-centre tunnel carrying the devices'
//!   traffic), and otherwise by the tunnel's own packet, the one that carries it (a tunnel
//!   a device opens itself to a server abroad, whose inner addresses are its own). The
//!   tunnel's own packet also stands when its inner frame is not followed: not IP, cut,
//!   PPTP, or nested deeper than `MAX_TUNNEL`. Each such frame counts one of the `tunnel_*`
//!   reasons (or `gre_pptp`).
//! - Bytes are those of the packet classified: the inner IP packet's length, as the device
//!   sent it, or the tunnel packet's length when that one is classified.

use core::ptr::{read_volatile, write_volatile};

use monitor_common::reason;

use crate::{
    classify::{self, Lookup},
    maps::{ENCAP, count},
    parse::{self, DESCEND, ETH_P_IP, ETH_P_IPV6, ETH_P_PPP_SES, Frame, Packet, read},
};

/// What starts at a noted offset.
pub const KIND_PPPOE: u32 = 1;
pub const KIND_MPLS: u32 = 2;
pub const KIND_GRE: u32 = 3;
pub const KIND_VXLAN: u32 = 4;
pub const KIND_GENEVE: u32 = 5;
const KIND_ETH: u32 = 6;
const KIND_IPV4: u32 = 7;
const KIND_IPV6: u32 = 8;

/// MPLS labels followed to the bottom of the stack; a deeper stack is `mpls_depth`. A
/// transport label, a service label (VPN, pseudowire) and an entropy-label pair make four;
/// segment-routing policies and fast-reroute repair paths push a few more. 8 takes the
/// stacks seen in practice, at one 4-byte read per label.
pub const MAX_MPLS_LABELS: usize = 8;
/// IP tunnels followed, nested: an overlay (a device's own tunnel, VXLAN in a data centre)
/// inside one provider tunnel. Deeper nesting is `tunnel_depth`.
pub const MAX_TUNNEL: u32 = 2;
/// Header offsets followed: past 4 KiB of headers nothing is a real encapsulation (and no
/// XDP frame is that long), and the bound keeps the verifier's range proof.
pub const MAX_OFF: usize = 0xfff;

/// Transparent Ethernet bridging: the GRE (NVGRE) and GENEVE protocol of an inner frame.
const ETH_P_TEB: u16 = 0x6558;
const GRE_CSUM: u16 = 0x8000;
const GRE_ROUTING: u16 = 0x4000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQ: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;
/// VXLAN's "valid VNI" flag.
const VXLAN_I: u8 = 0x08;
/// PPP protocol numbers of IPv4 and IPv6 (RFC 1332, 5072).
const PPP_IP: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
/// The shortest Ethernet frame without its FCS (60 bytes, 64 with a VLAN tag): shorter
/// ones are padded up to it.
const ETH_MIN_FRAME: u64 = 64;

/// The note `parse` leaves for `descend`: the header of `kind` at frame offset `off`, and
/// for a tunnel the IP packet that carries it. `depth` (tunnels entered) is `descend`'s.
#[derive(Clone, Copy)]
pub struct Note {
    kind: u32,
    off: u32,
    depth: u32,
    outer: Packet,
}

/// Notes a PPPoE or MPLS header at `off`, in front of the IP packet.
#[inline(always)]
pub fn note(kind: u32, off: usize) {
    if let Some(n) = ENCAP.get_ptr_mut(0) {
        // SAFETY: a per-CPU array value of this program's CPU; nothing else runs on it
        // meanwhile. Volatile, so that the compiler does not forward the values to the
        // reads in `descend` (their being unknown is the point).
        unsafe {
            write_volatile(&raw mut (*n).kind, kind);
            write_volatile(&raw mut (*n).off, off as u32);
        }
    }
}

/// Notes a tunnel header of `kind` at `off`, carried by the IP packet `p`.
#[inline(always)]
pub fn note_tunnel(kind: u32, off: usize, p: &Packet) {
    if let Some(n) = ENCAP.get_ptr_mut(0) {
        // SAFETY: as in `note`.
        unsafe {
            write_volatile(&raw mut (*n).kind, kind);
            write_volatile(&raw mut (*n).off, off as u32);
            (*n).outer = *p;
        }
    }
}

/// Walks the encapsulation `parse` noted: the packet to classify, or the outcome of a frame
/// that has none (PPPoE and MPLS frames that are not IP, cut, or too deep).
///
/// The packets that carry a tunnel get a light parse (the fixed header and the tunnel's
/// ports); only the packet to classify is parsed whole (extension headers, transport
/// header, DNS and TLS notes), once, after the walk. So an IPv6 packet with extension
/// headers inside a tunnel is not searched for a further tunnel: it is classified.
#[inline(always)]
pub fn descend(f: impl Frame, wire_len: u32, how: Lookup) -> Result<Packet, u32> {
    let Some(n) = ENCAP.get_ptr_mut(0) else {
        // Never: the array has its one entry.
        return Err(reason::NON_IP);
    };
    // SAFETY (every access to `*n` below): as in `note`; `depth` is written by this walk
    // only.
    unsafe {
        // Tunnels entered: the parser noted a tunnel in the packet it parsed (1), or a
        // PPPoE or MPLS header in front of the first IP packet (0).
        let tunnel = is_tunnel(read_volatile(&raw const (*n).kind));
        write_volatile(&raw mut (*n).depth, u32::from(tunnel));
    }
    'walk: {
        for _ in 0..=MAX_TUNNEL {
            let (kind, off, depth) = unsafe {
                (
                    read_volatile(&raw const (*n).kind),
                    read_volatile(&raw const (*n).off) as usize,
                    read_volatile(&raw const (*n).depth),
                )
            };
            let (ip, off) = match to_ip(f, kind, off, wire_len) {
                Ok(next) => next,
                Err(r) if depth == 0 => return Err(r),
                Err(reason::GRE_PPTP) => return Ok(tunnel(n, reason::GRE_PPTP)),
                Err(_) => return Ok(tunnel(n, reason::TUNNEL_UNPARSED)),
            };
            // Through the map again: one path on from here, not one per path of `to_ip`.
            let (ip, off) = unsafe {
                write_volatile(&raw mut (*n).kind, ip);
                write_volatile(&raw mut (*n).off, off as u32);
                (
                    read_volatile(&raw const (*n).kind),
                    read_volatile(&raw const (*n).off) as usize,
                )
            };
            if off > MAX_OFF {
                if depth == 0 {
                    return Err(reason::MALFORMED_L2);
                }
                return Ok(tunnel(n, reason::TUNNEL_UNPARSED));
            }
            let wire_l3 = u64::from(wire_len).saturating_sub(off as u64);
            // The light parse: does this packet carry a further tunnel?
            let header = if ip == KIND_IPV4 {
                parse::ipv4_header(f, off, || wire_l3)
            } else {
                parse::ipv6_header(f, off, || wire_l3).map(|p| (p, Some(off + 40)))
            };
            let (mut q, l4) = match header {
                Ok(header) => header,
                Err(r) if depth == 0 => return Err(r),
                Err(_) => return Ok(tunnel(n, reason::TUNNEL_UNPARSED)),
            };
            // A later fragment has no tunnel header to look for.
            let Some((kind, off)) = l4.and_then(|l4| parse::tunnel_at(f, l4, &mut q)) else {
                // This is the packet to classify.
                break 'walk;
            };
            unsafe {
                (*n).outer = q;
                if depth >= MAX_TUNNEL {
                    return Ok(tunnel(n, reason::TUNNEL_DEPTH));
                }
                write_volatile(&raw mut (*n).kind, kind);
                write_volatile(&raw mut (*n).off, off as u32);
                write_volatile(&raw mut (*n).depth, depth + 1);
            }
        }
        // Not reached: every pass ends the walk, returns, or enters a tunnel, and the depth
        // check returns.
        return Ok(tunnel(n, reason::TUNNEL_DEPTH));
    }
    // The packet to classify, parsed whole; its kind, offset and depth read back once more.
    let (ip, off, depth) = unsafe {
        (
            read_volatile(&raw const (*n).kind),
            read_volatile(&raw const (*n).off) as usize,
            read_volatile(&raw const (*n).depth),
        )
    };
    if off > MAX_OFF {
        // Never: checked in the walk (kept for the verifier's range proof).
        return Err(reason::MALFORMED_L2);
    }
    let wire_l3 = u64::from(wire_len).saturating_sub(off as u64);
    let parsed = if ip == KIND_IPV4 {
        parse::ipv4(f, off, || wire_l3)
    } else {
        parse::ipv6(f, off, || wire_l3)
    };
    match parsed {
        Ok(p) if depth == 0 => Ok(p),
        Ok(p) => {
            if classify::inner_decides(&p, how) {
                count(reason::TUNNEL_INNER);
                return Ok(p);
            }
            Ok(tunnel(n, reason::TUNNEL_OUTER))
        }
        // A tunnel behind IPv6 extension headers: the parser noted the packet as the
        // tunnel's own, and it is classified.
        Err(DESCEND) => Ok(tunnel(n, reason::TUNNEL_UNPARSED)),
        Err(r) if depth == 0 => Err(r),
        Err(_) => Ok(tunnel(n, reason::TUNNEL_UNPARSED)),
    }
}

/// The tunnel's own packet (the one the last note carries), counted under `why`.
#[inline(always)]
fn tunnel(n: *mut Note, why: u32) -> Packet {
    count(why);
    // SAFETY: as in `note`.
    unsafe { (*n).outer }
}

#[inline(always)]
fn is_tunnel(kind: u32) -> bool {
    kind == KIND_GRE || kind == KIND_VXLAN || kind == KIND_GENEVE
}

/// From the header of `kind` at `off` to the IP header inside: its kind (IPv4 or IPv6) and
/// offset, or why there is none.
#[inline(always)]
fn to_ip(f: impl Frame, kind: u32, off: usize, wire_len: u32) -> Result<(u32, usize), u32> {
    if off > MAX_OFF {
        return Err(reason::MALFORMED_L2);
    }
    let (mut kind, mut off) = match kind {
        KIND_GRE => gre(f, off)?,
        KIND_VXLAN => (KIND_ETH, vxlan(f, off)?),
        KIND_GENEVE => geneve(f, off)?,
        _ => (kind, off),
    };
    if kind == KIND_ETH {
        // An inner Ethernet frame: IP, or a PPPoE session (an access network carried in a
        // VXLAN or GRE overlay); MPLS is not followed inside a tunnel.
        let (proto, next) = parse::ethernet(f, off)?;
        kind = match proto {
            ETH_P_IP => KIND_IPV4,
            ETH_P_IPV6 => KIND_IPV6,
            ETH_P_PPP_SES => KIND_PPPOE,
            _ => return Err(reason::NON_IP),
        };
        off = next;
    }
    match kind {
        KIND_IPV4 | KIND_IPV6 => Ok((kind, off)),
        KIND_PPPOE => pppoe(f, off),
        KIND_MPLS => mpls(f, off, wire_len),
        _ => Err(reason::NON_IP),
    }
}

/// A PPPoE session header (RFC 2516: version 1, type 1, code 0) and the PPP protocol field
/// after it: 2 bytes, or 1 where protocol-field compression was negotiated (RFC 1661: an
/// odd first byte). IPv4 and IPv6 are followed; LCP, IPCP and the other PPP protocols are
/// not IP.
#[inline(always)]
fn pppoe(f: impl Frame, off: usize) -> Result<(u32, usize), u32> {
    let h = read::<[u8; 8]>(f, off).ok_or(reason::MALFORMED_L2)?;
    if h[0] != 0x11 || h[1] != 0 {
        return Err(reason::MALFORMED_L2);
    }
    let (protocol, len) = if h[6] & 1 == 1 {
        (u16::from(h[6]), 7)
    } else {
        (u16::from_be_bytes([h[6], h[7]]), 8)
    };
    match protocol {
        PPP_IP => Ok((KIND_IPV4, off + len)),
        PPP_IPV6 => Ok((KIND_IPV6, off + len)),
        _ => Err(reason::NON_IP),
    }
}

/// An MPLS label stack (RFC 3032) down to its bottom, at most `MAX_MPLS_LABELS` labels, and
/// the IP packet under it.
#[inline(always)]
fn mpls(f: impl Frame, off: usize, wire_len: u32) -> Result<(u32, usize), u32> {
    let mut off = off;
    for _ in 0..MAX_MPLS_LABELS {
        let entry = read::<[u8; 4]>(f, off).ok_or(reason::MALFORMED_L2)?;
        off += 4;
        // The bottom-of-stack bit.
        if entry[2] & 1 != 0 {
            return mpls_payload(f, off, wire_len);
        }
    }
    Err(reason::MPLS_DEPTH)
}

/// The payload under an MPLS stack, which says nothing of its kind. The first nibble tells
/// IPv4 (4) and IPv6 (6) from a pseudowire control word (0) or an associated channel (1),
/// but an Ethernet pseudowire without a control word starts with a MAC address, whose
/// first nibble may be 4 or 6 too. So the IP header's length must also be the frame's rest
/// (or less, in a frame padded to the Ethernet minimum), which a MAC address passes about
/// once in 30,000 frames. Anything else is `mpls_non_ip`.
#[inline(always)]
fn mpls_payload(f: impl Frame, off: usize, wire_len: u32) -> Result<(u32, usize), u32> {
    let h = read::<[u8; 6]>(f, off).ok_or(reason::MALFORMED_L2)?;
    let (kind, len) = match h[0] >> 4 {
        4 => (KIND_IPV4, u64::from(u16::from_be_bytes([h[2], h[3]]))),
        6 => (KIND_IPV6, 40 + u64::from(u16::from_be_bytes([h[4], h[5]]))),
        _ => {
            count(reason::MPLS_NON_IP);
            return Err(reason::NON_IP);
        }
    };
    let rest = u64::from(wire_len).saturating_sub(off as u64);
    let padded = ETH_MIN_FRAME.saturating_sub(off as u64);
    // A zero IPv4 total length is a TSO super-packet's (the IPv4 parser uses the frame's);
    // IPv6's zero payload length (a jumbogram) gives 40.
    let fits = len == 0 || (kind == KIND_IPV6 && len == 40) || len == rest;
    let padding = len < rest && rest <= padded;
    if !fits && !padding {
        count(reason::MPLS_NON_IP);
        return Err(reason::NON_IP);
    }
    Ok((kind, off))
}

/// A GRE header (RFC 2784, with RFC 2890's key and sequence number): the kind and offset
/// of its payload. Version 1 is PPTP's enhanced GRE (RFC 2637).
#[inline(always)]
fn gre(f: impl Frame, off: usize) -> Result<(u32, usize), u32> {
    let h = read::<[u8; 4]>(f, off).ok_or(reason::TUNNEL_UNPARSED)?;
    let flags = u16::from_be_bytes([h[0], h[1]]);
    match flags & GRE_VERSION {
        0 => {}
        1 => return Err(reason::GRE_PPTP),
        _ => return Err(reason::TUNNEL_UNPARSED),
    }
    // RFC 1701 source routing: deprecated, and never seen carrying traffic.
    if flags & GRE_ROUTING != 0 {
        return Err(reason::TUNNEL_UNPARSED);
    }
    let optional = usize::from(flags & GRE_CSUM != 0)
        + usize::from(flags & GRE_KEY != 0)
        + usize::from(flags & GRE_SEQ != 0);
    let kind = match u16::from_be_bytes([h[2], h[3]]) {
        ETH_P_IP => KIND_IPV4,
        ETH_P_IPV6 => KIND_IPV6,
        ETH_P_TEB => KIND_ETH,
        _ => return Err(reason::TUNNEL_UNPARSED),
    };
    Ok((kind, off + 4 + 4 * optional))
}

/// A VXLAN header (RFC 7348, 8 bytes with the I flag set): the offset of its inner frame.
#[inline(always)]
fn vxlan(f: impl Frame, off: usize) -> Result<usize, u32> {
    // The whole header: a one-byte read's bounds check compiles to a form the verifier
    // draws no range from.
    let h = read::<[u8; 8]>(f, off).ok_or(reason::TUNNEL_UNPARSED)?;
    if h[0] & VXLAN_I == 0 {
        return Err(reason::TUNNEL_UNPARSED);
    }
    Ok(off + 8)
}

/// A GENEVE header (RFC 8926: version 0, 8 bytes and its options): the kind and offset of
/// its payload.
#[inline(always)]
fn geneve(f: impl Frame, off: usize) -> Result<(u32, usize), u32> {
    let h = read::<[u8; 4]>(f, off).ok_or(reason::TUNNEL_UNPARSED)?;
    if h[0] >> 6 != 0 {
        return Err(reason::TUNNEL_UNPARSED);
    }
    let kind = match u16::from_be_bytes([h[2], h[3]]) {
        ETH_P_TEB => KIND_ETH,
        ETH_P_IP => KIND_IPV4,
        ETH_P_IPV6 => KIND_IPV6,
        _ => return Err(reason::TUNNEL_UNPARSED),
    };
    Ok((kind, off + 8 + usize::from(h[0] & 0x3f) * 4))
}
