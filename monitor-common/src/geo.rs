//! Where a remote address is: the location word, the IPv4 DIR-24-8 table layout and the
//! IPv6 tiered table layout.
//!
//! One table answers both questions the classifier asks about an address: is it inside
//! (and in which group), and if not, where is it. Its *address word* (`u32`) is either
//! - an inside word: [`INSIDE`] set, the group slot in bits 0..5; or
//! - a location word: a country slot in bits 0..9 (the slot of `class::COUNTRY_SLOTS`)
//!   and an ASN slot in bits 9..30 (an index into the `ASNS` map).
//!
//! Word 0 is "outside, unknown country, unknown ASN", so an entry the daemon never wrote
//! can only under-claim. Two lookups per packet (source and destination) classify it.
//!
//! IPv4 is a DIR-24-8 table: level 1 has one word per /24, indexed by the top 24 bits of
//! the address. A level-1 word with [`GEO_L2`] set points at a 256-word level-2 block for
//! the few /24s that are split between locations. A lookup is one array read, two for
//! split /24s.
//!
//! IPv6 is a multibit trie with a stride chosen per node, kept in flat arrays (`tier6` in
//! the daemon builds it). The root has one word per /16 ([`V6_ROOT_BITS`]). A word with
//! [`V6_NODE`] set points at a node block of `2^stride` words (stride 1..=16) for the next
//! `stride` address bits; a lookup follows at most [`V6_MAX_DEPTH`] such pointers, one array
//! read each. The rare spots where the data nests deeper than that hold [`V6_TRIE`]: the
//! answer is in the generation's small LPM trie.
//!
//! Tables come in two generations: the daemon fills the idle one beside the live one and
//! switches with one write of `GEO_GENERATION`. The kernel array maps hold two words per
//! `u64` entry (array values are 8-byte aligned, so `u32` values would waste half), and
//! they are mmap-able, so userspace sees each map as one flat `u32` array: word `i` is the
//! low half of entry `i / 2` for even `i`, the high half for odd `i` (little-endian).

use crate::class::{COUNTRY_BITS, COUNTRY_SLOTS, MAX_GROUPS};

/// Shift of the ASN slot in a location word.
pub const ASN_SHIFT: u32 = COUNTRY_BITS;
/// Bits of the ASN slot.
pub const ASN_SLOT_BITS: u32 = 21;
/// ASN slots a location word can name; slot 0 is "unknown".
pub const ASN_SLOTS_MAX: u32 = 1 << ASN_SLOT_BITS;
/// Level-1 words with this bit point at a level-2 block (the rest of the word).
pub const GEO_L2: u32 = 1 << 31;
/// Words with this bit are inside addresses; the group slot is in the low bits.
pub const INSIDE: u32 = 1 << 30;

/// Generations of the lookup tables: the live one and the one being built.
pub const GENERATIONS: u32 = 2;
/// Level-1 words per generation: one per /24.
pub const L1_WORDS: u32 = 1 << 24;
/// Entries (`u64`, two words) of the level-1 map for both generations.
pub const L1_ENTRIES: u32 = GENERATIONS * L1_WORDS / 2;
/// Words of one level-2 block: one per address of a /24.
pub const L2_BLOCK_WORDS: u32 = 256;

/// IPv6 root: bits of the address that index it (one word per /16).
pub const V6_ROOT_BITS: u32 = 16;
/// IPv6 root words per generation.
pub const V6_ROOT_WORDS: u32 = 1 << V6_ROOT_BITS;
/// Entries (`u64`, two words) of the IPv6 root map for both generations.
pub const V6_ROOT_ENTRIES: u32 = GENERATIONS * V6_ROOT_WORDS / 2;
/// IPv6 words with this bit point at a node block (or, as [`V6_TRIE`], at the trie).
pub const V6_NODE: u32 = 1 << 31;
/// Shift of `stride - 1` in an IPv6 node pointer.
pub const V6_STRIDE_SHIFT: u32 = 27;
/// Largest stride of an IPv6 node: `2^16` words per block.
pub const V6_MAX_STRIDE: u32 = 16;
/// Node pointers an IPv6 lookup follows at most below the root.
pub const V6_MAX_DEPTH: u32 = 8;
/// Node blocks of both generations end below this word offset (27 bits of the pointer;
/// the last word is left out so that no pointer equals [`V6_TRIE`]).
pub const V6_BLOCK_LIMIT: u32 = 1 << V6_STRIDE_SHIFT;
/// "Look this address up in the generation's LPM trie": the data nests too deep here.
pub const V6_TRIE: u32 = u32::MAX;

const _: () = assert!(COUNTRY_BITS + ASN_SLOT_BITS <= 30);
const _: () = assert!(V6_MAX_STRIDE <= 1 << (31 - V6_STRIDE_SHIFT));
const _: () = assert!(MAX_GROUPS <= COUNTRY_SLOTS);

/// The location word of a country slot and an ASN slot (both masked to their widths).
#[inline(always)]
#[must_use]
pub const fn location(country: u32, asn_slot: u32) -> u32 {
    (country & (COUNTRY_SLOTS - 1)) | ((asn_slot & (ASN_SLOTS_MAX - 1)) << ASN_SHIFT)
}

