//! The flow meters an operator might pick instead of exfilmon — softflowd and pmacctd
//! (Debian packages `softflowd`, `pmacct`) — run inside a namespace on an interface the
//! caller created, with their flow totals read back.
//!
//! Totals come from each peer's own in-memory table, not from an export: softflowd's
//! `softflowctl dump-flows` (every active flow with its octets and packets; flows never
//! expire during a run: timeouts are minutes and `-m` holds every flow), pmacctd's memory
//! plugin queried with `pmacct -s -O json`. An export (NetFlow to a collector, the print
//! plugin's files) would add a second program, a UDP hop that may drop, and timers to wait
//! for; the tables are exact at any moment.
//!
//! Both read packets with libpcap, which on Linux uses a `TPACKET_V3` ring whose blocks the
//! reader only sees once they are full: softflowd 1.1.0 does not ask for immediate mode,
//! so the tail of a run (up to a block, ~1,700 small packets here) stays unread until more
//! traffic comes. Callers therefore follow their traffic with *flush* packets of a flow of
//! their own ([`FLUSH_SRC`]…), until the peer counts at least one of them: both peers handle
//! packets in order, so by then they have counted everything before. Flush packets are left
//! out of every total.
//!
//! Each peer is ended by PID (SIGTERM, then SIGKILL for it and its children after a
//! timeout), also on drop.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde::Serialize;

use crate::{cpu, netns::NetNs};

/// Source of the flush flow: the last host of the inside documentation /24.
pub const FLUSH_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// Destination of the flush flow.
pub const FLUSH_DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
/// Both ports of the flush flow (discard).
pub const FLUSH_PORT: u16 = 9;

/// How long a peer may take to open its capture and control socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long it may take to exit after SIGTERM before it (and its children) are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Which peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    Softflowd,
    Pmacctd,
}

impl PeerKind {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Softflowd => "softflowd",
            PeerKind::Pmacctd => "pmacctd",
        }
    }
}

/// A peer's flow totals, flush flow excluded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerTotals {
    /// Packets of every flow but the flush flow.
    pub packets: u64,
    /// Their bytes as the peer counts them (both count IP total length: layer 3).
    pub bytes: u64,
    /// Flows (table entries) but the flush flow.
    pub flows: u64,
    /// Packets of the flush flow.
    pub flush_packets: u64,
}

/// A running peer.
pub struct Peer {
    kind: PeerKind,
    child: Option<Child>,
    dir: PathBuf,
    /// Its control socket: softflowd's `-c`, pmacctd's memory-plugin pipe.
    control: PathBuf,
    log: PathBuf,
}

