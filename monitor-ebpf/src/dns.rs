//! Payload copies for domain attribution. DNS answers: packets from TCP or UDP port 53
//! are copied, payload only and at most `DNS_COPY` bytes, into the ring buffer as
//! `DnsEvent` records. TLS ClientHellos: packets to TCP port 443 whose payload starts a
//! handshake record holding a ClientHello are copied from the IP header on, at most
//! `HELLO_COPY` bytes, as `HelloEvent` records. The daemon parses both (the kernel never
//! parses DNS or TLS) and learns the addresses of watched domains.

use core::arch::asm;

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    cty::{c_long, c_void},
};
use monitor_common::{
    reason,
    watch::{DNS_COPY, DnsEvent, EVENT_DNS, EVENT_HELLO, HELLO_COPY, HelloEvent},
};

use crate::{
    flow::wakeup_flags,
    maps::{DNS_PENDING, EVENTS, count},
    parse::{Packet, addr_bytes, load_skb, load_xdp, opaque},
};

/// The source port of the packets `note` is for.
pub const PORT_DNS: u16 = 53;
const _: () = assert!(DNS_COPY == 0x200, "the copy length mask below");
const _: () = assert!(HELLO_COPY == 0x400, "the copy length mask below");

/// `Answer::kind` of a DNS answer.
const KIND_DNS: u8 = 0;
/// `Answer::kind` of a packet that may hold a ClientHello.
const KIND_HELLO: u8 = 1;

/// What to copy of a packet: the record `note`/`note_hello` leave in `DNS_PENDING` for
/// `copy_xdp`/`copy_tc`; `len` 0 is none. For a DNS answer, `offset` and `len` are the
/// payload's; for a ClientHello candidate they are the IP packet's and `payload` is where
/// the TCP payload starts.
#[derive(Clone, Copy)]
pub struct Answer {
    offset: u32,
    len: u32,
    payload: u32,
    proto: u8,
    family: u8,
    kind: u8,
    _pad: u8,
    /// A DNS answer's addresses (unused for a ClientHello, whose copy holds its header).
    server: [u32; 4],
    client: [u32; 4],
}

/// Notes where the DNS payload of a TCP or UDP packet from port 53 is, for the copy the
/// program makes once the packet is classified (`pending`, then `copy_xdp`/`copy_tc`).
/// Called by the parser where it reads the ports: the protocol and the port are tested
/// where the parser's paths already tell them apart, so the note adds no branch on them
/// (and no precise value) to the classifier's paths.
///
/// The note goes through the per-CPU map `DNS_PENDING` rather than registers, for the
/// verifier's sake. The copy's helper needs its length as a precise value, and the
/// verifier would trace that back through the parser: every parse path (VLAN tags, IPv4
/// options, IPv6 extension headers, TCP data offset) then stayed distinct through the
/// whole classifier, past the 1M-instruction limit. Even a returned flag, a known constant
/// on most paths, made the verifier walk the classifier twice. Read back from the map, the
/// flag, offset and length are plain unknown values, which the copy bounds itself.
#[inline(always)]
pub fn note(p: &Packet) {
    if p.l3_end <= p.payload {
        return;
    }
    if let Some(slot) = DNS_PENDING.get_ptr_mut(0) {
        // SAFETY: a per-CPU array value of this program's CPU; nothing else runs on it
        // meanwhile.
        unsafe {
            *slot = Answer {
                offset: p.payload,
                len: p.l3_end - p.payload,
                payload: p.payload,
                proto: p.proto,
                family: p.family,
                kind: KIND_DNS,
                _pad: 0,
                server: p.src,
                client: p.dst,
            };
        }
    }
}

/// Notes a TCP packet to port 443 with a payload, for the copy to check whether the payload
/// starts a ClientHello (`pending`, then `copy_xdp`/`copy_tc`): the check reads packet
/// bytes, so it is made once the packet is classified, off the parser's paths, as `note`
/// explains.
#[inline(always)]
pub fn note_hello(p: &Packet) {
    if p.l3_end <= p.payload {
        return;
    }
    let zero = opaque(0) as u32;
    if let Some(slot) = DNS_PENDING.get_ptr_mut(0) {
        // SAFETY: as in `note`.
        unsafe {
            *slot = Answer {
                offset: p.l3_end - p.l3_bytes as u32,
                len: p.l3_bytes as u32,
                payload: p.payload,
                proto: p.proto,
                family: p.family,
                kind: KIND_HELLO,
                _pad: 0,
                // Through `opaque`: 32 zero bytes would be a `memset` call.
                server: [zero; 4],
                client: [zero; 4],
            };
        }
    }
}

/// Whether `note` left an answer to copy (one per-CPU array read per frame).
#[inline(always)]
pub fn pending() -> bool {
    DNS_PENDING.get(0).is_some_and(|a| a.len != 0)
}

