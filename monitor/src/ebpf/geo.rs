//! Installing location tables: the idle generation is filled beside the live one, then
//! one write of `GEO_GENERATION` switches every CPU to it (see `monitor_common::geo`).
//! Counters are indexed by slots that stay stable across installs, so nothing resets.

use std::os::fd::AsFd as _;

use aya::maps::{Array, LpmTrie, Map, MapData, lpm_trie::Key};
use memmap2::{MmapMut, MmapOptions};
use monitor_common::{
    geo::{GENERATIONS, L1_WORDS, L2_BLOCK_WORDS, V6_ROOT_WORDS},
    maps,
};

use super::{EbpfError, Monitor, map_err};
use crate::{
    dir24::{Dir24, TooManyBlocks},
    tier6::{Tier6, relocate},
};

/// Location tables ready for the kernel (built by `tables::plan`).
#[derive(Debug, Default, Clone)]
pub struct GeoTables {
    /// IPv4 ranges `(first, last, location word)`, sorted and disjoint.
    pub v4: Vec<(u32, u32, u32)>,
    /// IPv6 ranges `(first, last, location word)`, sorted and disjoint.
    pub v6: Vec<(u128, u128, u32)>,
    /// The IPv6 tiered table built from `v6` (see `tier6`).
    pub v6_table: Tier6,
    /// `(ASN slot, AS number)` of every slot in use.
    pub asns: Vec<(u32, u32)>,
}

impl GeoTables {
    /// The IPv4 ranges as CIDR prefixes (what a trie would hold).
    #[must_use]
    pub fn prefix_count_v4(&self) -> usize {
        self.v4
            .iter()
            .map(|&(a, b, _)| crate::geoip::range_to_prefixes_v4(a, b).count())
            .sum()
    }

    /// The IPv6 ranges as CIDR prefixes (what one trie would hold).
    #[must_use]
    pub fn prefix_count_v6(&self) -> usize {
        self.v6
            .iter()
            .map(|&(a, b, _)| crate::geoip::range_to_prefixes_v6(a, b).count())
            .sum()
    }

    /// ASN slots the data uses (the highest slot plus one).
    #[must_use]
    pub fn asn_slots(&self) -> u32 {
        self.asns.iter().map(|a| a.0 + 1).max().unwrap_or(0)
    }

    /// Level-2 blocks the IPv4 data needs.
    #[must_use]
    pub fn l2_blocks(&self) -> u32 {
        crate::dir24::blocks_needed(&self.v4)
    }
}

/// What an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// The generation now live.
    pub generation: u32,
    /// Level-2 blocks in use, and the room there is, per generation.
    pub l2_used: u32,
    pub l2_capacity: u32,
    /// Node words of the IPv6 tiered table in use, and the room there is, per generation.
    pub v6_words: u32,
    pub v6_capacity: u32,
    /// Prefixes in the IPv6 fallback trie.
    pub v6_trie: usize,
    /// How long it waited, before writing, for the program runs that might still read the
    /// generation it rewrote; `None` when that generation had never been live.
    pub waited: Option<std::time::Duration>,
}

/// Why an install failed. The live tables are untouched whenever it does.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Blocks(#[from] TooManyBlocks),
    #[error(
        "the IPv6 GeoIP data needs {needed} words of tiered-table nodes, but each generation \
         holds {capacity}; restart to size the tables to the new data"
    )]
    Ipv6Words { needed: usize, capacity: u32 },
    #[error(
        "the IPv6 GeoIP data leaves {needed} prefixes to the fallback trie, but each trie \
         holds {capacity}; restart to size the tables to the new data"
    )]
    Ipv6Trie { needed: usize, capacity: u32 },
    #[error(
        "the GeoIP data names {needed} ASN slots, but the ASN table holds {capacity}; restart \
         to size it to the new data"
    )]
    AsnCapacity { needed: u32, capacity: u32 },
    #[error("mapping {map} into memory failed")]
    Mmap {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "waiting for the programs that may still read the retired GeoIP tables failed (an \
         array-of-maps update, which needs CAP_BPF)"
    )]
    Barrier(#[source] std::io::Error),
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
}

