//! The ring buffer → daemon part of `make bench`: how many flow events per second the
//! daemon's drain path takes with zero loss, what it costs the daemon per event, and the
//! daemon's memory once the kernel's flow table holds 1M flows. It reports; it asserts
//! nothing.
//!
//! Producer: `exfilmon_bench_events`, run with `BPF_PROG_TEST_RUN` on the last CPU, submits
//! eight flow-start events per run through the classifier's own `emit` (same reserve/submit,
//! same wakeup threshold), paced to the target rate, cycling over `--flows` distinct flows.
//! Consumer: the daemon's `EventSink` in a tokio current-thread runtime on CPU 0, woken as
//! the daemon is (ring readable, or the 200 ms drain tick). Loss is the kernel's
//! `ringbuf_dropped` counter. Before the run, the classifier (`exfilmon_bench`) puts the
//! same flows into the kernel's flow table, and the consumer sweeps that table as the
//! daemon does (every 5 s, the daemon's longest sweep interval), so the memory is that of a
//! daemon tracking them.
#![expect(
    clippy::cast_precision_loss,
    reason = "reported figures: rates and counts far below 2^52"
)]

use std::{
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use clap::Parser;
use exfilmon_tests::packet::{UDP, eth_v4, ipv4, udp};
use monitor::{
    config::Config,
    daemon::{EventSink, end_idle, read_idle},
    ebpf::{BenchSizes, Monitor, Sizes},
    events::{Clock, EventLog, LogOptions},
    geoip::GeoDb,
    kernel_config,
    metrics::DaemonMetrics,
    tables::{self, Labels},
};
use monitor_common::{
    bench::{BenchPacket, EVENTS_PER_RUN},
    programs, reason,
};
use serde::Serialize;
use tokio::io::{Interest, unix::AsyncFd};

#[derive(Parser)]
/// Measures the ring buffer → daemon event path: drain rate, loss, CPU and memory.
struct Args {
    /// Seconds each run produces events.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Events per second the producer aims at.
    #[arg(long, default_value_t = 2_000_000)]
    rate: u64,
    /// Distinct flows the events cycle over (what the daemon ends up tracking).
    #[arg(long, default_value_t = 1 << 20)]
    flows: u32,
    /// Ring buffer bytes (`[flows] ring_bytes`; the default is the config's default).
    #[arg(long, default_value_t = 4 << 20)]
    ring_bytes: u32,
    /// A short run (5 s) for a smoke test.
    #[arg(long)]
    quick: bool,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/events.json")]
    json: PathBuf,
}

#[derive(Serialize)]
struct Run {
    /// Whether the daemon also wrote every event to a JSON-lines event log.
    event_log: bool,
    seconds: f64,
    target_rate: u64,
    submitted: u64,
    /// The producer program's own kernel time per event (test-run time, without the
    /// syscalls and pacing around it).
    producer_kernel_ns_per_event: f64,
    dropped: u64,
    drained: u64,
    drained_per_second: f64,
    /// The daemon thread's CPU time per drained event.
    daemon_cpu_ns_per_event: f64,
    /// Share of one CPU the daemon thread used.
    daemon_cpu_share: f64,
    /// Flows in the kernel's flow table at the last sweep.
    tracked_flows: usize,
    /// The time a sweep of the whole flow table takes (on a blocking thread, as in the
    /// daemon).
    sweep_ms: f64,
    rss_bytes: u64,
    peak_rss_bytes: u64,
}

/// The events are violations of the group "subscribers" (10.0.0.0/9) to a CN address.
/// The flow table holds twice the flows, as a daemon sized for them would; flows do not go
/// idle during a run, so the sweeps read the table and remove nothing.
fn config(dir: &std::path::Path, ring_bytes: u32, flows: u32) -> anyhow::Result<Config> {
    let max_entries = flows.saturating_mul(2);
    let geo = dir.join("geo.csv");
    std::fs::write(&geo, "203.0.113.0,203.0.113.255,CN\n")?;
    let path = dir.join("events.toml");
    std::fs::write(
        &path,
        format!(
            "[home]\nnetworks = [\"10.0.0.0/8\"]\n\
             [[group]]\nname = \"subscribers\"\nnetworks = [\"10.0.0.0/9\"]\n\
             [geoip]\nsources = [{{ format = \"csv\", path = \"{}\" }}]\n\
             [flows]\nring_bytes = {ring_bytes}\nmax_entries = {max_entries}\n\
             idle_timeout_secs = 3600\n",
            geo.display()
        ),
    )?;
    Ok(Config::load(&path)?)
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if !exfilmon_tests::is_root() {
        bail!("the benchmark loads eBPF programs: run it as root (make bench does)");
    }
    if args.quick {
        args.seconds = args.seconds.min(5);
    }
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), args.ring_bytes, args.flows)?;
    let mut runs = Vec::new();
    for event_log in [false, true] {
        let log = event_log.then(|| dir.path().join("events.jsonl"));
        let run = run(&args, &config, log.as_deref())?;
        println!(
            "  event log {:<3}  {:>9.0} events/s drained of {:>9} submitted ({:.0} ns each in \
             the kernel), {} dropped; daemon {:>5.0} ns/event ({:.0}% of a CPU); {} flows \
             in the kernel's table (a sweep {:.0} ms), RSS {:.0} MiB (peak {:.0})",
            if event_log { "on" } else { "off" },
            run.drained_per_second,
            run.submitted,
            run.producer_kernel_ns_per_event,
            run.dropped,
            run.daemon_cpu_ns_per_event,
            run.daemon_cpu_share * 100.0,
            run.tracked_flows,
            run.sweep_ms,
            run.rss_bytes as f64 / f64::from(1 << 20),
            run.peak_rss_bytes as f64 / f64::from(1 << 20),
        );
        runs.push(run);
        if let Some(log) = log {
            let _ = std::fs::remove_file(log);
        }
    }
    exfilmon_tests::write_json(&args.json, &runs)
}

