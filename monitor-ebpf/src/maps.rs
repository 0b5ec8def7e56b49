//! Every map of the kernel programs. Sizes marked "set by the daemon" are defaults that the
//! loader overrides from the config (`EbpfLoader::set_max_entries`).

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use monitor_common::{
    bench::{BenchPacket, Hash6Key},
    class::{
        ASN_COUNTER_ENTRIES, CLASS_ENTRIES, COUNTRY_SLOTS, ClassCounter, NAMED_ASN_SLOTS,
        POLICY_ENTRIES,
    },
    config::KernelConfig,
    flow::{FlowKey, FlowState},
    geo::{L1_ENTRIES, V6_ROOT_ENTRIES},
    pin::{LABEL_CHUNK, PinMeta},
    policy::{DROP_ENTRIES, POLICY_ASN_ENTRIES},
    reason::REASON_ENTRIES,
    watch::{LEARNED_ENTRIES, PREFIX_ENTRIES, WATCH_BITS_WORDS, WATCH_COUNTER_ENTRIES},
};

use crate::{dns::Answer, encap::Note, parse::SPAN_MAX};

// --- settings and classification tables, written by the daemon ---------------------------

#[map]
pub static CONFIG: Array<KernelConfig> = Array::with_max_entries(1, 0);

/// The live generation of the location tables (see `monitor_common::geo`).
#[map]
pub static GEO_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// IPv4 address → address word (inside group or location): DIR-24-8, both generations,
/// filled through mmap.
#[map]
pub static GEO4_L1: Array<u64> = Array::with_max_entries(L1_ENTRIES, BPF_F_MMAPABLE);
/// Level-2 blocks (set by the daemon to what the `GeoIP` data needs, with headroom).
#[map]
pub static GEO4_L2: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// IPv6 address → address word: the tiered table's root, one word per /16, both
/// generations, filled through mmap.
#[map]
pub static GEO6_ROOT: Array<u64> = Array::with_max_entries(V6_ROOT_ENTRIES, BPF_F_MMAPABLE);
/// The tiered table's node blocks, both generations (set by the daemon to what the `GeoIP`
/// data needs, with headroom).
#[map]
pub static GEO6_NODES: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// IPv6 fallback, one trie per generation: the prefixes of the few spots the tiered table
/// does not reach (set by the daemon).
#[map]
pub static GEO6_0: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(1, 0);
#[map]
pub static GEO6_1: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(1, 0);

/// ASN slot → AS number, read when a flow is created (set by the daemon).
#[map]
pub static ASNS: Array<u32> = Array::with_max_entries(1, 0);

/// Policy word (`monitor_common::policy::word`) of each (group, country) pair.
#[map]
pub static POLICY: Array<u32> = Array::with_max_entries(POLICY_ENTRIES, 0);

/// Policy word of each (group, named ASN slot) an ASN rule covers; 0 elsewhere.
#[map]
pub static POLICY_ASN: Array<u32> = Array::with_max_entries(POLICY_ASN_ENTRIES, 0);

/// ISO code of each country slot; read by the daemon only, kept beside the counters so
/// the counters can always be named.
#[map]
pub static COUNTRY_CODES: Array<[u8; 2]> = Array::with_max_entries(COUNTRY_SLOTS, 0);

// --- watchlists (see watch.rs), written by the daemon ------------------------------------

/// The prefilter: one bit per hash bucket of a /24 or /48 that holds a watched prefix or a
/// learned address; only packets whose remote address hits a set bit look further.
#[map]
pub static WATCH_BITS: Array<u64> = Array::with_max_entries(WATCH_BITS_WORDS, 0);
/// DNS-learned addresses of watched domains → entry (the daemon expires them).
#[map]
pub static WATCH_LEARNED: HashMap<[u8; 16], u32> = HashMap::with_max_entries(LEARNED_ENTRIES, 0);
/// Watched prefixes → entry; IPv4 as IPv4-mapped IPv6.
#[map]
pub static WATCH_PREFIXES: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(PREFIX_ENTRIES, 0);
/// Named ASN slot → entry of a watched AS number (0: not watched).
#[map]
pub static WATCH_ASNS: Array<u32> = Array::with_max_entries(NAMED_ASN_SLOTS, 0);

