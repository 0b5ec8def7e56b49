//! Types and constants shared by exfilmon's kernel programs and its daemon.
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]`, built from fixed-width
//! integers and byte arrays, with explicit padding and a size assertion next to it. Enums
//! travel as `u8`/`u32` codes; userspace converts them with `TryFrom`.
#![no_std]

pub mod bench;
pub mod class;
pub mod config;
pub mod flow;
pub mod geo;
pub mod pin;
pub mod policy;
pub mod reason;
pub mod watch;

/// Map names, shared so that the loader, the collector and the kernel agree.
pub mod maps {
    /// `Array<KernelConfig>`, one entry.
    pub const CONFIG: &str = "CONFIG";
    /// `Array<u32>`, one entry: the live generation of the location tables (0 or 1).
    pub const GEO_GENERATION: &str = "GEO_GENERATION";
    /// `Array<u64>`, mmap-able: DIR-24-8 level 1, two location words per entry, both
    /// generations (see `geo`).
    pub const GEO4_L1: &str = "GEO4_L1";
    /// `Array<u64>`, mmap-able: DIR-24-8 level-2 blocks of both generations.
    pub const GEO4_L2: &str = "GEO4_L2";
    /// `Array<u64>`, mmap-able: the IPv6 tiered table's root, one word per /16, two words
    /// per entry, both generations (see `geo`).
    pub const GEO6_ROOT: &str = "GEO6_ROOT";
    /// `Array<u64>`, mmap-able: the IPv6 tiered table's node blocks, both generations.
    pub const GEO6_NODES: &str = "GEO6_NODES";
    /// `LpmTrie<[u8; 16], u32>`: the IPv6 fallback of generation 0, for the spots where the
    /// data nests deeper than the tiered table goes.
    pub const GEO6_0: &str = "GEO6_0";
    /// The same, generation 1.
    pub const GEO6_1: &str = "GEO6_1";
    /// `Array<u32>` indexed by ASN slot: the AS number that owns the slot.
    pub const ASNS: &str = "ASNS";
    /// `LpmTrie<[u8; 4], u32>`: IPv4 location words as a kernel LPM trie. Only the
    /// benchmark's LPM build fills it, to measure DIR-24-8 against the trie.
    pub const BENCH_TRIE4: &str = "BENCH_TRIE4";
    /// `LpmTrie<[u8; 16], u32>`: every IPv6 prefix in one kernel LPM trie, for the
    /// benchmark's LPM build.
    pub const BENCH_TRIE6: &str = "BENCH_TRIE6";
    /// `HashMap<bench::Hash6Key, u32>`: the tiered-hash IPv6 build of the benchmark
    /// (`bench::HASH6_TIERS`).
    pub const BENCH_HASH6: &str = "BENCH_HASH6";
    /// `LpmTrie<[u8; 16], u32>`: the tiered hash's fallback, the prefixes longer than /64.
    pub const BENCH_HASH6_TRIE: &str = "BENCH_HASH6_TRIE";
    /// `Array<bench::BenchPacket>`: the benchmark's workload, one entry per packet.
    pub const BENCH_WORKLOAD: &str = "BENCH_WORKLOAD";
    /// `PerCpuArray<u32>`, one entry: the benchmark's position in its workload.
    pub const BENCH_CURSOR: &str = "BENCH_CURSOR";
    /// `Array<u32>` indexed by `class::policy_index`: the policy word (`policy::word`) of
    /// each (group, country).
    pub const POLICY: &str = "POLICY";
    /// `Array<u32>` indexed by `policy::asn_index`: the policy word of each (group, named
    /// ASN slot) that an ASN rule covers, else 0.
    pub const POLICY_ASN: &str = "POLICY_ASN";
    /// `PerCpuArray<ClassCounter>` indexed by `policy::drop_index`: violation packets
    /// dropped by enforcing groups, and those the other groups let through (dry run).
    pub const POLICY_DROPS: &str = "POLICY_DROPS";
    /// `Array<[u8; 2]>` indexed by country slot: the ISO code that owns the slot.
    pub const COUNTRY_CODES: &str = "COUNTRY_CODES";
    /// `PerCpuArray<ClassCounter>` indexed by `class::class_index`.
    pub const CLASS_COUNTERS: &str = "CLASS_COUNTERS";
    /// `PerCpuArray<ClassCounter>` indexed by `class::asn_counter_index`: the named ASNs.
    pub const ASN_COUNTERS: &str = "ASN_COUNTERS";
    /// `PerCpuArray<u64>` indexed by `reason::Reason`.
    pub const REASONS: &str = "REASONS";
    /// `LruHashMap<FlowKey, FlowState>`: violation flows.
    pub const FLOWS: &str = "FLOWS";
    /// `RingBuf` of `FlowEvent`s and `watch::DnsEvent`s (decoded by their first word).
    pub const EVENTS: &str = "EVENTS";
    /// `Array<u64>`: the watch prefilter bitmap (`watch::bucket_v4`, `bucket_v6`).
    pub const WATCH_BITS: &str = "WATCH_BITS";
    /// `HashMap<[u8; 16], u32>`: DNS-learned address (`watch::mapped_v4` for IPv4) → entry.
    pub const WATCH_LEARNED: &str = "WATCH_LEARNED";
    /// `LpmTrie<[u8; 16], u32>`: watched prefix (IPv4 mapped) → entry.
    pub const WATCH_PREFIXES: &str = "WATCH_PREFIXES";
    /// `Array<u32>` indexed by named ASN slot: the watch entry of a watched AS number.
    pub const WATCH_ASNS: &str = "WATCH_ASNS";
    /// `PerCpuArray<ClassCounter>` indexed by `watch::watch_counter_index`.
    pub const WATCH_COUNTERS: &str = "WATCH_COUNTERS";
    /// `Array<pin::PinMeta>`, one entry: how the pinned maps are laid out. Userspace only.
    pub const PIN_META: &str = "PIN_META";
    /// `Array<[u8; pin::LABEL_CHUNK]>`: the slot names (JSON) that index the pinned
    /// counters, so a restarted daemon names them as before. Userspace only.
    pub const PIN_LABELS: &str = "PIN_LABELS";
    /// `ProgramArray`, one entry: `programs::ENCAP_XDP`, which `programs::XDP` tail-calls
    /// for a frame with an encapsulation.
    pub const ENCAP_XDP_PROG: &str = "ENCAP_XDP_PROG";
    /// `ProgramArray`, one entry: `programs::ENCAP_TC`, for the TC programs.
    pub const ENCAP_TC_PROG: &str = "ENCAP_TC_PROG";
    /// `ProgramArray`, one entry: `programs::ENCAP_XDP_MIRROR`, for `programs::XDP_MIRROR`.
    pub const ENCAP_XDP_MIRROR_PROG: &str = "ENCAP_XDP_MIRROR_PROG";
    /// `PerCpuArray<Note>`, one entry: what the parser hands its encapsulation program
    /// across the tail call (kernel only; pinned with the program arrays).
    pub const ENCAP: &str = "ENCAP";
}

/// Program names as the kernel object exports them.
pub mod programs {
    pub const XDP: &str = "exfilmon_xdp";
    pub const TC_EGRESS: &str = "exfilmon_tc_egress";
    pub const TC_INGRESS: &str = "exfilmon_tc_ingress";
    /// The encapsulation programs: never attached, tail-called by `XDP` and by the TC
    /// programs for frames with PPPoE, MPLS, GRE, VXLAN or GENEVE (`maps::ENCAP_*_PROG`).
    pub const ENCAP_XDP: &str = "exfilmon_xdp_encap";
    pub const ENCAP_TC: &str = "exfilmon_tc_encap";
    /// The mirror-port programs: count as `XDP` and `ENCAP_XDP` do, then drop every frame
    /// (`[[interface]] mirror = true`: on a SPAN or TAP port every frame is a copy).
    pub const XDP_MIRROR: &str = "exfilmon_xdp_mirror";
    pub const ENCAP_XDP_MIRROR: &str = "exfilmon_xdp_encap_mirror";

    /// One set of the packet-path programs: the attachable ones and the encapsulation
    /// programs they tail-call. The object has two; a daemon loads one.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Set {
        /// How the set reads frames, as logs and the `exfilmon_programs_info` metric say it.
        pub name: &'static str,
        pub xdp: &'static str,
        pub tc_egress: &'static str,
        pub tc_ingress: &'static str,
        pub encap_xdp: &'static str,
        pub encap_tc: &'static str,
        pub xdp_mirror: &'static str,
        pub encap_xdp_mirror: &'static str,
    }

    impl Set {
        /// Every program of the set.
        #[must_use]
        pub const fn all(&self) -> [&'static str; 7] {
            [
                self.xdp,
                self.tc_egress,
                self.tc_ingress,
                self.encap_xdp,
                self.encap_tc,
                self.xdp_mirror,
                self.encap_xdp_mirror,
            ]
        }
    }

    /// The frame parsed in place, the fast path. The verifier accepts it only from a loader
    /// with CAP_PERFMON (or CAP_SYS_ADMIN): it reads headers at offsets held in registers.
    pub const IN_PLACE: Set = Set {
        name: "in_place",
        xdp: XDP,
        tc_egress: TC_EGRESS,
        tc_ingress: TC_INGRESS,
        encap_xdp: ENCAP_XDP,
        encap_tc: ENCAP_TC,
        xdp_mirror: XDP_MIRROR,
        encap_xdp_mirror: ENCAP_XDP_MIRROR,
    };

    /// Each header copied out of the frame by `bpf_xdp_load_bytes` / `bpf_skb_load_bytes`
    /// and read from the copy: what CAP_BPF and CAP_NET_ADMIN alone load. It counts what
    /// `IN_PLACE` counts, for a helper call per header, but walks shorter IPv6 header
    /// chains ([`COPY_MAX_IPV6_EXT`]).
    /// Steps of the `COPY` set's walk along an IPv6 header chain, one per extension header
    /// and one to the transport header (8 in place): behind this many extension headers
    /// or more, a packet is counted as `ipv6_ext_limit` and classified by its addresses.
    /// Without CAP_PERFMON the verifier also walks the paths a CPU could take by
    /// speculation, and with eight steps their branches pass its limit of 8,192 pending
    /// paths (7 passes, 6 leaves a margin).
    pub const COPY_MAX_IPV6_EXT: usize = 6;

    pub const COPY: Set = Set {
        name: "copy",
        xdp: "exfilmon_xdp_copy",
        tc_egress: "exfilmon_tc_egress_copy",
        tc_ingress: "exfilmon_tc_ingress_copy",
        encap_xdp: "exfilmon_xdp_encap_copy",
        encap_tc: "exfilmon_tc_encap_copy",
        xdp_mirror: "exfilmon_xdp_mirror_copy",
        encap_xdp_mirror: "exfilmon_xdp_encap_mirror_copy",
    };

    /// Benchmark only: rewrites each test-run frame from the workload, then classifies it
    /// exactly as `exfilmon_xdp` does.
    pub const BENCH: &str = "exfilmon_bench";
    /// Benchmark only: the same with locations from kernel LPM tries (both families).
    pub const BENCH_LPM: &str = "exfilmon_bench_lpm";
    /// Benchmark only: `BENCH` without the flow table (nothing is tracked), so that the
    /// difference between the two is the flow table's share of the cost.
    pub const BENCH_NOFLOW: &str = "exfilmon_bench_noflow";
    /// Benchmark only: `BENCH` as the `COPY` set classifies, from a copy of the frame's head.
    pub const BENCH_COPY: &str = "exfilmon_bench_copy";
    /// Benchmark only: the rewrite and the two address lookups alone (source and
    /// destination), with the product's tables and with the kernel LPM tries: the lookups'
    /// own cost, without the parse, counters and flow table both builds share.
    pub const BENCH_LOOKUP: &str = "exfilmon_bench_lookup";
    pub const BENCH_LOOKUP_LPM: &str = "exfilmon_bench_lookup_lpm";
    /// Benchmark only: `BENCH` and `BENCH_LOOKUP` with IPv6 locations from the tiered hash
    /// (`bench::HASH6_TIERS`) instead of the tiered table; IPv4 as in `BENCH`.
    pub const BENCH_HASH6: &str = "exfilmon_bench_hash6";
    pub const BENCH_LOOKUP_HASH6: &str = "exfilmon_bench_lookup_hash6";
    /// Benchmark only: the same rewrite, then `XDP_PASS` — the baseline.
    pub const BENCH_PASS: &str = "exfilmon_bench_pass";
    /// Benchmark only: submits one flow-start event per run for the next workload packet,
    /// through the classifier's own ring buffer code (the drain benchmark's producer).
    pub const BENCH_EVENTS: &str = "exfilmon_bench_events";
    /// Live benchmark only: the generator run in live-frames mode (rewrite, checksum, `XDP_TX`).
    pub const LIVE_GEN: &str = "exfilmon_live_gen";
    /// Live benchmark only: the generator for one fixed frame (`XDP_TX`, no rewrite).
    pub const LIVE_TX: &str = "exfilmon_live_tx";
    /// Live benchmark only: a bare `XDP_PASS`, the receiving veth's baseline.
    pub const LIVE_PASS: &str = "exfilmon_live_pass";
}
