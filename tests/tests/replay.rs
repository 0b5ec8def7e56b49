//! `exfilmon replay` on pcap and pcapng captures written here: the same frames must give
//! the same report in both formats, frames under 14 bytes are counted without being run,
//! raw-IP captures get an Ethernet header, and the flows carry their final totals.

use std::{borrow::Cow, fs::File, net::Ipv4Addr, path::Path, time::Duration};

use exfilmon_tests::{packet::*, require_root};
use monitor::{geoip::GeoDb, load_monitor, replay, tables};
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
    },
};

const PHONE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SG: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 70);

fn frames() -> Vec<Vec<u8>> {
    vec![
        eth_v4(&ipv4(PHONE, CN, UDP, &udp(40000, 443, &[1; 100]))),
        vec![0xff; 10], // shorter than an Ethernet header
        arp(),
        eth_v4(&ipv4(PHONE, SG, UDP, &udp(40001, 443, &[1; 50]))),
        eth_v4(&ipv4(PHONE, CN, UDP, &udp(40000, 443, &[1; 100]))),
    ]
}

fn write_pcap(path: &Path, link: DataLink, frames: &[Vec<u8>]) {
    let header = PcapHeader {
        datalink: link,
        ..PcapHeader::default()
    };
    let mut w =
        PcapWriter::with_header(File::create(path).expect("create"), header).expect("pcap header");
    for (i, f) in frames.iter().enumerate() {
        let p = PcapPacket::new(Duration::from_millis(i as u64), f.len() as u32, f);
        w.write_packet(&p).expect("write packet");
    }
}

fn write_pcapng(path: &Path, frames: &[Vec<u8>]) {
    let mut w = PcapNgWriter::new(File::create(path).expect("create")).expect("pcapng header");
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .expect("idb");
    for (i, f) in frames.iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_millis(i as u64),
            original_len: f.len() as u32,
            data: Cow::Borrowed(f),
            options: vec![],
        })
        .expect("epb");
    }
}

