//! The IPv6 tiered location table, built in userspace (the kernel's lookup is `locate6` in
//! `monitor-ebpf/src/classify.rs`; the word layout is `monitor_common::geo`).
//!
//! A multibit trie whose stride is chosen per node, in flat arrays: the root has one word
//! per /16; a node block has `2^stride` words, one per `stride`-bit chunk of the address
//! that follows the node's prefix. A word is the answer (an address word) or a pointer to
//! the next block, so a lookup is one array read per level and no hashing.
//!
//! Why per-node strides: the tor data has 595k prefixes from /13 to /128 (most at /27–/32,
//! /45–/48 and /56–/64), packed into a few thousand /32s. Fixed tiers at /32 and /48 would
//! expand the short prefixes of each tier's band into millions of entries (a /33 is 32,768
//! /48s); here each node picks the largest stride whose block stays within
//! [`Params::factor`] words per address range in the node, so memory follows the data and a
//! dense /16 is crossed in one step.
//!
//! Depth is bounded: a block that the levels left cannot resolve (at [`Params::max_depth`],
//! or earlier where even its shallowest cut is too deep to reach, as for an isolated /128)
//! holds [`V6_TRIE`] instead, and the prefixes of its block go into the generation's small
//! LPM trie. Exact by construction: a block's word is a final word only where one address
//! range covers the whole block.

use monitor_common::geo::{
    GENERATIONS, V6_BLOCK_LIMIT, V6_MAX_DEPTH, V6_MAX_STRIDE, V6_NODE, V6_ROOT_BITS, V6_ROOT_WORDS,
    V6_TRIE, v6_block, v6_chunk, v6_node, v6_root_index, v6_stride,
};

use crate::geoip::range_to_prefixes_v6;

/// How the builder trades memory for depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// A node's block may have up to this many words per address range it cuts.
    pub factor: u64,
    /// Smallest stride (a node needs at least this many words anyway: `2^min_stride`).
    pub min_stride: u32,
    /// Pointers a lookup follows below the root before the trie takes over
    /// (at most [`V6_MAX_DEPTH`], the kernel's bound).
    pub max_depth: u32,
}

impl Default for Params {
    /// Measured on the tor data (see README, Performance): 8 words per range and strides
    /// of at least 4 give 2.5 node reads below the root per range on average, 16 MiB of
    /// nodes per generation (the kernel LPM trie of the same data takes 25 MiB), and 2% of
    /// the ranges left to the trie.
    fn default() -> Self {
        Params {
            factor: 8,
            min_stride: 4,
            max_depth: V6_MAX_DEPTH,
        }
    }
}

/// The data does not fit the pointer format: node blocks of both generations must end
/// below [`V6_BLOCK_LIMIT`] words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the IPv6 GeoIP data needs more than {limit} words of tiered-table nodes per generation, \
     more than the table format addresses"
)]
pub struct TooManyWords {
    pub limit: u32,
}

/// Largest node area of one generation the pointer format can address.
pub const WORDS_LIMIT: u32 = (V6_BLOCK_LIMIT - 1) / GENERATIONS;

/// One generation of the IPv6 table, with block offsets relative to its node area (the
/// installer adds the area's absolute offset, see [`relocate`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tier6 {
    /// [`V6_ROOT_WORDS`] words, one per /16.
    pub root: Vec<u32>,
    /// Every node block, back to back.
    pub nodes: Vec<u32>,
    /// The trie's prefixes `(network, length, word)`: the blocks where the data nests
    /// deeper than `max_depth` (addresses of word 0 are left out: a trie miss is word 0).
    pub trie: Vec<([u8; 16], u8, u32)>,
    /// Node blocks (levels below the root).
    pub node_count: u32,
}

/// `ranges` as a cover of the whole address space: piece `i` runs from `starts[i]` to the
/// next start minus one, with word `words[i]` (0 in the gaps), neighbours of equal words
/// joined.
struct Cover {
    starts: Vec<u128>,
    words: Vec<u32>,
}

impl Cover {
    fn new(ranges: &[(u128, u128, u32)]) -> Self {
        let mut c = Cover {
            starts: vec![0],
            words: vec![0],
        };
        for &(first, last, word) in ranges {
            debug_assert!(first <= last, "ranges are sorted and disjoint");
            c.push(first, word);
            if let Some(next) = last.checked_add(1) {
                c.push(next, 0);
            }
        }
        c
    }

    /// Starts a piece of `word` at `start` (at or after the last start).
    fn push(&mut self, start: u128, word: u32) {
        if self.starts.last() == Some(&start) {
            self.starts.pop();
            self.words.pop();
        }
        if self.words.last() != Some(&word) {
            self.starts.push(start);
            self.words.push(word);
        }
    }

    /// Last address of piece `i`.
    fn end(&self, i: usize) -> u128 {
        self.starts.get(i + 1).map_or(u128::MAX, |s| s - 1)
    }

