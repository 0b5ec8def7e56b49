//! How much verifier work each program of the kernel object costs: loads every program on
//! its own (one refusal does not hide the others) and prints the kernel's count of
//! instructions processed (`verified_insns`), or the refusal with the tail of the
//! verifier's log. Root only. It reports; the budget is asserted by the `kernel` tests.

use std::process::ExitCode;

use aya::{EbpfLoader, VerifierLogLevel, programs::Program};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// An object file to load instead of the one embedded in `exfilmon`.
    #[arg(long)]
    object: Option<std::path::PathBuf>,
    /// Lines of the verifier log to print for a refused program.
    #[arg(long, default_value_t = 40)]
    tail: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bytes = match &args.object {
        Some(path) => std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        None => monitor::ebpf::object().to_vec(),
    };
    let mut ebpf = EbpfLoader::new()
        .verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS)
        .load(&bytes)
        .unwrap_or_else(|e| panic!("loading the object: {e}"));
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
    let mut refused = 0;
    for name in names {
        let program = ebpf.program_mut(&name).expect("listed");
        let loaded = match program {
            Program::Xdp(p) => p.load().and_then(|()| p.info()),
            Program::SchedClassifier(p) => p.load().and_then(|()| p.info()),
            _ => {
                println!("{name:<28} (not XDP or TC, skipped)");
                continue;
            }
        };
        match loaded {
            Ok(info) => println!(
                "{name:<28} {:>9} instructions verified, {:>5} translated",
                info.verified_instruction_count()
                    .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                info.size_translated().map_or(0, |b| b / 8),
            ),
            Err(aya::programs::ProgramError::LoadError {
                io_error,
                verifier_log,
            }) => {
                refused += 1;
                let log = verifier_log.to_string();
                let lines: Vec<&str> = log.lines().collect();
                println!("{name:<28} REFUSED: {io_error}");
                for l in &lines[lines.len().saturating_sub(args.tail)..] {
                    println!("    {l}");
                }
            }
            Err(e) => {
                refused += 1;
                println!("{name:<28} REFUSED: {e}");
            }
        }
    }
    if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