/// Copies the answer `note` left into the ring buffer (XDP). A subprogram with only the
/// context as argument: the verifier walks it once per distinct caller state, which are
/// few where it is called.
#[inline(never)]
pub fn copy_xdp(ctx: *mut xdp_md) {
    // `copy` passes `size` writable bytes of a reserved record.
    copy(load_xdp(ctx));
}

/// Copies the answer `note` left into the ring buffer (TC).
#[inline(never)]
pub fn copy_tc(skb: *mut __sk_buff) {
    // As in `copy_xdp`.
    copy(load_skb(skb.cast()));
}

/// Reserves a `DnsEvent`, fills it with `load(offset, buf, size)` and submits it; failures
/// are counted.
#[inline(always)]
fn copy(load: impl Fn(u32, *mut c_void, u32) -> c_long) {
    let Some(slot) = DNS_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `note`; the note is taken, whatever becomes of the copy.
    let a = unsafe {
        let a = *slot;
        (*slot).len = 0;
        a
    };
    if a.kind == KIND_HELLO {
        copy_hello(&a, load);
        return;
    }
    // `a.len` is an unknown value here (read from the map): bounded below and above.
    let len = if a.len > DNS_COPY as u32 {
        count(reason::DNS_TRUNCATED);
        DNS_COPY as u32
    } else {
        a.len
    };
    if len == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) else {
        count(reason::RINGBUF_DROPPED);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record, `DNS_COPY` bytes of `data` long; `len` is
    // 1..=DNS_COPY (checked above), so the helper writes inside it.
    let rc = unsafe {
        (*e).kind = EVENT_DNS;
        (*e).len = len as u16;
        (*e).proto = a.proto;
        (*e).family = a.family;
        (*e).payload_len = a.len;
        (*e)._pad = 0;
        (*e).server = addr_bytes(&a.server);
        (*e).client = addr_bytes(&a.client);
        let buf = (&raw mut (*e).data).cast();
        // Keeps the verifier's range proof: LLVM would otherwise pass `len` in a register
        // it shares with the header fields stored above, whose bounds the verifier cannot
        // see. The mask is a no-op for 1..=DNS_COPY.
        let mut size = u64::from(len - 1);
        asm!("{0} &= 0x1ff", inout(reg) size, options(nomem, nostack, preserves_flags));
        load(a.offset, buf, (size + 1) as u32)
    };
    if rc != 0 {
        entry.discard(0);
        count(reason::DNS_LOAD_FAILED);
        return;
    }
    // Answers are few and the learning should be prompt: wake the daemon when the ring is
    // past the threshold, as flow events do.
    entry.submit(wakeup_flags());
    count(reason::DNS_COPIED);
}

/// Whether the TCP payload at `a.payload` starts a TLS handshake record (type 22, major
/// version 3) whose first message is a ClientHello (type 1); then copies the IP packet into
/// a `HelloEvent`. Every other packet to port 443 costs the six-byte read alone.
#[inline(always)]
fn copy_hello(a: &Answer, load: impl Fn(u32, *mut c_void, u32) -> c_long) {
    // A word, not a byte array: zeroing an array compiles to a memset loop whose stack
    // pointer arithmetic the verifier refuses without CAP_PERFMON.
    let mut word: u64 = 0;
    if load(a.payload, (&raw mut word).cast(), 6) != 0 {
        // A payload shorter than six bytes is no ClientHello; anything else is a failure.
        if a.offset + a.len >= a.payload + 6 {
            count(reason::TLS_LOAD_FAILED);
        }
        return;
    }
    let head = word.to_ne_bytes();
    if head[0] != 22 || head[1] != 3 || head[5] != 1 {
        return;
    }
    let len = if a.len > HELLO_COPY as u32 {
        count(reason::TLS_HELLO_CUT);
        HELLO_COPY as u32
    } else {
        a.len
    };
    if len == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<HelloEvent>(0) else {
        count(reason::RINGBUF_DROPPED);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record, `HELLO_COPY` bytes of `data` long; `len` is
    // 1..=HELLO_COPY (checked above), so the helper writes inside it.
    let rc = unsafe {
        (*e).kind = EVENT_HELLO;
        (*e).len = len as u16;
        (*e)._pad = 0;
        (*e).packet_len = a.len;
        (*e)._pad2 = 0;
        let buf = (&raw mut (*e).data).cast();
        // As in `copy`: the mask keeps the range proof and is a no-op for 1..=HELLO_COPY.
        let mut size = u64::from(len - 1);
        asm!("{0} &= 0x3ff", inout(reg) size, options(nomem, nostack, preserves_flags));
        load(a.offset, buf, (size + 1) as u32)
    };
    if rc != 0 {
        entry.discard(0);
        count(reason::TLS_LOAD_FAILED);
        return;
    }
    // Like an answer, a ClientHello should be learned promptly.
    entry.submit(wakeup_flags());
    count(reason::TLS_HELLO_COPIED);
}
