//! Many sites on an engine operators already run: three exfilmon "sites" (three labs,
//! three daemons) scraped by one real Prometheus with the site labels of
//! `dist/prometheus/sites.yml` and the recording rules of `rules/exfilmon-sites.rules.yml`;
//! a second Prometheus federates the cross-site sums as `dist/prometheus/federate.yml`
//! does. The sums must equal the traffic each site sent.

#![expect(
    clippy::cast_precision_loss,
    clippy::float_cmp,
    reason = "Prometheus values are f64; the test's counts are exact integers far below 2^53"
)]

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use exfilmon_tests::{
    Lab, Node, Prometheus,
    daemon::Daemon,
    lab::{PHONE_V4, SERVER_CN_V4},
    require_root, udp_burst, udp_sink, workspace_root,
};

const SITES: [&str; 3] = ["hq", "branch-east", "base-north"];
/// The targets `dist/prometheus/sites.yml` names, site by site.
const EXAMPLE_TARGETS: [&str; 3] = ["192.0.2.1:9477", "198.51.100.1:9477", "203.0.113.1:9477"];
const WAIT: Duration = Duration::from_secs(30);

/// The `scrape_configs` items of an example config, with its targets replaced.
fn scrape_configs(example: &str, targets: &[(&str, String)]) -> String {
    let text = std::fs::read_to_string(workspace_root().join(example)).expect("example config");
    let (_, jobs) = text
        .split_once("scrape_configs:\n")
        .expect("scrape_configs");
    let mut jobs = jobs.to_owned();
    for (from, to) in targets {
        assert!(jobs.contains(from), "{example} names {from}");
        jobs = jobs.replace(from, to);
    }
    jobs
}

fn promtool_check_config(args: &[&str]) {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check config {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_prometheus_configs_and_site_rules_are_valid() {
    promtool_check_config(&["dist/prometheus/sites.yml"]);
    promtool_check_config(&["dist/prometheus/federate.yml"]);
    promtool_check_config(&["--agent", "dist/prometheus/agent.yml"]);
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn three_sites_sum_to_the_traffic_sent_in_prometheus_and_through_federation() {
    require_root("three_sites_sum_to_the_traffic_sent_in_prometheus_and_through_federation");
    let labs: Vec<Lab> = SITES.iter().map(|_| Lab::new().expect("lab")).collect();
    let daemons: Vec<Daemon> = labs
        .iter()
        .map(|l| Daemon::start(l).expect("daemon"))
        .collect();

    // Each site's phones call CN: 10, 20 and 30 datagrams.
    let mut sent = Vec::new();
    for (i, lab) in labs.iter().enumerate() {
        let dst = SocketAddr::new(SERVER_CN_V4.into(), 9100 + i as u16);
        let sink = udp_sink(lab.ns(Node::Inet), dst).expect("sink");
        let s = udp_burst(
            lab.ns(Node::Phone),
            Some(PHONE_V4.into()),
            dst,
            10 * (i + 1),
            300,
        )
        .expect("burst");
        assert_eq!(
            sink.wait_for(s.packets, Duration::from_secs(10)).packets,
            s.packets
        );
        sent.push(s);
    }
    let total: u64 = sent.iter().map(|s| s.l3_bytes).sum();

    let targets: Vec<(&str, String)> = EXAMPLE_TARGETS
        .iter()
        .zip(&daemons)
        .map(|(from, d)| (*from, d.metrics.to_string()))
        .collect();
    let rules = workspace_root().join("rules/exfilmon-sites.rules.yml");
    let site = Prometheus::start_with(
        &scrape_configs("dist/prometheus/sites.yml", &targets),
        &[Path::new(&rules)],
        Duration::from_secs(1),
    )
    .expect("site prometheus");
    let violation = "{country=\"CN\",direction=\"outbound\",verdict=\"violation\"}";
    let across = format!("country_direction_verdict:exfilmon_bytes_total:sum{violation}");
    site.wait_for(&across, |s| s.len() == 1 && s[0].1 == total as f64, WAIT)
        .unwrap_or_else(|e| panic!("{across} must be {total}: {e:#}"));
    let per_site = format!("site_country_direction_verdict:exfilmon_bytes_total:sum{violation}");
    let samples = site
        .wait_for(&per_site, |s| s.len() == SITES.len(), WAIT)
        .unwrap_or_else(|e| panic!("{per_site}: {e:#}"));
    for (name, s) in SITES.iter().zip(&sent) {
        let got = samples
            .iter()
            .find(|x| x.0.get("site").map(String::as_str) == Some(*name))
            .unwrap_or_else(|| panic!("no series of site {name}: {samples:?}"));
        assert_eq!(got.1, s.l3_bytes as f64, "site {name}");
    }
    site.wait_for(
        "site:exfilmon_up:min",
        |s| s.len() == 3 && s.iter().all(|x| x.1 == 1.0),
        WAIT,
    )
    .expect("every site up");

    // A global Prometheus federates the sums only.
    let federating = Prometheus::start_with(
        &scrape_configs(
            "dist/prometheus/federate.yml",
            &[("192.0.2.100:9090", site.addr().to_string())],
        ),
        &[],
        Duration::from_secs(1),
    )
    .expect("global prometheus");
    federating
        .wait_for(&across, |s| s.len() == 1 && s[0].1 == total as f64, WAIT)
        .unwrap_or_else(|e| panic!("federated {across} must be {total}: {e:#}"));
    let raw = federating.query("exfilmon_bytes_total").expect("query");
    assert!(
        raw.is_empty(),
        "federation carries the sums, not the raw series: {raw:?}"
    );
    println!(
        "3 sites, {} + {} + {} = {total} bytes to CN: equal in the recorded sums and after federation",
        sent[0].l3_bytes, sent[1].l3_bytes, sent[2].l3_bytes
    );
}
