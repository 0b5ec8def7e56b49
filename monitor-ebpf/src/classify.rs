//! Direction, remote location, source group and verdict; the per-class counters.

use aya_ebpf::maps::lpm_trie::Key;
use monitor_common::{
    class::{
        DIR_INBOUND, DIR_OUTBOUND, GeoValue, VERDICT_UNKNOWN, VERDICT_VIOLATION, class_index,
        policy_index,
    },
    config::FLAG_TRACK_UNKNOWN,
    flow::FAMILY_V4,
    reason,
};

use crate::{
    flow,
    maps::{CLASS_COUNTERS, CONFIG, GEO4, GEO6, INSIDE4, INSIDE6, POLICY, count},
    parse::{Packet, parse},
};

/// Classifies and counts one frame. Every frame ends in exactly one outcome reason.
#[inline(always)]
pub fn packet(start: usize, end: usize, wire_len: u32) {
    let outcome = match parse(start, end, wire_len) {
        Ok(p) => classify(&p),
        Err(reason) => reason,
    };
    count(outcome);
}

#[inline(always)]
fn classify(p: &Packet) -> u32 {
    if link_scoped(p.family, &p.src) || link_scoped(p.family, &p.dst) {
        return reason::LINK_LOCAL;
    }
    match (
        inside_group(p.family, &p.src),
        inside_group(p.family, &p.dst),
    ) {
        (Some(_), Some(_)) => reason::INTERNAL,
        (None, None) => reason::TRANSIT,
        (Some(group), None) => {
            account(p, group, &p.dst, DIR_OUTBOUND);
            reason::OUTBOUND
        }
        (None, Some(group)) => {
            account(p, group, &p.src, DIR_INBOUND);
            reason::INBOUND
        }
    }
}

#[inline(always)]
fn account(p: &Packet, group: u32, remote: &[u8; 16], dir: u32) {
    let geo = locate(p.family, remote);
    let country = u32::from(geo.country);
    let verdict = POLICY
        .get(policy_index(group, country))
        .map_or(VERDICT_UNKNOWN, |v| u32::from(*v));

    if let Some(c) = CLASS_COUNTERS.get_ptr_mut(class_index(group, country, dir, verdict)) {
        // SAFETY: per-CPU slot; nothing else writes it while this program runs on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += p.l3_bytes;
        }
    }

    // CONFIG is read only for unknown verdicts: the common verdicts cost no extra lookup.
    let track = verdict == VERDICT_VIOLATION
        || (verdict == VERDICT_UNKNOWN
            && CONFIG
                .get(0)
                .is_some_and(|c| c.flags & FLAG_TRACK_UNKNOWN != 0));
    if track {
        flow::track(p, group, &geo, verdict, dir);
    }
}

/// Multicast, broadcast and link-local addresses: traffic that stays on the link.
#[inline(always)]
fn link_scoped(family: u8, a: &[u8; 16]) -> bool {
    if family == FAMILY_V4 {
        a[0] & 0xf0 == 0xe0 // 224.0.0.0/4 multicast
            || (a[0] == 169 && a[1] == 254) // 169.254.0.0/16 link-local
            || (a[0] == 255 && a[1] == 255 && a[2] == 255 && a[3] == 255) // broadcast
    } else {
        a[0] == 0xff // ff00::/8 multicast
            || (a[0] == 0xfe && a[1] & 0xc0 == 0x80) // fe80::/10 link-local
    }
}

#[inline(always)]
fn inside_group(family: u8, addr: &[u8; 16]) -> Option<u32> {
    let v = if family == FAMILY_V4 {
        INSIDE4.get(&Key::new(32, [addr[0], addr[1], addr[2], addr[3]]))
    } else {
        INSIDE6.get(&Key::new(128, *addr))
    };
    v.map(|v| v.group)
}

#[inline(always)]
fn locate(family: u8, addr: &[u8; 16]) -> GeoValue {
    let v = if family == FAMILY_V4 {
        GEO4.get(&Key::new(32, [addr[0], addr[1], addr[2], addr[3]]))
    } else {
        GEO6.get(&Key::new(128, *addr))
    };
    v.copied().unwrap_or_default()
}
