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

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` byte arrays and integers with explicit padding.
unsafe impl aya::Pod for BenchPacket {}
