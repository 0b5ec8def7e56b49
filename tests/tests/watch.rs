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
    tls,
    watch::{Plan, WatchMetrics, Watcher},
};
use monitor_common::{
    class::{DIR_INBOUND, DIR_OUTBOUND},
    programs, reason,
    watch::{DNS_COPY, HELLO_COPY, watch_counter_parts},
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
    /// ClientHello packets drained from the ring, with whether the kernel cut them.
    hellos: Vec<(Vec<u8>, bool)>,
    /// The (server, client) addresses of the DNS answers drained.
    dns_addresses: Vec<(IpAddr, IpAddr)>,
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
            hellos: Vec::new(),
            dns_addresses: Vec::new(),
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

    /// Drains the ring: DNS answers and ClientHellos go to the watcher, as in the daemon;
    /// returns the answers and keeps the ClientHellos in `hellos`.
    fn drain(&mut self) -> Vec<(Vec<u8>, bool, bool)> {
        let mut dns = Vec::new();
        while let Some(item) = self.events.next() {
            match events::decode_record(&item) {
                Ok(events::Record::Dns {
                    payload,
                    tcp,
                    cut,
                    server,
                    client,
                }) => {
                    self.watcher.answer(payload, tcp, cut);
                    dns.push((payload.to_vec(), tcp, cut));
                    self.dns_addresses.push((server, client));
                }
                Ok(events::Record::Hello { packet, cut }) => {
                    self.watcher.hello(packet, cut);
                    self.hellos.push((packet.to_vec(), cut));
                }
                _ => {}
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
    monitor::dns::response(qname, records, 300)
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
    assert!(
        h.dns_addresses
            .iter()
            .all(|a| *a == (IpAddr::V4(RESOLVER), IpAddr::V4(PHONE))),
        "each answer names its server and its client: {:?}",
        h.dns_addresses
    );
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

#[test]
#[ignore = "needs root: loads eBPF programs"]
fn client_hellos_are_copied_and_their_server_is_learned() {
    let mut h = Harness::new("client_hellos_are_copied_and_their_server_is_learned");
    let hello = |name: &str, padding: usize| tls::client_hello(Some(name), padding);
    let v4 = ipv4(
        PHONE,
        PLAIN,
        TCP,
        &tcp(40010, 443, 0x18, &hello("API.account.xiaomi.com", 0)),
    );
    h.run(&eth_v4(&v4));
    assert!(
        h.hits().is_empty(),
        "the ClientHello itself is not attributed"
    );
    // Not copied: application data to port 443, a ClientHello to another port, a SYN.
    h.run(&eth_v4(&ipv4(
        PHONE,
        PLAIN,
        TCP,
        &tcp(40010, 443, 0x18, &[23, 3, 3, 0, 4, 1, 2, 3, 4]),
    )));
    h.run(&eth_v4(&ipv4(
        PHONE,
        PLAIN,
        TCP,
        &tcp(40011, 8443, 0x18, &hello("api.account.xiaomi.com", 0)),
    )));
    h.run(&eth_v4(&ipv4(
        PHONE,
        PLAIN,
        TCP,
        &tcp(40012, 443, 0x02, &[]),
    )));
    // Copied but cut: the name lies past `HELLO_COPY`.
    let long = ipv4(
        PHONE,
        AS64500,
        TCP,
        &tcp(40013, 443, 0x18, &hello("late.xiaomi.com", 1200)),
    );
    h.run(&eth_v4(&long));
    let v6 = ipv6(
        "2001:db8:1:1::10".parse::<Ipv6Addr>().expect("ip"),
        "2001:db8:77::1".parse::<Ipv6Addr>().expect("ip"),
        &[],
        TCP,
        &tcp(40014, 443, 0x18, &hello("v6.xiaomi.com", 0)),
    );
    h.run(&eth_v6(&v6));

    assert!(h.drain().is_empty(), "no DNS answers");
    assert_eq!(
        h.hellos,
        [
            (v4.clone(), false),
            (long[..HELLO_COPY].to_vec(), true),
            (v6.clone(), false)
        ],
        "the IP packets of the three ClientHellos to port 443, the long one cut"
    );
    assert_eq!(h.reason(reason::TLS_HELLO_COPIED), 3);
    assert_eq!(h.reason(reason::TLS_HELLO_CUT), 1);
    assert_eq!(h.reason(reason::TLS_LOAD_FAILED), 0);

    // The servers of the two whole ClientHellos are learned for their names.
    h.run(&send(PLAIN, 100));
    h.run(&send(AS64500, 100));
    h.run(&eth_v6(&ipv6(
        "2001:db8:77::1".parse::<Ipv6Addr>().expect("ip"),
        "2001:db8:1:1::10".parse::<Ipv6Addr>().expect("ip"),
        &[],
        UDP,
        &udp(443, 40014, &[0; 12]),
    )));
    assert_eq!(
        h.hits(),
        [
            ("xiaomi/*.xiaomi.com".to_owned(), DIR_INBOUND, 1, 60),
            (
                "xiaomi/api.account.xiaomi.com".to_owned(),
                DIR_OUTBOUND,
                1,
                128
            ),
        ],
        "the cut ClientHello's server (AS64500) stays unwatched"
    );
}

/// The watched domain of the lab test, and the address the lab's resolver gives for it.
const LAB_DOMAIN: &str = "upload.shady.example";
const LAB_ANSWER: Ipv4Addr = exfilmon_tests::lab::SERVER_SG_V4;
/// Datagrams per burst in the lab test.
const LAB_COUNT: usize = 30;

/// The lab's daemon with the watchlist `shady` of one domain pattern and `extra` config,
/// and a capture of the phone's traffic (in the daemon's directory).
fn lab_daemon(
    lab: &exfilmon_tests::Lab,
    domain: &str,
    extra: &str,
) -> (
    exfilmon_tests::daemon::Daemon,
    exfilmon_tests::Capture,
    std::path::PathBuf,
) {
    use std::fmt::Write as _;

    use exfilmon_tests::daemon::{Daemon, free_port, write_lab_config};
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let config = write_lab_config(lab, dir.path(), port).expect("config");
    let mut text = std::fs::read_to_string(&config).expect("read config");
    writeln!(
        text,
        "\n[[watchlist]]\nname = \"shady\"\ndomains = [\"{domain}\"]\n{extra}"
    )
    .expect("a string takes it");
    std::fs::write(&config, text).expect("write config");
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let daemon = Daemon::start_with(config, metrics, dir).expect("daemon");
    let pcap = daemon.dir().join("phone.pcap");
    let capture = exfilmon_tests::Capture::start(
        lab.ns(exfilmon_tests::Node::Phone),
        exfilmon_tests::lab::DEVICE_IF,
        &pcap,
    )
    .expect("tcpdump");
    (daemon, capture, pcap)
}

/// A resolver inside the lab's internet namespace: answers at most `max` queries for A
/// records of any name with `LAB_ANSWER` (TTL 300), for at most 30 seconds.
fn lab_resolver(
    lab: &exfilmon_tests::Lab,
    addr: std::net::SocketAddr,
    max: usize,
) -> std::thread::JoinHandle<usize> {
    let sock = lab
        .ns(exfilmon_tests::Node::Inet)
        .enter(|| std::net::UdpSocket::bind(addr).expect("bind the resolver"));
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut answered = 0;
        let mut buf = [0u8; 512];
        while answered < max && start.elapsed() < std::time::Duration::from_secs(30) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut m = Message::response(query.metadata.id, OpCode::Query);
            for q in &query.queries {
                m.add_query(q.clone());
                m.add_answer(Record::from_rdata(
                    q.name().clone(),
                    300,
                    RData::A(A(LAB_ANSWER)),
                ));
            }
            sock.send_to(&m.to_vec().expect("encodes"), from)
                .expect("answer");
            answered += 1;
        }
        answered
    })
}

/// Resolves `name` (A) from inside `ns` through `resolver`; the first address.
fn lab_resolve(
    ns: &exfilmon_tests::netns::NetNs,
    resolver: std::net::SocketAddr,
    name: &str,
) -> Ipv4Addr {
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    let bytes = q.to_vec().expect("encodes");
    let reply = ns.enter(move || {
        let sock = std::net::UdpSocket::bind((exfilmon_tests::lab::PHONE_V4, 0)).expect("bind");
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        sock.send_to(&bytes, resolver).expect("query");
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("an answer within 5 s");
        buf[..n].to_vec()
    });
    let reply = Message::from_vec(&reply).expect("parses");
    reply
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .expect("an A record")
}

#[test]
#[ignore = "needs root: builds network namespaces and loads eBPF programs"]
fn lab_device_resolving_a_watched_domain_is_counted_and_replay_agrees() {
    use std::net::SocketAddr;

    use exfilmon_tests::{
        Lab, Node,
        lab::{PHONE_V4, SERVER_IN_V4, SERVER_US_V4},
        traffic::{udp_burst, udp_sink},
    };

    require_root("lab_device_resolving_a_watched_domain_is_counted_and_replay_agrees");
    let wait = std::time::Duration::from_secs(20);
    let lab = Lab::new().expect("lab");
    let (daemon, capture, pcap) = lab_daemon(&lab, LAB_DOMAIN, "");

    // The phone resolves the watched name through the lab's resolver (a domestic server).
    let resolver_addr = SocketAddr::from((SERVER_IN_V4, 53));
    let resolver = lab_resolver(&lab, resolver_addr, 1);
    let addr = lab_resolve(lab.ns(Node::Phone), resolver_addr, LAB_DOMAIN);
    assert_eq!(addr, LAB_ANSWER);
    assert_eq!(resolver.join().expect("resolver"), 1);
    daemon
        .wait_for("the answer learned", wait, |m| {
            m.sum("exfilmon_dns_answers_total", &[("result", "watched")]) >= 1.0
        })
        .expect("learned");

    // Then it sends to the answer, and to an address nobody watches.
    let inet = lab.ns(Node::Inet);
    let watched = udp_sink(inet, SocketAddr::from((addr, 9501))).expect("sink");
    let plain = udp_sink(inet, SocketAddr::from((SERVER_US_V4, 9502))).expect("sink");
    let burst = |to: SocketAddr| {
        udp_burst(
            lab.ns(Node::Phone),
            Some(PHONE_V4.into()),
            to,
            LAB_COUNT,
            200,
        )
        .expect("burst")
    };
    let sent = burst(watched.addr());
    let sent_plain = burst(plain.addr());
    assert_eq!(sent.packets, LAB_COUNT as u64);
    assert_eq!(sent_plain.packets, LAB_COUNT as u64);
    for s in [&watched, &plain] {
        assert_eq!(
            s.wait_for(LAB_COUNT as u64, std::time::Duration::from_secs(10))
                .packets,
            LAB_COUNT as u64,
            "monitoring never drops"
        );
    }

    let bytes = |m: &exfilmon_tests::daemon::Metrics| {
        m.sum("exfilmon_watchlist_bytes_total", &[("watchlist", "shady")])
    };
    #[expect(clippy::cast_precision_loss, reason = "a few kilobytes")]
    let expected = sent.l3_bytes as f64;
    let m = daemon
        .wait_for("the watched bytes", wait, |m| bytes(m) >= expected)
        .expect("counted");
    assert_eq!(
        bytes(&m),
        expected,
        "exactly the layer-3 bytes sent to the answer"
    );
    assert_eq!(
        m.sum(
            "exfilmon_watchlist_bytes_total",
            &[
                ("watchlist", "shady"),
                ("entry", LAB_DOMAIN),
                ("group", "phones"),
                ("direction", "outbound"),
            ]
        ),
        expected,
        "all of it outbound from the phones, for the domain entry"
    );
    #[expect(clippy::cast_precision_loss, reason = "a few datagrams")]
    let packets = LAB_COUNT as f64;
    assert_eq!(
        m.sum("exfilmon_watchlist_packets_total", &[]),
        packets,
        "the unwatched address is not counted"
    );

    let captured = capture.stop().expect("stop tcpdump");
    assert_eq!(captured.dropped, 0, "tcpdump dropped packets");
    assert_replay_agrees(&daemon.config, &pcap, sent.l3_bytes);
    let (status, _log) = daemon.stop_with_event_log().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
}

/// The lab's capture replayed learns the same answer and gives the one watch hit the daemon
/// counted live.
fn assert_replay_agrees(config: &std::path::Path, pcap: &std::path::Path, bytes: u64) {
    let report = exfilmon_tests::replay_json(config, &[pcap]);
    let hits = report["watch"].as_array().expect("watch");
    assert_eq!(hits.len(), 1, "one watch hit in the replay: {hits:?}");
    assert_eq!(hits[0]["watchlist"], "shady");
    assert_eq!(hits[0]["entry"], LAB_DOMAIN);
    assert_eq!(hits[0]["direction"], "outbound");
    assert_eq!(hits[0]["packets"], LAB_COUNT);
    assert_eq!(hits[0]["bytes"], bytes);
}

/// A TLS server stand-in in the lab's internet namespace: accepts one connection on
/// `addr` and reads it to its end (at most 20 s); returns the bytes read.
fn lab_tls_sink(
    lab: &exfilmon_tests::Lab,
    addr: std::net::SocketAddr,
) -> std::thread::JoinHandle<usize> {
    use std::io::Read as _;
    let listener = lab
        .ns(exfilmon_tests::Node::Inet)
        .enter(|| std::net::TcpListener::bind(addr).expect("bind the TLS sink"));
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("a connection");
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        got.len()
    })
}

