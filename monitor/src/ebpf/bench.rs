//! The benchmark's access to the kernel object: its workload, the LPM-trie build of the
//! IPv4 and IPv6 lookups, and timed `BPF_PROG_TEST_RUN`s. Only the `exfilmon-bench` tool uses this.

use std::time::Duration;

use aya::{
    maps::{Array, LpmTrie, lpm_trie::Key},
    programs::{TestRun as _, TestRunOptions},
};
use monitor_common::{bench::BenchPacket, maps};

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

    /// Fills the IPv4 LPM trie of the LPM build with the same ranges as the DIR-24-8
    /// table. Returns the number of prefixes.
    pub fn write_bench_trie4(&mut self, ranges: &[(u32, u32, u32)]) -> Result<usize, EbpfError> {
        let name = maps::BENCH_TRIE4;
        let mut trie: LpmTrie<_, [u8; 4], u32> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
        let mut n = 0;
        for &(first, last, word) in ranges {
            for net in range_to_prefixes_v4(first, last) {
                trie.insert(
                    &Key::new(u32::from(net.prefix_len()), net.network().octets()),
                    &word,
                    0,
                )
                .map_err(|s| map_err(name, format!("insert {net}"), s))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Fills the IPv6 LPM trie of the LPM build with every prefix of `ranges`, as the
    /// product's IPv6 table was before the tiered one. Returns the number of prefixes.
    pub fn write_bench_trie6(&mut self, ranges: &[(u128, u128, u32)]) -> Result<usize, EbpfError> {
        let name = maps::BENCH_TRIE6;
        let mut trie: LpmTrie<_, [u8; 16], u32> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
        let mut n = 0;
        for &(first, last, word) in ranges {
            for net in range_to_prefixes_v6(first, last) {
                trie.insert(
                    &Key::new(u32::from(net.prefix_len()), net.network().octets()),
                    &word,
                    0,
                )
                .map_err(|s| map_err(name, format!("insert {net}"), s))?;
                n += 1;
            }
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
