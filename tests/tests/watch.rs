//! Watchlist kernel tests: prefix and ASN hits counted per entry, DNS answers copied into
//! the ring buffer (and cut answers counted), and DNS-learned addresses attributed. The
//! classifier runs with BPF_PROG_TEST_RUN on crafted frames; root only (SKIPPED otherwise).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{MapData, RingBuf};
use exfilmon_tests::{packet::*, require_root, write_config};
use hickory_proto::{
    op::{Message, OpCode, Query},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, CNAME},
    },
};
use monitor::{
    ebpf::Monitor,
    events::{self, FlowRecord},
    geoip::GeoDb,
    load_monitor,
    tables::{self, Labels},
    watch::{Plan, WatchMetrics, Watcher},
};
use monitor_common::{
    class::{DIR_INBOUND, DIR_OUTBOUND},
    programs, reason,
    watch::{DNS_COPY, watch_counter_parts},
};

const UDP: u8 = 17;
const TCP: u8 = 6;
const PHONE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const RESOLVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
const WATCHED_NET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const AS64501: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 40);
const AS64500: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PLAIN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 250);

struct Harness {
    monitor: Monitor,
    labels: Labels,
    events: RingBuf<MapData>,
    watcher: Watcher,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(name: &str) -> Self {
        require_root(name);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("ip2asn.tsv"),
            "203.0.113.0\t203.0.113.31\t64500\tCN\tEXAMPLE-A\n\
             203.0.113.32\t203.0.113.63\t64501\tCN\tEXAMPLE-B\n",
        )
        .expect("write");
        let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/geoip.csv");
        let text = format!(
            r#"
[home]
networks = ["192.0.2.0/24", "2001:db8:1::/48"]
countries = ["IN"]
[[group]]
name = "phones"
networks = ["192.0.2.0/26", "2001:db8:1:1::/64"]
[geoip]
sources = [{{ format = "csv", path = "{geo}" }}, {{ format = "iptoasn", path = "{d}/ip2asn.tsv" }}]
[flows]
max_entries = 1024
ring_bytes = 262144
[[watchlist]]
name = "xiaomi"
prefixes = ["198.51.100.0/25", "2001:db8:ff::/48"]
asns = [64501]
domains = ["api.account.xiaomi.com", "*.xiaomi.com"]
"#
        );
        let config = write_config(dir.path(), &text);
        let geo = GeoDb::load(&config.geoip.sources).expect("geoip");
        let plan = tables::plan(&config, &geo).expect("plan");
        let mut monitor = load_monitor(&config, &plan)
            .unwrap_or_else(|e| panic!("load: {}", monitor::error_chain(&e)));
        let events = monitor.take_events().expect("ring");
        let watch = Plan::new(&config.watchlists, &plan.labels.watch, &plan.labels.asns);
        let metrics = WatchMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let watcher =
            Watcher::new(monitor.take_watch().expect("watch maps"), watch, metrics).expect("plan");
        Self {
            monitor,
            labels: plan.labels,
            events,
            watcher,
            _dir: dir,
        }
    }

    fn run(&self, frame: &[u8]) {
        let out = self
            .monitor
            .test_run(programs::XDP, frame)
            .expect("test run");
        assert_eq!(out.action, 2, "XDP_PASS");
    }

    /// Per-entry totals: (entry name, direction) → (packets, bytes), group phones only.
    fn hits(&self) -> Vec<(String, u32, u64, u64)> {
        let c = self.monitor.read_counters().expect("counters");
        let mut out: Vec<_> = c
            .watch
            .iter()
            .map(|(i, v)| {
                let (entry, group, dir) = watch_counter_parts(*i);
                assert_eq!(self.labels.group(group), "phones");
                let (w, e) = &self.labels.watch[entry as usize];
                (format!("{w}/{e}"), dir, v.packets, v.bytes)
            })
            .collect();
        out.sort();
        out
    }

    fn reason(&self, id: u32) -> u64 {
        self.monitor.read_counters().expect("counters").reasons[id as usize]
    }

    /// Drains the ring: DNS answers go to the watcher, as in the daemon; returns them.
    fn drain(&mut self) -> Vec<(Vec<u8>, bool, bool)> {
        let mut dns = Vec::new();
        while let Some(item) = self.events.next() {
            if let Ok(events::Record::Dns { payload, tcp, cut }) = events::decode_record(&item) {
                self.watcher.answer(payload, tcp, cut);
                dns.push((payload.to_vec(), tcp, cut));
            }
        }
        dns
    }

    fn flow_to(&self, remote: Ipv4Addr) -> FlowRecord {
        let (k, st) = self
            .monitor
            .flows()
            .expect("flows")
            .into_iter()
            .find(|(k, _)| k.remote[..4] == remote.octets())
            .unwrap_or_else(|| panic!("no flow to {remote}"));
        FlowRecord::new(&k, &st, &self.labels)
    }
}

fn send(to: Ipv4Addr, n: usize) -> Vec<u8> {
    eth_v4(&ipv4(PHONE, to, UDP, &udp(40000, 443, &vec![7; n])))
}

fn answer(qname: &str, records: &[(&str, RData)]) -> Vec<u8> {
    let mut m = Message::response(7, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(qname).expect("name"),
        RecordType::A,
    ));
    for (owner, data) in records {
        m.add_answer(Record::from_rdata(
            Name::from_ascii(owner).expect("name"),
            300,
            data.clone(),
        ));
    }
    m.to_vec().expect("encodes")
}

