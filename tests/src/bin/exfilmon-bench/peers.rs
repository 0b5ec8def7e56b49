//! The peers section: exfilmon, softflowd and pmacctd on the same traffic, on the same
//! receiving veth, for CPU per packet and for flow totals.
//!
//! Each round sends the same paced, bounded traffic (random flows as in the live section,
//! but [`PEER_FLOWS`] of them, so that each has many packets; 64-byte UDP frames) four
//! times:
//!
//! * **A** — a bare `XDP_PASS` on mon0: the baseline of the packet path;
//! * **B** — the real daemon (`exfilmon run`, XDP native on mon0);
//! * **C** — the daemon and softflowd; **D** — the daemon and pmacctd.
//!
//! CPU per packet, each side measured with the kernel's CPU-time clocks (see
//! `exfilmon_tests::cpu`; `/proc/PID/stat`'s utime + stime count the same time, at 4 ms
//! resolution):
//!
//! * *process*: the monitor's own processes over the run (exfilmon's daemon; softflowd;
//!   pmacctd's core and plugin processes), divided by the packets it handled;
//! * *kernel*: what the monitor adds to the packet path. For exfilmon that is its XDP
//!   program, timed by the kernel (`run_time_ns / run_cnt`, BPF statistics on for the whole
//!   section), minus the same figure for a bare `XDP_PASS` in A: most of that figure is the
//!   statistics' own clock reads (B − A of the packet path is kept as a cross-check). For a
//!   peer it is the packet path's CPU with the peer running minus without
//!   (C − B, D − B): the `AF_PACKET` copy into its ring and its wakeups. The packet path is
//!   the generator's pinned thread (the receive softirq runs in it) plus that CPU's
//!   `ksoftirqd`. Measured per thread rather than system-wide because the machine is shared:
//!   other builds' CPU time would land in `/proc/stat` too.
//!
//! Totals: exfilmon's from its /metrics (`exfilmon_packets_total`, `exfilmon_bytes_total`,
//! layer-3 bytes) before and after the run; the peers' from their tables (see
//! `exfilmon_tests::peers`, and the flush flow there), minus the flush flow. In C and D the
//! peer and exfilmon count the very same packets, and both are compared with what the
//! generator sent (packets × 50 layer-3 bytes).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, Result, bail};
use exfilmon_tests::{
    cpu,
    daemon::{Daemon, free_port},
    live::{self, FRAME_L3_BYTES, Generator, Sent},
    livenet::{LiveNet, MON_IF},
    peers::{Peer, PeerKind, PeerTotals},
};
use monitor::ebpf::Monitor;
use monitor_common::programs;
use serde::Serialize;

use crate::{check_interrupted, median};

/// Distinct flows of the peers' traffic: random flows across every country, each with
/// many packets, so that what is measured is per-packet work rather than flow creation.
pub const PEER_FLOWS: u32 = 4096;

pub struct PeerArgs {
    pub packets: u64,
    pub rate: u64,
    pub rounds: usize,
    pub cpu: usize,
}

#[derive(Serialize)]
pub struct PeersReport {
    pub method: &'static str,
    /// How the generator sent: `xdp-live-frames`, or `af-packet` where the kernel refuses
    /// live frames.
    pub generator: &'static str,
    pub packets_per_run: u64,
    pub rate_pps: u64,
    pub rounds: usize,
    pub flows: u32,
    pub rows: Vec<CpuRow>,
    pub totals: Vec<TotalsRow>,
}

/// CPU per packet of one monitor (medians over rounds).
#[derive(Serialize, Clone)]
pub struct CpuRow {
    pub monitor: &'static str,
    pub process_ns: f64,
    pub kernel_ns: f64,
    pub kernel_method: &'static str,
    pub total_ns: f64,
    /// `total_ns` over exfilmon's.
    pub times_exfilmon: f64,
    /// How many times less CPU per packet exfilmon must take than this peer.
    pub target: Option<f64>,
    pub process_ns_runs: Vec<f64>,
    pub kernel_ns_runs: Vec<f64>,
    /// exfilmon only: the packet-path difference B − A, a cross-check of `kernel_ns`.
    pub path_delta_ns_runs: Vec<f64>,
}

