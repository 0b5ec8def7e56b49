//! Kernel tests of the location tables: the DIR-24-8 and IPv6 lookups agree with the
//! userspace `GeoIP` lookup on the real tor data, and a reload switches generations without
//! resetting a counter or leaving stale entries, while a failed one (either family) leaves
//! the live tables classifying.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use exfilmon_tests::{packet::*, require_root, write_config};
use monitor::{
    config::Config,
    ebpf::{InstallError, Monitor},
    geoip::GeoDb,
    load_monitor, reload,
    tables::{self, Labels, Plan, Verdict},
};
use monitor_common::{
    class::{DIR_INBOUND, DIR_OUTBOUND, asn_counter_parts, class_index},
    flow::FAMILY_V4,
    programs, reason,
};

const XDP_PASS: u32 = 2;
const PHONE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PHONE6: &str = "2001:db8:1:1::10";

fn config(dir: &Path, geoip: &str) -> Config {
    let text = format!(
        r#"
[home]
networks = ["192.0.2.0/24", "2001:db8:1::/48"]
countries = ["IN"]
[[group]]
name = "phones"
networks = ["192.0.2.0/26", "2001:db8:1:1::/64"]
allow = ["SG"]
{geoip}
[flows]
max_entries = 4096
ring_bytes = 1048576
track_unknown = true
"#
    );
    write_config(dir, &text)
}

/// The GeoIP data, tables and loaded programs of `config`.
fn load(config: &Config) -> (GeoDb, Plan, Monitor) {
    let geo = GeoDb::load(&config.geoip.sources).expect("geoip data");
    let plan = tables::plan(config, &geo).expect("plan");
    let monitor = load_monitor(config, &plan)
        .unwrap_or_else(|e| panic!("load: {}", monitor::error_chain(&e)));
    (geo, plan, monitor)
}

fn csv_source(dir: &Path, name: &str, rows: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, rows).expect("write geoip csv");
    format!(
        "[geoip]\nsources = [{{ format = \"csv\", path = \"{}\" }}]",
        path.display()
    )
}

fn class_packets(monitor: &Monitor, labels: &Labels, country: &str, verdict: Verdict) -> u64 {
    let c = (0..labels.countries.len() as u32)
        .find(|s| labels.country(*s) == country)
        .unwrap_or_else(|| panic!("country {country} has a slot"));
    let index = class_index(1, c, DIR_OUTBOUND, verdict.code());
    let counters = monitor.read_counters().expect("counters");
    counters
        .classes
        .iter()
        .find(|(i, _)| *i == index)
        .map_or(0, |(_, c)| c.packets)
}

/// Installs the GeoIP rows `rows` (written to `dir/name`) as a reload after `labels`,
/// expecting them not to fit.
fn install_too_big(
    monitor: &mut Monitor,
    dir: &Path,
    name: &str,
    rows: &str,
    labels: &Labels,
) -> InstallError {
    let config = config(dir, &csv_source(dir, name, rows));
    let geo = GeoDb::load(&config.geoip.sources).expect("geoip");
    let plan = tables::plan_after(&config, &geo, Some(labels)).expect("plan");
    monitor
        .install_geo(&plan.tables.geo)
        .expect_err("the data does not fit")
}

