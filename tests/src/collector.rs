//! A real IPFIX collector for the export tests: pmacct's `nfacctd` (Debian package
//! `pmacct`) on 127.0.0.1, decoding exfilmon's enterprise elements as custom primitives and
//! writing what it decodes as JSON lines with its print plugin.
//!
//! The print plugin (not the in-memory table) because only it takes variable-length
//! primitives such as the group name. It appends its cache to one file, so the sum over
//! every line is what the collector decoded; [`Nfacctd::finish`] has it write everything.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How long nfacctd may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long it may take to write its cache and exit after SIGINT before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// exfilmon's enterprise elements as nfacctd primitives, under the documentation PEN
/// (`monitor::ipfix::ELEMENTS`).
const PRIMITIVES: &str = "\
name=exf_country\tfield_type=32473:1\tlen=vlen\tsemantics=str
name=exf_group\tfield_type=32473:2\tlen=vlen\tsemantics=str
name=exf_verdict\tfield_type=32473:3\tlen=1\tsemantics=u_int
";

/// A running nfacctd.
pub struct Nfacctd {
    child: Option<Child>,
    addr: SocketAddr,
    output: PathBuf,
    log: PathBuf,
}

impl Nfacctd {
    /// Starts nfacctd on a free UDP port of 127.0.0.1 with its files under `dir`, and waits
    /// until it listens.
    pub fn start(dir: &Path) -> Result<Self> {
        let dir = dir.join("nfacctd");
        fs::create_dir_all(&dir)?;
        // Free when asked; nfacctd binds it right after.
        let addr = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let primitives = dir.join("primitives.lst");
        fs::write(&primitives, PRIMITIVES)?;
        let output = dir.join("flows.json");
        let conf = dir.join("nfacctd.conf");
        fs::write(
            &conf,
            format!(
                "daemonize: false\n\
                 nfacctd_ip: {ip}\n\
                 nfacctd_port: {port}\n\
                 ! AS numbers as the exporter sends them, not from a BGP feed\n\
                 nfacctd_as: netflow\n\
                 aggregate_primitives: {primitives}\n\
                 aggregate: src_host, dst_host, src_port, dst_port, proto, src_as, dst_as, \
                 timestamp_start, timestamp_end, exf_country, exf_group, exf_verdict\n\
                 plugins: print\n\
                 print_output: json\n\
                 print_output_file: {output}\n\
                 print_output_file_append: true\n\
                 print_refresh_time: 1\n\
                 timestamps_utc: true\n",
                ip = addr.ip(),
                port = addr.port(),
                primitives = primitives.display(),
                output = output.display(),
            ),
        )?;
        let log = dir.join("stderr.log");
        let child = Command::new("nfacctd")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout.log"))?)
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting nfacctd (Debian package pmacct)")?;
        let mut me = Self {
            child: Some(child),
            addr,
            output,
            log,
        };
        let mut child = me.child.take();
        let started = crate::wait_started(
            &mut child,
            "nfacctd",
            "listen",
            START_TIMEOUT,
            || me.log_text().contains("waiting for NetFlow/IPFIX data"),
            || me.log_text(),
        );
        // Back before any error returns, so that dropping `me` stops it.
        me.child = child;
        started?;
        Ok(me)
    }

    /// The UDP address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// nfacctd's stderr and stdout so far (it logs to both).
    #[must_use]
    pub fn log_text(&self) -> String {
        let stdout = self.log.with_file_name("stdout.log");
        fs::read_to_string(&self.log).unwrap_or_default()
            + &fs::read_to_string(stdout).unwrap_or_default()
    }

    /// Every record it has written so far.
    pub fn records(&self) -> Result<Vec<serde_json::Value>> {
        let Ok(text) = fs::read_to_string(&self.output) else {
            return Ok(Vec::new());
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("nfacctd wrote {l:?}")))
            .collect()
    }

    /// Stops nfacctd gracefully (SIGINT: its plugin writes its whole cache before it
    /// exits; the periodic writes can hold a record back until more data comes) and
    /// returns every record it wrote.
    pub fn finish(mut self) -> Result<Vec<serde_json::Value>> {
        self.terminate()?;
        self.records()
    }

    fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = i32::try_from(child.id())?;
        // Its print plugin is a process of its own.
        let plugins = crate::cpu::descendants(pid);
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        if crate::wait_or_kill(&mut child, STOP_TIMEOUT)?.is_none() {
            bail!(
                "nfacctd did not exit within {STOP_TIMEOUT:?} of SIGINT: {}",
                self.log_text()
            );
        }
        for p in plugins {
            // Gathered before the core exited; a PID reused since is not nfacctd's.
            if fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with("nfacctd"))
            {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        Ok(())
    }
}

impl Drop for Nfacctd {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
