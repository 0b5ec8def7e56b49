//! `exfilmon run`: attach, drain the ring buffer, sweep idle flows, serve metrics, and
//! detach cleanly on SIGTERM/SIGINT.

use std::{
    os::fd::AsRawFd as _,
    sync::{Arc, RwLock},
    time::Duration,
};

use aya::maps::{HashMap, MapData, RingBuf};
use monitor_common::flow::{FlowKey, FlowState};
use prometheus::Registry;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    config::{Config, Hook as CfgHook, XdpMode as CfgMode},
    ebpf::{EbpfError, Hook, Monitor},
    events::{self, Clock, EventKind, EventLog, FlowRecord, FlowTable},
    geoip::SourceInfo,
    metrics::{self, DaemonMetrics, KernelCollector},
    tables::{Labels, Plan},
};

/// How often the ring buffer is drained even without a wakeup (events below the
/// kernel's wakeup threshold are submitted without one).
const DRAIN_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error("cannot listen for metrics on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {netns} for interface {interface}")]
    Netns {
        netns: String,
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Events(#[from] events::EventError),
    #[error("registering metrics failed")]
    Metrics(#[from] prometheus::Error),
    #[error("setting up signal handling or the ring buffer poller failed")]
    Io(#[from] std::io::Error),
}

/// Attaches every configured interface; an interface in a named netns is attached from a
/// thread that entered it (the link works from any namespace once made).
pub fn attach_all(monitor: &mut Monitor, config: &Config) -> Result<(), DaemonError> {
    for iface in &config.interfaces {
        let hook = match iface.hook {
            CfgHook::Xdp => Hook::Xdp(match iface.mode {
                CfgMode::Auto => aya::programs::XdpMode::Default,
                CfgMode::Native => aya::programs::XdpMode::Driver,
                CfgMode::Skb => aya::programs::XdpMode::Skb,
            }),
            CfgHook::TcEgress => Hook::TcEgress,
            CfgHook::TcIngress => Hook::TcIngress,
        };
        match &iface.netns {
            None => monitor.attach(&iface.name, hook)?,
            Some(netns) => {
                let netns_err = |source| DaemonError::Netns {
                    netns: netns.clone(),
                    interface: iface.name.clone(),
                    source,
                };
                let file = std::fs::File::open(format!("/run/netns/{netns}")).map_err(netns_err)?;
                std::thread::scope(|s| {
                    s.spawn(|| {
                        // SAFETY: setns on this thread only; the file descriptor is valid.
                        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                            return Err(netns_err(std::io::Error::last_os_error()));
                        }
                        monitor.attach(&iface.name, hook).map_err(DaemonError::from)
                    })
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
                })?;
            }
        }
        tracing::info!(interface = %iface.name, hook = %iface.hook, netns = iface.netns.as_deref().unwrap_or("-"), "attached");
    }
    Ok(())
}

/// Runs the daemon until SIGTERM or SIGINT. `sources` describes the GeoIP data `plan` was
/// built from, for the metrics.
#[expect(
    clippy::too_many_lines,
    reason = "one event loop, easier to follow in one piece"
)]
pub async fn run(
    config: Config,
    plan: Plan,
    sources: &[SourceInfo],
    mut monitor: Monitor,
) -> Result<(), DaemonError> {
    // Bound before anything is attached, so a busy port fails first.
    let listener = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.metrics.listen,
            source,
        })?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;

    attach_all(&mut monitor, &config)?;

    let labels = Arc::new(RwLock::new(plan.labels));
    let registry = Registry::new();
    let dm = DaemonMetrics::register(&registry)?;
    dm.geoip_prefixes
        .with_label_values(&["ipv4"])
        .set(i64::try_from(plan.tables.geo.prefix_count_v4()).unwrap_or(i64::MAX));
    dm.geoip_prefixes
        .with_label_values(&["ipv6"])
        .set(i64::try_from(plan.tables.geo.prefix_count_v6()).unwrap_or(i64::MAX));
    dm.geoip_level2_blocks
        .set(i64::from(plan.tables.geo.l2_blocks()));
    dm.set_geoip_sources(sources);
    // Before any map is taken: only the maps the loader still holds are listed.
    dm.set_map_memory(&monitor.map_memory());
    registry.register(Box::new(KernelCollector::new(
        monitor.take_counters()?,
        labels.clone(),
        dm.collector_errors.clone(),
    )))?;

    let (stop_tx, _) = watch::channel(false);
    let server = {
        let mut rx = stop_tx.subscribe();
        tokio::spawn(metrics::serve(listener, registry, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }))
    };
    tracing::info!(listen = %config.metrics.listen, "serving /metrics");

    let clock = Clock::now();
    let mut log = config
        .events
        .log
        .as_deref()
        .map(|p| EventLog::open(p, clock))
        .transpose()?;
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as
    // the AsyncFd owns the ring buffer.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(monitor.take_events()?, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
    let mut flows_map: HashMap<MapData, FlowKey, FlowState> = monitor.take_flows()?;
    let mut table = FlowTable::default();
    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
    let sweep_every =
        (config.flows.idle_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut sweep_tick = tokio::time::interval(sweep_every);

    let mut handle = |kind: EventKind, record: FlowRecord, log: &mut Option<EventLog>| {
        dm.flow_events.with_label_values(&[kind.as_str()]).inc();
        if kind == EventKind::FlowStart {
            tracing::info!(group = %record.group, src = %record.src, dst = %record.dst, country = %record.country, "violation flow");
        }
        if let Some(log) = log
            && let Err(e) = log.write(kind, &record)
        {
            dm.event_errors.with_label_values(&["log_write"]).inc();
            tracing::warn!(error = %crate::error_chain(&e), "event log write failed");
        }
    };

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut table, &labels, &dm, &mut handle, &mut log);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => {
                drain(ring.get_mut(), &mut table, &labels, &dm, &mut handle, &mut log);
                if let Some(log) = log.as_mut() {
                    let _ = log.flush();
                }
            }
            _ = sweep_tick.tick() => {
                sweep(&mut flows_map, &mut table, &labels, config.flows.idle_timeout, &mut handle, &mut log);
                dm.flows_tracked.set(i64::try_from(table.len()).unwrap_or(i64::MAX));
            }
            _ = sighup.recv() => {
                tracing::warn!("SIGHUP: hot reload is not implemented yet; restart exfilmon to apply a new config");
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: detaching"); break; }
        }
    }

    drain(
        ring.get_mut(),
        &mut table,
        &labels,
        &dm,
        &mut handle,
        &mut log,
    );
    report_unreported(&flows_map, &mut table, &labels, &mut handle, &mut log);
    if let Some(log) = log.as_mut() {
        log.flush()?;
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    // Dropping the programs detaches their links.
    drop(monitor);
    tracing::info!("detached; bye");
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    table: &mut FlowTable,
    labels: &RwLock<Labels>,
    dm: &DaemonMetrics,
    handle: &mut impl FnMut(EventKind, FlowRecord, &mut Option<EventLog>),
    log: &mut Option<EventLog>,
) {
    let labels = labels
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok((kind, key, st)) => {
                let record = table.apply(kind, key, &st, &labels);
                handle(kind, record, log);
            }
            Err(e) => {
                dm.event_errors.with_label_values(&["decode"]).inc();
                tracing::warn!(error = %e, "undecodable ring buffer record");
            }
        }
    }
}

