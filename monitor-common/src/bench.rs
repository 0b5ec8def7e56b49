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

/// Flow events the ring buffer benchmark's producer submits per program run.
pub const EVENTS_PER_RUN: u32 = 8;