/// One run: load, produce for `args.seconds` on the last CPU, drain on CPU 0.
fn run(args: &Args, config: &Config, log: Option<&std::path::Path>) -> anyhow::Result<Run> {
    let geo = GeoDb::load(&config.geoip.sources)?;
    let plan = tables::plan(config, &geo)?;
    let mut sizes = Sizes::for_geo(
        config.flows.max_entries,
        config.flows.ring_bytes,
        &plan.tables.geo,
    );
    sizes.bench = Some(BenchSizes {
        workload: args.flows,
        trie4: 1,
        trie6: 1,
        hash6: 1,
        hash6_trie: 1,
    });
    let mut monitor = Monitor::load(sizes)?;
    monitor.write_config(kernel_config(config))?;
    monitor.write_tables(&plan.tables)?;
    monitor.install_geo(&plan.tables.geo)?;
    let cn = u32::from(std::net::Ipv4Addr::new(203, 0, 113, 10));
    let workload: Vec<BenchPacket> = (0..args.flows)
        .map(|i| BenchPacket::v4(0x0a00_0000 | (i & 0x007f_ffff), cn, 1024 + (i >> 23) as u16))
        .collect();
    monitor.write_bench_workload(&workload)?;
    drop(workload);

    let mut ring = monitor.take_events()?;
    let mut flows = monitor.take_flows()?;
    let registry = prometheus::Registry::new();
    let dm = DaemonMetrics::register(&registry)?;
    let labels: Arc<RwLock<Labels>> = Arc::new(RwLock::new(plan.labels));
    let log = log
        .map(|p| EventLog::open(p, LogOptions::default(), Clock::now()))
        .transpose()?;
    let mut sink = EventSink::new(&dm, log);
    // The workload cursor is per CPU: one CPU walks the workload once.
    pin(0);
    fill_flow_table(&monitor, &mut sink, &mut ring, &labels, args.flows)?;
    let before = monitor.read_counters()?.reasons;

    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let done = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let done = done.clone();
        let (seconds, rate) = (args.seconds, args.rate);
        std::thread::spawn(move || -> anyhow::Result<(Monitor, Produced)> {
            pin(cpus - 1);
            let result = produce(&monitor, seconds, rate);
            done.store(true, Ordering::Release);
            result.map(|p| (monitor, p))
        })
    };

    let cpu_before = thread_cpu();
    let consumed = consume(
        &mut sink,
        ring,
        &mut flows,
        &labels,
        config.flows.idle_timeout,
        &done,
    )?;
    let cpu = thread_cpu().saturating_sub(cpu_before);
    let (monitor, produced) = producer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    let after = monitor.read_counters()?.reasons;
    let delta = |r: u32| after[r as usize] - before[r as usize];
    let (rss_bytes, peak_rss_bytes) = rss();
    let seconds = produced.elapsed.as_secs_f64();
    let submitted = delta(reason::RINGBUF_SUBMITTED);
    Ok(Run {
        event_log: sink.log.is_some(),
        seconds,
        target_rate: args.rate,
        submitted,
        producer_kernel_ns_per_event: produced.kernel.as_nanos() as f64 / submitted.max(1) as f64,
        dropped: delta(reason::RINGBUF_DROPPED),
        drained: consumed.drained,
        drained_per_second: consumed.drained as f64 / seconds,
        daemon_cpu_ns_per_event: cpu.as_nanos() as f64 / consumed.drained.max(1) as f64,
        daemon_cpu_share: cpu.as_secs_f64() / seconds,
        tracked_flows: consumed.tracked,
        sweep_ms: median(&mut consumed.sweep_ms.clone()),
        rss_bytes,
        peak_rss_bytes,
    })
}

