//! Policy kernel tests: the classifier run with BPF_PROG_TEST_RUN on crafted frames, one
//! per precedence case, asserting the verdict the kernel counts, the rule id it stores in
//! the flow, and what `enforce` returns (XDP_DROP / TC_ACT_SHOT exactly for violation
//! packets of enforcing groups), with exact drop and dry-run counters.
//! They need root (CAP_BPF); without it they are reported as ignored.

use std::net::Ipv4Addr;

use exfilmon_tests::{packet::*, require_root, write_config};
use monitor::{
    ebpf::{Counters, Monitor},
    geoip::GeoDb,
    load_monitor,
    tables::{self, Labels, Verdict},
};
use monitor_common::{
    class::{DIR_INBOUND, DIR_OUTBOUND, class_parts},
    flow::FlowKey,
    policy::{MODE_DROPPED, MODE_DRY_RUN, drop_index},
    programs, reason,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

const PHONE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const LAPTOP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 70);
const OTHER_HOME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

/// Remote addresses: country from the lab's CSV, AS number from `ASN_TSV`.
const SG_DENIED_AS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 70); // SG, AS64500
const CN_DENIED_AS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5); // CN, AS64500
const CN_ALLOWED_AS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20); // CN, AS64501
const CN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 40); // CN
const IN_DENIED_AS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200); // IN, AS64500
const IN_ALLOWED_AS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 210); // IN, AS64501
const US_OTHER_AS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 130); // US, AS64502
const SG: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100); // SG
const NOWHERE_ALLOWED_AS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 205); // ??, AS64501
const NOWHERE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 230); // ??

/// iptoasn rows (documentation ASNs, RFC 5398) over the lab's documentation addresses.
const ASN_TSV: &str = "203.0.113.0\t203.0.113.15\t64500\tCN\tA\n\
                       203.0.113.16\t203.0.113.31\t64501\tCN\tB\n\
                       203.0.113.64\t203.0.113.79\t64500\tSG\tA\n\
                       203.0.113.128\t203.0.113.143\t64502\tUS\tC\n\
                       203.0.113.192\t203.0.113.207\t64500\tIN\tA\n\
                       203.0.113.208\t203.0.113.223\t64501\tIN\tB\n\
                       198.51.100.200\t198.51.100.210\t64501\tZZ\tB\n";

/// One frame, and what the kernel must make of it.
struct Case {
    what: &'static str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    group: &'static str,
    country: &'static str,
    verdict: Verdict,
    /// The rule the flow records; only tracked flows (violations, and unknown ones with
    /// `track_unknown`) are in the flow table, so `None` for allowed and domestic.
    rule: Option<&'static str>,
    drop: bool,
}

#[rustfmt::skip]
const CASES: [Case; 14] = [
    Case { what: "deny_asns beats a country allow", src: PHONE, dst: SG_DENIED_AS, group: "phones", country: "SG", verdict: Verdict::Violation, rule: Some("group phones: deny_asns 64500"), drop: true },
    Case { what: "deny_asns beats domestic", src: PHONE, dst: IN_DENIED_AS, group: "phones", country: "IN", verdict: Verdict::Violation, rule: Some("group phones: deny_asns 64500"), drop: true },
    Case { what: "deny_asns on a denied country", src: PHONE, dst: CN_DENIED_AS, group: "phones", country: "CN", verdict: Verdict::Violation, rule: Some("group phones: deny_asns 64500"), drop: true },
    Case { what: "deny (country) beats allow_asns and allow", src: PHONE, dst: CN_ALLOWED_AS, group: "phones", country: "CN", verdict: Verdict::Violation, rule: Some("group phones: deny @sanctioned (CN)"), drop: true },
    Case { what: "deny (country)", src: PHONE, dst: CN, group: "phones", country: "CN", verdict: Verdict::Violation, rule: Some("group phones: deny @sanctioned (CN)"), drop: true },
    Case { what: "domestic beats allow_asns", src: PHONE, dst: IN_ALLOWED_AS, group: "phones", country: "IN", verdict: Verdict::Domestic, rule: None, drop: false },
    Case { what: "allow_asns lifts an unknown country", src: PHONE, dst: NOWHERE_ALLOWED_AS, group: "phones", country: "??", verdict: Verdict::Allowed, rule: None, drop: false },
    Case { what: "allow (country)", src: PHONE, dst: SG, group: "phones", country: "SG", verdict: Verdict::Allowed, rule: None, drop: false },
    Case { what: "default: a known country not allowed", src: PHONE, dst: US_OTHER_AS, group: "phones", country: "US", verdict: Verdict::Violation, rule: Some("default: not allowed"), drop: true },
    Case { what: "default: unknown country is never dropped", src: PHONE, dst: NOWHERE, group: "phones", country: "??", verdict: Verdict::Unknown, rule: Some("default: unknown country"), drop: false },
    Case { what: "another group's ASN rules do not apply", src: LAPTOP, dst: CN_DENIED_AS, group: "laptops", country: "CN", verdict: Verdict::Violation, rule: Some("default: not allowed"), drop: false },
    Case { what: "a group that does not enforce: allowed", src: LAPTOP, dst: US_OTHER_AS, group: "laptops", country: "US", verdict: Verdict::Allowed, rule: None, drop: false },
    Case { what: "ungrouped: [home] deny_asns", src: OTHER_HOME, dst: US_OTHER_AS, group: "ungrouped", country: "US", verdict: Verdict::Violation, rule: Some("home: deny_asns 64502"), drop: false },
    Case { what: "ungrouped: [home] allow", src: OTHER_HOME, dst: SG, group: "ungrouped", country: "SG", verdict: Verdict::Allowed, rule: None, drop: false },
];

