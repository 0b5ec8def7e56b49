//! Kernel tests: the classifier run with BPF_PROG_TEST_RUN on crafted frames, one per parse
//! path, asserting the outcome counters, the class counters, the flow table and the events.
//! They need root (CAP_BPF); without it each prints SKIPPED and returns.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{MapData, RingBuf};
use exfilmon_tests::{packet::*, require_root, write_config};
use monitor::{
    config::Config,
    ebpf::{Counters, Monitor},
    events::{self, EventKind},
    geoip::GeoDb,
    load_monitor, load_monitor_programs,
    tables::{self, Labels, Verdict},
};
use monitor_common::{
    class::{DIR_INBOUND, DIR_OUTBOUND, class_index},
    flow::FlowKey,
    programs, reason,
};

const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;

const PHONE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const LAPTOP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 70);
const OTHER_HOME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const CN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SG: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 70);
const US: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 130);
const IN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
const NOWHERE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
const PHONE6: &str = "2001:db8:1:1::10";
const CN6: &str = "2001:db8:ff:86::10";

struct Harness {
    monitor: Monitor,
    /// The program set loaded (the in-place one, as root, unless a test asks for another).
    programs: programs::Set,
    labels: Labels,
    events: RingBuf<MapData>,
    frames: u64,
    _dir: tempfile::TempDir,
}

fn config_text(extra_flows: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/geoip.csv");
    let max_entries = if extra_flows.contains("max_entries") {
        ""
    } else {
        "max_entries = 1024"
    };
    let ring_bytes = if extra_flows.contains("ring_bytes") {
        ""
    } else {
        "ring_bytes = 262144"
    };
    let text = format!(
        r#"
[home]
networks = ["192.0.2.0/24", "2001:db8:1::/48"]
countries = ["IN"]
[[group]]
name = "phones"
networks = ["192.0.2.0/26", "2001:db8:1:1::/64"]
allow = ["SG"]
[[group]]
name = "laptops"
networks = ["192.0.2.64/26", "2001:db8:1:2::/64"]
allow = ["US"]
[geoip]
sources = [{{ format = "csv", path = "{geo}" }}]
[flows]
{max_entries}
{ring_bytes}
{extra_flows}
"#
    );
    let config = write_config(dir.path(), &text);
    (dir, config)
}

impl Harness {
    fn new(name: &str) -> Self {
        Self::with_flows(name, "")
    }

    fn with_flows(name: &str, flows: &str) -> Self {
        Self::load(name, flows, None)
    }

    /// A harness with the program set `programs` loaded.
    fn with_programs(name: &str, programs: programs::Set) -> Self {
        Self::load(name, "", Some(programs))
    }

    fn load(name: &str, flows: &str, programs: Option<programs::Set>) -> Self {
        require_root(name);
        let (dir, config) = config_text(flows);
        let geo = GeoDb::load(&config.geoip.sources).expect("geoip");
        let plan = tables::plan(&config, &geo).expect("plan");
        let mut monitor = match programs {
            Some(set) => load_monitor_programs(&config, &plan, set),
            None => load_monitor(&config, &plan),
        }
        .unwrap_or_else(|e| panic!("load: {}", monitor::error_chain(&e)));
        let events = monitor.take_events().expect("ring");
        Self {
            programs: monitor.sizes().programs,
            monitor,
            labels: plan.labels,
            events,
            frames: 0,
            _dir: dir,
        }
    }

    /// Runs a frame through the XDP program; asserts PASS and an unchanged frame.
    fn run(&mut self, frame: &[u8]) {
        let out = self
            .monitor
            .test_run(self.programs.xdp, frame)
            .expect("test run");
        assert_eq!(out.action, XDP_PASS, "XDP must pass every frame");
        assert_eq!(out.frame, frame, "the frame must leave unchanged");
        self.frames += 1;
    }

    /// Runs a frame through TC program `program`; asserts `TC_ACT_OK` and an unchanged
    /// frame. False, with nothing run, when the kernel builds no skb for the frame (EINVAL:
    /// its network header is cut, so the stack would have dropped it before any TC hook).
    fn run_tc(&mut self, program: &'static str, frame: &[u8]) -> bool {
        let out = match self.monitor.test_run(program, frame) {
            Ok(out) => out,
            Err(monitor::ebpf::EbpfError::TestRun {
                source: aya::programs::ProgramError::SyscallError(e),
                ..
            }) if e.io_error.raw_os_error() == Some(22) => return false,
            Err(e) => panic!("test run of {} bytes {frame:02x?}: {e:?}", frame.len()),
        };
        assert_eq!(
            out.action, TC_ACT_OK,
            "{program} must pass every frame: {frame:02x?}"
        );
        assert_eq!(
            out.frame, frame,
            "{program} must leave every frame unchanged"
        );
        self.frames += 1;
        true
    }

    fn counters(&self) -> Counters {
        self.monitor.read_counters().expect("counters")
    }

    fn reason(&self, id: u32) -> u64 {
        self.counters().reasons[id as usize]
    }

    fn class(&self, group: &str, country: &str, dir: u32, verdict: Verdict) -> (u64, u64) {
        let g = self
            .labels
            .groups
            .iter()
            .position(|n| n == group)
            .expect("group") as u32;
        let c = (0..self.labels.countries.len() as u32)
            .find(|s| self.labels.country(*s) == country)
            .expect("country");
        let index = class_index(g, c, dir, verdict.code());
        self.counters()
            .classes
            .iter()
            .find(|(i, _)| *i == index)
            .map_or((0, 0), |(_, c)| (c.packets, c.bytes))
    }