fn run(monitor: &Monitor, frame: &[u8]) {
    let out = monitor.test_run(programs::XDP, frame).expect("test run");
    assert_eq!(out.action, XDP_PASS);
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn kernel_locations_match_the_userspace_lookup_on_the_tor_data() {
    require_root("kernel_locations_match_the_userspace_lookup_on_the_tor_data");
    let dir = tempfile::tempdir().expect("tempdir");
    // No [geoip] section: the default, Debian's tor-geoipdb, installed by the setup.
    let config = config(dir.path(), "");
    let (geo, plan, monitor) = load(&config);
    assert!(geo.len_v4() > 100_000, "the real tor data is loaded");

    // Addresses at every range edge of a stretch of the data, and a spread over the space.
    let mut remotes: Vec<IpAddr> = Vec::new();
    for &(first, last, _) in geo.ranges_v4().iter().step_by(997).take(150) {
        for a in [first.wrapping_sub(1), first, last, last.wrapping_add(1)] {
            remotes.push(IpAddr::V4(Ipv4Addr::from(a)));
        }
    }
    let mut x = 0x9e37_79b9u32;
    for _ in 0..400 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        remotes.push(IpAddr::V4(Ipv4Addr::from(x)));
    }
    for &(first, last, _) in geo.ranges_v6().iter().step_by(499).take(200) {
        for a in [first, last, last.wrapping_add(1)] {
            remotes.push(IpAddr::V6(Ipv6Addr::from(a)));
        }
    }
    // And the spots the tiered IPv6 table leaves to its fallback trie.
    let fallback = &plan.tables.geo.v6_table.trie;
    for &(net, len, _) in fallback.iter().step_by(fallback.len() / 100 + 1) {
        let first = u128::from_be_bytes(net);
        let last = first | u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        for a in [first, last] {
            remotes.push(IpAddr::V6(Ipv6Addr::from(a)));
        }
    }
    let phone6: Ipv6Addr = PHONE6.parse().expect("v6");
    let mut sent = 0u64;
    remotes.retain(|r| match r {
        // The link-scoped and inside ones are not located by design; leave them out.
        IpAddr::V4(a) => {
            !(a.is_multicast()
                || a.is_link_local()
                || a.is_broadcast()
                || Ipv4Addr::new(192, 0, 2, 0) == Ipv4Addr::from(u32::from(*a) & !0xff))
        }
        IpAddr::V6(a) => !(a.is_multicast() || a.segments()[0] & 0xffc0 == 0xfe80),
    });
    remotes.sort_unstable();
    remotes.dedup();
    for remote in &remotes {
        let frame = match remote {
            IpAddr::V4(a) => eth_v4(&ipv4(PHONE, *a, UDP, &udp(40000, 443, &[1; 8]))),
            IpAddr::V6(a) => eth_v6(&ipv6(phone6, *a, &[], UDP, &udp(40000, 443, &[1; 8]))),
        };
        run(&monitor, &frame);
        sent += 1;
    }

    // Every packet was a violation or unknown (nothing foreign is allowed but SG, and
    // unknown flows are tracked too), except SG's and IN's; each tracked flow carries the
    // country slot the kernel found.
    let flows = monitor.flows().expect("flows");
    let mut checked = 0;
    for (key, state) in &flows {
        let remote = if key.family == FAMILY_V4 {
            IpAddr::V4(Ipv4Addr::new(
                key.remote[0],
                key.remote[1],
                key.remote[2],
                key.remote[3],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(key.remote))
        };
        let expected = geo
            .lookup(remote)
            .country
            .map_or_else(|| "??".to_owned(), |c| c.to_string());
        assert_eq!(
            plan.labels.country(u32::from(state.country)),
            expected,
            "kernel and userspace disagree on {remote}"
        );
        checked += 1;
    }
    let counters = monitor.read_counters().expect("counters");
    assert_eq!(counters.reasons[reason::OUTBOUND as usize], sent);
    let untracked = flows.len() as u64;
    println!(
        "{sent} remote addresses sent, {checked} located flows compared with userspace, {} \
         domestic/allowed untracked",
        sent - untracked
    );
    assert!(checked > 1000, "enough addresses were compared ({checked})");
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn geoip_reload_switches_generation_and_keeps_counters() {
    require_root("geoip_reload_switches_generation_and_keeps_counters");
    let dir = tempfile::tempdir().expect("tempdir");
    let before = "203.0.113.0,203.0.113.63,CN\n2001:db8:ff:86::,2001:db8:ff:86::ffff,CN\n";
    let after = "203.0.113.0,203.0.113.31,SG\n203.0.113.32,203.0.113.63,CN\n\
                 2001:db8:ff:86::,2001:db8:ff:86::ffff,SG\n";
    let config = config(dir.path(), &csv_source(dir.path(), "before.csv", before));
    let (geo, plan, mut monitor) = load(&config);
    assert_eq!(monitor.live_generation(), Some(0));

    let cn = Ipv4Addr::new(203, 0, 113, 10);
    let cn6: Ipv6Addr = "2001:db8:ff:86::10".parse().expect("v6");
    let phone6: Ipv6Addr = PHONE6.parse().expect("v6");
    let v4 = eth_v4(&ipv4(PHONE, cn, UDP, &udp(40000, 443, &[1; 8])));
    let v6 = eth_v6(&ipv6(phone6, cn6, &[], UDP, &udp(40000, 443, &[1; 8])));
    run(&monitor, &v4);
    run(&monitor, &v6);
    assert_eq!(
        class_packets(&monitor, &plan.labels, "CN", Verdict::Violation),
        2
    );

    // Reload: the same addresses are SG now, which phones may reach.
    let config2 = self::config(dir.path(), &csv_source(dir.path(), "after.csv", after));
    let geo2 = GeoDb::load(&config2.geoip.sources).expect("geoip");
    let plan2 = tables::plan_after(&config2, &geo2, Some(&plan.labels)).expect("plan");
    assert_eq!(
        plan2.labels.countries[..plan.labels.countries.len()],
        plan.labels.countries[..],
        "country slots are stable across reloads"
    );
    monitor.write_tables(&plan2.tables).expect("policy");
    let installed = monitor.install_geo(&plan2.tables.geo).expect("install");
    assert_eq!(installed.generation, 1);
    assert_eq!(
        installed.waited, None,
        "generation 1 was never live: no wait"
    );
    run(&monitor, &v4);
    run(&monitor, &v6);
    assert_eq!(
        class_packets(&monitor, &plan2.labels, "CN", Verdict::Violation),
        2,
        "the reload reset no counter"
    );
    assert_eq!(
        class_packets(&monitor, &plan2.labels, "SG", Verdict::Allowed),
        2,
        "both families follow the new tables"
    );

    // And back: generation 0 is refilled (its stale IPv6 entries removed first), but only
    // after the wait for the program runs that could still read it.
    let plan3 = tables::plan_after(&config, &geo, Some(&plan2.labels)).expect("plan");
    let installed = monitor.install_geo(&plan3.tables.geo).expect("install");
    assert!(
        installed.waited.is_some(),
        "a retired generation is rewritten only after the wait for program runs"
    );
    assert_eq!(installed.generation, 0);
    run(&monitor, &v4);
    run(&monitor, &v6);
    assert_eq!(
        class_packets(&monitor, &plan3.labels, "CN", Verdict::Violation),
        4
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn a_reload_that_does_not_fit_keeps_the_live_tables() {
    require_root("a_reload_that_does_not_fit_keeps_the_live_tables");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        dir.path(),
        &csv_source(dir.path(), "small.csv", "203.0.113.0,203.0.113.63,CN\n"),
    );
    let (_, plan, mut monitor) = load(&config);
    let capacity = monitor.sizes().l2_blocks;

    // Far more split /24s than the level-2 area was sized for.
    let mut rows = String::new();
    for i in 0..=capacity {
        let net = Ipv4Addr::from(0x0a00_0000 + (i << 8));
        let half = Ipv4Addr::from(0x0a00_0000 + (i << 8) + 127);
        writeln!(rows, "{net},{half},SG").expect("write to a String");
    }
    let err = install_too_big(&mut monitor, dir.path(), "big.csv", &rows, &plan.labels);
    assert!(
        matches!(err, InstallError::Blocks(b) if b.needed > capacity),
        "{err}"
    );
    assert_eq!(monitor.live_generation(), Some(0), "no switch happened");
    let cn = Ipv4Addr::new(203, 0, 113, 10);
    run(
        &monitor,
        &eth_v4(&ipv4(PHONE, cn, UDP, &udp(40000, 443, &[1; 8]))),
    );
    assert_eq!(
        class_packets(&monitor, &plan.labels, "CN", Verdict::Violation),
        1,
        "the live tables still classify"
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn a_generation_refilled_keeps_nothing_of_its_previous_data() {
    require_root("a_generation_refilled_keeps_nothing_of_its_previous_data");
    let dir = tempfile::tempdir().expect("tempdir");
    // A /64 with a /128 cut out: the /128 is too deep for the array levels and lands in the
    // fallback trie, so both parts of the IPv6 table hold data in generation 0.
    let first = "2001:db8:ff:86::,2001:db8:ff:86::,CN\n\
                 2001:db8:ff:86::1,2001:db8:ff:86::1,RU\n\
                 2001:db8:ff:86::2,2001:db8:ff:86:ffff:ffff:ffff:ffff,CN\n\
                 2001:db8:ff:87::,2001:db8:ff:87::ffff,SG\n";
    // The other data sends the same spot to the trie (another /128), without the first's.
    let other = "2001:db8:ff:86::3,2001:db8:ff:86::3,SG\n\
                 2001:db8:ff:87::,2001:db8:ff:87::ffff,SG\n";
    let config = config(dir.path(), &csv_source(dir.path(), "first.csv", first));
    let (_, plan, mut monitor) = load(&config);
    assert!(
        !plan.tables.geo.v6_table.trie.is_empty(),
        "the /128 is in the fallback trie"
    );
    let config2 = self::config(dir.path(), &csv_source(dir.path(), "other.csv", other));
    let geo2 = GeoDb::load(&config2.geoip.sources).expect("geoip");
    let plan2 = tables::plan_after(&config2, &geo2, Some(&plan.labels)).expect("plan");
    assert!(
        !plan2.tables.geo.v6_table.trie.is_empty(),
        "the other /128 is in the fallback trie too"
    );
    // Generation 1, then generation 0 again, both with the other data.
    for generation in [1, 0] {
        let installed = monitor.install_geo(&plan2.tables.geo).expect("install");
        assert_eq!(installed.generation, generation);
    }
    let phone6: Ipv6Addr = PHONE6.parse().expect("v6");
    for remote in ["2001:db8:ff:86::10", "2001:db8:ff:86::1"] {
        let remote: Ipv6Addr = remote.parse().expect("v6");
        run(
            &monitor,
            &eth_v6(&ipv6(phone6, remote, &[], UDP, &udp(40000, 443, &[1; 8]))),
        );
    }
    let labels = &plan2.labels;
    assert_eq!(class_packets(&monitor, labels, "CN", Verdict::Violation), 0);
    assert_eq!(class_packets(&monitor, labels, "RU", Verdict::Violation), 0);
    assert_eq!(
        class_packets(&monitor, labels, "??", Verdict::Unknown),
        2,
        "neither the arrays nor the trie of generation 0 kept the first data"
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn an_ipv6_reload_that_does_not_fit_keeps_the_live_tables() {
    require_root("an_ipv6_reload_that_does_not_fit_keeps_the_live_tables");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        dir.path(),
        &csv_source(
            dir.path(),
            "small.csv",
            "2001:db8:ff:86::,2001:db8:ff:86::ffff,CN\n",
        ),
    );
    let (_, plan, mut monitor) = load(&config);
    let capacity = monitor.sizes().geo6_words;

    // One cut /48 in each of many /32s: every one needs node blocks of its own.
    let mut rows = String::new();
    for i in 0..capacity / 16 {
        let net = Ipv6Addr::from((0x2a00_u128 << 112) | (u128::from(i) << 96) | (1 << 80));
        let end = Ipv6Addr::from(u128::from(net) | 0xffff);
        writeln!(rows, "{net},{end},SG").expect("write to a String");
    }
    let err = install_too_big(&mut monitor, dir.path(), "big6.csv", &rows, &plan.labels);
    assert!(
        matches!(err, InstallError::Ipv6Words { needed, capacity: c } if needed > c as usize && c == capacity),
        "{err}"
    );
    assert_eq!(monitor.live_generation(), Some(0), "no switch happened");
    let cn6: Ipv6Addr = "2001:db8:ff:86::10".parse().expect("v6");
    let phone6: Ipv6Addr = PHONE6.parse().expect("v6");
    run(
        &monitor,
        &eth_v6(&ipv6(phone6, cn6, &[], UDP, &udp(40000, 443, &[1; 8]))),
    );
    assert_eq!(
        class_packets(&monitor, &plan.labels, "CN", Verdict::Violation),
        1,
        "the live IPv6 table still classifies"
    );
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn flows_carry_the_asn_of_the_data() {
    require_root("flows_carry_the_asn_of_the_data");
    let dir = tempfile::tempdir().expect("tempdir");
    let geoip = asn_sources(dir.path());
    let config = config(dir.path(), &geoip);
    let (geo, plan, monitor) = load(&config);
    for (last_octet, asn) in [(10u8, 64500u32), (40, 64501)] {
        let remote = Ipv4Addr::new(203, 0, 113, last_octet);
        run(
            &monitor,
            &eth_v4(&ipv4(PHONE, remote, UDP, &udp(40000, 443, &[1; 8]))),
        );
        let flows = monitor.flows().expect("flows");
        let (key, state) = flows
            .iter()
            .find(|(k, _)| k.remote[..4] == remote.octets())
            .expect("the violation flow is tracked");
        assert_eq!(state.asn, asn, "flow to {remote}");
        assert_eq!(geo.lookup(IpAddr::V4(remote)).asn, Some(asn));
        // The flow events (the event log's lines) carry it as the kernel wrote it.
        let event =
            serde_json::to_value(monitor::events::FlowRecord::new(key, state, &plan.labels))
                .expect("json");
        assert_eq!(event["asn"], asn, "event for {remote}: {event}");
    }
}

/// The iptoasn and country sources of the ASN tests (AS64500/64501: RFC 5398).
fn asn_sources(dir: &Path) -> String {
    std::fs::write(dir.join("country.csv"), "203.0.113.0,203.0.113.63,CN\n").expect("write");
    std::fs::write(
        dir.join("ip2asn-combined.tsv"),
        "203.0.113.0\t203.0.113.31\t64500\tCN\tEXAMPLE-A\n\
         203.0.113.32\t203.0.113.63\t64501\tCN\tEXAMPLE-B\n",
    )
    .expect("write");
    format!(
        "[geoip]\nsources = [{{ format = \"csv\", path = \"{0}/country.csv\" }}, \
         {{ format = \"iptoasn\", path = \"{0}/ip2asn-combined.tsv\" }}]",
        dir.display()
    )
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn named_asns_get_their_own_counters() {
    require_root("named_asns_get_their_own_counters");
    let dir = tempfile::tempdir().expect("tempdir");
    let geoip = format!("{}\n[metrics]\nasns = [64500]", asn_sources(dir.path()));
    let config = config(dir.path(), &geoip);
    let (_, plan, monitor) = load(&config);
    let named = Ipv4Addr::new(203, 0, 113, 10); // AS64500
    let other = Ipv4Addr::new(203, 0, 113, 40); // AS64501
    let out = ipv4(PHONE, named, UDP, &udp(40000, 443, &[1; 100]));
    for _ in 0..3 {
        run(&monitor, &eth_v4(&out));
    }
    run(
        &monitor,
        &eth_v4(&ipv4(named, PHONE, UDP, &udp(443, 40000, &[1; 10]))),
    );
    run(
        &monitor,
        &eth_v4(&ipv4(PHONE, other, UDP, &udp(40000, 443, &[1; 8]))),
    );

    let counters = monitor.read_counters().expect("counters");
    let mut seen: Vec<(String, u32, u32, u64, u64)> = counters
        .asns
        .iter()
        .map(|(index, c)| {
            let (group, slot, dir) = asn_counter_parts(*index);
            (
                plan.labels.group(group).to_owned(),
                plan.labels.asns[slot as usize],
                dir,
                c.packets,
                c.bytes,
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "phones".to_owned(),
                64500,
                DIR_OUTBOUND,
                3,
                3 * out.len() as u64
            ),
            ("phones".to_owned(), 64500, DIR_INBOUND, 1, 20 + 8 + 10),
        ],
        "only the named ASN is counted, per group and direction, in layer-3 bytes"
    );
    // The class counters still count all five.
    let all: u64 = counters.classes.iter().map(|(_, c)| c.packets).sum();
    assert_eq!(all, 5);
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn reload_applies_the_new_config_and_keeps_every_slot() {
    require_root("reload_applies_the_new_config_and_keeps_every_slot");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &asn_sources(dir.path()));
    let (_, plan, mut monitor) = load(&config);
    let labels = std::sync::RwLock::new(plan.labels);
    let cn = Ipv4Addr::new(203, 0, 113, 10);
    let frame = eth_v4(&ipv4(PHONE, cn, UDP, &udp(40000, 443, &[1; 8])));
    run(&monitor, &frame);

    // The new config puts a group before phones, lets phones reach CN and names AS64500.
    let text = std::fs::read_to_string(&config.path).expect("read config");
    let text = text
        .replace(
            "[[group]]\nname = \"phones\"",
            "[[group]]\nname = \"cameras\"\nnetworks = [\"192.0.2.128/26\"]\n\
             [[group]]\nname = \"phones\"",
        )
        .replace("allow = [\"SG\"]", "allow = [\"SG\", \"CN\"]")
        + "[metrics]\nasns = [64500]\n";
    std::fs::write(&config.path, text).expect("write config");
    let r = reload::reload(&mut monitor, &config, &labels)
        .unwrap_or_else(|e| panic!("reload: {}", monitor::error_chain(&e)));
    assert_eq!(r.installed.generation, 1);
    assert_eq!(r.config.groups[0].name, "cameras");
    let labels = labels.read().expect("labels").clone();
    assert_eq!(
        labels.groups,
        ["ungrouped", "phones", "cameras"],
        "phones keep slot 1"
    );
    run(&monitor, &frame);
    assert_eq!(
        class_packets(&monitor, &labels, "CN", Verdict::Violation),
        1,
        "the packet before the reload is still counted"
    );
    assert_eq!(
        class_packets(&monitor, &labels, "CN", Verdict::Allowed),
        1,
        "the new policy applies"
    );
    let counters = monitor.read_counters().expect("counters");
    assert_eq!(counters.asns.len(), 1, "AS64500 is counted from now on");
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn a_reload_of_a_bad_config_changes_nothing() {
    require_root("a_reload_of_a_bad_config_changes_nothing");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &asn_sources(dir.path()));
    let (_, plan, mut monitor) = load(&config);
    let labels = std::sync::RwLock::new(plan.labels.clone());
    let good = std::fs::read_to_string(&config.path).expect("read config");
    let cn = Ipv4Addr::new(203, 0, 113, 10);
    let frame = eth_v4(&ipv4(PHONE, cn, UDP, &udp(40000, 443, &[1; 8])));

    for (bad, want) in [
        (
            good.replace("allow = [\"SG\"]", "allow = [\"SG\", \"XYZ\"]"),
            "group[0].allow[1]",
        ),
        (
            good.replace("ip2asn-combined.tsv", "missing.tsv"),
            "missing.tsv",
        ),
    ] {
        std::fs::write(&config.path, bad).expect("write config");
        let err = reload::reload(&mut monitor, &config, &labels).expect_err("refused");
        let text = monitor::error_chain(&err);
        assert!(text.contains(want), "{want} in {text}");
        assert_eq!(monitor.live_generation(), Some(0), "no switch");
        run(&monitor, &frame);
    }
    // A GeoIP file that is corrupt at a line: named, and nothing applied.
    std::fs::write(&config.path, &good).expect("write config");
    std::fs::write(
        dir.path().join("country.csv"),
        "203.0.113.0,203.0.113.63,CN\nnot,a,row\n",
    )
    .expect("write");
    let err = reload::reload(&mut monitor, &config, &labels).expect_err("refused");
    assert!(
        monitor::error_chain(&err).contains("country.csv:2"),
        "{}",
        monitor::error_chain(&err)
    );
    run(&monitor, &frame);
    assert_eq!(
        class_packets(&monitor, &plan.labels, "CN", Verdict::Violation),
        3,
        "the old tables and policy kept classifying"
    );
    assert_eq!(labels.read().expect("labels").groups, plan.labels.groups);
}