/// The least time between a switch and the rewrite of the generation it retired, on top
/// of the barrier ([`barrier::ProgramBarrier`]), in case a kernel ever stops waiting
/// there: a program reads the generation number and then that generation's words within
/// one run, which takes microseconds.
const RETIRED_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// Per-generation bookkeeping kept beside the maps.
#[derive(Debug, Default)]
pub(super) struct GeoState {
    /// The live generation; `None` before the first install.
    live: Option<u32>,
    /// When the last switch retired a generation (the idle one since); `None` while the
    /// idle generation has never been live.
    switched_at: Option<std::time::Instant>,
    /// Made at the first rewrite of a retired generation.
    barrier: Option<super::barrier::ProgramBarrier>,
    /// The IPv6 keys written into each generation's fallback trie, to remove them before
    /// reuse. (The tiered table needs no such list: a fill rewrites the whole root of its
    /// generation, and node words are only reached through the root.)
    v6_keys: [Vec<([u8; 16], u8)>; GENERATIONS as usize],
}

impl Monitor {
    /// Writes `tables` into the idle generation and makes it live. On error the live
    /// generation keeps classifying as before. The idle generation is the one the previous
    /// install retired: it is not freed but kept for this, and rewritten only after every
    /// program run that could still read it has ended (the barrier), and no sooner than
    /// [`RETIRED_GRACE`] after that switch.
    pub fn install_geo(&mut self, tables: &GeoTables) -> Result<Installed, InstallError> {
        let live = self.geo.live;
        let idle = live.map_or(0, |g| (g + 1) % GENERATIONS);
        // Every capacity is checked before anything is written.
        self.check_fits(tables)?;
        let waited = match self.geo.switched_at {
            Some(at) => Some(self.wait_for_retired(at)?),
            None => None,
        };
        let v6 = &tables.v6_table;

        // IPv4: both levels through mmap, only the idle generation's words.
        let l2_capacity = self.sizes.l2_blocks;
        let mut l1 = self.mmap(maps::GEO4_L1)?;
        let mut l2 = self.mmap(maps::GEO4_L2)?;
        let l1_words = words_mut(&mut l1);
        let l2_words = words_mut(&mut l2);
        let l1_gen = &mut l1_words[(idle * L1_WORDS) as usize..((idle + 1) * L1_WORDS) as usize];
        let per_gen = (l2_capacity * L2_BLOCK_WORDS) as usize;
        let l2_gen = &mut l2_words[idle as usize * per_gen..(idle as usize + 1) * per_gen];
        let l2_used = Dir24 {
            l1: l1_gen,
            l2: l2_gen,
            base: idle * l2_capacity,
        }
        .fill(&tables.v4)?;

        // IPv6: the whole root of the idle generation, and its nodes, through mmap.
        let v6_capacity = self.sizes.geo6_words;
        let base = idle * v6_capacity;
        let mut root = self.mmap(maps::GEO6_ROOT)?;
        let mut nodes = self.mmap(maps::GEO6_NODES)?;
        let root_gen = &mut words_mut(&mut root)
            [(idle * V6_ROOT_WORDS) as usize..((idle + 1) * V6_ROOT_WORDS) as usize];
        for (to, from) in root_gen.iter_mut().zip(&v6.root) {
            *to = relocate(*from, base);
        }
        let nodes_gen = &mut words_mut(&mut nodes)[base as usize..];
        for (to, from) in nodes_gen.iter_mut().zip(&v6.nodes) {
            *to = relocate(*from, base);
        }
        // Make the words visible before the generation switch below.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);

        // ASN slots are stable: a slot, once given, keeps its number, so the live
        // generation reads the same AS numbers after this write.
        {
            let name = maps::ASNS;
            let mut asns: Array<_, u32> =
                Array::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
            for (slot, asn) in &tables.asns {
                asns.set(*slot, asn, 0)
                    .map_err(|s| map_err(name, format!("set {slot}"), s))?;
            }
        }

        // IPv6 fallback: empty the idle trie, then fill it.
        let name = if idle == 0 {
            maps::GEO6_0
        } else {
            maps::GEO6_1
        };
        let stale = std::mem::take(&mut self.geo.v6_keys[idle as usize]);
        {
            let mut trie: LpmTrie<_, [u8; 16], u32> = LpmTrie::try_from(self.map_mut(name)?)
                .map_err(|s| map_err(name, "wrong type", s))?;
            for (addr, len) in &stale {
                // A key may already be gone if an earlier install failed half-way.
                let _ = trie.remove(&Key::new(u32::from(*len), *addr));
            }
            for (addr, len, word) in &v6.trie {
                trie.insert(&Key::new(u32::from(*len), *addr), word, 0)
                    .map_err(|s| {
                        map_err(
                            name,
                            format!("insert {}/{len}", std::net::Ipv6Addr::from(*addr)),
                            s,
                        )
                    })?;
            }
        }
        self.geo.v6_keys[idle as usize] = v6.trie.iter().map(|(a, l, _)| (*a, *l)).collect();

        // The switch: one array write.
        {
            let name = maps::GEO_GENERATION;
            let mut generation: Array<_, u32> =
                Array::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
            generation
                .set(0, &idle, 0)
                .map_err(|s| map_err(name, "switch", s))?;
        }
        self.geo.live = Some(idle);
        // The first switch retires nothing: the other generation was never live.
        self.geo.switched_at = live.map(|_| std::time::Instant::now());
        Ok(Installed {
            waited,
            generation: idle,
            l2_used,
            l2_capacity,
            v6_words: u32::try_from(v6.nodes.len()).unwrap_or(u32::MAX),
            v6_capacity,
            v6_trie: v6.trie.len(),
        })
    }

