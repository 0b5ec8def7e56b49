//! Developer tasks. `cargo xtask test` runs the whole suite and closes with one tally line;
//! `cargo xtask run` runs the lab demo, or the daemon on real interfaces with `--config`;
//! `cargo xtask bench` runs the benchmark suite; `cargo xtask fuzz` the fuzz targets.

mod bench;
mod demo;
mod fuzz;
mod test;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build, then run every test: unit tests, kernel tests (BPF_PROG_TEST_RUN), end-to-end
    /// lab tests with a real Prometheus, the bad-input tests, the lints, and every fuzz
    /// target for a short while. Tests that need root are skipped (and reported as skipped)
    /// when not run as root.
    Test,
    /// The benchmark suite: ns/packet over an XDP_PASS baseline with BPF_PROG_TEST_RUN,
    /// printed as a table and written to target/bench/results.json. Needs root.
    Bench {
        /// Passed to exfilmon-bench (e.g. `-- --quick`; `-- --help` lists them).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the cargo-fuzz targets in fuzz/ (config, GeoIP text files, MaxMind DB, DNS
    /// answers, ClientHellos, ring buffer records) and run each for a while, from seeds
    /// built by the tests' builders. Needs cargo-fuzz (scripts/setup.sh installs it).
    Fuzz {
        /// Seconds each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
    /// Without --config: the lab demo (network namespaces, real traffic, a table of what
    /// exfilmon counted). With --config: `exfilmon run` on the interfaces that config names.
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Demo only: keep the lab and /metrics up this many seconds after the table.
        #[arg(long, default_value_t = 0)]
        hold: u64,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Test => test::run(),
        Task::Bench { args } => bench::run(&args),
        Task::Fuzz { seconds, targets } => fuzz::run(seconds, &targets),
        Task::Run {
            config: Some(config),
            ..
        } => demo::run_real(&config),
        Task::Run { config: None, hold } => demo::run(hold),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}
