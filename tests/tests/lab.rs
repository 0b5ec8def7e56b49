//! Self-tests of the network lab. Root only: each test prints
//! `SKIPPED (needs root): NAME` and returns when not root.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use exfilmon_tests::{
    Capture, Prometheus,
    lab::{self, Lab, Node},
    ping, promtool_check_metrics, require_root, tcp_exchange, udp_burst, udp_sink,
};

fn lab_namespaces(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn lab_ping_v4_and_v6() {
    require_root("lab_ping_v4_and_v6");
    let lab = Lab::new().unwrap();
    let s = ping(lab.ns(Node::Phone), IpAddr::V4(lab::SERVER_CN_V4), 3).unwrap();
    assert_eq!((s.transmitted, s.received), (3, 3), "{s:?}");
    let s = ping(lab.ns(Node::Laptop), IpAddr::V6(lab::SERVER_US_V6), 2).unwrap();
    assert_eq!((s.transmitted, s.received), (2, 2), "{s:?}");
    let s = ping(lab.ns(Node::Phone), IpAddr::V4(lab::SERVER_UNKNOWN_V4), 1).unwrap();
    assert_eq!(s.received, 1, "{s:?}");
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn lab_udp_burst_fully_received() {
    require_root("lab_udp_burst_fully_received");
    let lab = Lab::new().unwrap();
    let dst = SocketAddr::new(IpAddr::V4(lab::SERVER_CN_V4), 9000);
    let sink = udp_sink(lab.ns(Node::Inet), dst).unwrap();
    let sent = udp_burst(
        lab.ns(Node::Phone),
        Some(IpAddr::V4(lab::PHONE_V4)),
        dst,
        20,
        100,
    )
    .unwrap();
    assert_eq!(sent.packets, 20);
    assert_eq!(sent.l3_bytes, 20 * (20 + 8 + 100));
    let got = sink.wait_for(20, Duration::from_secs(5));
    assert_eq!(got.packets, 20, "{got:?}");
    assert_eq!(got.payload_bytes, 2000);
    assert_eq!(sink.stop().packets, 20);

    // IPv6 too: 40-byte header.
    let dst6 = SocketAddr::new(IpAddr::V6(lab::SERVER_CN_V6), 9001);
    let sink6 = udp_sink(lab.ns(Node::Inet), dst6).unwrap();
    let sent6 = udp_burst(lab.ns(Node::Laptop), None, dst6, 10, 50).unwrap();
    assert_eq!(sent6.l3_bytes, 10 * (40 + 8 + 50));
    assert_eq!(sink6.wait_for(10, Duration::from_secs(5)).packets, 10);
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn lab_tcp_exchange() {
    require_root("lab_tcp_exchange");
    let lab = Lab::new().unwrap();
    let server = SocketAddr::new(IpAddr::V4(lab::SERVER_US_V4), 8080);
    let s = tcp_exchange(
        lab.ns(Node::Laptop),
        lab.ns(Node::Inet),
        server,
        b"GET / HTTP/1.0\r\n\r\n",
        100_000,
    )
    .unwrap();
    assert_eq!(s.request_bytes, 18);
    assert_eq!(s.response_bytes, 100_000);
    let server6 = SocketAddr::new(IpAddr::V6(lab::SERVER_US_V6), 8443);
    tcp_exchange(
        lab.ns(Node::Phone),
        lab.ns(Node::Inet),
        server6,
        &[1u8; 5000],
        10,
    )
    .unwrap();
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn lab_capture_on_inside_sees_the_burst() {
    require_root("lab_capture_on_inside_sees_the_burst");
    let lab = Lab::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("inside.pcap");
    let dst = SocketAddr::new(IpAddr::V4(lab::SERVER_SG_V4), 9000);
    let sink = udp_sink(lab.ns(Node::Inet), dst).unwrap();
    let cap = Capture::start(lab.ns(Node::Router), lab.inside_if(), &pcap).unwrap();
    let sent = udp_burst(lab.ns(Node::Phone), None, dst, 50, 200).unwrap();
    assert_eq!(sink.wait_for(50, Duration::from_secs(5)).packets, 50);
    let stats = cap.stop().unwrap();
    eprintln!("capture on inside: {stats:?} for {} sent", sent.packets);
    assert!(stats.captured >= sent.packets, "{stats:?} < {sent:?}");
    // The lab is quiet (static neighbours, MLD settled in Lab::new): exactly the burst.
    assert_eq!(stats.captured, sent.packets, "{stats:?}");
    assert_eq!(stats.dropped, 0);
    let len = std::fs::metadata(&pcap).unwrap().len();
    assert!(len > 50 * 200, "pcap only {len} bytes");
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn lab_is_quiet_when_idle() {
    require_root("lab_is_quiet_when_idle");
    let lab = Lab::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inside = Capture::start(
        lab.ns(Node::Router),
        lab.inside_if(),
        dir.path().join("i.pcap"),
    )
    .unwrap();
    let outside = Capture::start(
        lab.ns(Node::Router),
        lab.outside_if(),
        dir.path().join("o.pcap"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (i, o) = (inside.stop().unwrap(), outside.stop().unwrap());
    assert_eq!(
        (i.captured, o.captured),
        (0, 0),
        "inside {i:?}, outside {o:?}"
    );

    // IPv6 through the lab without any ND either.
    let cap = Capture::start(
        lab.ns(Node::Router),
        lab.outside_if(),
        dir.path().join("v6.pcap"),
    )
    .unwrap();
    let dst = SocketAddr::new(IpAddr::V6(lab::SERVER_US_V6), 9000);
    let sink = udp_sink(lab.ns(Node::Inet), dst).unwrap();
    let sent = udp_burst(
        lab.ns(Node::Phone),
        Some(IpAddr::V6(lab::PHONE_V6)),
        dst,
        7,
        33,
    )
    .unwrap();
    assert_eq!(sink.wait_for(7, Duration::from_secs(5)).packets, 7);
    assert_eq!(cap.stop().unwrap().captured, sent.packets);
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn lab_prometheus_scrapes_dummy_target() {
    require_root("lab_prometheus_scrapes_dummy_target");
    let metrics =
        "# HELP exf_test_total A test counter.\n# TYPE exf_test_total counter\nexf_test_total 42\n";
    assert_eq!(promtool_check_metrics(metrics), "");
    assert_ne!(promtool_check_metrics("bad metric line here\n"), "");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || serve_metrics(&listener, &stop, metrics))
    };
    let result = std::panic::catch_unwind(|| {
        let prom = Prometheus::start(&[target], Duration::from_secs(1)).unwrap();
        let up = prom
            .wait_for(
                "up{job=\"exfilmon\"}",
                |s| s.iter().any(|(_, v)| (*v - 1.0).abs() < f64::EPSILON),
                Duration::from_secs(20),
            )
            .unwrap();
        assert_eq!(up[0].0["instance"], target.to_string());
        let v = prom
            .wait_for("exf_test_total", |s| !s.is_empty(), Duration::from_secs(10))
            .unwrap();
        assert!((v[0].1 - 42.0).abs() < f64::EPSILON);
        assert!(prom.query("this is not promql(").is_err());
    });
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

fn serve_metrics(listener: &TcpListener, stop: &AtomicBool, body: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((mut c, _)) => {
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn lab_drop_removes_namespaces_and_processes() {
    require_root("lab_drop_removes_namespaces_and_processes");
    let lab = Lab::new_with_prefix(&format!("exf{}-dt", std::process::id())).unwrap();
    let prefix = lab.prefix().to_owned();
    assert_eq!(lab_namespaces(&prefix).len(), 5);
    // A process left running in the router namespace is killed by the drop.
    let child = lab.ns(Node::Router).spawn("sleep", ["30"]).unwrap();
    let pid = child.id();
    drop(lab);
    assert!(
        lab_namespaces(&prefix).is_empty(),
        "{:?}",
        lab_namespaces(&prefix)
    );
    let mut child = child;
    let status = child.wait().unwrap();
    assert!(!status.success(), "sleep {pid} should have been killed");
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn lab_drop_on_panic_cleans_up() {
    require_root("lab_drop_on_panic_cleans_up");
    let prefix = format!("exf{}-pn", std::process::id());
    let p = prefix.clone();
    let r = std::panic::catch_unwind(move || {
        let _lab = Lab::new_with_prefix(&p).unwrap();
        panic!("boom");
    });
    assert!(r.is_err());
    assert_eq!(lab_namespaces(&prefix), Vec::<String>::new());
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn lab_two_labs_coexist_and_leave_nothing() {
    require_root("lab_two_labs_coexist_and_leave_nothing");
    let prefixes = {
        let a = Lab::new().unwrap();
        let b = Lab::new().unwrap();
        assert_ne!(a.prefix(), b.prefix());
        // Same interface names in both labs: names are per namespace.
        let s = ping(b.ns(Node::Phone), IpAddr::V4(lab::SERVER_IN_V4), 1).unwrap();
        assert_eq!(s.received, 1);
        [a.prefix().to_owned(), b.prefix().to_owned()]
    };
    for p in prefixes {
        assert!(
            lab_namespaces(&p).is_empty(),
            "{p}: {:?}",
            lab_namespaces(&p)
        );
    }
}
