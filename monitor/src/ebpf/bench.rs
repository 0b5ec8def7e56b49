//! The benchmark's access to the kernel object: its workload, the LPM-trie build of the
//! The benchmark's access to the kernel object: its workload, the LPM-trie builds of the
//! IPv4 and IPv6 lookups, timed `BPF_PROG_TEST_RUN`s, and the live-frames generator of the
//! veth benchmark. Only the `exfilmon-bench` tools and their tests use this.

use std::{
    collections::{HashMap, hash_map::Entry},
    time::Duration,
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, LpmTrie, lpm_trie::Key},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use monitor_common::{
    bench::{BenchPacket, HASH6_TIERS, Hash6Key},
    geo::V6_TRIE,
    maps, programs,
};

use super::{EbpfError, Monitor, map_err};
use crate::geoip::{range_to_prefixes_v4, range_to_prefixes_v6};

/// Sizes of the benchmark's maps.
#[derive(Clone, Copy, Debug)]
pub struct BenchSizes {
    /// Packets in the workload.
    pub workload: u32,
    /// Prefixes of the IPv4 LPM trie (the LPM build).
    pub trie4: u32,
    /// Prefixes of the IPv6 LPM trie (the LPM build).
    pub trie6: u32,
    /// Entries of the IPv6 tiered hash and prefixes of its fallback trie ([`Hash6Plan`]).
    pub hash6: u32,
    pub hash6_trie: u32,
}

/// The benchmark's programs, loaded beside the product's when [`BenchSizes`] are given.
pub(super) const PROGRAMS: [&str; 13] = [
    programs::BENCH,
    programs::BENCH_LPM,
    programs::BENCH_NOFLOW,
    programs::BENCH_LOOKUP,
    programs::BENCH_LOOKUP_LPM,
    programs::BENCH_HASH6,
    programs::BENCH_LOOKUP_HASH6,
    programs::BENCH_COPY,
    programs::BENCH_PASS,
    programs::BENCH_EVENTS,
    programs::LIVE_GEN,
    programs::LIVE_TX,
    programs::LIVE_PASS,
];

impl BenchSizes {
    /// Sizes the benchmark's maps (each has one entry unless sized here).
    pub(super) fn size_maps(&self, loader: &mut aya::EbpfLoader<'_>) {
        loader
            .map_max_entries(maps::BENCH_WORKLOAD, self.workload.max(1))
            .map_max_entries(maps::BENCH_TRIE4, self.trie4.max(1))
            .map_max_entries(maps::BENCH_TRIE6, self.trie6.max(1))
            .map_max_entries(maps::BENCH_HASH6, self.hash6.max(1))
            .map_max_entries(maps::BENCH_HASH6_TRIE, self.hash6_trie.max(1));
    }
}

/// The IPv6 tiered hash of the benchmark (`monitor_common::bench::HASH6_TIERS`), built
/// from the same ranges as the product's tiered table.
#[derive(Debug, Default)]
pub struct Hash6Plan {
    /// One word per key of a tier.
    pub entries: HashMap<Hash6Key, u32>,
    /// The prefixes longer than /64: `(length, address, word)`.
    pub trie: Vec<(u8, [u8; 16], u32)>,
}

impl Hash6Plan {
    /// Expands every prefix of `ranges` (sorted and disjoint, as the tables hold them)
    /// into its tier. Fails, naming the range, if they are not.
    pub fn build(ranges: &[(u128, u128, u32)]) -> Result<Self, String> {
        if let Some(w) = ranges.windows(2).find(|w| w[1].0 <= w[0].1) {
            let at = |a: u128| std::net::Ipv6Addr::from(a);
            return Err(format!(
                "{}-{} overlaps or follows {}-{}",
                at(w[1].0),
                at(w[1].1),
                at(w[0].0),
                at(w[0].1)
            ));
        }
        let mut plan = Self::default();
        for &(first, last, word) in ranges {
            for net in range_to_prefixes_v6(first, last) {
                let len = u32::from(net.prefix_len());
                let bits = u128::from(net.network());
                let hi = (bits >> 64) as u64;
                if len > 64 {
                    plan.trie
                        .push((net.prefix_len(), net.network().octets(), word));
                    plan.claim(Hash6Key::new(hi, 64), V6_TRIE, &net)?;
                    continue;
                }
                let tier = HASH6_TIERS
                    .iter()
                    .copied()
                    .filter(|&t| t >= len)
                    .min()
                    .ok_or_else(|| format!("{net}: no tier holds it"))?;
                for i in 0..1u64 << (tier - len) {
                    let prefix = hi | (i << (64 - tier));
                    plan.claim(Hash6Key::new(prefix, tier), word, &net)?;
                }
            }
        }
        Ok(plan)
    }

