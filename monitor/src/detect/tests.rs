//! Each detection fires on a scenario made for it and stays silent on ordinary traffic.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use monitor_common::class::{ClassCounter, DIR_INBOUND, DIR_OUTBOUND, class_index};

use super::*;
use crate::{
    config::{Config, ConfigError},
    detect::state,
};

/// 2026-01-01T00:00:00Z: an hour boundary, so windows start here.
const T0: u64 = 1_767_225_600;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn settings() -> Settings {
    let mut d = Detections {
        tick: Duration::from_secs(10),
        ..Detections::default()
    };
    d.asymmetry.window = Duration::from_secs(60);
    d.asymmetry.min_bytes = 10_000;
    d.asymmetry.ratio = 10.0;
    d.volume.window = Duration::from_secs(60);
    d.volume.min_bytes = 1_000_000;
    d.beaconing.min_flows = 5;
    d.beaconing.max_flow_bytes = 4096;
    d.beaconing.max_jitter = 0.1;
    d.beaconing.min_interval = Duration::from_secs(5);
    Settings {
        detections: d,
        home: ["IN".to_owned()].into(),
        inside: tunnel::Inside::new(vec![(
            "192.0.2.0/26".parse().expect("net"),
            "phones".to_owned(),
        )]),
    }
}

fn traffic(group: &str, country: &str, bytes_out: u64, bytes_in: u64) -> Traffic {
    Traffic {
        group: group.to_owned(),
        country: country.to_owned(),
        bytes_out,
        bytes_in,
    }
}

/// Runs ticks of 10 s from `from` (seconds after T0), one sample list per tick, and
/// returns every detection.
fn ticks(d: &mut Detector, from: u64, per_tick: &[Vec<Traffic>]) -> Vec<Detection> {
    let mut out = Vec::new();
    for (i, samples) in per_tick.iter().enumerate() {
        let start = from + 10 * i as u64;
        out.extend(d.traffic(at(start), at(start + 10), samples));
    }
    out
}

fn kinds(found: &[Detection]) -> Vec<(&'static str, &str, &str)> {
    found
        .iter()
        .map(|d| (d.what.name(), d.group.as_str(), d.country.as_str()))
        .collect()
}

fn first_contact_only() -> Settings {
    let mut s = settings();
    s.detections.asymmetry.enabled = false;
    s.detections.volume.enabled = false;
    s
}

#[test]
fn first_contact_fires_once_per_group_and_foreign_country() {
    let mut d = Detector::new(first_contact_only(), Contacts::new());
    let found = ticks(
        &mut d,
        0,
        &[
            // Domestic, unknown, and inbound-only traffic are no contact.
            vec![
                traffic("phones", "IN", 5000, 5000),
                traffic("phones", "??", 500, 0),
                traffic("phones", "CN", 0, 800),
            ],
            vec![traffic("phones", "CN", 300, 0)],
            vec![
                traffic("phones", "CN", 300, 0),
                traffic("laptops", "CN", 10, 0),
            ],
            vec![
                traffic("phones", "CN", 300, 0),
                traffic("phones", "SG", 1, 0),
            ],
        ],
    );
    assert_eq!(
        kinds(&found),
        [
            ("first_contact", "phones", "CN"),
            ("first_contact", "laptops", "CN"),
            ("first_contact", "phones", "SG"),
        ]
    );
    assert_eq!(
        found[0].time,
        Stamp(at(20)),
        "the end of the tick it was seen in"
    );
    assert!(matches!(
        found[0].what,
        What::FirstContact { bytes_out: 300, .. }
    ));
    assert!(d.take_contacts_changed());
    assert!(!d.take_contacts_changed(), "taken");
    assert_eq!(d.contacts().len(), 3);
}