struct Harness {
    monitor: Monitor,
    labels: Labels,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(name: &str) -> Self {
        require_root(name);
        let dir = tempfile::tempdir().expect("tempdir");
        let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/geoip.csv");
        std::fs::write(dir.path().join("asn.tsv"), ASN_TSV).expect("write asn.tsv");
        let text = format!(
            r#"
[jurisdictions]
sanctioned = ["CN"]
[home]
networks = ["192.0.2.0/24"]
countries = ["IN"]
allow = ["US", "SG"]
deny_asns = [64502]
[[group]]
name = "phones"
networks = ["192.0.2.0/26"]
allow = ["SG", "CN"]
allow_asns = [64501]
deny = ["@sanctioned"]
deny_asns = [64500]
enforce = true
[[group]]
name = "laptops"
networks = ["192.0.2.64/26"]
allow = ["US"]
[geoip]
sources = [{{ format = "csv", path = "{geo}" }}, {{ format = "iptoasn", path = "asn.tsv" }}]
[flows]
max_entries = 1024
ring_bytes = 262144
track_unknown = true
"#
        );
        let config = write_config(dir.path(), &text);
        let geo = GeoDb::load(&config.geoip.sources).expect("geoip");
        let plan = tables::plan(&config, &geo).expect("plan");
        let monitor = load_monitor(&config, &plan)
            .unwrap_or_else(|e| panic!("load: {}", monitor::error_chain(&e)));
        Self {
            monitor,
            labels: plan.labels,
            _dir: dir,
        }
    }

    fn counters(&self) -> Counters {
        self.monitor.read_counters().expect("counters")
    }

    fn group(&self, name: &str) -> u32 {
        self.labels
            .groups
            .iter()
            .position(|g| g == name)
            .expect("group") as u32
    }

    fn drops(&self, group: &str, mode: u32) -> u64 {
        let index = drop_index(self.group(group), mode);
        self.counters()
            .policy_drops
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |(_, c)| c.packets)
    }

    /// Runs `frame` through `program`; asserts the frame is unchanged and exactly one
    /// class counter grew by one packet. Returns the action and that class's parts.
    fn run(&mut self, program: &'static str, frame: &[u8]) -> (u32, (u32, u32, u32, u32)) {
        let before = self.counters().classes;
        let out = self.monitor.test_run(program, frame).expect("test run");
        assert_eq!(out.frame, frame, "the frame must leave unchanged");
        let after = self.counters().classes;
        let grown: Vec<u32> = after
            .iter()
            .filter(|(i, c)| {
                let old = before
                    .iter()
                    .find(|(j, _)| j == i)
                    .map_or(0, |(_, c)| c.packets);
                c.packets == old + 1
            })
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(grown.len(), 1, "one class counted: {grown:?}");
        (out.action, class_parts(grown[0]))
    }

    fn flow_rule(&self, key: &FlowKey) -> Option<(String, u8)> {
        self.monitor
            .flows()
            .expect("flows")
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, st)| (self.labels.rule(st.rule).to_owned(), st.verdict))
    }
}