    fn events(&mut self) -> Vec<(EventKind, FlowKey, u64)> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            let (kind, key, st) = events::decode(&item).expect("decode");
            out.push((kind, key, st.bytes_out + st.bytes_in));
        }
        out
    }

    /// The flow table, a line per flow without its clocks, sorted.
    fn flow_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .monitor
            .flows()
            .expect("flows")
            .iter()
            .map(|(k, st)| {
                let counts = (st.packets_out, st.bytes_out, st.packets_in, st.bytes_in);
                format!("{k:?} {counts:?}")
            })
            .collect();
        lines.sort();
        lines
    }

    /// The ring's records, sorted: flow events without their clocks, DNS answer and
    /// ClientHello copies byte for byte.
    fn ring_records(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            out.push(match events::decode(&item) {
                Ok((kind, key, st)) => format!(
                    "{kind:?} {key:?} {} {}",
                    st.packets_out + st.packets_in,
                    st.bytes_out + st.bytes_in
                ),
                Err(_) => format!("{:02x?}", &*item),
            });
        }
        out.sort();
        out
    }

    /// Outcome counters sum to the frames run: every frame ends in exactly one outcome.
    fn assert_outcomes_sum(&self) {
        let c = self.counters();
        let sum: u64 = c.reasons[..reason::OUTCOMES as usize].iter().sum();
        assert_eq!(
            sum,
            self.frames,
            "outcome counters {:?} must sum to frames run",
            &c.reasons[..reason::OUTCOMES as usize]
        );
    }
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn arp_is_counted_as_non_ip_and_passes() {
    let mut h = Harness::new("arp_is_counted_as_non_ip_and_passes");
    h.run(&arp());
    assert_eq!(h.reason(reason::NON_IP), 1);
    assert!(
        h.counters().classes.is_empty(),
        "ARP must not be classified"
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn ipv4_udp_to_a_foreign_country_is_a_counted_violation_flow() {
    let mut h = Harness::new("ipv4_udp_to_a_foreign_country_is_a_counted_violation_flow");
    let frame = eth_v4(&ipv4(PHONE, CN, UDP, &udp(40000, 443, &[7; 100])));
    h.run(&frame);
    h.run(&frame);
    let l3 = 20 + 8 + 100;
    assert_eq!(
        h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation),
        (2, 2 * l3)
    );
    assert_eq!(h.reason(reason::OUTBOUND), 2);
    assert_eq!(h.reason(reason::FLOW_CREATED), 1);
    let flows = h.monitor.flows().expect("flows");
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].0, v4_key(PHONE, CN, UDP, 40000, 443));
    assert_eq!((flows[0].1.packets_out, flows[0].1.bytes_out), (2, 2 * l3));
    let ev = h.events();
    assert_eq!(
        ev.len(),
        1,
        "one start event; the second packet is below the update thresholds"
    );
    assert_eq!(ev[0].0, EventKind::FlowStart);
    assert_eq!(ev[0].1, v4_key(PHONE, CN, UDP, 40000, 443));
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn verdicts_follow_home_countries_group_allow_lists_and_unknown_space() {
    let mut h = Harness::new("verdicts_follow_home_countries_group_allow_lists_and_unknown_space");
    for (src, dst) in [
        (PHONE, IN),
        (PHONE, SG),
        (LAPTOP, US),
        (LAPTOP, SG),
        (OTHER_HOME, SG),
        (PHONE, NOWHERE),
    ] {
        h.run(&eth_v4(&ipv4(src, dst, UDP, &udp(1000, 53, &[0; 10]))));
    }
    let one = (1, 20 + 8 + 10);
    assert_eq!(
        h.class("phones", "IN", DIR_OUTBOUND, Verdict::Domestic),
        one
    );
    assert_eq!(h.class("phones", "SG", DIR_OUTBOUND, Verdict::Allowed), one);
    assert_eq!(
        h.class("laptops", "US", DIR_OUTBOUND, Verdict::Allowed),
        one
    );
    assert_eq!(
        h.class("laptops", "SG", DIR_OUTBOUND, Verdict::Violation),
        one
    );
    assert_eq!(
        h.class("ungrouped", "SG", DIR_OUTBOUND, Verdict::Violation),
        one
    );
    assert_eq!(h.class("phones", "??", DIR_OUTBOUND, Verdict::Unknown), one);
    assert_eq!(
        h.monitor.flows().expect("flows").len(),
        2,
        "only the two violation flows are tracked"
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn link_scoped_packets_are_counted_apart_from_traffic_that_leaves() {
    let mut h = Harness::new("link_scoped_packets_are_counted_apart_from_traffic_that_leaves");
    let phone6: Ipv6Addr = PHONE6.parse().expect("v6");
    let link_local: Ipv6Addr = "fe80::10".parse().expect("v6");
    let all_nodes: Ipv6Addr = "ff02::1".parse().expect("v6");
    h.run(&eth_v6(&ipv6(
        phone6,
        all_nodes,
        &[],
        ICMPV6,
        &icmp(135, 0),
    ))); // ND to multicast
    h.run(&eth_v6(&ipv6(
        link_local,
        phone6,
        &[],
        ICMPV6,
        &icmp(136, 0),
    ))); // ND from link-local
    h.run(&eth_v4(&ipv4(
        PHONE,
        Ipv4Addr::new(224, 0, 0, 251),
        UDP,
        &udp(5353, 5353, &[0; 12]),
    ))); // mDNS
    h.run(&eth_v4(&ipv4(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        UDP,
        &udp(68, 67, &[0; 12]),
    ))); // DHCP
    assert_eq!(h.reason(reason::LINK_LOCAL), 4);
    assert!(
        h.counters().classes.is_empty(),
        "link-scoped packets are no country's traffic"
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn inbound_internal_and_transit_are_told_apart() {
    let mut h = Harness::new("inbound_internal_and_transit_are_told_apart");
    h.run(&eth_v4(&ipv4(CN, PHONE, UDP, &udp(443, 40000, &[1; 50]))));
    h.run(&eth_v4(&ipv4(PHONE, LAPTOP, UDP, &udp(1, 2, &[1; 50]))));
    h.run(&eth_v4(&ipv4(CN, US, UDP, &udp(1, 2, &[1; 50]))));
    assert_eq!(
        h.class("phones", "CN", DIR_INBOUND, Verdict::Violation),
        (1, 78)
    );
    assert_eq!(h.reason(reason::INBOUND), 1);
    assert_eq!(h.reason(reason::INTERNAL), 1);
    assert_eq!(h.reason(reason::TRANSIT), 1);
    let flows = h.monitor.flows().expect("flows");
    assert_eq!(
        flows[0].0,
        v4_key(PHONE, CN, UDP, 40000, 443),
        "flows are keyed from the inside"
    );
    assert_eq!((flows[0].1.packets_in, flows[0].1.bytes_in), (1, 78));
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn ipv4_options_are_skipped_to_reach_the_ports() {
    let mut h = Harness::new("ipv4_options_are_skipped_to_reach_the_ports");
    for words in [1usize, 4, 10] {
        let options = vec![1u8; words * 4]; // NOPs
        h.run(&eth_v4(&ipv4_with(
            PHONE,
            CN,
            UDP,
            &options,
            0,
            &udp(5000 + words as u16, 80, &[0; 8]),
        )));
    }
    let keys: Vec<FlowKey> = h
        .monitor
        .flows()
        .expect("flows")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for words in [1u16, 4, 10] {
        assert!(
            keys.contains(&v4_key(PHONE, CN, UDP, 5000 + words, 80)),
            "ports behind {words} option words"
        );
    }
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn ipv4_fragments_are_classified_by_their_addresses() {
    let mut h = Harness::new("ipv4_fragments_are_classified_by_their_addresses");
    // First fragment: MF set, offset 0, carries the UDP header.
    h.run(&eth_v4(&ipv4_with(
        PHONE,
        CN,
        UDP,
        &[],
        0x2000,
        &udp(7000, 53, &[0; 32]),
    )));
    // A later fragment: offset 5 (40 bytes), no transport header.
    h.run(&eth_v4(&ipv4_with(PHONE, CN, UDP, &[], 5, &[0xee; 40])));
    assert_eq!(
        h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation),
        (2, 60 + 60)
    );
    assert_eq!(h.reason(reason::FRAGMENT), 1);
    let keys: Vec<FlowKey> = h
        .monitor
        .flows()
        .expect("flows")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        keys.contains(&v4_key(PHONE, CN, UDP, 7000, 53)),
        "first fragment has ports"
    );
    assert!(
        keys.contains(&v4_key(PHONE, CN, UDP, 0, 0)),
        "later fragment has none"
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn vlan_and_qinq_tags_are_followed_and_a_third_is_counted() {
    let mut h = Harness::new("vlan_and_qinq_tags_are_followed_and_a_third_is_counted");
    let ip = ipv4(PHONE, CN, UDP, &udp(1, 2, &[0; 20]));
    h.run(&eth(&[(0x8100, 10)], 0x0800, &ip));
    h.run(&eth(&[(0x88a8, 100), (0x8100, 10)], 0x0800, &ip));
    h.run(&eth(
        &[(0x88a8, 100), (0x8100, 10), (0x8100, 20)],
        0x0800,
        &ip,
    ));
    assert_eq!(
        h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation),
        (2, 96)
    );
    assert_eq!(h.reason(reason::VLAN_DEPTH), 1);
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn ipv6_extension_headers_are_walked_up_to_the_limit() {
    let mut h = Harness::new("ipv6_extension_headers_are_walked_up_to_the_limit");
    let src: Ipv6Addr = PHONE6.parse().expect("v6");
    let dst: Ipv6Addr = CN6.parse().expect("v6");
    let payload = udp(6000, 443, &[0; 16]);
    h.run(&eth_v6(&ipv6(src, dst, &[], UDP, &payload)));
    h.run(&eth_v6(&ipv6(
        src,
        dst,
        &[HOPOPTS, DSTOPTS, ROUTING],
        UDP,
        &payload,
    )));
    // Nine destination-option headers: one more than the parser follows.
    h.run(&eth_v6(&ipv6(src, dst, &[DSTOPTS; 9], UDP, &payload)));
    let l3 = |n: u64| 40 + 8 * n + 24;
    assert_eq!(
        h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation),
        (3, l3(0) + l3(3) + l3(9))
    );
    assert_eq!(h.reason(reason::IPV6_EXT_LIMIT), 1);
    let ports: Vec<(u16, u16)> = h
        .monitor
        .flows()
        .expect("flows")
        .into_iter()
        .map(|(k, _)| (k.inside_port, k.remote_port))
        .collect();
    assert!(
        ports.contains(&(6000, 443)),
        "ports found behind three extension headers: {ports:?}"
    );
    assert!(
        ports.contains(&(0, 0)),
        "past the limit the packet is counted without ports: {ports:?}"
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn ipv6_later_fragments_are_counted_as_fragments() {
    let mut h = Harness::new("ipv6_later_fragments_are_counted_as_fragments");
    let src: Ipv6Addr = PHONE6.parse().expect("v6");
    let dst: Ipv6Addr = CN6.parse().expect("v6");
    h.run(&eth_v6(&ipv6_fragment(
        src,
        dst,
        UDP,
        0,
        true,
        &udp(1, 2, &[0; 8]),
    )));
    h.run(&eth_v6(&ipv6_fragment(src, dst, UDP, 2, false, &[0; 16])));
    assert_eq!(h.reason(reason::FRAGMENT), 1);
    assert_eq!(
        h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation).0,
        2
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn tcp_fin_ends_a_flow_and_icmp_types_become_ports() {
    let mut h = Harness::new("tcp_fin_ends_a_flow_and_icmp_types_become_ports");
    h.run(&eth_v4(&ipv4(PHONE, CN, TCP, &tcp(41000, 443, SYN, &[]))));
    h.run(&eth_v4(&ipv4(
        PHONE,
        CN,
        TCP,
        &tcp(41000, 443, ACK, &[9; 200]),
    )));
    h.run(&eth_v4(&ipv4(
        PHONE,
        CN,
        TCP,
        &tcp(41000, 443, FIN | ACK, &[]),
    )));
    h.run(&eth_v4(&ipv4(PHONE, CN, ICMP, &icmp(8, 0))));
    let src: Ipv6Addr = PHONE6.parse().expect("v6");
    let dst: Ipv6Addr = CN6.parse().expect("v6");
    h.run(&eth_v6(&ipv6(src, dst, &[], ICMPV6, &icmp(128, 0))));
    let ev = h.events();
    let tcp_key = v4_key(PHONE, CN, TCP, 41000, 443);
    let kinds: Vec<EventKind> = ev.iter().filter(|e| e.1 == tcp_key).map(|e| e.0).collect();
    assert_eq!(kinds, [EventKind::FlowStart, EventKind::FlowEnd]);
    assert_eq!(
        ev.iter().find(|e| e.0 == EventKind::FlowEnd).map(|e| e.2),
        Some(40 + 240 + 40)
    );
    let keys: Vec<FlowKey> = h
        .monitor
        .flows()
        .expect("flows")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        keys.contains(&v4_key(PHONE, CN, ICMP, 0, 8 << 8)),
        "ICMP echo: type 8 in the port"
    );
    assert!(
        keys.iter()
            .any(|k| k.proto == ICMPV6 && k.remote_port == 128 << 8),
        "ICMPv6 echo"
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn periodic_updates_follow_the_byte_threshold() {
    let mut h = Harness::with_flows(
        "periodic_updates_follow_the_byte_threshold",
        "update_bytes = 1000",
    );
    let frame = eth_v4(&ipv4(PHONE, CN, UDP, &udp(1, 2, &[0; 472]))); // 500 L3 bytes
    for _ in 0..5 {
        h.run(&frame);
    }
    let kinds: Vec<EventKind> = h.events().iter().map(|e| e.0).collect();
    // start (500), +500 = 1000 → below, +1000 at 1500 → update, then 2000 below, 2500 → update
    assert_eq!(
        kinds,
        [
            EventKind::FlowStart,
            EventKind::FlowUpdate,
            EventKind::FlowUpdate
        ]
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn truncated_and_malformed_frames_are_counted_by_reason() {
    let mut h = Harness::new("truncated_and_malformed_frames_are_counted_by_reason");
    let full = eth_v4(&ipv4(PHONE, CN, TCP, &tcp(1, 2, ACK, &[])));
    // Cut inside the IPv4 header: at the Ethernet end, mid-header, one byte short.
    for cut in [14, 20, 33] {
        h.run(&full[..cut]);
    }
    assert_eq!(h.reason(reason::MALFORMED_IPV4), 3);
    // Cut inside the TCP header: classified by addresses, ports unknown.
    h.run(&full[..40]);
    assert_eq!(h.reason(reason::MALFORMED_L4), 1);
    assert_eq!(h.reason(reason::OUTBOUND), 1);
    // A VLAN tag cut short.
    let tagged = eth(
        &[(0x8100, 5)],
        0x0800,
        &ipv4(PHONE, CN, UDP, &udp(1, 2, &[])),
    );
    h.run(&tagged[..16]);
    assert_eq!(h.reason(reason::MALFORMED_L2), 1);
    // IPv6 header cut short.
    let v6 = eth_v6(&ipv6(
        PHONE6.parse().expect("v6"),
        CN6.parse().expect("v6"),
        &[],
        UDP,
        &udp(1, 2, &[]),
    ));
    h.run(&v6[..40]);
    assert_eq!(h.reason(reason::MALFORMED_IPV6), 1);
    // Bad IHL and a version that does not match the EtherType.
    let mut bad = full.clone();
    bad[14] = 0x44;
    h.run(&bad);
    bad[14] = 0x65;
    h.run(&bad);
    assert_eq!(h.reason(reason::MALFORMED_IPV4), 5);
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn tc_programs_classify_like_xdp_and_return_ok() {
    let mut h = Harness::new("tc_programs_classify_like_xdp_and_return_ok");
    let frame = eth_v4(&ipv4(PHONE, SG, UDP, &udp(1, 2, &[0; 30])));
    for program in [programs::TC_EGRESS, programs::TC_INGRESS] {
        assert!(h.run_tc(program, &frame), "{program} runs a whole frame");
    }
    h.run(&frame);
    assert_eq!(
        h.class("phones", "SG", DIR_OUTBOUND, Verdict::Allowed),
        (3, 3 * 58)
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn a_zero_ip_length_counts_the_frames_own_bytes() {
    // TSO and BIG TCP super-packets carry an IPv4 total length of 0, GSO packets and
    // jumbograms an IPv6 payload length of 0: their layer-3 bytes are the frame's, which
    // the parser asks the hook for only then. Both program sets, through XDP and TC.
    let mut v4 = ipv4(PHONE, SG, UDP, &udp(1, 2, &[0; 30]));
    v4[2..4].copy_from_slice(&[0, 0]);
    let v4 = eth_v4(&v4);
    let mut v6 = ipv6(
        PHONE6.parse().expect("v6"),
        CN6.parse().expect("v6"),
        &[],
        UDP,
        &udp(1, 2, &[0; 50]),
    );
    v6[4..6].copy_from_slice(&[0, 0]);
    let v6 = eth_v6(&v6);
    for set in [programs::IN_PLACE, programs::COPY] {
        let mut h = Harness::with_programs("a_zero_ip_length_counts_the_frames_own_bytes", set);
        for frame in [&v4, &v6] {
            h.run(frame);
            assert!(
                h.run_tc(set.tc_egress, frame),
                "{} runs the frame",
                set.tc_egress
            );
        }
        assert_eq!(
            h.class("phones", "SG", DIR_OUTBOUND, Verdict::Allowed),
            (2, 2 * (v4.len() as u64 - 14)),
            "{}: IPv4 with total length 0",
            set.name
        );
        assert_eq!(
            h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation),
            (2, 2 * (v6.len() as u64 - 14)),
            "{}: IPv6 with payload length 0",
            set.name
        );
        h.assert_outcomes_sum();
    }
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn the_flow_table_is_read_whole_in_batches() {
    // More flows than one batch (4096), as the daemon's sweep reads them.
    let mut h = Harness::with_flows(
        "the_flow_table_is_read_whole_in_batches",
        "max_entries = 20000",
    );
    let n: u16 = 10_000;
    for port in 0..n {
        h.run(&eth_v4(&ipv4(
            PHONE,
            CN,
            UDP,
            &udp(10_000 + port, 443, &[1; 8]),
        )));
    }
    assert_eq!(h.reason(reason::FLOW_CREATED), u64::from(n));
    let flows = h.monitor.flows().expect("flows");
    let ports: std::collections::BTreeSet<u16> = flows.iter().map(|(k, _)| k.inside_port).collect();
    assert_eq!(flows.len(), usize::from(n), "every flow, once");
    assert_eq!(ports.len(), usize::from(n));
    assert!(flows.iter().all(|(_, st)| st.packets_out == 1));
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn the_daemons_counter_reads_take_the_labelled_slots_and_lose_nothing() {
    // The daemon reads only the key ranges the labels name (one per group); a read of the
    // whole arrays must find nothing more. Every group (ungrouped is slot 0, so its range
    // starts at the array's first key), known and unknown countries (the unknown country is
    // each group range's first key), both directions, several verdicts.
    let mut h = Harness::new("the_daemons_counter_reads_take_the_labelled_slots_and_lose_nothing");
    for inside in [OTHER_HOME, PHONE, LAPTOP] {
        for remote in [CN, SG, US, IN, NOWHERE] {
            h.run(&eth_v4(&ipv4(
                inside,
                remote,
                UDP,
                &udp(40_000, 443, &[1; 8]),
            )));
            h.run(&eth_v4(&ipv4(
                remote,
                inside,
                UDP,
                &udp(443, 40_000, &[1; 4]),
            )));
        }
    }
    let whole = h.monitor.read_counters().expect("whole read");
    let first_keys = [
        class_index(0, 0, DIR_OUTBOUND, Verdict::Unknown.code()),
        class_index(1, 0, DIR_OUTBOUND, Verdict::Unknown.code()),
    ];
    for key in first_keys {
        assert!(
            whole.classes.iter().any(|(k, _)| *k == key),
            "class {key} (a range's first key) was counted"
        );
    }
    assert!(whole.classes.len() >= 3 * 5 * 2, "{:?}", whole.classes);
    let mut maps = h.monitor.take_counters().expect("counter maps");
    let ranged = maps.read(&h.labels).expect("ranged read");
    assert_eq!(ranged.classes, whole.classes);
    assert_eq!(ranged.asns, whole.asns);
    assert_eq!(ranged.watch, whole.watch);
    assert_eq!(ranged.policy_drops, whole.policy_drops);
    assert_eq!(ranged.reasons, whole.reasons);
}

/// The verifier's budget: each program on the packet path (the attached ones and the
/// encapsulation programs they tail-call) must stay far below the kernel's limit of 1M
/// processed instructions, so that the next feature has room. Main before watchlists:
/// ~52,000; with watchlists and the DNS copy ~65,000; with encapsulations ~55,000 and the
/// encapsulation programs ~29,000 (XDP) and ~35,000 (TC); the `copy` set ~24,000 each as
/// root, ~31,000 without CAP_PERFMON (`exfilmon-verifier` prints them all).
const VERIFIER_BUDGET: u32 = 150_000;

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn attached_programs_stay_within_the_verifier_budget() {
    let name = "attached_programs_stay_within_the_verifier_budget";
    let mut counts = Vec::new();
    for set in [programs::IN_PLACE, programs::COPY] {
        let h = Harness::with_programs(name, set);
        let set_counts = h.monitor.verified_instructions().expect("program info");
        assert_eq!(
            set_counts.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            set.all(),
            "{set_counts:?}"
        );
        counts.extend(set_counts);
    }
    for (program, count) in counts {
        let Some(count) = count else {
            eprintln!("SKIPPED: the kernel does not report verified_insns for {program}");
            continue;
        };
        println!("{program}: {count} instructions verified");
        assert!(
            count <= VERIFIER_BUDGET,
            "{program}: the verifier processed {count} instructions, over the budget of {VERIFIER_BUDGET}"
        );
    }
}

/// The representative frames of the fail-open corpus: one per parse path.
fn representative_frames() -> Vec<Vec<u8>> {
    frames_with_ext_up_to(9)
}

/// The representative frames, with IPv6 chains of 0 to `max_ext` extension headers.
fn frames_with_ext_up_to(max_ext: usize) -> Vec<Vec<u8>> {
    let v6 = |ext: &[u8], proto: u8, payload: &[u8]| {
        eth_v6(&ipv6(
            PHONE6.parse().expect("v6"),
            CN6.parse().expect("v6"),
            ext,
            proto,
            payload,
        ))
    };
    let mut frames = vec![
        eth_v4(&ipv4(PHONE, CN, UDP, &udp(40000, 443, &[7; 40]))),
        eth_v4(&ipv4(PHONE, SG, TCP, &tcp(40001, 443, ACK, &[1; 24]))),
        eth_v4(&ipv4(CN, PHONE, TCP, &tcp(443, 40001, SYN | ACK, &[]))),
        eth_v4(&ipv4_with(PHONE, CN, TCP, &[1; 8], 0, &tcp(1, 2, ACK, &[]))),
        eth_v4(&ipv4_with(
            PHONE,
            CN,
            UDP,
            &[],
            0x2000,
            &udp(1, 2, &[3; 16]),
        )),
        eth_v4(&ipv4_with(PHONE, CN, UDP, &[], 0x0010, &[3; 16])),
        eth_v4(&ipv4(PHONE, CN, ICMP, &icmp(8, 0))),
        eth_v4(&ipv4(IN, PHONE, UDP, &udp(53, 40002, &[0x12; 60]))),
        eth_v4(&ipv4(
            PHONE,
            CN,
            TCP,
            &tcp(
                40003,
                443,
                ACK,
                &monitor::tls::client_hello(Some("x.example"), 0),
            ),
        )),
        eth(
            &[(0x8100, 5)],
            0x0800,
            &ipv4(PHONE, CN, UDP, &udp(1, 2, &[])),
        ),
        eth(
            &[(0x88a8, 5), (0x8100, 6)],
            0x86dd,
            &ipv6(
                PHONE6.parse().expect("v6"),
                CN6.parse().expect("v6"),
                &[],
                UDP,
                &udp(1, 2, &[]),
            ),
        ),
        eth(
            &[(0x88a8, 5), (0x8100, 6), (0x8100, 7)],
            0x0800,
            &ipv4(PHONE, CN, UDP, &udp(1, 2, &[])),
        ),
        eth_v6(&ipv6_fragment(
            PHONE6.parse().expect("v6"),
            CN6.parse().expect("v6"),
            UDP,
            0,
            true,
            &udp(1, 2, &[5; 8]),
        )),
        eth_v6(&ipv6_fragment(
            PHONE6.parse().expect("v6"),
            CN6.parse().expect("v6"),
            UDP,
            100,
            false,
            &[5; 8],
        )),
        v6(&[], ICMPV6, &icmp(128, 0)),
        arp(),
    ];
    // 0 to 9 IPv6 extension headers: up to the cap of 8, and past it.
    let chain = [
        HOPOPTS, DSTOPTS, ROUTING, DSTOPTS, DSTOPTS, DSTOPTS, DSTOPTS, DSTOPTS, DSTOPTS,
    ];
    for n in 0..=chain.len().min(max_ext) {
        frames.push(v6(&chain[..n], TCP, &tcp(40004, 443, ACK, &[9; 12])));
    }
    frames.extend(encapsulated_frames());
    frames
}

/// The corpus's encapsulated frames: one per path of the encapsulation walk.
fn encapsulated_frames() -> Vec<Vec<u8>> {
    let inner = ipv4(PHONE, CN, UDP, &udp(45000, 443, &[6; 24]));
    let inner6 = ipv6(
        v6(PHONE6),
        v6(CN6),
        &[],
        TCP,
        &tcp(45001, 443, ACK, &[6; 8]),
    );
    let private = ipv4(
        Ipv4Addr::new(10, 9, 0, 1),
        Ipv4Addr::new(10, 9, 0, 2),
        UDP,
        &udp(1, 2, &[0; 8]),
    );
    let plain = (false, false, false);
    let in_gre = |src, dst, payload: &[u8]| ipv4(src, dst, GRE, &gre(ETH_IPV4, plain, payload));
    let labels: Vec<u32> = (16..25).collect();
    vec![
        eth(&[], ETH_PPPOE_SESSION, &pppoe(&ppp(PPP_IPV4, &inner))),
        eth(
            &[(0x8100, 7)],
            ETH_PPPOE_SESSION,
            &pppoe(&ppp_compressed(0x57, &inner6)),
        ),
        eth(&[], ETH_PPPOE_SESSION, &pppoe(&ppp(PPP_LCP, &[9, 1, 0, 8]))),
        eth(&[], ETH_MPLS, &mpls(&labels[..2], &inner)),
        eth(&[], ETH_MPLS_MULTICAST, &mpls(&labels[..8], &inner6)),
        eth(&[], ETH_MPLS, &mpls(&labels, &inner)),
        eth(
            &[],
            ETH_MPLS,
            &mpls(&[16], &[&[0u8; 4][..], &eth_v4(&inner)].concat()),
        ),
        eth_v4(&ipv4(
            R1,
            R2,
            GRE,
            &gre(ETH_IPV4, (true, true, true), &inner),
        )),
        eth_v4(&ipv4(
            R1,
            R2,
            GRE,
            &gre(ETH_TEB, plain, &eth(&[(0x8100, 5)], ETH_IPV4, &inner)),
        )),
        eth_v6(&ipv6(
            v6(R1_6),
            v6(R2_6),
            &[],
            UDP,
            &udp(1, PORT_VXLAN, &vxlan(1, &eth_v6(&inner6))),
        )),
        eth_v4(&ipv4(
            R1,
            R2,
            UDP,
            &udp(2, PORT_GENEVE, &geneve(ETH_TEB, 1, &eth_v4(&inner))),
        )),
        eth_v4(&in_gre(PHONE, CN, &private)),
        eth_v4(&ipv4(PHONE, CN, GRE, &gre_pptp(&[0xff, 3, 0, 0x21]))),
        eth(
            &[],
            ETH_MPLS,
            &mpls(
                &[16],
                &in_gre(R1, R2, &in_gre(R3, R4, &in_gre(R1, R2, &inner))),
            ),
        ),
    ]
}

/// One of `frames` with 1 to 6 of its first 160 bytes (the headers of two tunnels)
/// overwritten, and cut at a random length in 3 cases of 10.
fn mutated(frames: &[Vec<u8>], rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    use rand::RngExt as _;
    let mut f = frames[rng.random_range(0..frames.len())].clone();
    for _ in 0..rng.random_range(1..=6) {
        let at = rng.random_range(0..f.len().min(160));
        f[at] = rng.random();
    }
    if rng.random_bool(0.3) {
        f.truncate(rng.random_range(14..=f.len()));
    }
    f
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn fail_open_corpus_every_frame_passes_unchanged_and_outcomes_sum_to_runs() {
    use rand::{SeedableRng as _, rngs::StdRng};

    let mut h =
        Harness::new("fail_open_corpus_every_frame_passes_unchanged_and_outcomes_sum_to_runs");
    let frames = representative_frames();
    let mut tc_runs = 0u64;
    let mut tc_refused = 0u64;

    // 1. Every representative frame cut at every length from the Ethernet header on (the
    //    shortest frame BPF_PROG_TEST_RUN takes), through XDP and TC.
    for frame in &frames {
        for cut in 14..=frame.len() {
            h.run(&frame[..cut]);
            if h.run_tc(programs::TC_EGRESS, &frame[..cut]) {
                tc_runs += 1;
            } else {
                tc_refused += 1;
            }
        }
    }
    // 2. Bad IPv4 header lengths and total lengths.
    let v4 = &frames[0];
    for ihl in 0..16u8 {
        let mut f = v4.clone();
        f[14] = 0x40 | ihl;
        h.run(&f);
    }
    for total in [0u16, 1, 19, 20, 27, 28, 75, 77, 1500, u16::MAX] {
        let mut f = v4.clone();
        f[16..18].copy_from_slice(&total.to_be_bytes());
        h.run(&f);
    }
    // 3. Random mutations: 1 to 6 bytes of the first 160 (the headers of two tunnels)
    //    overwritten, and a random cut.
    let mut rng = StdRng::seed_from_u64(0x00e0_f11e);
    for _ in 0..10_000 {
        h.run(&mutated(&frames, &mut rng));
    }

    let runs = h.frames;
    println!(
        "fail-open corpus: {runs} runs ({} through XDP, {tc_runs} through TC), every one PASS \
         and unchanged; {tc_refused} cut frames the kernel builds no skb for",
        runs - tc_runs
    );
    assert!(runs >= 10_000, "at least 10,000 frames: {runs}");
    h.assert_outcomes_sum();
    let c = h.counters();
    println!(
        "outcome counters sum to {runs}: {:?}",
        reason::NAMES
            .iter()
            .take(reason::OUTCOMES as usize)
            .map(|(id, name)| (*name, c.reasons[*id as usize]))
            .collect::<Vec<_>>()
    );
    println!(
        "encapsulations reached: {:?}",
        [
            reason::TUNNEL_INNER,
            reason::TUNNEL_OUTER,
            reason::TUNNEL_UNPARSED,
            reason::TUNNEL_DEPTH,
            reason::GRE_PPTP,
            reason::MPLS_NON_IP,
        ]
        .map(|id| (
            reason::NAMES
                .iter()
                .find(|(i, _)| *i == id)
                .expect("named")
                .1,
            c.reasons[id as usize]
        ))
    );
    for id in [
        reason::MALFORMED_IPV4,
        reason::MALFORMED_IPV6,
        reason::MALFORMED_L2,
        reason::MPLS_DEPTH,
        reason::MPLS_NON_IP,
        reason::TUNNEL_INNER,
        reason::TUNNEL_OUTER,
        reason::TUNNEL_UNPARSED,
        reason::TUNNEL_DEPTH,
        reason::GRE_PPTP,
    ] {
        assert!(c.reasons[id as usize] > 0, "the corpus reaches reason {id}");
    }
    assert_eq!(
        c.reasons[reason::ENCAP_MISSED as usize],
        0,
        "every encapsulated frame reaches its encapsulation program"
    );
}

/// The program set for a loader without CAP_PERFMON reads each header through a helper
/// (`programs::COPY`). Every frame of the corpus, through XDP and TC, must come out of it
/// as out of the in-place set: the same action, the frame unchanged (`run` asserts both),
/// the same outcome and event counters, class counters, flows and ring records. The one
/// difference by design: it walks shorter IPv6 header chains
/// (`programs::COPY_MAX_IPV6_EXT`), so the corpus' longer chains are left out, and one
/// is checked apart.
#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn the_copy_programs_count_every_corpus_frame_as_the_in_place_ones_do() {
    use rand::{SeedableRng as _, rngs::StdRng};

    let name = "the_copy_programs_count_every_corpus_frame_as_the_in_place_ones_do";
    let mut sets = [
        Harness::with_programs(name, programs::IN_PLACE),
        Harness::with_programs(name, programs::COPY),
    ];
    assert_eq!(sets[1].programs, programs::COPY);
    let frames = frames_with_ext_up_to(programs::COPY_MAX_IPV6_EXT - 1);
    let run = |sets: &mut [Harness; 2], frame: &[u8]| {
        for h in sets.iter_mut() {
            h.run(frame);
            let tc = h.programs.tc_egress;
            h.run_tc(tc, frame);
        }
    };
    let same = |sets: &[Harness; 2], what: &str| {
        let (a, b) = (sets[0].counters(), sets[1].counters());
        assert_eq!(a.reasons, b.reasons, "reason counters after {what}");
        assert_eq!(
            format!("{:?}", (&a.classes, &a.watch, &a.policy_drops)),
            format!("{:?}", (&b.classes, &b.watch, &b.policy_drops)),
            "class counters after {what}"
        );
    };
    for (i, frame) in frames.iter().enumerate() {
        for cut in 14..=frame.len() {
            run(&mut sets, &frame[..cut]);
        }
        same(
            &sets,
            &format!("representative frame {i} cut at every length"),
        );
    }
    let mut rng = StdRng::seed_from_u64(0x00c0_be11);
    for round in 0..10 {
        for _ in 0..300 {
            run(&mut sets, &mutated(&frames, &mut rng));
        }
        same(&sets, &format!("mutation round {round}"));
    }
    let [a, b] = &mut sets;
    let flow_count = a.flow_lines().len();
    assert_eq!(a.flow_lines(), b.flow_lines(), "the same flows");
    let (ea, eb) = (a.ring_records(), b.ring_records());
    assert_eq!(ea, eb, "the same ring records");
    a.assert_outcomes_sum();
    b.assert_outcomes_sum();
    // A chain as long as the copy set's walk: it counts `ipv6_ext_limit` and classifies
    // the packet by its addresses, where the in-place set reads on to the ports.
    let longer = eth_v6(&ipv6(
        PHONE6.parse().expect("v6"),
        CN6.parse().expect("v6"),
        &[DSTOPTS; programs::COPY_MAX_IPV6_EXT],
        UDP,
        &udp(6001, 443, &[0; 16]),
    ));
    let limits = sets.each_mut().map(|h| {
        let before = h.reason(reason::IPV6_EXT_LIMIT);
        h.run(&longer);
        h.reason(reason::IPV6_EXT_LIMIT) - before
    });
    assert_eq!(
        limits,
        [0, 1],
        "ipv6_ext_limit counted by the copy set only"
    );
    let b = &sets[1];
    let c = b.counters();
    println!(
        "copy programs: {} runs, outcomes, {} class counters, {} flows and {} ring records \
         identical to the in-place programs; DNS copies {}, ClientHello copies {}",
        b.frames,
        c.classes.len(),
        flow_count,
        eb.len(),
        c.reasons[reason::DNS_COPIED as usize],
        c.reasons[reason::TLS_HELLO_COPIED as usize],
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn a_full_ring_counts_every_event_as_delivered_or_dropped() {
    // The smallest ring (one page) and a consumer that does not read until the end.
    let mut h = Harness::with_flows(
        "a_full_ring_counts_every_event_as_delivered_or_dropped",
        "ring_bytes = 4096",
    );
    let produced = 500u16;
    for port in 0..produced {
        h.run(&eth_v4(&ipv4(
            PHONE,
            CN,
            UDP,
            &udp(10_000 + port, 443, &[0; 8]),
        )));
    }
    let c = h.counters();
    let (submitted, dropped) = (
        c.reasons[reason::RINGBUF_SUBMITTED as usize],
        c.reasons[reason::RINGBUF_DROPPED as usize],
    );
    assert_eq!(
        c.reasons[reason::FLOW_CREATED as usize],
        u64::from(produced)
    );
    assert!(dropped > 0, "the ring filled up");
    assert_eq!(
        submitted + dropped,
        u64::from(produced),
        "each flow start is submitted or counted as dropped"
    );
    let delivered = h.events().len() as u64;
    assert_eq!(delivered, submitted, "every submitted event is delivered");
    println!(
        "ring of 4096 bytes, consumer stopped: {produced} events produced = {delivered} delivered \
         + {dropped} dropped"
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn a_flood_of_new_flows_drops_no_packet_and_keeps_the_active_large_flow() {
    let mut h = Harness::with_flows(
        "a_flood_of_new_flows_drops_no_packet_and_keeps_the_active_large_flow",
        "max_entries = 1024",
    );
    let large = eth_v4(&ipv4(PHONE, CN, TCP, &tcp(40_000, 443, ACK, &[0x42; 1000])));
    h.run(&large);
    let mut large_packets = 1u64;
    let flood = 100_000u32;
    for i in 0..flood {
        // A new violation flow each time: 60,000 source ports times two remote ports.
        let sport = u16::try_from(1024 + i % 60_000).expect("port");
        let dport = u16::try_from(1 + i / 60_000).expect("port");
        h.run(&eth_v4(&ipv4(PHONE, CN, UDP, &udp(sport, dport, &[0; 8]))));
        if i % 100 == 0 {
            h.run(&large);
            large_packets += 1;
        }
    }
    let c = h.counters();
    let created = c.reasons[reason::FLOW_CREATED as usize];
    let failed = c.reasons[reason::FLOW_INSERT_FAILED as usize];
    assert_eq!(
        created + failed,
        u64::from(flood) + 1,
        "every new flow is inserted or counted as failed"
    );
    // Every packet passed (run asserts it) and was counted, flood and large flow alike.
    let large_bytes = large_packets * (large.len() as u64 - 14);
    let flood_bytes = u64::from(flood) * (20 + 8 + 8);
    assert_eq!(
        h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation),
        (u64::from(flood) + large_packets, flood_bytes + large_bytes)
    );
    let flows = h.monitor.flows().expect("flows");
    let (_, st) = flows
        .iter()
        .find(|(k, _)| k.proto == TCP && k.inside_port == 40_000)
        .expect("the large flow is still in the table");
    assert_eq!(
        (st.packets_out, st.bytes_out),
        (large_packets, large_bytes),
        "with all its packets"
    );
    // The table is an LRU: a full table evicts its least recently used flow rather than
    // refusing the insert, so the flood's flows push each other out, not the active one.
    println!(
        "flood of {flood} new violation flows into a table of 1024: 0 packets dropped, {created} \
         inserted, {failed} insert failures, {} flows held, {} evicted (their bytes stay in the \
         class counters); the large flow kept {large_packets} packets",
        flows.len(),
        created - flows.len() as u64
    );
    h.assert_outcomes_sum();
}

// --- encapsulations: PPPoE, MPLS, GRE, VXLAN, GENEVE ---------------------------------------

/// ISP routers in IN (198.51.100.0/25): tunnel endpoints that are neither inside nor abroad.
const R1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const R2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const R3: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const R4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 4);
const R1_6: &str = "2001:db8:ff::1";
const R2_6: &str = "2001:db8:ff::2";

fn v6(a: &str) -> Ipv6Addr {
    a.parse().expect("v6")
}

impl Harness {
    /// Runs a frame through XDP and through TC egress (each tail-calls its encapsulation
    /// program for an encapsulated frame).
    fn run_both(&mut self, frame: &[u8]) {
        self.run(frame);
        assert!(
            self.run_tc(programs::TC_EGRESS, frame),
            "TC runs a whole frame"
        );
    }

    fn flow(&self, key: &FlowKey) -> monitor_common::flow::FlowState {
        self.monitor
            .flows()
            .expect("flows")
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no flow {key:?}"))
            .1
    }
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn pppoe_sessions_are_classified_by_their_ip_packets() {
    let mut h = Harness::new("pppoe_sessions_are_classified_by_their_ip_packets");
    let v4 = ipv4(PHONE, CN, UDP, &udp(40000, 443, &[7; 100]));
    let v6_packet = ipv6(
        v6(PHONE6),
        v6(CN6),
        &[],
        TCP,
        &tcp(40001, 443, ACK, &[8; 60]),
    );
    let allowed = ipv4(PHONE, SG, UDP, &udp(40002, 443, &[9; 20]));
    let session = |ppp: &[u8]| eth(&[], ETH_PPPOE_SESSION, &pppoe(ppp));
    for frame in [
        session(&ppp(PPP_IPV4, &v4)),
        // An access network with a VLAN per customer.
        eth(
            &[(0x8100, 100)],
            ETH_PPPOE_SESSION,
            &pppoe(&ppp(PPP_IPV4, &v4)),
        ),
        session(&ppp(PPP_IPV6, &v6_packet)),
        // Protocol-field compression: a 1-byte PPP protocol.
        session(&ppp_compressed(0x21, &allowed)),
        // LCP echo request, and a discovery-stage PADI: not IP.
        session(&ppp(PPP_LCP, &[9, 1, 0, 8, 0, 0, 0, 0])),
        eth(
            &[],
            ETH_PPPOE_DISCOVERY,
            &[0x11, 0x09, 0, 0, 0, 4, 1, 1, 0, 0],
        ),
    ] {
        h.run_both(&frame);
    }
    // Bytes are the IP packet's (128 and 120), not the frame's.
    let (v4_len, v6_len) = (v4.len() as u64, v6_packet.len() as u64);
    let cn = h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation);
    assert_eq!(cn, (6, 4 * v4_len + 2 * v6_len));
    let sg = h.class("phones", "SG", DIR_OUTBOUND, Verdict::Allowed);
    assert_eq!(sg, (2, 2 * allowed.len() as u64));
    assert_eq!(
        h.reason(reason::NON_IP),
        4,
        "LCP and PADI, through both hooks"
    );
    let st = h.flow(&v4_key(PHONE, CN, UDP, 40000, 443));
    assert_eq!((st.packets_out, st.bytes_out), (4, 4 * v4_len));
    println!(
        "PPPoE: 12 frames (XDP and TC): phones→CN {cn:?} (IPv4 {v4_len} B ×4, IPv6 {v6_len} B \
         ×2), phones→SG {sg:?} (compressed protocol field), non_ip {} (LCP, PADI)",
        h.reason(reason::NON_IP)
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn mpls_label_stacks_are_walked_to_the_ip_packet_and_capped_at_eight_labels() {
    let mut h =
        Harness::new("mpls_label_stacks_are_walked_to_the_ip_packet_and_capped_at_eight_labels");
    let v4 = ipv4(PHONE, CN, UDP, &udp(42000, 443, &[1; 72]));
    let v6_packet = ipv6(v6(PHONE6), v6(CN6), &[], UDP, &udp(42001, 443, &[2; 52]));
    let echo = ipv4(PHONE, CN, ICMP, &icmp(8, 0));
    let labels: Vec<u32> = (16..25).collect();
    let mut padded = eth(&[], ETH_MPLS, &mpls(&[16], &echo));
    padded.resize(60, 0); // an Ethernet minimum-size frame: 14 bytes of padding
    for frame in [
        eth(&[], ETH_MPLS, &mpls(&[16], &v4)),
        eth(&[], ETH_MPLS_MULTICAST, &mpls(&[16, 17], &v6_packet)),
        eth(&[], ETH_MPLS, &mpls(&labels[..8], &v4)),
        padded,
    ] {
        h.run_both(&frame);
    }
    let cn = h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation);
    let (v4_len, v6_len) = (v4.len() as u64, v6_packet.len() as u64);
    assert_eq!(cn, (8, 4 * v4_len + 2 * v6_len + 2 * echo.len() as u64));

    // Nine labels: one more than followed.
    h.run_both(&eth(&[], ETH_MPLS, &mpls(&labels, &v4)));
    assert_eq!(h.reason(reason::MPLS_DEPTH), 2);
    // Pseudowires: an Ethernet frame behind a control word, and one without, whose
    // destination MAC starts with 4 (its "IPv4 total length" does not fit the frame).
    let mut no_control_word = eth_v4(&v4);
    no_control_word[..6].copy_from_slice(&[0x45, 0, 0x12, 0x34, 0x56, 0x78]);
    h.run_both(&eth(
        &[],
        ETH_MPLS,
        &mpls(&[16, 100], &[&[0u8; 4][..], &eth_v4(&v4)].concat()),
    ));
    h.run_both(&eth(&[], ETH_MPLS, &mpls(&[16, 100], &no_control_word)));
    assert_eq!(h.reason(reason::MPLS_NON_IP), 4);
    assert_eq!(h.reason(reason::NON_IP), 4);
    // A stack cut before its bottom.
    h.run(&eth(&[], ETH_MPLS, &mpls(&[16, 17], &v4))[..20]);
    assert_eq!(h.reason(reason::MALFORMED_L2), 1);
    assert_eq!(
        h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation),
        cn,
        "nothing past the cap, in a pseudowire or cut is classified"
    );
    println!(
        "MPLS: 1, 2 and 8 labels and a padded minimum frame, XDP and TC: phones→CN {cn:?}; \
         9 labels: mpls_depth {}; pseudowires with and without control word: mpls_non_ip {}, \
         non_ip {}; a cut stack: malformed_l2 {}",
        h.reason(reason::MPLS_DEPTH),
        h.reason(reason::MPLS_NON_IP),
        h.reason(reason::NON_IP),
        h.reason(reason::MALFORMED_L2)
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn gre_tunnels_are_classified_by_their_inner_packets_and_inner_bytes() {
    let mut h = Harness::new("gre_tunnels_are_classified_by_their_inner_packets_and_inner_bytes");
    let inner = ipv4(PHONE, CN, UDP, &udp(41000, 443, &[1; 200]));
    let inner6 = ipv6(v6(PHONE6), v6(CN6), &[], UDP, &udp(41001, 443, &[1; 180]));
    let plain = (false, false, false);
    let over_v4 = |payload: &[u8]| eth_v4(&ipv4(R1, R2, GRE, payload));
    for frame in [
        over_v4(&gre(ETH_IPV4, plain, &inner)),
        over_v4(&gre(ETH_IPV4, (true, true, true), &inner)),
        over_v4(&gre(ETH_IPV6, (false, true, false), &inner6)),
        // Transparent Ethernet bridging (NVGRE): an inner Ethernet frame.
        over_v4(&gre(ETH_TEB, (false, true, false), &eth_v4(&inner))),
        eth_v6(&ipv6(
            v6(R1_6),
            v6(R2_6),
            &[],
            GRE,
            &gre(ETH_IPV4, plain, &inner),
        )),
    ] {
        h.run_both(&frame);
    }
    let len = inner.len() as u64;
    assert_eq!(inner6.len() as u64, len);
    let cn = h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation);
    assert_eq!(cn, (10, 10 * len), "inner packets, inner bytes");
    assert_eq!(
        h.reason(reason::TRANSIT),
        0,
        "the routers' packets are not counted"
    );
    let st = h.flow(&v4_key(PHONE, CN, UDP, 41000, 443));
    assert_eq!((st.packets_out, st.bytes_out), (8, 8 * len));
    // A DNS answer inside the tunnel is copied to the daemon, from the inner payload.
    h.run_both(&over_v4(&gre(
        ETH_IPV4,
        plain,
        &ipv4(IN, PHONE, UDP, &udp(53, 40100, &[0x12; 60])),
    )));
    assert_eq!(
        h.class("phones", "IN", DIR_INBOUND, Verdict::Domestic),
        (2, 2 * 88)
    );
    assert_eq!(h.reason(reason::DNS_COPIED), 2);
    assert_eq!(h.reason(reason::TUNNEL_INNER), 12);
    println!(
        "GRE: IPv4, IPv6 and Ethernet inside, with and without checksum/key/sequence, over \
         IPv4 and IPv6, XDP and TC: phones→CN {cn:?} ({len} B inner packets in {}–{} B \
         frames), flow {:?}; an inner DNS answer copied {} times; tunnel_inner {}",
        over_v4(&gre(ETH_IPV4, plain, &inner)).len(),
        over_v4(&gre(ETH_TEB, (false, true, false), &eth_v4(&inner))).len(),
        (st.packets_out, st.bytes_out),
        h.reason(reason::DNS_COPIED),
        h.reason(reason::TUNNEL_INNER)
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn a_tunnel_a_device_opens_itself_is_classified_by_the_tunnel_packet() {
    let mut h = Harness::new("a_tunnel_a_device_opens_itself_is_classified_by_the_tunnel_packet");
    let private = ipv4(
        Ipv4Addr::new(10, 9, 0, 1),
        Ipv4Addr::new(10, 9, 0, 2),
        UDP,
        &udp(5000, 5001, &[3; 100]),
    );
    let nd = ipv6(v6(PHONE6), v6("ff02::1"), &[], ICMPV6, &icmp(135, 0));
    let mut no_i_flag = vxlan(7, &eth_v4(&private));
    no_i_flag[0] = 0;
    let cases: [(&str, Vec<u8>, u32); 7] = [
        // Inner addresses not inside (the device's own tunnel addresses).
        (
            "GRE, private inner",
            ipv4(
                PHONE,
                CN,
                GRE,
                &gre(ETH_IPV4, (false, false, false), &private),
            ),
            reason::TUNNEL_OUTER,
        ),
        (
            "VXLAN, link-scoped inner",
            ipv4(
                PHONE,
                CN,
                UDP,
                &udp(50000, PORT_VXLAN, &vxlan(7, &eth_v6(&nd))),
            ),
            reason::TUNNEL_OUTER,
        ),
        // Inner frames not followed.
        (
            "VXLAN, ARP inner",
            ipv4(PHONE, CN, UDP, &udp(50001, PORT_VXLAN, &vxlan(7, &arp()))),
            reason::TUNNEL_UNPARSED,
        ),
        (
            "VXLAN without the I flag",
            ipv4(PHONE, CN, UDP, &udp(50002, PORT_VXLAN, &no_i_flag)),
            reason::TUNNEL_UNPARSED,
        ),
        (
            "GRE, ERSPAN",
            ipv4(PHONE, CN, GRE, &gre(0x88be, (false, false, true), &[0; 40])),
            reason::TUNNEL_UNPARSED,
        ),
        (
            "GRE, inner header cut",
            ipv4(
                PHONE,
                CN,
                GRE,
                &gre(ETH_IPV4, (false, false, false), &private[..10]),
            ),
            reason::TUNNEL_UNPARSED,
        ),
        (
            "PPTP",
            ipv4(
                PHONE,
                CN,
                GRE,
                &gre_pptp(&[0xff, 0x03, 0x00, 0xfd, 1, 2, 3, 4]),
            ),
            reason::GRE_PPTP,
        ),
    ];
    let mut bytes = 0;
    for (what, packet, why) in &cases {
        let before = h.reason(*why);
        h.run_both(&eth_v4(packet));
        assert_eq!(h.reason(*why), before + 2, "{what}");
        bytes += 2 * packet.len() as u64;
    }
    let cn = h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation);
    assert_eq!(cn, (14, bytes), "the tunnel packets, with their own bytes");
    assert_eq!(h.reason(reason::OUTBOUND), 14);
    let gre_flow = h.flow(&v4_key(PHONE, CN, GRE, 0, 0));
    assert_eq!(gre_flow.packets_out, 8, "the GRE tunnels' own flow");
    println!(
        "tunnels a phone opens to CN, XDP and TC: phones→CN {cn:?} (the tunnel packets); \
         tunnel_outer {} (private or link-scoped inner), tunnel_unparsed {} (ARP, no I flag, \
         ERSPAN, cut), gre_pptp {}",
        h.reason(reason::TUNNEL_OUTER),
        h.reason(reason::TUNNEL_UNPARSED),
        h.reason(reason::GRE_PPTP)
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn vxlan_and_geneve_are_classified_by_their_inner_frames() {
    let mut h = Harness::new("vxlan_and_geneve_are_classified_by_their_inner_frames");
    let out = ipv4(PHONE, CN, TCP, &tcp(43000, 443, ACK, &[4; 100]));
    let back = ipv4(CN, PHONE, TCP, &tcp(443, 43000, ACK, &[4; 100]));
    let out6 = ipv6(
        v6(PHONE6),
        v6(CN6),
        &[],
        TCP,
        &tcp(43001, 443, ACK, &[4; 80]),
    );
    let vtep = |sport: u16, port: u16, payload: &[u8]| {
        eth_v4(&ipv4(R1, R2, UDP, &udp(sport, port, payload)))
    };
    for frame in [
        // An inner frame with a VLAN tag.
        vtep(
            51000,
            PORT_VXLAN,
            &vxlan(100, &eth(&[(0x8100, 42)], ETH_IPV4, &out)),
        ),
        eth_v6(&ipv6(
            v6(R1_6),
            v6(R2_6),
            &[],
            UDP,
            &udp(51001, PORT_VXLAN, &vxlan(100, &eth_v6(&out6))),
        )),
        // GENEVE with two option words and an Ethernet frame, and carrying IPv6 itself.
        vtep(51002, PORT_GENEVE, &geneve(ETH_TEB, 2, &eth_v4(&out))),
        vtep(51003, PORT_GENEVE, &geneve(ETH_IPV6, 0, &out6)),
        vtep(51004, PORT_VXLAN, &vxlan(100, &eth_v4(&back))),
    ] {
        h.run_both(&frame);
    }
    let len = out.len() as u64;
    assert_eq!(out6.len() as u64, len);
    let cn = h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation);
    assert_eq!(cn, (8, 8 * len));
    let from_cn = h.class("phones", "CN", DIR_INBOUND, Verdict::Violation);
    assert_eq!(from_cn, (2, 2 * len));
    let st = h.flow(&v4_key(PHONE, CN, TCP, 43000, 443));
    assert_eq!(
        (st.packets_out, st.packets_in),
        (4, 2),
        "one flow, both ways"
    );
    assert_eq!(h.reason(reason::TUNNEL_INNER), 10);
    println!(
        "VXLAN (inner VLAN tag, over IPv6) and GENEVE (options, Ethernet and IPv6 inside), \
         XDP and TC: phones→CN {cn:?}, CN→phones {from_cn:?} ({len} B inner packets); the \
         inner TCP flow {:?} packets out/in",
        (st.packets_out, st.packets_in)
    );
    h.assert_outcomes_sum();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn nested_tunnels_are_followed_two_deep_and_counted_past_that() {
    let mut h = Harness::new("nested_tunnels_are_followed_two_deep_and_counted_past_that");
    let plain = (false, false, false);
    let inner = ipv4(PHONE, CN, UDP, &udp(44000, 443, &[5; 50]));
    let in_gre = |src, dst, payload: &[u8]| ipv4(src, dst, GRE, &gre(ETH_IPV4, plain, payload));
    // VXLAN between two routers, carried in GRE between two others.
    let vx = ipv4(
        R3,
        R4,
        UDP,
        &udp(52000, PORT_VXLAN, &vxlan(9, &eth_v4(&inner))),
    );
    // Three tunnels: the third is the phone's own, to SG.
    let own = in_gre(PHONE, SG, &inner);
    for frame in [
        eth_v4(&in_gre(R1, R2, &vx)),
        // A PPPoE access line and an MPLS core carrying tunnels.
        eth(
            &[],
            ETH_PPPOE_SESSION,
            &pppoe(&ppp(PPP_IPV4, &in_gre(R1, R2, &inner))),
        ),
        eth(&[], ETH_MPLS, &mpls(&[16, 17], &in_gre(R1, R2, &vx))),
        eth_v4(&in_gre(R1, R2, &in_gre(R3, R4, &own))),
    ] {
        h.run_both(&frame);
    }
    let cn = h.class("phones", "CN", DIR_OUTBOUND, Verdict::Violation);
    assert_eq!(cn, (6, 6 * inner.len() as u64), "two tunnels deep");
    let sg = h.class("phones", "SG", DIR_OUTBOUND, Verdict::Allowed);
    assert_eq!(
        sg,
        (2, 2 * own.len() as u64),
        "past the cap: the deepest tunnel's own packet"
    );
    assert_eq!(h.reason(reason::TUNNEL_INNER), 6);
    assert_eq!(h.reason(reason::TUNNEL_DEPTH), 2);
    println!(
        "nested, XDP and TC: VXLAN in GRE, GRE in PPPoE, VXLAN in GRE in MPLS: phones→CN \
         {cn:?}; three GRE deep: tunnel_depth {}, classified by the third tunnel's packet, \
         phones→SG {sg:?}",
        h.reason(reason::TUNNEL_DEPTH)
    );
    h.assert_outcomes_sum();
}
