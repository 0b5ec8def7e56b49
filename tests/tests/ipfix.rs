//! IPFIX export against a real collector: the lab's traffic through the real daemon,
//! exported to pmacct's nfacctd on 127.0.0.1. What nfacctd decodes must match exfilmon's
//! own flows (the event log's final totals), direction by direction, and carry the
//! classification: country, group, verdict, AS numbers, start and end.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use exfilmon_tests::{
    Lab, Node,
    collector::Nfacctd,
    daemon::{Daemon, Metrics, free_port, write_lab_config},
    lab::{LAPTOP_V6, PHONE_V4, SERVER_CN_V4, SERVER_CN_V6},
    promtool_check_metrics, require_root, scenario,
    traffic::udp_burst,
};

/// How long a scrape may take to show what the test did.
const WAIT: Duration = Duration::from_secs(20);

/// One direction of a flow: source, destination, their ports, protocol name.
type Key = (IpAddr, IpAddr, u16, u16, String);

#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    packets: u64,
    bytes: u64,
    /// Country, group and verdict code, as exported.
    class: (String, String, u64),
}

fn proto_name(p: u64) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        p => p.to_string(),
    }
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn nfacctd_decodes_the_flows_exfilmon_tracked() {
    require_root("nfacctd_decodes_the_flows_exfilmon_tracked");
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    // Its own directory: the daemon's goes when the daemon stops.
    let collector_dir = tempfile::tempdir().expect("tempdir");
    let collector = Nfacctd::start(collector_dir.path()).expect("nfacctd");
    let port = free_port().expect("port");
    let config = write_lab_config(&lab, dir.path(), port).expect("config");
    let mut text = std::fs::read_to_string(&config).expect("config");
    writeln!(
        text,
        "\n[ipfix]\ncollectors = [\"{}\"]\nobservation_domain = 42",
        collector.addr()
    )
    .expect("write");
    std::fs::write(&config, text).expect("config");
    let before = SystemTime::now();
    let daemon =
        Daemon::start_with(config, SocketAddr::from(([127, 0, 0, 1], port)), dir).expect("daemon");

    let sent = scenario::run(&lab).expect("scenario");
    std::thread::sleep(Duration::from_millis(500));
    let scrape = daemon.scrape_text().expect("scrape");
    for l in scrape.lines().filter(|l| l.starts_with("exfilmon_ipfix")) {
        println!("{l}");
    }
    let lint = promtool_check_metrics(&scrape);
    assert!(
        lint.trim().is_empty(),
        "promtool check metrics, with the IPFIX metrics: {lint}"
    );
    // Stopping exports every flow's last records, as it logs their final totals.
    let (status, log) = daemon.stop_with_event_log().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");

    let ours = exfilmon_flows(&log);
    assert!(
        ours.len() >= 3,
        "the lab's violation flows are tracked: {ours:?}"
    );

    // The collector's view, summed over the records it decoded.
    let records = collector.finish().expect("nfacctd's records");
    let theirs = collector_flows(&records);
    assert_eq!(
        theirs, ours,
        "what nfacctd decoded differs from exfilmon's flows\nnfacctd records:\n{records:#?}"
    );

    // The exact series: the laptop's IPv6 upload to CN, byte for byte what was sent.
    let upload = sent
        .exact
        .iter()
        .find(|e| e.group == "laptops" && e.country == "CN")
        .expect("upload");
    let find = |src: IpAddr, dst: IpAddr, port: u16| {
        theirs
            .iter()
            .find_map(|(k, t)| {
                (k.0 == src && k.1 == dst && (k.2 == port || k.3 == port)).then_some(t)
            })
            .unwrap_or_else(|| panic!("no record {src} -> {dst} port {port}: {theirs:?}"))
    };
    let t = find(LAPTOP_V6.into(), SERVER_CN_V6.into(), 9003);
    assert_eq!((t.packets, t.bytes), (upload.packets, upload.l3_bytes));
    assert_eq!(t.class, ("CN".into(), "laptops".into(), 3));
    // The phone's call home, both directions, classified from the inside end.
    let out = find(PHONE_V4.into(), SERVER_CN_V4.into(), 443);
    let back = find(SERVER_CN_V4.into(), PHONE_V4.into(), 443);
    assert_eq!(out.class, ("CN".into(), "phones".into(), 3));
    assert_eq!(back.class, out.class);
    assert!(out.bytes > scenario::PHONE_HOME.len() as u64);

    // Start and end are the flows' first and last packets, in this test's time.
    let after = SystemTime::now();
    for r in &records {
        let at = |k: &str| {
            let text = r[k].as_str().unwrap_or_else(|| panic!("{k} in {r}"));
            humantime::parse_rfc3339_weak(text).unwrap_or_else(|e| panic!("{k} {text:?}: {e}"))
        };
        let (start, end) = (at("timestamp_start"), at("timestamp_end"));
        assert!(start <= end, "{r}");
        assert!(
            start >= before - Duration::from_secs(1) && end <= after,
            "{r}"
        );
    }
    println!(
        "nfacctd decoded {} records: {} flow directions, equal to exfilmon's final totals",
        records.len(),
        theirs.len()
    );
}

