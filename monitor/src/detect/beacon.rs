//! Beaconing: small flows from one inside address to one remote address, port and
//! protocol, started at regular intervals (a phone calling home at every start, malware
//! checking in).
//!
//! A flow counts once it has ended (TCP FIN/RST, or idle), with its start time and its
//! bytes in both directions; a later report of the same flow (same start) only updates its
//! bytes. The last `min_flows` flows of each destination are kept in start order. They
//! make a beacon when every one is small and every interval between their starts lies
//! within `min_interval..=max_interval` and within ±`max_jitter` of the intervals' mean.
//! A beacon is reported once, and again only after its pattern broke and formed anew.
//!
//! At most `max_entries` destinations are remembered; the least recently seen one is
//! evicted (and counted) to make room.

use std::{collections::VecDeque, net::IpAddr, num::NonZeroUsize, time::SystemTime};

use lru::LruCache;

use super::{Detection, Stamp, What, config::Beaconing, millis};

/// A destination of beacons: the inside address, the remote address, port and protocol
/// (not the inside port, which changes with every connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BeaconKey {
    pub inside: IpAddr,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub proto: u8,
}

/// One ended flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSeen {
    pub key: BeaconKey,
    pub group: String,
    pub country: String,
    /// When its first packet was seen.
    pub start: SystemTime,
    /// Its layer-3 bytes, both directions.
    pub bytes: u64,
}

struct Entry {
    group: String,
    country: String,
    /// (start in ms since the epoch, bytes), oldest first, at most `min_flows`.
    flows: VecDeque<(u64, u64)>,
    /// The current pattern was reported.
    reported: bool,
}

/// The beaconing detector's state.
pub struct Beacons {
    entries: LruCache<BeaconKey, Entry>,
    evictions: u64,
}

impl Beacons {
    #[must_use]
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: LruCache::new(NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN)),
            evictions: 0,
        }
    }

    /// Destinations remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Destinations evicted to make room, since start.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Applies a new `max_entries`; entries beyond it are evicted (and counted).
    pub fn resize(&mut self, max_entries: usize) {
        let before = self.entries.len();
        self.entries
            .resize(NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN));
        self.evictions += (before - self.entries.len()) as u64;
    }

    /// Takes one ended flow; returns the beacon it completes, if it does.
    pub fn observe(&mut self, cfg: &Beaconing, flow: &FlowSeen) -> Option<Detection> {
        if !self.entries.contains(&flow.key) {
            let fresh = Entry {
                group: String::new(),
                country: String::new(),
                flows: VecDeque::with_capacity(cfg.min_flows + 1),
                reported: false,
            };
            if self.entries.push(flow.key, fresh).is_some() {
                self.evictions += 1;
            }
        }
        let entry = self.entries.get_mut(&flow.key)?;
        entry.group.clone_from(&flow.group);
        entry.country.clone_from(&flow.country);
        let start = millis(flow.start);
        match entry.flows.binary_search_by_key(&start, |(s, _)| *s) {
            Ok(i) => entry.flows[i].1 = entry.flows[i].1.max(flow.bytes),
            Err(i) => entry.flows.insert(i, (start, flow.bytes)),
        }
        while entry.flows.len() > cfg.min_flows {
            entry.flows.pop_front();
        }
        if entry.flows.len() < cfg.min_flows {
            return None;
        }
        let Some(found) = pattern(cfg, &entry.flows) else {
            entry.reported = false;
            return None;
        };
        if entry.reported {
            return None;
        }
        entry.reported = true;
        Some(Detection {
            time: Stamp::from_millis(found.last),
            group: entry.group.clone(),
            country: entry.country.clone(),
            what: What::Beaconing {
                src: flow.key.inside,
                dst: flow.key.remote,
                proto: flow.key.proto,
                dport: flow.key.remote_port,
                flows: entry.flows.len(),
                interval_secs: found.mean_ms / 1000.0,
                jitter: found.jitter,
                max_flow_bytes: found.max_bytes,
                first_seen: Stamp::from_millis(found.first),
                last_seen: Stamp::from_millis(found.last),
            },
        })
    }
}

/// A regular pattern of small flows.
struct Pattern {
    first: u64,
    last: u64,
    mean_ms: f64,
    /// The largest deviation of an interval from the mean, relative to the mean.
    jitter: f64,
    max_bytes: u64,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "intervals in ms are far below 2^52"
)]
fn pattern(cfg: &Beaconing, flows: &VecDeque<(u64, u64)>) -> Option<Pattern> {
    let max_bytes = flows.iter().map(|(_, b)| *b).max()?;
    if max_bytes > cfg.max_flow_bytes {
        return None;
    }
    let min = u64::try_from(cfg.min_interval.as_millis()).unwrap_or(u64::MAX);
    let max = u64::try_from(cfg.max_interval.as_millis()).unwrap_or(u64::MAX);
    let intervals: Vec<u64> = flows
        .iter()
        .zip(flows.iter().skip(1))
        .map(|((a, _), (b, _))| b - a)
        .collect();
    if intervals.iter().any(|i| *i < min || *i > max) {
        return None;
    }
    let mean = intervals.iter().sum::<u64>() as f64 / intervals.len() as f64;
    let jitter = intervals
        .iter()
        .map(|i| (*i as f64 - mean).abs() / mean)
        .fold(0.0, f64::max);
    (jitter <= cfg.max_jitter).then(|| Pattern {
        first: flows.front().map_or(0, |f| f.0),
        last: flows.back().map_or(0, |f| f.0),
        mean_ms: mean,
        jitter,
        max_bytes,
    })
}
