//! The `exfilmon` command.

mod inspect;

use std::{fmt::Write as _, net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use monitor::{
    config::Config,
    daemon, error_chain,
    geoip::GeoDb,
    load_monitor, load_monitor_pinned, pins, policy, replay,
    tables::{self, Verdict},
    watch,
};
use tracing_subscriber::EnvFilter;

/// exfilmon: an eBPF data-exfiltration monitor.
///
/// Classifies every packet that leaves (or enters) the configured home networks by the
/// remote country, the inside device group and a data-localisation policy, counts it in
/// the kernel at line rate, tracks the flows that break the policy, and exports it all
/// as Prometheus metrics and a JSON event log. It never drops or delays traffic, except
/// the violation packets of groups whose policy says `enforce = true` (and the copies on
/// a SPAN or TAP port hooked with `mirror = true`, each dropped once counted).
#[derive(Parser)]
#[command(name = "exfilmon", version, propagate_version = true)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `monitor=debug`.
    #[arg(long, global = true, env = "EXFILMON_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the configured interfaces, classify, and serve /metrics until SIGTERM or
    /// SIGINT. Needs root, or CAP_BPF + CAP_NET_ADMIN (with CAP_PERFMON too, it loads the
    /// faster programs that parse frames in place).
    ///
    /// The counters, the flow table, the ring buffer and the links are pinned under
    /// `[pin] dir` (default /sys/fs/bpf/exfilmon): at exit the programs stay attached and
    /// counting, and the next `exfilmon run` takes them over without losing a packet or
    /// resetting a counter. `exfilmon cleanup` detaches them. With `[pin] enabled = false`
    /// the daemon detaches at exit instead.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Detach the programs a stopped `exfilmon run` left pinned and remove every pin
    /// (links, counters, flow table, ring buffer): the next run starts from zero. Refuses
    /// while a daemon runs with the directory; leaves entries exfilmon did not write.
    Cleanup {
        /// Take the directory from this config's `[pin] dir`.
        #[arg(long, short, conflicts_with = "pin_dir")]
        config: Option<PathBuf>,
        /// The pin directory [default: /sys/fs/bpf/exfilmon].
        #[arg(long)]
        pin_dir: Option<PathBuf>,
    },
    /// Show what a pinned exfilmon has counted: frames seen, traffic by group, country and
    /// verdict, violations, drops and anomalies, and the largest tracked flows. Reads the
    /// pins of a running daemon (or of programs a stopped one left counting) and changes
    /// nothing; needs the right to read /sys/fs/bpf (root, or CAP_BPF).
    Status {
        /// Take the directory from this config's `[pin] dir`.
        #[arg(long, short, conflicts_with = "pin_dir")]
        config: Option<PathBuf>,
        /// The pin directory [default: /sys/fs/bpf/exfilmon].
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Rows per table, largest first.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
        top: u16,
    },
    /// Validate the config and its GeoIP sources and exit: 0 when valid, 1 with the file,
    /// line and key of the first problem otherwise. Loads nothing into the kernel.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
        /// Also check that the configured interfaces exist.
        #[arg(long)]
        interfaces: bool,
    },
    /// Run the same kernel program over every frame of pcap/pcapng captures, in order,
    /// with BPF_PROG_TEST_RUN, and print what the daemon would have counted. Needs
    /// CAP_BPF but no interface.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Capture files (pcap or pcapng; Ethernet or raw IP link types).
        #[arg(required = true)]
        captures: Vec<PathBuf>,
    },
    /// Print the classification of addresses: inside (and which group) or remote (its
    /// country and ASN, and for traffic from each group the verdict, the policy rule that
    /// decided it, and whether the group's enforcement drops it).
    Lookup {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(required = true)]
        addresses: Vec<IpAddr>,
    },
    /// Tools for the GeoIP data.
    #[command(subcommand)]
    Geoip(GeoipCommand),
    /// Check an event log for tampering: every line is JSON of a known schema version,
    /// each line's seq is one more than the line before it, and each line that carries
    /// prev (with `[events] hash_chain = true`) holds the SHA-256 of the exact bytes of the
    /// line before it.
    ///
    /// Give the files oldest first, as one log: `exfilmon verify-log events.jsonl.3
    /// events.jsonl.2 events.jsonl.1 events.jsonl`, or let `--with-rotated` find them.
    /// Exits 0 with a one-line summary that ends with the last line's seq and SHA-256;
    /// exits 1 at the first problem, printed as FILE:LINE: what is wrong (or when a file
    /// cannot be read); 2 on a usage error.
    ///
    /// A hash chain shows a changed, removed, inserted or reordered line, but not that the
    /// newest lines were removed, nor a chain rewritten from a change on: keep the last
    /// line's SEQ:SHA256 from the summary elsewhere, and pass it as --anchor next time.
    /// docs/event-log.md has the details.
    VerifyLog {
        /// The live log: check its rotated files (LIVE.N, the oldest, down to LIVE.1) and
        /// then it.
        #[arg(long, value_name = "LIVE", conflicts_with = "files")]
        with_rotated: Option<PathBuf>,
        /// A SEQ:SHA256 an earlier summary printed: the line with that seq must still be
        /// there and have that hash.
        #[arg(long, value_name = "SEQ:SHA256")]
        anchor: Option<monitor::events::verify::Anchor>,
        /// The files, oldest first.
        #[arg(value_name = "FILE", required_unless_present = "with_rotated")]
        files: Vec<PathBuf>,
    },
    /// Print a shell completion script, e.g. `exfilmon completions bash >
    /// /usr/share/bash-completion/completions/exfilmon`.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages: exfilmon.1 and one exfilmon-COMMAND.1 per command, e.g.
    /// `exfilmon manpage --dir /usr/local/share/man/man1`.
    Manpage {
        /// The directory to write them to (it must exist).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum GeoipCommand {
    /// Show the GeoIP sources, the kernel tables built from them, and their memory.
    ///
    /// Prints each source (ranges per family, file age, build date), the table totals, and
    /// the kernel memory of the maps: measured per map when run as root (the programs are
    /// loaded and filled but not attached), computed for the IPv4 tables otherwise.
    Inspect {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Table,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("exfilmon: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => run_daemon(&config),
        Command::Cleanup { config, pin_dir } => cleanup(config, pin_dir),
        Command::Status {
            config,
            pin_dir,
            top,
        } => {
            let dir = pin_dir_of(config, pin_dir)?;
            let status = monitor::status::read(&dir)?;
            print!("{}", monitor::status::render(&status, usize::from(top)));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "exfilmon", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage { dir } => {
            let cli = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(cli, &dir)
                .with_context(|| format!("writing the man pages to {}", dir.display()))?;
            println!("man pages written to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config, interfaces } => {
            let config = Config::load(&config)?;
            if interfaces {
                config.check_interfaces()?;
            }
            let geo = GeoDb::load(&config.geoip.sources)?;
            let plan = tables::plan(&config, &geo)?;
            println!(
                "{}: ok ({} groups, {} interfaces, {} IPv4 + {} IPv6 GeoIP prefixes, {} countries, {} ASNs)",
                config.path.display(),
                config.groups.len(),
                config.interfaces.len(),
                plan.tables.geo.prefix_count_v4(),
                plan.tables.geo.prefix_count_v6(),
                plan.labels.countries.len() - 1,
                plan.labels.asn_count(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            config,
            format,
            captures,
        } => {
            let config = Config::load(&config)?;
            let geo = GeoDb::load(&config.geoip.sources)?;
            let plan = tables::plan(&config, &geo)?;
            let mut monitor = load_monitor(&config, &plan)?;
            let watch = watch::Plan::new(&config.watchlists, &plan.labels.watch, &plan.labels.asns);
            let bar = replay::progress_bar(&captures);
            let report = replay::run_with_progress(
                &mut monitor,
                &plan.labels,
                watch,
                &config,
                &captures,
                &bar,
            )?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Table => print!("{}", replay::table(&report)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Lookup { config, addresses } => {
            let config = Config::load(&config)?;
            let geo = GeoDb::load(&config.geoip.sources)?;
            for addr in addresses {
                println!("{}", describe(&config, &geo, addr));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyLog {
            with_rotated,
            anchor,
            files,
        } => verify_log(with_rotated.as_deref(), anchor, files),
        Command::Geoip(GeoipCommand::Inspect { config }) => {
            let config = Config::load(&config)?;
            let geo = GeoDb::load(&config.geoip.sources)?;
            let plan = tables::plan(&config, &geo)?;
            println!("{}", inspect::report(&config, &geo.sources, &plan));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `exfilmon run`.
fn run_daemon(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    config.check_interfaces()?;
    // Before the GeoIP data: a busy or incompatible pin directory fails first.
    let pins = config
        .pin
        .enabled
        .then(|| pins::Pins::open(&config))
        .transpose()?;
    if let Some(p) = &pins {
        match p.writer() {
            Some(v) => {
                tracing::info!(pin_dir = %p.dir().display(), written_by = v, "pinned maps found: the counters carry on");
            }
            None => {
                tracing::info!(pin_dir = %p.dir().display(), "pinning the maps and links");
            }
        }
    }
    let geo = GeoDb::load(&config.geoip.sources)?;
    let plan = tables::plan_after(&config, &geo, pins.as_ref().and_then(pins::Pins::previous))?;
    tracing::info!(
        config = %config.path.display(),
        ranges_v4 = plan.tables.geo.v4.len(),
        level2_blocks = plan.tables.geo.l2_blocks(),
        ranges_v6 = plan.tables.geo.v6.len(),
        v6_words = plan.tables.geo.v6_table.words(),
        groups = config.groups.len(),
        "loading kernel programs"
    );
    let monitor = load_monitor_pinned(&config, &plan, pins.as_ref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The kernel holds the tables now; the parsed GeoIP data is not needed again.
    let sources = geo.sources.clone();
    drop(geo);
    runtime.block_on(daemon::run(config, plan, &sources, monitor, pins))?;
    Ok(ExitCode::SUCCESS)
}

/// `exfilmon verify-log`: the summary on stdout and exit 0, or the first problem on
/// stderr as `FILE:LINE: what` and exit 1.
fn verify_log(
    with_rotated: Option<&std::path::Path>,
    anchor: Option<monitor::events::verify::Anchor>,
    files: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use monitor::events::verify;
    let files = match with_rotated {
        Some(live) => verify::with_rotated(live)
            .with_context(|| format!("listing the rotated files of {}", live.display()))?,
        None => files,
    };
    match verify::verify(&files, anchor) {
        Ok(summary) => {
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (verify::VerifyError::Line { .. } | verify::VerifyError::Anchor { .. })) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// The pin directory a command names: from `--config`'s `[pin] dir`, `--pin-dir`, or the
/// default.
fn pin_dir_of(config: Option<PathBuf>, pin_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match (config, pin_dir) {
        (Some(config), _) => Config::load(&config)?.pin.dir,
        (None, Some(dir)) => dir,
        (None, None) => PathBuf::from(monitor::config::DEFAULT_PIN_DIR),
    })
}

/// `exfilmon cleanup`.
fn cleanup(config: Option<PathBuf>, pin_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = pin_dir_of(config, pin_dir)?;
    let removed = pins::cleanup(&dir)?;
    if removed == pins::Removed::default() {
        println!("{}: nothing pinned", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: removed {} links (their programs are detached) and {} maps",
        dir.display(),
        removed.links,
        removed.maps
    );
    if !removed.unknown.is_empty() {
        println!(
            "left {} entries exfilmon did not write:",
            removed.unknown.len()
        );
        for path in &removed.unknown {
            println!("  {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(config: &Config, geo: &GeoDb, addr: IpAddr) -> String {
    if let Some(slot) = tables::inside_group(config, addr) {
        let group = tables::group_name(config, slot);
        return format!("{addr}: inside, group {group}");
    }
    let location = geo.lookup(addr);
    let country = location.country;
    let name = country.map_or_else(|| tables::UNKNOWN_COUNTRY.to_owned(), |c| c.to_string());
    let asn = monitor::text::asn(location.asn);
    let mut out = format!("{addr}: remote, country {name}, asn {asn}");
    let names =
        std::iter::once(tables::UNGROUPED).chain(config.groups.iter().map(|g| g.name.as_str()));
    for (slot, group) in (0u32..).zip(names) {
        let d = policy::decide(config, slot, country, location.asn);
        let dropped = if d.verdict == Verdict::Violation && config.scope(slot).policy.enforce {
            ", dropped"
        } else {
            ""
        };
        let _ = write!(out, "\n  from {group}: {}{dropped} ({})", d.verdict, d.rule);
    }
    if !config.watchlists.is_empty() {
        let _ = write!(out, "\n  watch {}", watch_hit(config, addr, location.asn));
    }
    out
}

/// The watch entry the kernel attributes `addr` to by prefix or ASN (DNS-learned
/// addresses exist only while the daemon runs).
fn watch_hit(config: &Config, addr: IpAddr, asn: Option<u32>) -> String {
    let by_prefix = config
        .watchlists
        .iter()
        .flat_map(|w| w.prefixes.iter().map(move |p| (w, p)))
        .filter(|(_, p)| p.contains(&addr))
        .max_by_key(|(_, p)| p.prefix_len())
        .map(|(w, p)| format!("{}/{p} (prefix)", w.name));
    let by_asn = || {
        let asn = asn?;
        config
            .watchlists
            .iter()
            .find(|w| w.asns.contains(&asn))
            .map(|w| format!("{}/AS{asn} (asn)", w.name))
    };
    by_prefix
        .or_else(by_asn)
        .unwrap_or_else(|| "none".to_owned())
}
