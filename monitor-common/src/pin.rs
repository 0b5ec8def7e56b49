//! What the daemon keeps pinned on bpffs so that a restart or an upgrade loses no count
//! (see `monitor/src/pins.rs`): which maps, and the header that says how they are laid out.

use crate::maps;

/// The maps pinned under `<pin dir>/maps/`: the counters, the flow table and the ring
/// buffer, and what the attached programs' tail calls need: the program arrays (the kernel
/// empties a program array when no user holds it, so unpinned, the programs left attached
/// after the daemon exits would lose their encapsulation program) and the note the parser
/// hands across the tail call (one map, whichever daemon's parser and encapsulation
/// program meet during a take-over). The classification tables are not pinned: a new
/// daemon fills its own and then swaps its programs into the pinned links in one step.
pub const PINNED_MAPS: [&str; 11] = [
    maps::CLASS_COUNTERS,
    maps::ASN_COUNTERS,
    maps::WATCH_COUNTERS,
    maps::POLICY_DROPS,
    maps::REASONS,
    maps::FLOWS,
    maps::EVENTS,
    maps::ENCAP_XDP_PROG,
    maps::ENCAP_TC_PROG,
    maps::ENCAP_XDP_MIRROR_PROG,
    maps::ENCAP,
];

/// `PinMeta::magic`.
pub const MAGIC: [u8; 8] = *b"exfilmon";

/// The layout of the pinned maps. Bump it whenever the meaning of a pinned map's keys or
/// values changes without its sizes changing (a class index reshuffled, a reason
/// renumbered, a field reused, the encapsulation note changed); size changes are caught
/// from the maps themselves.
///
/// 2: the encapsulation outcomes (reasons 10 and 11) and the encapsulation maps pinned.
pub const LAYOUT: u32 = 2;

/// The layouts this exfilmon takes over, [`LAYOUT`] and those it can migrate from; the
/// header is rewritten to [`LAYOUT`] once the new programs are loaded.
///
/// 1 → 2: layout 1 left reasons 10 and 11 unused (zero), and had no encapsulation maps,
/// which the take-over makes and pins. Nothing pinned changes meaning.
pub const TAKES_OVER: [u32; 2] = [1, LAYOUT];

/// Bytes of one `PIN_LABELS` entry.
pub const LABEL_CHUNK: usize = 4096;
/// `PIN_LABELS` entries when pinning (the object declares one, the loader sets this).
pub const LABEL_CHUNKS: u32 = 64;

/// The one entry of `PIN_META`: written by the daemon after it has loaded, before it
/// attaches anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinMeta {
    /// [`MAGIC`]: the entry was written (an all-zero entry was not).
    pub magic: [u8; 8],
    /// [`LAYOUT`] of the daemon that wrote it.
    pub layout: u32,
    /// Bytes of the slot names (JSON) in `PIN_LABELS`, from its first entry on.
    pub labels_len: u32,
    /// The writer's version (`CARGO_PKG_VERSION`), NUL-padded, for the messages.
    pub version: [u8; 16],
}
const _: () = assert!(size_of::<PinMeta>() == 32);

#[cfg(feature = "user")]
// SAFETY: plain old data, no padding.
unsafe impl aya::Pod for PinMeta {}