    /// Sets `key` to `word`. Disjoint prefixes claim a key once (but for the marker of a
    /// /64 that holds several longer prefixes); a second claim is a bug here.
    fn claim(
        &mut self,
        key: Hash6Key,
        word: u32,
        net: &impl std::fmt::Display,
    ) -> Result<(), String> {
        match self.entries.entry(key) {
            Entry::Vacant(v) => {
                v.insert(word);
                Ok(())
            }
            Entry::Occupied(o) if word == V6_TRIE && *o.get() == V6_TRIE => Ok(()),
            Entry::Occupied(_) => Err(format!("{net}: its key is claimed twice")),
        }
    }
}

impl Monitor {
    /// Writes the workload the bench programs rewrite their frames from.
    pub fn write_bench_workload(&mut self, packets: &[BenchPacket]) -> Result<(), EbpfError> {
        let name = maps::BENCH_WORKLOAD;
        let mut array: Array<_, BenchPacket> =
            Array::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
        for (i, p) in packets.iter().enumerate() {
            let i = u32::try_from(i).map_err(|_| EbpfError::TooLarge { map: name })?;
            array
                .set(i, p, 0)
                .map_err(|s| map_err(name, format!("set {i}"), s))?;
        }
        Ok(())
    }

    /// The whole workload map, in the order the bench programs take it (they wrap around
    /// at its end, so entries never written are sent too).
    pub fn read_bench_workload(&self) -> Result<Vec<BenchPacket>, EbpfError> {
        let name = maps::BENCH_WORKLOAD;
        let array: Array<_, BenchPacket> =
            Array::try_from(self.map(name)?).map_err(|s| map_err(name, "wrong type", s))?;
        array
            .iter()
            .map(|p| p.map_err(|s| map_err(name, "read", s)))
            .collect()
    }

    /// Fills the IPv4 LPM trie of the LPM build with the same ranges as the DIR-24-8
    /// table. Returns the number of prefixes.
    pub fn write_bench_trie4(&mut self, ranges: &[(u32, u32, u32)]) -> Result<usize, EbpfError> {
        let prefixes = ranges.iter().flat_map(|&(first, last, word)| {
            range_to_prefixes_v4(first, last)
                .map(move |n| (n.prefix_len(), n.network().octets(), word, n.to_string()))
        });
        self.fill_trie(maps::BENCH_TRIE4, prefixes)
    }

    /// Fills the IPv6 LPM trie of the LPM build with every prefix of `ranges`, as the
    /// product's IPv6 table was before the tiered one. Returns the number of prefixes.
    pub fn write_bench_trie6(&mut self, ranges: &[(u128, u128, u32)]) -> Result<usize, EbpfError> {
        let prefixes = ranges.iter().flat_map(|&(first, last, word)| {
            range_to_prefixes_v6(first, last)
                .map(move |n| (n.prefix_len(), n.network().octets(), word, n.to_string()))
        });
        self.fill_trie(maps::BENCH_TRIE6, prefixes)
    }

