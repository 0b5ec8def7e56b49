//! Run-time settings the daemon writes into the kernel's `CONFIG` map.

/// The single entry of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// A tracked flow is reported again after this many nanoseconds…
    pub update_interval_ns: u64,
    /// …or after this many more layer-3 bytes, whichever comes first.
    pub update_bytes: u64,
    /// Submit with a forced wakeup once this many bytes wait in the ring buffer; below it,
    /// events are submitted without waking the daemon, which also drains on a timer.
    pub wakeup_bytes: u64,
    /// `FLAG_*` bits.
    pub flags: u64,
}
const _: () = assert!(size_of::<KernelConfig>() == 32);

/// Track flows of `unknown` verdict (no country known) as well as violations.
pub const FLAG_TRACK_UNKNOWN: u64 = 1;

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers.
unsafe impl aya::Pod for KernelConfig {}
