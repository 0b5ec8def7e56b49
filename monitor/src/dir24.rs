//! The IPv4 DIR-24-8 location table, built in userspace (the kernel's lookup is
//! `monitor-ebpf/src/classify.rs`; the layout is `monitor_common::geo`).
//!
//! Level 1 has one location word per /24. A /24 that is split between locations gets a
//! 256-word level-2 block, and its level-1 word becomes `GEO_L2 | block`. Blocks are
//! numbered absolutely across both generations, so the kernel needs no generation to find
//! one: generation `g` owns blocks `g * capacity .. (g + 1) * capacity`.

use monitor_common::geo::{GEO_L2, L1_WORDS, L2_BLOCK_WORDS};

/// The level-2 area of a generation is too small for the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the IPv4 GeoIP data splits {needed} /24 networks between locations, but the level-2 \
     table holds {capacity}; restart to size it to the new data"
)]
pub struct TooManyBlocks {
    pub needed: u32,
    pub capacity: u32,
}

/// Number of level-2 blocks that `ranges` (sorted, disjoint, adjacent equal words joined)
/// need: one per /24 that a range boundary cuts.
#[must_use]
pub fn blocks_needed(ranges: &[(u32, u32, u32)]) -> u32 {
    let mut count = 0u32;
    let mut last_block: Option<u32> = None;
    let mut mark = |k: u32| {
        if last_block != Some(k) {
            last_block = Some(k);
            count += 1;
        }
    };
    for &(first, last, _) in ranges {
        if first & 0xff != 0 {
            mark(first >> 8);
        }
        if last & 0xff != 0xff {
            mark(last >> 8);
        }
    }
    count
}

/// One generation's share of the two maps, as flat word slices.
pub struct Dir24<'a> {
    /// `L1_WORDS` level-1 words.
    pub l1: &'a mut [u32],
    /// `capacity * L2_BLOCK_WORDS` level-2 words.
    pub l2: &'a mut [u32],
    /// Absolute number of the first block of `l2`.
    pub base: u32,
}