impl Peer {
    /// Starts `kind` in `ns` on `iface`, with its files under `dir`, and waits until it has
    /// opened its packet socket and its control socket answers. `cpus` is a `taskset`
    /// list (e.g. `"0-1"`): the peer's CPU affinity, whatever the caller's is.
    pub fn start(kind: PeerKind, ns: &NetNs, iface: &str, dir: &Path, cpus: &str) -> Result<Self> {
        let dir = dir.join(kind.name());
        fs::create_dir_all(&dir)?;
        let log = dir.join("stderr.log");
        let mut cmd = ns.command("taskset");
        cmd.args(["-a", "-c", cpus]);
        let control = match kind {
            PeerKind::Softflowd => {
                let control = dir.join("softflowd.ctl");
                cmd.arg("softflowd")
                    .args(["-i", iface, "-d"])
                    .arg("-c")
                    .arg(&control)
                    .arg("-p")
                    .arg(dir.join("softflowd.pid"))
                    // Room for every flow: none is expired (and so lost to the table)
                    // because the table is full.
                    .args(["-m", "2000000"]);
                control
            }
            PeerKind::Pmacctd => {
                let control = dir.join("pmacct.pipe");
                let conf = dir.join("pmacctd.conf");
                fs::write(
                    &conf,
                    format!(
                        "daemonize: false\n\
                         pcap_interface: {iface}\n\
                         aggregate: src_host, dst_host, src_port, dst_port, proto\n\
                         plugins: memory\n\
                         imt_path: {}\n\
                         ! 0: the memory table grows as needed (the default, 16 pools of\n\
                         ! 8 KiB, holds about a thousand flows)\n\
                         imt_mem_pools_number: 0\n\
                         imt_buckets: 65537\n\
                         ! Batch the core-to-plugin transfers, as CONFIG-KEYS advises for heavy\n\
                         ! traffic (unbatched, every packet is a transfer of its own).\n\
                         plugin_pipe_size: 10240000\n\
                         plugin_buffer_size: 10240\n",
                        control.display()
                    ),
                )?;
                cmd.arg("pmacctd").arg("-f").arg(&conf);
                control
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout.log"))?)
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {} in netns {}", kind.name(), ns.name()))?;
        let mut peer = Self {
            kind,
            child: Some(child),
            dir,
            control,
            log,
        };
        peer.wait_ready()?;
        Ok(peer)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "{} exited with {status} while starting: {}",
                    self.kind.name(),
                    self.log_text()
                );
            }
            if self.control.exists() && self.has_packet_socket() && self.totals().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not open its capture and {} within {START_TIMEOUT:?}: {}",
                    self.kind.name(),
                    self.control.display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the peer's process holds an `AF_PACKET` socket (its capture is open).
    fn has_packet_socket(&self) -> bool {
        let pid = self.pid();
        let Ok(table) = fs::read_to_string(format!("/proc/{pid}/net/packet")) else {
            return false;
        };
        // sk RefCnt Type Proto Iface R Rmem User Inode
        let inodes: Vec<String> = table
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(8).map(str::to_owned))
            .collect();
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| {
                let t = target.to_string_lossy();
                inodes.iter().any(|i| {
                    t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) == Some(i)
                })
            })
        })
    }

    /// Which peer this is.
    #[must_use]
    pub fn kind(&self) -> PeerKind {
        self.kind
    }

    /// The peer's PID (`ip netns exec` and `taskset` exec into it, so it is the child's).
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map_or(0, |c| i32::try_from(c.id()).unwrap_or(0))
    }

    /// CPU time of the peer and of the processes it forked (pmacctd's plugin).
    pub fn cpu(&self) -> Result<Duration> {
        cpu::process_tree(self.pid())
            .with_context(|| format!("reading the CPU time of {}", self.kind.name()))
    }

    /// The peer's stderr so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The peer's totals now.
    pub fn totals(&self) -> Result<PeerTotals> {
        match self.kind {
            PeerKind::Softflowd => {
                let out = control_output(
                    Command::new("softflowctl")
                        .arg("-c")
                        .arg(&self.control)
                        .arg("dump-flows"),
                )?;
                parse_softflowd(&out)
            }
            PeerKind::Pmacctd => {
                let out = control_output(
                    Command::new("pmacct")
                        .arg("-p")
                        .arg(&self.control)
                        .args(["-s", "-O", "json"]),
                )?;
                parse_pmacct(&out)
            }
        }
    }

    /// Whether the peer has counted a packet of the flush flow, after `measured` packets
    /// of other flows: then it has counted every one of those. Cheap enough to poll, so
    /// that polling does not add to the peer's CPU time: a counter for softflowd (its
    /// `statistics` count every packet processed; the wire is quiet, so more than
    /// `measured` means flush packets; [`PeerTotals::flush_packets`] confirms it
    /// afterwards), one exact-key lookup for pmacctd (`pmacct -N`).
    pub fn flush_seen(&self, measured: u64) -> Result<bool> {
        match self.kind {
            PeerKind::Softflowd => {
                let out = control_output(
                    Command::new("softflowctl")
                        .arg("-c")
                        .arg(&self.control)
                        .arg("statistics"),
                )?;
                let processed: u64 = out
                    .lines()
                    .find_map(|l| l.strip_prefix("Packets processed:"))
                    .with_context(|| format!("softflowctl statistics: no packet count in {out:?}"))?
                    .trim()
                    .parse()
                    .context("softflowctl statistics: bad packet count")?;
                Ok(processed > measured)
            }
            PeerKind::Pmacctd => {
                let key = format!("{FLUSH_SRC},{FLUSH_DST},{FLUSH_PORT},{FLUSH_PORT},udp");
                let out = control_output(
                    Command::new("pmacct")
                        .arg("-p")
                        .arg(&self.control)
                        .args(["-c", "src_host,dst_host,src_port,dst_port,proto", "-N"])
                        .arg(&key)
                        .args(["-n", "packets", "-S"]),
                )?;
                let mut n = 0u64;
                for line in out.lines().filter(|l| !l.trim().is_empty()) {
                    n += line
                        .trim()
                        .parse::<u64>()
                        .with_context(|| format!("pmacct -N {key}: unexpected answer {out:?}"))?;
                }
                Ok(n > 0)
            }
        }
    }

    /// Where the peer keeps its files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGTERM by PID; after [`STOP_TIMEOUT`], SIGKILL for it and its children.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = i32::try_from(child.id())?;
        let children = cpu::descendants(pid);
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        crate::wait_or_kill(&mut child, STOP_TIMEOUT)?;
        // pmacctd's plugins end with their core process; kill any that did not (they
        // are this process's descendants, gathered before the core exited).
        for c in children {
            if Path::new(&format!("/proc/{c}")).exists() {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
        }
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// Runs a control client to completion (never closing its output early: softflowd dies
/// of SIGPIPE when its client hangs up mid-answer); fails with its stderr.
fn control_output(cmd: &mut Command) -> Result<String> {
    crate::netns::run_checked(cmd)
}

fn is_flush(src: &str, sport: &str, dst: &str, dport: &str) -> bool {
    src == FLUSH_SRC.to_string()
        && dst == FLUSH_DST.to_string()
        && sport == FLUSH_PORT.to_string()
        && dport == FLUSH_PORT.to_string()
}

/// Sums `softflowctl dump-flows`: lines like
/// `ACTIVE seq:1 [192.0.2.1]:46510 <> [192.0.2.2]:4444 proto:17 octets>:50 packets>:1
/// octets<:0 packets<:0 ...`.
fn parse_softflowd(text: &str) -> Result<PeerTotals> {
    let mut t = PeerTotals::default();
    for line in text.lines().filter(|l| l.starts_with("ACTIVE ")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let endpoint = |s: &str| -> Option<(String, String)> {
            let (addr, port) = s.rsplit_once(':')?;
            Some((
                addr.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port.to_owned(),
            ))
        };
        let (Some((src, sport)), Some((dst, dport))) = (
            fields.get(2).and_then(|s| endpoint(s)),
            fields.get(4).and_then(|s| endpoint(s)),
        ) else {
            bail!("softflowctl dump-flows: unexpected line {line:?}");
        };
        let value = |key: &str| -> Result<u64> {
            fields
                .iter()
                .find_map(|f| f.strip_prefix(key))
                .with_context(|| format!("softflowctl dump-flows: no {key} in {line:?}"))?
                .parse()
                .with_context(|| format!("softflowctl dump-flows: bad {key} in {line:?}"))
        };
        let packets = value("packets>:")? + value("packets<:")?;
        let bytes = value("octets>:")? + value("octets<:")?;
        if is_flush(&src, &sport, &dst, &dport) || is_flush(&dst, &dport, &src, &sport) {
            t.flush_packets += packets;
        } else {
            t.packets += packets;
            t.bytes += bytes;
            t.flows += 1;
        }
    }
    Ok(t)
}

/// Sums `pmacct -s -O json`: one object per line with `ip_src`, `ip_dst`, `port_src`,
/// `port_dst`, `packets` and `bytes`.
fn parse_pmacct(text: &str) -> Result<PeerTotals> {
    let mut t = PeerTotals::default();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("pmacct -s -O json: bad line {line:?}"))?;
        let s = |k: &str| match &v[k] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let n = |k: &str| {
            v[k].as_u64()
                .with_context(|| format!("pmacct -s -O json: no {k} in {line:?}"))
        };
        if is_flush(&s("ip_src"), &s("port_src"), &s("ip_dst"), &s("port_dst")) {
            t.flush_packets += n("packets")?;
        } else {
            t.packets += n("packets")?;
            t.bytes += n("bytes")?;
            t.flows += 1;
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::{parse_pmacct, parse_softflowd};

    #[test]
    fn softflowd_dump() {
        let text = "softflowd[1]: Dumping flow data:\n\
            ACTIVE seq:1 [192.0.2.1]:46510 <> [203.0.113.2]:443 proto:17 octets>:100 packets>:2 octets<:0 packets<:0 start:x finish:y\n\
            EXPIRY EVENT for flow 1 in 252 seconds\n\n\
            ACTIVE seq:2 [192.0.2.254]:9 <> [198.51.100.254]:9 proto:17 octets>:50 packets>:1 octets<:0 packets<:0 start:x\n";
        let t = parse_softflowd(text).unwrap();
        assert_eq!(
            (t.packets, t.bytes, t.flows, t.flush_packets),
            (2, 100, 1, 1)
        );
    }

    #[test]
    fn pmacct_json() {
        let text = "{\"ip_src\": \"192.0.2.1\", \"ip_dst\": \"203.0.113.2\", \"port_src\": 36146, \"port_dst\": 443, \"ip_proto\": \"udp\", \"packets\": 3, \"bytes\": 150}\n\
            {\"ip_src\": \"192.0.2.254\", \"ip_dst\": \"198.51.100.254\", \"port_src\": 9, \"port_dst\": 9, \"ip_proto\": \"udp\", \"packets\": 4, \"bytes\": 200}\n";
        let t = parse_pmacct(text).unwrap();
        assert_eq!(
            (t.packets, t.bytes, t.flows, t.flush_packets),
            (3, 150, 1, 4)
        );
    }
}
