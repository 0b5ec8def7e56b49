//! `exfilmon run`: attach, drain the ring buffer, sweep idle flows, serve metrics, and on
//! SIGTERM/SIGINT leave the pinned programs counting for the next daemon (or, without
//! pinning, detach).

use std::{
    collections::HashSet,
    os::fd::AsRawFd as _,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use monitor_common::flow::{FlowKey, FlowState};
use prometheus::{IntCounter, Registry};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    config::{Config, Hook as CfgHook, XdpMode as CfgMode},
    detect::{
        Detection,
        drive::{self, DetectError, Live},
    },
    ebpf::{Attached, CounterMaps, Counters, EbpfError, FlowMap, FlowReader, Hook, Monitor},
    events::{self, Clock, EventKind, EventLog, FlowRecord},
    geoip::SourceInfo,
    metrics::{self, DaemonMetrics, KernelCollector},
    pins::Pins,
    reload::{self, ReloadError, Reloaded},
    tables::{Labels, Plan},
    web,
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
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("registering metrics failed")]
    Metrics(#[from] prometheus::Error),
    #[error("starting the /metrics server's thread failed")]
    WebServer(#[source] std::io::Error),
    #[error("setting up signal handling or the ring buffer poller failed")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Pin(#[from] crate::pins::PinError),
}

/// Attaches every configured interface; an interface in a named netns is attached from a
/// thread that entered it (the link works from any namespace once made). With `pins`, each
/// link is pinned (or the pinned one takes the new program), and pinned links that no
/// interface of `config` names any more are removed, which detaches them.
pub fn attach_all(
    monitor: &mut Monitor,
    config: &Config,
    pins: Option<&Pins>,
) -> Result<(), DaemonError> {
    for iface in &config.interfaces {
        let mode = match iface.mode {
            CfgMode::Auto => aya::programs::XdpMode::Default,
            CfgMode::Native => aya::programs::XdpMode::Driver,
            CfgMode::Skb => aya::programs::XdpMode::Skb,
        };
        let hook = match iface.hook {
            CfgHook::Xdp if iface.mirror => Hook::XdpMirror(mode),
            CfgHook::Xdp => Hook::Xdp(mode),
            CfgHook::TcEgress => Hook::TcEgress,
            CfgHook::TcIngress => Hook::TcIngress,
        };
        let link_pin = pins.map(|p| p.link_path(iface));
        let link_pin = link_pin.as_deref();
        let how = match &iface.netns {
            None => monitor.attach_pinned(&iface.name, hook, link_pin)?,
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
                        monitor
                            .attach_pinned(&iface.name, hook, link_pin)
                            .map_err(DaemonError::from)
                    })
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
                })?
            }
        };
        let netns = iface.netns.as_deref().unwrap_or("-");
        match how {
            Attached::New => {
                tracing::info!(interface = %iface.name, hook = %iface.hook, netns, mirror = iface.mirror, pinned = link_pin.is_some(), "attached");
            }
            Attached::Kept => {
                tracing::info!(interface = %iface.name, hook = %iface.hook, netns, "attached: the pinned link runs this daemon's program now");
            }
            Attached::Unpinnable => {
                tracing::warn!(interface = %iface.name, hook = %iface.hook, netns, "attached through netlink (an old kernel): the link cannot be pinned and detaches when exfilmon exits");
            }
        }
    }
    if let Some(pins) = pins {
        for path in pins.stale_links(config).map_err(DaemonError::Pin)? {
            tracing::warn!(pin = %path.display(), "a pinned link that no [[interface]] names any more: removing it, which detaches its program");
            std::fs::remove_file(&path)?;
        }
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
    pins: Option<Pins>,
) -> Result<(), DaemonError> {
    // Declared after `monitor`, so dropped before it: pins this run made are removed if
    // it fails to start, and its links then go with the programs.
    let mut pins = PinGuard::new(pins);
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

    // The detections' state is loaded before anything is attached, so a bad state
    // directory fails first too.
    let clock = Clock::now();
    let registry = Registry::new();
    let detect = Live::start(&config, &registry, clock)?;

    let programs = monitor.sizes().programs;
    if programs == monitor_common::programs::COPY {
        tracing::info!(
            programs = programs.name,
            "no CAP_PERFMON or CAP_SYS_ADMIN: loaded the programs that parse a copy of each frame's headers, which CAP_BPF and CAP_NET_ADMIN allow; they count the same and cost more per packet (README: Least privilege)"
        );
    } else {
        tracing::info!(
            programs = programs.name,
            "loaded the programs that parse frames in place"
        );
    }
    attach_all(&mut monitor, &config, pins.get())?;

    let labels = Arc::new(RwLock::new(plan.labels));
    let dm = DaemonMetrics::register(&registry)?;
    dm.set_geoip_tables(&plan.tables.geo);
    dm.set_geoip_sources(sources);
    // Before any map is taken: only the maps the loader still holds are listed.
    dm.set_map_memory(&monitor.map_memory());
    dm.set_programs(&monitor.sizes().programs);
    // The collector reads the counters at scrape time, the detection ticks on their own.
    let counters = Arc::new(Mutex::new(monitor.take_counters()?));
    registry.register(Box::new(KernelCollector::new(
        counters.clone(),
        labels.clone(),
        dm.collector_errors.clone(),
    )))?;
    let watcher = new_watcher(&mut monitor, &config, &labels, &registry)?;

    let (stop_tx, _) = watch::channel(false);
    let (server, sites) = web::server(
        &web::Settings::from(&config.metrics),
        metrics::app(registry.clone()),
        web::WebMetrics::register(&registry)?,
    );
    let server = listener
        .into_std()
        .and_then(|l| server.spawn(l, stop_tx.subscribe()))
        .map_err(DaemonError::WebServer)?;
    tracing::info!(
        listen = %config.metrics.listen,
        tls = config.metrics.web.as_ref().is_some_and(|w| w.tls.is_some()),
        basic_auth = config.metrics.web.as_ref().is_some_and(|w| !w.users.is_empty()),
        "serving /metrics"
    );

    let log = config
        .events
        .log
        .as_deref()
        .map(|p| EventLog::open(p, config.events.options, clock))
        .transpose()?;
    let mut sink = EventSink::new(&dm, log);
    sink.watcher = Some(watcher);
    sink.detect = Some(detect);
    let mut detect_at = drive::next_tick(SystemTime::now(), config.detections.tick);
    let detect_sleep = tokio::time::sleep_until(until(detect_at));
    tokio::pin!(detect_sleep);
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as
    // the AsyncFd owns the ring buffer.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(monitor.take_events()?, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
    let mut flows_map = monitor.take_flows()?;
    sink.ipfix = open_ipfix(&config, clock, &registry, &flows_map)?;
    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
    let mut sweep_tick = tokio::time::interval(sweep_interval(&config));
    let mut config = config;
    let mut monitor = Some(monitor);
    let mut reloading: Option<ReloadTask> = None;
    let mut sweeping: Option<tokio::task::JoinHandle<SweepRead>> = None;
    pins.started();

    loop {
        tokio::select! {
            drained = sink.drain_when_ready(&mut ring, &labels) => {
                drained?;
            }
            _ = drain_tick.tick() => {
                sink.drain(ring.get_mut(), &labels);
                sink.flush();
            }
            () = &mut detect_sleep => {
                sink.detect_tick(detect_at, read_counters(&counters, &labels), &labels);
                let tick = sink.detect.as_ref().map_or(config.detections.tick, Live::tick);
                detect_at = drive::next_tick(SystemTime::now(), tick);
                detect_sleep.as_mut().reset(until(detect_at));
            }
            _ = sweep_tick.tick() => {
                if sweeping.is_none() {
                    let prune = sink.prune_mark(config.flows.max_entries);
                    match flows_map.reader() {
                        Ok(reader) => sweeping = Some(read_idle(reader, config.flows.idle_timeout, prune)),
                        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "the flow table cannot be read; idle flows are swept next time"),
                    }
                }
                if let Some(w) = sink.watcher.as_mut() {
                    w.expire();
                }
            }
            read = async {
                match sweeping.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            }, if sweeping.is_some() => {
                sweeping = None;
                match read {
                    Ok(read) => {
                        if let Some(tracked) = end_idle(&mut flows_map, &mut sink, &labels, read) {
                            dm.flows_tracked.set(i64::try_from(tracked).unwrap_or(i64::MAX));
                        }
                    }
                    // Only a panic in the read (a bug) gets here; the next tick sweeps again.
                    Err(e) => tracing::error!(error = %e, "the flow table sweep task failed"),
                }
            }
            _ = sighup.recv() => {
                if reloading.is_some() {
                    tracing::warn!("SIGHUP: a reload is still running; this signal is ignored");
                } else if let Some(m) = monitor.take() {
                    tracing::info!(config = %config.path.display(), "SIGHUP: reloading the config and GeoIP data");
                    reloading = Some(start_reload(m, config.clone(), labels.clone()));
                }
            }
            done = async {
                match reloading.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            }, if reloading.is_some() => {
                reloading = None;
                let Ok((m, result)) = done else {
                    // Only a cancelled runtime gets here: the task catches panics.
                    tracing::error!("the reload task was cancelled");
                    break;
                };
                monitor = Some(m);
                match result {
                    Ok(r) => {
                        finish_reload(&r, &dm);
                        if let Some(w) = sink.watcher.as_mut() {
                            let plan = watch_plan(&r.config, &labels);
                            if let Err(e) = w.configure(plan) {
                                tracing::error!(error = %crate::error_chain(&e), "writing the new watchlists failed");
                            }
                        }
                        if let Some(d) = sink.detect.as_mut() {
                            d.reconfigure(&r.config);
                        }
                        if r.config.detections.tick != config.detections.tick {
                            detect_at = drive::next_tick(SystemTime::now(), r.config.detections.tick);
                            detect_sleep.as_mut().reset(until(detect_at));
                        }
                        if r.config.flows.idle_timeout != config.flows.idle_timeout {
                            sweep_tick = tokio::time::interval(sweep_interval(&r.config));
                        }
                        sites.apply(&web::Settings::from(&r.config.metrics));
                        config = r.config;
                    }
                    Err(e) => {
                        // The gauge first. A scrape reads collectors one by one, in no fixed
                        // order, so it may still pair the new count with the old gauge.
                        dm.last_reload_successful.set(0);
                        dm.reloads.with_label_values(&["failure"]).inc();
                        tracing::error!(error = %crate::error_chain(&e), "reload refused; the previous config and tables keep running");
                    }
                }
                // Reopened on every SIGHUP, so that log rotation works as usual.
                reopen_log(&mut sink.log, &config, clock, &dm);
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
        }
    }

    // A reload holds the programs: wait for it, so that they are detached below.
    if let Some(task) = reloading.take()
        && let Ok((m, _)) = task.await
    {
        monitor = Some(m);
    }
    sink.drain(ring.get_mut(), &labels);
    report_unreported(&flows_map, &mut sink, &labels);
    // A last detection tick, so that the contacts of the last seconds are saved and logged.
    sink.detect_tick(
        SystemTime::now(),
        read_counters(&counters, &labels),
        &labels,
    );
    if let Some(log) = sink.log.as_mut() {
        log.flush()?;
        let head = log.head();
        tracing::info!(path = %log.path().display(), seq = head.seq, sha256 = %events::hex(&head.hash), "event log closed at its last line");
    }
    let _ = stop_tx.send(true);
    match tokio::task::spawn_blocking(move || server.join()).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "the /metrics server failed"),
        Ok(Err(_)) | Err(_) => tracing::error!("the /metrics server panicked"),
    }
    // Dropping the programs detaches their links, unless they are pinned.
    drop(monitor);
    if let Some(p) = pins.get() {
        tracing::info!(
            pin_dir = %p.dir().display(),
            "the programs stay attached and counting into the pinned maps for the next \
             daemon; `exfilmon cleanup --pin-dir {}` detaches them; bye",
            p.dir().display()
        );
    } else {
        tracing::info!("detached; bye");
    }
    Ok(())
}

