//! Traffic classes: the index layout of the per-CPU class counters and the policy table.
//!
//! A class is (group, country slot, direction, verdict). The counters are a per-CPU array
//! indexed by [`class_index`], so counting a packet costs one array lookup and two adds, and
//! the map layout is the metric layout: every non-zero entry is one Prometheus series.

/// Group slots: slot 0 is "inside a home network, in no configured group"; configured
/// groups take slots 1..`MAX_GROUPS`.
pub const MAX_GROUPS: u32 = 32;
pub const GROUP_BITS: u32 = 5;
pub const GROUP_UNGROUPED: u32 = 0;

/// Country slots: slot 0 is unknown (`??`); the daemon gives every ISO code it meets in the
/// `GeoIP` data or the config a slot of its own and records it in `COUNTRY_CODES`.
pub const COUNTRY_SLOTS: u32 = 512;
pub const COUNTRY_BITS: u32 = 9;
pub const COUNTRY_UNKNOWN: u32 = 0;

/// Directions of classified packets (internal and transit packets are only counted).
pub const DIR_OUTBOUND: u32 = 0;
pub const DIR_INBOUND: u32 = 1;

/// Verdicts. Zero is `unknown`, so a policy entry the daemon never wrote can only ever
/// under-claim (never call traffic domestic or allowed by accident).
pub const VERDICT_UNKNOWN: u32 = 0;
pub const VERDICT_DOMESTIC: u32 = 1;
pub const VERDICT_ALLOWED: u32 = 2;
pub const VERDICT_VIOLATION: u32 = 3;

/// Entries of the class counter array: group × country × direction × verdict.
pub const CLASS_ENTRIES: u32 = MAX_GROUPS * COUNTRY_SLOTS * 2 * 4;
/// Entries of the policy array: group × country.
pub const POLICY_ENTRIES: u32 = MAX_GROUPS * COUNTRY_SLOTS;

const _: () = assert!(1 << GROUP_BITS == MAX_GROUPS);
const _: () = assert!(1 << COUNTRY_BITS == COUNTRY_SLOTS);

/// Index of a class in the class counter array. Out-of-range inputs are masked, so the
/// result is always a valid index (this also keeps the verifier's range proof).
#[inline(always)]
#[must_use]
pub const fn class_index(group: u32, country: u32, dir: u32, verdict: u32) -> u32 {
    ((group & (MAX_GROUPS - 1)) << (COUNTRY_BITS + 3))
        | ((country & (COUNTRY_SLOTS - 1)) << 3)
        | ((dir & 1) << 2)
        | (verdict & 3)
}

/// The inverse of [`class_index`]: (group, country, direction, verdict).
#[must_use]
pub const fn class_parts(index: u32) -> (u32, u32, u32, u32) {
    (
        (index >> (COUNTRY_BITS + 3)) & (MAX_GROUPS - 1),
        (index >> 3) & (COUNTRY_SLOTS - 1),
        (index >> 2) & 1,
        index & 3,
    )
}

/// Index of a (group, country) pair in the policy array.
#[inline(always)]
#[must_use]
pub const fn policy_index(group: u32, country: u32) -> u32 {
    ((group & (MAX_GROUPS - 1)) << COUNTRY_BITS) | (country & (COUNTRY_SLOTS - 1))
}

/// ASN slots `1..NAMED_ASN_SLOTS` are reserved for the AS numbers the config names
/// (`[metrics] asns`); only they get per-ASN counters, so that label stays bounded.
/// Slot 0 is the unknown ASN; ASNs met only in the GeoIP data take slots from here up.
pub const NAMED_ASN_SLOTS: u32 = 256;
pub const NAMED_ASN_BITS: u32 = 8;
/// Entries of the per-ASN counter array: group × named ASN slot × direction.
pub const ASN_COUNTER_ENTRIES: u32 = MAX_GROUPS * NAMED_ASN_SLOTS * 2;

const _: () = assert!(1 << NAMED_ASN_BITS == NAMED_ASN_SLOTS);

/// Index of (group, named ASN slot, direction) in the per-ASN counter array, masked into
/// range like [`class_index`].
#[inline(always)]
#[must_use]
pub const fn asn_counter_index(group: u32, asn_slot: u32, dir: u32) -> u32 {
    ((group & (MAX_GROUPS - 1)) << (NAMED_ASN_BITS + 1))
        | ((asn_slot & (NAMED_ASN_SLOTS - 1)) << 1)
        | (dir & 1)
}

/// The inverse of [`asn_counter_index`]: (group, named ASN slot, direction).
#[must_use]
pub const fn asn_counter_parts(index: u32) -> (u32, u32, u32) {
    (
        (index >> (NAMED_ASN_BITS + 1)) & (MAX_GROUPS - 1),
        (index >> 1) & (NAMED_ASN_SLOTS - 1),
        index & 1,
    )
}

/// Packets and layer-3 bytes of one class on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<ClassCounter>() == 16);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding.
    unsafe impl aya::Pod for super::ClassCounter {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_index_round_trips_and_stays_in_range() {
        for (g, c, d, v) in [(0, 0, 0, 0), (31, 511, 1, 3), (5, 42, 1, 2), (1, 300, 0, 1)] {
            let i = class_index(g, c, d, v);
            assert!(i < CLASS_ENTRIES);
            assert_eq!(class_parts(i), (g, c, d, v));
        }
        assert!(class_index(u32::MAX, u32::MAX, u32::MAX, u32::MAX) < CLASS_ENTRIES);
        assert!(policy_index(u32::MAX, u32::MAX) < POLICY_ENTRIES);
    }

    #[test]
    fn asn_counter_index_round_trips_and_stays_in_range() {
        for (g, a, d) in [(0, 1, 0), (31, 255, 1), (7, 42, 1)] {
            let i = asn_counter_index(g, a, d);
            assert!(i < ASN_COUNTER_ENTRIES);
            assert_eq!(asn_counter_parts(i), (g, a, d));
        }
        assert!(asn_counter_index(u32::MAX, u32::MAX, u32::MAX) < ASN_COUNTER_ENTRIES);
    }
}
