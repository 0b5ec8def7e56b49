//! The test runner behind `make test`.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{fuzz, workspace};

/// The kernel crate's toolchain (also in monitor/build.rs): its rustfmt knows the
/// unstable import-grouping options of rustfmt.toml.
pub(crate) const NIGHTLY: &str = "nightly-2026-10-30";

/// Seconds each fuzz target runs in the suite (`EXFILMON_FUZZ_SECONDS` overrides it);
/// `make fuzz` runs them longer.
const FUZZ_SECONDS: u64 = 15;

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    skipped: u64,
}

pub fn run() -> anyhow::Result<()> {
    let root = workspace();
    let mut tally = Tally::default();
    let mut problems = lints();
    step(
        "build (release exfilmon)",
        Command::new("cargo").args(["build", "--release", "--quiet", "-p", "monitor"]),
    )?;

    // The default members: every crate but monitor-ebpf, which only builds for bpfel.
    // Root-only tests are `#[ignore]`d; as root they run, otherwise libtest reports them
    // as ignored and the tally counts them as skipped.
    let mut args = vec!["test", "--no-fail-fast"];
    if exfilmon_tests::is_root() {
        args.extend(["--", "--include-ignored"]);
    } else {
        println!("not root: the kernel, lab and end-to-end tests will be reported as skipped");
    }
    println!("==> tests: cargo {}", args.join(" "));
    let mut child = Command::new("cargo")
        .args(&args)
        .env("EXFILMON_BIN", root.join("target/release/exfilmon"))
        .current_dir(&root)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            tally.add(rest);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && tally.failed == 0 {
        problems.push(anyhow::anyhow!(
            "cargo test exited with {status} (a build error?)"
        ));
    }

    // Every fuzz target for a short while, from the seeds: a crash, a hang or a memory
    // blow-up on some input fails it. Each target counts as one test.
    let seconds = std::env::var("EXFILMON_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(FUZZ_SECONDS);
    println!("==> fuzz: each target for {seconds} s");
    let started = std::time::Instant::now();
    match fuzz::build_and_run(seconds, &fuzz::TARGETS) {
        Ok(outcomes) => {
            for o in outcomes {
                if o.crash.is_some() {
                    tally.failed += 1;
                } else {
                    tally.passed += 1;
                }
            }
        }
        Err(e) => problems.push(e.context("fuzz")),
    }
    println!("fuzz: step took {} s", started.elapsed().as_secs());

    println!();
    for p in &problems {
        println!("problem: {p:#}");
    }
    // The closing line: the whole suite's tally.
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed,
        tally.failed + problems.len() as u64,
        tally.skipped
    );
    if tally.failed > 0 || !problems.is_empty() {
        bail!("the test suite failed");
    }
    Ok(())
}

impl Tally {
    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn add(&mut self, summary: &str) {
        for part in summary.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.skipped += n,
                _ => {}
            }
        }
    }
}

/// Format and clippy checks; each failure is kept, so that the tests still run after it.
fn lints() -> Vec<anyhow::Error> {
    let mut problems = Vec::new();
    step(
        "format",
        Command::new("cargo").args([&format!("+{NIGHTLY}"), "fmt", "--all", "--check"]),
    )
    .unwrap_or_else(|e| problems.push(e));
    // fuzz/ is a workspace of its own (cargo fuzz builds it); its format is checked here.
    step(
        "format (fuzz targets)",
        Command::new("cargo").args([
            &format!("+{NIGHTLY}"),
            "fmt",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--check",
        ]),
    )
    .unwrap_or_else(|e| problems.push(e));
    step(
        "lint (clippy, host crates)",
        Command::new("cargo").args(["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"]),
    )
    .unwrap_or_else(|e| problems.push(e));
    // The kernel crate is no default member (it only builds for bpfel): its own clippy run,
    // on the pinned nightly, for the BPF target, in a target directory of its own.
    step(
        "lint (clippy, kernel programs for bpfel)",
        Command::new("cargo").args([
            &format!("+{NIGHTLY}"),
            "clippy",
            "--quiet",
            "--package",
            "monitor-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--target-dir",
            "target/bpf-clippy",
            "--",
            "-D",
            "warnings",
        ]),
    )
    .unwrap_or_else(|e| problems.push(e));
    problems
}

fn step(name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    println!("==> {name}");
    let status = cmd
        .current_dir(workspace())
        .status()
        .with_context(|| format!("starting {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}