/// The pin directory of a run, holding its lock. When this run made the pins and fails
/// before it starts serving, dropping the guard removes them, so that a failed start
/// leaves nothing behind (a directory a previous daemon filled is left as it was).
struct PinGuard {
    pins: Option<Pins>,
    undo: bool,
}

impl PinGuard {
    fn new(pins: Option<Pins>) -> Self {
        let undo = pins.as_ref().is_some_and(|p| p.writer().is_none());
        Self { pins, undo }
    }

    fn get(&self) -> Option<&Pins> {
        self.pins.as_ref()
    }

    /// The daemon runs: its pins stay from here on.
    fn started(&mut self) {
        self.undo = false;
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let Some(pins) = self.pins.take().filter(|_| self.undo) else {
            return;
        };
        let dir = pins.dir().to_owned();
        drop(pins); // the lock, which cleanup takes again
        match crate::pins::cleanup(&dir) {
            Ok(_) => {
                tracing::info!(pin_dir = %dir.display(), "removed the pins of this failed start");
            }
            Err(e) => {
                tracing::warn!(pin_dir = %dir.display(), error = %crate::error_chain(&e), "removing the pins of this failed start failed");
            }
        }
    }
}

/// The tokio instant of a wall-clock time (now, if it has passed).
fn until(t: SystemTime) -> tokio::time::Instant {
    tokio::time::Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default()
}

