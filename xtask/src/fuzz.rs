//! `cargo xtask fuzz` (`make fuzz`): writes the seed corpora, builds the cargo-fuzz targets
//! in fuzz/ and runs each for a while. `cargo xtask test` runs it too, briefly.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{test::NIGHTLY, workspace};

/// Every target in fuzz/Cargo.toml, in the order they run.
pub const TARGETS: [&str; 6] = ["config", "geoip_text", "mmdb", "dns", "tls", "ring"];

/// What one target's run did.
pub struct Outcome {
    pub target: &'static str,
    /// Inputs run (libFuzzer's `number_of_executed_units`).
    pub runs: u64,
    /// Seconds it ran.
    pub seconds: u64,
    /// Where the crashing input was saved, when the run found one.
    pub crash: Option<String>,
}

/// Runs `targets` (all when empty) for `seconds` each and prints one line per target.
pub fn run(seconds: u64, targets: &[String]) -> anyhow::Result<()> {
    let targets = select(targets)?;
    let outcomes = build_and_run(seconds, &targets)?;
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    if !crashed.is_empty() {
        let names: Vec<&str> = crashed.iter().map(|o| o.target).collect();
        bail!("crashes in {}", names.join(", "));
    }
    Ok(())
}

fn select(targets: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if targets.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    targets
        .iter()
        .map(|t| {
            TARGETS
                .into_iter()
                .find(|known| known == t)
                .with_context(|| format!("no fuzz target {t} (there are {})", TARGETS.join(", ")))
        })
        .collect()
}

/// Writes the seeds, builds every target and runs `targets`, `seconds` each. A crash is an
/// outcome, not an error: the error is for what kept a target from running.
pub fn build_and_run(seconds: u64, targets: &[&'static str]) -> anyhow::Result<Vec<Outcome>> {
    let root = workspace();
    let version = Command::new("cargo")
        .args([&format!("+{NIGHTLY}"), "fuzz", "--version"])
        .current_dir(&root)
        .output();
    if !version.is_ok_and(|o| o.status.success()) {
        bail!("cargo-fuzz is missing: scripts/setup.sh installs it (`make fuzz` runs it)");
    }
    let seeds = write_seeds(&root.join("fuzz/corpus"))?;
    println!("fuzz: {seeds} seed inputs written to fuzz/corpus/");
    let started = Instant::now();
    let status = Command::new("cargo")
        .args([&format!("+{NIGHTLY}"), "fuzz", "build"])
        .current_dir(&root)
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    println!("fuzz: targets built in {} s", started.elapsed().as_secs());
    targets
        .iter()
        .map(|&target| run_target(&root, target, seconds))
        .collect()
}

/// Writes each seed as fuzz/corpus/TARGET/seed-NAME; returns how many.
fn write_seeds(corpus: &Path) -> anyhow::Result<usize> {
    let seeds = exfilmon_tests::seeds::fuzz_seeds();
    for s in &seeds {
        let dir = corpus.join(s.target);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("seed-{}", s.name));
        fs::write(&path, &s.bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(seeds.len())
}

fn run_target(root: &Path, target: &'static str, seconds: u64) -> anyhow::Result<Outcome> {
    let log_path = root.join(format!("fuzz/target/{target}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    // libFuzzer's own limits: an input that runs over 10 s or takes over 2 GiB is a
    // failure too (a hang or a memory blow-up on bad input), saved like a crash.
    let status = Command::new("cargo")
        .args([&format!("+{NIGHTLY}"), "fuzz", "run", target])
        .arg(root.join("fuzz/corpus").join(target))
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let elapsed = started.elapsed().as_secs();
    let text =
        fs::read_to_string(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    let runs = text
        .lines()
        .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .find_map(|n| n.trim().parse::<u64>().ok());
    let crash = text
        .lines()
        .find_map(|l| l.split("Test unit written to ").nth(1))
        .map(|p| p.trim().to_owned());
    let outcome = match (status.success(), runs, crash) {
        (true, Some(runs), None) => Outcome {
            target,
            runs,
            seconds: elapsed,
            crash: None,
        },
        (_, runs, crash) => {
            // The panic or sanitizer report, and where the input is.
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            for line in tail.iter().rev() {
                println!("    {line}");
            }
            Outcome {
                target,
                runs: runs.unwrap_or(0),
                seconds: elapsed,
                crash: Some(crash.unwrap_or_else(|| format!("see {}", log_path.display()))),
            }
        }
    };
    match &outcome.crash {
        None => println!(
            "fuzz: {target}: {} runs in {} s, 0 crashes",
            outcome.runs, outcome.seconds
        ),
        Some(input) => println!(
            "fuzz: {target}: CRASH after {} runs in {} s: {input}",
            outcome.runs, outcome.seconds
        ),
    }
    Ok(outcome)
}
