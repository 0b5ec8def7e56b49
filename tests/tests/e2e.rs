//! End to end: the lab's real traffic through the real daemon. /metrics must equal the
//! layer-3 bytes sent; a capture of the same traffic replayed through `exfilmon replay`
//! must give the same aggregates; a real Prometheus must scrape it; promtool must find
//! nothing to say; SIGTERM must detach cleanly.

#![expect(
    clippy::cast_precision_loss,
    clippy::float_cmp,
    reason = "Prometheus values are f64; the test's counts are exact integers far below 2^53"
)]

use std::{collections::BTreeMap, net::SocketAddr, process::Command, time::Duration};

use exfilmon_tests::{
    Capture, Lab, Node, Prometheus,
    daemon::{Daemon, Metrics, free_port, write_lab_config},
    lab::{INSIDE_IF, PHONE_V4, SERVER_CN_V4},
    promtool_check_metrics, replay_json, require_root, scenario,
    traffic::{udp_burst, udp_paced, udp_sink},
};
use nix::sys::signal::Signal;

/// How long a scrape may take to show what the test did.
const WAIT: Duration = Duration::from_secs(20);

type Key = (String, String, String, String);

fn key(labels: &BTreeMap<String, String>) -> Key {
    let l = |k: &str| labels.get(k).cloned().unwrap_or_default();
    (l("group"), l("country"), l("direction"), l("verdict"))
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
#[expect(
    clippy::too_many_lines,
    reason = "one lab, one story, checked step by step"
)]
fn lab_traffic_is_counted_exactly_and_replay_and_prometheus_agree() {
    require_root("lab_traffic_is_counted_exactly_and_replay_and_prometheus_agree");
    let lab = Lab::new().expect("lab");
    let daemon = Daemon::start(&lab).expect("daemon");
    let prometheus =
        Prometheus::start(&[daemon.metrics], Duration::from_secs(1)).expect("prometheus");
    let pcap = daemon.dir().join("inside.pcap");
    let capture = Capture::start(lab.ns(Node::Router), INSIDE_IF, &pcap).expect("tcpdump");

    let sent = scenario::run(&lab).expect("scenario");
    std::thread::sleep(Duration::from_millis(500));
    let cap = capture.stop().expect("stop tcpdump");
    assert_eq!(
        cap.dropped, 0,
        "tcpdump dropped packets: the comparison would be meaningless"
    );

    // 1. /metrics equals the layer-3 bytes that were sent, series by series.
    let metrics = daemon.scrape().expect("scrape");
    for e in &sent.exact {
        let labels = [
            ("group", e.group),
            ("country", e.country),
            ("direction", e.direction),
            ("verdict", e.verdict),
        ];
        assert_eq!(
            metrics.sum("exfilmon_bytes_total", &labels),
            e.l3_bytes as f64,
            "bytes: {}",
            e.what
        );
        assert_eq!(
            metrics.sum("exfilmon_packets_total", &labels),
            e.packets as f64,
            "packets: {}",
            e.what
        );
        println!(
            "{}: {} packets, {} bytes — metrics agree",
            e.what, e.packets, e.l3_bytes
        );
    }
    let home = [
        ("group", "phones"),
        ("country", "CN"),
        ("direction", "outbound"),
        ("verdict", "violation"),
    ];
    assert!(
        metrics.sum("exfilmon_bytes_total", &home) > scenario::PHONE_HOME.len() as f64,
        "the phone's call home to CN is counted as a violation"
    );
    let download = [
        ("group", "laptops"),
        ("country", "US"),
        ("direction", "inbound"),
        ("verdict", "allowed"),
    ];
    assert!(metrics.sum("exfilmon_bytes_total", &download) > sent.download.response_bytes as f64);

    // 2. The capture, replayed through the same kernel program, gives the same aggregates.
    let report = replay_json(&daemon.config, &[&pcap]);
    let mut replayed: BTreeMap<Key, (f64, f64)> = BTreeMap::new();
    for a in report["aggregates"].as_array().expect("aggregates") {
        let labels: BTreeMap<String, String> = ["group", "country", "direction", "verdict"]
            .iter()
            .map(|k| ((*k).to_owned(), a[k].as_str().expect("label").to_owned()))
            .collect();
        replayed.insert(
            key(&labels),
            (
                a["packets"].as_f64().expect("packets"),
                a["bytes"].as_f64().expect("bytes"),
            ),
        );
    }
    let mut live: BTreeMap<Key, (f64, f64)> = BTreeMap::new();
    for (labels, v) in metrics.get("exfilmon_packets_total") {
        live.entry(key(labels)).or_default().0 = *v;
    }
    for (labels, v) in metrics.get("exfilmon_bytes_total") {
        live.entry(key(labels)).or_default().1 = *v;
    }
    assert_eq!(
        replayed, live,
        "replay aggregates must equal the live counters"
    );
    println!(
        "replay of {} captured frames: {} aggregates equal the live counters",
        cap.captured,
        live.len()
    );
    let flows = report["flows"].as_array().expect("flows");
    assert!(
        flows
            .iter()
            .any(|f| f["dst"] == "203.0.113.10" && f["dport"] == 443 && f["country"] == "CN"),
        "the call home is a reported flow: {flows:?}"
    );

    // 3. A real Prometheus scrapes it and PromQL returns the bytes sent.
    prometheus
        .wait_for(
            "up",
            |s| s.len() == 1 && (s[0].1 - 1.0).abs() < f64::EPSILON,
            Duration::from_secs(20),
        )
        .expect("up == 1");
    let e = &sent.exact[0];
    let q = format!(
        "sum(exfilmon_bytes_total{{group=\"{}\",country=\"{}\",direction=\"outbound\"}})",
        e.group, e.country
    );
    prometheus
        .wait_for(
            &q,
            |s| s.len() == 1 && s[0].1 == e.l3_bytes as f64,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|err| panic!("PromQL {q}: {err:#}"));

    // 4. promtool has nothing to say about the exposition.
    let text = daemon.scrape_text().expect("scrape");
    let lint = promtool_check_metrics(&text);
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");

    // 5. The event log holds the violation flows.
    std::thread::sleep(Duration::from_millis(400));
    let log = std::fs::read_to_string(&daemon.event_log).expect("event log");
    assert!(
        log.lines()
            .any(|l| l.contains("\"event\":\"flow_start\"")
                && l.contains("\"dst\":\"203.0.113.10\"")),
        "event log lacks the call home:\n{log}"
    );

    // 6. SIGTERM exits cleanly and leaves the pinned programs counting; `exfilmon cleanup`
    //    then leaves no program on the interface.
    let router = lab.ns(Node::Router).name().to_owned();
    let pins = exfilmon_tests::daemon::pin_dir_of(&daemon.config)
        .expect("config")
        .expect("the lab pins");
    let (status, log) = daemon.stop_keeping_pins().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
    assert!(
        lab.xdp_program_id(INSIDE_IF).is_some(),
        "the pinned XDP program stays attached at exit"
    );
    let cleanup = Command::new(exfilmon_tests::exfilmon_bin())
        .args(["cleanup", "--pin-dir"])
        .arg(&pins)
        .output()
        .expect("exfilmon cleanup");
    let said = String::from_utf8_lossy(&cleanup.stdout);
    assert!(cleanup.status.success(), "cleanup failed: {said}");
    assert!(
        said.contains("removed 2 links") && said.contains("13 maps"),
        "cleanup names what it removed: {said}"
    );
    println!("exfilmon cleanup: {}", said.trim());

    // 7. At shutdown the event log gets every flow's final totals: the last record of the
    //    laptop's IPv6 upload to CN carries exactly the bytes sent.
    let upload = sent
        .exact
        .iter()
        .find(|e| e.group == "laptops" && e.country == "CN")
        .expect("upload");
    let last = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["dst"] == "2001:db8:ff:86::10")
        .expect("the IPv6 upload is in the event log");
    assert_eq!(
        last["bytes_out"].as_u64(),
        Some(upload.l3_bytes),
        "final totals: {last}"
    );
    assert_eq!(
        lab.xdp_program_id(INSIDE_IF),
        None,
        "XDP program left attached after the cleanup"
    );
    let tc = Command::new("ip")
        .args([
            "netns", "exec", &router, "tc", "filter", "show", "dev", INSIDE_IF, "egress",
        ])
        .output()
        .expect("tc");
    assert!(
        String::from_utf8_lossy(&tc.stdout).trim().is_empty(),
        "TC program left attached"
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
#[expect(
    clippy::too_many_lines,
    reason = "one daemon through four reloads, checked step by step"
)]
fn sighup_reloads_the_config_without_losing_a_count() {
    require_root("sighup_reloads_the_config_without_losing_a_count");
    let lab = Lab::new().expect("lab");
    let daemon = Daemon::start(&lab).expect("daemon");
    let dst = SocketAddr::new(SERVER_CN_V4.into(), 9100);
    let sink = udp_sink(lab.ns(Node::Inet), dst).expect("sink");
    let mut sent = 0;
    let mut burst = |count: usize| {
        udp_burst(lab.ns(Node::Phone), Some(PHONE_V4.into()), dst, count, 100).expect("burst");
        sent += count as u64;
        assert_eq!(
            sink.wait_for(sent, Duration::from_secs(10)).packets,
            sent,
            "every datagram arrived"
        );
    };
    let to_cn = |verdict: &'static str| {
        move |m: &Metrics| {
            m.sum(
                "exfilmon_packets_total",
                &[
                    ("group", "phones"),
                    ("country", "CN"),
                    ("direction", "outbound"),
                    ("verdict", verdict),
                ],
            )
        }
    };
    let reloads = |result: &'static str| {
        move |m: &Metrics| m.sum("exfilmon_config_reloads_total", &[("result", result)])
    };

    burst(10);
    daemon
        .wait_for("10 violations", WAIT, |m| to_cn("violation")(m) == 10.0)
        .expect("counted");

    // Phones may reach CN now.
    let good = std::fs::read_to_string(&daemon.config).expect("config");
    let allowed = good.replace("allow = [\"SG\"]", "allow = [\"SG\", \"CN\"]");
    assert_ne!(allowed, good, "the lab config lets phones reach SG");
    std::fs::write(&daemon.config, &allowed).expect("write config");
    daemon.signal(Signal::SIGHUP).expect("SIGHUP");
    daemon
        .wait_for("a successful reload", WAIT, |m| {
            reloads("success")(m) == 1.0
        })
        .expect("reloaded");
    burst(5);
    let m = daemon
        .wait_for("5 allowed", WAIT, |m| to_cn("allowed")(m) == 5.0)
        .expect("the new policy applies");
    assert_eq!(to_cn("violation")(&m), 10.0, "no count was lost or reset");
    assert_eq!(m.sum("exfilmon_config_last_reload_successful", &[]), 1.0);

    // A broken config is refused, named in the log, and the running one stays.
    std::fs::write(
        &daemon.config,
        allowed.replace("[home]", "[home]\nnetworks = ["),
    )
    .expect("write");
    daemon.signal(Signal::SIGHUP).expect("SIGHUP");
    // A scrape is not one snapshot (the registry reads its collectors one by one, in no
    // fixed order), so the gauge and the counter are waited for together.
    daemon
        .wait_for("a refused reload, and the gauge saying so", WAIT, |m| {
            reloads("failure")(m) == 1.0
                && m.sum("exfilmon_config_last_reload_successful", &[]) == 0.0
        })
        .expect("refused");
    burst(5);
    daemon
        .wait_for("10 allowed", WAIT, |m| to_cn("allowed")(m) == 10.0)
        .expect("still classifying with the running config");
    // A GeoIP file corrupt at its last line, under the good config, whose good lines move
    // the CN server to the US: refused the same way, nothing of it applied (the server
    // stays CN, allowed).
    std::fs::write(&daemon.config, &allowed).expect("write");
    let geoip = daemon.config.with_file_name("geoip.csv");
    let good_geoip = std::fs::read_to_string(&geoip).expect("geoip.csv");
    let moved = good_geoip.replace(",CN", ",US");
    assert_ne!(moved, good_geoip, "the lab's GeoIP file has CN");
    std::fs::write(&geoip, format!("{moved}not,a,row\n")).expect("write");
    daemon.signal(Signal::SIGHUP).expect("SIGHUP");
    let m = daemon
        .wait_for("a second refused reload", WAIT, |m| {
            reloads("failure")(m) == 2.0
        })
        .expect("refused");
    assert_eq!(m.sum("exfilmon_config_last_reload_successful", &[]), 0.0);
    burst(5);
    daemon
        .wait_for("15 allowed", WAIT, |m| to_cn("allowed")(m) == 15.0)
        .expect("still classifying with the running tables");
    let log = daemon.log();
    let bad_line = good_geoip.lines().count() + 1;
    assert!(
        log.contains("reload refused") && log.contains("exfilmon.toml:"),
        "the log names the file and line:\n{log}"
    );
    assert!(
        log.contains(&format!("geoip.csv:{bad_line}")),
        "the log names the GeoIP file and line:\n{log}"
    );
    println!("{log}");
    std::fs::write(&geoip, &good_geoip).expect("write");
    assert_eq!(
        prefixes(&m),
        planned_prefixes(&daemon.config),
        "the GeoIP gauges still describe the running tables"
    );

    // A GeoIP file with one more IPv4 range: the gauges follow the reload.
    let grown = format!("{good_geoip}198.51.100.128,198.51.100.255,US\n");
    std::fs::write(&geoip, &grown).expect("write");
    let want = planned_prefixes(&daemon.config);
    assert_eq!(
        want.0,
        prefixes(&m).0 + 1.0,
        "the new range is one more IPv4 prefix"
    );
    daemon.signal(Signal::SIGHUP).expect("SIGHUP");
    daemon
        .wait_for("the grown tables' gauges", WAIT, |m| {
            reloads("success")(m) == 2.0 && prefixes(m) == want
        })
        .expect("the gauges follow the reload");

    let lint = promtool_check_metrics(&daemon.scrape_text().expect("scrape"));
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
}