/// Reads the class counters for a detection tick.
fn read_counters(
    maps: &Mutex<CounterMaps>,
    labels: &RwLock<Labels>,
) -> Result<Counters, EbpfError> {
    // Labels before maps, as a scrape takes them.
    let labels = labels
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    maps.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .read(&labels)
}

/// The watchlist plan of `config` with the entry and ASN slots of `labels`.
pub fn watch_plan(config: &Config, labels: &RwLock<Labels>) -> crate::watch::Plan {
    let labels = labels
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    crate::watch::Plan::new(&config.watchlists, &labels.watch, &labels.asns)
}

/// Takes the watchlist maps, fills them and registers the DNS metrics.
fn new_watcher(
    monitor: &mut Monitor,
    config: &Config,
    labels: &RwLock<Labels>,
    registry: &Registry,
) -> Result<crate::watch::Watcher, DaemonError> {
    let metrics = crate::watch::WatchMetrics::register(registry)?;
    Ok(crate::watch::Watcher::new(
        monitor.take_watch()?,
        watch_plan(config, labels),
        metrics,
    )?)
}

/// A reload running off the event loop; it hands the programs back when done.
type ReloadTask = tokio::task::JoinHandle<(Monitor, Result<Reloaded, ReloadError>)>;

/// Starts a reload on a blocking thread: parsing GeoIP data and filling the tables takes
/// a second or more, and the ring buffer must keep draining meanwhile.
fn start_reload(mut monitor: Monitor, running: Config, labels: Arc<RwLock<Labels>>) -> ReloadTask {
    tokio::task::spawn_blocking(move || {
        // A panic must not take the programs with it (dropping them detaches them).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reload::reload(&mut monitor, &running, &labels)
        }))
        .unwrap_or_else(|_| Err(ReloadError::Panicked));
        (monitor, result)
    })
}

