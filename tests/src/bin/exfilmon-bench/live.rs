//! The live section: packets per second a veth receives with exfilmon's XDP program
//! attached, against the same veth with a bare `XDP_PASS`, in the same run.
//!
//! Two namespaces joined by a veth pair ([`LiveNet`]); the generator sends 64-byte UDP
//! frames with XDP live frames out of `gen0` on one pinned CPU; `mon0` receives them on
//! that CPU (the live-frames run delivers each batch from its own softirq), runs its XDP
//! program and drops them in its stack (blackhole route). So the figure is the packets one
//! CPU pushes through generator + receiver per second: exfilmon's cost shows as a lower
//! rate. Rounds alternate the programs; medians are reported. A second pass, with the
//! kernel's BPF run-time statistics on (`BPF_ENABLE_STATS`, released at the end, even on
//! a crash, because it is a file descriptor), gives each program's own ns per packet;
//! the rates are measured with statistics off, since they cost time of their own.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use exfilmon_tests::{
    live::{self, Generator},
    livenet::{LiveNet, MON_IF},
};
use monitor::{config::Config, ebpf::Monitor};
use monitor_common::{
    class::{VERDICT_VIOLATION, class_parts},
    programs,
};
use serde::Serialize;

use crate::median;

/// Distinct flows of the random workload.
pub const RANDOM_FLOWS: u32 = 1 << 16;

#[derive(Clone, Copy)]
pub struct LiveArgs {
    /// Packets per measured run (each run also stops after `limit`).
    pub packets: u64,
    pub limit: Duration,
    pub rounds: usize,
    /// The CPU the generator (and with it the receive path) runs on.
    pub cpu: usize,
}

#[derive(Serialize)]
pub struct LiveReport {
    pub method: &'static str,
    /// How the generator sent: `xdp-live-frames`, or `af-packet` where the kernel refuses
    /// live frames.
    pub generator: &'static str,
    pub packets_per_run: u64,
    pub rounds: usize,
    pub rows: Vec<LiveRow>,
}

#[derive(Serialize, Clone)]
pub struct LiveRow {
    pub workload: &'static str,
    pub flows: u32,
    /// Received packets per second (median over rounds), `XDP_PASS` on mon0.
    pub pass_pps: f64,
    /// The same with exfilmon's XDP program on mon0.
    pub exfilmon_pps: f64,
    /// exfilmon ÷ `XDP_PASS`: the median over rounds of each round's ratio.
    pub ratio: f64,
    pub target: f64,
    pub pass_pps_runs: Vec<f64>,
    pub exfilmon_pps_runs: Vec<f64>,
    /// Frames sent but not received by mon0's XDP program, over all runs.
    pub lost: u64,
    /// Packets exfilmon classified against packets its XDP program received (should be 1).
    pub exfilmon_counted_share: f64,
    /// Share of exfilmon's packets that were violations (tracked in the flow table).
    pub violation_share: f64,
    /// Mean run time per packet from the kernel's BPF statistics, `XDP_PASS`.
    pub pass_ns: f64,
    /// The same for exfilmon's program.
    pub exfilmon_ns: f64,
}

pub const METHOD: &str = "veth pair between two namespaces; generator: BPF_PROG_TEST_RUN with \
    BPF_F_TEST_XDP_LIVE_FRAMES (or, where the kernel refuses that, sendmmsg on an AF_PACKET \
    socket: see `generator`) out of gen0, pinned to one CPU, 64-byte UDP frames; receiver: \
    mon0's XDP program (exfilmon_xdp, or a bare XDP_PASS), then a blackhole route; pps = \
    frames mon0's XDP program received (veth xdp_packets) per second of wall time, BPF \
    statistics off, medians over rounds; ratio = median of the rounds' exfilmon ÷ XDP_PASS \
    (a round's two runs are adjacent); ns = run_time_ns / run_cnt of each program with BPF_ENABLE_STATS on";

