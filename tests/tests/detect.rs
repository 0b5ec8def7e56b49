//! Detections end to end: the lab's traffic through the real daemon, with short windows.
//! First contact fires once per group and foreign country (never for domestic traffic) and
//! not again after a restart with the same state directory; a bulk upload fires volume and
//! asymmetry; regular small connections fire beaconing; a download fires neither. A capture
//! of the same traffic replayed gives the same detections.

#![expect(
    clippy::float_cmp,
    reason = "Prometheus values are f64; the test's counts are small exact integers"
)]

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use exfilmon_tests::{
    Capture, Lab, Node,
    daemon::{Daemon, Metrics, free_port, write_lab_config},
    lab::{INSIDE_IF, PHONE_V4, SERVER_CN_V4, SERVER_IN_V4, SERVER_SG_V4, SERVER_US_V4},
    replay_json, require_root,
    traffic::{tcp_exchange, udp_burst, udp_sink},
};

const WAIT: Duration = Duration::from_secs(30);
/// The asymmetry and volume windows, seconds.
const WINDOW: u64 = 4;
/// Flows in a beacon.
const BEACONS: u32 = 4;

/// Short windows, so that the test takes seconds: 1 s ticks, 4 s windows, 50 kB
/// thresholds, beacons of 4 small flows at least 1 s apart.
const DETECTIONS: &str = "
tick_secs = 1
[detections.asymmetry]
window_secs = 4
ratio = 5
min_bytes = 50000
[detections.volume]
window_secs = 4
min_bytes = 50000
[detections.beaconing]
min_flows = 4
max_flow_bytes = 8192
max_jitter = 0.3
min_interval_secs = 1
max_interval_secs = 60
";

/// (detection, group, country) and, for beacons, the destination.
type Found = (String, String, String, String);

fn found(detection: &serde_json::Value) -> Found {
    let s = |k: &str| detection[k].as_str().unwrap_or_default().to_owned();
    let dst = if s("detection") == "beaconing" {
        format!("{}:{}", s("dst"), detection["dport"])
    } else {
        String::new()
    };
    (s("detection"), s("group"), s("country"), dst)
}

/// The detection lines of an event log.
fn logged(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "detection")
        .collect()
}

/// Sleeps until 200 ms after the next window boundary (windows are fixed since the epoch),
/// so a short burst falls in one window, live and in replay.
fn wait_for_window_start() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let window = u128::from(WINDOW) * 1000;
    let next = (now / window + 1) * window + 200;
    std::thread::sleep(Duration::from_millis(
        u64::try_from(next - now).expect("ms"),
    ));
}

