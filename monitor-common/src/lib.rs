//! Types and constants shared by exfilmon's kernel programs and its daemon.
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]`, built from fixed-width
//! integers and byte arrays, with explicit padding and a size assertion next to it. Enums
//! travel as `u8`/`u32` codes; userspace converts them with `TryFrom`.
#![no_std]

pub mod class;
pub mod config;
pub mod flow;
pub mod reason;

/// Map names, shared so that the loader, the collector and the kernel agree.
pub mod maps {
    /// `Array<KernelConfig>`, one entry.
    pub const CONFIG: &str = "CONFIG";
    /// `LpmTrie<[u8; 4], InsideValue>`: home networks and groups, IPv4.
    pub const INSIDE4: &str = "INSIDE4";
    /// `LpmTrie<[u8; 16], InsideValue>`: home networks and groups, IPv6.
    pub const INSIDE6: &str = "INSIDE6";
    /// `LpmTrie<[u8; 4], GeoValue>`: remote address → country slot and ASN, IPv4.
    pub const GEO4: &str = "GEO4";
    /// `LpmTrie<[u8; 16], GeoValue>`: the same for IPv6.
    pub const GEO6: &str = "GEO6";
    /// `Array<u8>` indexed by `class::policy_index`: the verdict of each (group, country).
    pub const POLICY: &str = "POLICY";
    /// `Array<[u8; 2]>` indexed by country slot: the ISO code that owns the slot.
    pub const COUNTRY_CODES: &str = "COUNTRY_CODES";
    /// `PerCpuArray<ClassCounter>` indexed by `class::class_index`.
    pub const CLASS_COUNTERS: &str = "CLASS_COUNTERS";
    /// `PerCpuArray<u64>` indexed by `reason::Reason`.
    pub const REASONS: &str = "REASONS";
    /// `LruHashMap<FlowKey, FlowState>`: violation flows.
    pub const FLOWS: &str = "FLOWS";
    /// `RingBuf` of `FlowEvent`s.
    pub const EVENTS: &str = "EVENTS";
}

/// Program names as the kernel object exports them.
pub mod programs {
    pub const XDP: &str = "exfilmon_xdp";
    pub const TC_EGRESS: &str = "exfilmon_tc_egress";
    pub const TC_INGRESS: &str = "exfilmon_tc_ingress";
}
