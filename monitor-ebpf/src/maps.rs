//! Every map of the kernel programs. Sizes marked "set by the daemon" are defaults that the
//! loader overrides from the config (`EbpfLoader::set_max_entries`).

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    class::{CLASS_ENTRIES, COUNTRY_SLOTS, ClassCounter, GeoValue, InsideValue, POLICY_ENTRIES},
    config::KernelConfig,
    flow::{FlowKey, FlowState},
    reason::REASON_ENTRIES,
};

// --- settings and classification tables, written by the daemon ---------------------------

#[map]
pub static CONFIG: Array<KernelConfig> = Array::with_max_entries(1, 0);

/// Home networks and group networks; the value is the group slot.
#[map]
pub static INSIDE4: LpmTrie<[u8; 4], InsideValue> = LpmTrie::with_max_entries(4096, 0);
#[map]
pub static INSIDE6: LpmTrie<[u8; 16], InsideValue> = LpmTrie::with_max_entries(4096, 0);

/// Remote address → country slot and ASN (set by the daemon to the GeoIP prefix count).
#[map]
pub static GEO4: LpmTrie<[u8; 4], GeoValue> = LpmTrie::with_max_entries(1 << 20, 0);
#[map]
pub static GEO6: LpmTrie<[u8; 16], GeoValue> = LpmTrie::with_max_entries(1 << 20, 0);

/// Verdict (`VERDICT_*` as u8) of each (group, country) pair.
#[map]
pub static POLICY: Array<u8> = Array::with_max_entries(POLICY_ENTRIES, 0);

/// ISO code of each country slot; read by the daemon only, kept beside the counters so
/// the counters can always be named.
#[map]
pub static COUNTRY_CODES: Array<[u8; 2]> = Array::with_max_entries(COUNTRY_SLOTS, 0);

// --- counters, read by the daemon at scrape time -----------------------------------------

#[map]
pub static CLASS_COUNTERS: PerCpuArray<ClassCounter> =
    PerCpuArray::with_max_entries(CLASS_ENTRIES, 0);

#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_ENTRIES, 0);

// --- flow tracking -------------------------------------------------------------------------

/// Violation flows (set by the daemon: `[flows] max_entries`).
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(65536, 0);

/// Flow events to the daemon (set by the daemon: `[flows] ring_bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Adds one to a reason counter.
#[inline(always)]
pub fn count(reason: u32) {
    if let Some(p) = REASONS.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe { *p += 1 };
    }
}