fn count(m: &Metrics, family: &str, group: &str, country: &str) -> f64 {
    m.sum(
        &format!("exfilmon_detection_{family}_total"),
        &[("group", group), ("country", country)],
    )
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
#[expect(
    clippy::too_many_lines,
    reason = "one lab, two daemon runs and a replay, checked step by step"
)]
fn detections_fire_on_their_scenarios_survive_a_restart_and_replay_agrees() {
    require_root("detections_fire_on_their_scenarios_survive_a_restart_and_replay_agrees");
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let metrics = SocketAddr::from(([127, 0, 0, 1], port));
    let config = write_lab_config(&lab, dir.path(), port).expect("config");
    let mut text = std::fs::read_to_string(&config).expect("read config");
    text.push_str(DETECTIONS);
    std::fs::write(&config, &text).expect("write config");
    let events = dir.path().join("events.jsonl");
    let state = dir.path().join("state/first-contact.json");

    // --- Run 1 -----------------------------------------------------------------------
    let daemon = Daemon::start_with(config.clone(), metrics, tempfile::tempdir().expect("dir"))
        .expect("daemon");
    let pcap = dir.path().join("inside.pcap");
    let capture = Capture::start(lab.ns(Node::Router), INSIDE_IF, &pcap).expect("tcpdump");
    let (phone, laptop, inet) = (
        lab.ns(Node::Phone),
        lab.ns(Node::Laptop),
        lab.ns(Node::Inet),
    );

    // Domestic: never a first contact.
    let domestic = SocketAddr::new(SERVER_IN_V4.into(), 9002);
    let sink = udp_sink(inet, domestic).expect("sink");
    udp_burst(phone, Some(PHONE_V4.into()), domestic, 10, 100).expect("burst");
    assert_eq!(sink.wait_for(10, WAIT).packets, 10);
    // The phone calls home to CN, the laptop downloads from the US (allowed for laptops):
    // a first contact each; the download is inbound-heavy, so no asymmetry.
    let call_home = SocketAddr::new(SERVER_CN_V4.into(), 443);
    tcp_exchange(
        phone,
        inet,
        call_home,
        b"{\"imei\":\"000000000000000\"}",
        200,
    )
    .expect("call home");
    tcp_exchange(
        laptop,
        inet,
        SocketAddr::new(SERVER_US_V4.into(), 8080),
        b"GET /update.bin HTTP/1.1\r\n\r\n",
        20_000,
    )
    .expect("download");
    // A bulk upload to CN in one window: 60 kB out, nothing back.
    let bulk = SocketAddr::new(SERVER_CN_V4.into(), 9100);
    let sink = udp_sink(inet, bulk).expect("sink");
    wait_for_window_start();
    udp_burst(phone, Some(PHONE_V4.into()), bulk, 60, 1000).expect("upload");
    assert_eq!(sink.wait_for(60, WAIT).packets, 60);
    // Beacons: small connections to one CN port every 1.5 s.
    let beacon = SocketAddr::new(SERVER_CN_V4.into(), 8443);
    let first = std::time::Instant::now();
    for i in 0..BEACONS {
        let due = first + Duration::from_millis(1500) * i;
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        tcp_exchange(phone, inet, beacon, b"ping", 100).expect("beacon");
    }

    let expected: BTreeSet<Found> = [
        ("first_contact", "phones", "CN", ""),
        ("first_contact", "laptops", "US", ""),
        ("volume", "phones", "CN", ""),
        ("asymmetry", "phones", "CN", ""),
        ("beaconing", "phones", "CN", "203.0.113.10:8443"),
    ]
    .iter()
    .map(|(a, b, c, d)| ((*a).into(), (*b).into(), (*c).into(), (*d).into()))
    .collect();
    let m = daemon
        .wait_for("every detection", WAIT, |m| {
            count(m, "first_contacts", "phones", "CN") == 1.0
                && count(m, "first_contacts", "laptops", "US") == 1.0
                && count(m, "volume", "phones", "CN") == 1.0
                && count(m, "asymmetry", "phones", "CN") == 1.0
                && count(m, "beaconing", "phones", "CN") == 1.0
                // A scrape is not atomic: the gauges may trail the counters by one.
                && ["asymmetry", "volume", "beaconing"].iter().all(|kind| {
                    m.sum(
                        "exfilmon_detection_last_timestamp_seconds",
                        &[("detection", kind), ("group", "phones"), ("country", "CN")],
                    ) > 0.0
                })
                && m.sum(
                    "exfilmon_detection_first_contact_timestamp_seconds",
                    &[("group", "phones"), ("country", "CN")],
                ) > 0.0
        })
        .unwrap_or_else(|e| panic!("{e:#}\nevent log:\n{:?}", logged(&events)));
    // Silent where the traffic is ordinary.
    assert_eq!(count(&m, "first_contacts", "phones", "IN"), 0.0, "domestic");
    assert_eq!(count(&m, "asymmetry", "laptops", "US"), 0.0, "a download");
    assert_eq!(count(&m, "volume", "laptops", "US"), 0.0, "under min_bytes");
    let first_cn = m.sum(
        "exfilmon_detection_first_contact_timestamp_seconds",
        &[("group", "phones"), ("country", "CN")],
    );
    assert!(first_cn > 1.7e9, "first contact time {first_cn}");
    for kind in ["asymmetry", "volume", "beaconing"] {
        let last = m.sum(
            "exfilmon_detection_last_timestamp_seconds",
            &[("detection", kind), ("group", "phones"), ("country", "CN")],
        );
        assert!(last >= first_cn, "{kind}: last detection time {last}");
    }
    let lint = exfilmon_tests::promtool_check_metrics(&daemon.scrape_text().expect("scrape"));
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");

    std::thread::sleep(Duration::from_millis(500));
    let cap = capture.stop().expect("stop tcpdump");
    assert_eq!(cap.dropped, 0, "tcpdump dropped packets");
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
    let live: BTreeSet<Found> = logged(&events).iter().map(found).collect();
    assert_eq!(live, expected, "the event log's detections");
    assert!(state.is_file(), "the first-contact state was saved");

    // --- The capture replayed gives the same detections -------------------------------
    let report = replay_json(&config, &[&pcap]);
    let replayed: Vec<serde_json::Value> =
        report["detections"].as_array().expect("detections").clone();
    let replayed_set: BTreeSet<Found> = replayed.iter().map(found).collect();
    assert_eq!(replayed_set, expected, "replay's detections: {replayed:#?}");
    assert_eq!(replayed.len(), expected.len(), "each once: {replayed:#?}");
    println!(
        "{} detections live and in replay of {} frames: {:?}",
        expected.len(),
        cap.captured,
        expected
    );

    // --- Run 2: a restart with the same state does not fire the known pairs again ------
    let daemon = Daemon::start_with(config.clone(), metrics, tempfile::tempdir().expect("dir"))
        .expect("daemon again");
    tcp_exchange(phone, inet, call_home, b"{\"boot\":2}", 200).expect("call home again");
    tcp_exchange(
        laptop,
        inet,
        SocketAddr::new(SERVER_US_V4.into(), 8080),
        b"GET / HTTP/1.1\r\n\r\n",
        2_000,
    )
    .expect("download again");
    // A country the phones never reached: still detected after the restart.
    let sg = SocketAddr::new(SERVER_SG_V4.into(), 9001);
    let sink = udp_sink(inet, sg).expect("sink");
    udp_burst(phone, Some(PHONE_V4.into()), sg, 3, 100).expect("burst");
    assert_eq!(sink.wait_for(3, WAIT).packets, 3);
    let m = daemon
        .wait_for("the new first contact", WAIT, |m| {
            count(m, "first_contacts", "phones", "SG") == 1.0
        })
        .expect("phones reached SG");
    // Two more ticks: the known pairs' traffic was counted well before.
    std::thread::sleep(Duration::from_secs(2));
    let m2 = daemon.scrape().expect("scrape");
    for (group, country) in [("phones", "CN"), ("laptops", "US")] {
        assert_eq!(
            count(&m2, "first_contacts", group, country),
            0.0,
            "{group} → {country} was known before the restart"
        );
    }
    assert_eq!(
        m.sum(
            "exfilmon_detection_first_contact_timestamp_seconds",
            &[("group", "phones"), ("country", "CN")],
        ),
        first_cn,
        "the first contact's time survives the restart"
    );
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
    let mut firsts: Vec<(String, String)> = logged(&events)
        .iter()
        .filter(|d| d["detection"] == "first_contact")
        .map(|d| {
            let (_, group, country, _) = found(d);
            (group, country)
        })
        .collect();
    firsts.sort();
    assert_eq!(
        firsts,
        [("laptops", "US"), ("phones", "CN"), ("phones", "SG")]
            .map(|(g, c)| (g.to_owned(), c.to_owned())),
        "each first contact once over both runs; the log:\n{}",
        std::fs::read_to_string(&events).unwrap_or_default()
    );
}