#[test]
fn first_contact_state_round_trips_and_a_restart_does_not_fire_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let loaded = state::load(&state_dir).expect("load");
    assert!(loaded.contacts.is_empty() && loaded.set_aside.is_none());

    let mut d = Detector::new(first_contact_only(), loaded.contacts);
    let found = ticks(&mut d, 0, &[vec![traffic("phones", "CN", 300, 0)]]);
    assert_eq!(kinds(&found), [("first_contact", "phones", "CN")]);
    state::save(&state_dir, d.contacts()).expect("save");
    let leftovers: Vec<_> = std::fs::read_dir(&state_dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, [state::FILE_NAME], "no temporary file is left");

    // A restart: the same state directory, the same traffic.
    let loaded = state::load(&state_dir).expect("load again");
    assert_eq!(&loaded.contacts, d.contacts(), "the state round-trips");
    assert_eq!(
        loaded.contacts.iter().collect::<Vec<_>>(),
        [("phones", "CN", T0 + 10)]
    );
    let mut restarted = Detector::new(first_contact_only(), loaded.contacts);
    let found = ticks(
        &mut restarted,
        100,
        &[vec![
            traffic("phones", "CN", 300, 0),
            traffic("phones", "SG", 9, 0),
        ]],
    );
    assert_eq!(
        kinds(&found),
        [("first_contact", "phones", "SG")],
        "CN was known before the restart"
    );
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_an_unreadable_one_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = state::path(dir.path());
    for bad in [
        "{not json".to_owned(),
        r#"{"v":2,"contacts":{}}"#.to_owned(),
        r#"{"v":1,"contacts":{"phones":{"CHN":1}}}"#.to_owned(),
    ] {
        std::fs::write(&file, &bad).expect("write");
        let loaded = state::load(dir.path()).expect("a corrupt file is not an error");
        assert!(loaded.contacts.is_empty());
        let aside = loaded.set_aside.expect("set aside");
        assert!(!file.exists(), "moved away");
        assert_eq!(std::fs::read_to_string(&aside).expect("read"), bad);
        std::fs::remove_file(aside).expect("clean");
    }

    std::fs::create_dir(&file).expect("a directory where the file should be");
    let err = state::load(dir.path()).expect_err("unreadable");
    assert!(
        matches!(&err, state::StateError::Read { path, .. } if path == &file),
        "{err:?}"
    );
    assert!(err.to_string().contains(state::FILE_NAME), "{err}");
}

fn asymmetry_only(include_domestic: bool) -> Settings {
    let mut s = settings();
    s.detections.first_contact.enabled = false;
    s.detections.volume.enabled = false;
    s.detections.include_domestic = include_domestic;
    s
}

#[test]
fn asymmetry_fires_for_an_upload_heavy_window_only() {
    let mut d = Detector::new(asymmetry_only(false), Contacts::new());
    // One 60 s window: six ticks.
    let window = |out: u64, inb: u64| -> Vec<Vec<Traffic>> {
        (0..6)
            .map(|_| {
                vec![
                    traffic("phones", "CN", out, inb),
                    // Symmetric traffic of the same size: silent.
                    traffic("laptops", "US", out, out),
                    // Upload-heavy but domestic: silent.
                    traffic("phones", "IN", out, 0),
                    // Upload-heavy but small: silent.
                    traffic("laptops", "SG", 100, 0),
                ]
            })
            .collect()
    };
    let found = ticks(&mut d, 0, &window(20_000, 1_000));
    assert_eq!(kinds(&found), [("asymmetry", "phones", "CN")]);
    let What::Asymmetry {
        bytes_out,
        bytes_in,
        ratio,
        window_start,
        window_end,
        ..
    } = &found[0].what
    else {
        panic!("{found:?}");
    };
    assert_eq!((*bytes_out, *bytes_in), (120_000, 6_000));
    assert_eq!(*ratio, Some(20.0));
    assert_eq!((window_start.0, window_end.0), (at(0), at(60)));
    assert_eq!(found[0].time, Stamp(at(60)));

    // A ratio of exactly 10 is not above it.
    assert_eq!(ticks(&mut d, 60, &window(10_000, 1_000)), Vec::new());
    // Nothing back at all: an infinite ratio, reported as null.
    let found = ticks(&mut d, 120, &window(20_000, 0));
    assert!(matches!(found[0].what, What::Asymmetry { ratio: None, .. }));

    let mut d = Detector::new(asymmetry_only(true), Contacts::new());
    let found = ticks(&mut d, 0, &window(20_000, 1_000));
    assert_eq!(
        kinds(&found),
        [("asymmetry", "phones", "CN"), ("asymmetry", "phones", "IN")],
        "include_domestic"
    );
}

