//! The two drivers of a [`Detector`]: the daemon's ([`Live`]: wall-clock ticks, kernel flow
//! events, metrics and the state file) and replay's ([`Replay`]: the captures' timestamps,
//! no state file).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use monitor_common::flow::{FlowKey, FlowState};
use prometheus::Registry;

use super::{
    Baseline, BeaconKey, Contacts, Detection, Detector, FlowSeen, Settings, Stamp,
    metrics::DetectMetrics,
    millis,
    state::{self, StateError},
};
use crate::{
    config::Config,
    ebpf::{Counters, EbpfError},
    events::{self, Clock, EventKind},
    tables::Labels,
};

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("registering the detection metrics failed")]
    Metrics(#[from] prometheus::Error),
}

/// The first tick boundary after `now`: a multiple of `tick` since the Unix epoch.
#[must_use]
pub fn next_tick(now: SystemTime, tick: Duration) -> SystemTime {
    let tick_ms = super::ms(tick);
    Stamp::from_millis((millis(now) / tick_ms + 1) * tick_ms).0
}

/// A tracked flow as the beaconing detection sees it, started at `start`.
fn flow_seen(key: &FlowKey, st: &FlowState, labels: &Labels, start: SystemTime) -> FlowSeen {
    let (inside, remote) = events::addresses(key);
    FlowSeen {
        key: BeaconKey {
            inside,
            remote,
            remote_port: key.remote_port,
            proto: key.proto,
        },
        group: labels.group(u32::from(st.group)).to_owned(),
        country: labels.country(u32::from(st.country)),
        start,
        bytes: st.bytes_out + st.bytes_in,
    }
}

/// A DNS answer as the DNS-tunnel detection sees it.
fn dns_seen(
    at: SystemTime,
    server: IpAddr,
    client: IpAddr,
    parsed: &crate::dns::Parsed,
) -> super::tunnel::DnsSeen {
    super::tunnel::DnsSeen {
        at_ms: millis(at),
        client,
        server,
        question: parsed.question.clone(),
        txt_null_bytes: parsed.txt_null_bytes,
    }
}

/// Whether an event tells the beaconing detection something: the flow has ended (FIN/RST
/// or idle), or it is a later report of an ended flow.
fn ended(kind: EventKind, st: &FlowState) -> bool {
    matches!(kind, EventKind::FlowEnd | EventKind::FlowIdle) || st.ended != 0
}

/// The daemon's detections: ticks read the kernel class counters, flow events feed
/// beaconing, every detection is counted, and new first contacts are saved.
pub struct Live {
    detector: Detector,
    metrics: DetectMetrics,
    baseline: Baseline,
    /// Where the known contacts are saved, once loaded (first contact enabled).
    state_dir: Option<PathBuf>,
    /// New contacts not saved yet (a write failed): retried every tick.
    unsaved: bool,
    clock: Clock,
    last_tick: Option<SystemTime>,
}

impl Live {
    /// Registers the metrics and, when first contact is on, loads (or sets aside) the state.
    pub fn start(config: &Config, registry: &Registry, clock: Clock) -> Result<Self, DetectError> {
        let mut live = Self {
            detector: Detector::new(Settings::from_config(config), Contacts::new()),
            metrics: DetectMetrics::register(registry)?,
            baseline: Baseline::default(),
            state_dir: None,
            unsaved: false,
            clock,
            last_tick: None,
        };
        live.open_state(config)?;
        Ok(live)
    }

    fn open_state(&mut self, config: &Config) -> Result<(), StateError> {
        if !config.detections.first_contact.enabled || self.state_dir.is_some() {
            return Ok(());
        }
        let dir = config.detections.state_dir.clone();
        let loaded = state::load(&dir)?;
        let file = state::path(&dir);
        if let Some(aside) = &loaded.set_aside {
            self.metrics.error("state_corrupt");
            tracing::warn!(
                file = %file.display(),
                moved_to = %aside.display(),
                "the first-contact state file is corrupt: set aside, starting with no known contacts (each group's foreign countries are reported once more)"
            );
        }
        tracing::info!(file = %file.display(), contacts = loaded.contacts.len(), "first-contact state loaded");
        self.metrics.set_contacts(&loaded.contacts);
        self.detector.set_contacts(loaded.contacts);
        self.state_dir = Some(dir);
        Ok(())
    }

