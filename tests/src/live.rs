//! Live traffic on a [`LiveNet`]: the workloads, the GeoIP data and config they are
//! classified with, and the generator that sends them with XDP live frames (or, where the
//! kernel refuses live frames, from an `AF_PACKET` socket).
//!
//! Every address is a documentation address. Inside: `192.0.2.0/24` (one group,
//! `subscribers`). Outside: `198.51.100.0/24` and `203.0.113.0/24`, cut into 32 /28s that a
//! temporary GeoIP CSV places in 32 countries; [`DENIED`] of them are violations.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use monitor::ebpf::Monitor;
use monitor_common::{bench::BenchPacket, programs};
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};

use crate::{
    cpu,
    livenet::{LiveNet, MON_IF},
    packet::{UDP, eth_v4, ipv4, set_ipv4_checksum, udp},
    peers::{FLUSH_DST, FLUSH_PORT, FLUSH_SRC},
    pktgen::PacketSocket,
};

/// The countries of the 32 outside /28s, in address order (198.51.100.0/28 first).
pub const COUNTRIES: [&str; 32] = [
    "US", "DE", "FR", "GB", "JP", "BR", "IN", "SG", "NL", "SE", "CN", "RU", "AU", "CA", "ZA", "KR",
    "IT", "ES", "MX", "AR", "CH", "NO", "FI", "DK", "PL", "TR", "IR", "KP", "BY", "TH", "VN", "KE",
];
/// The countries the group may not reach: their flows are violations (tracked flows).
pub const DENIED: [&str; 5] = ["CN", "RU", "IR", "KP", "BY"];
/// The inside network.
pub const INSIDE: (Ipv4Addr, u8) = (Ipv4Addr::new(192, 0, 2, 0), 24);

/// The source of the fixed workloads' one flow.
pub const FIXED_SRC: (Ipv4Addr, u16) = (Ipv4Addr::new(192, 0, 2, 10), 40_000);
/// The destination of the fixed violation flow (a phone calling home to a denied
/// country): 203.0.113.160/28 is the 27th /28, `IR`.
pub const FIXED_DST_DENIED: (Ipv4Addr, u16) = (Ipv4Addr::new(203, 0, 113, 170), 443);
/// The destination of the fixed allowed flow: 198.51.100.0/28, `US`.
pub const FIXED_DST_ALLOWED: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 51, 100, 5), 443);
/// UDP payload of every frame: 64-byte frames, 50 layer-3 bytes.
const PAYLOAD: usize = 22;
/// Layer-3 bytes of every frame the generator sends (IPv4 20 + UDP 8 + payload 22).
pub const FRAME_L3_BYTES: u64 = 50;

/// The GeoIP CSV: the outside /28s and their countries.
#[must_use]
pub fn geo_csv() -> String {
    let mut text = String::new();
    for (i, cc) in COUNTRIES.iter().enumerate() {
        let base = if i < 16 {
            Ipv4Addr::new(198, 51, 100, 0)
        } else {
            Ipv4Addr::new(203, 0, 113, 0)
        };
        let first = u32::from(base) + 16 * (i as u32 % 16);
        let _ = writeln!(
            text,
            "{},{},{cc}",
            Ipv4Addr::from(first),
            Ipv4Addr::from(first + 15)
        );
    }
    text
}

/// Writes the GeoIP CSV and an exfilmon config into `dir`; returns the config's path.
/// With `attach = Some((netns, port))` the config attaches XDP (native) to `mon0` in that
/// namespace and serves metrics on 127.0.0.1:`port`; without, it attaches nothing.
pub fn write_config(dir: &Path, attach: Option<(&str, u16)>) -> Result<PathBuf> {
    std::fs::write(dir.join("geoip.csv"), geo_csv()).context("writing the GeoIP CSV")?;
    let allow: Vec<String> = COUNTRIES
        .iter()
        .filter(|c| !DENIED.contains(c))
        .map(|c| format!("\"{c}\""))
        .collect();
    let (net, len) = INSIDE;
    // The group is the home network as two halves: on this branch, a group network equal
    // to a home network loses to it in the kernel table (the home network's "ungrouped"
    // wins the tie), while `exfilmon lookup` picks the group.
    let mut text = format!(
        "[home]\nnetworks = [\"{net}/{len}\"]\ncountries = [\"IN\"]\n\
         [[group]]\nname = \"subscribers\"\n\
         networks = [\"192.0.2.0/25\", \"192.0.2.128/25\"]\nallow = [{}]\n\
         [geoip]\nsources = [{{ format = \"csv\", path = \"geoip.csv\" }}]\n\
         [flows]\nmax_entries = 262144\n",
        allow.join(", ")
    );
    if let Some((netns, port)) = attach {
        let _ = write!(
            text,
            "[[interface]]\nname = \"{MON_IF}\"\nhook = \"xdp\"\nmode = \"native\"\nnetns = \"{netns}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n\
             [events]\nlog = \"{}\"\n\
             [detections]\nstate_dir = \"{}\"\n\
             [pin]\ndir = \"{}\"\n",
            dir.join("events.jsonl").display(),
            dir.join("state").display(),
            crate::daemon::test_pin_dir().display()
        );
    }
    let path = dir.join("exfilmon.toml");
    std::fs::write(&path, text).context("writing the exfilmon config")?;
    Ok(path)
}

