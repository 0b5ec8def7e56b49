//! Detections: first contact of a group with a foreign country, upload/download
//! asymmetry, volume above a threshold (all per group × country), and beaconing.
//!
//! [`Detector`] is pure: timestamps and observations go in, [`Detection`]s come out, and no
//! clock is read. The daemon ([`drive::Live`]) drives it with wall-clock ticks and the
//! kernel's flow events; `exfilmon replay` ([`drive::Replay`]) with the packets' capture
//! timestamps. Both read the same kernel class counters at the same tick boundaries, so a
//! capture replayed gives the detections the daemon gave.
//!
//! Sources:
//! - first contact, asymmetry and volume: the kernel's class counters (group × country ×
//!   direction × verdict, every packet), read every `tick_secs`, on multiples of it since
//!   the Unix epoch. The bytes counted in `(t - tick, t]` are one [`Traffic`] sample per
//!   (group, country).
//! - beaconing: the flow events the daemon receives. Only tracked flows arrive: violations,
//!   watchlist hits, and (with `[flows] track_unknown`) flows to unknown countries, so
//!   beacons to allowed or domestic destinations are not seen.
//!
//! Windows (asymmetry, volume) are fixed, not sliding: `[k × window, (k + 1) × window)`
//! since the Unix epoch, evaluated when the tick at their end has been taken.

pub mod beacon;
pub mod config;
pub mod drive;
pub mod metrics;
pub mod state;
#[cfg(test)]
mod tests;
pub mod tunnel;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

pub use self::{
    beacon::{BeaconKey, Beacons, FlowSeen},
    config::Detections,
    state::Contacts,
};
use crate::{ebpf::Counters, tables::Labels};

/// The country label of addresses no GeoIP source knows: never a first contact.
const UNKNOWN_COUNTRY: &str = crate::tables::UNKNOWN_COUNTRY;

/// Milliseconds since the Unix epoch (0 before it).
#[must_use]
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A point in time, written as RFC 3339 with milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(pub SystemTime);

impl Stamp {
    #[must_use]
    pub fn from_millis(ms: u64) -> Self {
        Self(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// One detection: a line of the event log (`"event": "detection"`) and of replay's
/// `detections`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    /// When: the end of the tick or window it was found in, or a beacon's last flow start.
    pub time: Stamp,
    #[serde(flatten)]
    pub what: What,
    pub group: String,
    /// Empty (and left out of the JSON) for DNS tunnels.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub country: String,
}

/// What was detected, with its figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "detection", rename_all = "snake_case")]
pub enum What {
    /// The group sent bytes to a foreign country it never reached before.
    FirstContact {
        window_start: Stamp,
        window_end: Stamp,
        bytes_out: u64,
    },
    /// Outbound bytes above `ratio` × inbound bytes, and at least `min_bytes`, in a window.
    Asymmetry {
        window_start: Stamp,
        window_end: Stamp,
        bytes_out: u64,
        bytes_in: u64,
        /// Outbound ÷ inbound; null when nothing came back.
        ratio: Option<f64>,
        threshold_ratio: f64,
        min_bytes: u64,
    },
    /// Outbound bytes at least `min_bytes` in a window.
    Volume {
        window_start: Stamp,
        window_end: Stamp,
        bytes_out: u64,
        bytes_in: u64,
        min_bytes: u64,
    },
    /// Regular small flows to one destination.
    Beaconing {
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        dport: u16,
        /// Flows in the pattern.
        flows: usize,
        /// Their mean interval.
        interval_secs: f64,
        /// The largest deviation of an interval from the mean, relative to the mean.
        jitter: f64,
        max_flow_bytes: u64,
        first_seen: Stamp,
        last_seen: Stamp,
    },
    /// DNS-tunnel signs from one inside client in a window (`country` is empty: the
    /// tunnel's far end hides behind the resolver).
    DnsTunnel {
        client: IpAddr,
        /// The server that answered (the client's resolver).
        server: IpAddr,
        sign: tunnel::Sign,
        window_start: Stamp,
        window_end: Stamp,
        /// The client's answers, long names, high-entropy names and TXT/NULL answer bytes
        /// in the window so far.
        answers: u64,
        long_names: u64,
        high_entropy_names: u64,
        txt_null_bytes: u64,
        /// The last long or high-entropy name seen.
        example: Option<String>,
    },
}

impl What {
    /// The detection's name, as the event log and the metrics name it.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::FirstContact { .. } => "first_contact",
            Self::Asymmetry { .. } => "asymmetry",
            Self::Volume { .. } => "volume",
            Self::Beaconing { .. } => "beaconing",
            Self::DnsTunnel { .. } => "dns_tunnel",
        }
    }
}

