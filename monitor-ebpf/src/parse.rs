//! Header parsing: Ethernet, up to two VLAN tags (802.1Q, 802.1ad/QinQ), IPv4 with options
//! and fragments, IPv6 with a bounded chain of extension headers, TCP/UDP ports, ICMP type.
//! This is the hot path. Encapsulations (PPPoE, MPLS, GRE, VXLAN, GENEVE) are recognised
//! here, where the parser's paths already tell them apart (an EtherType, the IP protocol, a
//! UDP port), noted for `encap::descend`, and walked there, off this path.
//!
//! Every read goes through [`Frame::span`], which checks the bounds; offsets are masked
//! where the verifier would otherwise lose their range.

use core::{arch::asm, ptr::read_unaligned};

use aya_ebpf::{
    bindings::xdp_md,
    cty::{c_long, c_void},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
};
use monitor_common::{
    flow::{FAMILY_V4, FAMILY_V6},
    programs, reason,
    watch::PORT_HTTPS,
};

use crate::{
    dns,
    encap::{self, KIND_GENEVE, KIND_GRE, KIND_MPLS, KIND_PPPOE, KIND_VXLAN},
    maps::{HEAD, count},
};

const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const ETH_P_QINQ_OLD: u16 = 0x9100;
/// PPPoE session stage (RFC 2516); the discovery stage (0x8863) is not IP.
pub const ETH_P_PPP_SES: u16 = 0x8864;
/// MPLS unicast and multicast (RFC 3032, 5332).
const ETH_P_MPLS_UC: u16 = 0x8847;
const ETH_P_MPLS_MC: u16 = 0x8848;
/// VLAN tags followed; a frame with more is counted as `vlan_depth` and not parsed.
const MAX_VLAN: usize = 2;

const IPPROTO_GRE: u8 = 47;
/// VXLAN (RFC 7348) and GENEVE (RFC 8926) destination ports.
const PORT_VXLAN: u16 = 4789;
const PORT_GENEVE: u16 = 6081;

/// Not an outcome: the frame carries an encapsulation, noted (`encap::note`) for
/// `encap::descend` to walk. Never counted.
pub const DESCEND: u32 = u32::MAX;

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
#[derive(Clone, Copy)]
pub struct Packet {
    pub family: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    /// Explicit, so that a copy of a `Packet` writes no undefined byte: the verifier
    /// refuses a byte of a pointer register spilled there.
    pub _pad: u8,
    /// Addresses as four words in memory (network) order; IPv4 uses the first.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    /// Layer-3 bytes: the IP packet's own length, headers included.
    pub l3_bytes: u64,
    /// Frame offsets of the end of the IP packet and of the TCP/UDP payload (0: none);
    /// the DNS answer copy reads between them.
    pub l3_end: u32,
    pub payload: u32,
}

/// An address's bytes, in network order (the layout of `FlowKey` addresses).
#[inline(always)]
pub fn addr_bytes(a: &[u32; 4]) -> [u8; 16] {
    // SAFETY: same size, every bit pattern valid; the words hold bytes in memory order.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(*a) }
}

/// `v`, through a register the compiler cannot see into: a zero written from it is not
/// merged with its neighbours into a `memset` call. `memset` is a loop whose pointer
/// arithmetic the verifier refuses without CAP_PERFMON (the `programs::COPY` set loads
/// without it). One register move: an empty template would leave its line information on
/// the next instruction's offset too, which the kernel refuses.
#[inline(always)]
pub fn opaque(v: u64) -> u64 {
    let mut v = v;
    // SAFETY: a move of the register to itself.
    unsafe { asm!("{0} = {0}", inout(reg) v, options(pure, nomem, nostack, preserves_flags)) };
    v
}

/// Loads 4 bytes at `at` as one BPF word load, in memory (network) order. LLVM splits
/// unaligned loads on the BPF target into byte loads and shifts, four times the code on
/// the hottest path; the kernel itself allows unaligned packet loads wherever the CPU does
/// (x86-64, arm64), so the load is written out.
///
/// # Safety
/// `at..at + 4` must lie inside the packet, checked against its end by the caller.
#[inline(always)]
unsafe fn load32(at: usize) -> u32 {
    let v: u64;
    // SAFETY: the caller checked the bounds; the instruction only reads.
    unsafe {
        asm!("{v} = *(u32 *)({at} + 0)", v = lateout(reg) v, at = in(reg) at,
             options(readonly, nostack, preserves_flags, pure));
    }
    v as u32
}