/// Scratch: where the DNS answer of the packet being classified is (`dns::note`), read
/// back by the copy. Per CPU, written and read within one program run.
#[map]
pub static DNS_PENDING: PerCpuArray<Answer> = PerCpuArray::with_max_entries(1, 0);

/// Scratch: the encapsulation the parser found (`encap::note`), read back by
/// `encap::descend` in the encapsulation program the parser's program tail-calls. Per CPU,
/// written and read within one run (a tail call stays on its CPU).
#[map]
pub static ENCAP: PerCpuArray<Note> = PerCpuArray::with_max_entries(1, 0);

/// Scratch: the header the programs for a loader without CAP_PERFMON read last, copied
/// out of the frame by a load-bytes helper (`parse::Copies`). Per CPU, written and read
/// within one run.
#[map]
pub static HEAD: PerCpuArray<[u8; SPAN_MAX]> = PerCpuArray::with_max_entries(1, 0);

/// The encapsulation programs, one array per hook type (an array holds programs of one
/// type): `exfilmon_xdp_encap` and `exfilmon_tc_encap` (or their `_copy` twins, with the
/// `_copy` programs), each at index 0 (set by the loader).
#[map]
pub static ENCAP_XDP_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
pub static ENCAP_TC_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// The mirror-port program's: `exfilmon_xdp_encap_mirror` (or its `_copy` twin), which
/// drops the frame after counting it, as the mirror-port program does.
#[map]
pub static ENCAP_XDP_MIRROR_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);

// --- counters, read by the daemon at scrape time -----------------------------------------

#[map]
pub static CLASS_COUNTERS: PerCpuArray<ClassCounter> =
    PerCpuArray::with_max_entries(CLASS_ENTRIES, 0);

/// Packets and bytes per (group, named ASN, direction): only the ASNs the config names.
#[map]
pub static ASN_COUNTERS: PerCpuArray<ClassCounter> =
    PerCpuArray::with_max_entries(ASN_COUNTER_ENTRIES, 0);

/// Packets and bytes per (watch entry, group, direction).
#[map]
pub static WATCH_COUNTERS: PerCpuArray<ClassCounter> =
    PerCpuArray::with_max_entries(WATCH_COUNTER_ENTRIES, 0);

/// Violation packets per (group, mode): dropped by enforcing groups, or dry run.
#[map]
pub static POLICY_DROPS: PerCpuArray<ClassCounter> = PerCpuArray::with_max_entries(DROP_ENTRIES, 0);

#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_ENTRIES, 0);

// --- flow tracking -------------------------------------------------------------------------

/// Violation flows (set by the daemon: `[flows] max_entries`).
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(65536, 0);

/// Flow events to the daemon (set by the daemon: `[flows] ring_bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

// --- pinning: read and written by the daemon only ----------------------------------------

/// How the pinned maps are laid out (`monitor_common::pin`).
#[map]
pub static PIN_META: Array<PinMeta> = Array::with_max_entries(1, 0);

/// The slot names that index the pinned counters (set by the daemon when it pins).
#[map]
pub static PIN_LABELS: Array<[u8; LABEL_CHUNK]> = Array::with_max_entries(1, 0);

// --- the benchmark's maps: one entry each unless the benchmark loads the object ----------

/// IPv4 location words in a kernel LPM trie, for the LPM build of the benchmark.
#[map]
pub static BENCH_TRIE4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(1, 0);

/// IPv6 location words in one kernel LPM trie (all prefixes), for the LPM build.
#[map]
pub static BENCH_TRIE6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(1, 0);

/// IPv6 location words in tiers of a hash map, for the tiered-hash build.
#[map]
pub static BENCH_HASH6: HashMap<Hash6Key, u32> = HashMap::with_max_entries(1, 0);

/// The tiered hash's fallback: IPv6 prefixes longer than /64.
#[map]
pub static BENCH_HASH6_TRIE: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(1, 0);

/// The packets the bench programs write into their frames, in order.
#[map]
pub static BENCH_WORKLOAD: Array<BenchPacket> = Array::with_max_entries(1, 0);

#[map]
pub static BENCH_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Adds one to a reason counter.
#[inline(always)]
pub fn count(reason: u32) {
    if let Some(p) = REASONS.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe { *p += 1 };
    }
}
