//! Respect for the host. exfilmon never replaces an XDP program it did not attach: with
//! another program on the lab router's inside interface (here a second exfilmon, loaded
//! by the test — the likeliest neighbour), `exfilmon run` must refuse with an error that
//! names the interface and says what to do, and the other program must stay attached.
//! And it needs no more than CAP_BPF and CAP_NET_ADMIN, as user nobody: without
//! CAP_PERFMON it loads the program set that parses a copy of each frame's head.

use std::time::Duration;

use aya::programs::XdpMode;
use exfilmon_tests::{
    Lab, Node,
    daemon::{free_port, run_refused, write_lab_config},
    lab::INSIDE_IF,
    require_root, write_config,
};
use monitor::{ebpf::Hook, geoip::GeoDb, load_monitor, tables};

#[test]
#[ignore = "needs root: builds network namespaces and loads eBPF programs"]
fn an_interface_with_another_xdp_program_is_refused_and_that_program_stays() {
    require_root("an_interface_with_another_xdp_program_is_refused_and_that_program_stays");
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");

    // The neighbour: a program loaded and attached by the test, in driver mode.
    let geo_csv = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/geoip.csv");
    let config = write_config(
        dir.path(),
        &format!(
            "[home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"IN\"]\n\
             [geoip]\nsources = [{{ format = \"csv\", path = \"{geo_csv}\" }}]\n"
        ),
    );
    let geo = GeoDb::load(&config.geoip.sources).expect("geoip");
    let plan = tables::plan(&config, &geo).expect("plan");
    let mut neighbour = load_monitor(&config, &plan)
        .unwrap_or_else(|e| panic!("load: {}", monitor::error_chain(&e)));
    lab.ns(Node::Router)
        .enter(|| neighbour.attach(INSIDE_IF, Hook::Xdp(XdpMode::Driver)))
        .unwrap_or_else(|e| panic!("attach: {}", monitor::error_chain(&e)));
    let before = lab
        .xdp_program_id(INSIDE_IF)
        .expect("the neighbour is attached");

    // exfilmon, configured to hook the same interface with XDP, must refuse and exit.
    let daemon_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let lab_config = write_lab_config(&lab, daemon_dir.path(), port).expect("config");
    let stderr = run_refused(&lab_config);
    assert!(
        stderr.contains("interface inside already has an XDP program")
            && stderr.contains("will not replace"),
        "the error names the interface and the refusal: {stderr}"
    );
    println!(
        "refused with: {}",
        stderr.lines().last().unwrap_or_default()
    );

    assert_eq!(
        lab.xdp_program_id(INSIDE_IF),
        Some(before),
        "the neighbour's program is still the one attached"
    );
    drop(neighbour);
    assert_eq!(
        lab.xdp_program_id(INSIDE_IF),
        None,
        "the neighbour's link went with it, and exfilmon left nothing behind"
    );
}

/// CAP_NET_ADMIN (12) and CAP_BPF (39), as `/proc/PID/status` prints capability sets.
const CONFINED: u64 = (1 << 12) | (1 << 39);

/// A capability set or id line of `/proc/PID/status`.
fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