fn volume_only() -> Settings {
    let mut s = settings();
    s.detections.first_contact.enabled = false;
    s.detections.asymmetry.enabled = false;
    s
}

#[test]
fn volume_fires_above_the_threshold_per_window_and_not_below() {
    let mut d = Detector::new(volume_only(), Contacts::new());
    let found = ticks(
        &mut d,
        0,
        &[
            vec![traffic("phones", "CN", 600_000, 0)],
            vec![
                traffic("phones", "CN", 400_000, 0),
                traffic("phones", "SG", 999_999, 0),
            ],
        ],
    );
    assert!(found.is_empty(), "the window has not ended: {found:?}");
    let found = ticks(&mut d, 20, &[vec![], vec![], vec![], vec![]]);
    assert_eq!(
        kinds(&found),
        [("volume", "phones", "CN")],
        "1,000,000 bytes reach the threshold; 999,999 do not"
    );
    // 1.5 MB split over two fixed windows, 750 kB each: silent.
    let found = ticks(
        &mut d,
        60,
        &[
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![traffic("laptops", "US", 750_000, 0)],
            vec![traffic("laptops", "US", 750_000, 0)],
        ],
    );
    let rest = d.flush();
    assert!(found.is_empty() && rest.is_empty(), "{found:?} {rest:?}");
}

#[test]
fn flush_closes_the_open_window_as_if_time_had_reached_its_end() {
    let mut d = Detector::new(volume_only(), Contacts::new());
    assert_eq!(
        ticks(&mut d, 0, &[vec![traffic("phones", "CN", 2_000_000, 0)]]),
        Vec::new()
    );
    let found = d.flush();
    assert_eq!(kinds(&found), [("volume", "phones", "CN")]);
    assert_eq!(found[0].time, Stamp(at(60)));
    assert!(d.flush().is_empty(), "closed once");
}

