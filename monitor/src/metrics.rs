//! Prometheus metrics: the kernel's maps are read at scrape time by a `Collector` (the map
//! layout is the metric layout), the daemon's own counters live in a registry beside it,
//! and [`app`] routes /metrics (served by [`crate::web`]).

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use monitor_common::reason;
use prometheus::{
    Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{
    ebpf::{CounterMaps, Counters, GeoTables},
    geoip::SourceInfo,
    tables::{Direction, Labels},
};

/// The Content-Type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const CLASS_LABELS: [&str; 4] = ["group", "country", "direction", "verdict"];
const ASN_LABELS: [&str; 3] = ["group", "asn", "direction"];
const WATCH_LABELS: [&str; 4] = ["watchlist", "entry", "group", "direction"];

/// Reads the kernel's counters at scrape time.
pub struct KernelCollector {
    /// Shared with the daemon's detection ticks.
    maps: Arc<Mutex<CounterMaps>>,
    labels: Arc<RwLock<Labels>>,
    read_errors: IntCounter,
    templates: Templates,
}

/// Metric families built afresh for every scrape; kept once to answer `desc()`.
struct Templates {
    packets: IntCounterVec,
    bytes: IntCounterVec,
    asn_packets: IntCounterVec,
    asn_bytes: IntCounterVec,
    frames: IntCounterVec,
    kernel_events: IntCounterVec,
    policy_drops: IntCounterVec,
    watch_packets: IntCounterVec,
    watch_bytes: IntCounterVec,
}

impl Templates {
    fn all(&self) -> [&IntCounterVec; 9] {
        [
            &self.packets,
            &self.bytes,
            &self.asn_packets,
            &self.asn_bytes,
            &self.frames,
            &self.kernel_events,
            &self.policy_drops,
            &self.watch_packets,
            &self.watch_bytes,
        ]
    }

    fn new() -> Self {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        Self {
            packets: vec(
                "exfilmon_packets_total",
                "Classified packets by source group, remote country, direction and verdict.",
                &CLASS_LABELS,
            ),
            bytes: vec(
                "exfilmon_bytes_total",
                "Layer-3 bytes (IP packets, headers included) of classified packets by source group, remote country, direction and verdict.",
                &CLASS_LABELS,
            ),
            asn_packets: vec(
                "exfilmon_asn_packets_total",
                "Classified packets to and from the AS numbers that [metrics] asns names, by source group, ASN and direction.",
                &ASN_LABELS,
            ),
            asn_bytes: vec(
                "exfilmon_asn_bytes_total",
                "Layer-3 bytes to and from the AS numbers that [metrics] asns names, by source group, ASN and direction.",
                &ASN_LABELS,
            ),
            frames: vec(
                "exfilmon_frames_total",
                "Frames seen by the kernel program, by outcome; outcomes sum to all frames seen.",
                &["outcome"],
            ),
            kernel_events: vec(
                "exfilmon_kernel_events_total",
                "Anomalies and events counted by the kernel program (malformed transport headers, fragments, extension header limit, ring buffer drops, flow table insert failures, ...).",
                &["event"],
            ),
            policy_drops: vec(
                "exfilmon_policy_drops_total",
                "Violation packets by source group: dropped by a group with enforce = true (mode dropped), or passed by a group without it (mode dry_run, what enforcing would have dropped).",
                &["group", "mode"],
            ),
            watch_packets: vec(
                "exfilmon_watchlist_packets_total",
                "Classified packets to and from watchlist entries (prefixes, ASNs, DNS-learned addresses of domains), by watchlist, entry, source group and direction.",
                &WATCH_LABELS,
            ),
            watch_bytes: vec(
                "exfilmon_watchlist_bytes_total",
                "Layer-3 bytes to and from watchlist entries, by watchlist, entry, source group and direction.",
                &WATCH_LABELS,
            ),
        }
    }
}

impl KernelCollector {
    #[must_use]
    pub fn new(
        maps: Arc<Mutex<CounterMaps>>,
        labels: Arc<RwLock<Labels>>,
        read_errors: IntCounter,
    ) -> Self {
        Self {
            maps,
            labels,
            read_errors,
            templates: Templates::new(),
        }
    }
}

impl Collector for KernelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.templates
            .all()
            .into_iter()
            .flat_map(Collector::desc)
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Labels before maps, as the detection tick takes them.
        let labels = self
            .labels
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let read = self
            .maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read(&labels);
        let counters = match read {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "reading kernel counters failed");
                self.read_errors.inc();
                return Vec::new();
            }
        };
        families(&counters, &labels)
    }
}

