//! CPU time of threads and processes, in nanoseconds, from the kernel's CPU-time clocks.
//!
//! These clocks read the scheduler's `sum_exec_runtime`: the exact time a task ran, user
//! and kernel, to the nanosecond. `/proc/PID/stat`'s utime + stime hold the same total but
//! sampled at the timer tick (250 Hz here, 4 ms), too coarse for a few seconds of traffic.
//! This kernel has no `CONFIG_IRQ_TIME_ACCOUNTING`, so a softirq counts towards the task it
//! interrupted (the live generator's thread, see the bench) or towards `ksoftirqd/N`.

use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::{
    time::{ClockId, clock_gettime},
    unistd::Pid,
};

fn read(clock: ClockId) -> Result<Duration> {
    let t = clock_gettime(clock)?;
    Ok(Duration::new(
        u64::try_from(t.tv_sec()).unwrap_or(0),
        u32::try_from(t.tv_nsec()).unwrap_or(0),
    ))
}

/// CPU time of the calling thread.
pub fn this_thread() -> Result<Duration> {
    read(ClockId::CLOCK_THREAD_CPUTIME_ID).context("reading CLOCK_THREAD_CPUTIME_ID")
}

/// CPU time of process `pid`, all its threads. (The kernel reads another process's
/// clock for anyone, but a thread clock only for threads of the caller's own process:
/// use this for a kernel thread such as `ksoftirqd/N`, a process of one thread.)
pub fn process(pid: i32) -> Result<Duration> {
    let clock = ClockId::pid_cpu_clock_id(Pid::from_raw(pid))
        .with_context(|| format!("clock_getcpuclockid({pid})"))?;
    read(clock).with_context(|| format!("reading the CPU clock of process {pid}"))
}

/// CPU time of process `pid` and all its descendants that run now (pmacctd forks its
/// plugins into child processes).
pub fn process_tree(pid: i32) -> Result<Duration> {
    let mut total = process(pid)?;
    for child in descendants(pid) {
        // A child that exited in between has nothing more to add.
        if let Ok(t) = process(child) {
            total += t;
        }
    }
    Ok(total)
}

/// The PIDs whose parent chain leads to `pid`.
#[must_use]
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(pp) = parent(p) {
                parents.push((p, pp));
            }
        }
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, pp) in &parents {
            if pp == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The PID of the kernel thread `ksoftirqd/CPU`, which runs the softirqs of that CPU that
/// did not run inline on return from an interrupt or `local_bh_enable`.
pub fn ksoftirqd(cpu: usize) -> Result<i32> {
    let want = format!("ksoftirqd/{cpu}");
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == want) {
            return Ok(p);
        }
    }
    anyhow::bail!("no {want} thread in /proc")
}