/// Runs the section.
pub fn run(args: LiveArgs, dir: &std::path::Path) -> Result<LiveReport> {
    let mut monitor = load(dir, RANDOM_FLOWS)?;
    let drain = Drain::start(&mut monitor)?;
    let net = LiveNet::new()?;

    let workloads: [(&'static str, u32, &'static str, Vec<u8>, f64); 3] = [
        (
            "fixed, allowed",
            1,
            programs::LIVE_TX,
            live::fixed_frame(false),
            0.90,
        ),
        (
            "fixed, violation",
            1,
            programs::LIVE_TX,
            live::fixed_frame(true),
            0.90,
        ),
        (
            "random",
            RANDOM_FLOWS,
            programs::LIVE_GEN,
            live::template_frame(),
            0.70,
        ),
    ];
    let mut rows = Vec::new();
    for (name, flows, gen_program, frame, target) in &workloads {
        let mut pass = Vec::new();
        let mut exf = Vec::new();
        let mut lost = 0;
        let (mut counted, mut received, mut violations) = (0u64, 0u64, 0u64);
        for round in 0..args.rounds {
            let order = if round % 2 == 0 {
                [programs::LIVE_PASS, programs::XDP]
            } else {
                [programs::XDP, programs::LIVE_PASS]
            };
            for program in order {
                crate::check_interrupted()?;
                let before = class_totals(&monitor)?;
                let r = measure_rate(&mut monitor, &net, program, gen_program, frame, args)?;
                lost += r.sent.saturating_sub(r.received);
                if program == programs::XDP {
                    let after = class_totals(&monitor)?;
                    counted += after.0 - before.0;
                    violations += after.1 - before.1;
                    received += r.received_all;
                    exf.push(r.pps);
                } else {
                    pass.push(r.pps);
                }
                println!(
                    "  live {name:<16} {:<14} {:>10.0} packets/s ({} sent, {} received)",
                    program_label(program),
                    r.pps,
                    r.sent,
                    r.received
                );
            }
        }
        let (pass_ns, exfilmon_ns) = program_ns(&mut monitor, &net, gen_program, frame, args)?;
        let (pass_pps, exfilmon_pps) = (median(&mut pass.clone()), median(&mut exf.clone()));
        // Each round's two runs are adjacent: their ratio cancels most of the load that
        // other tenants of the machine put on it over the section.
        let mut ratios: Vec<f64> = pass.iter().zip(&exf).map(|(p, e)| e / p).collect();
        rows.push(LiveRow {
            workload: name,
            flows: *flows,
            pass_pps,
            exfilmon_pps,
            ratio: median(&mut ratios),
            target: *target,
            pass_pps_runs: pass,
            exfilmon_pps_runs: exf,
            lost,
            exfilmon_counted_share: counted as f64 / received.max(1) as f64,
            violation_share: violations as f64 / counted.max(1) as f64,
            pass_ns,
            exfilmon_ns,
        });
    }
    let events = drain.stop();
    println!("  live: {events} flow events drained from the ring buffer");
    Ok(LiveReport {
        method: METHOD,
        generator: exfilmon_tests::live::engine(),
        packets_per_run: args.packets,
        rounds: args.rounds,
        rows,
    })
}

/// exfilmon loaded as the tests load it, with the bench programs, and a random workload of
/// `RANDOM_FLOWS` packets over `flows` flows for the generator.
pub fn load(dir: &std::path::Path, flows: u32) -> Result<Monitor> {
    let config = Config::load(&live::write_config(dir, None)?)?;
    let geo = monitor::geoip::GeoDb::load(&config.geoip.sources)?;
    let plan = monitor::tables::plan(&config, &geo)?;
    let mut monitor = monitor::load_monitor_with(
        &config,
        &plan,
        Some(monitor::ebpf::BenchSizes {
            workload: RANDOM_FLOWS,
            trie4: 1,
            trie6: 1,
            hash6: 1,
            hash6_trie: 1,
        }),
    )
    .map_err(|e| anyhow::anyhow!(monitor::error_chain(&e)))
    .context("loading exfilmon with the bench programs")?;
    monitor.write_bench_workload(&live::random_workload(RANDOM_FLOWS, flows, 0x11fe))?;
    Ok(monitor)
}

pub fn program_label(program: &str) -> &'static str {
    if program == programs::XDP {
        "exfilmon_xdp"
    } else {
        "XDP_PASS"
    }
}

struct Rate {
    sent: u64,
    received: u64,
    /// Received including the warm-up (what exfilmon's counters saw while attached).
    received_all: u64,
    pps: f64,
}

/// Attaches `program` to mon0, runs the generator once, detaches.
fn measure_rate(
    monitor: &mut Monitor,
    net: &LiveNet,
    program: &'static str,
    gen_program: &'static str,
    frame: &[u8],
    args: LiveArgs,
) -> Result<Rate> {
    let link = attach(monitor, net, program)?;
    let result = (|| {
        let generator = Generator::new(monitor, net, Some(args.cpu))?;
        let start = net.rx()?;
        // Warm-up: the flows exist, the caches and the page pool are warm.
        generator.blast(gen_program, frame, args.packets / 10, args.limit)?;
        net.rx_settled(Duration::from_secs(2))?;
        let before = net.rx()?;
        let sent = generator.blast(gen_program, frame, args.packets, args.limit)?;
        let end = net.rx_settled(Duration::from_secs(2))?;
        let got = end.since(before);
        Ok(Rate {
            sent: sent.packets,
            received: got.xdp_packets,
            received_all: end.since(start).xdp_packets,
            pps: got.xdp_packets as f64 / sent.wall.as_secs_f64(),
        })
    })();
    monitor.detach_xdp(program, link)?;
    result
}

