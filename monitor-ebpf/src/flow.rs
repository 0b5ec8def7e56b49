//! The flow table: violation and watchlist flows only, so a storm of ordinary new flows
//! costs no insert.
//! Events go to the ring buffer with cumulative totals; wakeups are batched.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
};
use monitor_common::{
    class::DIR_OUTBOUND,
    config::KernelConfig,
    flow::{
        EVENT_FLOW_END, EVENT_FLOW_START, EVENT_FLOW_UPDATE, FlowEvent, FlowKey, FlowState,
        TCP_FIN, TCP_RST,
    },
    geo::{asn_slot, country_slot},
    reason,
};

use crate::{
    maps::{ASNS, CONFIG, EVENTS, FLOWS, count},
    parse::{Packet, addr_bytes, opaque},
};

/// Defaults when the daemon has not written `CONFIG` (never in practice).
const DEFAULT_INTERVAL_NS: u64 = 10_000_000_000;

#[inline(always)]
pub fn track(p: &Packet, group: u32, location: u32, verdict: u32, rule: u16, dir: u32, watch: u32) {
    let outbound = dir == DIR_OUTBOUND;
    let key = FlowKey {
        inside: addr_bytes(if outbound { &p.src } else { &p.dst }),
        remote: addr_bytes(if outbound { &p.dst } else { &p.src }),
        inside_port: if outbound { p.sport } else { p.dport },
        remote_port: if outbound { p.dport } else { p.sport },
        proto: p.proto,
        family: p.family,
        _pad: [0; 2],
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let ends = p.tcp_flags & (TCP_FIN | TCP_RST) != 0;

    if let Some(st) = FLOWS.get_ptr_mut(&key) {
        update(st, &key, p, outbound, now, ends);
        return;
    }

    // Every field from a value, the direction's through `opaque`: zeroed fields side by
    // side would become a `memset` call (see `opaque`).
    let (ours, other) = (opaque(u64::from(outbound)), opaque(u64::from(!outbound)));
    let st = FlowState {
        first_ns: now,
        last_ns: now,
        reported_ns: now,
        reported_bytes: p.l3_bytes,
        packets_out: ours,
        bytes_out: ours * p.l3_bytes,
        packets_in: other,
        bytes_in: other * p.l3_bytes,
        // The AS number is looked up here, once per flow, off the per-packet path.
        asn: ASNS.get(asn_slot(location)).copied().unwrap_or(0),
        country: country_slot(location) as u16,
        group: group as u8,
        verdict: verdict as u8,
        rule,
        tcp_flags: p.tcp_flags,
        ended: u8::from(ends),
        watch: watch as u16,
        _pad: [0; 2],
    };
    match FLOWS.insert(&key, &st, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            count(reason::FLOW_CREATED);
            emit(
                if ends {
                    EVENT_FLOW_END
                } else {
                    EVENT_FLOW_START
                },
                &key,
                &st,
            );
        }
        Err(_) => match FLOWS.get_ptr_mut(&key) {
            // Another CPU inserted it between our lookup and insert.
            Some(st) => update(st, &key, p, outbound, now, ends),
            None => count(reason::FLOW_INSERT_FAILED),
        },
    }
}

#[inline(always)]
fn update(st: *mut FlowState, key: &FlowKey, p: &Packet, outbound: bool, now: u64, ends: bool) {
    // SAFETY: `st` points into the flow map entry, valid while this program runs; counters
    // are shared between CPUs, so they are added atomically.
    unsafe {
        let (packets, bytes) = if outbound {
            (&raw mut (*st).packets_out, &raw mut (*st).bytes_out)
        } else {
            (&raw mut (*st).packets_in, &raw mut (*st).bytes_in)
        };
        // `AtomicU64::fetch_add` is not offered on bpf targets; the intrinsic lowers to the
        // BPF atomic add instruction (the result is unused, so no BPF_FETCH is needed).
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(bytes, p.l3_bytes);
        (*st).last_ns = now;
        (*st).tcp_flags |= p.tcp_flags;

        let kind = if ends && (*st).ended == 0 {
            (*st).ended = 1;
            EVENT_FLOW_END
        } else {
            let cfg = CONFIG.get(0);
            let interval = cfg.map_or(DEFAULT_INTERVAL_NS, |c: &KernelConfig| c.update_interval_ns);
            let threshold = cfg.map_or(u64::MAX, |c: &KernelConfig| c.update_bytes);
            let total = (*st).bytes_out + (*st).bytes_in;
            if now.wrapping_sub((*st).reported_ns) < interval
                && total.wrapping_sub((*st).reported_bytes) < threshold
            {
                return;
            }
            EVENT_FLOW_UPDATE
        };
        (*st).reported_ns = now;
        (*st).reported_bytes = (*st).bytes_out + (*st).bytes_in;
        emit(kind, key, &*st);
    }
}

/// The submit flags of a record: a forced wakeup once the unread data reaches the
/// configured `wakeup_bytes`, none before (the daemon's timer drains small batches).
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let wakeup_at = CONFIG.get(0).map_or(0, |c| c.wakeup_bytes);
    u64::from(if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= wakeup_at {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    })
}

/// Submits one event; a failed reservation is counted, never retried.
#[inline(always)]
pub fn emit(kind: u32, key: &FlowKey, st: &FlowState) {
    let flags = wakeup_flags();
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut entry) => {
            let e = entry.as_mut_ptr();
            // SAFETY: `e` is the reserved record. Written field by field, straight from
            // `key` and `st`: a whole `FlowEvent` built first would be one more 128-byte
            // temporary per call site on a stack that has no room for them.
            unsafe {
                (*e).kind = kind;
                (*e)._pad = 0;
                (*e).key = *key;
                (*e).state = *st;
            }
            entry.submit(flags);
            count(reason::RINGBUF_SUBMITTED);
        }
        None => count(reason::RINGBUF_DROPPED),
    }
}