fn frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    eth_v4(&ipv4(src.0, dst.0, UDP, &udp(src.1, dst.1, &[0; PAYLOAD])))
}

/// A fixed workload's frame (one 5-tuple, sent as it is by `programs::LIVE_TX`): to a
/// denied country (a violation: exfilmon updates its flow entry for every packet) or to
/// an allowed one (counted only).
#[must_use]
pub fn fixed_frame(violation: bool) -> Vec<u8> {
    let dst = if violation {
        FIXED_DST_DENIED
    } else {
        FIXED_DST_ALLOWED
    };
    frame(FIXED_SRC, dst)
}

/// The template the random workload's packets are written into (by `programs::LIVE_GEN`).
#[must_use]
pub fn template_frame() -> Vec<u8> {
    frame(
        (Ipv4Addr::new(192, 0, 2, 1), 1024),
        (Ipv4Addr::new(198, 51, 100, 1), 443),
    )
}

/// The flush flow's frame (see [`crate::peers`]).
#[must_use]
pub fn flush_frame() -> Vec<u8> {
    frame((FLUSH_SRC, FLUSH_PORT), (FLUSH_DST, FLUSH_PORT))
}

/// `n` packets of `flows` random flows (in turn): sources across 192.0.2.1–253, source
/// ports across 1024–65535, destinations across both outside /24s (every country),
/// destination port 443.
#[must_use]
pub fn random_workload(n: u32, flows: u32, seed: u64) -> Vec<BenchPacket> {
    let mut rng = StdRng::seed_from_u64(seed);
    let table: Vec<BenchPacket> = (0..flows.max(1))
        .map(|_| {
            let src = Ipv4Addr::new(192, 0, 2, rng.random_range(1..=253));
            let dst = if rng.random_bool(0.5) {
                Ipv4Addr::new(198, 51, 100, rng.random_range(1..=253))
            } else {
                Ipv4Addr::new(203, 0, 113, rng.random_range(1..=254))
            };
            BenchPacket::v4(src.into(), dst.into(), rng.random_range(1024u16..=65535))
        })
        .collect();
    (0..n as usize).map(|i| table[i % table.len()]).collect()
}

/// What one generator run sent and what it cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub packets: u64,
    /// Wall time from the first send to the last return.
    pub wall: Duration,
    /// CPU time of the generator's thread. This kernel charges softirqs to the task they
    /// interrupt, and the live-frames run delivers its batches to the veth peer from its
    /// own `local_bh_enable`, so this holds the whole receive path too: the peer veth's
    /// NAPI poll, its XDP program, the skb, the stack up to the route lookup, and the
    /// copies into `AF_PACKET` sockets.
    pub thread_cpu: Duration,
    /// CPU time of `ksoftirqd/N` of the generator's CPU over the run: the softirq work the
    /// kernel deferred to it instead (zero when not pinned).
    pub ksoftirqd_cpu: Duration,
}

impl Sent {
    /// Packet-path CPU: the generator's thread and its CPU's `ksoftirqd`.
    #[must_use]
    pub fn path_cpu(&self) -> Duration {
        self.thread_cpu + self.ksoftirqd_cpu
    }
}

/// Set once the kernel refused XDP live frames: every generator then sends from an
/// `AF_PACKET` socket.
static LIVE_FRAMES_REFUSED: AtomicBool = AtomicBool::new(false);

