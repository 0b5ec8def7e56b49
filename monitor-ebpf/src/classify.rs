//! Direction, remote location, source group and verdict; the per-class counters.

use aya_ebpf::maps::{PerCpuArray, lpm_trie::Key};
use monitor_common::{
    bench::{HASH6_TIERS, Hash6Key},
    class::{
        ClassCounter, DIR_INBOUND, DIR_OUTBOUND, NAMED_ASN_SLOTS, VERDICT_UNKNOWN,
        VERDICT_VIOLATION, asn_counter_index, class_index,
    },
    config::FLAG_TRACK_UNKNOWN,
    flow::FAMILY_V4,
    geo::{
        GEO_L2, INSIDE, V6_MAX_DEPTH, V6_NODE, V6_ROOT_BITS, V6_TRIE, asn_slot, country_slot,
        group_slot, l1_index, l2_index, v6_block, v6_chunk, v6_root_index, v6_stride,
    },
    policy::{rule, verdict as word_verdict},
    reason,
    watch::watch_counter_index,
};

use crate::{
    encap, flow,
    maps::{
        ASN_COUNTERS, BENCH_HASH6, BENCH_HASH6_TRIE, BENCH_TRIE4, BENCH_TRIE6, CLASS_COUNTERS,
        CONFIG, GEO_GENERATION, GEO4_L1, GEO4_L2, GEO6_0, GEO6_1, GEO6_NODES, GEO6_ROOT,
        WATCH_ASNS, WATCH_COUNTERS, count,
    },
    parse::{DESCEND, Frame, Packet, addr_bytes, parse},
    policy, watch,
};

/// Where locations come from: the product's tables (IPv4 DIR-24-8, IPv6 tiered), or
/// (benchmark only) one kernel LPM trie per family, or the product's IPv4 table with the
/// IPv6 tiered hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Tables,
    Trie,
    Hash6,
}

/// Whether flows that matter enter the flow table: always, but in the benchmark program
/// that measures the classifier without it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Flows,
    Nothing,
}

/// Where the program sees the traffic: in its path, where an enforcing group's policy
/// drops a violation packet, or on a mirror port, whose copies nothing can stop. There a
/// violation counts as a dry run (`MODE_DRY_RUN`: what enforcing would drop inline).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Inline,
    Mirror,
}

/// What the program does with a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pass,
    /// A violation packet of a group that enforces its policy.
    Drop,
    /// The frame carries an encapsulation, noted (`encap::note`): the caller hands it to
    /// the encapsulation program, which counts it.
    Descend,
}

/// Classifies and counts one frame. Every frame ends in exactly one outcome reason, counted
/// here or, for `Action::Descend`, by the encapsulation program (`encapsulated`). Drops only
/// a violation packet of a group that enforces its policy; every other frame, malformed
/// ones included, is to pass. The parser notes a DNS answer for the caller to copy
/// (`dns::pending`).
#[inline(always)]
pub fn packet(
    f: impl Frame,
    wire_len: impl Fn() -> u32 + Copy,
    how: Lookup,
    track: Track,
    path: Path,
) -> Action {
    let (outcome, drop) = match parse(f, wire_len) {
        Ok(p) => classify(&p, how, track, path),
        Err(DESCEND) => return Action::Descend,
        Err(reason) => (reason, false),
    };
    count(outcome);
    if drop { Action::Drop } else { Action::Pass }
}

/// `packet` for a frame with an encapsulation (the encapsulation programs): walked
/// (`encap::descend`), classified and counted. True when the policy drops it.
#[inline(always)]
pub fn encapsulated(f: impl Frame, wire_len: u32, how: Lookup, track: Track, path: Path) -> bool {
    let (outcome, drop) = match encap::descend(f, wire_len, how) {
        Ok(p) => classify(&p, how, track, path),
        Err(reason) => (reason, false),
    };
    count(outcome);
    drop
}