/// `exfilmon_geoip_prefixes` for IPv4 and IPv6.
fn prefixes(m: &Metrics) -> (f64, f64) {
    let family = |f| m.sum("exfilmon_geoip_prefixes", &[("family", f)]);
    (family("ipv4"), family("ipv6"))
}

/// The prefixes the config's GeoIP sources make, planned here as the daemon plans them.
fn planned_prefixes(config: &std::path::Path) -> (f64, f64) {
    let config = monitor::config::Config::load(config).expect("config");
    let geo = monitor::geoip::GeoDb::load(&config.geoip.sources).expect("geoip");
    let plan = monitor::tables::plan(&config, &geo).expect("plan");
    (
        plan.tables.geo.prefix_count_v4() as f64,
        plan.tables.geo.prefix_count_v6() as f64,
    )
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn geoip_reloads_under_traffic_count_every_packet_once() {
    const COUNT: usize = 6_000;
    const RELOADS: u32 = 6;
    require_root("geoip_reloads_under_traffic_count_every_packet_once");
    let lab = Lab::new().expect("lab");
    let daemon = Daemon::start(&lab).expect("daemon");
    let dst = SocketAddr::new(SERVER_CN_V4.into(), 9100);
    let sink = udp_sink(lab.ns(Node::Inet), dst).expect("sink");
    let geoip = daemon.config.with_file_name("geoip.csv");
    let in_cn = std::fs::read_to_string(&geoip).expect("geoip.csv");
    let in_us = in_cn.replace(",CN", ",US");
    assert_ne!(in_us, in_cn, "the lab's GeoIP file has CN");

    // One datagram a millisecond for 6 s; a reload every 0.6 s or so, the server moving
    // between CN and US each time.
    let sender = udp_paced(
        lab.ns(Node::Phone),
        Some(PHONE_V4.into()),
        dst,
        COUNT,
        100,
        Duration::from_millis(1),
    )
    .expect("sender");
    for i in 1..=RELOADS {
        std::thread::sleep(Duration::from_millis(500));
        let text = if i % 2 == 1 { &in_us } else { &in_cn };
        std::fs::write(&geoip, text).expect("write geoip.csv");
        daemon.signal(Signal::SIGHUP).expect("SIGHUP");
        daemon
            .wait_for("the reload", WAIT, |m| {
                m.sum("exfilmon_config_reloads_total", &[("result", "success")]) == f64::from(i)
            })
            .expect("reloaded");
    }
    let sent = sender.join().expect("sender thread").expect("send");
    assert_eq!(sent.packets, COUNT as u64, "every datagram was sent");
    assert_eq!(
        sink.wait_for(sent.packets, Duration::from_secs(10)).packets,
        sent.packets,
        "monitoring never drops"
    );

    let to = |m: &Metrics, name: &str, country: &str| {
        m.sum(
            name,
            &[
                ("group", "phones"),
                ("country", country),
                ("direction", "outbound"),
            ],
        )
    };
    let m = daemon
        .wait_for("every datagram counted", WAIT, |m| {
            to(m, "exfilmon_packets_total", "CN") + to(m, "exfilmon_packets_total", "US")
                >= sent.packets as f64
        })
        .expect("counted");
    let (cn, us) = (
        to(&m, "exfilmon_packets_total", "CN"),
        to(&m, "exfilmon_packets_total", "US"),
    );
    assert_eq!(cn + us, sent.packets as f64, "each datagram counted once");
    assert_eq!(
        to(&m, "exfilmon_bytes_total", "CN") + to(&m, "exfilmon_bytes_total", "US"),
        sent.l3_bytes as f64,
        "every layer-3 byte, once"
    );
    assert!(
        cn > 0.0 && us > 0.0,
        "the tables switched while traffic flowed: CN {cn}, US {us}"
    );
    assert_eq!(
        m.sum(
            "exfilmon_packets_total",
            &[
                ("group", "phones"),
                ("country", monitor::tables::UNKNOWN_COUNTRY)
            ]
        ),
        0.0,
        "no packet fell between two generations"
    );
    // One socket, one violation flow in the kernel's table; the idle sweep counts it.
    daemon
        .wait_for("the one tracked flow", WAIT, |m| {
            m.sum("exfilmon_flows_tracked", &[]) == 1.0
        })
        .expect("the sweep counts the kernel's flow table");
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn idle_flows_end_with_their_totals_and_leave_the_table() {
    require_root("idle_flows_end_with_their_totals_and_leave_the_table");
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let config = write_lab_config(&lab, dir.path(), port).expect("config");
    let text = std::fs::read_to_string(&config).expect("config");
    let short = text.replace("idle_timeout_secs = 30", "idle_timeout_secs = 1");
    assert_ne!(short, text, "the lab config sets idle_timeout_secs");
    std::fs::write(&config, short).expect("write config");
    let daemon =
        Daemon::start_with(config, SocketAddr::from(([127, 0, 0, 1], port)), dir).expect("daemon");
    let dst = SocketAddr::new(SERVER_CN_V4.into(), 9100);
    let sink = udp_sink(lab.ns(Node::Inet), dst).expect("sink");
    let sent = udp_burst(lab.ns(Node::Phone), Some(PHONE_V4.into()), dst, 7, 100).expect("burst");
    assert_eq!(sink.wait_for(7, Duration::from_secs(10)).packets, 7);

    // Swept a second after its last packet (sweeps every 250 ms at this timeout): ended
    // as idle, once, and gone from the kernel's table.
    let kind = |m: &Metrics, kind: &str| m.sum("exfilmon_flow_events_total", &[("kind", kind)]);
    let m = daemon
        .wait_for("the flow ended as idle", WAIT, |m| {
            kind(m, "flow_idle") >= 1.0
        })
        .expect("swept");
    std::thread::sleep(Duration::from_secs(1));
    let m2 = daemon.scrape().expect("scrape");
    assert_eq!(kind(&m2, "flow_idle"), 1.0, "ended once");
    assert_eq!(kind(&m, "flow_start"), 1.0, "one flow");
    assert_eq!(
        m2.sum("exfilmon_flows_tracked", &[]),
        0.0,
        "the table is empty"
    );

    let (status, log) = daemon.stop_with_event_log().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
    let idle: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "flow_idle")
        .collect();
    assert_eq!(idle.len(), 1, "one flow_idle record:\n{log}");
    assert_eq!(
        idle[0]["packets"], sent.packets,
        "its final packets:\n{log}"
    );
    assert_eq!(
        idle[0]["bytes"], sent.l3_bytes,
        "its final layer-3 bytes:\n{log}"
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn geoip_inspect_and_the_metrics_describe_the_same_tables() {
    require_root("geoip_inspect_and_the_metrics_describe_the_same_tables");
    let lab = Lab::new().expect("lab");
    let daemon = Daemon::start(&lab).expect("daemon");
    let out = Command::new(exfilmon_tests::exfilmon_bin())
        .args(["geoip", "inspect", "--config"])
        .arg(&daemon.config)
        .output()
        .expect("exfilmon geoip inspect runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "geoip inspect: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `NAME:   N` lines, and the `MAP ┆ BYTES ┆ SIZE` rows of the memory table.
    let figure = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} figure in:\n{text}"))
    };
    let map_bytes = |map: &str| -> f64 {
        text.lines()
            .map(|l| {
                l.split('┆')
                    .map(|c| c.trim_matches(|ch: char| ch == '│' || ch.is_whitespace()))
                    .collect::<Vec<_>>()
            })
            .find(|cells| cells.first() == Some(&map))
            .and_then(|cells| cells.get(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no {map} row in:\n{text}"))
    };
    assert!(
        text.contains("kernel map memory (measured"),
        "as root, inspect measures the maps:\n{text}"
    );
    let geoip = daemon.config.with_file_name("geoip.csv");
    assert!(
        text.lines()
            .any(|l| l.contains(&geoip.display().to_string()) && l.contains("csv")),
        "the source is listed with its format:\n{text}"
    );

    let m = daemon.scrape().expect("scrape");
    assert_eq!(
        (figure("IPv4 prefixes:"), figure("IPv6 prefixes:")),
        prefixes(&m),
        "IPv4 and IPv6 prefixes"
    );
    assert_eq!(
        figure("level-2 blocks:"),
        m.sum("exfilmon_geoip_level2_blocks", &[])
    );
    // The level-1 array has one size (two generations of 2^24 words), measured by both.
    let l1 = m.sum("exfilmon_kernel_map_memory_bytes", &[("map", "GEO4_L1")]);
    assert!(l1 >= f64::from(2u32 << 24) * 4.0, "GEO4_L1: {l1} bytes");
    assert_eq!(map_bytes("GEO4_L1"), l1, "inspect and the metric agree");
    // The source's file time, to the second.
    let modified = std::fs::metadata(&geoip)
        .and_then(|md| md.modified())
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert_eq!(
        m.sum(
            "exfilmon_geoip_source_modified_timestamp_seconds",
            &[("source", "geoip.csv"), ("format", "csv")]
        ),
        modified as f64
    );
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
}
