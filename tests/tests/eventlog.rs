//! The event log as a SIEM gets it: the real daemon, with `[events] hash_chain = true` and
//! a small `max_bytes`, rotates its log while the lab's violation traffic flows; the
//! `exfilmon verify-log` binary accepts the rotated files and the live one as one chain,
//! and names the line a tampered copy changed.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use exfilmon_tests::{
    Lab, Node,
    daemon::{Daemon, free_port, write_lab_config},
    exfilmon_bin,
    lab::{PHONE_V4, SERVER_CN_V4},
    require_root, udp_burst,
};

/// Violation flows the phone opens: one UDP burst each, to its own port on the CN server.
const FLOWS: u16 = 40;

/// `[events] keep` in the test: more than the files it makes.
const KEEP: u32 = 100;

fn verify_log(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(exfilmon_bin())
        .arg("verify-log")
        .args(args)
        .output()
        .expect("exfilmon verify-log runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The live log's rotated files (`FILE.1`, `FILE.2`, … while they exist), oldest first,
/// then it.
fn log_files(live: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=KEEP)
        .map(|n| monitor::events::rotated(live, n))
        .take_while(|f| f.exists())
        .collect();
    files.reverse();
    files.push(live.to_owned());
    files
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn the_daemon_rotates_a_hash_chained_log_that_verify_log_accepts_and_a_tampered_copy_fails() {
    require_root(
        "the_daemon_rotates_a_hash_chained_log_that_verify_log_accepts_and_a_tampered_copy_fails",
    );
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let config = write_lab_config(&lab, dir.path(), port).expect("config");
    let lab_text = std::fs::read_to_string(&config).expect("read config");
    let text_with_chain = lab_text.replace(
        "[events]\n",
        &format!("[events]\nmax_bytes = 4096\nkeep = {KEEP}\nhash_chain = true\n"),
    );
    assert_ne!(text_with_chain, lab_text, "the lab config has [events]");
    std::fs::write(&config, text_with_chain).expect("write config");
    let live = dir.path().join("events.jsonl");

    // The daemon's own directory holds only its stderr: the log outlives it, in `dir`.
    let daemon = Daemon::start_with(
        config,
        SocketAddr::from(([127, 0, 0, 1], port)),
        tempfile::tempdir().expect("tempdir"),
    )
    .expect("daemon");
    for p in 0..FLOWS {
        let dst = SocketAddr::new(SERVER_CN_V4.into(), 9200 + p);
        udp_burst(lab.ns(Node::Phone), Some(PHONE_V4.into()), dst, 3, 100).expect("burst");
    }
    daemon
        .wait_for("a flow start per flow", Duration::from_secs(20), |m| {
            m.sum("exfilmon_flow_events_total", &[("kind", "flow_start")]) >= f64::from(FLOWS)
        })
        .expect("flows seen");
    let m = daemon.scrape().expect("scrape");
    assert!(
        m.sum("exfilmon_event_errors_total", &[("reason", "log_write")]) == 0.0,
        "no event log error:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let stderr = daemon.log();
    assert!(
        stderr.contains("event log rotated"),
        "the daemon logs each rotation:\n{stderr}"
    );
    let (status, _) = daemon.stop_with_event_log().expect("stop");
    assert!(status.success(), "exfilmon exited with {status}");

    // The rotated files and the live one: every line of every flow, one chain.
    let files = log_files(&live);
    assert!(
        files.len() >= 4,
        "40 flows in 4 KiB files rotate: {files:?}"
    );
    let lines: Vec<String> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .expect("read")
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let starts = lines
        .iter()
        .filter(|l| l.contains("\"event\":\"flow_start\""))
        .count();
    assert!(starts >= usize::from(FLOWS), "{starts} flow starts");
    let ok = verify_log(&["--with-rotated".as_ref(), live.as_os_str()]);
    let said = text(&ok);
    assert!(ok.status.success(), "verify-log --with-rotated: {said}");
    assert!(
        said.starts_with(&format!(
            "ok: {} files, {} lines, seq 1 to {}, hash chain on every line;",
            files.len(),
            lines.len(),
            lines.len()
        )),
        "{said}"
    );
    let listed: Vec<&std::ffi::OsStr> = files.iter().map(|f| f.as_os_str()).collect();
    let ok = verify_log(&listed);
    assert!(ok.status.success(), "verify-log FILE...: {}", text(&ok));
    println!("{}", text(&ok).trim());

    tampered_copy_fails(&files);
}

/// A copy of `files` with one byte changed in the first line of the second-oldest file:
/// verify-log exits 1 and names it, at the line after it.
fn tampered_copy_fails(files: &[PathBuf]) {
    let copy_dir = tempfile::tempdir().expect("tempdir");
    let copied: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let to = copy_dir.path().join(f.file_name().expect("name"));
            std::fs::copy(f, &to).expect("copy");
            to
        })
        .collect();
    let target = &copied[1];
    let original = std::fs::read_to_string(target).expect("read");
    // The first flow line to the CN server; another line must follow it in the file.
    let line = original
        .lines()
        .position(|l| l.contains("\"dst\":\"203.0.113.10\""))
        .expect("a flow line to the CN server")
        + 1;
    assert!(original.lines().count() > line, "{original}");
    let tampered = original.replacen("\"dst\":\"203.0.113.10\"", "\"dst\":\"203.0.113.11\"", 1);
    assert_eq!(tampered.len(), original.len(), "one byte changed");
    std::fs::write(target, tampered).expect("tamper");
    let listed: Vec<&std::ffi::OsStr> = copied.iter().map(|f| f.as_os_str()).collect();
    let bad = verify_log(&listed);
    let said = text(&bad);
    assert_eq!(bad.status.code(), Some(1), "verify-log must fail: {said}");
    let want = format!(
        "{}:{}: prev does not match the hash of line {line}: line {line} was changed, or a line was removed or inserted",
        target.display(),
        line + 1,
    );
    assert!(said.contains(&want), "want {want:?} in: {said}");
    println!("tampered copy: {}", said.trim());
}