#[inline(always)]
fn classify(p: &Packet, how: Lookup, track: Track, path: Path) -> (u32, bool) {
    if link_scoped(p.family, &p.src) || link_scoped(p.family, &p.dst) {
        return (reason::LINK_LOCAL, false);
    }
    let (src, dst) = words(p.family, &p.src, &p.dst, how);
    match (src & INSIDE != 0, dst & INSIDE != 0) {
        (true, true) => (reason::INTERNAL, false),
        (false, false) => (reason::TRANSIT, false),
        (true, false) => (
            reason::OUTBOUND,
            account(p, group_slot(src), dst, &p.dst, DIR_OUTBOUND, track, path),
        ),
        (false, true) => (
            reason::INBOUND,
            account(p, group_slot(dst), src, &p.src, DIR_INBOUND, track, path),
        ),
    }
}

/// Whether a tunnel's inner packet decides how the tunnel's frame is classified: one of its
/// addresses is inside, and neither is link-scoped. Otherwise the tunnel's own packet does
/// (see `encap`).
#[inline(always)]
pub fn inner_decides(p: &Packet, how: Lookup) -> bool {
    if link_scoped(p.family, &p.src) || link_scoped(p.family, &p.dst) {
        return false;
    }
    let (src, dst) = words(p.family, &p.src, &p.dst, how);
    (src | dst) & INSIDE != 0
}

/// The address words of a source and a destination, from the live generation. One table
/// says whether an address is inside (and its group) or where it is.
#[inline(always)]
pub fn words(family: u8, src: &[u32; 4], dst: &[u32; 4], how: Lookup) -> (u32, u32) {
    let generation = GEO_GENERATION.get(0).map_or(0, |g| *g);
    (
        lookup(family, src, generation, how),
        lookup(family, dst, generation, how),
    )
}

/// Counts a classified packet; true when the policy drops it.
#[inline(always)]
fn account(
    p: &Packet,
    group: u32,
    location: u32,
    remote: &[u32; 4],
    dir: u32,
    track: Track,
    path: Path,
) -> bool {
    let country = country_slot(location);
    let mut word = policy::country_word(group, country);
    // Named ASNs have the low slots: one compare for every other packet.
    let asn = asn_slot(location);
    // The watch entry of a watched ASN, read only for named ASNs (watched ones are named).
    let mut watched_asn = 0;
    if asn != 0 && asn < NAMED_ASN_SLOTS {
        add(
            &ASN_COUNTERS,
            asn_counter_index(group, asn, dir),
            p.l3_bytes,
        );
        word = policy::with_asn(word, group, asn);
        watched_asn = WATCH_ASNS.get(asn).map_or(0, |e| *e);
    }
    let verdict = word_verdict(word);
    add(
        &CLASS_COUNTERS,
        class_index(group, country, dir, verdict),
        p.l3_bytes,
    );

    let entry = watch::entry(p.family, remote, watched_asn);
    if entry != 0 {
        add(
            &WATCH_COUNTERS,
            watch_counter_index(entry, group, dir),
            p.l3_bytes,
        );
        count(reason::WATCH_HIT);
    }

    // CONFIG is read only for unknown verdicts: the common verdicts cost no extra lookup.
    let tracked = entry != 0
        || verdict == VERDICT_VIOLATION
        || (verdict == VERDICT_UNKNOWN
            && CONFIG
                .get(0)
                .is_some_and(|c| c.flags & FLAG_TRACK_UNKNOWN != 0));
    if tracked && track == Track::Flows {
        flow::track(p, group, location, verdict, rule(word), dir, entry);
    }
    verdict == VERDICT_VIOLATION && policy::enforce(word, group, p.l3_bytes, path == Path::Inline)
}

