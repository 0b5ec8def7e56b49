//! exfilmon's benchmark suite (`make bench`). It reports; it asserts nothing.
//!
//! Three sections, each against a baseline measured in the same run:
//!
//! * `testrun`: nanoseconds per packet from `BPF_PROG_TEST_RUN` with `repeat`, measured
//!   against `exfilmon_bench_pass` — the same frame rewrite followed by `XDP_PASS` — so the
//!   difference is the classifier's own cost and the ratio is comparable across machines.
//!   Rounds alternate the programs and the median of each is reported.
//! * `live`: packets per second through a veth pair, exfilmon's XDP program against a bare
//!   `XDP_PASS` (see `live.rs`).
//! * `peers`: CPU per packet and flow totals of exfilmon, softflowd and pmacctd on the same
//!   traffic on the same interface (see `peers.rs`).
#![expect(
    clippy::cast_precision_loss,
    reason = "reported figures: nanoseconds and counts far below 2^52"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Instant,
};

mod live;
mod peers;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use clap::Parser;
use exfilmon_tests::packet::{UDP, eth_v4, eth_v6, ipv4, ipv6, udp};
use monitor::{
    config::Config,
    ebpf::{BenchSizes, Hash6Plan, Monitor, Sizes},
    geoip::GeoDb,
    kernel_config, tables,
};
use monitor_common::{
    bench::BenchPacket,
    class::{VERDICT_VIOLATION, class_parts},
    programs, reason,
};
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};
use serde::Serialize;

#[derive(Parser)]
/// Measures exfilmon's classifier with BPF_PROG_TEST_RUN against an XDP_PASS baseline.
struct Args {
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    /// Rounds per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Packets in each workload (each round runs the whole workload once).
    #[arg(long, default_value_t = 1 << 20)]
    packets: u32,
    /// Only the quick subset (tor data, one flow count), for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Concurrent flow counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1024,65536,1048576")]
    flows: Vec<u32>,
    /// Sections to run.
    #[arg(long, value_delimiter = ',', default_value = "testrun,live,peers")]
    sections: Vec<Section>,
    /// Live section: packets per measured run (default 4M; 1M with --quick).
    #[arg(long)]
    live_packets: Option<u64>,
    /// Live section: longest measured run, in seconds.
    #[arg(long, default_value_t = 10)]
    live_seconds: u64,
    /// Peers section: packets per run (default 1M; 200k with --quick).
    #[arg(long)]
    peer_packets: Option<u64>,
    /// Testrun section: a policy that allows every country, on the same workloads, so no
    /// packet enters the flow table; against a normal run this isolates the flow table's cost.
    #[arg(long)]
    allow_all: bool,
    /// Peers section: packets per second, a rate every peer keeps up with.
    #[arg(long, default_value_t = 50_000)]
    peer_rate: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Testrun,
    Live,
    Peers,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Fails once Ctrl-C or SIGTERM arrived, so that the bench unwinds between two bounded
/// runs and every namespace, peer process and attached program is cleaned up by its drop.
fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Countries whose traffic is a violation in the bench policy; everything else is allowed.
const DENIED: [&str; 5] = ["CN", "RU", "IR", "KP", "BY"];

#[derive(Serialize, Clone)]
struct Row {
    dataset: String,
    family: &'static str,
    workload: String,
    flows: u32,
    /// Which lookup the classifier used: the product's (`dir24` for IPv4, `tiered` for
    /// IPv6), `lpm` (one kernel LPM trie per family) or, for IPv6, `hash` (the tiered hash
    /// of `monitor_common::bench::HASH6_TIERS`, with its fallback trie); `copy` is the
    /// product's lookups in the program set for a loader without CAP_PERFMON, which parses
    /// a copy of the frame's head (`exfilmon_bench_copy`). `… only`: the two address
    /// lookups alone (`exfilmon_bench_lookup`, `_lpm`, `_hash6`), without the parse, the
    /// counters and the flow table that the builds share.
    lookup: &'static str,
    baseline_ns: f64,
    total_ns: f64,
    overhead_ns: f64,
    ratio_to_pass: f64,
    /// The flow table's share of the overhead: this program against the same classifier
    /// without the flow table, measured in the same rounds (product lookups only).
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_table_ns: Option<f64>,
    /// The LPM-trie build's overhead divided by this row's, for the product's rows: the
    /// whole classifier, or (`… only` rows) the lookups alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    trie_ratio: Option<f64>,
    /// Share of packets that were violations (tracked in the flow table).
    violation_share: f64,
    flows_created: u64,
    flow_insert_failed: u64,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    packets_per_round: u32,
    rounds: usize,
    datasets: Vec<Dataset>,
    rows: Vec<Row>,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<live::LiveReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<peers::PeersReport>,
}

#[derive(Serialize)]
struct Machine {
    kernel: String,
    cpu: String,
    cpus: usize,
}

#[derive(Serialize)]
struct Dataset {
    name: String,
    ranges_v4: usize,
    prefixes_v4: usize,
    level2_blocks: u32,
    ranges_v6: usize,
    prefixes_v6: usize,
    /// Node words of the IPv6 tiered table (one generation) and its fallback-trie prefixes.
    v6_node_words: u32,
    v6_trie_prefixes: usize,
    /// Entries of the IPv6 tiered hash (the alternative build) and its fallback trie's
    /// prefixes (those longer than /64).
    v6_hash_entries: usize,
    v6_hash_trie_prefixes: usize,
    map_memory: Vec<(String, u64)>,
    load_seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !exfilmon_tests::is_root() {
        bail!("the benchmark loads eBPF programs: run it as root (make bench does)");
    }
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let machine = machine();
    let cpu = pin_to_last_cpu();
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let mut datasets = Vec::new();