fn beacon_settings(max_entries: usize) -> Settings {
    let mut s = settings();
    s.detections.beaconing.max_entries = max_entries;
    s
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn flow(remote: &str, start_ms: u64, bytes: u64) -> FlowSeen {
    FlowSeen {
        key: BeaconKey {
            inside: ip("192.0.2.10"),
            remote: ip(remote),
            remote_port: 443,
            proto: 6,
        },
        group: "phones".to_owned(),
        country: "CN".to_owned(),
        start: UNIX_EPOCH + Duration::from_millis(T0 * 1000 + start_ms),
        bytes,
    }
}

#[test]
fn beaconing_fires_once_on_regular_small_flows() {
    let mut d = Detector::new(beacon_settings(64), Contacts::new());
    let starts = [0, 30_100, 59_900, 90_200, 120_000, 150_050];
    let found: Vec<_> = starts
        .iter()
        .filter_map(|s| d.flow(&flow("203.0.113.10", *s, 900)))
        .collect();
    assert_eq!(kinds(&found), [("beaconing", "phones", "CN")], "once");
    let What::Beaconing {
        flows,
        interval_secs,
        jitter,
        dst,
        dport,
        ..
    } = &found[0].what
    else {
        panic!("{found:?}");
    };
    assert_eq!((*flows, *dst, *dport), (5, ip("203.0.113.10"), 443));
    assert!((*interval_secs - 30.0).abs() < 0.01, "{interval_secs}");
    assert!(*jitter < 0.02, "{jitter}");
    assert_eq!(
        found[0].time.0,
        UNIX_EPOCH + Duration::from_millis(T0 * 1000 + 120_000),
        "the fifth flow's start"
    );

    // A later report of the same flow (same start) changes nothing.
    assert!(d.flow(&flow("203.0.113.10", 150_050, 950)).is_none());
}

#[test]
fn beaconing_is_silent_on_irregular_large_few_or_too_frequent_flows() {
    let mut d = Detector::new(beacon_settings(64), Contacts::new());
    let mut feed = |remote: &str, flows: &[(u64, u64)]| -> Vec<Detection> {
        flows
            .iter()
            .filter_map(|(s, b)| d.flow(&flow(remote, *s, *b)))
            .collect()
    };
    let irregular = [
        (0, 900),
        (10_000, 900),
        (45_000, 900),
        (52_000, 900),
        (90_000, 900),
    ];
    assert!(feed("203.0.113.11", &irregular).is_empty(), "irregular");
    let large = [
        (0, 900),
        (30_000, 900),
        (60_000, 90_000),
        (90_000, 900),
        (120_000, 900),
    ];
    assert!(feed("203.0.113.12", &large).is_empty(), "one large flow");
    let few = [(0, 900), (30_000, 900), (60_000, 900), (90_000, 900)];
    assert!(feed("203.0.113.13", &few).is_empty(), "four flows");
    let burst: Vec<(u64, u64)> = (0..8).map(|i| (i * 1000, 900)).collect();
    assert!(
        feed("203.0.113.14", &burst).is_empty(),
        "regular, but under min_interval_secs"
    );
    // Flows that end out of start order still form the pattern.
    let shuffled = [
        (30_000, 900),
        (0, 900),
        (90_000, 900),
        (60_000, 900),
        (120_000, 900),
    ];
    assert_eq!(feed("203.0.113.15", &shuffled).len(), 1);
}

#[test]
fn beaconing_state_is_bounded_and_evictions_are_counted() {
    let mut d = Detector::new(beacon_settings(2), Contacts::new());
    for (i, remote) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .iter()
        .enumerate()
    {
        assert!(d.flow(&flow(remote, i as u64 * 1000, 100)).is_none());
    }
    assert_eq!((d.beacons().len(), d.beacons().evictions()), (2, 1));
    // The evicted destination starts over: four more flows are not five.
    for i in 1..5 {
        assert!(d.flow(&flow("203.0.113.1", i * 30_000, 100)).is_none());
    }
    assert_eq!(d.beacons().evictions(), 2);
    let mut smaller = beacon_settings(1);
    smaller.detections.beaconing.enabled = true;
    d.configure(smaller);
    assert_eq!((d.beacons().len(), d.beacons().evictions()), (1, 3));
}

#[test]
fn disabled_detections_stay_silent() {
    let mut s = settings();
    s.detections.first_contact.enabled = false;
    s.detections.asymmetry.enabled = false;
    s.detections.volume.enabled = false;
    s.detections.beaconing.enabled = false;
    let mut d = Detector::new(s, Contacts::new());
    let heavy = vec![traffic("phones", "CN", 50_000_000, 0)];
    let mut found = ticks(&mut d, 0, &vec![heavy; 7]);
    found.extend(d.flush());
    for i in 0..6 {
        found.extend(d.flow(&flow("203.0.113.10", i * 30_000, 100)));
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn baseline_turns_class_counters_into_per_tick_bytes() {
    let labels = Labels {
        groups: vec!["ungrouped".into(), "phones".into()],
        countries: vec![None, Some("CN".parse().expect("CN"))],
        ..Labels::default()
    };
    let counter = |bytes| ClassCounter { packets: 1, bytes };
    let mut counters = Counters {
        classes: vec![
            (class_index(1, 1, DIR_OUTBOUND, 3), counter(1000)),
            (class_index(1, 1, DIR_OUTBOUND, 0), counter(50)),
            (class_index(1, 1, DIR_INBOUND, 3), counter(200)),
            (class_index(0, 0, DIR_OUTBOUND, 0), counter(7)),
        ],
        asns: Vec::new(),
        reasons: Vec::new(),
        policy_drops: Vec::new(),
        watch: Vec::new(),
    };
    let mut b = Baseline::default();
    assert_eq!(
        b.deltas(&counters, &labels),
        [
            traffic("phones", "CN", 1050, 200),
            traffic("ungrouped", "??", 7, 0)
        ]
    );
    counters.classes[0].1 = counter(1500);
    assert_eq!(
        b.deltas(&counters, &labels),
        [traffic("phones", "CN", 500, 0)],
        "only what moved"
    );
}

#[test]
fn detections_serialize_as_flat_json_lines() {
    let d = Detection {
        time: Stamp(at(60)),
        group: "phones".into(),
        country: "CN".into(),
        what: What::Volume {
            window_start: Stamp(at(0)),
            window_end: Stamp(at(60)),
            bytes_out: 5,
            bytes_in: 1,
            min_bytes: 4,
        },
    };
    let v = serde_json::to_value(&d).expect("json");
    assert_eq!(
        v,
        serde_json::json!({
            "time": "2026-01-01T00:01:00.000Z",
            "detection": "volume",
            "group": "phones",
            "country": "CN",
            "window_start": "2026-01-01T00:00:00.000Z",
            "window_end": "2026-01-01T00:01:00.000Z",
            "bytes_out": 5,
            "bytes_in": 1,
            "min_bytes": 4,
        })
    );
}

// --- the [detections] config --------------------------------------------------------

fn parse(extra: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("geo.csv"), "203.0.113.0,203.0.113.63,CN\n").expect("geo");
    let text = format!(
        "[home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"IN\"]\n[geoip]\nsources = [{{ format = \"csv\", path = \"geo.csv\" }}]\n{extra}"
    );
    Config::parse(&text, &dir.path().join("exfilmon.toml"))
}

fn err(extra: &str) -> String {
    match parse(extra) {
        Ok(_) => panic!("{extra} should be refused"),
        Err(e) => crate::error_chain(&e),
    }
}

#[test]
fn detections_config_has_documented_defaults() {
    let c = parse("").expect("valid");
    assert_eq!(c.detections, Detections::default());
    let d = &c.detections;
    assert_eq!(d.state_dir, Path::new("/var/lib/exfilmon"));
    assert_eq!(d.tick, Duration::from_secs(10));
    assert!(d.first_contact.enabled && d.asymmetry.enabled && d.volume.enabled);
    assert!(d.beaconing.enabled);
    assert_eq!(d.asymmetry.window, Duration::from_secs(3600));
    assert_eq!(d.volume.min_bytes, 1 << 30);
    assert!(d.dns_tunnel.enabled);
    assert_eq!(d.dns_tunnel.window, Duration::from_secs(60));
    assert_eq!(
        (d.dns_tunnel.min_suspicious, d.dns_tunnel.max_answers),
        (20, 1200)
    );

    let c = parse(
        "[detections]\nstate_dir = \"state\"\ntick_secs = 2\ninclude_domestic = true\n\
         [detections.asymmetry]\nwindow_secs = 4\nratio = 3\n\
         [detections.volume]\nenabled = false\n\
         [detections.beaconing]\nmin_flows = 3\nmax_jitter = 0.25\nmin_interval_secs = 1\nmax_entries = 10\n",
    )
    .expect("valid");
    let d = &c.detections;
    assert_eq!(d.state_dir, c.path.parent().expect("dir").join("state"));
    assert_eq!(d.tick, Duration::from_secs(2));
    assert_eq!(d.asymmetry.window, Duration::from_secs(4));
    assert!(
        (d.asymmetry.ratio - 3.0).abs() < f64::EPSILON,
        "an integer ratio"
    );
    assert!(!d.volume.enabled);
    assert_eq!(d.volume.window, Duration::from_secs(3600));
    assert_eq!((d.beaconing.min_flows, d.beaconing.max_entries), (3, 10));
}

#[test]
fn detections_config_errors_name_file_line_and_key() {
    for (extra, want) in [
        (
            "[detections]\ntick_secs = 10\n[detections.volume]\nwindow_sec = 60\n",
            "exfilmon.toml:9: detections.volume.window_sec: unknown field `window_sec`",
        ),
        (
            "[detections]\ntick_secs = 7\n[detections.asymmetry]\nwindow_secs = 63\n[detections.volume]\nwindow_secs = 60\n",
            "exfilmon.toml:11: detections.volume.window_secs: 60 is not a multiple of detections.tick_secs (7)",
        ),
        (
            "[detections]\ntick_secs = 7\n",
            "exfilmon.toml:7: detections.tick_secs: does not divide the default detections.asymmetry.window_secs (3600)",
        ),
        (
            "[detections]\ntick_secs = 0\n",
            "exfilmon.toml:7: detections.tick_secs: 0 is out of range (must be 1..=3600)",
        ),
        (
            "[detections.asymmetry]\nratio = 0.5\n",
            "exfilmon.toml:7: detections.asymmetry.ratio: 0.5 is out of range (must be 1..=1000000000)",
        ),
        (
            "[detections.beaconing]\nmin_interval_secs = 60\nmax_interval_secs = 30\n",
            "exfilmon.toml:8: detections.beaconing.max_interval_secs: 30 is less than min_interval_secs (60)",
        ),
        (
            "[detections.beaconing]\nmin_flows = 2\n",
            "exfilmon.toml:7: detections.beaconing.min_flows: 2 is out of range (must be 3..=1000)",
        ),
        (
            "[detections]\nstate_dir = \"\"\n",
            "exfilmon.toml:7: detections.state_dir: must not be empty",
        ),
        (
            "[detections.first_contact]\nenabled = 1\n",
            "exfilmon.toml:7: detections.first_contact.enabled",
        ),
        (
            "[detections.dns_tunnel]\nwindow_secs = 60\nmax_label_len = 64\n",
            "exfilmon.toml:8: detections.dns_tunnel.max_label_len: 64 is out of range (must be 8..=63)",
        ),
        (
            "[detections.dns_tunnel]\nentropy_bits = 7.5\n",
            "exfilmon.toml:7: detections.dns_tunnel.entropy_bits: 7.5 is out of range (must be 1..=6)",
        ),
        (
            "[detections.dns_tunnel]\nmin_names = 3\n",
            "exfilmon.toml:7: detections.dns_tunnel.min_names: unknown field `min_names`",
        ),
    ] {
        let msg = err(extra);
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    }
}

#[test]
fn new_thresholds_apply_at_once_and_a_changed_window_starts_afresh() {
    let mut d = Detector::new(volume_only(), Contacts::new());
    let mut higher = volume_only();
    higher.detections.volume.min_bytes = 5_000_000;
    d.configure(higher);
    // 3 MB in the window: over the old 1 MB threshold, under the new 5 MB.
    let medium = vec![traffic("phones", "CN", 500_000, 0)];
    assert_eq!(ticks(&mut d, 0, &vec![medium; 6]), Vec::new());
    let heavy = vec![traffic("phones", "CN", 2_000_000, 0)];

    // Half a window counted, then the window changes: the partial sums are dropped.
    let mut d = Detector::new(volume_only(), Contacts::new());
    assert_eq!(ticks(&mut d, 0, &vec![heavy.clone(); 3]), Vec::new());
    let mut longer = volume_only();
    longer.detections.volume.window = Duration::from_secs(120);
    d.configure(longer);
    assert_eq!(d.flush(), Vec::new());
    let found = ticks(&mut d, 120, &[heavy]);
    assert_eq!(found, Vec::new());
    assert_eq!(kinds(&d.flush()), [("volume", "phones", "CN")]);
}

#[test]
fn each_detection_is_a_counter_and_a_time_by_group_and_country() {
    let registry = prometheus::Registry::new();
    let m = metrics::DetectMetrics::register(&registry).expect("register");
    let mut d = Detector::new(settings(), Contacts::new());
    let mut found = ticks(
        &mut d,
        0,
        &vec![vec![traffic("phones", "CN", 2_000_000, 0)]; 6],
    );
    for i in 0..5 {
        found.extend(d.flow(&flow("203.0.113.10", i * 30_000, 100)));
    }
    for f in &found {
        m.count(f);
    }
    m.set_contacts(d.contacts());
    m.set_beacons(d.beacons());
    let text = String::from_utf8(crate::metrics::render(&registry)).expect("utf8");
    for want in [
        r#"exfilmon_detection_first_contacts_total{country="CN",group="phones"} 1"#,
        r#"exfilmon_detection_asymmetry_total{country="CN",group="phones"} 1"#,
        r#"exfilmon_detection_volume_total{country="CN",group="phones"} 1"#,
        r#"exfilmon_detection_beaconing_total{country="CN",group="phones"} 1"#,
        r#"exfilmon_detection_last_timestamp_seconds{country="CN",detection="volume",group="phones"} 1767225660"#,
        r#"exfilmon_detection_first_contact_timestamp_seconds{country="CN",group="phones"} 1767225610"#,
        "exfilmon_detection_beacon_destinations 1",
        "exfilmon_detection_beacon_evictions_total 0",
        r#"exfilmon_detection_errors_total{reason="state_write"} 0"#,
    ] {
        assert!(text.contains(want), "want {want} in\n{text}");
    }
    assert!(
        !text.contains("203.0.113") && !text.contains("443"),
        "no address or port is a label:\n{text}"
    );
}