/// One monitor's totals in one run, against what was sent and what exfilmon counted.
#[derive(Serialize, Clone)]
pub struct TotalsRow {
    pub round: usize,
    pub monitor: &'static str,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    /// mon0's XDP program received (veth counter).
    pub received_packets: u64,
    pub packets: u64,
    pub bytes: u64,
    /// exfilmon's totals over the same run (the same packets in C and D).
    pub exfilmon_packets: u64,
    pub exfilmon_bytes: u64,
    /// Flow-table entries (peers); violation flows are exfilmon's only flows.
    pub flows: Option<u64>,
    pub flush_packets: u64,
    pub agree: bool,
}

const METHOD: &str = "same paced traffic four times per round: A XDP_PASS, B exfilmon daemon, \
    C daemon + softflowd, D daemon + pmacctd; process ns = the monitor's processes' CPU \
    (kernel CPU-time clocks) / packets it handled; kernel ns = exfilmon's XDP run_time/run_cnt \
    minus XDP_PASS's in A (BPF statistics: the difference is the program's own cost), or for a peer the packet path's CPU (generator thread with its inline \
    softirq, plus ksoftirqd of that CPU) in C or D minus B, per packet; totals = exfilmon's \
    /metrics delta and the peers' own tables (softflowctl dump-flows, pmacct -s), flush flow \
    excluded";

struct Round {
    exfilmon: (f64, f64, f64),
    peers: Vec<(PeerKind, f64, f64)>,
    totals: Vec<TotalsRow>,
}

