//! The policy decision of a classified packet, and opt-in enforcement.
//!
//! The country word comes from `POLICY`; packets to a named ASN (slots
//! `1..NAMED_ASN_SLOTS`, already tested for the per-ASN counters) also read `POLICY_ASN`,
//! and the larger word wins (ranks are in the top bits, see `monitor_common::policy`).

use monitor_common::{
    class::{ClassCounter, policy_index},
    policy::{MODE_DROPPED, MODE_DRY_RUN, asn_index, drop_index, drops},
    reason,
};

use crate::maps::{POLICY, POLICY_ASN, POLICY_DROPS, count};

/// The policy word of the group's country rules; 0 (unknown, no rule) if unwritten.
#[inline(always)]
pub fn country_word(group: u32, country: u32) -> u32 {
    POLICY.get(policy_index(group, country)).map_or(0, |w| *w)
}

/// `word`, or the group's rule for the named ASN slot where that ranks higher.
#[inline(always)]
pub fn with_asn(word: u32, group: u32, named_asn: u32) -> u32 {
    let asn_word = POLICY_ASN
        .get(asn_index(group, named_asn))
        .map_or(0, |w| *w);
    if asn_word > word { asn_word } else { word }
}

/// Counts a violation packet as dropped or dry run; true when it is to be dropped. Only a
/// program in the traffic's path (`inline`) drops; on a mirror port it is a dry run.
#[inline(always)]
pub fn enforce(word: u32, group: u32, bytes: u64, inline: bool) -> bool {
    let drop = inline && drops(word);
    let (mode, id) = if drop {
        (MODE_DROPPED, reason::POLICY_DROPPED)
    } else {
        (MODE_DRY_RUN, reason::POLICY_DRY_RUN)
    };
    count(id);
    if let Some(c) = POLICY_DROPS.get_ptr_mut(drop_index(group, mode)) {
        // SAFETY: per-CPU slot; nothing else writes it while this program runs on this CPU.
        unsafe {
            let c: *mut ClassCounter = c;
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    drop
}