    /// The piece that holds `addr`, searching from `from` on.
    fn find(&self, from: usize, addr: u128) -> usize {
        from + self.starts[from..].partition_point(|&s| s <= addr) - 1
    }
}

struct Builder<'a> {
    cover: &'a Cover,
    params: Params,
    out: Tier6,
}

impl Tier6 {
    /// Builds the table of `ranges` (sorted, disjoint; addresses outside every range get
    /// word 0) with the default [`Params`].
    ///
    /// # Errors
    ///
    /// [`TooManyWords`] when the nodes would not fit the pointer format.
    pub fn build(ranges: &[(u128, u128, u32)]) -> Result<Self, TooManyWords> {
        Self::build_with(ranges, Params::default())
    }

    /// [`Tier6::build`] with explicit parameters.
    ///
    /// # Errors
    ///
    /// [`TooManyWords`] when the nodes would not fit the pointer format.
    pub fn build_with(ranges: &[(u128, u128, u32)], params: Params) -> Result<Self, TooManyWords> {
        let cover = Cover::new(ranges);
        let mut b = Builder {
            cover: &cover,
            params: Params {
                max_depth: params.max_depth.min(V6_MAX_DEPTH),
                min_stride: params.min_stride.clamp(1, V6_MAX_STRIDE),
                ..params
            },
            out: Tier6 {
                root: vec![0; V6_ROOT_WORDS as usize],
                ..Tier6::default()
            },
        };
        let mut piece = 0;
        for r in 0..V6_ROOT_WORDS {
            let base = u128::from(r) << (128 - V6_ROOT_BITS);
            piece = cover.find(piece, base);
            let word = b.word(base, V6_ROOT_BITS, piece, 0)?;
            b.out.root[r as usize] = word;
        }
        Ok(b.out)
    }

    /// The word of `addr`, exactly as the kernel computes it (the trie part by a scan).
    ///
    /// # Panics
    ///
    /// On a table this module did not build (a pointer past the nodes, or past the depth
    /// the kernel follows).
    #[must_use]
    pub fn lookup(&self, addr: u128) -> u32 {
        let (hi, lo) = ((addr >> 64) as u64, addr as u64);
        let mut word = self.root[v6_root_index(0, hi) as usize];
        let mut len = V6_ROOT_BITS;
        for _ in 0..V6_MAX_DEPTH {
            if word & V6_NODE == 0 || word == V6_TRIE {
                break;
            }
            let stride = v6_stride(word);
            word = self.nodes[(v6_block(word) + v6_chunk(hi, lo, len, stride)) as usize];
            len += stride;
        }
        if word == V6_TRIE {
            return self
                .trie
                .iter()
                .filter(|(net, len, _)| {
                    let net = u128::from_be_bytes(*net);
                    *len == 0 || (addr ^ net) >> (128 - u32::from(*len)) == 0
                })
                .max_by_key(|(_, len, _)| *len)
                .map_or(0, |p| p.2);
        }
        assert_eq!(word & V6_NODE, 0, "a lookup ends in a word, not a pointer");
        word
    }

    /// Words of the root and the nodes (each node word is also a kernel map word).
    #[must_use]
    pub fn words(&self) -> usize {
        self.root.len() + self.nodes.len()
    }
}

impl Builder<'_> {
    /// The word for the block of `len` bits at `base`, whose first address is in piece
    /// `piece`, reached after `depth` pointers: a final word, a pointer to a new node, or
    /// [`V6_TRIE`].
    fn word(
        &mut self,
        base: u128,
        len: u32,
        piece: usize,
        depth: u32,
    ) -> Result<u32, TooManyWords> {
        let end = base | u128::MAX.checked_shr(len).unwrap_or(0);
        let cover = self.cover;
        if cover.end(piece) >= end {
            return Ok(cover.words[piece]);
        }
        let last = cover.find(piece, end);
        let stride = self.stride(len, (last - piece + 1) as u64);
        // Where even the shallowest cut in the block is out of reach of the levels left
        // (at this node's stride; deeper nodes cut fewer pieces, so their strides are no
        // wider), array levels would only lead to the trie: go there now. An isolated /128
        // then costs one trie prefix and no node block.
        let shallowest = cover.starts[piece + 1..=last]
            .iter()
            .map(|s| 128 - s.trailing_zeros())
            .min()
            .unwrap_or(len);
        let levels = (shallowest.saturating_sub(len)).div_ceil(stride);
        if depth + levels > self.params.max_depth {
            for i in piece..=last {
                let (first, to) = (cover.starts[i].max(base), cover.end(i).min(end));
                let word = cover.words[i];
                if word != 0 {
                    self.out.trie.extend(
                        range_to_prefixes_v6(first, to)
                            .map(|n| (n.network().octets(), n.prefix_len(), word)),
                    );
                }
            }
            return Ok(V6_TRIE);
        }
        let block = self.out.nodes.len();
        let size = 1usize << stride;
        if block + size > WORDS_LIMIT as usize {
            return Err(TooManyWords { limit: WORDS_LIMIT });
        }
        self.out.nodes.resize(block + size, 0);
        self.out.node_count += 1;
        let child_len = len + stride;
        let mut at = piece;
        for c in 0..size as u128 {
            let child = base | (c << (128 - child_len));
            at = cover.find(at, child);
            let word = self.word(child, child_len, at, depth + 1)?;
            self.out.nodes[block + c as usize] = word;
        }
        Ok(v6_node(stride, block as u32))
    }

    /// The largest stride whose block has at most `factor` words per piece the node cuts.
    fn stride(&self, len: u32, pieces: u64) -> u32 {
        let p = self.params;
        let budget = pieces.saturating_mul(p.factor);
        let mut s = p.min_stride;
        while s < V6_MAX_STRIDE && len + s < 128 && 1u64 << (s + 1) <= budget {
            s += 1;
        }
        s.min(128 - len)
    }
}

