//! No loss across restarts. The daemon pins its counters, flow table, ring buffer and links
//! under `[pin] dir`; a daemon restarted under traffic, after SIGTERM or SIGKILL, takes
//! them over: the same links, no counter reset, no packet uncounted. What cannot be carried
//! over (another map layout, another flow table size, a second daemon on the same
//! directory) is refused before anything is touched, and `exfilmon cleanup` removes it all.
//! While no daemon runs, the programs left attached still reach their encapsulation
//! programs through the pinned program arrays.

#![expect(
    clippy::cast_precision_loss,
    reason = "Prometheus values are f64; the test's counts are exact integers far below 2^53"
)]

use std::{collections::BTreeSet, net::SocketAddr, path::Path, process::Command, time::Duration};

use aya::maps::{Array, Map, MapData};
use exfilmon_tests::{
    Lab, Node,
    daemon::{Daemon, free_port, pin_dir_of, run_refused, write_lab_config},
    exfilmon_bin,
    lab::{INSIDE_IF, PHONE_V4, SERVER_CN_V4},
    require_root,
    traffic::{udp_paced, udp_sink},
};
use monitor_common::pin::{LAYOUT, PinMeta, TAKES_OVER};

/// The bpf link ids a process holds open, from `/proc/PID/fdinfo`.
fn link_ids(pid: i32) -> BTreeSet<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .expect("fdinfo")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("link_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

fn start(config: &Path, port: u16) -> Daemon {
    Daemon::start_with(
        config.to_owned(),
        SocketAddr::from(([127, 0, 0, 1], port)),
        tempfile::tempdir().expect("tempdir"),
    )
    .unwrap_or_else(|e| panic!("exfilmon did not start: {e:#}"))
}

/// PPPoE frames sent while no daemon runs, and their inner UDP payload.
const PPPOE_FRAMES: usize = 40;
const PPPOE_PAYLOAD: usize = 100;

const TAKEN_OVER: &str = "the pinned link runs this daemon's program now";

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn restarts_under_traffic_keep_the_links_and_lose_no_packet() {
    require_root("restarts_under_traffic_keep_the_links_and_lose_no_packet");
    let lab = Lab::new().expect("lab");
    let run = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let config = write_lab_config(&lab, run.path(), port).expect("config");

    let first = start(&config, port);
    let links = link_ids(first.pid().expect("running"));
    assert_eq!(links.len(), 2, "XDP and TC egress links: {links:?}");

    // ~10 s of traffic from a phone to CN: a violation, so counted and tracked as a flow.
    let sink = udp_sink(lab.ns(Node::Inet), SocketAddr::from((SERVER_CN_V4, 9700))).expect("sink");
    let sender = udp_paced(
        lab.ns(Node::Phone),
        Some(PHONE_V4.into()),
        sink.addr(),
        5000,
        200,
        Duration::from_millis(2),
    )
    .expect("sender");
    std::thread::sleep(Duration::from_secs(1));

    // SIGTERM: exits cleanly, the programs keep counting meanwhile.
    let (status, _) = first.stop_keeping_pins().expect("stop");
    assert!(status.success(), "exited with {status}");
    // With no daemon running: PPPoE frames, whose walk is in the encapsulation program,
    // reached through a program array that only its pin keeps filled.
    let (pppoe_sent, inner_len) = lab
        .pppoe_from_phone(PPPOE_FRAMES, 9701, PPPOE_PAYLOAD)
        .expect("PPPoE frames");
    std::thread::sleep(Duration::from_millis(300));
    let second = start(&config, port);
    assert_eq!(
        link_ids(second.pid().expect("running")),
        links,
        "the same links after SIGTERM"
    );
    assert_eq!(
        second.log().matches(TAKEN_OVER).count(),
        2,
        "{}",
        second.log()
    );
    std::thread::sleep(Duration::from_secs(1));

    // SIGKILL: no chance to do anything.
    second.kill().expect("SIGKILL");
    std::thread::sleep(Duration::from_millis(300));
    let third = start(&config, port);
    assert_eq!(
        link_ids(third.pid().expect("running")),
        links,
        "the same links after SIGKILL"
    );
    assert!(
        !sender.is_finished(),
        "the restarts must happen under traffic; the sender finished too early"
    );

    let sent = sender.join().expect("sender thread").expect("sent");
    let got = sink.wait_for(sent.packets, Duration::from_secs(10));
    assert_eq!(got.packets, sent.packets, "every datagram arrived");
    let labels = [
        ("group", "phones"),
        ("country", "CN"),
        ("direction", "outbound"),
    ];
    let packets = sent.packets + pppoe_sent;
    let bytes = sent.l3_bytes + pppoe_sent * inner_len;
    let metrics = third
        .wait_for("every packet counted", Duration::from_secs(10), |m| {
            m.sum("exfilmon_packets_total", &labels) >= packets as f64
        })
        .expect("counted");
    assert_eq!(
        metrics.sum("exfilmon_packets_total", &labels),
        packets as f64,
        "packets across two restarts, the PPPoE frames by their inner packets"
    );
    assert_eq!(
        metrics.sum("exfilmon_bytes_total", &labels),
        bytes as f64,
        "bytes across two restarts"
    );

    status_shows(&config, packets, bytes);

    // The flow, tracked in the pinned table all along, ends with every packet in it.
    let log_path = run.path().join("events.jsonl");
    third.stop().expect("stop");
    let last = last_event(&log_path, 9700);
    assert_eq!(
        last["packets_out"].as_u64(),
        Some(sent.packets),
        "the flow's final totals: {last}"
    );
    assert!(
        !pin_dir_of(&config)
            .expect("config")
            .expect("the lab pins")
            .exists(),
        "the cleanup removed the pin directory"
    );
    println!(
        "restarts under traffic (SIGTERM, then SIGKILL): {} packets and {pppoe_sent} PPPoE \
         frames sent, {} counted, encap_missed 0, flow total {}, links {links:?} kept",
        sent.packets,
        metrics.sum("exfilmon_packets_total", &labels),
        last["packets_out"]
    );
}

/// `exfilmon status`, beside the running daemon, shows the phones' violation to CN with
/// every packet and byte counted, the flow to the server's port 9700 among the tracked,
/// and no `encap_missed`.
fn status_shows(config: &Path, packets: u64, bytes: u64) {
    let out = Command::new(exfilmon_bin())
        .args(["status", "--top", "5", "--config"])
        .arg(config)
        .output()
        .expect("exfilmon status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| {
            l.split(['│', '┆'])
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let (packets, bytes) = (packets.to_string(), bytes.to_string());
    assert!(
        rows.contains(&vec![
            "phones",
            "CN",
            "outbound",
            "violation",
            &packets,
            &bytes
        ]),
        "the class row: {text}"
    );
    assert!(
        rows.contains(&vec!["phones", "CN", &packets, &bytes]),
        "the violations row: {text}"
    );
    let server = SERVER_CN_V4.to_string();
    assert!(
        rows.iter()
            .any(|r| r.len() == 9 && r[2] == server && r[4] == "9700" && r[6] == "violation"),
        "the tracked flow: {text}"
    );
    assert!(text.contains("hooks: tc-egress-"), "{text}");
    // Among the anomalies, if any tail call had failed while no daemon ran.
    assert!(!text.contains("encap_missed"), "{text}");
    println!("exfilmon status:\n{text}");
}

/// The last event of the flow to the CN server's `port` in the event log at `path`.
fn last_event(path: &Path, port: u16) -> serde_json::Value {
    let log = std::fs::read_to_string(path).expect("event log");
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["dst"] == SERVER_CN_V4.to_string() && v["dport"] == port)
        .expect("the flow is in the event log")
}

/// Pins of the oldest layout this exfilmon migrates from are taken over and their header
/// rewritten. The pins are made to look as that layout left them (no encapsulation maps).
fn migrate_oldest_layout(dir: &Path, config: &Path, port: u16) {
    let oldest = TAKES_OVER[0];
    if oldest == LAYOUT {
        return;
    }
    set_layout(dir, oldest);
    for name in ["ENCAP_XDP_PROG", "ENCAP_TC_PROG", "ENCAP"] {
        std::fs::remove_file(dir.join("maps").join(name)).expect("unpin");
    }
    let daemon = start(config, port);
    assert_eq!(
        daemon.log().matches(TAKEN_OVER).count(),
        2,
        "layout {oldest} taken over: {}",
        daemon.log()
    );
    let (status, _) = daemon.stop_keeping_pins().expect("stop");
    assert!(status.success());
    assert_eq!(layout(dir), LAYOUT, "the header names the new layout");
    assert!(
        dir.join("maps/ENCAP_XDP_PROG").exists(),
        "the encapsulation maps are pinned"
    );
    println!("layout {oldest}: taken over, now layout {LAYOUT}");
}

fn meta_map(dir: &Path) -> Map {
    Map::Array(MapData::from_pin(dir.join("maps/PIN_META")).expect("PIN_META is pinned"))
}

fn set_layout(dir: &Path, layout: u32) {
    let mut map = meta_map(dir);
    let mut meta: Array<_, PinMeta> = Array::try_from(&mut map).expect("array");
    let mut m = meta.get(&0, 0).expect("meta");
    m.layout = layout;
    meta.set(0, &m, 0).expect("set");
}

fn layout(dir: &Path) -> u32 {
    let map = meta_map(dir);
    let meta: Array<_, PinMeta> = Array::try_from(&map).expect("array");
    meta.get(&0, 0).expect("meta").layout
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn what_cannot_be_carried_over_is_refused_and_left_as_it_was() {
    require_root("what_cannot_be_carried_over_is_refused_and_left_as_it_was");
    let lab = Lab::new().expect("lab");
    let run = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let config = write_lab_config(&lab, run.path(), port).expect("config");
    let dir = pin_dir_of(&config).expect("config").expect("the lab pins");
    let (status, _) = start(&config, port).stop_keeping_pins().expect("stop");
    assert!(status.success());
    let program = lab
        .xdp_program_id(INSIDE_IF)
        .expect("the pinned program stays attached");

    // A newer layout than this exfilmon reads.
    set_layout(&dir, LAYOUT + 1);
    let said = run_refused(&config);
    assert!(
        said.contains(&format!("map layout {}", LAYOUT + 1))
            && said.contains("exfilmon cleanup --pin-dir"),
        "the refusal names the layouts and the way out: {said}"
    );
    assert_eq!(layout(&dir), LAYOUT + 1, "the pins are left as they were");
    assert_eq!(
        lab.xdp_program_id(INSIDE_IF),
        Some(program),
        "and the program too"
    );
    println!(
        "layout {}: {}",
        LAYOUT + 1,
        said.trim().lines().last().unwrap_or_default()
    );

    migrate_oldest_layout(&dir, &config, port);
    set_layout(&dir, LAYOUT);
    // The take-over gave the link its program.
    let program = lab
        .xdp_program_id(INSIDE_IF)
        .expect("the pinned program stays attached");

    // Another flow table size.
    let resized = run.path().join("resized.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &resized,
        text.replace("[flows]\n", "[flows]\nmax_entries = 2048\n"),
    )
    .expect("write");
    let said = run_refused(&resized);
    assert!(
        said.contains("flows.max_entries is 2048") && said.contains("holds 65536"),
        "the refusal names the key and both sizes: {said}"
    );
    assert_eq!(
        lab.xdp_program_id(INSIDE_IF),
        Some(program),
        "the program stays"
    );
    println!(
        "resized: {}",
        said.trim().lines().last().unwrap_or_default()
    );

    // A second daemon on the directory of a running one.
    let daemon = start(&config, port);
    let other = run.path().join("other.toml");
    let other_port = free_port().expect("port");
    std::fs::write(
        &other,
        text.replace(&format!(":{port}\""), &format!(":{other_port}\"")),
    )
    .expect("write");
    let said = run_refused(&other);
    assert!(
        said.contains("another exfilmon runs with the pin directory"),
        "{said}"
    );
    println!(
        "second daemon: {}",
        said.trim().lines().last().unwrap_or_default()
    );

    cleanup_removes_everything(&lab, &dir, &config, daemon);
}

/// The cleanup refuses while `daemon` runs, then removes everything; `status` then has
/// nothing to show.
fn cleanup_removes_everything(lab: &Lab, dir: &Path, config: &Path, daemon: Daemon) {
    let cleanup = || {
        Command::new(exfilmon_bin())
            .args(["cleanup", "--pin-dir"])
            .arg(dir)
            .output()
            .expect("exfilmon cleanup")
    };
    assert!(
        !cleanup().status.success(),
        "cleanup under a running daemon"
    );
    let (status, _) = daemon.stop_keeping_pins().expect("stop");
    assert!(status.success());
    let out = cleanup();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(!dir.exists(), "the directory is gone: {said}");
    assert_eq!(
        lab.xdp_program_id(INSIDE_IF),
        None,
        "the program is detached"
    );
    let again = cleanup();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing pinned"),
        "a second cleanup has nothing to do"
    );
    let out = Command::new(exfilmon_bin())
        .args(["status", "--config"])
        .arg(config)
        .output()
        .expect("exfilmon status");
    assert!(
        out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stderr).contains("nothing pinned"),
        "status after the cleanup: {out:?}"
    );
    println!("cleanup: {}", said.trim());
}
