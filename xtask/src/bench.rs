//! `cargo xtask bench` (`make bench`): builds and runs the benchmark suite as root.
//! Benchmarks report ratios against a baseline measured in the same run; they assert nothing.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::workspace;

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    if !exfilmon_tests::is_root() {
        bail!("the benchmark loads eBPF programs: run it as root");
    }
    let root = workspace();
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "exfilmon-tests",
            "--bin",
            "exfilmon-bench",
            "--bin",
            "exfilmon-bench-events",
            // The peers section runs the real daemon.
            "-p",
            "monitor",
            "--bin",
            "exfilmon",
        ])
        .current_dir(&root)
        .status()
        .context("building exfilmon-bench and exfilmon")?;
    if !status.success() {
        bail!("building exfilmon-bench and exfilmon failed ({status})");
    }
    let status = Command::new(root.join("target/release/exfilmon-bench"))
        .args(extra)
        .current_dir(&root)
        .status()
        .context("running exfilmon-bench")?;
    if !status.success() {
        bail!("exfilmon-bench failed ({status})");
    }
    // The ring buffer → daemon path; `--quick` is the only option the two share.
    println!("\nring buffer → daemon:");
    let quick = extra.iter().any(|a| a == "--quick");
    let status = Command::new(root.join("target/release/exfilmon-bench-events"))
        .args(quick.then_some("--quick"))
        .current_dir(&root)
        .status()
        .context("running exfilmon-bench-events")?;
    if !status.success() {
        bail!("exfilmon-bench-events failed ({status})");
    }
    Ok(())
}