/// Bytes one group exchanged with one country in one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traffic {
    pub group: String,
    pub country: String,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// The class counters at the last tick, to take the next tick's deltas from. The kernel's
/// counters start at zero when the programs are loaded, and so does a baseline.
#[derive(Debug, Default)]
pub struct Baseline {
    /// (group slot, country slot) → (outbound bytes, inbound bytes).
    last: HashMap<(u32, u32), (u64, u64)>,
}

impl Baseline {
    /// The bytes per (group, country) since the last call, in name order; pairs that did
    /// not move are left out.
    pub fn deltas(&mut self, counters: &Counters, labels: &Labels) -> Vec<Traffic> {
        let mut now: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
        for (index, c) in &counters.classes {
            let (group, country, dir, _) = monitor_common::class::class_parts(*index);
            let e = now.entry((group, country)).or_default();
            if dir == monitor_common::class::DIR_OUTBOUND {
                e.0 += c.bytes;
            } else {
                e.1 += c.bytes;
            }
        }
        let mut out: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for (slots, (o, i)) in &now {
            let (lo, li) = self.last.get(slots).copied().unwrap_or_default();
            // A counter below its last value was reset: all of it is new.
            let d = |now: u64, last: u64| if now >= last { now - last } else { now };
            let (dout, din) = (d(*o, lo), d(*i, li));
            if dout != 0 || din != 0 {
                let e = out
                    .entry((labels.group(slots.0).to_owned(), labels.country(slots.1)))
                    .or_default();
                e.0 += dout;
                e.1 += din;
            }
        }
        self.last = now;
        out.into_iter()
            .map(|((group, country), (bytes_out, bytes_in))| Traffic {
                group,
                country,
                bytes_out,
                bytes_in,
            })
            .collect()
    }
}

/// What a [`Detector`] runs with: `[detections]` and the home countries.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub detections: Detections,
    /// `[home] countries`, as codes: never a first contact, and left out of asymmetry and
    /// volume unless `include_domestic`.
    pub home: BTreeSet<String>,
    /// The inside networks by group: whose DNS client an address is.
    pub inside: tunnel::Inside,
}

impl Settings {
    #[must_use]
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            detections: config.detections.clone(),
            home: config
                .home
                .countries
                .iter()
                .map(ToString::to_string)
                .collect(),
            inside: tunnel::Inside::from_config(config),
        }
    }
}

/// Sums per (group, country) over one fixed window.
#[derive(Debug, Default)]
struct Window {
    /// The open window's number (its start ÷ its length), if one is open.
    index: Option<u64>,
    sums: BTreeMap<(String, String), (u64, u64)>,
}

/// A window that ended, with its sums.
struct Closed {
    start: u64,
    end: u64,
    sums: BTreeMap<(String, String), (u64, u64)>,
}

