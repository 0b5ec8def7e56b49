//! DNS answers: packets from TCP or UDP port 53 are copied, payload only and at most
//! `DNS_COPY` bytes, into the ring buffer as `DnsEvent` records. The daemon parses them
//! (the kernel never parses DNS) and learns the addresses of watched domains.

use core::arch::asm;

use aya_ebpf::{
    bindings::{__sk_buff, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, xdp_md},
    cty::{c_long, c_void},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
};
use monitor_common::{
    reason,
    watch::{DNS_COPY, DnsEvent, EVENT_DNS},
};

use crate::{
    maps::{CONFIG, DNS_PENDING, EVENTS, count},
    parse::Packet,
};

/// The source port of the packets `note` is for.
pub const PORT_DNS: u16 = 53;
const _: () = assert!(DNS_COPY == 0x200, "the copy length mask below");

/// Where the DNS payload of a packet is: the record `note` leaves in `DNS_PENDING` for
/// `copy_xdp`/`copy_tc`; `len` 0 is none.
#[derive(Clone, Copy)]
pub struct Answer {
    offset: u32,
    len: u32,
    proto: u8,
    family: u8,
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
                proto: p.proto,
                family: p.family,
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
    copy(|offset, buf, size| {
        // SAFETY: `buf` is `size` writable bytes of a reserved record (see `copy`).
        unsafe { bpf_xdp_load_bytes(ctx, offset, buf, size) }
    });
}

/// Copies the answer `note` left into the ring buffer (TC).
#[inline(never)]
pub fn copy_tc(skb: *mut __sk_buff) {
    copy(|offset, buf, size| {
        // SAFETY: `buf` is `size` writable bytes of a reserved record (see `copy`).
        unsafe { bpf_skb_load_bytes(skb.cast(), offset, buf, size) }
    });
}

/// Reserves a `DnsEvent`, fills it with `load(offset, buf, size)` and submits it; failures
/// are counted.
#[inline(always)]
fn copy(load: impl FnOnce(u32, *mut c_void, u32) -> c_long) {
    let Some(slot) = DNS_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `note`; the note is taken, whatever becomes of the copy.
    let a = unsafe {
        let a = *slot;
        (*slot).len = 0;
        a
    };
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
    let wakeup_at = CONFIG.get(0).map_or(0, |c| c.wakeup_bytes);
    // Answers are few and the learning should be prompt: wake the daemon when the ring is
    // past the threshold, as flow events do.
    let flags = if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= wakeup_at {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(u64::from(flags));
    count(reason::DNS_COPIED);
}
