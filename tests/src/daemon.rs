//! Running the real `exfilmon run` against a [`Lab`]: the lab config filled in, the
//! daemon started and stopped by PID, its /metrics scraped and parsed.

use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    exfilmon_bin,
    lab::{Lab, Node},
    workspace_root,
};

/// How long the daemon may take to load, attach and answer /metrics.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to detach after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `exfilmon run`, stopped with SIGTERM (by PID) on drop; what it pinned is
/// then removed (`exfilmon cleanup`), unless stopped with [`Daemon::stop_keeping_pins`].
pub struct Daemon {
    child: Option<Child>,
    /// The metrics listener (127.0.0.1, a free port).
    pub metrics: SocketAddr,
    /// The config file it runs with.
    pub config: PathBuf,
    /// Its JSON-lines event log.
    pub event_log: PathBuf,
    stderr: PathBuf,
    /// The network namespace (its `/run/netns` path) the daemon and its metrics live in,
    /// when not the test's own.
    netns: Option<PathBuf>,
    /// Where it pins, read from its config when it started.
    pin_dir: Option<PathBuf>,
    /// Leave the pins when dropped (stopped with `stop_keeping_pins` or `kill`).
    keep_pins: bool,
    dir: tempfile::TempDir,
}

/// Capabilities a confined daemon keeps (`Daemon::start_confined`): exactly those the
/// README and the systemd unit grant. Without CAP_PERFMON the daemon loads the program
/// set that parses a copy of each frame's head (`programs::COPY`).
pub const CONFINED_CAPS: &str = "-all,+bpf,+net_admin";

/// A pin directory of its own for each daemon a test starts:
/// `/sys/fs/bpf/exfilmon-test-{PID}-{N}`. [`Daemon`] removes it when it stops the daemon.
#[must_use]
pub fn test_pin_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if n == 0 {
        remove_stale_pins();
    }
    PathBuf::from(format!("{PIN_PREFIX}{}-{n}", std::process::id()))
}

const PIN_PREFIX: &str = "/sys/fs/bpf/exfilmon-test-";

/// Removes the pin directories of test processes that no longer run (killed before they
/// could clean up). Only names of exactly the [`test_pin_dir`] form are touched.
fn remove_stale_pins() {
    let Ok(entries) = fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pid) = path
            .to_str()
            .and_then(|p| p.strip_prefix(PIN_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u32>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = monitor::pins::cleanup(&path);
        }
    }
}

/// The pin directory of a daemon with `config`, or `None` when it does not pin.
pub fn pin_dir_of(config: &Path) -> Result<Option<PathBuf>> {
    let text =
        fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let parsed = monitor::config::Config::parse(&text, config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    Ok(parsed.pin.enabled.then_some(parsed.pin.dir))
}

/// Detaches and removes what a daemon with `config` pinned, if anything.
pub fn remove_pins(config: &Path) -> Result<()> {
    remove_pin_dir(pin_dir_of(config)?.as_deref())
}

fn remove_pin_dir(dir: Option<&Path>) -> Result<()> {
    if let Some(dir) = dir {
        monitor::pins::cleanup(dir).map_err(|e| anyhow::anyhow!("{}", monitor::error_chain(&e)))?;
    }
    Ok(())
}

/// The lab's config (tests/lab/exfilmon.toml) filled in for `lab`, written with the lab's
/// GeoIP CSV into `dir`, pinning under a [`test_pin_dir`]. Returns the config path.
pub fn write_lab_config(lab: &Lab, dir: &Path, port: u16) -> Result<PathBuf> {
    let lab_dir = workspace_root().join("tests/lab");
    let template = fs::read_to_string(lab_dir.join("exfilmon.toml"))
        .context("reading tests/lab/exfilmon.toml")?;
    let text = template
        .replace("@NETNS@", lab.ns(Node::Router).name())
        .replace("@PORT@", &port.to_string())
        .replace("@LOG@", &dir.join("events.jsonl").display().to_string())
        .replace("@STATE@", &dir.join("state").display().to_string())
        .replace("@PIN@", &test_pin_dir().display().to_string());
    fs::copy(lab_dir.join("geoip.csv"), dir.join("geoip.csv"))
        .context("copying the lab GeoIP CSV")?;
    let path = dir.join("exfilmon.toml");
    fs::write(&path, text).context("writing the lab config")?;
    Ok(path)
}

/// Runs `exfilmon run --config CONFIG`, which must refuse to start and exit non-zero
/// within 30 s; returns its stderr.
///
/// # Panics
/// When it cannot be started, or it starts and keeps running, or exits 0.
#[must_use]
pub fn run_refused(config: &Path) -> String {
    let mut child = Command::new(exfilmon_bin())
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exfilmon starts");
    let status = crate::wait_or_kill(&mut child, Duration::from_secs(30))
        .expect("wait")
        .expect("exfilmon must refuse and exit, not keep running");
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).expect("utf-8");
    assert!(!status.success(), "exfilmon must refuse: {stderr}");
    stderr
}