    /// Fills the IPv6 tiered hash of the benchmark and its fallback trie.
    pub fn write_bench_hash6(&mut self, plan: &Hash6Plan) -> Result<(), EbpfError> {
        let name = maps::BENCH_HASH6;
        let mut hash: BpfHashMap<_, Hash6Key, u32> = BpfHashMap::try_from(self.map_mut(name)?)
            .map_err(|s| map_err(name, "wrong type", s))?;
        for (key, word) in &plan.entries {
            hash.insert(key, word, 0)
                .map_err(|s| map_err(name, format!("insert {key:?}"), s))?;
        }
        let prefixes = plan.trie.iter().map(|&(len, addr, word)| {
            (
                len,
                addr,
                word,
                format!("{}/{len}", std::net::Ipv6Addr::from(addr)),
            )
        });
        self.fill_trie(maps::BENCH_HASH6_TRIE, prefixes)?;
        Ok(())
    }

    /// Inserts `(prefix length, address, word, text)` prefixes into the trie `name`.
    fn fill_trie<const N: usize>(
        &mut self,
        name: &'static str,
        prefixes: impl Iterator<Item = (u8, [u8; N], u32, String)>,
    ) -> Result<usize, EbpfError> {
        let mut trie: LpmTrie<_, [u8; N], u32> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
        let mut n = 0;
        for (len, addr, word, text) in prefixes {
            trie.insert(&Key::new(u32::from(len), addr), &word, 0)
                .map_err(|s| map_err(name, format!("insert {text}"), s))?;
            n += 1;
        }
        Ok(n)
    }

    /// Runs `program` `repeat` times over `frame`; the kernel's mean time per run.
    pub fn bench_run(
        &self,
        program: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<Duration, EbpfError> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        };
        match self.ebpf.program(program) {
            Some(aya::programs::Program::Xdp(p)) => p
                .test_run(opts)
                .map(|r| r.duration)
                .map_err(|source| EbpfError::TestRun { program, source }),
            _ => Err(EbpfError::MissingMap { map: program }),
        }
    }
}

/// `struct xdp_md`, the context a live-frames test run takes.
#[repr(C)]
#[derive(Clone, Copy)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