    /// The tick interval in force.
    #[must_use]
    pub fn tick(&self) -> Duration {
        self.detector.settings().detections.tick
    }

    /// Applies a reloaded config's thresholds (the state directory needs a restart). A
    /// reload that turns first contact on loads the state now.
    pub fn reconfigure(&mut self, config: &Config) {
        self.detector.configure(Settings::from_config(config));
        if let Err(e) = self.open_state(config) {
            tracing::error!(error = %crate::error_chain(&e), "first contact stays without its state");
        }
    }

    /// One tick at `at`: the class counters as read then.
    pub fn on_tick(
        &mut self,
        at: SystemTime,
        counters: Result<Counters, EbpfError>,
        labels: &Labels,
    ) -> Vec<Detection> {
        let start = self
            .last_tick
            .unwrap_or_else(|| at.checked_sub(self.tick()).unwrap_or(UNIX_EPOCH));
        let counters = match counters {
            Ok(c) => c,
            Err(e) => {
                // The next tick's deltas cover this one's bytes.
                self.metrics.error("counter_read");
                tracing::warn!(error = %crate::error_chain(&e), "reading the class counters for the detections failed");
                return Vec::new();
            }
        };
        self.last_tick = Some(at);
        let deltas = self.baseline.deltas(&counters, labels);
        let found = self.detector.traffic(start, at, &deltas);
        self.account(&found);
        found
    }

    /// One flow event; returns the beacon it completes.
    pub fn on_flow(
        &mut self,
        kind: EventKind,
        key: &FlowKey,
        st: &FlowState,
        labels: &Labels,
    ) -> Option<Detection> {
        if !ended(kind, st) {
            return None;
        }
        let seen = flow_seen(key, st, labels, self.clock.wall(st.first_ns));
        let found = self.detector.flow(&seen);
        self.account(found.as_slice());
        found
    }

    /// One DNS answer, received at `at`; returns the DNS-tunnel detection it completes.
    pub fn on_dns(
        &mut self,
        at: SystemTime,
        server: IpAddr,
        client: IpAddr,
        parsed: &crate::dns::Parsed,
    ) -> Option<Detection> {
        let found = self.detector.dns(&dns_seen(at, server, client, parsed));
        self.metrics.set_tunnels(self.detector.tunnels());
        self.account(found.as_slice());
        found
    }

    fn account(&mut self, found: &[Detection]) {
        for d in found {
            self.metrics.count(d);
            tracing::info!(
                detection = d.what.name(),
                group = %d.group,
                country = %d.country,
                "detection"
            );
        }
        self.metrics.set_beacons(self.detector.beacons());
        if self.detector.take_contacts_changed() {
            self.unsaved = true;
            self.metrics.set_contacts(self.detector.contacts());
        }
        if let (true, Some(dir)) = (self.unsaved, self.state_dir.as_ref()) {
            match state::save(dir, self.detector.contacts()) {
                Ok(()) => self.unsaved = false,
                Err(e) => {
                    self.metrics.error("state_write");
                    tracing::warn!(error = %crate::error_chain(&e), "saving the first-contact state failed; retried next tick");
                }
            }
        }
    }
}

/// Replay's detections: ticks on the captures' clock, flows started at their first
/// frame's timestamp, and no state file (every capture starts with no known contacts).
pub struct Replay {
    detector: Detector,
    baseline: Baseline,
    tick_ms: u64,
    /// The next tick boundary (ms), from the first frame on.
    next_tick: Option<u64>,
    last_tick: u64,
    /// Frames ran since the counters were last read.
    ran: bool,
    /// When each flow's first frame was seen.
    starts: HashMap<FlowKey, SystemTime>,
    last_frame: SystemTime,
    found: Vec<Detection>,
}

