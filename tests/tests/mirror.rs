//! Mirror-port mode: on a SPAN or TAP port every frame is a copy, so `mirror = true` counts
//! each frame at XDP and then drops it. The lab's router inside interface stands in for the
//! port: the copies of both directions of a conversation (the phone's datagrams to China
//! and China's answers to the phone, as a SPAN port delivers them, straight to the port)
//! and PPPoE frames (through the mirror's encapsulation program) must all be counted, by
//! direction, exactly, and none of them may reach the router's stack: nothing is routed.

#![expect(
    clippy::cast_precision_loss,
    reason = "Prometheus values are f64; the test's counts are exact integers far below 2^53"
)]

use std::{net::SocketAddr, time::Duration};

use exfilmon_tests::{
    Lab, Node,
    daemon::{Daemon, free_port, write_lab_config},
    lab::{PHONE_V4, SERVER_CN_V4},
    packet::{self, ETH_IPV4, UDP},
    require_root, udp_sink,
};

const OUT: usize = 20;
const BACK: usize = 10;
const PPPOE: usize = 5;

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn a_mirror_port_counts_both_directions_and_drops_every_copy() {
    require_root("a_mirror_port_counts_both_directions_and_drops_every_copy");
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let config = mirror_config(&lab, dir.path(), port);
    let daemon =
        Daemon::start_with(config, SocketAddr::from(([127, 0, 0, 1], port)), dir).expect("daemon");

    // A NIC's unicast filter would drop the copies for other machines' MACs: promiscuous.
    let link = lab
        .ns(Node::Router)
        .ip(&["-j", "link", "show", "dev", "inside"])
        .expect("ip");
    assert!(
        link.contains("\"PROMISC\""),
        "the mirror port is promiscuous: {link}"
    );

    // Sinks where the copies would land if the router let them through.
    let to_cn = SocketAddr::new(SERVER_CN_V4.into(), 9200);
    let to_phone = SocketAddr::new(PHONE_V4.into(), 40_000);
    let cn_sink = udp_sink(lab.ns(Node::Inet), to_cn).expect("sink");
    let phone_sink = udp_sink(lab.ns(Node::Phone), to_phone).expect("sink");

    // Valid IPv4 headers, so that the router's stack would route them if they got there.
    let mut out = packet::ipv4(
        PHONE_V4,
        SERVER_CN_V4,
        UDP,
        &packet::udp(40_000, 9200, &[0x5a; 200]),
    );
    let mut back = packet::ipv4(
        SERVER_CN_V4,
        PHONE_V4,
        UDP,
        &packet::udp(9200, 40_000, &[0xa5; 300]),
    );
    packet::set_ipv4_checksum(&mut out);
    packet::set_ipv4_checksum(&mut back);
    let sent_out = lab
        .frames_to_router(ETH_IPV4, &vec![out.clone(); OUT])
        .expect("out");
    let sent_back = lab
        .frames_to_router(ETH_IPV4, &vec![back.clone(); BACK])
        .expect("back");
    let (sent_pppoe, pppoe_len) = lab.pppoe_from_phone(PPPOE, 9201, 100).expect("pppoe");
    assert_eq!((sent_out, sent_back, sent_pppoe), (OUT, BACK, PPPOE as u64));
    std::thread::sleep(Duration::from_millis(500));

    let m = daemon.scrape().expect("scrape");
    let series = |direction| {
        let labels = [
            ("group", "phones"),
            ("country", "CN"),
            ("direction", direction),
            ("verdict", "violation"),
        ];
        (
            m.sum("exfilmon_packets_total", &labels),
            m.sum("exfilmon_bytes_total", &labels),
        )
    };
    let outbound = (
        (OUT + PPPOE) as u64,
        OUT as u64 * out.len() as u64 + PPPOE as u64 * pppoe_len,
    );
    assert_eq!(
        series("outbound"),
        (outbound.0 as f64, outbound.1 as f64),
        "outbound copies"
    );
    assert_eq!(
        series("inbound"),
        (BACK as f64, (BACK * back.len()) as f64),
        "inbound copies, from the same port"
    );
    assert_eq!(
        m.sum("exfilmon_frames_total", &[("outcome", "encap_missed")]),
        0.0,
        "the PPPoE copies went through the mirror's encapsulation program"
    );
    assert_eq!(m.sum("exfilmon_programs_info", &[]), 1.0);
    let drops = |mode| {
        m.sum(
            "exfilmon_policy_drops_total",
            &[("group", "phones"), ("mode", mode)],
        )
    };
    assert_eq!(
        (drops("dropped"), drops("dry_run")),
        (0.0, (OUT + PPPOE + BACK) as f64),
        "an enforcing group's violation copies are a dry run on a mirror port"
    );

    // Dropped at XDP: nothing was routed on to China or back to the phone.
    assert_eq!(cn_sink.stats().packets, 0, "a copy reached China");
    assert_eq!(phone_sink.stats().packets, 0, "a copy reached the phone");
    let (status, _) = daemon.stop_with_event_log().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
    println!(
        "mirror port: {} outbound and {BACK} inbound copies counted exactly ({} and {} bytes), none routed",
        OUT + PPPOE,
        outbound.1,
        BACK * back.len()
    );
}

/// The lab's config with the inside interface as a mirror port (XDP with `mirror = true`,
/// no TC hook), and the phones group enforcing its policy: on a mirror port that is a dry
/// run, as nothing can be dropped from the real traffic.
fn mirror_config(lab: &Lab, dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let config = write_lab_config(lab, dir, port).expect("config");
    let router = lab.ns(Node::Router).name().to_owned();
    let text = std::fs::read_to_string(&config).expect("config");
    let tc =
        format!("[[interface]]\nname = \"inside\"\nhook = \"tc-egress\"\nnetns = \"{router}\"\n");
    assert!(
        text.contains(&tc) && text.contains("hook = \"xdp\"\n"),
        "{text}"
    );
    let phones = "name = \"phones\"\n";
    assert!(text.contains(phones), "{text}");
    let text = text
        .replace(&tc, "")
        .replace("hook = \"xdp\"\n", "hook = \"xdp\"\nmirror = true\n")
        .replace(phones, &format!("{phones}enforce = true\n"));
    std::fs::write(&config, text).expect("config");
    config
}
