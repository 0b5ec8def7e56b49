//! DNS answers: packets from TCP or UDP port 53 are copied, payload only and at most
//! `DNS_COPY` bytes, into the ring buffer as `DnsEvent` records. The daemon parses them
//! (the kernel never parses DNS) and learns the addresses of watched domains.

use core::arch::asm;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, __sk_buff, xdp_md},
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

const PORT_DNS: u16 = 53;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const _: () = assert!(DNS_COPY == 0x200, "the copy length mask below");

/// Where the DNS payload of a packet is: the record `note` leaves in `DNS_PENDING` for
/// `copy_xdp`/`copy_tc`.
#[derive(Clone, Copy)]
pub struct Answer {
    offset: u32,
    len: u32,
    proto: u8,
    family: u8,
}

/// Notes where the DNS payload of a packet from port 53 is, for the copy the program makes
/// once the packet is classified; true when there is one.
///
/// The offset and length go through the per-CPU map `DNS_PENDING` rather than registers
/// on purpose. The copy's helper needs its length as a precise value, and the verifier
/// would trace that back through the parser: every parse path (VLAN tags, IPv4 options,
/// IPv6 extension headers, TCP data offset) would then stay distinct through the whole
/// classifier, and the program went past the verifier's 1M-instruction limit. Read back
/// from a map, they are plain unknown values that the copy bounds itself, and the paths
/// through the classifier merge again before the copy.
#[inline(always)]
pub fn note(p: &Packet) -> bool {
    if p.sport != PORT_DNS
        || (p.proto != IPPROTO_UDP && p.proto != IPPROTO_TCP)
        || p.payload == 0
        || p.l3_end <= p.payload
    {
        return false;
    }
    let Some(slot) = DNS_PENDING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU array value of this program's CPU; nothing else runs on it meanwhile.
    unsafe {
        *slot = Answer {
            offset: p.payload,
            len: p.l3_end - p.payload,
            proto: p.proto,
            family: p.family,
        };
    }
    true
}

/// Copies the answer `note` left into the ring buffer (XDP). A subprogram, with only the
/// context as argument: verified once per distinct caller state, which `note` keeps few.
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
    let Some(a) = DNS_PENDING.get(0).copied() else {
        return;
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