/// A free TCP port on 127.0.0.1 (free when asked; the daemon binds it right after).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Daemon {
    /// Starts exfilmon on the lab's router and waits until /metrics answers.
    pub fn start(lab: &Lab) -> Result<Self> {
        Self::start_on(lab, free_port()?)
    }

    /// The same, with metrics on 127.0.0.1:`port`.
    pub fn start_on(lab: &Lab, port: u16) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = write_lab_config(lab, dir.path(), port)?;
        Self::start_with(config, SocketAddr::from(([127, 0, 0, 1], port)), dir)
    }

    /// Starts `exfilmon run --config CONFIG` whose metrics listen on `metrics`.
    pub fn start_with(
        config: PathBuf,
        metrics: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Result<Self> {
        Self::spawn(Command::new(exfilmon_bin()), None, config, metrics, dir)
    }

    /// Starts `exfilmon run --config CONFIG` inside network namespace `netns` as user
    /// nobody with only [`CONFINED_CAPS`] (`setpriv`: effective, permitted, inheritable,
    /// ambient and bounding sets), so the config must name no `netns`.
    /// `dir` is opened to that user; /metrics is scraped from inside `netns`.
    pub fn start_confined(
        netns: &crate::netns::NetNs,
        config: PathBuf,
        metrics: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        // World-writable, as a state directory of the service user would be its own.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
        for entry in fs::read_dir(dir.path())? {
            fs::set_permissions(entry?.path(), fs::Permissions::from_mode(0o644))?;
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns.name(), "setpriv"])
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(format!("--inh-caps={CONFINED_CAPS}"))
            .arg(format!("--ambient-caps={CONFINED_CAPS}"))
            .arg(format!("--bounding-set={CONFINED_CAPS}"))
            .arg("--")
            .arg(exfilmon_bin());
        Self::spawn(cmd, Some(netns.path()), config, metrics, dir)
    }

    fn spawn(
        mut cmd: Command,
        netns: Option<PathBuf>,
        config: PathBuf,
        metrics: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Result<Self> {
        let stderr = dir.path().join("exfilmon.stderr");
        let pin_dir = pin_dir_of(&config)?;
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("EXFILMON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("starting {}", exfilmon_bin().display()))?;
        let mut daemon = Self {
            child: Some(child),
            metrics,
            config,
            event_log: dir.path().join("events.jsonl"),
            stderr,
            netns,
            pin_dir,
            keep_pins: false,
            dir,
        };
        let mut child = daemon.child.take();
        let started = crate::wait_started(
            &mut child,
            "exfilmon",
            "serve /metrics",
            START_TIMEOUT,
            || daemon.scrape_text().is_ok(),
            || daemon.log(),
        );
        // Back before any error returns, so that dropping `daemon` stops it.
        daemon.child = child;
        started?;
        Ok(daemon)
    }

    /// The daemon's PID while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// The daemon's stderr so far.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The temporary directory holding its config, log and event log.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The raw text of /metrics.
    pub fn scrape_text(&self) -> Result<String> {
        let Some(netns) = &self.netns else {
            return self.scrape_here();
        };
        let file = fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns(CLONE_NEWNET)")?;
                self.scrape_here()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the scrape thread panicked"))?
        })
    }

    fn scrape_here(&self) -> Result<String> {
        let url = format!("http://{}/metrics", self.metrics);
        let mut response = ureq::get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response.body_mut().read_to_string()?;
        if !content_type.starts_with("text/plain; version=0.0.4") {
            bail!("unexpected Content-Type {content_type:?}");
        }
        Ok(body)
    }

    /// /metrics parsed: metric name → samples (labels, value).
    pub fn scrape(&self) -> Result<Metrics> {
        Metrics::parse(&self.scrape_text()?)
    }

    /// Sends `signal` to the daemon (by PID).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let Some(child) = self.child.as_ref() else {
            bail!("exfilmon is not running")
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, signal).with_context(|| format!("kill -{signal} {pid}"))
    }

    /// Scrapes until `ready` holds for the metrics, or fails after `timeout` with the last
    /// scrape and the daemon's log.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Metrics) -> bool,
    ) -> Result<Metrics> {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.scrape()?;
            if ready(&metrics) {
                return Ok(metrics);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not within {timeout:?}; daemon log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM by PID, then waits for a clean exit (SIGKILL after [`STOP_TIMEOUT`]), then
    /// removes its pins, which detaches its programs.
    pub fn stop(mut self) -> Result<ExitStatus> {
        let status = self.terminate()?;
        remove_pin_dir(self.pin_dir.as_deref())?;
        Ok(status)
    }

    /// SIGTERM by PID and a clean exit, leaving the programs attached and counting into
    /// the pinned maps, as in production. Returns the exit status and the final event log.
    pub fn stop_keeping_pins(mut self) -> Result<(ExitStatus, String)> {
        let status = self.terminate()?;
        self.keep_pins = true;
        Ok((
            status,
            fs::read_to_string(&self.event_log).unwrap_or_default(),
        ))
    }

    /// SIGKILL by PID: the daemon gets no chance to do anything. Returns its stderr.
    pub fn kill(mut self) -> Result<String> {
        let Some(mut child) = self.child.take() else {
            bail!("exfilmon is not running")
        };
        child.kill().context("SIGKILL")?;
        child.wait().context("waiting after SIGKILL")?;
        self.keep_pins = true;
        Ok(self.log())
    }

    /// Stops the daemon and returns its exit status and its final event log (the daemon
    /// reports every flow's last totals as it stops).
    pub fn stop_with_event_log(mut self) -> Result<(ExitStatus, String)> {
        let status = self.terminate()?;
        remove_pin_dir(self.pin_dir.as_deref())?;
        Ok((
            status,
            fs::read_to_string(&self.event_log).unwrap_or_default(),
        ))
    }

    fn terminate(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("exfilmon is not running")
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        match crate::wait_or_kill(&mut child, STOP_TIMEOUT)? {
            Some(status) => Ok(status),
            None => bail!("exfilmon did not exit within {STOP_TIMEOUT:?} of SIGTERM"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate();
        }
        if !self.keep_pins {
            let _ = remove_pin_dir(self.pin_dir.as_deref());
        }
    }
}

/// Parsed Prometheus text: series by metric name.
#[derive(Debug, Default)]
pub struct Metrics {
    pub series: BTreeMap<String, Vec<Series>>,
}

/// One series: its labels and value.
pub type Series = (BTreeMap<String, String>, f64);

impl Metrics {
    pub fn parse(text: &str) -> Result<Self> {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .context("parsing /metrics")?;
        let mut series: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for s in scrape.samples {
            let (prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value)) = s.value
            else {
                continue;
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            series.entry(s.metric).or_default().push((labels, value));
        }
        Ok(Self { series })
    }

    /// The value of the series of `name` whose labels include all of `labels`, summed.
    #[must_use]
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Every series of `name` as (labels, value).
    #[must_use]
    pub fn get(&self, name: &str) -> &[Series] {
        self.series.get(name).map_or(&[], Vec::as_slice)
    }
}