/// The last event-log record of each flow, as JSON.
fn last_records(log: &str) -> Vec<serde_json::Value> {
    let mut last = std::collections::BTreeMap::new();
    for v in log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let key = format!(
            "{}:{}>{}:{}/{}",
            v["src"], v["sport"], v["dst"], v["dport"], v["proto"]
        );
        last.insert(key, v);
    }
    last.into_values().collect()
}

#[test]
#[ignore = "needs root: builds network namespaces and loads eBPF programs"]
fn lab_client_hello_naming_a_watched_domain_attributes_its_server() {
    use std::{io::Write as _, net::SocketAddr};

    use exfilmon_tests::{Lab, Node, lab::SERVER_SG_V4, traffic::tcp_exchange};

    require_root("lab_client_hello_naming_a_watched_domain_attributes_its_server");
    let wait = std::time::Duration::from_secs(20);
    let lab = Lab::new().expect("lab");
    let (daemon, capture, pcap) = lab_daemon(&lab, "*.shady.example", "");

    // 1. The phone opens TLS to the server, naming a watched domain in its ClientHello.
    let https = SocketAddr::from((SERVER_SG_V4, 443));
    let sink = lab_tls_sink(&lab, https);
    let mut conn = lab
        .ns(Node::Phone)
        .enter(|| std::net::TcpStream::connect_timeout(&https, wait))
        .expect("connect");
    conn.write_all(&tls::client_hello(Some(LAB_DOMAIN), 0))
        .expect("ClientHello");
    daemon
        .wait_for("the ClientHello learned", wait, |m| {
            m.sum("exfilmon_tls_client_hellos_total", &[("result", "watched")]) >= 1.0
        })
        .expect("learned");
    drop(conn);
    sink.join().expect("sink");

    // 2. Then it uploads to the same server on another port: all of it is the domain's.
    let upload = tcp_exchange(
        lab.ns(Node::Phone),
        lab.ns(Node::Inet),
        SocketAddr::from((SERVER_SG_V4, 8443)),
        &[0x55; 3000],
        5000,
    )
    .expect("upload");
    assert_eq!((upload.request_bytes, upload.response_bytes), (3000, 5000));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let metrics = daemon.wait_for("a scrape", wait, |_| true).expect("scrape");
    let captured = capture.stop().expect("stop tcpdump");
    assert_eq!(captured.dropped, 0, "tcpdump dropped packets");
    let report = exfilmon_tests::replay_json(&daemon.config, &[&pcap]);
    let (status, log) = daemon.stop_with_event_log().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");

    // Every packet attributed to the entry is in a flow tracked for it, and the reverse:
    // the counters equal the flow table's totals, direction by direction.
    let entry = format!("shady/{}", "*.shady.example");
    let flows: Vec<_> = last_records(&log)
        .into_iter()
        .filter(|v| v["watch"] == entry.as_str())
        .collect();
    let total = |field: &str| {
        flows
            .iter()
            .map(|v| v[field].as_u64().expect("n"))
            .sum::<u64>()
    };
    let counted = |dir: &str| {
        metrics.sum(
            "exfilmon_watchlist_bytes_total",
            &[
                ("watchlist", "shady"),
                ("group", "phones"),
                ("direction", dir),
            ],
        )
    };
    #[expect(clippy::cast_precision_loss, reason = "kilobytes")]
    let (out, inb) = (total("bytes_out") as f64, total("bytes_in") as f64);
    assert_eq!(counted("outbound"), out);
    assert_eq!(counted("inbound"), inb);
    let second = flows
        .iter()
        .find(|v| v["dport"] == 8443)
        .unwrap_or_else(|| panic!("the upload is a watched flow: {flows:?}"));
    assert!(second["bytes_out"].as_u64() >= Some(3000 + 40 * 3));
    assert!(second["bytes_in"].as_u64() >= Some(5000 + 40 * 3));
    assert!(
        out >= 3120.0,
        "the upload's bytes are counted for the domain"
    );

    // The capture replayed learns the same name: the upload's flow is the same flow.
    let replayed = report["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .find(|v| v["dport"] == 8443)
        .expect("the upload in the replay");
    for field in [
        "watch",
        "packets_out",
        "bytes_out",
        "packets_in",
        "bytes_in",
    ] {
        assert_eq!(replayed[field], second[field], "{field}");
    }
}

#[test]
#[ignore = "needs root: builds network namespaces and loads eBPF programs"]
fn lab_dns_tunnel_signs_fire_once_and_replay_agrees() {
    use std::net::SocketAddr;

    use exfilmon_tests::{
        Lab, Node,
        lab::{PHONE_V4, SERVER_IN_V4},
    };

    require_root("lab_dns_tunnel_signs_fire_once_and_replay_agrees");
    let wait = std::time::Duration::from_secs(20);
    let lab = Lab::new().expect("lab");
    let (daemon, capture, pcap) = lab_daemon(
        &lab,
        LAB_DOMAIN,
        "[detections.dns_tunnel]\nmin_suspicious = 10\nwindow_secs = 3600\n",
    );
    let resolver_addr = SocketAddr::from((SERVER_IN_V4, 53));
    let ordinary = ["www.example.com", "mail.example.org", "api.example.net"];
    let resolver = lab_resolver(&lab, resolver_addr, ordinary.len() + 15);
    // Ordinary names first: no sign.
    for name in ordinary {
        lab_resolve(lab.ns(Node::Phone), resolver_addr, name);
    }
    daemon
        .wait_for("the ordinary answers parsed", wait, |m| {
            m.sum("exfilmon_dns_answers_total", &[]) >= 3.0
        })
        .expect("parsed");
    let m = daemon.wait_for("a scrape", wait, |_| true).expect("scrape");
    assert_eq!(m.sum("exfilmon_detection_dns_tunnel_total", &[]), 0.0);
    // Then 15 names carrying encoded data: the 10th fires, once.
    for i in 0..15 {
        lab_resolve(
            lab.ns(Node::Phone),
            resolver_addr,
            &format!(
                "{}.t.example.com",
                monitor::detect::tunnel::encoded_label(i, 40)
            ),
        );
    }
    assert_eq!(resolver.join().expect("resolver"), ordinary.len() + 15);
    let m = daemon
        .wait_for("the tunnel detected", wait, |m| {
            m.sum("exfilmon_dns_answers_total", &[]) >= 18.0
                && m.sum("exfilmon_detection_dns_tunnel_total", &[]) >= 1.0
        })
        .expect("detected");
    assert_eq!(
        m.sum(
            "exfilmon_detection_dns_tunnel_total",
            &[("group", "phones"), ("sign", "high_entropy")]
        ),
        1.0,
        "once a window, for the phones, by entropy"
    );
    assert_eq!(m.sum("exfilmon_detection_dns_tunnel_total", &[]), 1.0);
    let captured = capture.stop().expect("stop tcpdump");
    assert_eq!(captured.dropped, 0, "tcpdump dropped packets");
    let report = exfilmon_tests::replay_json(&daemon.config, &[&pcap]);
    let (status, log) = daemon.stop_with_event_log().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");

    let tunnels = |values: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        values
            .into_iter()
            .filter(|v| v["detection"] == "dns_tunnel")
            .collect()
    };
    let live = tunnels(
        log.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    );
    assert_eq!(live.len(), 1, "one event-log line: {live:?}");
    assert_eq!(live[0]["client"], PHONE_V4.to_string());
    assert_eq!(live[0]["server"], SERVER_IN_V4.to_string());
    assert_eq!(live[0]["high_entropy_names"], 10);
    let replayed = tunnels(report["detections"].as_array().expect("detections").clone());
    assert_eq!(replayed.len(), 1, "replay finds it too: {replayed:?}");
    for field in [
        "client",
        "server",
        "sign",
        "group",
        "answers",
        "high_entropy_names",
    ] {
        assert_eq!(replayed[0][field], live[0][field], "{field}");
    }
}