#[test]
#[ignore = "needs root: loads eBPF programs"]
fn prefix_and_asn_hits_are_counted_per_entry() {
    let h = Harness::new("prefix_and_asn_hits_are_counted_per_entry");
    h.run(&send(WATCHED_NET, 100)); // 20 + 8 + 100 = 128 bytes
    h.run(&eth_v4(&ipv4(
        WATCHED_NET,
        PHONE,
        UDP,
        &udp(443, 40000, &[1; 52]),
    ))); // 80
    h.run(&send(AS64501, 20)); // 48
    h.run(&send(AS64500, 20)); // not watched
    h.run(&send(PLAIN, 20)); // not watched
    let v6 = eth_v6(&ipv6(
        "2001:db8:1:1::10".parse::<Ipv6Addr>().expect("ip"),
        "2001:db8:ff:1::1".parse::<Ipv6Addr>().expect("ip"),
        &[],
        UDP,
        &udp(40000, 443, &[0; 12]),
    ));
    h.run(&v6); // 40 + 8 + 12 = 60
    assert_eq!(
        h.hits(),
        [
            ("xiaomi/198.51.100.0/25".to_owned(), DIR_OUTBOUND, 1, 128),
            ("xiaomi/198.51.100.0/25".to_owned(), DIR_INBOUND, 1, 80),
            ("xiaomi/2001:db8:ff::/48".to_owned(), DIR_OUTBOUND, 1, 60),
            ("xiaomi/AS64501".to_owned(), DIR_OUTBOUND, 1, 48),
        ]
    );
    assert_eq!(h.reason(reason::WATCH_HIT), 4);
    // 198.51.100.10 is domestic (IN): its flow is tracked only because it is watched.
    let flow = h.flow_to(WATCHED_NET);
    assert_eq!(flow.watch.as_deref(), Some("xiaomi/198.51.100.0/25"));
    assert_eq!((flow.bytes_out, flow.bytes_in), (128, 80));
    assert!(
        h.monitor
            .flows()
            .expect("flows")
            .iter()
            .all(|(k, _)| k.remote[..4] != PLAIN.octets()),
        "ordinary domestic traffic is not tracked"
    );
}

#[test]
#[ignore = "needs root: loads eBPF programs"]
fn dns_answers_become_ring_records_and_cut_ones_are_counted() {
    let mut h = Harness::new("dns_answers_become_ring_records_and_cut_ones_are_counted");
    let small = answer("a.example.", &[("a.example.", RData::A(A(PLAIN)))]);
    h.run(&eth_v4(&ipv4(
        RESOLVER,
        PHONE,
        UDP,
        &udp(53, 40000, &small),
    )));
    let mut framed = u16::try_from(small.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&small);
    h.run(&eth_v4(&ipv4(
        RESOLVER,
        PHONE,
        TCP,
        &tcp(53, 40001, 0x18, &framed),
    )));
    let big: Vec<(String, RData)> = (0..60u8)
        .map(|i| {
            (
                format!("host{i}.example."),
                RData::A(A(Ipv4Addr::new(198, 51, 100, i))),
            )
        })
        .collect();
    let refs: Vec<(&str, RData)> = big.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let big = answer("a.example.", &refs);
    assert!(big.len() > DNS_COPY);
    h.run(&eth_v4(&ipv4(RESOLVER, PHONE, UDP, &udp(53, 40002, &big))));
    // A query to port 53 is not an answer.
    h.run(&eth_v4(&ipv4(
        PHONE,
        RESOLVER,
        UDP,
        &udp(40003, 53, &small),
    )));

    let dns = h.drain();
    assert_eq!(dns.len(), 3);
    assert_eq!(dns[0], (small.clone(), false, false));
    assert_eq!(dns[1], (framed, true, false));
    assert_eq!(dns[2], (big[..DNS_COPY].to_vec(), false, true));
    assert_eq!(h.reason(reason::DNS_COPIED), 3);
    assert_eq!(h.reason(reason::DNS_TRUNCATED), 1);
}

#[test]
#[ignore = "needs root: loads eBPF programs"]
fn addresses_learned_from_dns_are_attributed_to_the_domain() {
    let mut h = Harness::new("addresses_learned_from_dns_are_attributed_to_the_domain");
    h.run(&send(PLAIN, 100));
    assert!(h.hits().is_empty(), "not watched before the answer");

    let reply = answer(
        "api.account.xiaomi.com.",
        &[
            (
                "api.account.xiaomi.com.",
                RData::CNAME(CNAME(Name::from_ascii("edge.cdn.example.").expect("n"))),
            ),
            ("edge.cdn.example.", RData::A(A(PLAIN))),
        ],
    );
    h.run(&eth_v4(&ipv4(
        RESOLVER,
        PHONE,
        UDP,
        &udp(53, 40000, &reply),
    )));
    assert_eq!(h.drain().len(), 1);
    assert_eq!(h.watcher.plan().domains.len(), 2);

    h.run(&send(PLAIN, 100));
    assert_eq!(
        h.hits(),
        [(
            "xiaomi/api.account.xiaomi.com".to_owned(),
            DIR_OUTBOUND,
            1,
            128
        )]
    );
    // The flow entered the table with the learned entry (it existed unwatched before? no:
    // unwatched domestic flows are never tracked, so this is its first entry).
    assert_eq!(
        h.flow_to(PLAIN).watch.as_deref(),
        Some("xiaomi/api.account.xiaomi.com")
    );
    let _ = IpAddr::V4(PLAIN);
}