    if args.sections.contains(&Section::Testrun) {
        let tor = bench_config(dir.path(), None, args.allow_all)?;
        run_dataset(&args, "tor-geoipdb", &tor, &mut rows, &mut datasets)?;
        if !args.quick {
            let synthetic = synthetic_csv(dir.path(), 500_000)?;
            let config = bench_config(dir.path(), Some(&synthetic), args.allow_all)?;
            run_dataset(&args, "synthetic-500k", &config, &mut rows, &mut datasets)?;
        }
    }
    let live = if args.sections.contains(&Section::Live) {
        check_interrupted()?;
        println!("live veth, exfilmon against XDP_PASS:");
        let live_dir = tempfile::tempdir()?;
        Some(live::run(
            live::LiveArgs {
                packets: args
                    .live_packets
                    .unwrap_or(if args.quick { 1 << 20 } else { 4 << 20 }),
                limit: std::time::Duration::from_secs(args.live_seconds),
                rounds: if args.quick { 1 } else { args.rounds },
                cpu,
            },
            live_dir.path(),
        )?)
    } else {
        None
    };
    let peers = if args.sections.contains(&Section::Peers) {
        check_interrupted()?;
        println!("peers on the same veth: exfilmon, softflowd, pmacctd:");
        let peer_dir = tempfile::tempdir()?;
        Some(peers::run(
            &peers::PeerArgs {
                packets: args
                    .peer_packets
                    .unwrap_or(if args.quick { 200_000 } else { 1_000_000 }),
                rate: args.peer_rate,
                rounds: if args.quick { 1 } else { 3 },
                cpu,
            },
            peer_dir.path(),
        )?)
    } else {
        None
    };

