//! The detections' metrics. Labels are group and country only (both bounded by the config
//! and the country table); never an address or a port.

use prometheus::{
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, core::Collector,
};

use super::{Beacons, Contacts, Detection, What};

const LABELS: [&str; 2] = ["group", "country"];

/// Why a detection could not do its work.
pub const ERROR_REASONS: [&str; 3] = ["state_corrupt", "state_write", "counter_read"];

#[derive(Clone)]
pub struct DetectMetrics {
    pub first_contacts: IntCounterVec,
    pub first_contact_time: IntGaugeVec,
    pub asymmetry: IntCounterVec,
    pub volume: IntCounterVec,
    pub beaconing: IntCounterVec,
    pub last_time: IntGaugeVec,
    pub beacon_destinations: IntGauge,
    pub beacon_evictions: IntCounter,
    pub dns_tunnel: IntCounterVec,
    pub dns_tunnel_evictions: IntCounter,
    pub errors: IntCounterVec,
}

impl DetectMetrics {
    /// The metrics, not registered anywhere.
    ///
    /// # Panics
    /// Never: the definitions are static.
    #[must_use]
    pub fn new() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &LABELS).expect("static metric definition")
        };
        let m = Self {
            first_contacts: counter(
                "exfilmon_detection_first_contacts_total",
                "Groups that sent data to a foreign country they had never reached before (first contact), by group and country; each pair counts once over the life of the state file.",
            ),
            first_contact_time: IntGaugeVec::new(
                Opts::new(
                    "exfilmon_detection_first_contact_timestamp_seconds",
                    "When each group first sent data to each foreign country it has reached, as the state file records it.",
                ),
                &LABELS,
            )
            .expect("static metric definition"),
            asymmetry: counter(
                "exfilmon_detection_asymmetry_total",
                "Windows in which a group sent a country more than [detections.asymmetry] ratio times the bytes it received, and at least min_bytes, by group and country.",
            ),
            volume: counter(
                "exfilmon_detection_volume_total",
                "Windows in which a group sent a country at least [detections.volume] min_bytes, by group and country.",
            ),
            beaconing: counter(
                "exfilmon_detection_beaconing_total",
                "Beacons found: regular small flows from one inside address to one remote address and port, by group and country.",
            ),
            last_time: IntGaugeVec::new(
                Opts::new(
                    "exfilmon_detection_last_timestamp_seconds",
                    "When the last detection of each kind (first_contact, asymmetry, beaconing, volume) was made for each group and country since the daemon started.",
                ),
                &["detection", "group", "country"],
            )
            .expect("static metric definition"),
            beacon_destinations: IntGauge::new(
                "exfilmon_detection_beacon_destinations",
                "Destinations (inside address, remote address, port, protocol) the beaconing detection remembers.",
            )
            .expect("static metric definition"),
            beacon_evictions: IntCounter::new(
                "exfilmon_detection_beacon_evictions_total",
                "Destinations the beaconing detection forgot to make room ([detections.beaconing] max_entries).",
            )
            .expect("static metric definition"),
            dns_tunnel: IntCounterVec::new(
                Opts::new(
                    "exfilmon_detection_dns_tunnel_total",
                    "Inside clients showing DNS-tunnel signs in a [detections.dns_tunnel] window, by group and the first sign seen: txt_volume, long_names, high_entropy, answer_rate.",
                ),
                &["group", "sign"],
            )
            .expect("static metric definition"),
            dns_tunnel_evictions: IntCounter::new(
                "exfilmon_detection_dns_tunnel_evictions_total",
                "Clients the DNS-tunnel detection forgot to make room ([detections.dns_tunnel] max_entries).",
            )
            .expect("static metric definition"),
            errors: IntCounterVec::new(
                Opts::new(
                    "exfilmon_detection_errors_total",
                    "Detection problems by reason: state_corrupt (a corrupt state file was set aside), state_write (the state could not be saved), counter_read (a tick could not read the kernel counters).",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        };
        for r in ERROR_REASONS {
            m.errors.with_label_values(&[r]);
        }
        m
    }

    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::new();
        for c in m.collectors() {
            registry.register(c)?;
        }
        Ok(m)
    }

    /// Every collector, for registering and naming them.
    #[must_use]
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.first_contacts.clone()),
            Box::new(self.first_contact_time.clone()),
            Box::new(self.asymmetry.clone()),
            Box::new(self.volume.clone()),
            Box::new(self.beaconing.clone()),
            Box::new(self.last_time.clone()),
            Box::new(self.beacon_destinations.clone()),
            Box::new(self.beacon_evictions.clone()),
            Box::new(self.dns_tunnel.clone()),
            Box::new(self.dns_tunnel_evictions.clone()),
            Box::new(self.errors.clone()),
        ]
    }

    /// Counts one detection.
    pub fn count(&self, d: &Detection) {
        // The DNS-tunnel counter is by group and sign: its detections have no country.
        let (family, second) = match &d.what {
            What::FirstContact { .. } => (&self.first_contacts, d.country.as_str()),
            What::Asymmetry { .. } => (&self.asymmetry, d.country.as_str()),
            What::Volume { .. } => (&self.volume, d.country.as_str()),
            What::Beaconing { .. } => (&self.beaconing, d.country.as_str()),
            What::DnsTunnel { sign, .. } => (&self.dns_tunnel, sign.as_str()),
        };
        family.with_label_values(&[d.group.as_str(), second]).inc();
        let secs = d
            .time
            .0
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
        self.last_time
            .with_label_values(&[d.what.name(), &d.group, &d.country])
            .set(secs);
    }

    /// Sets the first-contact times from the known pairs.
    pub fn set_contacts(&self, contacts: &Contacts) {
        for (group, country, secs) in contacts.iter() {
            self.first_contact_time
                .with_label_values(&[group, country])
                .set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
    }

    /// Sets the beaconing state's size and counts new evictions.
    pub fn set_beacons(&self, beacons: &Beacons) {
        self.beacon_destinations
            .set(i64::try_from(beacons.len()).unwrap_or(i64::MAX));
        let seen = self.beacon_evictions.get();
        self.beacon_evictions
            .inc_by(beacons.evictions().saturating_sub(seen));
    }

    /// Counts the DNS-tunnel detection's new evictions.
    pub fn set_tunnels(&self, tunnels: &super::tunnel::Tunnels) {
        let seen = self.dns_tunnel_evictions.get();
        self.dns_tunnel_evictions
            .inc_by(tunnels.evictions().saturating_sub(seen));
    }

    pub fn error(&self, reason: &'static str) {
        self.errors.with_label_values(&[reason]).inc();
    }
}

impl Default for DetectMetrics {
    fn default() -> Self {
        Self::new()
    }
}