/// Runs every case through `program` (outbound, then the reply inbound) and checks the
/// verdict, the rule, the action and the drop counters.
fn run_cases(h: &mut Harness, program: &'static str, (pass, drop): (u32, u32)) {
    let mut want_dropped = 0;
    let mut want_dry_run = [("laptops", 0u64), ("ungrouped", 0u64)];
    for (i, c) in CASES.iter().enumerate() {
        let port = 40_000 + i as u16;
        for dir in [DIR_OUTBOUND, DIR_INBOUND] {
            let frame = if dir == DIR_OUTBOUND {
                eth_v4(&ipv4(c.src, c.dst, UDP, &udp(port, 443, &[7; 20])))
            } else {
                eth_v4(&ipv4(c.dst, c.src, UDP, &udp(443, port, &[7; 20])))
            };
            let (action, (group, country, d, verdict)) = h.run(program, &frame);
            let what = format!("{}: {program}, direction {dir}", c.what);
            assert_eq!(h.labels.group(group), c.group, "{what}: group");
            assert_eq!(h.labels.country(country), c.country, "{what}: country");
            assert_eq!(d, dir, "{what}: direction");
            assert_eq!(verdict, c.verdict.code(), "{what}: verdict");
            assert_eq!(action, if c.drop { drop } else { pass }, "{what}: action");
            if c.drop {
                want_dropped += 1;
            } else if c.verdict == Verdict::Violation {
                let g = want_dry_run
                    .iter_mut()
                    .find(|(g, _)| *g == c.group)
                    .expect("a non-enforcing group");
                g.1 += 1;
            }
        }
        let flow = h.flow_rule(&v4_key(c.src, c.dst, UDP, port, 443));
        match c.rule {
            Some(rule) => assert_eq!(
                flow,
                Some((rule.to_owned(), c.verdict.code() as u8)),
                "{}: the flow records the rule",
                c.what
            ),
            None => assert_eq!(flow, None, "{}: not tracked", c.what),
        }
    }
    assert_eq!(want_dropped, 2 * 6, "the table has six dropping cases");
    assert_eq!(h.drops("phones", MODE_DROPPED), want_dropped);
    assert_eq!(h.drops("phones", MODE_DRY_RUN), 0, "phones enforce");
    for (group, n) in want_dry_run {
        assert_eq!(h.drops(group, MODE_DRY_RUN), n, "{group} dry run");
        assert_eq!(h.drops(group, MODE_DROPPED), 0, "{group} never drops");
    }
    let c = h.counters();
    assert_eq!(c.reasons[reason::POLICY_DROPPED as usize], want_dropped);
    assert_eq!(
        c.reasons[reason::POLICY_DRY_RUN as usize],
        want_dry_run.iter().map(|(_, n)| n).sum::<u64>()
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn xdp_precedence_rules_and_enforcement() {
    let mut h = Harness::new("xdp_precedence_rules_and_enforcement");
    run_cases(&mut h, programs::XDP, (XDP_PASS, XDP_DROP));
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn tc_precedence_rules_and_enforcement() {
    for program in [programs::TC_EGRESS, programs::TC_INGRESS] {
        let mut h = Harness::new("tc_precedence_rules_and_enforcement");
        run_cases(&mut h, program, (TC_ACT_OK, TC_ACT_SHOT));
    }
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn enforcement_never_drops_what_is_not_a_classified_violation() {
    let h = Harness::new("enforcement_never_drops_what_is_not_a_classified_violation");
    let mut frames = vec![
        arp(),
        // Internal, transit and link-scoped traffic of the enforcing group.
        eth_v4(&ipv4(PHONE, LAPTOP, UDP, &udp(1, 2, &[0; 8]))),
        eth_v4(&ipv4(CN, SG, UDP, &udp(1, 2, &[0; 8]))),
        eth_v4(&ipv4(
            PHONE,
            Ipv4Addr::new(224, 0, 0, 251),
            UDP,
            &udp(5353, 5353, &[0; 8]),
        )),
    ];
    for program in [programs::TC_EGRESS, programs::TC_INGRESS, programs::XDP] {
        let pass = if program == programs::XDP {
            // A violation's frame cut inside its IPv4 header: not parsed, so passed (the
            // skb test run refuses such a frame, so XDP only).
            frames.push(eth_v4(&ipv4(PHONE, CN, UDP, &udp(1, 2, &[0; 8])))[..20].to_vec());
            XDP_PASS
        } else {
            TC_ACT_OK
        };
        for f in &frames {
            let out = h.monitor.test_run(program, f).expect("test run");
            assert_eq!(out.action, pass, "{program} must pass {f:02x?}");
        }
    }
    let c = h.counters();
    assert_eq!(c.reasons[reason::POLICY_DROPPED as usize], 0);
    assert_eq!(c.reasons[reason::POLICY_DRY_RUN as usize], 0);
    assert_eq!(c.reasons[reason::MALFORMED_IPV4 as usize], 1);
    assert_eq!(c.reasons[reason::TRANSIT as usize], 3);
}
