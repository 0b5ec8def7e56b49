//! DNS answers: packets from TCP or UDP port 53 are copied, payload only and at most
//! `DNS_COPY` bytes, into the ring buffer as `DnsEvent` records. The daemon parses them
//! (the kernel never parses DNS) and learns the addresses of watched domains.

use core::arch::asm;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use monitor_common::{
    reason,
    watch::{DNS_COPY, DnsEvent, EVENT_DNS},
};

use crate::{
    maps::{CONFIG, EVENTS, count},
    parse::Packet,
};

const PORT_DNS: u16 = 53;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const _: () = assert!(DNS_COPY == 0x200, "the copy length mask below");

/// Where the DNS payload of a packet is.
#[derive(Clone, Copy)]
pub struct Answer {
    offset: u32,
    len: u32,
    proto: u8,
    family: u8,
}

/// The DNS payload of a packet from port 53, if it has one.
#[inline(always)]
pub fn answer(p: &Packet) -> Option<Answer> {
    if p.sport != PORT_DNS
        || (p.proto != IPPROTO_UDP && p.proto != IPPROTO_TCP)
        || p.payload == 0
        || p.l3_end <= p.payload
    {
        return None;
    }
    Some(Answer {
        offset: p.payload,
        len: p.l3_end - p.payload,
        proto: p.proto,
        family: p.family,
    })
}

/// Where the bytes come from.
pub enum Source<'a> {
    Xdp(&'a XdpContext),
    Tc(&'a TcContext),
}

/// Copies an answer into the ring buffer; failures are counted. A subprogram of its own,
/// with its inputs passed through memory: inlined, the verifier would walk it once for
/// every path through the classifier and exceed its instruction limit.
#[inline(never)]
pub fn copy(src: &Source<'_>, a: Answer) {
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
        let size = (size + 1) as u32;
        match src {
            Source::Xdp(ctx) => bpf_xdp_load_bytes(ctx.ctx, a.offset, buf, size),
            Source::Tc(ctx) => bpf_skb_load_bytes(ctx.as_ptr(), a.offset, buf, size),
        }
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