impl Monitor {
    /// Sends `count` copies of `frame` out of interface `ifindex` with a live generator
    /// (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, `batch` frames per kernel
    /// batch): `programs::LIVE_GEN` rewrites each from the workload, `programs::LIVE_TX`
    /// sends it as it is. The index is resolved in the calling thread's network namespace.
    /// Returns the kernel's time for the run.
    pub fn live_send(
        &self,
        program: &'static str,
        frame: &[u8],
        ifindex: u32,
        count: u32,
        batch: u32,
    ) -> Result<Duration, EbpfError> {
        let md = XdpMd {
            data: 0,
            data_end: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            data_meta: 0,
            ingress_ifindex: ifindex,
            rx_queue_index: 0,
            egress_ifindex: 0,
        };
        // SAFETY: `XdpMd` is `#[repr(C)]` plain u32s without padding.
        let ctx = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(&md).cast::<u8>(), size_of::<XdpMd>())
        };
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(ctx),
            repeat: count,
            attrs: TestRunAttrs::new().xdp_live_frames(batch),
            ..TestRunOptions::new()
        };
        self.xdp_program(program)?
            .test_run(opts)
            .map(|r| r.duration)
            .map_err(|source| EbpfError::TestRun { program, source })
    }

    /// Attaches XDP program `program` to `interface` (in the calling thread's network
    /// namespace) in driver mode; the id detaches it again.
    pub fn attach_xdp_native(
        &mut self,
        program: &'static str,
        interface: &str,
    ) -> Result<XdpLinkId, EbpfError> {
        let ifname = std::ffi::CString::new(interface).map_err(|_| EbpfError::InterfaceName {
            interface: interface.to_owned(),
        })?;
        self.xdp_program_mut(program)?
            .attach(ifname.as_c_str(), XdpMode::Driver)
            .map_err(|source| EbpfError::Attach {
                program,
                interface: interface.to_owned(),
                source,
            })
    }

    /// Detaches what [`Monitor::attach_xdp_native`] attached.
    pub fn detach_xdp(&mut self, program: &'static str, link: XdpLinkId) -> Result<(), EbpfError> {
        self.xdp_program_mut(program)?
            .detach(link)
            .map_err(|source| EbpfError::Attach {
                program,
                interface: "(detach)".to_owned(),
                source,
            })
    }

    /// The kernel's run count and total run time of `program` (both only advance while
    /// BPF run-time statistics are enabled).
    pub fn program_stats(&self, program: &'static str) -> Result<(u64, Duration), EbpfError> {
        let info = self
            .xdp_program(program)?
            .info()
            .map_err(|source| EbpfError::TestRun { program, source })?;
        Ok((info.run_count(), info.run_time()))
    }

    fn xdp_program(&self, program: &'static str) -> Result<&Xdp, EbpfError> {
        match self.ebpf.program(program) {
            Some(aya::programs::Program::Xdp(p)) => Ok(p),
            _ => Err(EbpfError::MissingMap { map: program }),
        }
    }

    fn xdp_program_mut(&mut self, program: &'static str) -> Result<&mut Xdp, EbpfError> {
        match self.ebpf.program_mut(program) {
            Some(aya::programs::Program::Xdp(p)) => Ok(p),
            _ => Err(EbpfError::MissingMap { map: program }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What the kernel's `hash6` does, over the plan: tiers longest first, then the trie.
    fn probe(plan: &Hash6Plan, addr: u128) -> u32 {
        let hi = (addr >> 64) as u64;
        for len in HASH6_TIERS {
            match plan.entries.get(&Hash6Key::new(hi, len)) {
                Some(&V6_TRIE) => {
                    return plan
                        .trie
                        .iter()
                        .filter(|(l, net, _)| {
                            let shift = 128 - u32::from(*l);
                            (u128::from_be_bytes(*net) >> shift) == (addr >> shift)
                        })
                        .max_by_key(|(l, ..)| *l)
                        .map_or(0, |(.., w)| *w);
                }
                Some(&w) => return w,
                None => {}
            }
        }
        0
    }

    fn naive(ranges: &[(u128, u128, u32)], addr: u128) -> u32 {
        ranges
            .iter()
            .find(|(f, l, _)| (*f..=*l).contains(&addr))
            .map_or(0, |r| r.2)
    }

    /// Disjoint ranges from sorted cut points, every other gap left empty; prefixes from
    /// about /2 to /128 happen.
    fn ranges() -> impl Strategy<Value = Vec<(u128, u128, u32)>> {
        let base = 0x2001_0db8u128 << 96;
        prop::collection::vec((0u32..116, any::<u64>()), 1..12).prop_map(move |cuts| {
            let mut points: Vec<u128> = cuts
                .iter()
                .map(|&(shift, r)| base + (u128::from(r) << (shift % 64)) + (1u128 << shift))
                .collect();
            points.sort_unstable();
            points.dedup();
            points
                .windows(2)
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(i, w)| (w[0], w[1] - 1, u32::try_from(i).unwrap_or(0) + 1))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn the_tiered_hash_finds_what_the_ranges_say(
            ranges in ranges(),
            picks in prop::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 16),
        ) {
            prop_assume!(!ranges.is_empty());
            let plan = Hash6Plan::build(&ranges).expect("disjoint");
            // Range edges, a step past them, and random points inside.
            let mut addrs = Vec::new();
            for &(f, l, _) in &ranges {
                addrs.extend([f, l, f.wrapping_sub(1), l.wrapping_add(1)]);
            }
            for (i, r) in picks {
                let (f, l, _) = ranges[i.index(ranges.len())];
                addrs.push(f + u128::from(r) % (l - f + 1));
            }
            for a in addrs {
                prop_assert_eq!(probe(&plan, a), naive(&ranges, a), "{:x}", a);
            }
        }
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let a = 0x2001_0db8u128 << 96;
        // A /48 and a /64 inside it: different tiers, so only the ranges can tell.
        let err = Hash6Plan::build(&[
            (a, a + (1 << 80) - 1, 1),
            (a + (1 << 64), a + (2 << 64) - 1, 2),
        ])
        .expect_err("overlap");
        assert!(err.contains("overlaps"), "{err}");
    }
}