/// Loads 2 bytes at `at` in memory (network) order; see [`load32`].
///
/// # Safety
/// `at..at + 2` must lie inside the packet, checked against its end by the caller.
#[inline(always)]
unsafe fn load16(at: usize) -> u16 {
    let v: u64;
    // SAFETY: the caller checked the bounds; the instruction only reads.
    unsafe {
        asm!("{v} = *(u16 *)({at} + 0)", v = lateout(reg) v, at = in(reg) at,
             options(readonly, nostack, preserves_flags, pure));
    }
    v as u16
}

/// Where the parser reads a frame. Every read asks [`Frame::span`] for the address of the
/// bytes it needs, which checks them against what can be read.
pub trait Frame: Copy {
    /// IPv6 extension headers followed in this frame (see `MAX_IPV6_EXT`).
    const MAX_EXT: usize = MAX_IPV6_EXT;

    /// The address of `len` bytes at frame offset `off`, if they can be read.
    fn span(self, off: usize, len: usize) -> Option<usize>;
}

/// The frame in place, between the context's `data` and `data_end`: the fast path. The
/// verifier allows a packet pointer plus an offset held in a register only to a loader with
/// CAP_PERFMON (or CAP_SYS_ADMIN).
#[derive(Clone, Copy)]
pub struct InPlace {
    pub start: usize,
    pub end: usize,
}

impl Frame for InPlace {
    #[inline(always)]
    fn span(self, off: usize, len: usize) -> Option<usize> {
        if self.start + off + len > self.end {
            return None;
        }
        Some(self.start + off)
    }
}

/// The frame read through a load-bytes helper (`bpf_xdp_load_bytes`, `bpf_skb_load_bytes`):
/// each span is copied into a per-CPU map value (`maps::HEAD`, at `at`) and read there, so
/// no pointer ever moves by an offset held in a register. What the programs for a loader
/// without CAP_PERFMON parse (see `main.rs`). A span stays valid until the next one; the
/// parser reads each header's fields before it asks for the next header.
#[derive(Clone, Copy)]
pub struct Copies<L> {
    /// `load(offset, buf, size)`: the helper, with the program's context.
    pub load: L,
    /// `HEAD`'s value (`None` never: the array has its one entry).
    pub at: Option<usize>,
}

/// The longest span the parser asks for (an IPv6 header): `maps::HEAD` holds it.
pub const SPAN_MAX: usize = 40;

impl<L> Copies<L> {
    /// The frame read with `load` (`load_xdp`, `load_skb`) into `HEAD`.
    #[inline(always)]
    pub fn new(load: L) -> Self {
        Self {
            load,
            at: HEAD.get_ptr_mut(0).map(|p| p as usize),
        }
    }
}

/// `load(offset, buf, size)` for the XDP frame `ctx`: `bpf_xdp_load_bytes`, which reads the
/// fragments of a multi-buffer frame too. For `Copies` and the DNS and ClientHello copies;
/// `buf` must be `size` writable bytes.
#[inline(always)]
pub fn load_xdp(ctx: *mut xdp_md) -> impl Fn(u32, *mut c_void, u32) -> c_long + Copy {
    // SAFETY: the callers pass `size` writable bytes at `buf` (see above).
    move |offset, buf, size| unsafe { bpf_xdp_load_bytes(ctx, offset, buf, size) }
}

/// `load_xdp` for the skb `skb`: `bpf_skb_load_bytes`, which reads past the linear part, so
/// nothing needs to be pulled.
#[inline(always)]
pub fn load_skb(skb: *const c_void) -> impl Fn(u32, *mut c_void, u32) -> c_long + Copy {
    // SAFETY: as in `load_xdp`.
    move |offset, buf, size| unsafe { bpf_skb_load_bytes(skb, offset, buf, size) }
}