    let report = Report {
        machine,
        packets_per_round: args.packets,
        rounds: args.rounds,
        datasets,
        rows,
        live,
        peers,
    };
    print_table(&report);
    exfilmon_tests::write_json(&args.json, &report)
}

/// A config whose one group (10.0.0.0/9) may reach every country but `DENIED` (every
/// country with `allow_all`).
fn bench_config(
    dir: &std::path::Path,
    csv: Option<&std::path::Path>,
    allow_all: bool,
) -> anyhow::Result<Config> {
    let geoip = csv.map_or_else(String::new, |p| {
        format!(
            "[geoip]\nsources = [{{ format = \"csv\", path = \"{}\" }}]\n",
            p.display()
        )
    });
    let probe = dir.join("probe.toml");
    std::fs::write(
        &probe,
        format!("[home]\nnetworks = [\"10.0.0.0/8\"]\n{geoip}"),
    )?;
    let probe = Config::load(&probe)?;
    let geo = GeoDb::load(&probe.geoip.sources)?;
    let allow: Vec<String> = geo
        .countries()
        .iter()
        .map(ToString::to_string)
        .filter(|c| allow_all || !DENIED.contains(&c.as_str()))
        // The data has a few non-ISO codes (e.g. `AB`); a config only takes ISO ones.
        .filter(|c| monitor::country::CountryCode::parse_config(c).is_ok())
        .map(|c| format!("\"{c}\""))
        .collect();
    let path = dir.join("bench.toml");
    std::fs::write(
        &path,
        format!(
            "[home]\nnetworks = [\"10.0.0.0/8\", \"2001:db8:1::/48\"]\n\
             [[group]]\nname = \"subscribers\"\nnetworks = [\"10.0.0.0/9\", \"2001:db8:1::/48\"]\n\
             allow = [{}]\n{geoip}[flows]\nmax_entries = 2097152\nring_bytes = 16777216\n",
            allow.join(", ")
        ),
    )?;
    Ok(Config::load(&path)?)
}

fn run_dataset(
    args: &Args,
    name: &str,
    config: &Config,
    rows: &mut Vec<Row>,
    datasets: &mut Vec<Dataset>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let geo = GeoDb::load(&config.geoip.sources)?;
    let plan = tables::plan(config, &geo)?;
    let trie4 = u32::try_from(plan.tables.geo.prefix_count_v4())?;
    let trie6 = u32::try_from(plan.tables.geo.prefix_count_v6())?;
    let hash6 = Hash6Plan::build(&plan.tables.geo.v6)
        .map_err(|e| anyhow::anyhow!("{name}: IPv6 tiered hash: {e}"))?;
    let mut sizes = Sizes::for_geo(
        config.flows.max_entries,
        config.flows.ring_bytes,
        &plan.tables.geo,
    );
    sizes.bench = Some(BenchSizes {
        workload: args.packets,
        trie4,
        trie6,
        hash6: u32::try_from(hash6.entries.len())?,
        hash6_trie: u32::try_from(hash6.trie.len())?,
    });
    let mut monitor = Monitor::load(sizes)?;
    let mut kernel = kernel_config(config);
    // Events are not what is measured here: wake the (absent) reader never.
    kernel.wakeup_bytes = u64::MAX;
    monitor.write_config(kernel)?;
    monitor.write_tables(&plan.tables)?;
    let installed = monitor.install_geo(&plan.tables.geo)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let prefixes = monitor.write_bench_trie4(&plan.tables.geo.v4)?;
    let prefixes6 = monitor.write_bench_trie6(&plan.tables.geo.v6)?;
    let hash_started = Instant::now();
    monitor.write_bench_hash6(&hash6)?;
    println!(
        "{name}: IPv6 tiered hash: {} entries in {} tiers, {} fallback-trie prefixes, \
         filled in {:.1} s",
        hash6.entries.len(),
        monitor_common::bench::HASH6_TIERS.len(),
        hash6.trie.len(),
        hash_started.elapsed().as_secs_f64()
    );
    println!(
        "{name}: {} IPv4 ranges ({prefixes} prefixes, {} level-2 blocks), {} IPv6 ranges \
         ({prefixes6} prefixes; tiered: {} node words, {} trie prefixes), loaded in \
         {load_seconds:.1} s",
        plan.tables.geo.v4.len(),
        installed.l2_used,
        plan.tables.geo.v6.len(),
        installed.v6_words,
        installed.v6_trie,
    );
    datasets.push(Dataset {
        name: name.to_owned(),
        ranges_v4: plan.tables.geo.v4.len(),
        prefixes_v4: prefixes,
        level2_blocks: installed.l2_used,
        ranges_v6: plan.tables.geo.v6.len(),
        prefixes_v6: prefixes6,
        v6_node_words: installed.v6_words,
        v6_trie_prefixes: installed.v6_trie,
        v6_hash_entries: hash6.entries.len(),
        v6_hash_trie_prefixes: hash6.trie.len(),
        map_memory: monitor.map_memory(),
        load_seconds,
    });

    run_workloads(args, name, &mut monitor, &Destinations::new(&geo), rows)
}

/// Every workload of one dataset.
fn run_workloads(
    args: &Args,
    name: &str,
    monitor: &mut Monitor,
    dests: &Destinations,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(0x00ef_11a0);
    let flow_counts = if args.quick {
        &args.flows[..1]
    } else {
        &args.flows[..]
    };
    for &flows in flow_counts {
        for shape in [Shape::Zipf, Shape::Uniform] {
            let workload = established(&mut rng, dests, flows, shape, args.packets, false);
            let label = format!("{} destinations, established", shape.name());
            measure(
                args, monitor, name, "ipv4", &label, flows, &workload, true, None, rows,
            )?;
        }
    }
    // The storm: every packet a new flow, 90% of them allowed (no flow entry), 10% new
    // violations that must be inserted into an LRU already full.
    let mut epoch = 0u32;
    let mut storm = || {
        epoch += 1;
        new_flow_storm(&mut rng, dests, args.packets, epoch)
    };
    let first = storm();
    measure(
        args,
        monitor,
        name,
        "ipv4",
        "new-flow storm, 90% match no rule",
        args.packets,
        &first,
        true,
        Some(&mut storm),
        rows,
    )?;
    if !dests.v6.is_empty() {
        for shape in [Shape::Zipf, Shape::Uniform] {
            let workload = established(&mut rng, dests, 1 << 16, shape, args.packets, true);
            let label = format!("{} destinations, established", shape.name());
            measure(
                args,
                monitor,
                name,
                "ipv6",
                &label,
                1 << 16,
                &workload,
                true,
                None,
                rows,
            )?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Shape {
    Zipf,
    Uniform,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Zipf => "Zipf",
            Shape::Uniform => "uniform",
        }
    }
}

/// Remote addresses to draw from: located addresses, split by verdict.
struct Destinations {
    allowed: Vec<u32>,
    denied: Vec<u32>,
    v6: Vec<u128>,
}

impl Destinations {
    fn new(geo: &GeoDb) -> Self {
        let denied_codes: BTreeSet<String> = DENIED.iter().map(|s| (*s).to_owned()).collect();
        let mut rng = StdRng::seed_from_u64(7);
        let (mut allowed, mut denied) = (Vec::new(), Vec::new());
        let ranges = geo.ranges_v4();
        // Uniform over the located address space: ranges weighted by their size.
        let mut cumulative = Vec::with_capacity(ranges.len());
        let mut total = 0u64;
        for &(a, b, _) in ranges {
            total += u64::from(b - a) + 1;
            cumulative.push(total);
        }
        while allowed.len() < 1 << 20 || denied.len() < 1 << 17 {
            let x = rng.random_range(0..total);
            let i = cumulative.partition_point(|&c| c <= x);
            let (a, b, cc) = ranges[i];
            let addr = a + rng.random_range(0..=b - a);
            if addr >> 24 == 10 {
                continue;
            }
            if denied_codes.contains(&cc.to_string()) {
                if denied.len() < 1 << 17 {
                    denied.push(addr);
                }
            } else if allowed.len() < 1 << 20 {
                allowed.push(addr);
            }
        }
        let v6 = geo
            .ranges_v6()
            .iter()
            .take(1 << 20)
            .map(|&(a, b, _)| a + (b - a) / 2)
            .filter(|a| a >> 120 != 0xff)
            .collect();
        Destinations {
            allowed,
            denied,
            v6,
        }
    }

    /// A destination of the located space: allowed or denied in proportion to the data.
    fn any(&self, rng: &mut StdRng) -> u32 {
        let n = self.allowed.len() + self.denied.len();
        let i = rng.random_range(0..n);
        if i < self.allowed.len() {
            self.allowed[i]
        } else {
            self.denied[i - self.allowed.len()]
        }
    }
}

/// `flows` flows (inside address, port, destination); `packets` packets drawn from them
/// with the given popularity shape.
fn established(
    rng: &mut StdRng,
    dests: &Destinations,
    flows: u32,
    shape: Shape,
    packets: u32,
    v6: bool,
) -> Vec<BenchPacket> {
    let table: Vec<BenchPacket> = (0..flows)
        .map(|i| {
            let src = 0x0a00_0000 | (i & 0x007f_ffff);
            let sport = 1024 + (i % 60_000) as u16;
            if v6 {
                let dst = dests.v6[rng.random_range(0..dests.v6.len())];
                let mut p = BenchPacket {
                    sport: sport.to_be_bytes(),
                    dport: 443u16.to_be_bytes(),
                    ..BenchPacket::default()
                };
                p.src =
                    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16).octets();
                p.dst = dst.to_be_bytes();
                p
            } else {
                BenchPacket::v4(src, dests.any(rng), sport)
            }
        })
        .collect();
    let zipf = (matches!(shape, Shape::Zipf)).then(|| zipf_cdf(flows as usize, 1.0));
    (0..packets)
        .map(|_| {
            let i = match &zipf {
                Some(cdf) => {
                    let x: f64 = rng.random();
                    cdf.partition_point(|&c| c < x).min(cdf.len() - 1)
                }
                None => rng.random_range(0..flows as usize),
            };
            table[i]
        })
        .collect()
}

/// Cumulative Zipf(s) probabilities of ranks 1..=n.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// Every packet a new flow: 90% to allowed countries, 10% new violations. Each `epoch`
/// uses other source addresses, so no flow repeats between runs.
fn new_flow_storm(
    rng: &mut StdRng,
    dests: &Destinations,
    packets: u32,
    epoch: u32,
) -> Vec<BenchPacket> {
    (0..packets)
        .map(|i| {
            let src = 0x0a00_0000 | (i.wrapping_add(epoch.wrapping_mul(packets)) & 0x007f_ffff);
            let dst = if i % 10 == 0 {
                dests.denied[rng.random_range(0..dests.denied.len())]
            } else {
                dests.allowed[rng.random_range(0..dests.allowed.len())]
            };
            BenchPacket::v4(src, dst, 1024 + (i >> 23) as u16 + (i % 7) as u16)
        })
        .collect()
}

#[expect(clippy::too_many_arguments, reason = "one row of the report")]
fn measure(
    args: &Args,
    monitor: &mut Monitor,
    dataset: &str,
    family: &'static str,
    workload_name: &str,
    flows: u32,
    workload: &[BenchPacket],
    with_lpm: bool,
    mut fresh: Option<&mut dyn FnMut() -> Vec<BenchPacket>>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    monitor.write_bench_workload(workload)?;
    let frame = bench_frame(family)?;
    let repeat = u32::try_from(workload.len())?;
    let (product, product_only) = if family == "ipv4" {
        ("dir24", "dir24 only")
    } else {
        ("tiered", "tiered only")
    };
    let mut programs_to_run = vec![(product, programs::BENCH), ("copy", programs::BENCH_COPY)];
    if with_lpm {
        programs_to_run.extend([
            ("lpm", programs::BENCH_LPM),
            (product_only, programs::BENCH_LOOKUP),
            ("lpm only", programs::BENCH_LOOKUP_LPM),
        ]);
        // Every build must classify the workload alike, or its time means nothing.
        let mut builds = vec![programs::BENCH, programs::BENCH_LPM];
        if family == "ipv6" {
            programs_to_run.extend([
                ("hash", programs::BENCH_HASH6),
                ("hash only", programs::BENCH_LOOKUP_HASH6),
            ]);
            builds.push(programs::BENCH_HASH6);
        }
        same_classes(monitor, &frame, repeat, &builds)?;
    }
    // Warm-up: one pass creates the flows ("established") and warms the caches. A storm
    // gets fresh flows for every measured run instead.
    monitor.bench_run(programs::BENCH, &frame, repeat)?;
    let before = monitor.read_counters()?.reasons;
    let verdicts_before = verdict_totals(monitor)?;
    let mut pass = Vec::new();
    let mut totals: Vec<Vec<f64>> = vec![Vec::new(); programs_to_run.len()];
    let mut noflow = Vec::new();
    for _ in 0..args.rounds {
        pass.push(ns(monitor.bench_run(
            programs::BENCH_PASS,
            &frame,
            repeat,
        )?));
        for (i, (_, program)) in programs_to_run.iter().enumerate() {
            if let Some(next) = fresh.as_mut() {
                monitor.write_bench_workload(&next())?;
            }
            totals[i].push(ns(monitor.bench_run(program, &frame, repeat)?));
        }
        noflow.push(ns(monitor.bench_run(
            programs::BENCH_NOFLOW,
            &frame,
            repeat,
        )?));
    }
    let noflow = median(&mut noflow);
    let after = monitor.read_counters()?.reasons;
    let verdicts_after = verdict_totals(monitor)?;
    let delta = |r: u32| after[r as usize] - before[r as usize];
    let violation_share = (verdicts_after.0 - verdicts_before.0) as f64
        / (verdicts_after.1 - verdicts_before.1).max(1) as f64;
    let baseline = median(&mut pass);
    let totals: Vec<f64> = totals.iter_mut().map(|t| median(t)).collect();
    let overhead_of = |name: &str| {
        programs_to_run
            .iter()
            .position(|(lookup, _)| *lookup == name)
            .map(|i| totals[i] - baseline)
    };
    let trie_ratio = |name: &str, trie: &str| {
        overhead_of(trie)
            .zip(overhead_of(name))
            .map(|(trie, ours)| trie / ours)
    };
    for (i, (lookup, _)) in programs_to_run.iter().enumerate() {
        let total = totals[i];
        let row = Row {
            dataset: dataset.to_owned(),
            family,
            workload: workload_name.to_owned(),
            flows,
            lookup,
            baseline_ns: baseline,
            total_ns: total,
            overhead_ns: total - baseline,
            ratio_to_pass: total / baseline,
            flow_table_ns: (*lookup == product).then_some(total - noflow),
            trie_ratio: match *lookup {
                l if l == product || l == "hash" => trie_ratio(l, "lpm"),
                l if l == product_only || l == "hash only" => trie_ratio(l, "lpm only"),
                _ => None,
            },
            violation_share,
            flows_created: delta(reason::FLOW_CREATED),
            flow_insert_failed: delta(reason::FLOW_INSERT_FAILED),
        };
        print_row(&row);
        rows.push(row);
    }
    Ok(())
}

/// The frame each test run rewrites: an untagged 64-byte UDP frame of the family.
fn bench_frame(family: &str) -> anyhow::Result<Vec<u8>> {
    Ok(if family == "ipv4" {
        eth_v4(&ipv4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(192, 0, 2, 1),
            UDP,
            &udp(1024, 443, &[0; 22]),
        ))
    } else {
        eth_v6(&ipv6(
            "2001:db8:1::1".parse()?,
            "2001:db8::1".parse()?,
            &[],
            UDP,
            &udp(1024, 443, &[0; 2]),
        ))
    })
}

