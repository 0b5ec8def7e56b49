//! The benchmark's access to the kernel object: its workload, the LPM-trie build of the
//! The benchmark's access to the kernel object: its workload, the LPM-trie builds of the
//! IPv4 and IPv6 lookups, timed `BPF_PROG_TEST_RUN`s, and the live-frames generator of the
//! veth benchmark. Only the `exfilmon-bench` tools and their tests use this.

use std::time::Duration;

use aya::{
    maps::{Array, LpmTrie, lpm_trie::Key},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
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