/// Builds the metric families of one set of kernel counters.
#[must_use]
pub fn families(counters: &Counters, labels: &Labels) -> Vec<MetricFamily> {
    let t = Templates::new();
    for (index, c) in &counters.classes {
        let class = labels.class(*index);
        let values = [
            class.group,
            class.country.as_str(),
            class.direction.as_str(),
            class.verdict.as_str(),
        ];
        t.packets.with_label_values(&values).inc_by(c.packets);
        t.bytes.with_label_values(&values).inc_by(c.bytes);
    }
    for (index, c) in &counters.asns {
        let (group, slot, dir) = monitor_common::class::asn_counter_parts(*index);
        let asn = format!("AS{}", labels.asns.get(slot as usize).copied().unwrap_or(0));
        let values = [
            labels.group(group),
            asn.as_str(),
            Direction::from_code(dir).as_str(),
        ];
        t.asn_packets.with_label_values(&values).inc_by(c.packets);
        t.asn_bytes.with_label_values(&values).inc_by(c.bytes);
    }
    for (index, c) in &counters.watch {
        let (entry, group, dir) = monitor_common::watch::watch_counter_parts(*index);
        let Some((list, name)) = labels.watch.get(entry as usize).filter(|_| entry != 0) else {
            continue;
        };
        let values = [
            list.as_str(),
            name.as_str(),
            labels.group(group),
            Direction::from_code(dir).as_str(),
        ];
        t.watch_packets.with_label_values(&values).inc_by(c.packets);
        t.watch_bytes.with_label_values(&values).inc_by(c.bytes);
    }
    for (id, name) in reason::NAMES {
        let value = counters.reasons.get(id as usize).copied().unwrap_or(0);
        let family = if id < reason::OUTCOMES {
            &t.frames
        } else {
            &t.kernel_events
        };
        // Every reason is exported, zeros included: an error counter exists from the start.
        family.with_label_values(&[name]).inc_by(value);
    }
    crate::policy::drop_series(counters, labels, |group, mode, packets| {
        t.policy_drops
            .with_label_values(&[group, mode])
            .inc_by(packets);
    });
    [
        t.packets,
        t.bytes,
        t.asn_packets,
        t.asn_bytes,
        t.frames,
        t.kernel_events,
        t.policy_drops,
        t.watch_packets,
        t.watch_bytes,
    ]
    .iter()
    .flat_map(Collector::collect)
    // A family with no series (no watch hits yet) is not valid exposition.
    .filter(|f| !f.get_metric().is_empty())
    .collect()
}

/// `exfilmon_build_info`: always 1, with the version and the kernel program ABI.
fn build_info() -> prometheus::Result<IntGaugeVec> {
    let build = IntGaugeVec::new(
        Opts::new(
            "exfilmon_build_info",
            "Build information; the value is always 1.",
        ),
        &["version", "kernel_program_abi"],
    )?;
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), "1"])
        .set(1);
    Ok(build)
}

/// The name of every metric family exfilmon exports (kernel counters and the daemon's own,
/// whether or not they have series yet): what alert rules and dashboards may refer to.
///
/// # Panics
/// Never: the metric definitions are static.
#[must_use]
pub fn family_names() -> std::collections::BTreeSet<String> {
    let daemon = DaemonMetrics::register(&Registry::new()).expect("static metric definitions");
    let templates = Templates::new();
    let kernel: Vec<&dyn Collector> = templates.all().into_iter().map(|v| v as _).collect();
    let daemon_collectors = daemon.collectors();
    let build = build_info().expect("static metric definition");
    kernel
        .into_iter()
        .chain(daemon_collectors.iter().map(AsRef::as_ref))
        .chain([&build as &dyn Collector])
        .flat_map(Collector::desc)
        .map(|d| d.fq_name.clone())
        .chain(watch_family_names())
        .chain(crate::web::WebMetrics::family_names())
        .chain(
            crate::detect::metrics::DetectMetrics::new()
                .collectors()
                .iter()
                .flat_map(|c| {
                    c.desc()
                        .into_iter()
                        .map(|d| d.fq_name.clone())
                        .collect::<Vec<_>>()
                }),
        )
        .collect()
}