fn report(dir: &Path, capture: &Path) -> replay::Report {
    let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/geoip.csv");
    // CN's addresses are in AS64500 (a documentation ASN, RFC 5398).
    let asn = dir.join("ip2asn-v4.tsv");
    std::fs::write(&asn, "203.0.113.0\t203.0.113.63\t64500\tCN\tEXAMPLE-A\n").expect("write");
    let text = format!(
        "[home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"IN\"]\n[[group]]\nname = \"phones\"\nnetworks = [\"192.0.2.0/26\"]\nallow = [\"SG\"]\n[geoip]\nsources = [{{ format = \"csv\", path = \"{geo}\" }}, {{ format = \"iptoasn\", path = \"{}\" }}]\n",
        asn.display()
    );
    let config = exfilmon_tests::write_config(dir, &text);
    let geo = GeoDb::load(&config.geoip.sources).expect("geoip");
    let plan = tables::plan(&config, &geo).expect("plan");
    let mut monitor = load_monitor(&config, &plan).expect("load");
    let watch =
        monitor::watch::Plan::new(&config.watchlists, &plan.labels.watch, &plan.labels.asns);
    replay::run(
        &mut monitor,
        &plan.labels,
        watch,
        &config,
        &[capture.to_owned()],
    )
    .expect("replay")
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn pcap_and_pcapng_replay_alike_and_short_frames_are_counted() {
    require_root("pcap_and_pcapng_replay_alike_and_short_frames_are_counted");
    let dir = tempfile::tempdir().expect("tempdir");
    let (pcap, pcapng) = (dir.path().join("a.pcap"), dir.path().join("a.pcapng"));
    write_pcap(&pcap, DataLink::ETHERNET, &frames());
    write_pcapng(&pcapng, &frames());
    let a = report(dir.path(), &pcap);
    let b = report(dir.path(), &pcapng);
    for r in [&a, &b] {
        assert_eq!(r.frames, 5);
        assert_eq!(r.counters["short_frames"], 1);
        assert_eq!(
            r.counters["malformed_l2"], 1,
            "short frames count as malformed L2"
        );
        assert_eq!(r.counters["non_ip"], 1);
        assert_eq!((r.packets, r.bytes), (3, 128 + 78 + 128));
        let cn = r
            .aggregates
            .iter()
            .find(|x| x.country == "CN")
            .expect("CN aggregate");
        assert_eq!(
            (cn.group.as_str(), cn.verdict.as_str(), cn.packets, cn.bytes),
            ("phones", "violation", 2, 256)
        );
        assert_eq!(r.flows.len(), 1, "only the violation flow is reported");
        assert_eq!(
            (r.flows[0].packets, r.flows[0].bytes, r.flows[0].dport),
            (2, 256, 443)
        );
        assert_eq!(r.flows[0].asn, 64500, "the replayed flow carries its ASN");
        assert!(
            replay::table(r).contains("AS64500"),
            "and the report's table shows it:\n{}",
            replay::table(r)
        );
    }
    assert_eq!(
        serde_json::to_value(&a.aggregates).expect("json"),
        serde_json::to_value(&b.aggregates).expect("json")
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn raw_ip_captures_are_replayed_with_a_synthetic_ethernet_header() {
    require_root("raw_ip_captures_are_replayed_with_a_synthetic_ethernet_header");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raw.pcap");
    let raw: Vec<Vec<u8>> = vec![ipv4(PHONE, CN, UDP, &udp(1, 2, &[0; 20]))];
    write_pcap(&path, DataLink::RAW, &raw);
    let r = report(dir.path(), &path);
    assert_eq!((r.packets, r.bytes), (1, 48));
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn encapsulated_frames_replay_by_their_inner_packets() {
    require_root("encapsulated_frames_replay_by_their_inner_packets");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("encap.pcap");
    let inner = ipv4(PHONE, CN, UDP, &udp(40000, 443, &[1; 100]));
    let router = |last| Ipv4Addr::new(198, 51, 100, last);
    let frames = vec![
        eth(&[], ETH_PPPOE_SESSION, &pppoe(&ppp(PPP_IPV4, &inner))),
        eth(&[], ETH_MPLS, &mpls(&[16, 17], &inner)),
        eth_v4(&ipv4(
            router(1),
            router(2),
            GRE,
            &gre(ETH_IPV4, (false, true, false), &inner),
        )),
        eth_v4(&ipv4(
            router(1),
            router(2),
            UDP,
            &udp(50000, PORT_VXLAN, &vxlan(5, &eth_v4(&inner))),
        )),
    ];
    write_pcap(&path, DataLink::ETHERNET, &frames);
    let r = report(dir.path(), &path);
    let len = inner.len() as u64;
    assert_eq!((r.frames, r.packets, r.bytes), (4, 4, 4 * len));
    assert_eq!(
        (r.counters["tunnel_inner"], r.counters["encap_missed"]),
        (2, 0)
    );
    assert_eq!(r.flows.len(), 1, "one inner flow");
    assert_eq!(
        (r.flows[0].packets, r.flows[0].bytes, r.flows[0].dport),
        (4, 4 * len, 443)
    );
    println!(
        "replay of PPPoE, MPLS, GRE and VXLAN frames: {} packets, {} bytes ({len} B inner \
         packets in {}–{} B frames), one flow to CN:443",
        r.packets,
        r.bytes,
        frames.iter().map(Vec::len).min().expect("frames"),
        frames.iter().map(Vec::len).max().expect("frames"),
    );
}

/// On a terminal `exfilmon replay` shows a progress bar (bytes of the captures replayed,
/// with the file's name), and clears it; with stderr not a terminal it draws nothing, so
/// scripts that read its output or its errors see no bar.
#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn replay_shows_a_progress_bar_on_a_terminal_only() {
    require_root("replay_shows_a_progress_bar_on_a_terminal_only");
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("long.pcap");
    let frames: Vec<Vec<u8>> = (0..2000u16)
        .map(|i| eth_v4(&ipv4(PHONE, CN, UDP, &udp(40000 + i % 50, 443, &[1; 100]))))
        .collect();
    write_pcap(&capture, DataLink::ETHERNET, &frames);
    let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/geoip.csv");
    let config = dir.path().join("exfilmon.toml");
    std::fs::write(
        &config,
        format!("[home]\nnetworks = [\"192.0.2.0/24\"]\n[geoip]\nsources = [{{ format = \"csv\", path = \"{geo}\" }}]\n"),
    )
    .expect("config");
    let bin = exfilmon_tests::exfilmon_bin();
    let command = format!(
        "{} replay --config {} {}",
        bin.display(),
        config.display(),
        capture.display()
    );
    // util-linux `script` runs it on a pseudo-terminal and copies what it draws.
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script runs");
    assert!(tty.status.success(), "{tty:?}");
    let drawn = String::from_utf8_lossy(&tty.stdout);
    assert!(
        drawn.contains("replay ") && drawn.contains("long.pcap") && drawn.contains("KiB"),
        "a bar with the file and its bytes: {drawn:?}"
    );
    let piped = std::process::Command::new(&bin)
        .args(["replay", "--format", "json", "--config"])
        .arg(&config)
        .arg(&capture)
        .output()
        .expect("replay runs");
    assert!(piped.status.success(), "{piped:?}");
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains("long.pcap"),
        "no bar without a terminal: {stderr:?}"
    );
    let report: serde_json::Value = serde_json::from_slice(&piped.stdout).expect("JSON");
    assert_eq!(report["packets"], 2000);
}