impl<L: Fn(u32, *mut c_void, u32) -> c_long + Copy> Frame for Copies<L> {
    /// Fewer, for the verifier (see `programs::COPY_MAX_IPV6_EXT`).
    const MAX_EXT: usize = programs::COPY_MAX_IPV6_EXT;

    #[inline(always)]
    fn span(self, off: usize, len: usize) -> Option<usize> {
        // `len` is a constant at every call site, at most `SPAN_MAX`; an offset past the
        // frame makes the helper fail.
        let at = self.at?;
        if len > SPAN_MAX || (self.load)(off as u32, at as *mut c_void, len as u32) != 0 {
            return None;
        }
        Some(at)
    }
}

/// Reads a `T` at `off`, if it can be read.
#[inline(always)]
pub fn read<T: Copy>(f: impl Frame, off: usize) -> Option<T> {
    // SAFETY: `span` checked that the whole `T` can be read at the address.
    f.span(off, size_of::<T>())
        .map(|at| unsafe { read_unaligned(at as *const T) })
}

/// Parses a frame; `Err` carries the outcome reason when it is not a classifiable IP packet.
/// `wire_len` gives the frame's length as the hook sees it, asked only when an IP length is
/// 0 (a helper call for XDP: no packet of ordinary traffic pays for it).
/// `Err(DESCEND)`: the frame carries an encapsulation, noted for `encap::descend`.
#[inline(always)]
pub fn parse(f: impl Frame, wire_len: impl Fn() -> u32 + Copy) -> Result<Packet, u32> {
    // The VLAN walk of `ethernet`, written out: through the function, the offsets are no
    // longer constants to the verifier, which then walks the parser twice as long.
    let mut proto: u16 = read::<[u8; 2]>(f, 12)
        .map(u16::from_be_bytes)
        .ok_or(reason::MALFORMED_L2)?;
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN {
        if !is_vlan(proto) {
            break;
        }
        proto = read::<[u8; 2]>(f, off + 2)
            .map(u16::from_be_bytes)
            .ok_or(reason::MALFORMED_L2)?;
        off += 4;
    }
    let wire_l3 = move || u64::from(wire_len()).saturating_sub(off as u64);
    match proto {
        ETH_P_IP => ipv4(f, off, wire_l3),
        ETH_P_IPV6 => ipv6(f, off, wire_l3),
        ETH_P_PPP_SES => {
            encap::note(KIND_PPPOE, off);
            Err(DESCEND)
        }
        ETH_P_MPLS_UC | ETH_P_MPLS_MC => {
            encap::note(KIND_MPLS, off);
            Err(DESCEND)
        }
        ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_OLD => Err(reason::VLAN_DEPTH),
        _ => Err(reason::NON_IP),
    }
}

/// 802.1Q, 802.1ad and the older QinQ EtherType.
#[inline(always)]
fn is_vlan(proto: u16) -> bool {
    proto == ETH_P_8021Q || proto == ETH_P_8021AD || proto == ETH_P_QINQ_OLD
}

/// The EtherType of the (inner) Ethernet frame at `off`, behind up to `MAX_VLAN` tags, and the
/// offset of what follows it. A VLAN EtherType returned means more tags than followed.
#[inline(always)]
pub fn ethernet(f: impl Frame, off: usize) -> Result<(u16, usize), u32> {
    let mut proto: u16 = read::<[u8; 2]>(f, off + 12)
        .map(u16::from_be_bytes)
        .ok_or(reason::MALFORMED_L2)?;
    let mut off = off + ETH_HLEN;
    for _ in 0..MAX_VLAN {
        if !is_vlan(proto) {
            break;
        }
        proto = read::<[u8; 2]>(f, off + 2)
            .map(u16::from_be_bytes)
            .ok_or(reason::MALFORMED_L2)?;
        off += 4;
    }
    Ok((proto, off))
}

/// The IPv4 packet at `off`; `Err(DESCEND)` when it carries a tunnel (noted).
#[inline(always)]
pub fn ipv4(f: impl Frame, off: usize, wire_l3: impl Fn() -> u64) -> Result<Packet, u32> {
    let (mut p, l4) = ipv4_header(f, off, wire_l3)?;
    let Some(l4) = l4 else {
        // A later fragment: no transport header, classified by its addresses.
        count(reason::FRAGMENT);
        return Ok(p);
    };
    if transport(f, l4, &mut p) {
        return Err(DESCEND);
    }
    Ok(p)
}

