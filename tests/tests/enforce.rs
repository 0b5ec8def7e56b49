//! End to end, enforcement: the lab's daemon with `enforce = true` on the phones drops
//! exactly their violation packets, counts them, lets everything else through (the
//! laptops' violations as dry run), a replay of the devices' captures gives the same
//! drop counts, and SIGHUP refuses a bad policy and applies a good one.

#![expect(
    clippy::cast_precision_loss,
    clippy::float_cmp,
    reason = "Prometheus values are f64; the test's counts are exact integers far below 2^53"
)]

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use exfilmon_tests::{
    Capture, Lab, Node,
    daemon::{Daemon, free_port, write_lab_config},
    lab::{DEVICE_IF, LAPTOP_V4, PHONE_V4, SERVER_CN_V4, SERVER_IN_V4, SERVER_SG_V4},
    promtool_check_metrics, replay_json, require_root,
    traffic::{udp_burst, udp_sink},
};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);
/// Datagrams per flow: bounded, and few enough that no sink falls behind.
const COUNT: usize = 40;

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
#[expect(
    clippy::too_many_lines,
    reason = "one lab, one story, checked step by step"
)]
fn enforcement_drops_exactly_violations_replay_agrees_and_reload_applies() {
    require_root("enforcement_drops_exactly_violations_replay_agrees_and_reload_applies");
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let config = write_lab_config(&lab, dir.path(), port).expect("config");
    // Phones: CN denied, and enforced. Laptops keep the lab's policy, not enforcing.
    let text = std::fs::read_to_string(&config).expect("read config");
    let enforcing = text.replacen(
        "allow = [\"SG\"]",
        "allow = [\"SG\"]\ndeny = [\"CN\"]\nenforce = true",
        1,
    );
    assert_ne!(enforcing, text, "the lab config lets phones reach SG");
    std::fs::write(&config, enforcing).expect("write config");
    let daemon =
        Daemon::start_with(config, SocketAddr::from(([127, 0, 0, 1], port)), dir).expect("daemon");

    // The devices' own interfaces see every frame they send, dropped ones included.
    let phone_pcap = daemon.dir().join("phone.pcap");
    let laptop_pcap = daemon.dir().join("laptop.pcap");
    let phone_capture =
        Capture::start(lab.ns(Node::Phone), DEVICE_IF, &phone_pcap).expect("tcpdump");
    let laptop_capture =
        Capture::start(lab.ns(Node::Laptop), DEVICE_IF, &laptop_pcap).expect("tcpdump");

    let inet = lab.ns(Node::Inet);
    let sink = |addr: std::net::Ipv4Addr, port: u16| {
        udp_sink(inet, SocketAddr::new(IpAddr::V4(addr), port)).expect("sink")
    };
    let phone_cn = sink(SERVER_CN_V4, 9301);
    let phone_sg = sink(SERVER_SG_V4, 9302);
    let phone_domestic = sink(SERVER_IN_V4, 9303);
    let laptop_cn = sink(SERVER_CN_V4, 9304);
    let send = |node: Node, src: std::net::Ipv4Addr, to: &exfilmon_tests::UdpSink| {
        let sent = udp_burst(lab.ns(node), Some(src.into()), to.addr(), COUNT, 100).expect("burst");
        assert_eq!(sent.packets, COUNT as u64, "every datagram was sent");
    };
    send(Node::Phone, PHONE_V4, &phone_cn);
    send(Node::Phone, PHONE_V4, &phone_sg);
    send(Node::Phone, PHONE_V4, &phone_domestic);
    send(Node::Laptop, LAPTOP_V4, &laptop_cn);

    // Allowed and domestic traffic arrives, and so do the laptops' violations (dry run).
    for (what, s) in [
        ("phone to SG (allowed)", &phone_sg),
        ("phone to IN (domestic)", &phone_domestic),
        ("laptop to CN (violation, not enforced)", &laptop_cn),
    ] {
        assert_eq!(
            s.wait_for(COUNT as u64, Duration::from_secs(10)).packets,
            COUNT as u64,
            "{what}: every datagram arrived"
        );
    }
    // The phone's violations were sent before the traffic that arrived, on the same path.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        phone_cn.stats().packets,
        0,
        "the phones' violations must be dropped"
    );

    let series = |group: &'static str, mode: &'static str| {
        move |m: &exfilmon_tests::daemon::Metrics| {
            m.sum(
                "exfilmon_policy_drops_total",
                &[("group", group), ("mode", mode)],
            )
        }
    };
    let m = daemon
        .wait_for("the drop counters", WAIT, |m| {
            series("phones", "dropped")(m) == COUNT as f64
                && series("laptops", "dry_run")(m) == COUNT as f64
        })
        .expect("drops counted");
    assert_eq!(series("phones", "dry_run")(&m), 0.0, "phones enforce");
    assert_eq!(series("laptops", "dropped")(&m), 0.0, "laptops never drop");
    assert_eq!(series("ungrouped", "dropped")(&m), 0.0);
    assert_eq!(
        m.sum(
            "exfilmon_kernel_events_total",
            &[("event", "policy_dropped")]
        ),
        COUNT as f64
    );
    assert_eq!(
        m.sum(
            "exfilmon_packets_total",
            &[
                ("group", "phones"),
                ("country", "CN"),
                ("direction", "outbound"),
                ("verdict", "violation"),
            ]
        ),
        COUNT as f64,
        "dropped packets are still counted as the violations they are"
    );
    let lint = promtool_check_metrics(&daemon.scrape_text().expect("scrape"));
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");

    let phone = phone_capture.stop().expect("stop tcpdump");
    let laptop = laptop_capture.stop().expect("stop tcpdump");
    assert_eq!(
        (phone.dropped, laptop.dropped),
        (0, 0),
        "tcpdump dropped packets"
    );

    // The replay of the devices' captures drops and counts the same packets.
    let report = replay_json(&daemon.config, &[&phone_pcap, &laptop_pcap]);
    assert_eq!(report["dropped"], COUNT, "frames dropped in the replay");
    let drops = |group: &str, mode: &str| {
        report["policy_drops"]
            .as_array()
            .expect("policy_drops")
            .iter()
            .find(|d| d["group"] == group && d["mode"] == mode)
            .map(|d| d["packets"].as_u64().expect("packets"))
    };
    assert_eq!(drops("phones", "dropped"), Some(COUNT as u64));
    assert_eq!(drops("laptops", "dry_run"), Some(COUNT as u64));
    assert_eq!(drops("phones", "dry_run"), Some(0));
    let flows = report["flows"].as_array().expect("flows");
    let call_home = flows
        .iter()
        .find(|f| f["dst"] == SERVER_CN_V4.to_string() && f["group"] == "phones")
        .expect("the phones' CN flow is reported");
    assert_eq!(call_home["rule"], "group phones: deny CN");
    assert_eq!(call_home["packets"], COUNT);

    // SIGHUP: a config with an unknown jurisdiction is refused and enforcement goes on;
    // then one without `enforce` applies, and the phones' violations pass as dry run.
    let reloads = |result: &'static str| {
        move |m: &exfilmon_tests::daemon::Metrics| {
            m.sum("exfilmon_config_reloads_total", &[("result", result)])
        }
    };
    let running = std::fs::read_to_string(&daemon.config).expect("read config");
    let bad = running.replace("deny = [\"CN\"]", "deny = [\"@nowhere\"]");
    assert_ne!(bad, running);
    std::fs::write(&daemon.config, bad).expect("write config");
    daemon.signal(Signal::SIGHUP).expect("SIGHUP");
    daemon
        .wait_for("a refused reload", WAIT, |m| reloads("failure")(m) == 1.0)
        .expect("refused");
    assert!(
        daemon.log().contains("unknown jurisdiction \"@nowhere\""),
        "the log names the problem:\n{}",
        daemon.log()
    );
    send(Node::Phone, PHONE_V4, &phone_cn);
    send(Node::Phone, PHONE_V4, &phone_sg);
    assert_eq!(
        phone_sg
            .wait_for(2 * COUNT as u64, Duration::from_secs(10))
            .packets,
        2 * COUNT as u64,
        "allowed traffic still arrives"
    );
    daemon
        .wait_for("still dropping", WAIT, |m| {
            series("phones", "dropped")(m) == 2.0 * COUNT as f64
        })
        .expect("the running policy still enforces");
    assert_eq!(phone_cn.stats().packets, 0, "still dropped");

    std::fs::write(&daemon.config, running.replace("enforce = true\n", "")).expect("write");
    daemon.signal(Signal::SIGHUP).expect("SIGHUP");
    daemon
        .wait_for("a reload", WAIT, |m| reloads("success")(m) == 1.0)
        .expect("reloaded");
    send(Node::Phone, PHONE_V4, &phone_cn);
    assert_eq!(
        phone_cn
            .wait_for(COUNT as u64, Duration::from_secs(10))
            .packets,
        COUNT as u64,
        "no longer enforced: the phones' violations arrive"
    );
    let m = daemon
        .wait_for("dry run", WAIT, |m| {
            series("phones", "dry_run")(m) == COUNT as f64
        })
        .expect("counted as dry run");
    assert_eq!(
        series("phones", "dropped")(&m),
        2.0 * COUNT as f64,
        "no count was lost or reset"
    );

    // The event log names the rule too.
    let (status, log) = daemon.stop_with_event_log().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
    assert!(
        log.lines().any(|l| l.contains("\"dst\":\"203.0.113.10\"")
            && l.contains("\"rule\":\"group phones: deny CN\"")),
        "event log lacks the rule:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("\"src\":\"192.0.2.70\"")
            && l.contains("\"rule\":\"default: not allowed\"")),
        "event log lacks the laptop's rule:\n{log}"
    );
}