/// At shutdown: reports every tracked flow whose totals moved since its last event, so
/// the event log ends with the final counts. The flows stay in the kernel's table.
fn report_unreported(
    flows: &HashMap<MapData, FlowKey, FlowState>,
    table: &mut FlowTable,
    labels: &RwLock<Labels>,
    handle: &mut impl FnMut(EventKind, FlowRecord, &mut Option<EventLog>),
    log: &mut Option<EventLog>,
) {
    let labels = labels
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (key, st) in flows.iter().filter_map(Result::ok) {
        if st.reported_bytes != st.bytes_out + st.bytes_in {
            let record = table.apply(EventKind::FlowUpdate, key, &st, &labels);
            handle(EventKind::FlowUpdate, record, log);
        }
    }
}

/// Ends flows idle past the timeout: removes them from the kernel's table and reports
/// their final totals (unless a FIN/RST end already reported exactly these).
fn sweep(
    flows: &mut HashMap<MapData, FlowKey, FlowState>,
    table: &mut FlowTable,
    labels: &RwLock<Labels>,
    idle: Duration,
    handle: &mut impl FnMut(EventKind, FlowRecord, &mut Option<EventLog>),
    log: &mut Option<EventLog>,
) {
    let now = events::monotonic_ns();
    let idle_ns = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
    let expired: Vec<(FlowKey, FlowState)> = flows
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, st)| now.saturating_sub(st.last_ns) >= idle_ns)
        .collect();
    let labels = labels
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (key, st) in expired {
        if flows.remove(&key).is_err() {
            continue; // evicted or removed meanwhile
        }
        let record = table.apply(EventKind::FlowIdle, key, &st, &labels);
        let already_reported = st.ended != 0 && st.reported_bytes == st.bytes_out + st.bytes_in;
        if !already_reported {
            handle(EventKind::FlowIdle, record, log);
        }
    }
}