impl Dir24<'_> {
    /// Blocks `l2` has room for.
    #[must_use]
    pub fn capacity(&self) -> u32 {
        (self.l2.len() / L2_BLOCK_WORDS as usize) as u32
    }

    /// Replaces the whole table with `ranges` (sorted, disjoint; addresses outside every
    /// range get word 0, "unknown"). Returns the number of level-2 blocks used.
    ///
    /// # Errors
    ///
    /// [`TooManyBlocks`] when the data needs more level-2 blocks than there are; nothing is
    /// written then.
    ///
    /// # Panics
    ///
    /// If `l1` is not `L1_WORDS` long (a caller bug).
    pub fn fill(&mut self, ranges: &[(u32, u32, u32)]) -> Result<u32, TooManyBlocks> {
        assert_eq!(
            self.l1.len(),
            L1_WORDS as usize,
            "level 1 is one word per /24"
        );
        let needed = blocks_needed(ranges);
        let capacity = self.capacity();
        if needed > capacity {
            return Err(TooManyBlocks { needed, capacity });
        }
        self.l1.fill(0);
        let mut used = 0u32;
        for &(first, last, word) in ranges {
            debug_assert_eq!(
                word & GEO_L2,
                0,
                "location words never have the level-2 bit"
            );
            let word = word & !GEO_L2;
            let (k_first, k_last) = (first >> 8, last >> 8);
            // Whole /24s are one level-1 write each; the cut ones at either end go to level 2.
            let full_from = k_first + u32::from(first & 0xff != 0);
            let full_to = if last & 0xff == 0xff {
                Some(k_last)
            } else {
                k_last.checked_sub(1)
            };
            if first & 0xff != 0 || (k_first == k_last && last & 0xff != 0xff) {
                self.paint(&mut used, k_first, first, last.min(first | 0xff), word);
            }
            if let Some(to) = full_to
                && full_from <= to
            {
                self.l1[full_from as usize..=to as usize].fill(word);
            }
            if last & 0xff != 0xff && k_last != k_first {
                self.paint(&mut used, k_last, last & !0xff, last, word);
            }
        }
        Ok(used)
    }

    /// Writes `word` for addresses `lo..=hi` of /24 `k` at level 2.
    fn paint(&mut self, used: &mut u32, k: u32, lo: u32, hi: u32, word: u32) {
        let current = self.l1[k as usize];
        let block = if current & GEO_L2 == 0 {
            let block = *used;
            *used += 1;
            self.block_mut(block).fill(current);
            self.l1[k as usize] = GEO_L2 | (self.base + block);
            block
        } else {
            (current & !GEO_L2) - self.base
        };
        self.block_mut(block)[(lo & 0xff) as usize..=(hi & 0xff) as usize].fill(word);
    }

    fn block_mut(&mut self, block: u32) -> &mut [u32] {
        let start = (block * L2_BLOCK_WORDS) as usize;
        &mut self.l2[start..start + L2_BLOCK_WORDS as usize]
    }

    /// The word of `addr`, exactly as the kernel computes it.
    #[must_use]
    pub fn lookup(&self, addr: u32) -> u32 {
        let word = self.l1[(addr >> 8) as usize];
        if word & GEO_L2 == 0 {
            word
        } else {
            let block = (word & !GEO_L2) - self.base;
            self.l2[(block * L2_BLOCK_WORDS + (addr & 0xff)) as usize]
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn naive(ranges: &[(u32, u32, u32)], addr: u32) -> u32 {
        ranges
            .iter()
            .find(|r| r.0 <= addr && addr <= r.1)
            .map_or(0, |r| r.2)
    }

    fn build(ranges: &[(u32, u32, u32)], capacity: u32, base: u32) -> (Vec<u32>, Vec<u32>) {
        let mut l1 = vec![7u32; L1_WORDS as usize]; // stale data must be overwritten
        let mut l2 = vec![9u32; (capacity * L2_BLOCK_WORDS) as usize];
        let used = Dir24 {
            l1: &mut l1,
            l2: &mut l2,
            base,
        }
        .fill(ranges)
        .expect("enough blocks");
        assert_eq!(used, blocks_needed(ranges));
        (l1, l2)
    }

    fn check(ranges: &[(u32, u32, u32)], probes: impl IntoIterator<Item = u32>) {
        let needed = blocks_needed(ranges);
        let (mut l1, mut l2) = build(ranges, needed, 1000);
        let table = Dir24 {
            l1: &mut l1,
            l2: &mut l2,
            base: 1000,
        };
        for addr in probes {
            assert_eq!(
                table.lookup(addr),
                naive(ranges, addr),
                "address {addr:#010x}"
            );
        }
    }

    fn edges(ranges: &[(u32, u32, u32)]) -> Vec<u32> {
        let mut v = vec![0, u32::MAX];
        for &(a, b, _) in ranges {
            v.extend([
                a.wrapping_sub(1),
                a,
                a.wrapping_add(1),
                b.wrapping_sub(1),
                b,
            ]);
            v.push(b.wrapping_add(1));
        }
        v
    }

    #[test]
    fn small_ranges_inside_one_slash24_share_a_block() {
        let ranges = [
            (0xc000_0200, 0xc000_027f, 1),
            (0xc000_0280, 0xc000_0280, 2),
            (0xc000_02f0, 0xc000_02ff, 3),
        ];
        assert_eq!(blocks_needed(&ranges), 1);
        check(&ranges, 0xc000_0100..=0xc000_0400);
    }

    #[test]
    fn whole_space_and_its_ends() {
        check(&[(0, u32::MAX, 5)], [0, 1, 255, 256, u32::MAX]);
        let ranges = [(0, 0, 1), (u32::MAX, u32::MAX, 2)];
        assert_eq!(blocks_needed(&ranges), 2);
        check(&ranges, [0, 1, 2, 255, 256, u32::MAX - 1, u32::MAX]);
    }

    #[test]
    fn range_spanning_many_slash24s_with_cut_ends() {
        let ranges = [(0x0a00_0080, 0x0a05_0010, 3), (0x0a05_0011, 0x0a05_00ff, 4)];
        assert_eq!(blocks_needed(&ranges), 2);
        check(&ranges, edges(&ranges));
        check(
            &ranges,
            (0x0a00_0000..0x0a00_0200).chain(0x0a04_ff00..0x0a05_0200),
        );
    }

    #[test]
    fn too_few_blocks_is_an_error_naming_both_numbers() {
        let ranges = [(0x0a00_0001, 0x0a00_0001, 1), (0x0b00_0001, 0x0b00_0001, 1)];
        let mut l1 = vec![0u32; L1_WORDS as usize];
        let mut l2 = vec![0u32; L2_BLOCK_WORDS as usize];
        let err = Dir24 {
            l1: &mut l1,
            l2: &mut l2,
            base: 0,
        }
        .fill(&ranges)
        .expect_err("two blocks needed, one available");
        assert_eq!(
            err,
            TooManyBlocks {
                needed: 2,
                capacity: 1
            }
        );
        assert!(err.to_string().contains("splits 2 /24"), "{err}");
    }

    /// Sorted disjoint ranges with words 1..: random cut points, random gaps.
    fn arb_ranges() -> impl Strategy<Value = Vec<(u32, u32, u32)>> {
        prop::collection::vec((any::<u32>(), 0u32..4, 1u32..1000, any::<bool>()), 1..40).prop_map(
            |cuts| {
                let mut points: Vec<u32> = cuts.iter().map(|c| c.0 >> (c.1 * 8)).collect();
                points.sort_unstable();
                points.dedup();
                let mut ranges = Vec::new();
                for (i, w) in points.windows(2).enumerate() {
                    let (_, _, word, keep) = cuts[i];
                    if keep {
                        ranges.push((w[0], w[1] - 1, word));
                    }
                }
                ranges
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn lookup_agrees_with_a_naive_range_scan(ranges in arb_ranges(), probes in prop::collection::vec(any::<u32>(), 64)) {
            let mut all = edges(&ranges);
            all.extend(probes);
            check(&ranges, all);
        }
    }
}