/// The fixed IPv4 header at `off` (options skipped), and the offset of the transport
/// header: `None` for a later fragment, which has none. `wire_l3`: the frame's bytes from
/// `off` on, asked only for a zero total length.
#[inline(always)]
pub fn ipv4_header(
    f: impl Frame,
    off: usize,
    wire_l3: impl Fn() -> u64,
) -> Result<(Packet, Option<usize>), u32> {
    // version/IHL, ..., total length, id, flags+fragment offset, ttl, protocol, ..., addresses
    let h = f.span(off, 20).ok_or(reason::MALFORMED_IPV4)?;
    // SAFETY: the 20 bytes at `h` were checked above.
    let (vihl, total, frag, proto, src, dst) = unsafe {
        (
            *(h as *const u8),
            u16::from_be(load16(h + 2)),
            u16::from_be(load16(h + 6)),
            *((h + 9) as *const u8),
            load32(h + 12),
            load32(h + 16),
        )
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(reason::MALFORMED_IPV4);
    }
    if total != 0 && usize::from(total) < ihl {
        return Err(reason::MALFORMED_IPV4);
    }
    let mut p = Packet {
        family: FAMILY_V4,
        proto,
        tcp_flags: 0,
        _pad: 0,
        src: [src, 0, 0, 0],
        dst: [dst, 0, 0, 0],
        sport: 0,
        dport: 0,
        // A zero total length is what TSO/BIG TCP super-packets carry: use the frame.
        l3_bytes: if total == 0 {
            wire_l3()
        } else {
            u64::from(total)
        },
        l3_end: 0,
        payload: 0,
    };
    p.l3_end = (off as u64 + p.l3_bytes) as u32;
    if frag & 0x1fff != 0 {
        return Ok((p, None));
    }
    // IHL is at most 60 and `off` at most `encap::MAX_OFF`: the mask keeps the verifier's
    // range proof without cutting a real offset.
    Ok((p, Some((off + ihl) & 0x1fff)))
}

