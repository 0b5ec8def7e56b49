//! Watchlists in the kernel: which watch entry, if any, a packet's remote address belongs to.
//!
//! Three kinds of entries exist: prefixes, AS numbers and domains (whose addresses the
//! daemon learns from DNS answers and writes into `WATCH_LEARNED` with an expiry it enforces
//! itself). The constraint is cost: nearly every packet hits no watchlist and must pay
//! almost nothing for the question.
//!
//! - **Prefixes and learned addresses: a bitmap prefilter, then exact maps.** The daemon sets
//!   one bit of `WATCH_BITS` (2^20 bits, 128 KiB, so it stays in cache) per hash of every /24
//!   (IPv4) or /48 (IPv6) that a watched prefix covers or a learned address lies in. A packet
//!   costs one multiply and one array read (inlined by the JIT, no helper call); only when its
//!   remote /24 or /48 has a bit set are the hash map of learned addresses and the small LPM
//!   trie of watched prefixes consulted (counted as `watch_probe`). With the limits the
//!   config enforces (255 entries; IPv4 prefixes of /8 or longer, IPv6 of /32 or longer,
//!   16,384 learned addresses) the false-positive rate for unrelated traffic is the fraction
//!   of bits set, well under 1% for realistic watchlists.
//! - **AS numbers: the location word already carries them.** Watched ASNs are given named
//!   ASN slots (1..256) by the daemon, so the test `asn_slot < NAMED_ASN_SLOTS` that the
//!   per-ASN counters make anyway selects the few packets that need the `WATCH_ASNS` read.
//!
//! The alternative weighed was a "watched" bit in the location word, with prefixes painted
//! into the DIR-24-8 and IPv6 tiered tables. It would make the check free, but learned
//! addresses change with every DNS answer and TTL, and repainting a generation of the
//! tables (or splitting a /24 into a level-2 block) per answer is far dearer than a bit in a
//! separate bitmap; prefixes would also have to be repainted on every GeoIP reload. One
//! mechanism for both static prefixes and learned addresses keeps the tables untouched.

use aya_ebpf::maps::lpm_trie::Key;
use monitor_common::{
    flow::FAMILY_V4,
    watch::{bucket_v4, bucket_v6},
};

use crate::{
    maps::{WATCH_BITS, WATCH_LEARNED, WATCH_PREFIXES, count},
    parse::{addr_bytes, opaque},
};

/// The watch entry of a remote address (0 for none): a learned address or a watched prefix
/// if the prefilter lets it through, else `by_asn`, the entry of its watched ASN (0 for
/// none; the caller reads it with the per-ASN counters). A subprogram: inlined at both call
/// sites (outbound, inbound), its branches would multiply the paths the verifier walks
/// through the classifier.
#[inline(never)]
pub fn entry(family: u8, remote: &[u32; 4], by_asn: u32) -> u32 {
    let bucket = if family == FAMILY_V4 {
        bucket_v4(u32::from_be(remote[0]))
    } else {
        bucket_v6((u64::from(u32::from_be(remote[0])) << 32) | u64::from(u32::from_be(remote[1])))
    };
    let hit = WATCH_BITS
        .get(bucket >> 6)
        .is_some_and(|w| (*w >> (bucket & 63)) & 1 != 0);
    if hit {
        count(monitor_common::reason::WATCH_PROBE);
        let key = if family == FAMILY_V4 {
            // `mapped_v4` as two words: its ten zero bytes would be a `memset` call (see
            // `opaque`).
            let words = [
                opaque(0),
                u64::from(u32::from_ne_bytes([0, 0, 0xff, 0xff])) | u64::from(remote[0]) << 32,
            ];
            // SAFETY: same size, every bit pattern valid; the target is little-endian, so
            // the second word holds bytes 8..16 in memory order.
            unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) }
        } else {
            addr_bytes(remote)
        };
        // SAFETY: a hash map value read by value; the daemon may delete it meanwhile, which
        // only makes the read stale.
        if let Some(e) = unsafe { WATCH_LEARNED.get(&key) } {
            return *e;
        }
        if let Some(e) = WATCH_PREFIXES.get(&Key::new(128, key)) {
            return *e;
        }
    }
    by_asn
}