/// `word` of a generation whose node area starts at word offset `base`: pointers move by
/// `base`, everything else stays.
#[must_use]
pub const fn relocate(word: u32, base: u32) -> u32 {
    if word & V6_NODE != 0 && word != V6_TRIE {
        v6_node(v6_stride(word), v6_block(word) + base)
    } else {
        word
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::geoip::merge_under;

    /// Prefixes `(network, length, word)` → sorted disjoint ranges, the longest prefix
    /// winning where they nest (as `tables` paints inside networks over the data).
    fn paint(prefixes: &[(u128, u8, u32)]) -> Vec<(u128, u128, u32)> {
        let mut sorted = prefixes.to_vec();
        sorted.sort_by_key(|p| std::cmp::Reverse(p.1));
        let mut out = Vec::new();
        for (net, len, word) in sorted {
            out = merge_under(out, vec![(net, net | mask_low(len), word)]);
        }
        out
    }

    fn mask_low(len: u8) -> u128 {
        u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }

    fn naive(prefixes: &[(u128, u8, u32)], addr: u128) -> u32 {
        prefixes
            .iter()
            .filter(|(net, len, _)| addr & !mask_low(*len) == *net)
            .max_by_key(|p| p.1)
            .map_or(0, |p| p.2)
    }

    fn edges(prefixes: &[(u128, u8, u32)]) -> Vec<u128> {
        let mut v = vec![0, u128::MAX];
        for &(net, len, _) in prefixes {
            let last = net | mask_low(len);
            for a in [net, last] {
                v.extend([a.wrapping_sub(1), a, a.wrapping_add(1)]);
            }
        }
        v
    }

    fn check(prefixes: &[(u128, u8, u32)], params: Params, probes: &[u128]) -> Tier6 {
        let t = Tier6::build_with(&paint(prefixes), params).expect("fits");
        for &addr in edges(prefixes).iter().chain(probes) {
            assert_eq!(
                t.lookup(addr),
                naive(prefixes, addr),
                "address {} ({params:?})",
                std::net::Ipv6Addr::from(addr)
            );
        }
        t
    }

    fn net(s: &str) -> (u128, u8) {
        let n: ipnet::Ipv6Net = s.parse().expect("prefix");
        (u128::from(n.network()), n.prefix_len())
    }

    #[test]
    fn nested_prefixes_from_slash_zero_to_slash_128() {
        let mut p = vec![(0, 0, 1)];
        let (a, _) = net("2001:db8:1234:5678:9abc:def0:1234:5678/128");
        for len in [3u8, 13, 16, 17, 32, 33, 47, 48, 64, 65, 100, 127, 128] {
            p.push((a & !mask_low(len), len, u32::from(len) + 10));
        }
        for params in [
            Params::default(),
            Params {
                factor: 1,
                min_stride: 1,
                max_depth: 2,
            },
            Params {
                factor: 1 << 20,
                min_stride: 16,
                max_depth: V6_MAX_DEPTH,
            },
        ] {
            let t = check(&p, params, &[a ^ 1, a ^ (1 << 64), a ^ (1 << 80)]);
            assert!(t.node_count > 0);
        }
    }

    #[test]
    fn shallow_depth_sends_the_deep_spots_to_the_trie_and_stays_exact() {
        let (a, _) = net("2001:db8::1/128");
        let p = [
            (a, 128, 7),
            (a & !0xffff, 112, 6),
            (net("2001:db8::/32").0, 32, 5),
        ];
        let t = check(
            &p,
            Params {
                factor: 1,
                min_stride: 1,
                max_depth: 1,
            },
            &[a + 1, a - 1],
        );
        assert!(!t.trie.is_empty(), "depth 1 cannot reach /128");
        assert!(
            t.trie.iter().all(|e| e.2 != 0),
            "word 0 is a trie miss, not an entry"
        );
        let wide = Params {
            min_stride: 16,
            ..Params::default()
        };
        let deep = check(&p, wide, &[a + 1]);
        assert!(
            deep.trie.is_empty(),
            "16-bit strides reach /128 in seven levels"
        );
    }

    #[test]
    fn whole_space_and_empty_data() {
        let t = check(&[(0, 0, 9)], Params::default(), &[1 << 127]);
        assert_eq!((t.nodes.len(), t.root.iter().all(|&w| w == 9)), (0, true));
        let t = Tier6::build(&[]).expect("fits");
        assert_eq!(t.lookup(u128::MAX), 0);
        assert_eq!(t.nodes, Vec::<u32>::new());
    }

    #[test]
    fn relocation_moves_pointers_only() {
        assert_eq!(relocate(v6_node(3, 10), 100), v6_node(3, 110));
        assert_eq!(relocate(V6_TRIE, 100), V6_TRIE);
        assert_eq!(relocate(0x1234, 100), 0x1234);
    }

    /// Prefixes clustered around a few random addresses, so that they nest, touch and
    /// cut one another at every depth.
    fn arb_prefixes() -> impl Strategy<Value = Vec<(u128, u8, u32)>> {
        (
            prop::collection::vec(any::<u128>(), 1..4),
            prop::collection::vec((any::<u8>(), 0u8..=128, 0u32..128, 1u32..50), 1..60),
        )
            .prop_map(|(bases, picks)| {
                picks
                    .into_iter()
                    .map(|(pick, len, flip, word)| {
                        let base = bases[pick as usize % bases.len()];
                        let addr = base ^ (1u128 << flip);
                        (addr & !mask_low(len), len, word)
                    })
                    .collect()
            })
    }

    /// Sorted disjoint ranges with arbitrary ends, clustered around a few random addresses
    /// at every scale, with gaps; words 1... Many ends sit on the first or last address of
    /// an aligned block (low bits all zero or all one), where the builder's blocks start
    /// and end.
    fn arb_ranges() -> impl Strategy<Value = Vec<(u128, u128, u32)>> {
        (
            prop::collection::vec(any::<u128>(), 1..4),
            prop::collection::vec(
                (
                    any::<u8>(),
                    any::<u128>(),
                    0u32..128,
                    0u32..128,
                    0u8..3,
                    1u32..50,
                ),
                1..60,
            ),
        )
            .prop_map(|(bases, cuts)| {
                let mut points: Vec<u128> = cuts
                    .iter()
                    .map(|&(pick, off, shift, low, mode, _)| {
                        let p = bases[pick as usize % bases.len()].wrapping_add(off >> shift);
                        let ones = (1u128 << low) - 1;
                        match mode {
                            0 => p,
                            1 => p | ones,
                            _ => p & !ones,
                        }
                    })
                    .collect();
                points.sort_unstable();
                points.dedup();
                points
                    .windows(2)
                    .zip(&cuts)
                    .filter(|(_, c)| c.5 % 4 != 0)
                    .map(|(w, c)| (w[0], w[1] - 1, c.5))
                    .collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn lookup_agrees_with_a_range_scan_at_block_edges(
            ranges in arb_ranges(),
            probes in prop::collection::vec(any::<u128>(), 32),
            factor in 1u64..16,
            min_stride in 1u32..=8,
            max_depth in 0u32..=V6_MAX_DEPTH,
        ) {
            let params = Params { factor, min_stride, max_depth };
            let t = Tier6::build_with(&ranges, params).expect("fits");
            let mut all = probes;
            for &(a, b, _) in &ranges {
                all.extend([a.wrapping_sub(1), a, a.wrapping_add(1), b.wrapping_sub(1), b]);
                all.push(b.wrapping_add(1));
            }
            for addr in all {
                let want = ranges.iter().find(|r| r.0 <= addr && addr <= r.1).map_or(0, |r| r.2);
                prop_assert_eq!(t.lookup(addr), want, "address {:#x}", addr);
            }
        }

        #[test]
        fn lookup_agrees_with_a_naive_longest_prefix_match(
            prefixes in arb_prefixes(),
            probes in prop::collection::vec(any::<u128>(), 32),
            factor in 1u64..16,
            min_stride in 1u32..=8,
            max_depth in 0u32..=V6_MAX_DEPTH,
        ) {
            // The same prefix twice with two words: the painting keeps one, so must we.
            let mut seen = std::collections::BTreeSet::new();
            let prefixes: Vec<_> =
                prefixes.into_iter().filter(|p| seen.insert((p.0, p.1))).collect();
            check(&prefixes, Params { factor, min_stride, max_depth }, &probes);
        }
    }
}
