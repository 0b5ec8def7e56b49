//! tcpdump captures inside a namespace.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::netns::NetNs;

/// How long [`Capture::start`] waits for tcpdump's "listening on".
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Capture::stop`] waits for tcpdump to exit after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// tcpdump's closing counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// "N packets captured".
    pub captured: u64,
    /// "N packets received by filter".
    pub received_by_filter: u64,
    /// "N packets dropped by kernel".
    pub dropped: u64,
}

/// A running `tcpdump -i IFACE -w PATH -U -n` inside a namespace. Killed (by
/// PID) on drop if [`stop`](Self::stop) was not called.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    lines: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing every packet on `iface` in `ns` into the pcap file `path`.
    pub fn start(ns: &NetNs, iface: &str, path: impl AsRef<Path>) -> Result<Self> {
        Self::start_filtered(ns, iface, path, None)
    }

    /// Like [`start`](Self::start) with an optional pcap filter expression.
    pub fn start_filtered(
        ns: &NetNs,
        iface: &str,
        path: impl AsRef<Path>,
        filter: Option<&str>,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut cmd = ns.command("tcpdump");
        // --immediate-mode: without it libpcap (TPACKET_V3) hands packets over
        // in blocks retired every second, and the ones still in the ring at
        // SIGINT are neither written nor counted as captured.
        // -Z root: Debian's tcpdump otherwise drops to user "tcpdump", which
        // cannot write into a root-owned 0700 temp directory.
        cmd.args(["-i", iface, "-w"]).arg(&path).args([
            "-U",
            "-n",
            "-Z",
            "root",
            "--immediate-mode",
        ]);
        if let Some(f) = filter {
            cmd.arg(f);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tcpdump")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("tcpdump-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })?;
        let cap = Self {
            child: Some(child),
            path,
            lines: rx,
            reader: Some(reader),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match cap.lines.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    // Drop kills it.
                    bail!(
                        "tcpdump on {iface} in {} did not start: {}",
                        ns.name(),
                        seen.join(" | ")
                    );
                }
            }
        }
        Ok(cap)
    }

    /// The pcap file being written.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops tcpdump with SIGINT (after a 200 ms settle, so packets that just
    /// crossed the interface get written) and returns its closing counts. The
    /// pcap file is complete when this returns.
    pub fn stop(mut self) -> Result<CaptureStats> {
        let mut child = self.child.take().context("capture already stopped")?;
        std::thread::sleep(Duration::from_millis(200));
        let pid = Pid::from_raw(child.id().cast_signed());
        kill(pid, Signal::SIGINT).context("SIGINT to tcpdump")?;
        let Some(status) = crate::wait_or_kill(&mut child, STOP_TIMEOUT)? else {
            bail!("tcpdump did not exit within {STOP_TIMEOUT:?} of SIGINT");
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let text: Vec<String> = self.lines.try_iter().collect();
        parse_stats(&text).with_context(|| format!("tcpdump exited {status}: {}", text.join(" | ")))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn parse_stats(lines: &[String]) -> Result<CaptureStats> {
    let find = |what: &str| -> Option<u64> {
        lines
            .iter()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
    };
    Ok(CaptureStats {
        // tcpdump writes "1 packet captured" but "2 packets captured".
        captured: find(" captured").context("no 'packets captured' line")?,
        received_by_filter: find(" received by filter").unwrap_or(0),
        dropped: find(" dropped by kernel").context("no 'packets dropped by kernel' line")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_lines() {
        let lines: Vec<String> = [
            "tcpdump: listening on inside, link-type EN10MB (Ethernet), snapshot length 262144 bytes",
            "23 packets captured",
            "24 packets received by filter",
            "1 packet dropped by kernel",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let s = parse_stats(&lines).unwrap();
        assert_eq!(
            s,
            CaptureStats {
                captured: 23,
                received_by_filter: 24,
                dropped: 1
            }
        );
    }
}
