//! The benchmark's workload: what the bench programs write into each test-run frame.
//!
//! `BPF_PROG_TEST_RUN` repeats one frame; to measure random destinations and many flows
//! the bench programs rewrite the frame's addresses and ports from the next workload entry
//! before classifying it. The baseline program does the same rewrite and returns
//! `XDP_PASS`, so the difference between the two is the classifier's own cost.

/// One packet of the workload. Addresses in network order; IPv4 uses the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchPacket {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ports in network order.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub _pad: u32,
}
const _: () = assert!(size_of::<BenchPacket>() == 40);

impl BenchPacket {
    /// An IPv4 packet from `src`:`sport` to `dst`:443 (addresses in host order).
    #[must_use]
    pub fn v4(src: u32, dst: u32, sport: u16) -> Self {
        let mut p = Self {
            sport: sport.to_be_bytes(),
            dport: 443u16.to_be_bytes(),
            ..Self::default()
        };
        let (s, d) = (src.to_be_bytes(), dst.to_be_bytes());
        p.src = [s[0], s[1], s[2], s[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p.dst = [d[0], d[1], d[2], d[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p
    }
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` byte arrays and integers with explicit padding.
unsafe impl aya::Pod for BenchPacket {}

/// The tiered-hash IPv6 build of the benchmark (the alternative the issue named beside the
/// LPM trie): the prefix lengths of its tiers, probed longest first. Every prefix of up to
/// 64 bits is expanded to the shortest tier at least as long (3.1M entries for the tor
/// data, up to 128 per prefix; those shorter than /16 to /16); a /64 that holds longer
/// prefixes has [`crate::geo::V6_TRIE`] as its word, and those prefixes are in a fallback
/// LPM trie.
pub const HASH6_TIERS: [u32; 10] = [64, 60, 56, 48, 44, 40, 32, 28, 24, 16];

/// A key of the tiered hash: the top 64 bits of the address (host order) with the bits
/// past `len` cleared, and the tier's length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hash6Key {
    pub prefix: u64,
    pub len: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Hash6Key>() == 16);

impl Hash6Key {
    /// The key of the tier of length `len` (at most 64) for the address's top 64 bits.
    #[must_use]
    #[inline(always)]
    pub fn new(hi: u64, len: u32) -> Self {
        let mask = if len == 0 { 0 } else { u64::MAX << (64 - len) };
        Self {
            prefix: hi & mask,
            len,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers with explicit padding.
unsafe impl aya::Pod for Hash6Key {}

/// Flow events the ring buffer benchmark's producer submits per program run.
pub const EVENTS_PER_RUN: u32 = 8;