impl Replay {
    #[must_use]
    pub fn new(config: &Config) -> Self {
        Self {
            detector: Detector::new(Settings::from_config(config), Contacts::new()),
            baseline: Baseline::default(),
            tick_ms: super::ms(config.detections.tick),
            next_tick: None,
            last_tick: 0,
            ran: false,
            starts: HashMap::new(),
            last_frame: UNIX_EPOCH,
            found: Vec::new(),
        }
    }

    /// Before running a frame captured at `ts`: takes every tick that fell before it.
    pub fn before_frame(
        &mut self,
        ts: SystemTime,
        read: impl Fn() -> Result<Counters, EbpfError>,
        labels: &Labels,
    ) -> Result<(), EbpfError> {
        let t = millis(ts);
        if self.next_tick.is_none() {
            let first = t.div_ceil(self.tick_ms) * self.tick_ms;
            self.next_tick = Some(first);
            self.last_tick = first.saturating_sub(self.tick_ms);
        }
        while let Some(next) = self.next_tick.filter(|n| *n < t) {
            self.take_tick(next, &read, labels)?;
        }
        self.ran = true;
        self.last_frame = self.last_frame.max(ts);
        Ok(())
    }

    fn take_tick(
        &mut self,
        at: u64,
        read: &impl Fn() -> Result<Counters, EbpfError>,
        labels: &Labels,
    ) -> Result<(), EbpfError> {
        let deltas = if std::mem::take(&mut self.ran) {
            self.baseline.deltas(&read()?, labels)
        } else {
            Vec::new()
        };
        let found = self.detector.traffic(
            Stamp::from_millis(self.last_tick).0,
            Stamp::from_millis(at).0,
            &deltas,
        );
        self.found.extend(found);
        self.last_tick = at;
        self.next_tick = Some(at + self.tick_ms);
        Ok(())
    }

    /// A flow event drained after the frame captured at `ts`.
    pub fn on_flow(
        &mut self,
        kind: EventKind,
        key: &FlowKey,
        st: &FlowState,
        ts: SystemTime,
        labels: &Labels,
    ) {
        if kind == EventKind::FlowStart || !self.starts.contains_key(key) {
            self.starts.insert(*key, ts);
        }
        if ended(kind, st) {
            let seen = flow_seen(key, st, labels, self.starts[key]);
            self.found.extend(self.detector.flow(&seen));
        }
    }

    /// A DNS answer drained after the frame captured at `ts`.
    pub fn on_dns(
        &mut self,
        ts: SystemTime,
        server: IpAddr,
        client: IpAddr,
        parsed: &crate::dns::Parsed,
    ) {
        self.found
            .extend(self.detector.dns(&dns_seen(ts, server, client, parsed)));
    }

    /// After the last frame: the last tick, the flows still open ending idle (as the
    /// daemon's sweep would end them), and the open windows closed. Returns every
    /// detection in time order.
    pub fn finish(
        mut self,
        open_flows: &[(FlowKey, FlowState)],
        read: impl Fn() -> Result<Counters, EbpfError>,
        labels: &Labels,
    ) -> Result<Vec<Detection>, EbpfError> {
        if let Some(next) = self.next_tick.filter(|_| self.ran) {
            self.take_tick(next, &read, labels)?;
        }
        let mut open: Vec<FlowSeen> = open_flows
            .iter()
            .map(|(key, st)| {
                let start = self.starts.get(key).copied().unwrap_or(self.last_frame);
                flow_seen(key, st, labels, start)
            })
            .collect();
        open.sort_by_key(|f| f.start);
        for f in &open {
            self.found.extend(self.detector.flow(f));
        }
        self.found.extend(self.detector.flush());
        self.found.sort_by_key(|d| d.time);
        Ok(self.found)
    }
}