/// Mean ns per packet of the `XDP_PASS` program and of exfilmon's, from the kernel's
/// BPF run-time statistics (on only for this measurement).
fn program_ns(
    monitor: &mut Monitor,
    net: &LiveNet,
    gen_program: &'static str,
    frame: &[u8],
    args: LiveArgs,
) -> Result<(f64, f64)> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics (BPF_ENABLE_STATS)")?;
    let mut out = [0.0; 2];
    for (i, program) in [programs::LIVE_PASS, programs::XDP].into_iter().enumerate() {
        let link = attach(monitor, net, program)?;
        let result = (|| {
            let generator = Generator::new(monitor, net, Some(args.cpu))?;
            generator.blast(gen_program, frame, args.packets / 10, args.limit)?;
            let (n0, t0) = monitor.program_stats(program)?;
            generator.blast(gen_program, frame, args.packets / 2, args.limit)?;
            net.rx_settled(Duration::from_secs(2))?;
            let (n1, t1) = monitor.program_stats(program)?;
            anyhow::Ok(t1.saturating_sub(t0).as_nanos() as f64 / (n1 - n0).max(1) as f64)
        })();
        monitor.detach_xdp(program, link)?;
        out[i] = result?;
        println!(
            "  live {:<31} {:>6.1} ns per packet (BPF statistics)",
            program_label(program),
            out[i]
        );
    }
    Ok((out[0], out[1]))
}

fn attach(
    monitor: &mut Monitor,
    net: &LiveNet,
    program: &'static str,
) -> Result<aya::programs::xdp::XdpLinkId> {
    net.mon_ns()
        .enter(|| monitor.attach_xdp_native(program, MON_IF))
        .map_err(|e| anyhow::anyhow!(monitor::error_chain(&e)))
        .with_context(|| format!("attaching {program} to {MON_IF}"))
}

/// (all classified packets, violations) from exfilmon's class counters.
fn class_totals(monitor: &Monitor) -> Result<(u64, u64)> {
    let mut all = 0;
    let mut violations = 0;
    for (index, c) in monitor.read_counters()?.classes {
        all += c.packets;
        if class_parts(index).3 == VERDICT_VIOLATION {
            violations += c.packets;
        }
    }
    Ok((all, violations))
}

/// Drains exfilmon's ring buffer on a thread of its own, as the daemon would, so flow
/// events cost what they cost with a reader (a full ring would make them cheaper).
struct Drain {
    stop: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Drain {
    fn start(monitor: &mut Monitor) -> Result<Self> {
        let mut ring = monitor.take_events()?;
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(AtomicU64::new(0));
        let (s, e) = (stop.clone(), events.clone());
        let thread = std::thread::Builder::new()
            .name("ring-drain".into())
            .spawn(move || {
                // Unpinned: the scheduler puts it on the other CPU, away from the pinned
                // generator, as the daemon's reader would be.
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all_cpus());
                while !s.load(Ordering::Relaxed) {
                    let mut n = 0;
                    while ring.next().is_some() {
                        n += 1;
                    }
                    e.fetch_add(n, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })?;
        Ok(Self {
            stop,
            events,
            thread,
        })
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.events.load(Ordering::Relaxed)
    }
}

pub fn all_cpus() -> nix::sched::CpuSet {
    let mut set = nix::sched::CpuSet::new();
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for c in 0..cpus {
        let _ = set.set(c);
    }
    set
}

pub fn print_table(report: &LiveReport) {
    let mut t = comfy_table::Table::new();
    t.set_header([
        "live veth",
        "flows",
        "XDP_PASS packets/s",
        "exfilmon packets/s",
        "exfilmon ÷ XDP_PASS",
        "target",
        "XDP_PASS ns",
        "exfilmon ns",
        "lost",
        "violations",
    ]);
    for r in &report.rows {
        t.add_row([
            r.workload.to_owned(),
            r.flows.to_string(),
            format!("{:.0}", r.pass_pps),
            format!("{:.0}", r.exfilmon_pps),
            format!("{:.1}%", 100.0 * r.ratio),
            format!(
                "≥ {:.0}% {}",
                100.0 * r.target,
                if r.ratio >= r.target { "met" } else { "MISSED" }
            ),
            format!("{:.1}", r.pass_ns),
            format!("{:.1}", r.exfilmon_ns),
            r.lost.to_string(),
            format!("{:.1}%", 100.0 * r.violation_share),
        ]);
    }
    println!("{t}");
    println!("live: {}", report.method);
}