/// Adds one packet of `bytes` to entry `index` of a per-CPU counter array.
#[inline(always)]
fn add(counters: &PerCpuArray<ClassCounter>, index: u32, bytes: u64) {
    if let Some(c) = counters.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; nothing else writes it while this program runs on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Multicast, broadcast and link-local addresses: traffic that stays on the link.
#[inline(always)]
fn link_scoped(family: u8, a: &[u32; 4]) -> bool {
    if family == FAMILY_V4 {
        let a = u32::from_be(a[0]);
        a >> 28 == 0xe // 224.0.0.0/4 multicast
            || a >> 16 == 0xa9fe // 169.254.0.0/16 link-local
            || a == u32::MAX // broadcast
    } else {
        let top = u32::from_be(a[0]);
        top >> 24 == 0xff // ff00::/8 multicast
            || top >> 22 == 0xfe80 >> 6 // fe80::/10 link-local
    }
}

/// The address word of `addr` (0 when nothing is known).
#[inline(always)]
fn lookup(family: u8, addr: &[u32; 4], generation: u32, how: Lookup) -> u32 {
    if family == FAMILY_V4 {
        if how == Lookup::Trie {
            return BENCH_TRIE4
                .get(&Key::new(32, addr[0].to_ne_bytes()))
                .map_or(0, |w| *w);
        }
        locate4(generation, u32::from_be(addr[0]))
    } else {
        match how {
            Lookup::Trie => BENCH_TRIE6
                .get(&Key::new(128, addr_bytes(addr)))
                .map_or(0, |w| *w),
            Lookup::Hash6 => hash6(addr),
            Lookup::Tables => locate6(generation, addr),
        }
    }
}

/// Benchmark only: the IPv6 tiered hash, one hash lookup per tier, longest first, until
/// one holds the address's prefix; the fallback trie where the /64 says so.
#[inline(always)]
fn hash6(addr: &[u32; 4]) -> u32 {
    let hi = (u64::from(u32::from_be(addr[0])) << 32) | u64::from(u32::from_be(addr[1]));
    for len in HASH6_TIERS {
        // SAFETY: the benchmark fills the map before its runs and never writes it during
        // one; the word is copied out at once.
        if let Some(word) = unsafe { BENCH_HASH6.get(&Hash6Key::new(hi, len)) } {
            if *word == V6_TRIE {
                return BENCH_HASH6_TRIE
                    .get(&Key::new(128, addr_bytes(addr)))
                    .map_or(0, |w| *w);
            }
            return *word;
        }
    }
    0
}

/// The IPv6 tiered table: the root word of the /16, then at most `V6_MAX_DEPTH` node
/// words, one array read each; the generation's trie where the data nests deeper.
#[inline(always)]
fn locate6(generation: u32, addr: &[u32; 4]) -> u32 {
    let hi = (u64::from(u32::from_be(addr[0])) << 32) | u64::from(u32::from_be(addr[1]));
    let lo = (u64::from(u32::from_be(addr[2])) << 32) | u64::from(u32::from_be(addr[3]));
    let mut word = word_at(&GEO6_ROOT, v6_root_index(generation, hi));
    let mut len = V6_ROOT_BITS;
    for _ in 0..V6_MAX_DEPTH {
        if word & V6_NODE == 0 || word == V6_TRIE {
            break;
        }
        let stride = v6_stride(word);
        if len + stride > 128 {
            // Only a corrupt table gets here (the builder never writes such a pointer).
            return 0;
        }
        word = word_at(&GEO6_NODES, v6_block(word) + v6_chunk(hi, lo, len, stride));
        len += stride;
    }
    if word == V6_TRIE {
        let key = Key::new(128, addr_bytes(addr));
        let hit = if generation & 1 == 0 {
            GEO6_0.get(&key)
        } else {
            GEO6_1.get(&key)
        };
        return hit.map_or(0, |w| *w);
    }
    // A pointer left after the last level would be a builder bug: unknown, never inside.
    if word & V6_NODE == 0 { word } else { 0 }
}

/// DIR-24-8: the level-1 word of the /24, or the level-2 word it points to.
#[inline(always)]
fn locate4(generation: u32, addr: u32) -> u32 {
    let word = word_at(&GEO4_L1, l1_index(generation, addr));
    if word & GEO_L2 == 0 {
        word
    } else {
        word_at(&GEO4_L2, l2_index(word & !GEO_L2, addr))
    }
}

/// Word `index` of an array of `u64` entries that hold two words each (little-endian).
#[inline(always)]
fn word_at(array: &aya_ebpf::maps::Array<u64>, index: u32) -> u32 {
    array
        .get(index >> 1)
        .map_or(0, |pair| (*pair >> ((index & 1) * 32)) as u32)
}