/// One measured row, as the run goes.
fn print_row(row: &Row) {
    println!(
        "  {} {:<40} {:>8} flows  {:<11} {:>7.1} ns/packet, +{:>6.1} over XDP_PASS ({:.1} ns){}{}",
        row.family,
        row.workload,
        row.flows,
        row.lookup,
        row.total_ns,
        row.overhead_ns,
        row.baseline_ns,
        row.flow_table_ns
            .map_or_else(String::new, |f| format!(", flow table {f:.1} ns")),
        row.trie_ratio
            .map_or_else(String::new, |r| format!(", LPM trie ÷ this {r:.1}×")),
    );
}

/// Runs each of `programs` once over the whole workload and fails unless they counted the
/// same packets in the same classes.
fn same_classes(
    monitor: &Monitor,
    frame: &[u8],
    repeat: u32,
    programs: &[&'static str],
) -> anyhow::Result<()> {
    let classes = |monitor: &Monitor| -> anyhow::Result<BTreeMap<u32, u64>> {
        Ok(monitor
            .read_counters()?
            .classes
            .into_iter()
            .map(|(i, c)| (i, c.packets))
            .collect())
    };
    let mut first: Option<(&str, BTreeMap<u32, u64>)> = None;
    for &program in programs {
        let before = classes(monitor)?;
        monitor.bench_run(program, frame, repeat)?;
        let mut delta = classes(monitor)?;
        for (i, n) in &mut delta {
            *n -= before.get(i).copied().unwrap_or(0);
        }
        delta.retain(|_, n| *n != 0);
        match &first {
            None => first = Some((program, delta)),
            Some((name, want)) if *want != delta => {
                bail!("{program} classified the workload unlike {name}: {delta:?} vs {want:?}")
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Violation packets and all classified packets, from the class counters.
fn verdict_totals(monitor: &Monitor) -> anyhow::Result<(u64, u64)> {
    let mut violations = 0;
    let mut all = 0;
    for (index, c) in monitor.read_counters()?.classes {
        all += c.packets;
        if class_parts(index).3 == VERDICT_VIOLATION {
            violations += c.packets;
        }
    }
    Ok((violations, all))
}

fn ns(d: std::time::Duration) -> f64 {
    d.as_nanos() as f64
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A synthetic table of `n` disjoint IPv4 prefixes with a BGP-like length mix (mostly /24,
/// a tail of /25–/32 that exercises level 2), random countries.
fn synthetic_csv(dir: &std::path::Path, n: usize) -> anyhow::Result<PathBuf> {
    let codes = [
        "US", "DE", "FR", "GB", "JP", "BR", "IN", "SG", "NL", "SE", "CN", "RU", "AU", "CA", "ZA",
    ];
    let mut rng = StdRng::seed_from_u64(500_000);
    let mut taken = std::collections::BTreeMap::<u32, u32>::new();
    while taken.len() < n {
        let len = match rng.random_range(0..100) {
            0..55 => 24,
            55..85 => rng.random_range(20..24),
            85..95 => rng.random_range(16..20),
            _ => rng.random_range(25..=32),
        };
        let mask = if len == 32 {
            u32::MAX
        } else {
            !(u32::MAX >> len)
        };
        let first = rng.random::<u32>() & mask;
        let last = first | !mask;
        if first >> 24 == 10 || first >> 28 >= 0xe {
            continue;
        }
        // Disjoint: no earlier prefix may start inside, or contain the start.
        let overlaps = taken
            .range(..=last)
            .next_back()
            .is_some_and(|(_, &e)| e >= first);
        if !overlaps {
            taken.insert(first, last);
        }
    }
    let mut text = String::with_capacity(n * 32);
    for (first, last) in taken {
        let cc = codes[rng.random_range(0..codes.len())];
        writeln!(
            text,
            "{},{},{cc}",
            Ipv4Addr::from(first),
            Ipv4Addr::from(last)
        )?;
    }
    let path = dir.join("synthetic-500k.csv");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Pins the calling thread (and so the threads it starts) to the last CPU; returns it.
fn pin_to_last_cpu() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpus - 1).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
    cpus - 1
}

fn machine() -> Machine {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    Machine {
        kernel,
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
    }
}

fn print_table(report: &Report) {
    if !report.rows.is_empty() {
        print_testrun_table(report);
    }
    if let Some(live) = &report.live {
        live::print_table(live);
    }
    if let Some(peers) = &report.peers {
        peers::print_table(peers);
    }
    println!(
        "machine: {} ({} vCPU), Linux {}",
        report.machine.cpu, report.machine.cpus, report.machine.kernel
    );
}

fn print_testrun_table(report: &Report) {
    let mut t = comfy_table::Table::new();
    t.set_header([
        "dataset",
        "family",
        "workload",
        "flows",
        "lookup",
        "ns/packet",
        "XDP_PASS ns",
        "overhead ns",
        "× XDP_PASS",
        "flow table ns",
        "trie ÷ this",
        "new flows",
        "insert failed",
        "violations",
    ]);
    for r in &report.rows {
        t.add_row([
            r.dataset.clone(),
            r.family.to_owned(),
            r.workload.clone(),
            r.flows.to_string(),
            r.lookup.to_owned(),
            format!("{:.1}", r.total_ns),
            format!("{:.1}", r.baseline_ns),
            format!("{:.1}", r.overhead_ns),
            format!("{:.2}", r.ratio_to_pass),
            r.flow_table_ns
                .map_or_else(String::new, |f| format!("{f:.1}")),
            r.trie_ratio
                .map_or_else(String::new, |f| format!("{f:.1}×")),
            r.flows_created.to_string(),
            r.flow_insert_failed.to_string(),
            format!("{:.1}%", 100.0 * r.violation_share),
        ]);
    }
    println!("{t}");
}