/// How the generators send: `"xdp-live-frames"`, or `"af-packet"` once the kernel refused
/// live frames (for the reports).
#[must_use]
pub fn engine() -> &'static str {
    if LIVE_FRAMES_REFUSED.load(Ordering::Relaxed) {
        "af-packet"
    } else {
        "xdp-live-frames"
    }
}

/// The live generator: a loaded [`Monitor`] with the bench programs, sending out of `gen0`.
///
/// It sends with XDP live frames (`BPF_PROG_TEST_RUN` in live-frames mode), the fastest
/// way in. Some kernels refuse that mode outright (EPERM, even to root: 6.18.44-fc-v1300,
/// the kernel of this project's VMs, does); then it sends the same frames, rewritten the
/// same way from the same workload, from an `AF_PACKET` socket on `gen0`, and says so once.
pub struct Generator<'a> {
    monitor: &'a Monitor,
    net: &'a LiveNet,
    ifindex: u32,
    /// The CPU the sending thread is pinned to, if any.
    cpu: Option<usize>,
    /// The template and its rewrites from the workload map, made once the `AF_PACKET`
    /// engine needs them, and the next one to send.
    frames: OnceLock<(Vec<u8>, Vec<Vec<u8>>)>,
    cursor: AtomicUsize,
}

/// Frames per kernel batch of a live-frames run (the kernel's default and the most it
/// takes without a bigger page pool is 256; xdp-trafgen uses 64 too).
const BATCH: u32 = 64;

impl<'a> Generator<'a> {
    /// A generator on `net`; with `cpu`, each run's thread pins itself to that CPU.
    pub fn new(monitor: &'a Monitor, net: &'a LiveNet, cpu: Option<usize>) -> Result<Self> {
        Ok(Self {
            monitor,
            net,
            ifindex: net.gen_ifindex()?,
            cpu,
            frames: OnceLock::new(),
            cursor: AtomicUsize::new(0),
        })
    }