/// Logs and exports what a reload applied.
fn finish_reload(r: &Reloaded, dm: &DaemonMetrics) {
    dm.set_geoip_tables(&r.geo);
    dm.set_geoip_sources(&r.sources);
    // The gauges first: a scrape that sees the success counted sees them.
    dm.config_applied();
    dm.reloads.with_label_values(&["success"]).inc();
    tracing::info!(
        generation = r.installed.generation,
        ranges_v4 = r.geo.v4.len(),
        level2_blocks = r.installed.l2_used,
        ranges_v6 = r.geo.v6.len(),
        v6_node_words = r.installed.v6_words,
        v6_trie_prefixes = r.installed.v6_trie,
        waited_for_programs_ms = r.installed.waited.map_or(0, |w| w.as_millis()),
        groups = r.config.groups.len(),
        "reloaded; the new tables are live"
    );
    if !r.restart_needed.is_empty() {
        tracing::warn!(
            keys = %r.restart_needed.join(", "),
            "these settings changed but take effect only after a restart; their running values are kept"
        );
    }
}

/// Reopens the event log at the path `config` names (or closes it), with its rotation and
/// hash chain settings; the sequence and the chain carry on. On failure the old log stays
/// open.
fn reopen_log(log: &mut Option<EventLog>, config: &Config, clock: Clock, dm: &DaemonMetrics) {
    if let Some(old) = log.as_mut()
        && let Err(e) = old.flush()
    {
        dm.event_errors.with_label_values(&["log_write"]).inc();
        tracing::warn!(error = %crate::error_chain(&e), "flushing the event log failed");
    }
    match config
        .events
        .log
        .as_deref()
        .map(|p| EventLog::reopen(p, config.events.options, clock, log.as_ref()))
    {
        None => *log = None,
        Some(Ok(new)) => *log = Some(new),
        Some(Err(e)) => {
            dm.event_errors.with_label_values(&["log_write"]).inc();
            tracing::error!(error = %crate::error_chain(&e), "reopening the event log failed; writing to the old one");
        }
    }
}