pub fn run(args: &PeerArgs, dir: &std::path::Path) -> Result<PeersReport> {
    for tool in ["softflowd", "softflowctl", "pmacctd", "pmacct"] {
        which(tool)?;
    }
    let bin = exfilmon_tests::exfilmon_bin();
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p monitor` (make bench does)",
            bin.display()
        );
    }
    // The generator and the baseline program, loaded as in the live section.
    let mut monitor = crate::live::load(dir, PEER_FLOWS)?;
    let net = LiveNet::new()?;
    // One setting for every run of the section; the descriptor turns them off again.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics (BPF_ENABLE_STATS)")?;

    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        check_interrupted()?;
        let round_dir = dir.join(format!("round{round}"));
        std::fs::create_dir_all(&round_dir)?;
        rounds.push(run_round(args, &mut monitor, &net, round, &round_dir)?);
    }
    Ok(report(args, rounds))
}

/// One round's setting.
struct Ctx<'a> {
    args: &'a PeerArgs,
    net: &'a LiveNet,
    round: usize,
    dir: &'a std::path::Path,
}

impl Ctx<'_> {
    /// The round's traffic, paced and bounded.
    fn paced(&self, monitor: &Monitor) -> Result<Sent> {
        let limit = Duration::from_secs(2 * self.args.packets / self.args.rate.max(1) + 10);
        Generator::new(monitor, self.net, Some(self.args.cpu))?.paced(
            programs::LIVE_GEN,
            &live::template_frame(),
            self.args.packets,
            self.args.rate,
            limit,
        )
    }
}

fn run_round(
    args: &PeerArgs,
    monitor: &mut Monitor,
    net: &LiveNet,
    round: usize,
    dir: &std::path::Path,
) -> Result<Round> {
    let ctx = Ctx {
        args,
        net,
        round,
        dir,
    };
    let (a, pass_ns) = baseline(&ctx, monitor)?;

    // B: the daemon alone.
    let port = free_port()?;
    let daemon_dir = tempfile::tempdir_in(dir)?;
    let config_path = live::write_config(daemon_dir.path(), Some((net.mon_ns().name(), port)))?;
    let daemon = Daemon::start_with(
        config_path,
        SocketAddr::from(([127, 0, 0, 1], port)),
        daemon_dir,
    )?;
    let daemon_pid = daemon.pid().context("the daemon is not running")?;
    let prog_id = wait_attached(net)?;
    let before = live::exfilmon_totals(&daemon)?;
    let stats0 = prog_stats(prog_id)?;
    let cpu0 = cpu::process(daemon_pid)?;
    let rx0 = net.rx()?;
    let b = ctx.paced(monitor)?;
    let rx = net.rx_settled(Duration::from_secs(2))?.since(rx0);
    let cpu1 = cpu::process(daemon_pid)?;
    let stats1 = prog_stats(prog_id)?;
    let after = live::exfilmon_totals(&daemon)?;
    let exf_process = per_packet(cpu1.saturating_sub(cpu0), b.packets);
    let exf_xdp = run_ns(stats0, stats1);
    // The statistics' own clock reads are most of a bare XDP_PASS's figure: take exfilmon's
    // program beyond that.
    let exf_kernel = exf_xdp - pass_ns;
    let exf_path = per_packet(b.path_cpu(), b.packets) - per_packet(a.path_cpu(), a.packets);
    let counted = (after.0 - before.0, after.1 - before.1);
    println!(
        "  round {round} B exfilmon:  process {exf_process:.1} + XDP {exf_kernel:.1} ns/packet \
         ({exf_xdp:.1} − XDP_PASS's {pass_ns:.1}; path +{exf_path:.0} over A); counted {} of {} \
         packets",
        counted.0, b.packets
    );
    let mut totals = vec![totals_row(
        round,
        "exfilmon",
        &b,
        rx.xdp_packets,
        counted,
        None,
        counted,
    )];
    let mut peers = Vec::new();
    for kind in [PeerKind::Softflowd, PeerKind::Pmacctd] {
        check_interrupted()?;
        let (process, kernel, row) = peer_run(&ctx, monitor, &daemon, &b, kind)?;
        peers.push((kind, process, kernel));
        totals.push(row);
    }
    let status = daemon.stop()?;
    if !status.success() {
        bail!("exfilmon run exited with {status} on SIGTERM");
    }
    Ok(Round {
        exfilmon: (exf_process, exf_kernel, exf_path),
        peers,
        totals,
    })
}

/// A: the baseline, a bare `XDP_PASS` on mon0. Returns the run and the program's mean
/// run time from the BPF statistics.
fn baseline(ctx: &Ctx<'_>, monitor: &mut Monitor) -> Result<(Sent, f64)> {
    let link = ctx
        .net
        .mon_ns()
        .enter(|| monitor.attach_xdp_native(programs::LIVE_PASS, MON_IF))
        .map_err(|e| anyhow::anyhow!(monitor::error_chain(&e)))?;
    let run = (|| {
        let s0 = monitor.program_stats(programs::LIVE_PASS)?;
        let a = ctx.paced(monitor)?;
        let s1 = monitor.program_stats(programs::LIVE_PASS)?;
        anyhow::Ok((a, run_ns(s0, s1)))
    })();
    monitor.detach_xdp(programs::LIVE_PASS, link)?;
    let (a, pass_ns) = run?;
    println!(
        "  round {} A XDP_PASS:  path {:.0} ns/packet, XDP_PASS {pass_ns:.1} ns (BPF statistics)",
        ctx.round,
        per_packet(a.path_cpu(), a.packets)
    );
    Ok((a, pass_ns))
}

/// C or D: `kind` on mon0 next to the daemon. Returns its process and kernel ns per packet
/// and its totals.
fn peer_run(
    ctx: &Ctx<'_>,
    monitor: &Monitor,
    daemon: &Daemon,
    b: &Sent,
    kind: PeerKind,
) -> Result<(f64, f64, TotalsRow)> {
    let all = format!("0-{}", live::cpus().saturating_sub(1));
    let peer = Peer::start(kind, ctx.net.mon_ns(), MON_IF, ctx.dir, &all)?;
    let before = live::exfilmon_totals(daemon)?;
    let cpu0 = peer.cpu()?;
    let rx0 = ctx.net.rx()?;
    let sent = ctx.paced(monitor)?;
    let exf = live::exfilmon_totals(daemon)?;
    Generator::new(monitor, ctx.net, Some(ctx.args.cpu))?
        .flush(
            || peer.flush_seen(sent.packets),
            50_000,
            Duration::from_secs(10),
        )
        .with_context(|| format!("{} never counted the flush flow", kind.name()))?;
    let cpu1 = peer.cpu()?;
    let rx = ctx.net.rx_settled(Duration::from_secs(2))?.since(rx0);
    let t = peer
        .totals()
        .with_context(|| format!("reading {}'s totals", kind.name()))?;
    if t.flush_packets == 0 {
        bail!(
            "{} processed more packets than were sent, but none of the flush flow: \
             something else is on the wire",
            kind.name()
        );
    }
    let process = per_packet(cpu1.saturating_sub(cpu0), t.packets + t.flush_packets);
    let kernel = per_packet(sent.path_cpu(), sent.packets) - per_packet(b.path_cpu(), b.packets);
    let exfilmon = (exf.0 - before.0, exf.1 - before.1);
    println!(
        "  round {} {} {}: process {process:.0} + packet path {kernel:.0} ns/packet; counted \
         {} packets, {} bytes, {} flows (exfilmon {} packets, {} bytes)",
        ctx.round,
        if kind == PeerKind::Softflowd {
            "C"
        } else {
            "D"
        },
        kind.name(),
        t.packets,
        t.bytes,
        t.flows,
        exfilmon.0,
        exfilmon.1
    );
    let row = totals_row(
        ctx.round,
        kind.name(),
        &sent,
        rx.xdp_packets,
        (t.packets, t.bytes),
        Some(t),
        exfilmon,
    );
    peer.stop()?;
    Ok((process, kernel, row))
}

/// Mean run time per run between two (run count, run time) readings.
fn run_ns(before: (u64, Duration), after: (u64, Duration)) -> f64 {
    per_packet(after.1.saturating_sub(before.1), after.0 - before.0)
}

fn totals_row(
    round: usize,
    monitor: &'static str,
    sent: &Sent,
    received: u64,
    counted: (u64, u64),
    peer: Option<PeerTotals>,
    exfilmon: (u64, u64),
) -> TotalsRow {
    let sent_bytes = sent.packets * FRAME_L3_BYTES;
    TotalsRow {
        round,
        monitor,
        sent_packets: sent.packets,
        sent_bytes,
        received_packets: received,
        packets: counted.0,
        bytes: counted.1,
        exfilmon_packets: exfilmon.0,
        exfilmon_bytes: exfilmon.1,
        flows: peer.map(|p| p.flows),
        flush_packets: peer.map_or(0, |p| p.flush_packets),
        agree: counted == exfilmon && counted == (sent.packets, sent_bytes),
    }
}

fn report(args: &PeerArgs, rounds: Vec<Round>) -> PeersReport {
    let mut rows = Vec::new();
    let collect = |f: &dyn Fn(&Round) -> f64| -> Vec<f64> { rounds.iter().map(f).collect() };
    let exf_process = collect(&|r| r.exfilmon.0);
    let exf_kernel = collect(&|r| r.exfilmon.1);
    let exf_total = median(&mut exf_process.clone()) + median(&mut exf_kernel.clone());
    rows.push(CpuRow {
        monitor: "exfilmon",
        process_ns: median(&mut exf_process.clone()),
        kernel_ns: median(&mut exf_kernel.clone()),
        kernel_method: "XDP program run time minus a bare XDP_PASS's (BPF statistics, same round)",
        total_ns: exf_total,
        times_exfilmon: 1.0,
        target: None,
        process_ns_runs: exf_process,
        kernel_ns_runs: exf_kernel,
        path_delta_ns_runs: collect(&|r| r.exfilmon.2),
    });
    for (kind, target) in [(PeerKind::Softflowd, 4.0), (PeerKind::Pmacctd, 10.0)] {
        let pick = |i: usize| -> Vec<f64> {
            rounds
                .iter()
                .filter_map(|r| r.peers.iter().find(|p| p.0 == kind))
                .map(|p| if i == 0 { p.1 } else { p.2 })
                .collect()
        };
        let (process, kernel) = (pick(0), pick(1));
        let total = median(&mut process.clone()) + median(&mut kernel.clone());
        rows.push(CpuRow {
            monitor: kind.name(),
            process_ns: median(&mut process.clone()),
            kernel_ns: median(&mut kernel.clone()),
            kernel_method: "packet path with the peer minus without (AF_PACKET copy, wakeups)",
            total_ns: total,
            times_exfilmon: total / exf_total,
            target: Some(target),
            process_ns_runs: process,
            kernel_ns_runs: kernel,
            path_delta_ns_runs: Vec::new(),
        });
    }
    PeersReport {
        method: METHOD,
        generator: exfilmon_tests::live::engine(),
        packets_per_run: args.packets,
        rate_pps: args.rate,
        rounds: rounds.len(),
        flows: PEER_FLOWS,
        rows,
        totals: rounds.into_iter().flat_map(|r| r.totals).collect(),
    }
}

pub fn print_table(report: &PeersReport) {
    let mut t = comfy_table::Table::new();
    t.set_header([
        "peers",
        "process ns/packet",
        "kernel ns/packet",
        "total ns/packet",
        "× exfilmon",
        "target",
    ]);
    for r in &report.rows {
        t.add_row([
            r.monitor.to_owned(),
            format!("{:.1}", r.process_ns),
            format!("{:.1}", r.kernel_ns),
            format!("{:.1}", r.total_ns),
            format!("{:.1}×", r.times_exfilmon),
            r.target.map_or_else(String::new, |x| {
                format!(
                    "≥ {x:.0}× {}",
                    if r.times_exfilmon >= x {
                        "met"
                    } else {
                        "MISSED"
                    }
                )
            }),
        ]);
    }
    println!("{t}");
    let mut t = comfy_table::Table::new();
    t.set_header([
        "round",
        "monitor",
        "sent packets",
        "sent L3 bytes",
        "packets",
        "L3 bytes",
        "exfilmon packets",
        "exfilmon bytes",
        "flows",
        "agree",
    ]);
    for r in &report.totals {
        t.add_row([
            r.round.to_string(),
            r.monitor.to_owned(),
            r.sent_packets.to_string(),
            r.sent_bytes.to_string(),
            r.packets.to_string(),
            r.bytes.to_string(),
            r.exfilmon_packets.to_string(),
            r.exfilmon_bytes.to_string(),
            r.flows.map_or_else(|| "-".to_owned(), |f| f.to_string()),
            if r.agree { "yes" } else { "NO" }.to_owned(),
        ]);
    }
    println!("{t}");
    println!(
        "peers: {} packets per run at {} packets/s, {} flows; {}",
        report.packets_per_run, report.rate_pps, report.flows, report.method
    );
}

fn per_packet(d: Duration, packets: u64) -> f64 {
    d.as_nanos() as f64 / packets.max(1) as f64
}

/// Waits until the daemon's XDP program is on mon0; returns its id.
fn wait_attached(net: &LiveNet) -> Result<u32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(id) = net.mon_xdp_prog_id()? {
            return Ok(id);
        }
        if std::time::Instant::now() > deadline {
            bail!("exfilmon's XDP program did not appear on {MON_IF}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (run count, run time) of the program with id `id`.
fn prog_stats(id: u32) -> Result<(u64, Duration)> {
    for p in aya::programs::loaded_programs() {
        let p = p.context("listing BPF programs")?;
        if p.id() == id {
            return Ok((p.run_count(), p.run_time()));
        }
    }
    bail!("BPF program {id} is gone")
}

fn which(tool: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file());
    if !found {
        bail!("{tool} is not installed (Debian packages softflowd and pmacct; `make setup`)");
    }
    Ok(())
}