impl Window {
    /// Adds one tick's samples, `(start, end]` in ms; returns the windows that ended.
    fn add(&mut self, len_ms: u64, start: u64, end: u64, samples: &[&Traffic]) -> Vec<Closed> {
        let mut closed = Vec::new();
        let index = start / len_ms;
        if self.index.is_some_and(|i| i != index) {
            closed.extend(self.close(len_ms));
        }
        if !samples.is_empty() {
            self.index = Some(index);
            for s in samples {
                let e = self
                    .sums
                    .entry((s.group.clone(), s.country.clone()))
                    .or_default();
                e.0 += s.bytes_out;
                e.1 += s.bytes_in;
            }
        }
        if self.index.is_some() && end >= (index + 1) * len_ms {
            closed.extend(self.close(len_ms));
        }
        closed
    }

    fn close(&mut self, len_ms: u64) -> Option<Closed> {
        let index = self.index.take()?;
        Some(Closed {
            start: index * len_ms,
            end: (index + 1) * len_ms,
            sums: std::mem::take(&mut self.sums),
        })
    }
}

/// The detections' state; see the module's docs.
pub struct Detector {
    settings: Settings,
    contacts: Contacts,
    contacts_changed: bool,
    asymmetry: Window,
    volume: Window,
    beacons: Beacons,
    tunnels: tunnel::Tunnels,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Detector {
    /// A detector that knows `contacts` (from the state file, or none).
    #[must_use]
    pub fn new(settings: Settings, contacts: Contacts) -> Self {
        let beacons = Beacons::new(settings.detections.beaconing.max_entries);
        let tunnels = tunnel::Tunnels::new(settings.detections.dns_tunnel.max_entries);
        Self {
            settings,
            contacts,
            contacts_changed: false,
            asymmetry: Window::default(),
            volume: Window::default(),
            beacons,
            tunnels,
        }
    }

    /// One DNS answer: the DNS-tunnel detection, for inside clients only.
    pub fn dns(&mut self, seen: &tunnel::DnsSeen) -> Option<Detection> {
        let Self {
            settings, tunnels, ..
        } = self;
        let cfg = &settings.detections.dns_tunnel;
        if !cfg.enabled {
            return None;
        }
        let group = settings.inside.group(seen.client)?;
        tunnels.see(cfg, group, seen)
    }

    /// The DNS-tunnel detection's clients.
    #[must_use]
    pub fn tunnels(&self) -> &tunnel::Tunnels {
        &self.tunnels
    }

    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Applies new thresholds. A window whose length changed starts afresh: its partial
    /// sums are dropped.
    pub fn configure(&mut self, settings: Settings) {
        let old = &self.settings.detections;
        let new = &settings.detections;
        if old.asymmetry.window != new.asymmetry.window {
            self.asymmetry = Window::default();
        }
        if old.volume.window != new.volume.window {
            self.volume = Window::default();
        }
        if old.beaconing.max_entries != new.beaconing.max_entries {
            self.beacons.resize(new.beaconing.max_entries);
        }
        if old.dns_tunnel.max_entries != new.dns_tunnel.max_entries {
            self.tunnels.resize(new.dns_tunnel.max_entries);
        }
        self.settings = settings;
    }

    /// The known (group, foreign country) pairs.
    #[must_use]
    pub fn contacts(&self) -> &Contacts {
        &self.contacts
    }

    /// Replaces the known pairs (state loaded after start, when a reload enables first
    /// contact).
    pub fn set_contacts(&mut self, contacts: Contacts) {
        self.contacts = contacts;
        self.contacts_changed = false;
    }

    /// Whether new pairs were learned since the last call (the state needs writing).
    pub fn take_contacts_changed(&mut self) -> bool {
        std::mem::take(&mut self.contacts_changed)
    }

    #[must_use]
    pub fn beacons(&self) -> &Beacons {
        &self.beacons
    }

    /// One tick: the bytes counted in `(start, end]`.
    pub fn traffic(
        &mut self,
        start: SystemTime,
        end: SystemTime,
        samples: &[Traffic],
    ) -> Vec<Detection> {
        let mut out = Vec::new();
        let d = self.settings.detections.clone();
        let (start_ms, end_ms) = (millis(start), millis(end));
        if d.first_contact.enabled {
            for s in samples {
                let foreign =
                    s.country != UNKNOWN_COUNTRY && !self.settings.home.contains(&s.country);
                if s.bytes_out == 0 || !foreign || !self.contacts.insert(&s.group, &s.country, end)
                {
                    continue;
                }
                self.contacts_changed = true;
                out.push(Detection {
                    time: Stamp(end),
                    group: s.group.clone(),
                    country: s.country.clone(),
                    what: What::FirstContact {
                        window_start: Stamp(start),
                        window_end: Stamp(end),
                        bytes_out: s.bytes_out,
                    },
                });
            }
        }
        let counted: Vec<&Traffic> = samples
            .iter()
            .filter(|s| d.include_domestic || !self.settings.home.contains(&s.country))
            .collect();
        if d.asymmetry.enabled {
            for w in self
                .asymmetry
                .add(ms(d.asymmetry.window), start_ms, end_ms, &counted)
            {
                self.asymmetric(&w, &mut out);
            }
        }
        if d.volume.enabled {
            for w in self
                .volume
                .add(ms(d.volume.window), start_ms, end_ms, &counted)
            {
                self.voluminous(&w, &mut out);
            }
        }
        out
    }

    /// Ends the open windows as if time had reached their ends with no more traffic: what
    /// a daemon that kept running would report. Replay calls it after the last frame.
    pub fn flush(&mut self) -> Vec<Detection> {
        let mut out = Vec::new();
        let d = &self.settings.detections;
        let (a, v) = (ms(d.asymmetry.window), ms(d.volume.window));
        if let Some(w) = self.asymmetry.close(a) {
            self.asymmetric(&w, &mut out);
        }
        if let Some(w) = self.volume.close(v) {
            self.voluminous(&w, &mut out);
        }
        out
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "a ratio of byte counts: f64 precision is plenty"
    )]
    fn asymmetric(&self, w: &Closed, out: &mut Vec<Detection>) {
        let a = &self.settings.detections.asymmetry;
        for ((group, country), (bytes_out, bytes_in)) in &w.sums {
            if *bytes_out < a.min_bytes || (*bytes_out as f64) <= a.ratio * (*bytes_in as f64) {
                continue;
            }
            out.push(Detection {
                time: Stamp::from_millis(w.end),
                group: group.clone(),
                country: country.clone(),
                what: What::Asymmetry {
                    window_start: Stamp::from_millis(w.start),
                    window_end: Stamp::from_millis(w.end),
                    bytes_out: *bytes_out,
                    bytes_in: *bytes_in,
                    ratio: (*bytes_in != 0).then(|| *bytes_out as f64 / *bytes_in as f64),
                    threshold_ratio: a.ratio,
                    min_bytes: a.min_bytes,
                },
            });
        }
    }

    fn voluminous(&self, w: &Closed, out: &mut Vec<Detection>) {
        let v = &self.settings.detections.volume;
        for ((group, country), (bytes_out, bytes_in)) in &w.sums {
            if *bytes_out < v.min_bytes {
                continue;
            }
            out.push(Detection {
                time: Stamp::from_millis(w.end),
                group: group.clone(),
                country: country.clone(),
                what: What::Volume {
                    window_start: Stamp::from_millis(w.start),
                    window_end: Stamp::from_millis(w.end),
                    bytes_out: *bytes_out,
                    bytes_in: *bytes_in,
                    min_bytes: v.min_bytes,
                },
            });
        }
    }

    /// One ended flow (or a later report of one); returns the beacon it completes.
    pub fn flow(&mut self, flow: &FlowSeen) -> Option<Detection> {
        let cfg = &self.settings.detections.beaconing;
        if !cfg.enabled {
            return None;
        }
        self.beacons.observe(cfg, flow)
    }
}