    /// Waits until no program run still reads the generation that the switch at
    /// `switched_at` retired; returns how long that took.
    fn wait_for_retired(
        &mut self,
        switched_at: std::time::Instant,
    ) -> Result<std::time::Duration, InstallError> {
        let started = std::time::Instant::now();
        let barrier = match self.geo.barrier.take() {
            Some(b) => b,
            None => super::barrier::ProgramBarrier::new().map_err(InstallError::Barrier)?,
        };
        let waited = barrier.wait().map_err(InstallError::Barrier);
        self.geo.barrier = Some(barrier);
        waited?;
        std::thread::sleep(RETIRED_GRACE.saturating_sub(switched_at.elapsed()));
        Ok(started.elapsed())
    }

    /// Whether `tables` fit the maps as loaded (their sizes are fixed until a restart).
    pub fn check_fits(&self, tables: &GeoTables) -> Result<(), InstallError> {
        let l2_needed = tables.l2_blocks();
        if l2_needed > self.sizes.l2_blocks {
            return Err(TooManyBlocks {
                needed: l2_needed,
                capacity: self.sizes.l2_blocks,
            }
            .into());
        }
        let v6 = &tables.v6_table;
        if v6.nodes.len() > self.sizes.geo6_words as usize {
            return Err(InstallError::Ipv6Words {
                needed: v6.nodes.len(),
                capacity: self.sizes.geo6_words,
            });
        }
        if v6.trie.len() > self.sizes.geo6 as usize {
            return Err(InstallError::Ipv6Trie {
                needed: v6.trie.len(),
                capacity: self.sizes.geo6,
            });
        }
        let asn_needed = tables.asn_slots();
        if asn_needed > self.sizes.asn_slots {
            return Err(InstallError::AsnCapacity {
                needed: asn_needed,
                capacity: self.sizes.asn_slots,
            });
        }
        Ok(())
    }

    /// The live generation, if tables were installed.
    #[must_use]
    pub fn live_generation(&self) -> Option<u32> {
        self.geo.live
    }

    /// Maps a whole mmap-able array map for writing.
    fn mmap(&self, name: &'static str) -> Result<MmapMut, InstallError> {
        let Map::Array(data) = self.map(name)? else {
            return Err(EbpfError::MissingMap { map: name }.into());
        };
        let len = map_bytes(data);
        let fd = data.fd().as_fd();
        // SAFETY: the map is a BPF_F_MMAPABLE array of `len` bytes that lives as long as
        // `self`; the kernel programs only read it, and nothing else in this process maps it.
        unsafe { MmapOptions::new().len(len).map_mut(&fd) }
            .map_err(|source| InstallError::Mmap { map: name, source })
    }
}

/// Bytes of an array map's values (8 bytes per entry: the maps hold `u64`s).
fn map_bytes(data: &MapData) -> usize {
    let info = data.info().ok();
    info.map_or(0, |i| i.max_entries() as usize * 8)
}

/// An mmap of `u64` entries as the flat `u32` word array the kernel indexes.
fn words_mut(map: &mut MmapMut) -> &mut [u32] {
    let bytes: &mut [u8] = map;
    // SAFETY: an mmap is page-aligned, so 4-byte alignment holds; any bit pattern is a u32.
    let (head, words, tail) = unsafe { bytes.align_to_mut::<u32>() };
    debug_assert!(head.is_empty() && tail.is_empty());
    words
}
