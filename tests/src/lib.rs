//! Network lab for exfilmon's integration tests and demo.
//!
//! Everything here runs inside network namespaces this crate creates, on
//! documentation addresses only (`192.0.2.0/24`, `198.51.100.0/24`,
//! `203.0.113.0/24`, `2001:db8::/32`). Every namespace, process and temporary file is removed on
//! `Drop`, also while unwinding from a panic.
//!
//! * [`netns`]: one named network namespace ([`NetNs`]), running commands and
//!   Rust closures inside it.
//! * [`lab`]: the home-network topology ([`Lab`]): phone and laptop behind a
//!   bridge, a router, and an "internet" namespace holding the servers.
//! * [`traffic`]: bounded traffic generators (UDP bursts, TCP exchanges, ping).
//! * [`capture`]: tcpdump captures inside a namespace.
//! * [`prometheus`]: a throw-away Prometheus server and `promtool` linting.
//! * [`livenet`], [`live`], [`peers`], [`cpu`]: the live benchmark's veth pair, its
//!   XDP live-frames generator and workloads, softflowd and pmacctd, and CPU clocks.
//! * [`seeds`]: valid inputs of every parser, the seed corpora of the fuzz targets.
//! * [`collector`]: pmacct's nfacctd as the IPFIX collector of the export test.
//! * [`web`]: the /metrics server on 127.0.0.1 with a throw-away PKI, and TLS clients.

use std::path::{Path, PathBuf};

pub mod capture;
pub mod collector;
pub mod cpu;
pub mod daemon;
pub mod lab;
pub mod live;
pub mod livenet;
pub mod netns;
pub mod packet;
pub mod peers;
pub mod pktgen;
pub mod prometheus;
pub mod scenario;
pub mod seeds;
pub mod traffic;
pub mod web;

pub use capture::{Capture, CaptureStats};
pub use lab::{Lab, Node};
pub use netns::NetNs;
pub use prometheus::{Prometheus, Sample, promtool_check_metrics};
pub use traffic::{
    ExchangeStats, PingStats, SentStats, SinkStats, UdpSink, ping, tcp_exchange, udp_burst,
    udp_sink,
};

/// Waits up to `timeout` for `child` (already signalled, or expected to exit on its own)
/// to exit. Returns its status, or `None` when it was still running at the deadline and was
/// killed (by its PID: it is this process's child) and reaped.
///
/// # Errors
/// When waiting on the child fails.
pub fn wait_or_kill(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Polls `ready` (every 50 ms) until it holds, for at most `timeout`, while `child` runs:
/// the start-up wait of every process the harness spawns. When the child exits first it
/// is reaped and taken out of `child`; that, or the time running out, is an error naming
/// `name`, the `goal` it did not reach (e.g. "serve /metrics") and `log()`.
///
/// # Errors
/// As above, or when waiting on the child fails.
pub fn wait_started(
    child: &mut Option<std::process::Child>,
    name: &str,
    goal: &str,
    timeout: std::time::Duration,
    mut ready: impl FnMut() -> bool,
    log: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(c) = child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            *child = None;
            anyhow::bail!(
                "{name} exited with {status} before it could {goal}:\n{}",
                log()
            );
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{name} did not {goal} within {timeout:?}:\n{}", log());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether this process runs with effective UID 0.
#[must_use]
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Root-only tests carry `#[ignore = "needs root ..."]`, so a plain `cargo test` reports
/// them as ignored; `make test` runs them with `--include-ignored` when it is root. Forced
/// to run without root, they fail here with a clear message rather than pass unrun.
///
/// # Panics
/// When not running as root.
pub fn require_root(test_name: &str) {
    assert!(
        is_root(),
        "{test_name} needs root (CAP_BPF, CAP_NET_ADMIN, network namespaces)"
    );
}

/// The workspace root (the parent of this crate's directory).
#[must_use]
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

/// Path of the exfilmon binary: `$EXFILMON_BIN` if set, otherwise
/// `<target>/release/exfilmon` if it exists, otherwise `<target>/debug/exfilmon`
/// if it exists, where `<target>` is `$CARGO_TARGET_DIR` (when set) or
/// `<workspace>/target`. When none exists the release path is returned, so the
/// caller's "not found" message names the usual place.
#[must_use]
pub fn exfilmon_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("EXFILMON_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let mut target_dirs = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|p| !p.is_empty()) {
        target_dirs.push(PathBuf::from(dir));
    }
    target_dirs.push(workspace_root().join("target"));
    for profile in ["release", "debug"] {
        for dir in &target_dirs {
            let candidate = dir.join(profile).join("exfilmon");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    workspace_root().join("target/release/exfilmon")
}

/// Writes `text` as `exfilmon.toml` in `dir` and loads it; panics with the config error.
///
/// # Panics
/// When the file cannot be written or the config does not load.
#[must_use]
pub fn write_config(dir: &Path, text: &str) -> monitor::config::Config {
    let path = dir.join("exfilmon.toml");
    std::fs::write(&path, text).expect("write config");
    monitor::config::Config::load(&path)
        .unwrap_or_else(|e| panic!("config: {}", monitor::error_chain(&e)))
}

/// Runs `exfilmon replay --format json --config CONFIG CAPTURES...` and returns its report.
///
/// # Panics
/// When replay cannot run, fails, or prints no JSON.
#[must_use]
pub fn replay_json(config: &Path, captures: &[&Path]) -> serde_json::Value {
    let out = std::process::Command::new(exfilmon_bin())
        .args(["replay", "--format", "json", "--config"])
        .arg(config)
        .args(captures)
        .output()
        .expect("exfilmon replay");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay JSON")
}

/// Writes a benchmark's results as pretty JSON to `path` (creating its directory) and
/// says where.
///
/// # Errors
///
/// When the directory or file cannot be written.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("results: {}", path.display());
    Ok(())
}