/// The IPFIX exporter of `[ipfix]`, if it names collectors. The flows a previous daemon
/// left in the pinned table count as exported (it exported them when it stopped).
fn open_ipfix(
    config: &Config,
    clock: Clock,
    registry: &Registry,
    flows: &FlowMap,
) -> Result<Option<crate::ipfix::Exporter>, DaemonError> {
    let settings = &config.ipfix;
    if settings.collectors.is_empty() {
        return Ok(None);
    }
    let metrics = crate::ipfix::IpfixMetrics::register(registry)?;
    let mut exporter = crate::ipfix::Exporter::open(settings.clone(), clock, metrics)?;
    match flows.select(|_| true) {
        Ok(left) => exporter.assume_exported(&left),
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "reading the flow table failed; flows of a previous daemon are exported whole");
        }
    }
    let collectors: Vec<String> = settings
        .collectors
        .iter()
        .map(ToString::to_string)
        .collect();
    tracing::info!(
        collectors = %collectors.join(","),
        observation_domain = settings.observation_domain,
        enterprise_number = settings.enterprise_number,
        "exporting IPFIX flow records over UDP"
    );
    Ok(Some(exporter))
}

/// How often idle flows are swept: a quarter of the idle timeout, within 250 ms..5 s.
fn sweep_interval(config: &Config) -> Duration {
    (config.flows.idle_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// The daemon's end of the ring buffer: every event counted by kind, and written to the
/// event log when there is one. Nothing is kept per flow here: the kernel's flow table
/// holds the state, and each event carries it whole (the detections and the IPFIX
/// exporter, when configured, keep what they need). The benchmark drains through the same
/// code.
pub struct EventSink {
    /// The JSON-lines event log, if configured.
    pub log: Option<EventLog>,
    /// DNS learning for watched domains (none in the drain benchmark).
    pub watcher: Option<crate::watch::Watcher>,
    /// The detections (none in the drain benchmark).
    pub detect: Option<Live>,
    /// The IPFIX exporter, when `[ipfix]` names collectors.
    pub ipfix: Option<crate::ipfix::Exporter>,
    /// `exfilmon_flow_events_total` by kind, resolved once (not per event).
    kinds: [IntCounter; 4],
    decode_errors: IntCounter,
    log_errors: IntCounter,
}

impl EventSink {
    #[must_use]
    pub fn new(dm: &DaemonMetrics, log: Option<EventLog>) -> Self {
        let kind = |k: EventKind| dm.flow_events.with_label_values(&[k.as_str()]);
        Self {
            log,
            watcher: None,
            detect: None,
            ipfix: None,
            kinds: [
                kind(EventKind::FlowStart),
                kind(EventKind::FlowUpdate),
                kind(EventKind::FlowEnd),
                kind(EventKind::FlowIdle),
            ],
            decode_errors: dm.event_errors.with_label_values(&["decode"]),
            log_errors: dm.event_errors.with_label_values(&["log_write"]),
        }
    }

    /// The IPFIX exporter's mark ([`crate::ipfix::Exporter::mark`]) when it remembers more
    /// flows than the kernel's table holds (`max_entries`), so that the next sweep reads
    /// every key for it: the kernel evicted the others, and they end without an event.
    #[must_use]
    pub fn prune_mark(&self, max_entries: u32) -> Option<u64> {
        self.ipfix
            .as_ref()
            .filter(|x| x.tracked() > max_entries as usize)
            .map(crate::ipfix::Exporter::mark)
    }

    /// Waits until the kernel wakes the ring buffer's reader, then drains the ring; returns
    /// how many records there were.
    ///
    /// Readiness is cleared *before* the drain, so a wakeup that arrives while draining
    /// stays pending for the next call. Clearing it after the drain would lose such a
    /// wakeup, and below `wakeup_bytes` of unread data the kernel does not wake the reader
    /// again.
    ///
    /// # Errors
    /// When polling the ring buffer's fd fails.
    pub async fn drain_when_ready(
        &mut self,
        ring: &mut AsyncFd<RingBuf<MapData>>,
        labels: &RwLock<Labels>,
    ) -> std::io::Result<u64> {
        let mut guard = ring.readable_mut().await?;
        guard.clear_ready();
        Ok(self.drain(guard.get_inner_mut(), labels))
    }

    /// Drains every record in the ring; returns how many there were.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>, labels: &RwLock<Labels>) -> u64 {
        let labels = labels
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            match events::decode_record(&item) {
                Ok(events::Record::Flow(kind, key, st)) => self.handle(kind, &key, &st, &labels),
                Ok(events::Record::Dns {
                    payload,
                    tcp,
                    cut,
                    server,
                    client,
                }) => {
                    let parsed = self
                        .watcher
                        .as_mut()
                        .and_then(|w| w.answer(payload, tcp, cut));
                    if let (Some(parsed), Some(detect)) = (parsed, self.detect.as_mut())
                        && let Some(found) =
                            detect.on_dns(SystemTime::now(), server, client, &parsed)
                    {
                        self.log_detections(&[found]);
                    }
                }
                Ok(events::Record::Hello { packet, cut }) => {
                    if let Some(w) = self.watcher.as_mut() {
                        w.hello(packet, cut);
                    }
                }
                Err(e) => {
                    self.decode_errors.inc();
                    tracing::warn!(error = %e, "undecodable ring buffer record");
                }
            }
        }
        n
    }

    /// Applies one flow event.
    pub fn handle(&mut self, kind: EventKind, key: &FlowKey, st: &FlowState, labels: &Labels) {
        self.kinds[kind as usize].inc();
        if kind == EventKind::FlowStart {
            // Per flow, so debug: the event log is the record of violation flows.
            tracing::debug!(?key, "violation flow");
        }
        if let Some(log) = self.log.as_mut()
            && let Err(e) = log.write(kind, &FlowRecord::new(key, st, labels))
        {
            self.log_errors.inc();
            tracing::warn!(error = %crate::error_chain(&e), "event log write failed");
        }
        if let Some(x) = self.ipfix.as_mut() {
            x.on_event(kind, key, st, labels);
        }
        self.detect_flow(kind, key, st, labels);
    }

    /// Passes a flow event to the beaconing detection.
    fn detect_flow(&mut self, kind: EventKind, key: &FlowKey, st: &FlowState, labels: &Labels) {
        if let Some(found) = self
            .detect
            .as_mut()
            .and_then(|d| d.on_flow(kind, key, st, labels))
        {
            self.log_detections(&[found]);
        }
    }

    /// A detection tick at `at` with the class counters read then.
    pub fn detect_tick(
        &mut self,
        at: SystemTime,
        counters: Result<Counters, EbpfError>,
        labels: &RwLock<Labels>,
    ) {
        let Some(detect) = self.detect.as_mut() else {
            return;
        };
        let found = {
            let labels = labels
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            detect.on_tick(at, counters, &labels)
        };
        self.log_detections(&found);
    }

    fn log_detections(&mut self, found: &[Detection]) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        for d in found {
            if let Err(e) = log.write_detection(d) {
                self.log_errors.inc();
                tracing::warn!(error = %crate::error_chain(&e), "event log write failed");
            }
        }
    }

    /// Writes out what the event log buffers and sends the IPFIX records waiting for a
    /// message.
    fn flush(&mut self) {
        if let Some(log) = self.log.as_mut()
            && let Err(e) = log.flush()
        {
            self.log_errors.inc();
            tracing::warn!(error = %crate::error_chain(&e), "event log flush failed");
        }
        if let Some(x) = self.ipfix.as_mut() {
            x.flush();
        }
    }

    /// Forgets a flow that ended with nothing left to report.
    fn forget(&mut self, key: &FlowKey) {
        if let Some(x) = self.ipfix.as_mut() {
            x.forget(key);
        }
    }
}

