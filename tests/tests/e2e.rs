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
    daemon::{Daemon, Metrics},
    lab::{INSIDE_IF, PHONE_V4, SERVER_CN_V4},
    promtool_check_metrics, replay_json, require_root, scenario,
    traffic::{udp_burst, udp_sink},
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
    let lint = promtool_check_metrics(&daemon.scrape_text().expect("scrape"));
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
}