/// What the consumer did: events drained, flows the last sweep counted, each sweep's time.
struct Consumed {
    drained: u64,
    tracked: usize,
    sweep_ms: Vec<f64>,
}

/// The daemon's side, on CPU 0 (the caller's): drains the ring when it is readable and on
/// a 200 ms tick, and sweeps the flow table every 5 s, until `done` and the ring is empty.
fn consume(
    sink: &mut EventSink,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    flows: &mut monitor::ebpf::FlowMap,
    labels: &RwLock<Labels>,
    idle: Duration,
    done: &AtomicBool,
) -> anyhow::Result<Consumed> {
    let (mut tracked, mut sweep_ms) = (0, Vec::new());
    let mut sweeping = None;
    let drained = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // SAFETY: the ring buffer owns its map fd, open and unchanged while the AsyncFd
            // owns the ring buffer.
            let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                .map_err(std::io::Error::from)?;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut sweep_tick = tokio::time::interval(Duration::from_secs(5));
            let mut drained = 0u64;
            loop {
                tokio::select! {
                    n = sink.drain_when_ready(&mut ring, labels) => drained += n?,
                    _ = sweep_tick.tick(), if sweeping.is_none() => {
                        sweeping = Some((Instant::now(), read_idle(flows.reader()?, idle, None)));
                    }
                    read = async {
                        match sweeping.as_mut() {
                            Some((_, task)) => task.await,
                            None => std::future::pending().await,
                        }
                    }, if sweeping.is_some() => {
                        if let Some((start, _)) = sweeping.take() {
                            sweep_ms.push(start.elapsed().as_secs_f64() * 1e3);
                        }
                        if let Some(held) = end_idle(flows, sink, labels, read?) {
                            tracked = held;
                        }
                    }
                    _ = tick.tick() => {
                        drained += sink.drain(ring.get_mut(), labels);
                        if done.load(Ordering::Acquire) {
                            drained += sink.drain(ring.get_mut(), labels);
                            break;
                        }
                    }
                }
            }
            anyhow::Ok(drained)
        })?;
    Ok(Consumed {
        drained,
        tracked,
        sweep_ms,
    })
}

/// Puts `flows` violation flows (the workload's) into the kernel's flow table with the
/// classifier, in test runs small enough for the ring to hold their flow-start events,
/// which the sink drains after each.
fn fill_flow_table(
    monitor: &Monitor,
    sink: &mut EventSink,
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    labels: &RwLock<Labels>,
    flows: u32,
) -> anyhow::Result<()> {
    const BATCH: u32 = 1 << 13;
    let frame = eth_v4(&ipv4(
        std::net::Ipv4Addr::new(10, 0, 0, 1),
        std::net::Ipv4Addr::new(203, 0, 113, 10),
        UDP,
        &udp(1024, 443, &[0; 22]),
    ));
    let mut done = 0;
    while done < flows {
        let n = BATCH.min(flows - done);
        monitor.bench_run(programs::BENCH, &frame, n)?;
        sink.drain(ring, labels);
        done += n;
    }
    let reasons = monitor.read_counters()?.reasons;
    let (created, dropped) = (
        reasons[reason::FLOW_CREATED as usize],
        reasons[reason::RINGBUF_DROPPED as usize],
    );
    if created < u64::from(flows) || dropped != 0 {
        bail!(
            "filling the flow table: {created} of {flows} flows created, {dropped} events dropped"
        );
    }
    Ok(())
}

/// Submits events at `rate` per second for `seconds`, in batches of test runs. A batch is
/// large because every `BPF_PROG_TEST_RUN` call with `repeat > 1` swaps the XDP dispatcher
/// in and out, which takes milliseconds.
fn produce(monitor: &Monitor, seconds: u64, rate: u64) -> anyhow::Result<Produced> {
    const BATCH: u32 = 1 << 17;
    let frame = eth_v4(&ipv4(
        std::net::Ipv4Addr::new(10, 0, 0, 1),
        std::net::Ipv4Addr::new(203, 0, 113, 10),
        UDP,
        &udp(1024, 443, &[0; 22]),
    ));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut sent = 0u64;
    let mut kernel = Duration::ZERO;
    while Instant::now() < end {
        kernel += monitor.bench_run(programs::BENCH_EVENTS, &frame, BATCH)? * BATCH;
        sent += u64::from(BATCH * EVENTS_PER_RUN);
        // Pace: sleep while ahead of the target rate.
        let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(ahead) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(ahead);
        }
    }
    Ok(Produced {
        elapsed: start.elapsed(),
        kernel,
    })
}

/// What the producer did: for how long, and the kernel's own time in the test runs.
struct Produced {
    elapsed: Duration,
    kernel: Duration,
}

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The median of `v` (0 when empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
