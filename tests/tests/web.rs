//! The /metrics server's hardening (issue 5, item 8), against the real server on
//! 127.0.0.1, run on its own thread as the daemon runs it, with real TLS clients: curl and
//! `openssl s_client` (OpenSSL), and rustls. No root needed, except for the last test,
//! which runs the daemon itself.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use exfilmon_tests::{
    daemon::free_port,
    exfilmon_bin, require_root, wait_or_kill,
    web::{Pki, TLS, WebServer, curl, s_client, settings, tls_client},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const SECOND: Duration = Duration::from_secs(1);

/// A cost-4 bcrypt hash of `password` (the least cost: the tests run a debug build).
fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt")
}

fn ca(pki: &Pki) -> String {
    pki.path("ca.crt").display().to_string()
}

#[test]
fn https_serves_tls_1_2_and_1_3_and_refuses_tls_1_1_1_0_and_plain_http() {
    let pki = Pki::new().expect("pki");
    let web = pki.web_config("web.yml", TLS).expect("web config");
    let server = WebServer::start(&settings(Some(web), 8, 2 * SECOND)).expect("server");
    let ca = ca(&pki);
    let url = server.url(true, "/metrics");

    let mut answered = Vec::new();
    for (args, version) in [
        (["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
        (["--tlsv1.3", "--tls-max", "1.3"], "TLSv1.3"),
    ] {
        let mut all = vec!["-v", "--cacert", &ca];
        all.extend(args);
        let got = curl(&all, &url);
        assert_eq!(got.code, 200, "{version}: {}", got.stderr);
        assert!(
            got.stderr
                .contains(&format!("SSL connection using {version}")),
            "curl should report {version}:\n{}",
            got.stderr
        );
        assert!(
            got.body.contains("exfilmon_http_connections_total"),
            "{}",
            got.body
        );
        answered.push(version);
    }

    // OpenSSL offers TLS 1.1 and 1.0 only at security level 0. The server must answer
    // the hello with an alert (rustls sends handshake_failure): no cipher is agreed.
    let mut refused = Vec::new();
    for (flag, version) in [("-tls1_1", "TLSv1.1"), ("-tls1", "TLSv1")] {
        let out = s_client(server.addr, &[flag, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(
            out.contains(&format!("Protocol  : {version}\n"))
                && out.contains("Cipher is (NONE)")
                && out.contains("alert handshake failure:")
                && out.contains("SSL alert number 40"),
            "{version} must be refused by the server with an alert:\n{out}"
        );
        refused.push(version);
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = curl(&[], &server.url(false, "/metrics"));
    assert_ne!(plain.exit, 0, "plain HTTP must fail: {plain:?}");
    assert_ne!(plain.code, 200);
    assert!(!plain.body.contains("exfilmon_"), "{}", plain.body);
    refused.push("plain HTTP");

    assert_eq!(server.connections("served"), 2);
    // The server counts a failed handshake after the client has given up on it.
    assert!(
        eventually(5 * SECOND, || server.connections("handshake_failed") == 3),
        "handshake_failed = {}, not 3",
        server.connections("handshake_failed")
    );
    println!(
        "web tls: {} served (200 with metrics), {} refused ({}); handshake_failed = {}",
        answered.join(" and "),
        refused.len(),
        refused.join(", "),
        server.connections("handshake_failed")
    );
}

#[test]
fn basic_auth_answers_401_without_the_right_password_and_200_with_it() {
    let pki = Pki::new().expect("pki");
    let text = format!(
        "{TLS}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  prometheus: {}\n  other: {}\n",
        hash("right"),
        hash("another")
    );
    let web = pki.web_config("web.yml", &text).expect("web config");
    let server = WebServer::start(&settings(Some(web), 8, 2 * SECOND)).expect("server");
    let ca = ca(&pki);
    let url = server.url(true, "/metrics");
    let base = ["--cacert", ca.as_str()];

    let refused: [(&str, &[&str]); 5] = [
        ("no credentials", &[]),
        ("wrong password", &["-u", "prometheus:wrong"]),
        ("another user's password", &["-u", "prometheus:another"]),
        ("unknown user", &["-u", "nobody:right"]),
        (
            "not basic",
            &["-H", "Authorization: Bearer cHJvbWV0aGV1czpyaWdodA=="],
        ),
    ];
    for (what, args) in refused {
        let got = curl(&[&base[..], args].concat(), &url);
        assert_eq!(got.code, 401, "{what}: {got:?}");
        assert!(
            got.headers
                .to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"exfilmon\""),
            "{what}: a 401 carries the challenge:\n{}",
            got.headers
        );
        assert!(
            !got.body.contains("exfilmon_"),
            "{what}: no metrics without the password"
        );
        assert!(
            got.headers.contains("x-content-type-options: nosniff"),
            "{}",
            got.headers
        );
    }
    let right = [&base[..], &["-u", "prometheus:right"]].concat();
    for _ in 0..3 {
        let got = curl(&right, &url);
        assert_eq!(got.code, 200, "{got:?}");
        assert!(
            got.body
                .contains("# TYPE exfilmon_http_basic_auth_total counter")
        );
        assert!(
            got.headers.contains("x-content-type-options: nosniff"),
            "{}",
            got.headers
        );
    }
    // curl writes the head of a HEAD where the body would go: that is all there is.
    let head = curl(&[&right[..], &["--head"]].concat(), &url);
    assert_eq!(head.code, 200, "HEAD: {head:?}");
    assert_eq!(head.body, head.headers, "HEAD: no body");

    let auth = |r: &str| server.metrics.basic_auth.with_label_values(&[r]).get();
    let code = |c: &str| server.metrics.requests.with_label_values(&[c]).get();
    assert_eq!(
        (auth("verified"), auth("cached"), auth("refused")),
        (1, 3, 5)
    );
    assert_eq!((code("200"), code("401")), (4, 5));
    println!(
        "basic auth: {} requests refused with 401 and a challenge (no credentials, a wrong password, another user's password, an unknown user, a bearer token); 4 with the password answered 200 (bcrypt ran {} time, {} remembered)",
        code("401"),
        auth("verified"),
        auth("cached")
    );
}

#[test]
fn only_get_and_head_are_answered_with_and_without_tls_and_auth() {
    let pki = Pki::new().expect("pki");
    let text = format!("{TLS}basic_auth_users:\n  prometheus: {}\n", hash("right"));
    let secured = WebServer::start(&settings(
        Some(pki.web_config("web.yml", &text).expect("web config")),
        8,
        2 * SECOND,
    ))
    .expect("server");
    let plain = WebServer::start(&settings(None, 8, 2 * SECOND)).expect("server");
    let ca = ca(&pki);
    let ways: [(&str, &WebServer, bool, Vec<&str>); 3] = [
        ("plain HTTP", &plain, false, vec![]),
        (
            "TLS and the password",
            &secured,
            true,
            vec!["--cacert", &ca, "-u", "prometheus:right"],
        ),
        ("TLS, no credentials", &secured, true, vec!["--cacert", &ca]),
    ];
    let methods = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"];
    let mut refused = 0;
    for (way, server, tls, args) in &ways {
        for path in ["/metrics", "/", "/nowhere"] {
            for m in methods {
                let got = curl(&[&args[..], &["-X", m]].concat(), &server.url(*tls, path));
                assert_eq!(got.code, 405, "{way} {m} {path}: {got:?}");
                assert!(got.headers.contains("allow: GET, HEAD"), "{}", got.headers);
                refused += 1;
            }
        }
    }
    // A GET that carries a body, and the routes themselves.
    for (way, server, tls, args) in &ways[..2] {
        let url = server.url(*tls, "/metrics");
        let body = curl(
            &[&args[..], &["--data-binary", "x", "-X", "GET"]].concat(),
            &url,
        );
        assert_eq!(body.code, 413, "{way}: {body:?}");
        assert_eq!(curl(args, &url).code, 200, "{way}");
        assert_eq!(
            curl(&[&args[..], &["-I"]].concat(), &url).code,
            200,
            "{way}"
        );
        assert_eq!(curl(args, &server.url(*tls, "/")).code, 200, "{way}");
        assert_eq!(curl(args, &server.url(*tls, "/nowhere")).code, 404, "{way}");
    }
    // Headers past 16 KiB: hyper answers 431 itself.
    let big = format!("X-Big: {}", "a".repeat(20 << 10));
    let too_big = curl(&["-H", &big], &plain.url(false, "/metrics"));
    assert_eq!(too_big.code, 431, "{too_big:?}");
    let code = |s: &WebServer, c: &str| s.metrics.requests.with_label_values(&[c]).get();
    assert_eq!(code(&plain, "405") + code(&secured, "405"), refused);
    println!(
        "methods: {refused} requests with {} refused with 405 (3 paths, plain HTTP, TLS with and without the password); GET and HEAD 200, a GET with a body 413, an unknown path 404, 20 KiB of headers 431",
        methods.join("/")
    );
}

#[test]
fn client_certificates_are_verified_and_required_when_configured() {
    let pki = Pki::new().expect("pki");
    let ca = ca(&pki);
    let client = [
        "--cert",
        &pki.path("client.crt").display().to_string(),
        "--key",
        &pki.path("client.key").display().to_string(),
    ]
    .map(str::to_owned);
    let rogue = [
        "--cert",
        &pki.path("rogue.crt").display().to_string(),
        "--key",
        &pki.path("rogue.key").display().to_string(),
    ]
    .map(str::to_owned);
    let mut lines = Vec::new();
    for (auth_type, without) in [
        ("RequireAndVerifyClientCert", false),
        ("VerifyClientCertIfGiven", true),
    ] {
        let text = format!("{TLS}  client_auth_type: {auth_type}\n  client_ca_file: ca.crt\n");
        let web = pki.web_config("web.yml", &text).expect("web config");
        let server = WebServer::start(&settings(Some(web), 8, 2 * SECOND)).expect("server");
        let url = server.url(true, "/metrics");
        let run = |extra: &[String]| {
            let mut args = vec!["--cacert".to_owned(), ca.clone()];
            args.extend_from_slice(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&args, &url)
        };
        let none = run(&[]);
        let bad = run(&rogue);
        let good = run(&client);
        assert_eq!(
            good.code, 200,
            "{auth_type}, the CA's client certificate: {good:?}"
        );
        assert!(good.body.contains("exfilmon_http_open_connections"));
        assert_eq!(
            bad.code, 0,
            "{auth_type}, another CA's certificate: {bad:?}"
        );
        assert_ne!(bad.exit, 0);
        if without {
            assert_eq!(none.code, 200, "{auth_type}, no certificate: {none:?}");
        } else {
            assert_eq!(none.code, 0, "{auth_type}, no certificate: {none:?}");
            assert_ne!(none.exit, 0);
        }
        let failed = server.connections("handshake_failed");
        assert_eq!(failed, if without { 1 } else { 2 }, "{auth_type}");
        lines.push(format!(
            "{auth_type}: none {}, another CA's {}, the CA's 200 (handshake_failed {failed})",
            if without { "200" } else { "refused" },
            "refused"
        ));
    }
    println!("client certificates: {}", lines.join("; "));
}

#[test]
fn connections_past_the_limit_are_closed_at_once() {
    const LIMIT: usize = 3;
    const EXTRA: usize = 2;
    let pki = Pki::new().expect("pki");
    let web = pki.web_config("web.yml", TLS).expect("web config");
    let server = WebServer::start(&settings(Some(web), LIMIT, 5 * SECOND)).expect("server");
    let open = || server.metrics.open.get();
    let wait_for = |want: i64| {
        let deadline = Instant::now() + 3 * SECOND;
        while open() != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        open()
    };

    // Clients that connect and say nothing hold their slots (until the header timeout).
    let held: Vec<TcpStream> = (0..LIMIT)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    assert_eq!(
        wait_for(i64::try_from(LIMIT).expect("small")),
        i64::try_from(LIMIT).expect("small"),
        "the held connections are open"
    );

    let mut closed_after = Vec::new();
    for _ in 0..EXTRA {
        let mut extra = TcpStream::connect(server.addr).expect("the kernel accepts it");
        extra.set_read_timeout(Some(2 * SECOND)).expect("timeout");
        let start = Instant::now();
        let mut buf = [0; 16];
        match extra.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a connection past the limit must be closed, got {other:?}"),
        }
        closed_after.push(start.elapsed());
    }
    let slowest = closed_after.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < SECOND,
        "closed at once, not after a timeout: {closed_after:?}"
    );
    assert_eq!(server.connections("over_limit"), EXTRA as u64);
    assert_eq!(
        open(),
        i64::try_from(LIMIT).expect("small"),
        "the held ones stay open"
    );

    drop(held);
    assert_eq!(wait_for(0), 0, "their slots are free again");
    let after = curl(&["--cacert", &ca(&pki)], &server.url(true, "/metrics"));
    assert_eq!(after.code, 200, "{after:?}");
    println!(
        "max_connections {LIMIT}: {LIMIT} silent clients held open, {EXTRA} more closed at once (slowest in {slowest:?}, over_limit = {}); once the {LIMIT} left, a scrape got 200",
        server.connections("over_limit")
    );
}

/// Reads from `stream` until it is closed (EOF or an error), sending one byte of `trickle`
/// every 200 ms while it stays open; at most `limit`. Returns how long the stream stayed
/// open and what was read.
fn until_closed(
    stream: &mut (impl std::io::Read + std::io::Write),
    trickle: &[u8],
    limit: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut next = 0;
    while start.elapsed() < limit {
        if next < trickle.len() {
            if stream
                .write_all(&trickle[next..=next])
                .and_then(|()| stream.flush())
                .is_err()
            {
                return Some((start.elapsed(), got));
            }
            next += 1;
        }
        let mut buf = [0; 512];
        match stream.read(&mut buf) {
            Ok(0) => return Some((start.elapsed(), got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some((start.elapsed(), got)),
        }
    }
    None
}

#[test]
fn slow_clients_lose_their_connection_after_the_header_timeout() {
    let timeout = SECOND;
    let limit = 5 * SECOND;
    let pki = Pki::new().expect("pki");
    let web = pki.web_config("web.yml", TLS).expect("web config");
    let tls = WebServer::start(&settings(Some(web), 8, timeout)).expect("server");
    let plain = WebServer::start(&settings(None, 8, timeout)).expect("server");
    let slow_request =
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let poll = Duration::from_millis(200);
    let mut results = Vec::new();

    // A client that connects and never starts the TLS handshake.
    let mut silent = TcpStream::connect(tls.addr).expect("connect");
    silent.set_read_timeout(Some(poll)).expect("timeout");
    let (t, _) = until_closed(&mut silent, b"", limit).expect("closed within 5 s");
    results.push(("silent before the TLS handshake", t));
    // Counted just after the close the client saw.
    let deadline = Instant::now() + SECOND;
    while tls.connections("handshake_timeout") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(tls.connections("handshake_timeout"), 1);

    // Headers a byte every 200 ms, after a TLS handshake and in plain HTTP.
    let mut over_tls = tls_client(&pki, tls.addr).expect("handshake");
    over_tls.sock.set_read_timeout(Some(poll)).expect("timeout");
    let (t, got) = until_closed(&mut over_tls, slow_request, limit).expect("closed within 5 s");
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "no answer to a slow request"
    );
    results.push(("slow headers over TLS", t));
    let mut over_plain = TcpStream::connect(plain.addr).expect("connect");
    over_plain.set_read_timeout(Some(poll)).expect("timeout");
    let (t, got) = until_closed(&mut over_plain, slow_request, limit).expect("closed within 5 s");
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "no answer to a slow request"
    );
    results.push(("slow headers in plain HTTP", t));

    // A keep-alive connection left idle after a request.
    let mut idle = tls_client(&pki, tls.addr).expect("handshake");
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("request");
    idle.sock.set_read_timeout(Some(poll)).expect("timeout");
    let (t, got) = until_closed(&mut idle, b"", limit).expect("closed within 5 s");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"),
        "answered first"
    );
    results.push(("idle keep-alive after a request", t));

    for (what, t) in &results {
        assert!(
            *t >= timeout.mul_f64(0.8) && *t <= timeout * 3,
            "{what}: closed after {t:?}, the header timeout is {timeout:?}"
        );
    }
    println!(
        "header_timeout {timeout:?}: {}",
        results
            .iter()
            .map(|(what, t)| format!("{what} closed after {:.2} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Polls `check` every 100 ms until it holds, for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An exfilmon config beside the PKI: no interface, the lab's GeoIP data, /metrics on
/// 127.0.0.1:`port` with `web.yml`, pins in a test pin directory (not the default one an
/// installed exfilmon uses).
fn daemon_config(pki: &Pki, port: u16) -> std::path::PathBuf {
    let config = pki.path("exfilmon.toml");
    std::fs::write(
        &config,
        format!(
            "[home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"IN\"]\n\
             [geoip]\nsources = [{{ format = \"csv\", path = \"{}\" }}]\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\nweb_config = \"web.yml\"\n\
             header_timeout_secs = 2\n\
             [detections]\nstate_dir = \"state\"\n\
             [pin]\ndir = \"{}\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/lab/geoip.csv"),
            exfilmon_tests::daemon::test_pin_dir().display(),
        ),
    )
    .expect("write config");
    config
}

#[test]
#[ignore = "needs root: the daemon loads its eBPF programs"]
fn the_daemon_serves_https_with_client_certificates_and_basic_auth_and_a_reload_swaps_them() {
    require_root(
        "the_daemon_serves_https_with_client_certificates_and_basic_auth_and_a_reload_swaps_them",
    );
    let pki = Pki::new().expect("pki");
    let web_yml = |password: &str| {
        format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
             basic_auth_users:\n  prometheus: {}\n",
            hash(password)
        )
    };
    std::fs::write(pki.path("web.yml"), web_yml("first")).expect("write web.yml");
    let port = free_port().expect("port");
    let config = daemon_config(&pki, port);
    // Read now: the test breaks web.yml later, and with it the config.
    let pins = exfilmon_tests::daemon::pin_dir_of(&config)
        .expect("config")
        .expect("the daemon pins");
    let stderr = pki.path("exfilmon.stderr");
    let mut child = Command::new(exfilmon_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("EXFILMON_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("exfilmon starts");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();

    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca = ca(&pki);
    let cert = pki.path("client.crt").display().to_string();
    let key = pki.path("client.key").display().to_string();
    let scrape = |user: &str| {
        curl(
            &["--cacert", &ca, "--cert", &cert, "--key", &key, "-u", user],
            &url,
        )
    };
    let started = eventually(30 * SECOND, || {
        scrape("prometheus:first").code == 200 || child.try_wait().ok().flatten().is_some()
    });
    let first = scrape("prometheus:first");
    assert!(
        started && first.code == 200,
        "exfilmon did not serve: {first:?}\n{}",
        log()
    );
    assert!(first.body.contains("exfilmon_build_info"), "{}", first.body);
    assert!(log().contains("tls=true basic_auth=true"), "{}", log());
    assert_eq!(scrape("prometheus:wrong").code, 401);
    let no_cert = curl(&["--cacert", &ca, "-u", "prometheus:first"], &url);
    assert_eq!(no_cert.code, 0, "no client certificate: {no_cert:?}");
    let plain = curl(&[], &format!("http://127.0.0.1:{port}/metrics"));
    assert_ne!(plain.code, 200, "{plain:?}");

    // A new password: SIGHUP applies it to new connections.
    std::fs::write(pki.path("web.yml"), web_yml("second")).expect("write web.yml");
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    assert!(
        eventually(10 * SECOND, || scrape("prometheus:second").code == 200),
        "the new password was not applied:\n{}",
        log()
    );
    assert_eq!(
        scrape("prometheus:first").code,
        401,
        "the old password is gone"
    );

    // A bad web config is refused whole: the running one stays.
    std::fs::write(pki.path("web.yml"), format!("{TLS}  min_version: TLS11\n")).expect("write");
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    let refused = eventually(10 * SECOND, || {
        scrape("prometheus:second")
            .body
            .contains("exfilmon_config_last_reload_successful 0")
    });
    assert!(refused, "the bad web config was not refused:\n{}", log());
    assert!(
        log().contains("web.yml:4: tls_server_config.min_version: \"TLS11\" is not supported"),
        "the log names the file, line and key:\n{}",
        log()
    );
    assert_eq!(
        scrape("prometheus:second").code,
        200,
        "the running config stays"
    );

    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let status = wait_or_kill(&mut child, 10 * SECOND)
        .expect("wait")
        .expect("exfilmon exits on SIGTERM");
    monitor::pins::cleanup(&pins).expect("removing the daemon's pins");
    assert!(status.success(), "{status}\n{}", log());
    println!(
        "daemon: HTTPS with a client certificate and the password 200, a wrong password 401, no client certificate and plain HTTP refused; SIGHUP swapped the password (old 401, new 200) and refused a web config with TLS11 (reload_successful 0, the running one kept); SIGTERM exit 0"
    );
}