/// At shutdown: reports every tracked flow whose totals moved since its last event, so
/// the event log ends with the final counts, and exports to IPFIX what each flow's records
/// do not carry yet (a flow of one packet has had no record before). The flows stay in the
/// kernel's table.
fn report_unreported(flows: &FlowMap, sink: &mut EventSink, labels: &RwLock<Labels>) {
    let all = match flows.select(|_| true) {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "reading the flow table at shutdown failed; final totals are not logged");
            return;
        }
    };
    let labels = labels
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (key, st) in &all {
        if st.reported_bytes != st.bytes_out + st.bytes_in {
            sink.handle(EventKind::FlowUpdate, key, st, &labels);
        }
    }
    if let Some(x) = sink.ipfix.as_mut() {
        // Flows with nothing new export nothing.
        for (key, st) in &all {
            x.on_event(EventKind::FlowUpdate, key, st, &labels);
        }
        x.flush();
    }
}

/// What a sweep read of the flow table found.
pub struct Sweep {
    /// The flows idle past the timeout.
    idle: Vec<(FlowKey, FlowState)>,
    /// How many flows the table held.
    held: usize,
    /// Every key the table held, when the IPFIX exporter asked for them, with its mark
    /// ([`EventSink::prune_mark`]).
    present: Option<(u64, HashSet<FlowKey>)>,
}