/// The DNS learning families; each has a series from the start, so a gather names them all.
fn watch_family_names() -> Vec<String> {
    let registry = Registry::new();
    crate::watch::WatchMetrics::register(&registry).expect("static metric definitions");
    registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect()
}

/// The daemon's own metrics.
#[derive(Clone)]
pub struct DaemonMetrics {
    pub flow_events: IntCounterVec,
    pub event_errors: IntCounterVec,
    pub flows_tracked: IntGauge,
    pub geoip_prefixes: IntGaugeVec,
    pub geoip_level2_blocks: IntGauge,
    pub geoip_source_modified: IntGaugeVec,
    pub geoip_source_built: IntGaugeVec,
    pub kernel_map_memory: IntGaugeVec,
    pub programs: IntGaugeVec,
    pub collector_errors: IntCounter,
    pub reloads: IntCounterVec,
    pub last_reload_successful: IntGauge,
    pub last_reload_success: IntGauge,
}

impl DaemonMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            flow_events: IntCounterVec::new(
                Opts::new(
                    "exfilmon_flow_events_total",
                    "Flow events handled by the daemon, by kind.",
                ),
                &["kind"],
            )?,
            event_errors: IntCounterVec::new(
                Opts::new(
                    "exfilmon_event_errors_total",
                    "Events the daemon could not decode or log, by reason.",
                ),
                &["reason"],
            )?,
            flows_tracked: IntGauge::new(
                "exfilmon_flows_tracked",
                "Flows in the kernel's flow table, counted at each idle sweep.",
            )?,
            geoip_prefixes: IntGaugeVec::new(
                Opts::new(
                    "exfilmon_geoip_prefixes",
                    "GeoIP prefixes loaded into the kernel, by address family.",
                ),
                &["family"],
            )?,
            geoip_level2_blocks: IntGauge::new(
                "exfilmon_geoip_level2_blocks",
                "Level-2 blocks of the IPv4 GeoIP table in use.",
            )?,
            geoip_source_modified: IntGaugeVec::new(
                Opts::new(
                    "exfilmon_geoip_source_modified_timestamp_seconds",
                    "Modification time of each loaded GeoIP source file, by file name and format.",
                ),
                &["source", "format"],
            )?,
            geoip_source_built: IntGaugeVec::new(
                Opts::new(
                    "exfilmon_geoip_source_build_timestamp_seconds",
                    "Build time recorded inside each loaded GeoIP source that has one (MaxMind DB), by file name and format.",
                ),
                &["source", "format"],
            )?,
            kernel_map_memory: IntGaugeVec::new(
                Opts::new(
                    "exfilmon_kernel_map_memory_bytes",
                    "Kernel memory charged to each BPF map (its memlock), by map.",
                ),
                &["map"],
            )?,
            programs: IntGaugeVec::new(
                Opts::new(
                    "exfilmon_programs_info",
                    "The set of kernel programs loaded, always 1: in_place parses frames where they are (needs CAP_PERFMON), copy parses a copy of their headers (CAP_BPF and CAP_NET_ADMIN only; costs more per packet).",
                ),
                &["set"],
            )?,
            collector_errors: IntCounter::new(
                "exfilmon_collector_errors_total",
                "Scrapes in which the kernel counters could not be read.",
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "exfilmon_config_reloads_total",
                    "Config and GeoIP reloads (SIGHUP), by result.",
                ),
                &["result"],
            )?,
            last_reload_successful: IntGauge::new(
                "exfilmon_config_last_reload_successful",
                "1 if the last config load (at start or on SIGHUP) was applied, 0 if it was refused and the previous config still runs.",
            )?,
            last_reload_success: IntGauge::new(
                "exfilmon_config_last_reload_success_timestamp_seconds",
                "When a config was last applied (at start or on SIGHUP).",
            )?,
        };
        for kind in ["flow_start", "flow_update", "flow_end", "flow_idle"] {
            m.flow_events.with_label_values(&[kind]);
        }
        for r in ["decode", "log_write"] {
            m.event_errors.with_label_values(&[r]);
        }
        for r in ["success", "failure"] {
            m.reloads.with_label_values(&[r]);
        }
        m.config_applied();
        for collector in m.collectors() {
            registry.register(collector)?;
        }
        registry.register(Box::new(build_info()?))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    /// Every collector of the daemon's own metrics, for registering (and naming) them.
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.flow_events.clone()),
            Box::new(self.event_errors.clone()),
            Box::new(self.flows_tracked.clone()),
            Box::new(self.geoip_prefixes.clone()),
            Box::new(self.geoip_level2_blocks.clone()),
            Box::new(self.geoip_source_modified.clone()),
            Box::new(self.geoip_source_built.clone()),
            Box::new(self.kernel_map_memory.clone()),
            Box::new(self.programs.clone()),
            Box::new(self.collector_errors.clone()),
            Box::new(self.reloads.clone()),
            Box::new(self.last_reload_successful.clone()),
            Box::new(self.last_reload_success.clone()),
        ]
    }

    /// Records that a config was applied now.
    pub fn config_applied(&self) {
        self.last_reload_successful.set(1);
        self.last_reload_success.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        );
    }

    /// Sets the sizes of the GeoIP tables in the kernel.
    pub fn set_geoip_tables(&self, geo: &GeoTables) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.geoip_prefixes
            .with_label_values(&["ipv4"])
            .set(count(geo.prefix_count_v4()));
        self.geoip_prefixes
            .with_label_values(&["ipv6"])
            .set(count(geo.prefix_count_v6()));
        self.geoip_level2_blocks.set(i64::from(geo.l2_blocks()));
    }

    /// Sets the per-source timestamps: the sources come from the config, so the label
    /// set is bounded. A source is named by its file name. Sources of an earlier config
    /// are dropped.
    pub fn set_geoip_sources(&self, sources: &[SourceInfo]) {
        self.geoip_source_modified.reset();
        self.geoip_source_built.reset();
        let seconds = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        };
        for s in sources {
            let name = s.path.file_name().map_or_else(
                || s.path.to_string_lossy(),
                std::ffi::OsStr::to_string_lossy,
            );
            let labels = [name.as_ref(), s.format.name()];
            if let Some(t) = s.modified.and_then(seconds) {
                self.geoip_source_modified.with_label_values(&labels).set(t);
            }
            if let Some(t) = s.built.and_then(seconds) {
                self.geoip_source_built.with_label_values(&labels).set(t);
            }
        }
    }

    /// Names the program set loaded (one of two: a bounded label).
    pub fn set_programs(&self, set: &monitor_common::programs::Set) {
        self.programs.reset();
        self.programs.with_label_values(&[set.name]).set(1);
    }

    /// Sets the kernel memory per map, as [`crate::ebpf::Monitor::map_memory`] reports it.
    pub fn set_map_memory(&self, maps: &[(String, u64)]) {
        for (name, bytes) in maps {
            self.kernel_map_memory
                .with_label_values(&[name.as_str()])
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
    }
}