    /// Sends `n` frames with XDP live frames, or from `socket` (made on first use, in the
    /// calling thread's namespace) once the kernel refused them.
    fn send(
        &self,
        socket: &mut Option<PacketSocket>,
        program: &'static str,
        frame: &[u8],
        n: u64,
    ) -> Result<()> {
        if !LIVE_FRAMES_REFUSED.load(Ordering::Relaxed) {
            match self
                .monitor
                .live_send(program, frame, self.ifindex, u32::try_from(n)?, BATCH)
            {
                Ok(_) => return Ok(()),
                Err(monitor::ebpf::EbpfError::TestRun {
                    source: aya::programs::ProgramError::SyscallError(e),
                    ..
                }) if e.io_error.raw_os_error() == Some(libc::EPERM) => {
                    eprintln!(
                        "generator: this kernel refuses XDP live frames (EPERM); sending from \
                         an AF_PACKET socket instead"
                    );
                    LIVE_FRAMES_REFUSED.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("live-frames run of {program} ({n} frames)"));
                }
            }
        }
        let socket = match socket {
            Some(s) => s,
            None => socket.insert(PacketSocket::new(self.ifindex)?),
        };
        let frames: Vec<&[u8]> = if program == programs::LIVE_GEN {
            let rewritten = self.rewritten(frame)?;
            (0..n)
                .map(|_| {
                    let i = self.cursor.fetch_add(1, Ordering::Relaxed) % rewritten.len();
                    rewritten[i].as_slice()
                })
                .collect()
        } else {
            vec![frame; usize::try_from(n)?]
        };
        socket.send(&frames)
    }

    /// `template` rewritten from each entry of the workload map, as `programs::LIVE_GEN`
    /// writes it: built once, outside the timed sends.
    fn rewritten(&self, template: &[u8]) -> Result<&[Vec<u8>]> {
        if self.frames.get().is_none() {
            let workload = self.monitor.read_bench_workload()?;
            anyhow::ensure!(!workload.is_empty(), "the bench workload map is empty");
            let frames = workload.iter().map(|p| rewrite(template, p)).collect();
            let _ = self.frames.set((template.to_vec(), frames));
        }
        let (built_from, frames) = self.frames.get().context("the rewritten frames")?;
        anyhow::ensure!(
            built_from.as_slice() == template,
            "one generator rewrites one template"
        );
        Ok(frames)
    }

    /// Sends up to `packets` frames as fast as the CPU allows, stopping early after
    /// `limit`. `program` is `programs::LIVE_TX` (the frame as it is) or
    /// `programs::LIVE_GEN` (rewritten from the workload).
    pub fn blast(
        &self,
        program: &'static str,
        frame: &[u8],
        packets: u64,
        limit: Duration,
    ) -> Result<Sent> {
        self.run(program, frame, packets, None, limit)
    }

    /// Sends `packets` frames at `rate` packets per second, stopping early after `limit`.
    /// The frames go in bursts every 50 ms: each live-frames run costs a page-pool set-up
    /// and teardown that takes milliseconds of wall time (an RCU grace period), so runs of
    /// a few frames cannot keep a rate.
    pub fn paced(
        &self,
        program: &'static str,
        frame: &[u8],
        packets: u64,
        rate: u64,
        limit: Duration,
    ) -> Result<Sent> {
        self.run(program, frame, packets, Some(rate), limit)
    }

    /// Sends the flush flow in bursts of 256 every 5 ms until `done()` says so, at most
    /// `max` packets or `limit`; returns how many it sent.
    pub fn flush(
        &self,
        mut done: impl FnMut() -> Result<bool>,
        max: u64,
        limit: Duration,
    ) -> Result<u64> {
        let frame = flush_frame();
        let deadline = Instant::now() + limit;
        let mut sent = 0;
        while !done()? {
            if sent >= max || Instant::now() > deadline {
                anyhow::bail!("flushing: the peer did not see the flush flow after {sent} packets");
            }
            sent += self
                .run(programs::LIVE_TX, &frame, 256, None, limit)?
                .packets;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(sent)
    }

    fn run(
        &self,
        program: &'static str,
        frame: &[u8],
        packets: u64,
        rate: Option<u64>,
        limit: Duration,
    ) -> Result<Sent> {
        let pin = self.cpu;
        let softirqd = pin.map(cpu::ksoftirqd).transpose()?;
        self.net.gen_ns().enter(move || -> Result<Sent> {
            if let Some(cpu) = pin {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu)?;
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
            }
            let soft0 = softirqd.map(cpu::process).transpose()?;
            let cpu0 = cpu::this_thread()?;
            let start = Instant::now();
            let deadline = start + limit;
            let chunk = match rate {
                // 50 milliseconds' worth per burst.
                Some(r) => (r / 20).max(1),
                None => 1 << 16,
            };
            let mut sent = 0u64;
            let mut socket = None;
            while sent < packets && Instant::now() < deadline {
                if let Some(r) = rate {
                    let due = start + Duration::from_nanos(sent.saturating_mul(1_000_000_000) / r);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                let n = chunk.min(packets - sent);
                self.send(&mut socket, program, frame, n)?;
                sent += n;
            }
            let wall = start.elapsed();
            let thread_cpu = cpu::this_thread()?.saturating_sub(cpu0);
            let ksoftirqd_cpu = match (softirqd, soft0) {
                (Some(pid), Some(t0)) => cpu::process(pid)?.saturating_sub(t0),
                _ => Duration::ZERO,
            };
            Ok(Sent {
                packets: sent,
                wall,
                thread_cpu,
                ksoftirqd_cpu,
            })
        })
    }
}

/// `template` (an untagged IPv4 frame) with the addresses and ports of `p` and its header
/// checksum fixed, as `programs::LIVE_GEN` writes it.
fn rewrite(template: &[u8], p: &BenchPacket) -> Vec<u8> {
    let mut f = template.to_vec();
    if f.len() >= 38 && f[12..14] == [0x08, 0x00] {
        f[26..30].copy_from_slice(&p.src[..4]);
        f[30..34].copy_from_slice(&p.dst[..4]);
        f[34..36].copy_from_slice(&p.sport);
        f[36..38].copy_from_slice(&p.dport);
        set_ipv4_checksum(&mut f[14..]);
    }
    f
}

/// CPUs this machine has.
#[must_use]
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// exfilmon's (packets, layer-3 bytes) from a daemon's /metrics, over every class.
pub fn exfilmon_totals(daemon: &crate::daemon::Daemon) -> Result<(u64, u64)> {
    let m = daemon.scrape()?;
    Ok((
        counter(m.sum("exfilmon_packets_total", &[])),
        counter(m.sum("exfilmon_bytes_total", &[])),
    ))
}

#[expect(
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    reason = "a counter's value: whole, not negative, far below 2^53"
)]
fn counter(v: f64) -> u64 {
    v as u64
}
