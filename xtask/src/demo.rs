//! The lab demo behind `make run`, and `make run CONFIG=...` for real interfaces.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use exfilmon_tests::{
    Lab,
    daemon::{Daemon, free_port},
    is_root, scenario,
};

use crate::workspace;

/// The demo's metrics port when it is free (else any free port).
const DEMO_PORT: u16 = 9477;

fn build() -> anyhow::Result<()> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "monitor"])
        .current_dir(workspace())
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("building exfilmon failed");
    }
    Ok(())
}

/// `exfilmon run --config CONFIG` on real interfaces.
pub fn run_real(config: &Path) -> anyhow::Result<()> {
    build()?;
    let bin = workspace().join("target/release/exfilmon");
    let status = Command::new(&bin)
        .arg("run")
        .arg("--config")
        .arg(config)
        .status()
        .context("exfilmon")?;
    if !status.success() {
        bail!("exfilmon exited with {status}");
    }
    Ok(())
}

/// The lab demo.
pub fn run(hold: u64) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the lab demo needs root: it creates network namespaces and loads eBPF programs (try: sudo make run)"
        );
    }
    build()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }

    println!("exfilmon lab demo");
    println!(
        "  devices  phone 192.0.2.10 (group phones: may reach SG), laptop 192.0.2.70 / 2001:db8:1:2::70 (group laptops: may reach US)"
    );
    println!("  policy   home country IN; everything else abroad is a violation");
    println!(
        "  servers  CN 203.0.113.10, SG .70, US .130, IN .200; 198.51.100.200 is in no GeoIP range"
    );
    println!("  exfilmon XDP (outbound) + TC egress (inbound) on the router's inside interface\n");

    let lab = Lab::new().context("building the lab")?;
    let port = if std::net::TcpListener::bind(("127.0.0.1", DEMO_PORT)).is_ok() {
        DEMO_PORT
    } else {
        free_port()?
    };
    let daemon = Daemon::start_on(&lab, port).context("starting exfilmon")?;
    println!(
        "exfilmon is attached; metrics at http://{}/metrics\n",
        daemon.metrics
    );

    let outcome = (|| -> anyhow::Result<()> {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let sent = scenario::run(&lab).context("sending the lab traffic")?;
        std::thread::sleep(Duration::from_millis(400));
        let metrics = daemon.scrape()?;
        print_tables(&metrics);
        println!(
            "\nThe phone's call home ({} bytes of IMEI, number, carrier and contact count) went to CN: \
             it is among the violation flows listed when exfilmon stops.",
            sent.phone_home.request_bytes
        );
        println!(
            "\nTry: curl -s http://{}/metrics | grep exfilmon_bytes_total",
            daemon.metrics
        );
        if hold > 0 {
            println!("Holding the lab for {hold} s (Ctrl-C ends it sooner)...");
            let until = Instant::now() + Duration::from_secs(hold);
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    })();

    let stopped = daemon.stop_with_event_log();
    drop(lab);
    match stopped {
        Ok((status, log)) => {
            print_flows(&log);
            println!("\nexfilmon detached ({status}); lab namespaces removed.");
        }
        Err(e) => println!("\nstopping exfilmon: {e:#}; lab namespaces removed."),
    }
    outcome
}

fn print_tables(metrics: &exfilmon_tests::daemon::Metrics) {
    let mut groups: Vec<&str> = metrics
        .get("exfilmon_bytes_total")
        .iter()
        .filter_map(|(l, _)| l.get("group").map(String::as_str))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_header([
            "country",
            "direction",
            "verdict",
            "packets",
            "bytes",
        ]);
        let mut rows: Vec<_> = metrics
            .get("exfilmon_bytes_total")
            .iter()
            .filter(|(l, _)| l.get("group").map(String::as_str) == Some(group))
            .collect();
        rows.sort_by(|a, b| {
            a.0.get("country")
                .cmp(&b.0.get("country"))
                .then(a.0.get("direction").cmp(&b.0.get("direction")))
        });
        for (l, bytes) in rows {
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            let labels = [
                ("group", group),
                ("country", l.get("country").map_or("", String::as_str)),
                ("direction", l.get("direction").map_or("", String::as_str)),
                ("verdict", l.get("verdict").map_or("", String::as_str)),
            ];
            let packets = metrics.sum("exfilmon_packets_total", &labels);
            t.add_row([
                get("country"),
                get("direction"),
                get("verdict"),
                format!("{packets}"),
                format!("{bytes}"),
            ]);
        }
        println!("group {group}\n{t}");
    }
}

fn print_flows(text: &str) {
    let mut last = std::collections::BTreeMap::new();
    let mut detections = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["event"] == "detection" {
            detections.push(format!(
                "  {} {}: group {} → {}",
                v["time"].as_str().unwrap_or_default(),
                v["detection"].as_str().unwrap_or_default(),
                v["group"].as_str().unwrap_or_default(),
                v["country"].as_str().unwrap_or_default()
            ));
            continue;
        }
        let key = format!(
            "{} {}:{} -> {}:{}",
            v["proto"], v["src"], v["sport"], v["dst"], v["dport"]
        );
        last.insert(key, v);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "group",
        "src",
        "dst",
        "proto",
        "dport",
        "country",
        "bytes out",
        "bytes in",
        "last event",
    ]);
    for v in last.values() {
        let s = |k: &str| {
            v[k].as_str()
                .map_or_else(|| v[k].to_string(), str::to_owned)
        };
        t.add_row([
            s("group"),
            s("src"),
            s("dst"),
            s("proto"),
            s("dport"),
            s("country"),
            s("bytes_out"),
            s("bytes_in"),
            s("event"),
        ]);
    }
    println!("\nviolation flows, final totals from the event log:\n{t}");
    if !detections.is_empty() {
        println!(
            "\ndetections from the event log:\n{}",
            detections.join("\n")
        );
    }
}