/// Renders a registry in the text format.
#[must_use]
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

const LANDING: &str = "<!doctype html><html><head><title>exfilmon</title></head><body>\
<h1>exfilmon</h1><p>eBPF data-exfiltration monitor.</p>\
<p><a href=\"/metrics\">Metrics</a></p></body></html>";

/// The routes: `/metrics` and a landing page at `/`; other paths answer 404. The server
/// around them ([`crate::web`]) refuses other methods than GET and HEAD.
pub fn app(registry: Registry) -> Router {
    Router::new()
        .route("/", get(|| async { Html(LANDING) }))
        .route("/metrics", get(metrics_handler))
        .with_state(registry)
}

async fn metrics_handler(State(registry): State<Registry>) -> Response {
    // Reading per-CPU maps is a few syscalls; keep it off the async workers.
    match tokio::task::spawn_blocking(move || render(&registry)).await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::class::{
        ClassCounter, DIR_INBOUND, DIR_OUTBOUND, asn_counter_index, class_index,
    };

    use super::*;
    use crate::{config::GeoFormat, tables::Verdict};

    #[test]
    fn class_counters_become_labelled_series() {
        let labels = Labels {
            groups: vec!["ungrouped".into(), "phones".into()],
            countries: vec![None, Some("CN".parse().expect("CN"))],
            asns: vec![0, 4134],
            rules: Vec::new(),
            watch: Vec::new(),
        };
        let counters = Counters {
            watch: Vec::new(),
            classes: vec![(
                class_index(1, 1, DIR_OUTBOUND, Verdict::Violation.code()),
                ClassCounter {
                    packets: 3,
                    bytes: 1500,
                },
            )],
            asns: vec![(
                asn_counter_index(1, 1, DIR_INBOUND),
                ClassCounter {
                    packets: 2,
                    bytes: 900,
                },
            )],
            reasons: vec![7; 32],
            policy_drops: vec![(
                monitor_common::policy::drop_index(1, monitor_common::policy::MODE_DROPPED),
                ClassCounter {
                    packets: 5,
                    bytes: 500,
                },
            )],
        };
        let registry = Registry::new();
        let fams = families(&counters, &labels);
        let text = {
            let mut out = Vec::new();
            TextEncoder::new().encode(&fams, &mut out).expect("encode");
            String::from_utf8(out).expect("utf8")
        };
        drop(registry);
        assert!(
            text.contains(r#"exfilmon_bytes_total{country="CN",direction="outbound",group="phones",verdict="violation"} 1500"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"exfilmon_asn_bytes_total{asn="AS4134",direction="inbound",group="phones"} 900"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"exfilmon_frames_total{outcome="non_ip"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"exfilmon_kernel_events_total{event="ringbuf_dropped"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"exfilmon_kernel_events_total{event="policy_dropped"} 7"#),
            "{text}"
        );
        // Every group has both modes from the start; only the counted one is non-zero.
        for (group, mode, value) in [
            ("phones", "dropped", 5),
            ("phones", "dry_run", 0),
            ("ungrouped", "dropped", 0),
            ("ungrouped", "dry_run", 0),
        ] {
            let line = format!(
                "exfilmon_policy_drops_total{{group=\"{group}\",mode=\"{mode}\"}} {value}\n"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn geoip_sources_and_map_memory_become_gauges() {
        let registry = Registry::new();
        let dm = DaemonMetrics::register(&registry).expect("register");
        let at = |s| UNIX_EPOCH + std::time::Duration::from_secs(s);
        let source = |path: &str, format, built| SourceInfo {
            path: path.into(),
            format,
            ranges_v4: 1,
            ranges_v6: 0,
            asn_ranges_v4: 0,
            asn_ranges_v6: 0,
            modified: Some(at(1_700_000_000)),
            built,
        };
        dm.set_geoip_sources(&[
            source("/usr/share/tor/geoip", GeoFormat::Tor, None),
            source(
                "/var/lib/geo/asn.mmdb",
                GeoFormat::Mmdb,
                Some(at(1_690_000_000)),
            ),
        ]);
        dm.set_map_memory(&[("GEO4_L1".to_owned(), 134_217_728)]);
        dm.geoip_level2_blocks.set(321);
        let text = String::from_utf8(render(&registry)).expect("utf8");
        for want in [
            r#"exfilmon_geoip_source_modified_timestamp_seconds{format="tor",source="geoip"} 1700000000"#,
            r#"exfilmon_geoip_source_modified_timestamp_seconds{format="mmdb",source="asn.mmdb"} 1700000000"#,
            r#"exfilmon_geoip_source_build_timestamp_seconds{format="mmdb",source="asn.mmdb"} 1690000000"#,
            r#"exfilmon_kernel_map_memory_bytes{map="GEO4_L1"} 134217728"#,
            "exfilmon_geoip_level2_blocks 321",
            "# TYPE exfilmon_kernel_map_memory_bytes gauge",
        ] {
            assert!(text.contains(want), "want {want} in\n{text}");
        }
        // A source without a build time has no build series.
        assert!(
            !text.contains(r#"exfilmon_geoip_source_build_timestamp_seconds{format="tor""#),
            "{text}"
        );
    }
}
