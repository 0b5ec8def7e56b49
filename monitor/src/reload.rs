//! SIGHUP: read the config and the GeoIP sources again and apply them to the running
//! kernel programs without losing a count.
//!
//! Everything is parsed and checked before the kernel is touched, so a bad file leaves the
//! daemon exactly as it was. Then the slots grow (labels first, so every counter can be
//! named), the policy and settings are written, and the new location tables go into the
//! idle generation and become live with one map write (`Monitor::install_geo`).
//!
//! What needs the maps or links made again cannot change here: interfaces, the metrics
//! listen address and connection limit, the flow table size, the ring buffer size, the pin
//! settings and the detections' state directory keep their running values until a restart,
//! and the reload says so. The detections' thresholds, windows and tick apply at once, and so
//! do the web config (TLS, basic auth) and the header timeout, for new connections.

use std::sync::RwLock;

use crate::{
    LoadError,
    config::{Config, ConfigError},
    ebpf::{GeoTables, InstallError, Installed, Monitor},
    geoip::{GeoDb, GeoIpError, SourceInfo},
    kernel_config,
    tables::{self, Labels, TablesError},
};

/// Why a reload was refused. The running tables and settings are unchanged unless the
/// error is [`ReloadError::Apply`], which can only come from the kernel refusing a write.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    GeoIp(#[from] GeoIpError),
    #[error(transparent)]
    Tables(#[from] TablesError),
    #[error("the new GeoIP tables do not fit the kernel maps")]
    Capacity(#[source] InstallError),
    #[error("applying the new tables failed")]
    Apply(#[source] LoadError),
    #[error(
        "the reload panicked (a bug, please report it); the programs stay attached, but the tables may be partly updated"
    )]
    Panicked,
}

/// What a reload applied.
#[derive(Debug)]
pub struct Reloaded {
    /// The config now in effect: the new file, with the settings that need a restart
    /// kept at their running values.
    pub config: Config,
    pub sources: Vec<SourceInfo>,
    pub geo: GeoTables,
    pub installed: Installed,
    /// Keys whose new value waits for a restart.
    pub restart_needed: Vec<&'static str>,
}

/// Reloads `running.path` into `monitor`, growing `labels` by the new slots.
pub fn reload(
    monitor: &mut Monitor,
    running: &Config,
    labels: &RwLock<Labels>,
) -> Result<Reloaded, ReloadError> {
    let mut config = Config::load(&running.path)?;
    let restart_needed = keep_restart_settings(running, &mut config);
    let geo = GeoDb::load(&config.geoip.sources)?;
    let previous = labels
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let plan = tables::plan_after(&config, &geo, Some(&previous))?;
    monitor
        .check_fits(&plan.tables.geo)
        .map_err(ReloadError::Capacity)?;

    // The new labels name every old slot as before, so they go first: a scrape from here
    // on can name the counters of the new slots too, and so can the next daemon.
    monitor
        .save_labels(&plan.labels)
        .map_err(|e| ReloadError::Apply(e.into()))?;
    *labels
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = plan.labels;
    let apply = |monitor: &mut Monitor| -> Result<Installed, LoadError> {
        monitor.write_config(kernel_config(&config))?;
        monitor.write_tables(&plan.tables)?;
        Ok(monitor.install_geo(&plan.tables.geo)?)
    };
    let installed = apply(monitor).map_err(ReloadError::Apply)?;
    Ok(Reloaded {
        sources: geo.sources.clone(),
        config,
        geo: plan.tables.geo,
        installed,
        restart_needed,
    })
}

/// Puts the running value back into `new` for every setting that needs a restart, and
/// names those that differed.
fn keep_restart_settings(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    // Interfaces are compared by what they attach, not by the line they are on.
    let attach = |c: &Config| -> Vec<_> {
        c.interfaces
            .iter()
            .map(|i| (i.name.clone(), i.hook, i.mode, i.netns.clone(), i.mirror))
            .collect()
    };
    if attach(new) != attach(running) {
        changed.push("interface");
        new.interfaces.clone_from(&running.interfaces);
    }
    if new.ipfix != running.ipfix {
        changed.push("ipfix");
        new.ipfix.clone_from(&running.ipfix);
    }
    if new.metrics.listen != running.metrics.listen {
        changed.push("metrics.listen");
        new.metrics.listen = running.metrics.listen;
    }
    // The server's connection slots are made once.
    if new.metrics.max_connections != running.metrics.max_connections {
        changed.push("metrics.max_connections");
        new.metrics.max_connections = running.metrics.max_connections;
    }
    if new.flows.max_entries != running.flows.max_entries {
        changed.push("flows.max_entries");
        new.flows.max_entries = running.flows.max_entries;
    }
    if new.flows.ring_bytes != running.flows.ring_bytes {
        changed.push("flows.ring_bytes");
        new.flows.ring_bytes = running.flows.ring_bytes;
    }
    if new.pin != running.pin {
        changed.push("pin");
        new.pin.clone_from(&running.pin);
    }
    // The state file in use stays where it is; it is written on every new first contact.
    if new.detections.state_dir != running.detections.state_dir {
        changed.push("detections.state_dir");
        new.detections
            .state_dir
            .clone_from(&running.detections.state_dir);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[home]
networks = ["192.0.2.0/24"]
countries = ["IN"]

[[interface]]
name = "veth0"
hook = "xdp"

[geoip]
sources = [{ format = "csv", path = "geo.csv" }]

[flows]
max_entries = 1024
"#;

    #[test]
    fn settings_that_need_a_restart_keep_their_running_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("geo.csv"), "203.0.113.0,203.0.113.63,CN\n").expect("write");
        let parse = |text: &str| {
            Config::parse(text, &dir.path().join("exfilmon.toml")).expect("valid config")
        };
        let running = parse(BASE);
        let mut new = parse(
            &(BASE
                .replace("veth0", "veth1")
                .replace("max_entries = 1024", "max_entries = 2048\nupdate_bytes = 7")
                + "[metrics]\nmax_connections = 3\nheader_timeout_secs = 2\n"
                + "[detections]\nstate_dir = \"elsewhere\"\n[detections.volume]\nmin_bytes = 5\n"),
        );
        let changed = keep_restart_settings(&running, &mut new);
        assert_eq!(
            changed,
            [
                "interface",
                "metrics.max_connections",
                "flows.max_entries",
                "detections.state_dir"
            ]
        );
        assert_eq!(new.metrics.max_connections, running.metrics.max_connections);
        assert_eq!(
            new.metrics.header_timeout,
            std::time::Duration::from_secs(2),
            "the header timeout applies"
        );
        assert_eq!(new.detections.state_dir, running.detections.state_dir);
        assert_eq!(new.detections.volume.min_bytes, 5, "thresholds apply");
        assert_eq!(new.interfaces, running.interfaces);
        assert_eq!(new.flows.max_entries, 1024);
        assert_eq!(
            new.flows.update_bytes, 7,
            "the rest of the new config applies"
        );

        let mut moved = parse(&format!("# a comment moves every line\n{BASE}"));
        assert_eq!(keep_restart_settings(&running, &mut moved), [] as [&str; 0]);
    }
}
