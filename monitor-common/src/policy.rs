//! Policy words: what the `POLICY` and `POLICY_ASN` arrays hold, and the per-group drop
//! counters of enforcement.
//!
//! A policy word packs a verdict, the rule that decided it and that rule's rank:
//!
//! ```text
//!  31..28 rank   27..24 0   23..8 rule id   7..3 0   2 drop   1..0 verdict
//! ```
//!
//! `POLICY` gives each (group, country slot) the word of its country rules;
//! `POLICY_ASN` gives each (group, named ASN slot) the word of its ASN rule, or 0. The
//! ranks of ASN rules ([`RANK_ALLOW_ASN`], [`RANK_DENY_ASN`]) never equal those of country
//! rules, so the kernel picks the winner by comparing the two words whole: one compare.

use crate::class::{MAX_GROUPS, NAMED_ASN_BITS, NAMED_ASN_SLOTS, VERDICT_VIOLATION};

/// Ranks, lowest first: the precedence of the rules.
/// No rule matched: `violation` for a known country, `unknown` otherwise.
pub const RANK_DEFAULT: u32 = 0;
/// The country is in the group's `allow` list.
pub const RANK_ALLOW: u32 = 1;
/// The ASN is in the group's `allow_asns` list.
pub const RANK_ALLOW_ASN: u32 = 2;
/// The country is in `[home] countries`.
pub const RANK_DOMESTIC: u32 = 3;
/// The country is in the group's `deny` list.
pub const RANK_DENY: u32 = 4;
/// The ASN is in the group's `deny_asns` list.
pub const RANK_DENY_ASN: u32 = 5;

pub const RANK_SHIFT: u32 = 28;
pub const RULE_SHIFT: u32 = 8;
/// Set by the daemon on the violation words of enforcing groups only.
pub const DROP: u32 = 1 << 2;
pub const VERDICT_MASK: u32 = 3;

/// A policy word.
#[inline(always)]
#[must_use]
pub const fn word(verdict: u32, rank: u32, rule: u16, drop: bool) -> u32 {
    ((rank & 0xf) << RANK_SHIFT)
        | ((rule as u32) << RULE_SHIFT)
        | if drop { DROP } else { 0 }
        | (verdict & VERDICT_MASK)
}

#[inline(always)]
#[must_use]
pub const fn verdict(word: u32) -> u32 {
    word & VERDICT_MASK
}

#[inline(always)]
#[must_use]
pub const fn rule(word: u32) -> u16 {
    (word >> RULE_SHIFT) as u16
}

#[inline(always)]
#[must_use]
pub const fn rank(word: u32) -> u32 {
    word >> RANK_SHIFT
}

/// Whether the packet is to be dropped: a violation word of an enforcing group. The
/// verdict is checked too, so no other word can ever drop.
#[inline(always)]
#[must_use]
pub const fn drops(word: u32) -> bool {
    word & DROP != 0 && verdict(word) == VERDICT_VIOLATION
}

/// Entries of `POLICY_ASN`: group × named ASN slot.
pub const POLICY_ASN_ENTRIES: u32 = MAX_GROUPS * NAMED_ASN_SLOTS;

/// Index of (group, named ASN slot) in `POLICY_ASN`, masked into range.
#[inline(always)]
#[must_use]
pub const fn asn_index(group: u32, asn_slot: u32) -> u32 {
    ((group & (MAX_GROUPS - 1)) << NAMED_ASN_BITS) | (asn_slot & (NAMED_ASN_SLOTS - 1))
}

/// Modes of `POLICY_DROPS`: packets an enforcing group dropped, and violation packets of
/// the other groups (what enforcing would have dropped).
pub const MODE_DROPPED: u32 = 0;
pub const MODE_DRY_RUN: u32 = 1;
/// Entries of `POLICY_DROPS`: group × mode.
pub const DROP_ENTRIES: u32 = MAX_GROUPS * 2;

/// Index of (group, mode) in `POLICY_DROPS`, masked into range.
#[inline(always)]
#[must_use]
pub const fn drop_index(group: u32, mode: u32) -> u32 {
    ((group & (MAX_GROUPS - 1)) << 1) | (mode & 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::{VERDICT_ALLOWED, VERDICT_DOMESTIC, VERDICT_UNKNOWN};

    #[test]
    fn words_round_trip_and_rank_decides_the_compare() {
        let w = word(VERDICT_VIOLATION, RANK_DENY, 0xbeef, true);
        assert_eq!(
            (verdict(w), rank(w), rule(w), drops(w)),
            (VERDICT_VIOLATION, RANK_DENY, 0xbeef, true)
        );
        // Whatever the rule ids, a higher rank is a larger word.
        let low = word(VERDICT_DOMESTIC, RANK_DOMESTIC, u16::MAX, false);
        let high = word(VERDICT_VIOLATION, RANK_DENY_ASN, 0, false);
        assert!(high > low);
        let allow_asn = word(VERDICT_ALLOWED, RANK_ALLOW_ASN, 0, false);
        assert!(allow_asn > word(VERDICT_ALLOWED, RANK_ALLOW, u16::MAX, false));
        assert!(allow_asn < word(VERDICT_DOMESTIC, RANK_DOMESTIC, 0, false));
        assert!(allow_asn > word(VERDICT_UNKNOWN, RANK_DEFAULT, u16::MAX, false));
    }

    #[test]
    fn only_violation_words_drop() {
        for v in [VERDICT_UNKNOWN, VERDICT_DOMESTIC, VERDICT_ALLOWED] {
            assert!(!drops(word(v, RANK_DENY, 1, true)));
        }
        assert!(!drops(word(VERDICT_VIOLATION, RANK_DENY, 1, false)));
    }

    #[test]
    fn indexes_stay_in_range() {
        assert!(asn_index(u32::MAX, u32::MAX) < POLICY_ASN_ENTRIES);
        assert!(drop_index(u32::MAX, u32::MAX) < DROP_ENTRIES);
        assert_eq!(drop_index(3, MODE_DRY_RUN), 7);
    }
}
