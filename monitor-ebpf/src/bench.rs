//! The benchmark's frame rewrite (see `monitor_common::bench`). Never on a live path: only
//! the bench programs call it, and the daemon never attaches them.

use core::ptr::read_unaligned;

use monitor_common::{
    bench::BenchPacket,
    flow::{EVENT_FLOW_START, FAMILY_V4, FAMILY_V6, FlowKey, FlowState},
};

use crate::{
    flow,
    maps::{BENCH_CURSOR, BENCH_WORKLOAD},
};

const ETH_LEN: usize = 14;

/// Writes the next workload packet's addresses and ports into an untagged IPv4 or IPv6
/// UDP/TCP frame (without IPv4 options or IPv6 extension headers).
#[inline(always)]
pub fn rewrite(start: usize, end: usize) {
    let Some(entry) = next_packet() else {
        return;
    };
    if start + ETH_LEN > end {
        return;
    }
    // SAFETY: bounds checked above.
    let ethertype = unsafe { *((start + 12) as *const [u8; 2]) };
    match ethertype {
        [0x08, 0x00] => {
            write(start, end, ETH_LEN + 12, &entry.src[..4]);
            write(start, end, ETH_LEN + 16, &entry.dst[..4]);
            ports(start, end, ETH_LEN + 20, entry);
        }
        [0x86, 0xdd] => {
            write(start, end, ETH_LEN + 8, &entry.src);
            write(start, end, ETH_LEN + 24, &entry.dst);
            ports(start, end, ETH_LEN + 40, entry);
        }
        _ => {}
    }
}

/// The family and addresses of a frame [`rewrite`] wrote (words in memory order, IPv4 in
/// the first), read at the fixed offsets of its untagged headers.
#[inline(always)]
pub fn addresses(start: usize, end: usize) -> Option<(u8, [u32; 4], [u32; 4])> {
    // Keeps the verifier's range proof for every read below (an IPv6 header is the longer).
    if start + ETH_LEN + 40 > end {
        return None;
    }
    // SAFETY (each read): inside the frame, checked above.
    let ethertype = unsafe { *((start + 12) as *const [u8; 2]) };
    let at = |off: usize| unsafe { read_unaligned((start + ETH_LEN + off) as *const [u32; 4]) };
    match ethertype {
        [0x08, 0x00] => {
            // The source at 12 and the destination at 16: one 16-byte read covers both.
            let [src, dst, ..] = at(12);
            Some((FAMILY_V4, [src, 0, 0, 0], [dst, 0, 0, 0]))
        }
        [0x86, 0xdd] => Some((FAMILY_V6, at(8), at(24))),
        _ => None,
    }
}

/// The next workload packet, wrapping around at the end.
#[inline(always)]
fn next_packet() -> Option<&'static BenchPacket> {
    let cursor = BENCH_CURSOR.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, only this program on this CPU touches it.
    let at = unsafe { *cursor };
    let (next, entry) = match BENCH_WORKLOAD.get(at) {
        Some(e) => (at + 1, e),
        None => (1, BENCH_WORKLOAD.get(0)?),
    };
    // SAFETY: as above.
    unsafe { *cursor = next };
    Some(entry)
}

/// Events `exfilmon_bench_events` submits per run, so that the test run's own per-run cost
/// is spread over several (`monitor_common::bench::EVENTS_PER_RUN`).
pub const EVENTS_PER_RUN: u32 = monitor_common::bench::EVENTS_PER_RUN;

/// Submits a flow-start event for the next workload packet (an IPv4 flow), through the
/// classifier's own `emit`: the ring buffer benchmark's producer.
#[inline(always)]
pub fn emit_event() {
    let Some(p) = next_packet() else {
        return;
    };
    let key = FlowKey {
        inside: p.src,
        remote: p.dst,
        inside_port: u16::from_be_bytes(p.sport),
        remote_port: u16::from_be_bytes(p.dport),
        proto: 17,
        family: FAMILY_V4,
        _pad: [0; 2],
    };
    let st = FlowState {
        packets_out: 1,
        bytes_out: 64,
        reported_bytes: 64,
        group: 1,
        verdict: 3,
        ..FlowState::default()
    };
    flow::emit(EVENT_FLOW_START, &key, &st);
}

#[inline(always)]
fn ports(start: usize, end: usize, off: usize, entry: &BenchPacket) {
    write(start, end, off, &entry.sport);
    write(start, end, off + 2, &entry.dport);
}

#[inline(always)]
fn write(start: usize, end: usize, off: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        let at = start + off + i;
        if at + 1 > end {
            return;
        }
        // SAFETY: `at` is inside the frame, checked above; XDP frames are writable.
        unsafe { *(at as *mut u8) = *b };
    }
}

/// Recomputes the header checksum of an untagged IPv4 frame without options (the live
/// generator's frames), after [`rewrite`] changed its addresses.
#[inline(always)]
pub fn ipv4_checksum(start: usize, end: usize) {
    const HEADER: usize = 20;
    // Keeps the verifier's range proof for the reads and the write below.
    if start + ETH_LEN + HEADER > end {
        return;
    }
    // SAFETY: bounds checked above.
    let ethertype = unsafe { *((start + 12) as *const [u8; 2]) };
    if ethertype != [0x08, 0x00] {
        return;
    }
    // SAFETY: bounds checked above.
    let header = unsafe { *((start + ETH_LEN) as *const [u8; HEADER]) };
    let mut sum = 0u32;
    for i in 0..HEADER / 2 {
        if i != 5 {
            sum += u32::from(u16::from_be_bytes([header[2 * i], header[2 * i + 1]]));
        }
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    // SAFETY: bounds checked above; XDP frames are writable.
    unsafe { *((start + ETH_LEN + 10) as *mut [u8; 2]) = (!(sum as u16)).to_be_bytes() };
}