/// The IPv6 packet at `off`; `Err(DESCEND)` when it carries a tunnel (noted).
#[inline(always)]
pub fn ipv6<F: Frame>(f: F, off: usize, wire_l3: impl Fn() -> u64) -> Result<Packet, u32> {
    let mut p = ipv6_header(f, off, wire_l3)?;
    let mut next = p.proto;
    let mut off = off + 40;
    for _ in 0..F::MAX_EXT {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH => {
                let Some(ext) = read::<[u8; 2]>(f, off) else {
                    count(reason::IPV6_EXT_LIMIT);
                    return Ok(p);
                };
                next = ext[0];
                off += (usize::from(ext[1]) + 1) * 8;
            }
            IPPROTO_AH => {
                let Some(ext) = read::<[u8; 2]>(f, off) else {
                    count(reason::IPV6_EXT_LIMIT);
                    return Ok(p);
                };
                next = ext[0];
                off += (usize::from(ext[1]) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let Some(ext) = read::<[u8; 4]>(f, off) else {
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
                if transport(f, off & 0x7fff, &mut p) {
                    return Err(DESCEND);
                }
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

/// The tunnel a packet carries in its transport header at `l4`, for `encap`'s light parse
/// of the packets that carry tunnels: GRE, or UDP to the VXLAN or GENEVE port, as the kind
/// and offset of the tunnel header. Reads the UDP ports into `p`.
#[inline(always)]
pub fn tunnel_at(f: impl Frame, l4: usize, p: &mut Packet) -> Option<(u32, usize)> {
    match p.proto {
        IPPROTO_GRE => Some((KIND_GRE, l4)),
        IPPROTO_UDP => {
            let h = f.span(l4, 4)?;
            // SAFETY: the 4 bytes at `h` were checked.
            (p.sport, p.dport) = ports(unsafe { load32(h) });
            p.payload = (l4 + 8) as u32;
            udp_tunnel(p.dport).map(|kind| (kind, l4 + 8))
        }
        _ => None,
    }
}

/// The tunnel a UDP destination port stands for.
#[inline(always)]
fn udp_tunnel(dport: u16) -> Option<u32> {
    match dport {
        PORT_VXLAN => Some(KIND_VXLAN),
        PORT_GENEVE => Some(KIND_GENEVE),
        _ => None,
    }
}

/// The fixed IPv6 header at `off` (`proto` is its next header); `wire_l3` as in
/// `ipv4_header`, asked only for a zero payload length.
#[inline(always)]
pub fn ipv6_header(f: impl Frame, off: usize, wire_l3: impl Fn() -> u64) -> Result<Packet, u32> {
    let h = f.span(off, 40).ok_or(reason::MALFORMED_IPV6)?;
    // SAFETY: the 40 bytes at `h` were checked above.
    let (version, payload, next_header, src, dst) = unsafe {
        (
            *(h as *const u8) >> 4,
            u16::from_be(load16(h + 4)),
            *((h + 6) as *const u8),
            [
                load32(h + 8),
                load32(h + 12),
                load32(h + 16),
                load32(h + 20),
            ],
            [
                load32(h + 24),
                load32(h + 28),
                load32(h + 32),
                load32(h + 36),
            ],
        )
    };
    if version != 6 {
        return Err(reason::MALFORMED_IPV6);
    }
    let mut p = Packet {
        family: FAMILY_V6,
        proto: next_header,
        tcp_flags: 0,
        _pad: 0,
        src,
        dst,
        sport: 0,
        dport: 0,
        // Payload length 0 is a jumbogram or a GSO super-packet: use the frame.
        l3_bytes: if payload == 0 {
            wire_l3()
        } else {
            40 + u64::from(payload)
        },
        l3_end: 0,
        payload: 0,
    };
    p.l3_end = (off as u64 + p.l3_bytes) as u32;
    Ok(p)
}

/// Source and destination port of the first 4 transport bytes, loaded in memory order.
#[inline(always)]
fn ports(word: u32) -> (u16, u16) {
    let bytes = word.to_ne_bytes();
    (
        u16::from_be_bytes([bytes[0], bytes[1]]),
        u16::from_be_bytes([bytes[2], bytes[3]]),
    )
}

/// Ports (TCP, UDP) or type/code (ICMP, ICMPv6, as NetFlow puts them in the destination port).
/// True when the packet carries a tunnel (GRE, or UDP to the VXLAN or GENEVE port), noted
/// with the packet for `encap::descend`.
#[inline(always)]
fn transport(f: impl Frame, off: usize, p: &mut Packet) -> bool {
    match p.proto {
        IPPROTO_TCP => match f.span(off, 14) {
            // SAFETY: the 14 bytes at `h` were checked.
            Some(h) => unsafe {
                (p.sport, p.dport) = ports(load32(h));
                p.tcp_flags = *((h + 13) as *const u8);
                p.payload = (off + usize::from(*((h + 12) as *const u8) >> 4) * 4) as u32;
                if p.sport == dns::PORT_DNS {
                    dns::note(p);
                } else if p.dport == PORT_HTTPS {
                    dns::note_hello(p);
                }
            },
            None => count(reason::MALFORMED_L4),
        },
        IPPROTO_UDP => match f.span(off, 4) {
            // SAFETY: the 4 bytes at `h` were checked.
            Some(h) => {
                (p.sport, p.dport) = ports(unsafe { load32(h) });
                p.payload = (off + 8) as u32;
                if let Some(kind) = udp_tunnel(p.dport) {
                    encap::note_tunnel(kind, off + 8, p);
                    return true;
                }
                if p.sport == dns::PORT_DNS {
                    dns::note(p);
                }
            }
            None => count(reason::MALFORMED_L4),
        },
        IPPROTO_ICMP | IPPROTO_ICMPV6 => match read::<[u8; 2]>(f, off) {
            Some(h) => p.dport = u16::from_be_bytes(h),
            None => count(reason::MALFORMED_L4),
        },
        IPPROTO_GRE => {
            encap::note_tunnel(KIND_GRE, off, p);
            return true;
        }
        _ => {}
    }
    false
}