/// The inside word of a group slot.
#[inline(always)]
#[must_use]
pub const fn inside(group: u32) -> u32 {
    INSIDE | (group & (MAX_GROUPS - 1))
}

/// The group slot of an inside word.
#[inline(always)]
#[must_use]
pub const fn group_slot(word: u32) -> u32 {
    word & (MAX_GROUPS - 1)
}

/// The country slot of a location word.
#[inline(always)]
#[must_use]
pub const fn country_slot(word: u32) -> u32 {
    word & (COUNTRY_SLOTS - 1)
}

/// The ASN slot of a location word.
#[inline(always)]
#[must_use]
pub const fn asn_slot(word: u32) -> u32 {
    (word >> ASN_SHIFT) & (ASN_SLOTS_MAX - 1)
}

/// Index of the level-1 word of `addr` (host order) in generation `generation`.
#[inline(always)]
#[must_use]
pub const fn l1_index(generation: u32, addr: u32) -> u32 {
    ((generation & (GENERATIONS - 1)) << 24) | (addr >> 8)
}

/// Index of the level-2 word of `addr` in block `block` (an absolute block number).
#[inline(always)]
#[must_use]
pub const fn l2_index(block: u32, addr: u32) -> u32 {
    (block << 8) | (addr & 0xff)
}

/// The IPv6 pointer to a node block of `2^stride` words at word offset `block`.
#[inline(always)]
#[must_use]
pub const fn v6_node(stride: u32, block: u32) -> u32 {
    V6_NODE | ((stride - 1) << V6_STRIDE_SHIFT) | (block & (V6_BLOCK_LIMIT - 1))
}

/// The stride (1..=16) of an IPv6 node pointer.
#[inline(always)]
#[must_use]
pub const fn v6_stride(word: u32) -> u32 {
    ((word >> V6_STRIDE_SHIFT) & 0xf) + 1
}

/// The word offset of the block an IPv6 node pointer points at.
#[inline(always)]
#[must_use]
pub const fn v6_block(word: u32) -> u32 {
    word & (V6_BLOCK_LIMIT - 1)
}

/// Bits `len .. len + stride` of the address `hi:lo` (host order, `hi` the first 64 bits)
/// as a number: the index of the address's word in a node block. Needs
/// `1 <= stride <= 16` and `len + stride <= 128`; no shift reaches 64 then.
#[inline(always)]
#[must_use]
pub const fn v6_chunk(hi: u64, lo: u64, len: u32, stride: u32) -> u32 {
    let end = len + stride;
    let bits = if end <= 64 {
        hi >> (64 - end)
    } else if len >= 64 {
        lo >> (128 - end)
    } else {
        (hi << (end - 64)) | (lo >> (128 - end))
    };
    (bits as u32) & ((1 << stride) - 1)
}

/// Index of the IPv6 root word of an address whose first 64 bits are `hi`.
#[inline(always)]
#[must_use]
pub const fn v6_root_index(generation: u32, hi: u64) -> u32 {
    ((generation & (GENERATIONS - 1)) << V6_ROOT_BITS) | (hi >> (64 - V6_ROOT_BITS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_words_round_trip() {
        for (c, a) in [(0, 0), (511, ASN_SLOTS_MAX - 1), (17, 65_000), (300, 1)] {
            let w = location(c, a);
            assert_eq!((country_slot(w), asn_slot(w)), (c, a));
            assert_eq!(
                w & (GEO_L2 | INSIDE),
                0,
                "a location is neither a pointer nor inside"
            );
        }
        assert_eq!(group_slot(inside(31)), 31);
        assert_ne!(inside(0) & INSIDE, 0);
        assert_eq!(l1_index(1, 0xffff_ffff), 2 * L1_WORDS - 1);
        assert_eq!(l1_index(0, 0xc000_0201), 0x00c0_0002);
    }

    #[test]
    fn v6_pointers_and_chunks() {
        for (stride, block) in [(1, 0), (16, V6_BLOCK_LIMIT - (1 << 16) - 1), (7, 12_345)] {
            let w = v6_node(stride, block);
            assert_ne!(w & V6_NODE, 0);
            assert_ne!(w, V6_TRIE, "a real pointer is never the trie marker");
            assert_eq!((v6_stride(w), v6_block(w)), (stride, block));
        }
        let (hi, lo) = (0x2001_0db8_0001_0002, 0x8000_0000_0000_00ff);
        assert_eq!(v6_chunk(hi, lo, 0, 16), 0x2001);
        assert_eq!(v6_chunk(hi, lo, 16, 16), 0x0db8);
        assert_eq!(v6_chunk(hi, lo, 60, 8), 0x28, "straddles the two halves");
        assert_eq!(v6_chunk(hi, lo, 64, 1), 1);
        assert_eq!(v6_chunk(hi, lo, 120, 8), 0xff);
        assert_eq!(v6_chunk(hi, lo, 127, 1), 1);
        assert_eq!(v6_root_index(1, hi), V6_ROOT_WORDS | 0x2001);
    }
}
