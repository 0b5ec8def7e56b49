//! exfilmon's daemon and tools, as a library so that the integration tests drive the same
//! code paths as the binary.

pub mod config;
pub mod country;
pub mod daemon;
pub mod detect;
pub mod dir24;
pub mod dns;
pub mod ebpf;
pub mod events;
pub mod geoip;
pub mod ipfix;
pub mod metrics;
pub mod pins;
pub mod policy;
pub mod reload;
pub mod replay;
pub mod status;
pub mod tables;
pub mod text;
pub mod tier6;
pub mod tls;
pub mod watch;
pub mod web;

use monitor_common::config::{FLAG_TRACK_UNKNOWN, KernelConfig};

use crate::{
    config::Config,
    ebpf::{BenchSizes, EbpfError, InstallError, Monitor, Sizes},
    tables::Plan,
};

/// Why the kernel side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error(transparent)]
    Geo(#[from] InstallError),
}

/// Loads the kernel programs sized for `plan` and writes the settings and tables of
/// `config` into them. Nothing is attached yet.
pub fn load_monitor(config: &Config, plan: &Plan) -> Result<Monitor, LoadError> {
    load_monitor_with(config, plan, None)
}

/// [`load_monitor`], with the benchmark's programs and maps too when `bench` is given.
pub fn load_monitor_with(
    config: &Config,
    plan: &Plan,
    bench: Option<BenchSizes>,
) -> Result<Monitor, LoadError> {
    load_monitor_at(config, plan, bench, None, None)
}

/// [`load_monitor`] with the program set `programs` rather than the one the process's
/// capabilities allow (`ebpf::programs_for_capabilities`): for tests that run both.
pub fn load_monitor_programs(
    config: &Config,
    plan: &Plan,
    programs: monitor_common::programs::Set,
) -> Result<Monitor, LoadError> {
    load_monitor_at(config, plan, None, None, Some(programs))
}

/// [`load_monitor`] for the daemon: with `pins`, the counters, the flow table and the ring
/// buffer are the pinned ones (made and pinned when there are none yet), and the slot
/// names of `plan` are saved beside them.
pub fn load_monitor_pinned(
    config: &Config,
    plan: &Plan,
    pins: Option<&pins::Pins>,
) -> Result<Monitor, LoadError> {
    load_monitor_at(config, plan, None, pins, None)
}

fn load_monitor_at(
    config: &Config,
    plan: &Plan,
    bench: Option<BenchSizes>,
    pins: Option<&pins::Pins>,
    programs: Option<monitor_common::programs::Set>,
) -> Result<Monitor, LoadError> {
    let mut sizes = Sizes::for_geo(
        config.flows.max_entries,
        config.flows.ring_bytes,
        &plan.tables.geo,
    );
    sizes.bench = bench;
    if let Some(programs) = programs {
        sizes.programs = programs;
    }
    let paths = pins.map(pins::Pins::map_paths).unwrap_or_default();
    let mut monitor = Monitor::load_pinned(sizes, &paths)?;
    monitor.write_config(kernel_config(config))?;
    monitor.write_tables(&plan.tables)?;
    monitor.install_geo(&plan.tables.geo)?;
    monitor.save_labels(&plan.labels)?;
    Ok(monitor)
}

/// The kernel's view of the `[flows]` settings.
#[must_use]
pub fn kernel_config(config: &Config) -> KernelConfig {
    let f = &config.flows;
    KernelConfig {
        update_interval_ns: u64::try_from(f.update_interval.as_nanos()).unwrap_or(u64::MAX),
        update_bytes: f.update_bytes,
        wakeup_bytes: f.wakeup_bytes,
        flags: if f.track_unknown {
            FLAG_TRACK_UNKNOWN
        } else {
            0
        },
    }
}

/// An error and its sources on one line, for logs and the terminal. A source whose text
/// the message already shows is not repeated.
#[must_use]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("reading {0}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("reading x: {0}")]
    struct Embeds(#[source] std::io::Error);

    #[test]
    fn error_chain_shows_each_cause_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(
            super::error_chain(&Outer("x", io())),
            "reading x: disk on fire"
        );
        assert_eq!(super::error_chain(&Embeds(io())), "reading x: disk on fire");
    }
}
