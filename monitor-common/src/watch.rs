//! Watchlists: the entry ids, the per-entry counter layout, the prefilter bitmap's hash and
//! the DNS answer records the kernel copies into the ring buffer.
//!
//! A watch *entry* is one prefix, one AS number or one domain pattern of a `[[watchlist]]`.
//! Entries are numbered `1..MAX_WATCH_ENTRIES` across all watchlists (0 is "no entry"),
//! and keep their ids by name across reloads, like groups. The kernel attributes a packet
//! to at most one entry: a DNS-learned address first, then the longest watched prefix,
//! then a watched AS number.

use crate::class::MAX_GROUPS;

/// Entry ids: 1..`MAX_WATCH_ENTRIES`; 0 is none.
pub const MAX_WATCH_ENTRIES: u32 = 256;
pub const WATCH_ENTRY_BITS: u32 = 8;
const _: () = assert!(1 << WATCH_ENTRY_BITS == MAX_WATCH_ENTRIES);

/// Entries of the per-entry counter array: entry × group × direction.
pub const WATCH_COUNTER_ENTRIES: u32 = MAX_WATCH_ENTRIES * MAX_GROUPS * 2;

/// Index of (entry, group, direction) in the per-entry counters, masked into range.
#[inline(always)]
#[must_use]
pub const fn watch_counter_index(entry: u32, group: u32, dir: u32) -> u32 {
    ((entry & (MAX_WATCH_ENTRIES - 1)) << 6) | ((group & (MAX_GROUPS - 1)) << 1) | (dir & 1)
}

/// The inverse of [`watch_counter_index`]: (entry, group, direction).
#[must_use]
pub const fn watch_counter_parts(index: u32) -> (u32, u32, u32) {
    (
        (index >> 6) & (MAX_WATCH_ENTRIES - 1),
        (index >> 1) & (MAX_GROUPS - 1),
        index & 1,
    )
}

/// Bits of the prefilter bitmap (`WATCH_BITS`): 2^20 bits, 128 KiB.
pub const WATCH_BITS_LOG2: u32 = 20;
/// `u64` words of the prefilter bitmap.
pub const WATCH_BITS_WORDS: u32 = 1 << (WATCH_BITS_LOG2 - 6);

/// The prefilter bit of an IPv4 address (host order): a hash of its /24.
#[inline(always)]
#[must_use]
pub const fn bucket_v4(addr: u32) -> u32 {
    hash(0x4_0000_0000 | (addr >> 8) as u64)
}

/// The prefilter bit of an IPv6 address whose first 64 bits are `hi`: a hash of its /48.
#[inline(always)]
#[must_use]
pub const fn bucket_v6(hi: u64) -> u32 {
    hash(hi >> 16)
}

/// Fibonacci hashing: the top bits of a multiply by 2^64 / φ.
#[inline(always)]
const fn hash(key: u64) -> u32 {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - WATCH_BITS_LOG2)) as u32
}

/// Watched IPv4 prefixes must be at least this long (at most 2^16 /24 bits each).
pub const MIN_PREFIX_V4: u8 = 8;
/// Watched IPv6 prefixes must be at least this long (at most 2^16 /48 bits each).
pub const MIN_PREFIX_V6: u8 = 32;

/// Entries of the DNS-learned address map (`WATCH_LEARNED`).
pub const LEARNED_ENTRIES: u32 = 16384;
/// Entries of the watched-prefix trie (`WATCH_PREFIXES`): one per entry at most.
pub const PREFIX_ENTRIES: u32 = MAX_WATCH_ENTRIES;

/// The key of an address in `WATCH_LEARNED` and `WATCH_PREFIXES`: IPv6 as it is, IPv4
/// as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), so one map serves both families.
#[inline(always)]
#[must_use]
pub const fn mapped_v4(addr: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

/// Ring buffer record kind of a DNS answer (flow events are 1..=3, `flow::EVENT_*`).
pub const EVENT_DNS: u32 = 4;
/// DNS payload bytes copied at most; longer answers are cut and counted.
pub const DNS_COPY: usize = 512;

/// A DNS answer copied from a packet from port 53: the transport payload (for TCP with
/// its two-byte length prefix), cut at [`DNS_COPY`] bytes, with the packet's addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    /// [`EVENT_DNS`].
    pub kind: u32,
    /// Bytes of `data` that hold the payload.
    pub len: u16,
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// `flow::FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// The payload's length in the packet (more than `len` when cut).
    pub payload_len: u32,
    pub _pad: u32,
    /// The answering server (the packet's source) and the client it answers (its
    /// destination), in network order; IPv4 in the first four bytes.
    pub server: [u8; 16],
    pub client: [u8; 16],
    pub data: [u8; DNS_COPY],
}
const _: () = assert!(size_of::<DnsEvent>() == 48 + DNS_COPY);

/// Ring buffer record kind of a TLS ClientHello.
pub const EVENT_HELLO: u32 = 5;
/// Bytes of a ClientHello packet copied at most, from its IP header on; enough for the
/// server name of the ClientHellos that name the server early (OpenSSL, curl, Firefox).
/// A longer packet is cut and counted (`tls_hello_cut`); the name may then be lost.
pub const HELLO_COPY: usize = 1024;
/// The TCP destination port whose first payload bytes are checked for a ClientHello.
pub const PORT_HTTPS: u16 = 443;

/// A packet to TCP port 443 whose payload starts a TLS handshake record holding a
/// ClientHello: the IP packet from its header on, cut at [`HELLO_COPY`] bytes. The daemon
/// reads the server name and learns the destination address as DNS answers teach it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloEvent {
    /// [`EVENT_HELLO`].
    pub kind: u32,
    /// Bytes of `data` that hold the packet.
    pub len: u16,
    pub _pad: u16,
    /// The IP packet's length (more than `len` when cut).
    pub packet_len: u32,
    pub _pad2: u32,
    pub data: [u8; HELLO_COPY],
}
const _: () = assert!(size_of::<HelloEvent>() == 16 + HELLO_COPY);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding.
    unsafe impl aya::Pod for super::DnsEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HelloEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_index_round_trips_and_stays_in_range() {
        for (e, g, d) in [(1, 0, 0), (255, 31, 1), (7, 3, 1)] {
            let i = watch_counter_index(e, g, d);
            assert!(i < WATCH_COUNTER_ENTRIES);
            assert_eq!(watch_counter_parts(i), (e, g, d));
        }
        assert!(watch_counter_index(u32::MAX, u32::MAX, u32::MAX) < WATCH_COUNTER_ENTRIES);
    }

    #[test]
    fn buckets_stay_in_the_bitmap_and_follow_the_prefix() {
        assert!(bucket_v4(u32::MAX) < 1 << WATCH_BITS_LOG2);
        assert!(bucket_v6(u64::MAX) < 1 << WATCH_BITS_LOG2);
        assert_eq!(bucket_v4(0xc000_0201), bucket_v4(0xc000_02fe), "same /24");
        assert_eq!(
            bucket_v6(0x2001_0db8_0001_0000),
            bucket_v6(0x2001_0db8_0001_ffff),
            "same /48"
        );
    }
}
