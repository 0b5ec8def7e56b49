//! A named network namespace (`ip netns`), deleted on drop.

use std::{
    ffi::OsStr,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// A network namespace created with `ip netns add NAME` and removed with
/// `ip netns del NAME` on drop.
///
/// Before deleting, drop kills (by PID) the processes still inside the
/// namespace that descend from this process, so nothing started by the lab
/// outlives it. Processes not started by this process are left alone.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace and brings its `lo` up. Fails if the name exists.
    pub fn new(name: &str) -> Result<Self> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("invalid namespace name {name:?}");
        }
        if PathBuf::from("/run/netns").join(name).exists() {
            bail!("network namespace {name} already exists");
        }
        run_checked(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name as `ip netns` knows it.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, the bind mount that keeps the namespace alive.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A `Command` for `ip netns exec NAME CMD`; add arguments, stdio, and run it.
    pub fn command(&self, cmd: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(cmd);
        c
    }

    /// Runs `CMD ARGS...` inside the namespace and returns its output, whatever
    /// its exit status. Fails only if it could not be started.
    pub fn exec<I, S>(&self, cmd: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(cmd)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {cmd} in netns {}", self.name))
    }

    /// Like [`exec`](Self::exec) but fails on a non-zero exit status; returns stdout.
    pub fn run<I, S>(&self, cmd: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command(cmd);
        c.args(args);
        run_checked(&mut c)
    }

    /// Runs `ip -n NAME ARGS...` (cheaper than `ip netns exec NAME ip ...`);
    /// fails on a non-zero exit status.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Sets sysctls inside the namespace (`sysctl -q -w KEY=VALUE ...`).
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        let args: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut c = self.command("sysctl");
        c.args(["-q", "-w"]).args(&args);
        run_checked(&mut c).map(|_| ())
    }

    /// Spawns `CMD ARGS...` inside the namespace with stdin null and stdout /
    /// stderr inherited. The caller owns the child (kill and wait it); the
    /// namespace's drop also kills it if it is still running.
    pub fn spawn<I, S>(&self, cmd: &str, args: I) -> Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(cmd)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {cmd} in netns {}", self.name))
    }

    /// Runs `f` on a fresh thread that has first joined this namespace
    /// (`setns(CLONE_NEWNET)`), and returns its result. Sockets created in `f`
    /// belong to this namespace for their whole life, so they can be returned
    /// and used from any thread.
    ///
    /// # Panics
    /// If the namespace cannot be entered, or if `f` panics (the panic is
    /// propagated).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = self.open().expect("opening the namespace file");
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns(CLONE_NEWNET)");
                drop(file);
                f()
            });
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Like [`enter`](Self::enter) but runs `f` on a detached thread inside the
    /// namespace and returns its join handle.
    ///
    /// # Panics
    /// The thread panics (see its join result) if `setns` fails.
    pub fn spawn_thread<T, F>(&self, f: F) -> Result<std::thread::JoinHandle<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let file = self.open()?;
        std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns(CLONE_NEWNET)");
                drop(file);
                f()
            })
            .context("spawning thread")
    }

    fn open(&self) -> Result<File> {
        File::open(self.path()).with_context(|| format!("opening {}", self.path().display()))
    }

    /// PIDs of the processes whose network namespace is this one (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let out = run_checked(Command::new("ip").args(["netns", "pids", &self.name]))?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Kills (SIGKILL, by PID) the processes in this namespace that descend
    /// from the current process, and reaps nothing: the owner of each `Child`
    /// still waits it. Returns the PIDs signalled.
    #[must_use]
    pub fn kill_own_processes(&self) -> Vec<i32> {
        let me = std::process::id().cast_signed();
        let mut killed = Vec::new();
        for pid in self.pids().unwrap_or_default() {
            if pid != me
                && descends_from(pid, me)
                && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
            {
                killed.push(pid);
            }
        }
        killed
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let killed = self.kill_own_processes();
        if !killed.is_empty() {
            // Give the kernel a moment to tear them down before deleting.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline
                && killed
                    .iter()
                    .any(|p| PathBuf::from(format!("/proc/{p}/ns")).exists())
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for _ in 0..5 {
            let ok = Command::new("ip")
                .args(["netns", "del", &self.name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok || !self.path().exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not delete network namespace {}", self.name);
    }
}

/// Whether `pid` has `ancestor` among its parents (via /proc/PID/stat).
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut cur = pid;
    for _ in 0..64 {
        let Some(parent) = parent_pid(cur) else {
            return false;
        };
        if parent == ancestor {
            return true;
        }
        if parent <= 1 {
            return false;
        }
        cur = parent;
    }
    false
}

fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Deletes the namespaces in `/run/netns` whose name `pid_of` reads a PID from and whose
/// process no longer runs: leftovers of a test or benchmark killed before its drop ran.
/// Names `pid_of` does not recognise are never touched.
pub(crate) fn remove_stale_namespaces(pid_of: impl Fn(&str) -> Option<u32>) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = pid_of(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
    }
}

/// The PID in a namespace name `{prefix}{PID}-{N}-{node}` whose node `is_node` accepts.
pub(crate) fn pid_in_name(name: &str, prefix: &str, is_node: impl Fn(&str) -> bool) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    is_node(parts.next()?).then_some(pid)
}

/// Runs a command to completion; fails with its stderr on a non-zero status.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