/// A sweep's read, or why the table could not be read.
pub type SweepRead = Result<Sweep, crate::ebpf::EbpfError>;

/// Starts a sweep: reads the flow table for flows idle past the timeout on a blocking
/// thread, so that the event loop keeps draining the ring buffer meanwhile (at 1M flows
/// the read takes about a second, and a 4 MiB ring holds about 16 ms of events at 2M/s).
/// With `prune` (an IPFIX exporter's mark) the same pass collects every key, for the
/// exporter to forget the flows the kernel evicted. [`end_idle`] takes the result. The
/// benchmark sweeps through both too.
#[must_use]
pub fn read_idle(
    reader: FlowReader,
    idle: Duration,
    prune: Option<u64>,
) -> tokio::task::JoinHandle<SweepRead> {
    let now = events::monotonic_ns();
    let idle_ns = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
    tokio::task::spawn_blocking(move || {
        let mut idle = Vec::new();
        let mut present = prune.map(|mark| (mark, HashSet::new()));
        let held = reader.for_each(|key, st| {
            if now.saturating_sub(st.last_ns) >= idle_ns {
                idle.push((*key, *st));
            }
            if let Some((_, keys)) = present.as_mut() {
                keys.insert(*key);
            }
        })?;
        Ok(Sweep {
            idle,
            held,
            present,
        })
    })
}

/// Ends the idle flows a sweep read ([`read_idle`]): removes them from the kernel's table
/// and reports their final totals (unless a FIN/RST end already reported exactly these).
/// When the read collected every key, the IPFIX exporter forgets the flows it no longer
/// holds: the kernel evicted them from its full table, so they end without an event.
/// Returns how many flows the table holds after it (None when it could not be read).
pub fn end_idle(
    flows: &mut FlowMap,
    sink: &mut EventSink,
    labels: &RwLock<Labels>,
    read: SweepRead,
) -> Option<usize> {
    let Sweep {
        idle: expired,
        mut held,
        present,
    } = match read {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "reading the flow table failed; idle flows are swept next time");
            return None;
        }
    };
    let labels = labels
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (key, st) in expired {
        if !flows.remove(&key) {
            continue; // evicted or removed meanwhile
        }
        held = held.saturating_sub(1);
        let already_reported = st.ended != 0 && st.reported_bytes == st.bytes_out + st.bytes_in;
        if already_reported {
            sink.forget(&key);
            // Its last bytes (the packets after FIN) still count for beaconing.
            sink.detect_flow(EventKind::FlowIdle, &key, &st, &labels);
        } else {
            sink.handle(EventKind::FlowIdle, &key, &st, &labels);
        }
    }
    if let (Some((mark, keys)), Some(x)) = (present, sink.ipfix.as_mut()) {
        x.retain_since(mark, |k| keys.contains(k));
    }
    Some(held)
}
