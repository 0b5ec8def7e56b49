//! Tracked flows and the events the kernel pushes about them.
//!
//! A flow is keyed from the inside's point of view — (inside address, remote address,
//! inside port, remote port, protocol) — so both directions of a conversation share one
//! entry. Events carry cumulative totals, never deltas: losing one loses no bytes.

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Key of the `FLOWS` LRU map. IPv4 addresses occupy the first 4 bytes, the rest is zero.
/// Aligned to 8 (its size is a multiple of 8, so the layout is the same): with the fields'
/// own alignment of 2, the kernel program built each key on the stack in 2-byte and 1-byte
/// stores, about 60 instructions on every tracked packet, and now in 8-byte copies.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub inside: [u8; 16],
    pub remote: [u8; 16],
    pub inside_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Value of the `FLOWS` map. Counters are updated with atomic adds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) of the first and the last packet.
    pub first_ns: u64,
    pub last_ns: u64,
    /// When the flow was last reported, and its total bytes then.
    pub reported_ns: u64,
    pub reported_bytes: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub asn: u32,
    pub country: u16,
    pub group: u8,
    pub verdict: u8,
    /// OR of the TCP flags seen.
    pub tcp_flags: u8,
    /// Non-zero once an end event was sent (TCP FIN or RST).
    pub ended: u8,
    /// The policy rule that decided the verdict (rule id of `policy::word`).
    pub rule: u16,
    /// The watch entry the flow was attributed to (`watch`), 0 for none.
    pub watch: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowState>() == 80);

/// Event kinds on the ring buffer. Wire ids: never renumber.
pub const EVENT_FLOW_START: u32 = 1;
pub const EVENT_FLOW_UPDATE: u32 = 2;
pub const EVENT_FLOW_END: u32 = 3;

/// One ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub kind: u32,
    pub _pad: u32,
    pub key: FlowKey,
    pub state: FlowState,
}
const _: () = assert!(size_of::<FlowEvent>() == 128);

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::FlowEvent {}
}
