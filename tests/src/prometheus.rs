//! A throw-away Prometheus server (in the root namespace, on 127.0.0.1) and
//! `promtool check metrics`.
//!
//! HTTP goes through `ureq` built without TLS or compression: a small blocking
//! client with no async runtime, enough for Prometheus' JSON API on loopback.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

/// The Prometheus binary.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// The promtool binary.
pub const PROMTOOL_BIN: &str = "/usr/bin/promtool";
/// How long [`Prometheus::start`] waits for `/-/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One element of a query result: the series' labels and its value.
pub type Sample = (BTreeMap<String, String>, f64);

/// A Prometheus process scraping the given targets as job `exfilmon`. Killed
/// (by PID) and its temporary directory removed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    addr: SocketAddr,
    agent: ureq::Agent,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Writes a config (global and job scrape interval = `scrape_interval`,
    /// job `exfilmon`, static `targets`), starts Prometheus on a free
    /// 127.0.0.1 port with a temporary TSDB, and waits (at most
    /// [`READY_TIMEOUT`]) until it is ready.
    pub fn start(targets: &[SocketAddr], scrape_interval: Duration) -> Result<Self> {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let job = format!(
            "  - job_name: exfilmon\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        Self::start_with(&job, &[], scrape_interval)
    }

    /// Starts Prometheus with `scrape_configs` (the YAML list's items, indented by two
    /// spaces), the rule files `rules`, and `scrape_interval` as the global scrape and
    /// evaluation interval.
    pub fn start_with(
        scrape_configs: &str,
        rules: &[&Path],
        scrape_interval: Duration,
    ) -> Result<Self> {
        let interval_ms = scrape_interval.as_millis().max(100);
        let timeout_ms = interval_ms.min(10_000);
        let dir = tempfile::Builder::new().prefix("exfilmon-prom").tempdir()?;
        let rules: Vec<String> = rules.iter().map(|r| format!("'{}'", r.display())).collect();
        let config = format!(
            "global:\n  scrape_interval: {interval_ms}ms\n  scrape_timeout: {timeout_ms}ms\n  evaluation_interval: {interval_ms}ms\n\
             rule_files: [{}]\n\
             scrape_configs:\n{scrape_configs}",
            rules.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = free_local_port()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(PROMETHEUS_BIN)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {PROMETHEUS_BIN}"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut prom = Self {
            child: Some(child),
            addr,
            agent,
            dir,
        };
        prom.wait_ready()?;
        Ok(prom)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let url = format!("{}/-/ready", self.url());
        let mut child = self.child.take();
        let ready = crate::wait_started(
            &mut child,
            "prometheus",
            "become ready",
            READY_TIMEOUT,
            || {
                self.agent
                    .get(&url)
                    .call()
                    .is_ok_and(|resp| resp.status() == 200)
            },
            || self.log(),
        );
        // Back before any error returns, so that dropping `self` stops it.
        self.child = child;
        ready
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listen address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The temporary directory (config, log, TSDB).
    #[must_use]
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Prometheus' own log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query (`/api/v1/query`). Vector results give one
    /// sample per series; a scalar gives one sample with no labels.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let mut resp = self
            .agent
            .get(format!("{}/api/v1/query", self.url()))
            .query("query", promql)
            .call()
            .with_context(|| format!("querying {promql:?}"))?;
        let body = resp.body_mut().read_to_string()?;
        let json: Value =
            serde_json::from_str(&body).with_context(|| format!("bad JSON: {body}"))?;
        if json["status"] != "success" {
            bail!("query {promql:?} failed: {body}");
        }
        parse_result(&json["data"]).with_context(|| format!("query {promql:?}: {body}"))
    }

    /// Polls `promql` every 250 ms until `predicate` accepts the result, and
    /// returns that result; fails after `timeout` with the last result seen.
    pub fn wait_for(
        &self,
        promql: &str,
        predicate: impl Fn(&[Sample]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Sample>> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.query(promql);
            if let Ok(samples) = &last
                && predicate(samples)
            {
                return last;
            }
            if Instant::now() > deadline {
                bail!(
                    "{promql:?} did not satisfy the predicate within {timeout:?}; last: {last:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id().cast_signed()), Signal::SIGTERM);
            let _ = crate::wait_or_kill(&mut child, Duration::from_secs(5));
        }
        // The TempDir field removes the directory after this.
    }
}

fn free_local_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn parse_value(v: &Value) -> Result<f64> {
    let s = v[1].as_str().context("value is not [ts, \"string\"]")?;
    s.parse().with_context(|| format!("bad sample value {s:?}"))
}

fn parse_result(data: &Value) -> Result<Vec<Sample>> {
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .context("no result array")?
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok((labels, parse_value(&r["value"])?))
            })
            .collect(),
        Some("scalar") => Ok(vec![(BTreeMap::new(), parse_value(&data["result"])?)]),
        other => bail!("unsupported result type {other:?}"),
    }
}

/// Runs `promtool check metrics` with `text` on stdin and returns its combined
/// stdout and stderr, trimmed: empty means the exposition is clean. A failure
/// to run promtool comes back as a non-empty message too.
///
/// # Panics
/// Never in practice: stdin is always piped.
#[must_use]
pub fn promtool_check_metrics(text: &str) -> String {
    let child = Command::new(PROMTOOL_BIN)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("could not run {PROMTOOL_BIN}: {e}"),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = text.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return format!("promtool failed: {e}"),
    };
    let _ = writer.join();
    let mut combined = String::from_utf8_lossy(&out.stdout).into_owned();
    combined.push_str(&String::from_utf8_lossy(&out.stderr));
    let combined = combined.trim().to_owned();
    if combined.is_empty() && !out.status.success() {
        return format!("promtool exited {}", out.status);
    }
    combined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_and_scalar() {
        let v: Value = serde_json::from_str(
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"exfilmon"},"value":[1.5,"1"]}]}"#,
        )
        .unwrap();
        let r = parse_result(&v).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0["job"], "exfilmon");
        assert!((r[0].1 - 1.0).abs() < f64::EPSILON);
        let s: Value =
            serde_json::from_str(r#"{"resultType":"scalar","result":[1.5,"+Inf"]}"#).unwrap();
        assert!(parse_result(&s).unwrap()[0].1.is_infinite());
    }
}