#[test]
#[ignore = "needs root: builds network namespaces and loads eBPF programs"]
#[expect(
    clippy::too_many_lines,
    reason = "one confined daemon: start, count, reload, stop"
)]
fn the_daemon_runs_and_counts_with_only_cap_bpf_and_net_admin() {
    use std::net::SocketAddr;

    use exfilmon_tests::{
        daemon::Daemon,
        lab::{PHONE_V4, SERVER_CN_V4},
        traffic::{udp_burst, udp_sink},
    };

    require_root("the_daemon_runs_and_counts_with_only_cap_bpf_and_net_admin");
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let config = write_lab_config(&lab, dir.path(), port).expect("config");
    // Inside the router's namespace already: entering one would need CAP_SYS_ADMIN. And
    // `ip netns exec` mounts the namespace's own sysfs over /sys, which hides the bpffs at
    // /sys/fs/bpf: this run does not pin (tests/tests/pins.rs pins, as root).
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text
        .lines()
        .filter(|l| !l.starts_with("netns"))
        .map(|l| {
            if l.starts_with("dir = \"/sys/fs/bpf") {
                "enabled = false"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).expect("config");
    let metrics = SocketAddr::from(([127, 0, 0, 1], port));
    let daemon = Daemon::start_confined(lab.ns(Node::Router), config, metrics, dir)
        .unwrap_or_else(|e| panic!("the confined daemon did not start: {e:#}"));

    let pid = daemon.pid().expect("running");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let got = u64::from_str_radix(&status_field(pid, set), 16).expect("hex");
        assert_eq!(got, CONFINED, "{set}: {got:#x}");
    }
    let uid = status_field(pid, "Uid");
    assert!(
        uid.split_whitespace().all(|u| u == "65534"),
        "runs as nobody: {uid}"
    );
    println!("confined daemon: CapEff {CONFINED:#x} (CAP_BPF, CAP_NET_ADMIN), uid {uid}");
    let copy = monitor_common::programs::COPY.name;
    daemon
        .wait_for("the program set named", Duration::from_secs(10), |m| {
            (m.sum("exfilmon_programs_info", &[("set", copy)]) - 1.0).abs() < 0.5
        })
        .expect("exfilmon_programs_info names the copy set");

    // It counts: a phone's burst to CN, every layer-3 byte.
    let sink = udp_sink(lab.ns(Node::Inet), SocketAddr::from((SERVER_CN_V4, 9601))).expect("sink");
    let sent = udp_burst(
        lab.ns(Node::Phone),
        Some(PHONE_V4.into()),
        sink.addr(),
        20,
        300,
    )
    .expect("burst");
    // And PPPoE frames, which the copy set's encapsulation program walks (a tail call).
    let (pppoe, inner_len) = lab.pppoe_from_phone(20, 9602, 200).expect("PPPoE frames");
    #[expect(clippy::cast_precision_loss, reason = "a few kilobytes")]
    let (want, want_packets) = (
        (sent.l3_bytes + pppoe * inner_len) as f64,
        (sent.packets + pppoe) as f64,
    );
    daemon
        .wait_for("the burst counted", Duration::from_secs(20), |m| {
            m.sum(
                "exfilmon_bytes_total",
                &[
                    ("group", "phones"),
                    ("country", "CN"),
                    ("direction", "outbound"),
                ],
            ) >= want
        })
        .expect("counted");
    let m = daemon.scrape().expect("scrape");
    let labels = [
        ("group", "phones"),
        ("country", "CN"),
        ("direction", "outbound"),
    ];
    assert_eq!(
        (
            m.sum("exfilmon_packets_total", &labels),
            m.sum("exfilmon_bytes_total", &labels)
        ),
        (want_packets, want),
        "every datagram and PPPoE frame, every layer-3 byte"
    );
    assert_eq!(
        m.sum("exfilmon_frames_total", &[("outcome", "encap_missed")]),
        0.0,
        "every PPPoE frame reached the copy set's encapsulation program"
    );
    println!(
        "confined daemon (programs {copy}): {} datagrams and {pppoe} PPPoE frames counted, \
         {want} bytes",
        sent.packets
    );
    // Two reloads: the second rewrites the generation the first retired, after the wait
    // for running programs (an array-of-maps update), which these capabilities allow.
    for n in 1..=2 {
        daemon
            .signal(nix::sys::signal::Signal::SIGHUP)
            .expect("SIGHUP");
        daemon
            .wait_for("the reload", Duration::from_secs(20), |m| {
                (m.sum("exfilmon_config_reloads_total", &[("result", "success")]) - f64::from(n))
                    .abs()
                    < 0.5
            })
            .unwrap_or_else(|e| panic!("reload {n} as the confined daemon: {e:#}"));
    }
    let status = daemon.stop().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");
    assert_eq!(lab.xdp_program_id(INSIDE_IF), None, "detached at exit");
}