/// exfilmon's own view of its flows, per direction: the last event of each flow in the
/// event log carries its final totals.
fn exfilmon_flows(log: &str) -> BTreeMap<Key, Totals> {
    let mut last: BTreeMap<(String, String, u64, u64, u64), serde_json::Value> = BTreeMap::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("event log line");
        if v["event"].as_str().is_some_and(|e| e.starts_with("flow_")) {
            let n = |k: &str| v[k].as_u64().expect(k);
            let s = |k: &str| v[k].as_str().expect(k).to_owned();
            last.insert((s("src"), s("dst"), n("sport"), n("dport"), n("proto")), v);
        }
    }
    let mut ours = BTreeMap::new();
    for ((src, dst, sport, dport, proto), v) in &last {
        let (src, dst): (IpAddr, IpAddr) = (src.parse().expect("ip"), dst.parse().expect("ip"));
        let (sport, dport) = (*sport as u16, *dport as u16);
        let verdict = match v["verdict"].as_str().expect("verdict") {
            "domestic" => 1,
            "allowed" => 2,
            "violation" => 3,
            _ => 0,
        };
        let class = (
            v["country"].as_str().expect("country").to_owned(),
            v["group"].as_str().expect("group").to_owned(),
            verdict,
        );
        let n = |k: &str| v[k].as_u64().expect(k);
        for (k, packets, bytes) in [
            ((src, dst, sport, dport), n("packets_out"), n("bytes_out")),
            ((dst, src, dport, sport), n("packets_in"), n("bytes_in")),
        ] {
            if packets > 0 {
                let key = (k.0, k.1, k.2, k.3, proto_name(*proto));
                ours.insert(
                    key,
                    Totals {
                        packets,
                        bytes,
                        class: class.clone(),
                    },
                );
            }
        }
    }
    ours
}

/// nfacctd's view: its records summed per flow direction.
fn collector_flows(records: &[serde_json::Value]) -> BTreeMap<Key, Totals> {
    let mut theirs: BTreeMap<Key, Totals> = BTreeMap::new();
    for r in records {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
        let n = |k: &str| r[k].as_u64().unwrap_or_default();
        let k = (
            s("ip_src").parse().expect("ip_src"),
            s("ip_dst").parse().expect("ip_dst"),
            n("port_src") as u16,
            n("port_dst") as u16,
            s("ip_proto"),
        );
        let t = theirs.entry(k).or_default();
        t.packets += n("packets");
        t.bytes += n("bytes");
        t.class = (
            s("exf_country"),
            s("exf_group"),
            s("exf_verdict").parse().unwrap_or(99),
        );
    }
    theirs
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn the_exporter_forgets_the_flows_the_kernel_evicted() {
    const TABLE: u32 = 64;
    const FLOWS: u16 = 300;
    require_root("the_exporter_forgets_the_flows_the_kernel_evicted");
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    // A collector that only has to exist: the records are not read here.
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").expect("collector socket");
    let port = free_port().expect("port");
    let config = write_lab_config(&lab, dir.path(), port).expect("config");
    let text = std::fs::read_to_string(&config).expect("config");
    let small = text.replace(
        "idle_timeout_secs = 30",
        &format!("idle_timeout_secs = 30\nmax_entries = {TABLE}"),
    );
    assert_ne!(small, text, "the lab config has [flows] idle_timeout_secs");
    let text = format!(
        "{small}\n[ipfix]\ncollectors = [\"{}\"]\n",
        collector.local_addr().expect("addr")
    );
    std::fs::write(&config, text).expect("config");
    let daemon =
        Daemon::start_with(config, SocketAddr::from(([127, 0, 0, 1], port)), dir).expect("daemon");

    // 300 violation flows (one datagram each, to ports of their own) through a table of 64:
    // the kernel evicts the oldest without an event, and the exporter must not keep them.
    for dport in 9100..9100 + FLOWS {
        let dst = SocketAddr::new(SERVER_CN_V4.into(), dport);
        udp_burst(lab.ns(Node::Phone), Some(PHONE_V4.into()), dst, 1, 20).expect("send");
    }
    let started = |m: &Metrics| m.sum("exfilmon_flow_events_total", &[("kind", "flow_start")]);
    daemon
        .wait_for("every flow's start event", WAIT, |m| {
            started(m) >= f64::from(FLOWS)
        })
        .expect("the exporter heard of every flow");
    // At least the 236 flows the table cannot hold are forgotten, and the gauge (set at
    // the next flush) says so.
    let m = daemon
        .wait_for("a sweep that forgets the evicted flows", WAIT, |m| {
            m.sum("exfilmon_ipfix_flows_forgotten_total", &[])
                >= f64::from(u32::from(FLOWS) - TABLE)
                && m.sum("exfilmon_ipfix_flows_remembered", &[]) <= f64::from(TABLE)
        })
        .expect("the exporter remembers no more flows than the kernel's table holds");
    assert!(
        m.sum("exfilmon_ipfix_flows_remembered", &[]) > 0.0,
        "the flows still in the table are remembered"
    );
    let lint = promtool_check_metrics(&daemon.scrape_text().expect("scrape"));
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
}
