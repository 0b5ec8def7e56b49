//! Bad input everywhere, through the real binary: corrupted and truncated GeoIP files of
//! every format, every numeric config key at and past its limits, non-UTF-8 file names, and
//! garbage and truncated captures (each pcapng block type cut). Each bad input must end in
//! exit code 1 with an error that names the file (and the line, key or frame where there is
//! one), no panic, and no file written or changed.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    ffi::{OsStr, OsString},
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use exfilmon_tests::{exfilmon_bin, packet::*, require_root, seeds};
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
            simple_packet::SimplePacketBlock,
        },
    },
};

/// A GeoIP file every config here can use.
const GEO_CSV: &str = "203.0.113.0,203.0.113.255,CN\n198.51.100.0,198.51.100.255,IN\n";

/// A valid config whose only GeoIP source is `format` at `path`, with `extra` appended.
fn config_text(format: &str, path: &str, extra: &str) -> String {
    format!(
        "[home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"IN\"]\n\
         [geoip]\nsources = [{{ format = \"{format}\", path = \"{path}\" }}]\n{extra}"
    )
}

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path, (meta.len(), meta.modified().expect("mtime")));
        }
    }
    out
}

/// What one run of the binary gave.
struct Run {
    code: Option<i32>,
    stderr: String,
}

/// Runs `exfilmon ARGS` and checks that it wrote nothing under `dir`.
fn exfilmon(dir: &Path, args: &[&OsStr], what: &str) -> Run {
    let before = snapshot(dir);
    let out = Command::new(exfilmon_bin())
        .args(args)
        .env("EXFILMON_LOG", "warn")
        .output()
        .expect("run exfilmon");
    assert_eq!(
        snapshot(dir),
        before,
        "{what}: files were written or changed"
    );
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `exfilmon ARGS` must fail with exit code 1, no panic, and every one of `want` in its
/// error.
fn refused(dir: &Path, args: &[&OsStr], want: &[&str], what: &str) {
    let run = exfilmon(dir, args, what);
    assert_eq!(
        run.code,
        Some(1),
        "{what}: exit code; stderr:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{what}: {}", run.stderr);
    for w in want {
        assert!(
            run.stderr.contains(w),
            "{what}: {w:?} not in the error:\n{}",
            run.stderr
        );
    }
}

/// `exfilmon ARGS` must succeed.
fn accepted(dir: &Path, args: &[&OsStr], what: &str) {
    let run = exfilmon(dir, args, what);
    assert_eq!(run.code, Some(0), "{what}: refused:\n{}", run.stderr);
}

fn check_config(config: &Path) -> [&OsStr; 3] {
    [
        OsStr::new("check-config"),
        OsStr::new("--config"),
        config.as_os_str(),
    ]
}

/// The text GeoIP formats: `(format, file name, contents, what the error must name after
/// the file)`.
#[expect(clippy::too_many_lines, reason = "a table of cases")]
fn bad_text_sources() -> Vec<(&'static str, &'static str, Vec<u8>, &'static str)> {
    let long_line = vec![b'1'; monitor::geoip::MAX_LINE + 10];
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let t = |s: &str| s.as_bytes().to_vec();
    vec![
        // Tor
        (
            "tor",
            "geoip",
            t("16777216,16777471,AU\n16777472,1677"),
            ":2: expected 3 fields",
        ),
        (
            "tor",
            "geoip",
            t("16777216,4294967296,AU\n"),
            ":1: \"4294967296\" is not an IPv4",
        ),
        (
            "tor",
            "geoip",
            t("16777216,16777471,AU\n# c\n16777300,16777471,CN\n"),
            ":3: range",
        ),
        ("tor", "geoip6", t("2001:db8::,2001:db8::ff,D\n"), ":1:"),
        // Tor's files hold one family each: named so, or as their first range is.
        (
            "tor",
            "geoip",
            t("16777216,16777471,AU\n2001:db8::,2001:db8::ff,DE\n"),
            ":2: 2001:db8::-2001:db8::ff is an IPv6 range, but the file is named geoip (Tor's IPv4 file)",
        ),
        (
            "tor",
            "geoip6.old",
            t("1.0.0.0,1.0.0.255,AU\n"),
            ":1: 1.0.0.0-1.0.0.255 is an IPv4 range, but the file is named geoip6",
        ),
        (
            "tor",
            "tor-countries.txt",
            t("2001:db8::,2001:db8::ff,DE\n# c\n16777216,16777471,AU\n"),
            ":3: 1.0.0.0-1.0.0.255 is an IPv4 range, but a Tor GeoIP file holds one family, and its first range (line 1) is IPv6",
        ),
        (
            "tor",
            "geoip",
            b"\xff\xfe\x00\x01binary\n".to_vec(),
            ":1: cannot read GeoIP file",
        ),
        (
            "tor",
            "geoip",
            long_line.clone(),
            ":1: cannot read GeoIP file",
        ),
        ("tor", "geoip", garbage.clone(), ":1:"),
        // CSV
        (
            "csv",
            "geo.csv",
            t("1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0"),
            ":2: expected 3 fields",
        ),
        (
            "csv",
            "geo.csv",
            t("1.0.0.255,1.0.0.0,AU\n"),
            ":1: first address",
        ),
        ("csv", "geo.csv", t("1.0.0.0,1.0.0.255,XYZ\n"), ":1:"),
        (
            "csv",
            "geo.csv",
            t("1.0.0.0,1.0.0.255,AU\n1.0.1.300,1.0.2.0,AU\n"),
            ":2: \"1.0.1.300\" is not an IP",
        ),
        ("csv", "geo.csv", t("1.0.0.0,2001:db8::,AU\n"), ":1:"),
        (
            "csv",
            "dbip-country-ipv4.csv",
            t("1.0.0.0,1.0.0.255,AU\n2001:db8::,2001:db8::ff,DE\n"),
            ":2: 2001:db8::-2001:db8::ff is an IPv6 range, but the file name says ipv4",
        ),
        (
            "csv",
            "geo.csv",
            t("first,last,country\n\"1.0.0.0,1.0.0.255,AU\n"),
            ":2:",
        ),
        ("csv", "geo.csv", long_line, ":1: cannot read GeoIP file"),
        ("csv", "geo.csv", garbage.clone(), ":1:"),
        // ASN CSV
        (
            "asn-csv",
            "asn.csv",
            t("1.0.0.0,1.0.0.255\n"),
            ":1: expected 3 or 4 fields",
        ),
        (
            "asn-csv",
            "asn.csv",
            t("1.0.0.0,1.0.0.255,AS4294967296,X\n"),
            ":1: \"AS4294967296\"",
        ),
        ("asn-csv", "asn.csv", garbage.clone(), ":1:"),
        // iptoasn
        (
            "iptoasn",
            "ip2asn-combined.tsv",
            t("1.0.0.0\t1.0.0.255\t13335\n"),
            ":1: expected 4 or 5",
        ),
        (
            "iptoasn",
            "ip2asn-v4.tsv",
            t("2001:db8::\t2001:db8::ff\t1\tUS\tX\n"),
            ":1: ",
        ),
        (
            "iptoasn",
            "ip2asn-combined.tsv",
            t("1.0.0.0\t1.0.0.255\t-1\tUS\tX\n"),
            ":1: \"-1\"",
        ),
        ("iptoasn", "ip2asn-combined.tsv", garbage.clone(), ":1:"),
        // RIR statistics
        (
            "rir",
            "delegated",
            t("2|ripencc|1|2|3|4|+0\nripencc|DE|ipv5|2.0.0.0|256|2010|allocated\n"),
            ":2: \"ipv5\"",
        ),
        (
            "rir",
            "delegated",
            t("ripencc|DE|ipv4|2.0.0.0|0|2010|allocated\n"),
            ":1: 0 addresses",
        ),
        (
            "rir",
            "delegated",
            t("ripencc|DE|ipv4|255.255.255.0|4294967296|2010|allocated\n"),
            ":1:",
        ),
        (
            "rir",
            "delegated",
            t("ripencc|NL|ipv6|2001:610::|129|1999|allocated\n"),
            ":1: 2001:610::/129",
        ),
        (
            "rir",
            "delegated",
            t("ripencc|DE|ipv4|2.0.0.0\n"),
            ":1: expected at least 7 fields",
        ),
        ("rir", "delegated", garbage, ":1:"),
    ]
}

/// A valid MaxMind DB cut and corrupted: `(what, bytes)`. Each must be refused.
fn bad_mmdbs() -> Vec<(String, Vec<u8>)> {
    let good = seeds::country_mmdb();
    let marker: &[u8] = b"\xab\xcd\xefMaxMind.com";
    let meta = good
        .windows(marker.len())
        .rposition(|w| w == marker)
        .expect("metadata marker");
    let mut out = Vec::new();
    for cut in [
        0,
        1,
        16,
        good.len() / 4,
        good.len() / 2,
        meta,
        meta + 5,
        good.len() - 1,
    ] {
        out.push((
            format!("cut at byte {cut} of {}", good.len()),
            good[..cut].to_vec(),
        ));
    }
    let mut no_marker = good.clone();
    no_marker[meta + 3] ^= 0xff;
    out.push(("metadata marker corrupted".to_owned(), no_marker));
    // Every search-tree record pointing past the data: the walk must end in an error.
    let mut tree = good.clone();
    tree[..meta.min(1024)].fill(0xff);
    out.push(("search tree overwritten".to_owned(), tree));
    out.push((
        "random bytes with a metadata section".to_owned(),
        (0..meta as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .chain(good[meta..].iter().copied())
            .collect(),
    ));
    out
}

#[test]
fn bad_geoip_files_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("exfilmon.toml");
    let mut cases = 0;
    for (format, name, bytes, want) in bad_text_sources() {
        fs::write(&config, config_text(format, name, "")).expect("config");
        fs::write(dir.path().join(name), &bytes).expect("source");
        let what = format!(
            "{format} {name} {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
        refused(
            dir.path(),
            &check_config(&config),
            &[&format!("{name}{want}")],
            &what,
        );
        fs::remove_file(dir.path().join(name)).expect("remove");
        cases += 1;
    }
    fs::write(&config, config_text("mmdb", "country.mmdb", "")).expect("config");
    fs::write(dir.path().join("country.mmdb"), seeds::country_mmdb()).expect("mmdb");
    accepted(dir.path(), &check_config(&config), "the valid MaxMind DB");
    for (what, bytes) in bad_mmdbs() {
        fs::write(dir.path().join("country.mmdb"), &bytes).expect("mmdb");
        refused(
            dir.path(),
            &check_config(&config),
            &["country.mmdb: "],
            &format!("MaxMind DB {what}"),
        );
        cases += 1;
    }
    println!("{cases} corrupted or truncated GeoIP files refused, each naming its file (and line)");
}

/// One numeric key: its TOML table, the key, values that must pass and values that must
/// be refused.
struct Limits {
    table: &'static str,
    key: &'static str,
    ok: &'static [&'static str],
    bad: &'static [&'static str],
}

const I64_MAX: &str = "9223372036854775807";
const I64_OVERFLOW: &str = "9223372036854775808";
const WRONG_TYPES: [&str; 3] = ["1.5", "\"10\"", "true"];

/// Every numeric key of the config, with its limits from the README's config reference.
#[expect(clippy::too_many_lines, reason = "a table of cases")]
fn keys() -> Vec<Limits> {
    let k = |table, key, ok, bad| Limits {
        table,
        key,
        ok,
        bad,
    };
    vec![
        k(
            "flows",
            "max_entries",
            &["1", "16777216"],
            &["0", "16777217", "4294967296", "-1", I64_MAX],
        ),
        k(
            "flows",
            "ring_bytes",
            &["4096", "2147483648"],
            &["0", "4095", "8192000", "4294967296", "-4096", I64_MAX],
        ),
        k(
            "flows",
            "update_interval_secs",
            &["1", "4294967295"],
            &["0", "4294967296", "-1", I64_MAX],
        ),
        k("flows", "update_bytes", &["1", I64_MAX], &["0", "-1"]),
        k(
            "flows",
            "idle_timeout_secs",
            &["1", "4294967295"],
            &["0", "4294967296", "-1"],
        ),
        k(
            "flows",
            "wakeup_bytes",
            &["1", "4194303"],
            &["0", "4194304", "-1", I64_MAX],
        ),
        k(
            "detections",
            "tick_secs",
            &["1", "3600"],
            &["0", "3601", "-1", I64_MAX],
        ),
        k(
            "detections.asymmetry",
            "window_secs",
            &["10", "604800"],
            &["0", "5", "604810", "-10", I64_MAX],
        ),
        k(
            "detections.asymmetry",
            "min_bytes",
            &["1", I64_MAX],
            &["0", "-1"],
        ),
        k(
            "detections.volume",
            "window_secs",
            &["10", "604800"],
            &["0", "15", "604810", "-10"],
        ),
        k(
            "detections.volume",
            "min_bytes",
            &["1", I64_MAX],
            &["0", "-1"],
        ),
        k(
            "detections.beaconing",
            "min_flows",
            &["3", "1000"],
            &["2", "1001", "-1", I64_MAX],
        ),
        k(
            "detections.beaconing",
            "max_flow_bytes",
            &["1", I64_MAX],
            &["0", "-1"],
        ),
        k(
            "detections.beaconing",
            "min_interval_secs",
            &["1", "86400"],
            &["0", "86401", "604801", "-1"],
        ),
        k(
            "detections.beaconing",
            "max_interval_secs",
            &["5", "604800"],
            &["0", "4", "604801", "-1"],
        ),
        k(
            "detections.beaconing",
            "max_entries",
            &["1", "1048576"],
            &["0", "1048577", "-1", I64_MAX],
        ),
        k(
            "detections.dns_tunnel",
            "window_secs",
            &["1", "604800"],
            &["0", "604801", "-1"],
        ),
        k(
            "detections.dns_tunnel",
            "min_suspicious",
            &["1", I64_MAX],
            &["0", "-1"],
        ),
        k(
            "detections.dns_tunnel",
            "max_label_len",
            &["8", "63"],
            &["7", "64", "-1", I64_MAX],
        ),
        k(
            "detections.dns_tunnel",
            "max_name_len",
            &["16", "253"],
            &["15", "254", "-1"],
        ),
        k(
            "detections.dns_tunnel",
            "entropy_min_len",
            &["8", "63"],
            &["7", "64", "-1"],
        ),
        k(
            "detections.dns_tunnel",
            "max_answers",
            &["1", I64_MAX],
            &["0", "-1"],
        ),
        k(
            "detections.dns_tunnel",
            "max_txt_bytes",
            &["1", I64_MAX],
            &["0", "-1"],
        ),
        k(
            "detections.dns_tunnel",
            "max_entries",
            &["1", "1048576"],
            &["0", "1048577", "-1"],
        ),
    ]
}

/// Float keys: values that pass and values that must be refused (out of range, not finite).
fn float_keys() -> Vec<Limits> {
    let k = |table, key, ok, bad| Limits {
        table,
        key,
        ok,
        bad,
    };
    vec![
        k(
            "detections.asymmetry",
            "ratio",
            &["1.0", "1e9"],
            &["0.99", "1.1e9", "-1.0", "nan", "inf", "-inf", "\"10\""],
        ),
        k(
            "detections.beaconing",
            "max_jitter",
            &["0.0", "1.0"],
            &["-0.01", "1.01", "nan", "inf", "true"],
        ),
        k(
            "detections.dns_tunnel",
            "entropy_bits",
            &["1.0", "6.0"],
            &["0.5", "6.01", "nan", "-inf", "\"4\""],
        ),
    ]
}

/// AS number lists: each entry 1..=4294967295.
const ASN_KEYS: [(&str, &str); 5] = [
    ("home", "allow_asns"),
    ("home", "deny_asns"),
    ("metrics", "asns"),
    ("group", "deny_asns"),
    ("watchlist", "asns"),
];

/// The config text with `key = value` in `table`, and the line the value is on.
fn with_key(table: &str, key: &str, value: &str) -> (String, usize) {
    let base = config_text("csv", "geo.csv", "");
    let (head, body) = match table {
        // [home] is in the base config: the key goes right under it.
        "home" => {
            let text = base.replacen("[home]\n", &format!("[home]\n{key} = [{value}]\n"), 1);
            return (text, 2);
        }
        "group" => (
            "[[group]]\nname = \"phones\"\nnetworks = [\"192.0.2.0/26\"]\n".to_owned(),
            format!("{key} = [{value}]\n"),
        ),
        "watchlist" => (
            "[[watchlist]]\nname = \"w\"\n".to_owned(),
            format!("{key} = [{value}]\n"),
        ),
        "metrics" => ("[metrics]\n".to_owned(), format!("{key} = [{value}]\n")),
        _ => (format!("[{table}]\n"), format!("{key} = {value}\n")),
    };
    let line = base.lines().count() + head.lines().count() + 1;
    (format!("{base}{head}{body}"), line)
}

#[test]
fn every_numeric_config_key_is_refused_past_its_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("geo.csv"), GEO_CSV).expect("geo.csv");
    let config = dir.path().join("limits.toml");
    let (mut accepted_cases, mut refused_cases) = (0, 0);
    let mut check = |table: &str, key: &str, value: &str, ok: bool| {
        let (text, line) = with_key(table, key, value);
        fs::write(&config, &text).expect("config");
        let what = format!("[{table}] {key} = {value}");
        if ok {
            accepted(dir.path(), &check_config(&config), &what);
            accepted_cases += 1;
        } else {
            // An integer past i64 is a TOML error of the line; the others name the key too.
            let at = format!("limits.toml:{line}");
            // Keys of arrays of tables and lists carry indexes: `group[0].deny_asns[0]`.
            let key_path = if ASN_KEYS.iter().any(|(t, _)| *t == table) {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
            let want: Vec<&str> = if value == I64_OVERFLOW {
                vec![&at]
            } else {
                vec![&at, key_path.as_str()]
            };
            refused(dir.path(), &check_config(&config), &want, &what);
            refused_cases += 1;
        }
    };
    for k in keys() {
        for v in k.ok {
            check(k.table, k.key, v, true);
        }
        for v in k.bad.iter().chain(&[I64_OVERFLOW]).chain(&WRONG_TYPES) {
            check(k.table, k.key, v, false);
        }
    }
    for k in float_keys() {
        for v in k.ok {
            check(k.table, k.key, v, true);
        }
        for v in k.bad {
            check(k.table, k.key, v, false);
        }
    }
    for (table, key) in ASN_KEYS {
        check(table, key, "1", true);
        check(table, key, "4294967295", true);
        for v in [
            "0",
            "4294967296",
            "-1",
            I64_MAX,
            I64_OVERFLOW,
            "1.5",
            "\"AS1\"",
        ] {
            check(table, key, v, false);
        }
    }
    println!(
        "{refused_cases} config values past their limits or of the wrong type refused with \
         file, line and key; {accepted_cases} values at the limits accepted"
    );
}

/// A name that is not UTF-8: `stem` with a 0xff byte.
fn non_utf8(stem: &str) -> OsString {
    let mut bytes = stem.as_bytes().to_vec();
    bytes.push(0xff);
    OsStr::from_bytes(&bytes).to_owned()
}

#[test]
fn non_utf8_file_names_work_or_are_named() {
    let top = tempfile::tempdir().expect("tempdir");
    let dir = top.path().join(non_utf8("dir-"));
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("geo.csv"), GEO_CSV).expect("geo.csv");
    let config = dir.join(non_utf8("exfilmon-"));
    // `dir-\u{fffd}`: how the error shows a byte that is not UTF-8.
    let shown = "dir-\u{fffd}";

    fs::write(&config, config_text("csv", "geo.csv", "")).expect("config");
    accepted(
        &dir,
        &check_config(&config),
        "a valid config at a non-UTF-8 path",
    );

    fs::write(
        &config,
        config_text("csv", "geo.csv", "[flows]\nmax_entries = 0\n"),
    )
    .expect("config");
    refused(
        &dir,
        &check_config(&config),
        &[&format!("{shown}/exfilmon-\u{fffd}:7: flows.max_entries")],
        "a bad config at a non-UTF-8 path",
    );

    fs::write(&config, config_text("csv", "geo.csv", "")).expect("config");
    fs::write(dir.join("geo.csv"), "1.0.0.0,1.0.0.255\n").expect("geo.csv");
    refused(
        &dir,
        &check_config(&config),
        &[&format!("{shown}/geo.csv:1: expected 3 fields")],
        "a bad GeoIP file in a non-UTF-8 directory",
    );

    refused(
        &dir,
        &check_config(&dir.join(non_utf8("missing-"))),
        &["missing-\u{fffd}: cannot read config"],
        "a missing config with a non-UTF-8 name",
    );
    println!("4 non-UTF-8 paths: config and GeoIP file found, or named in the error");
}

fn frame(i: u8) -> Vec<u8> {
    eth_v4(&ipv4(
        std::net::Ipv4Addr::new(192, 0, 2, 10),
        std::net::Ipv4Addr::new(203, 0, 113, 10),
        UDP,
        &udp(40000, 443, &[i; 60]),
    ))
}

/// A pcap of two frames.
fn pcap() -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).expect("pcap header");
    for i in 0..2 {
        let f = frame(i);
        let p = PcapPacket::new(Duration::from_millis(u64::from(i)), f.len() as u32, &f);
        w.write_packet(&p).expect("packet");
    }
    w.into_writer()
}

/// One block of a pcapng file: its type, where it starts and ends, and the frames before it.
struct Block {
    name: &'static str,
    start: usize,
    end: usize,
    frames_before: u64,
}

/// A pcapng with a section header, an interface description, an enhanced packet and a
/// simple packet block, and where each block is.
fn pcapng() -> (Vec<u8>, Vec<Block>) {
    let mut w = PcapNgWriter::new(Vec::new()).expect("pcapng header");
    let mut blocks = vec![Block {
        name: "section header",
        start: 0,
        end: w.get_ref().len(),
        frames_before: 0,
    }];
    let mut mark = |w: &PcapNgWriter<Vec<u8>>, name, frames_before| {
        let start = blocks.last().expect("a block").end;
        blocks.push(Block {
            name,
            start,
            end: w.get_ref().len(),
            frames_before,
        });
    };
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .expect("idb");
    mark(&w, "interface description", 0);
    let f = frame(0);
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::from_millis(1),
        original_len: f.len() as u32,
        data: Cow::Borrowed(&f),
        options: vec![],
    })
    .expect("epb");
    mark(&w, "enhanced packet", 0);
    let f = frame(1);
    w.write_pcapng_block(SimplePacketBlock {
        original_len: f.len() as u32,
        data: Cow::Borrowed(&f),
    })
    .expect("spb");
    mark(&w, "simple packet", 1);
    (w.into_inner(), blocks)
}

fn args(v: &[OsString]) -> Vec<&OsStr> {
    v.iter().map(OsString::as_os_str).collect()
}

/// `(what, bytes, what the error must name after the file)`.
fn bad_captures() -> Vec<(String, Vec<u8>, String)> {
    let not_capture = ": not a pcap or pcapng capture".to_owned();
    let garbage: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    let mut out = vec![
        ("an empty file".to_owned(), Vec::new(), not_capture.clone()),
        (
            "3 bytes".to_owned(),
            vec![0xd4, 0xc3, 0xb2],
            not_capture.clone(),
        ),
        ("garbage".to_owned(), garbage, not_capture.clone()),
    ];
    let good = pcap();
    let record = 24 + 16 + frame(0).len();
    for (cut, want) in [
        (10, not_capture.clone()),
        (23, not_capture.clone()),
        (24 + 8, ": frame 0: unreadable".to_owned()),
        (record - 1, ": frame 0: unreadable".to_owned()),
        (record + 20, ": frame 1: unreadable".to_owned()),
        (good.len() - 1, ": frame 1: unreadable".to_owned()),
    ] {
        out.push((
            format!("pcap cut at byte {cut}"),
            good[..cut].to_vec(),
            want,
        ));
    }
    // A record that claims 4 GiB: refused without reading (or allocating) that much.
    let mut huge = good.clone();
    huge[24 + 8..24 + 16].copy_from_slice(&[0xff; 8]);
    out.push((
        "pcap record of 4 GiB".to_owned(),
        huge,
        ": frame 0: unreadable".to_owned(),
    ));

    let (good, blocks) = pcapng();
    for Block {
        name,
        start,
        end,
        frames_before,
    } in blocks
    {
        let want = if start == 0 {
            not_capture.clone()
        } else {
            format!(": frame {frames_before}: unreadable")
        };
        for cut in [start + 4, start + 8, usize::midpoint(start, end), end - 1] {
            out.push((
                format!("pcapng {name} block cut at byte {cut}"),
                good[..cut].to_vec(),
                want.clone(),
            ));
        }
        // The trailing copy of the block length disagrees with the leading one.
        let mut bad_len = good.clone();
        bad_len[end - 4] ^= 0x04;
        out.push((
            format!("pcapng {name} block with a wrong trailing length"),
            bad_len,
            want.clone(),
        ));
        // A block length past the end of the file.
        let mut huge = good.clone();
        huge[start + 4..start + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        out.push((format!("pcapng {name} block of 2 GiB"), huge, want));
    }
    out
}

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn bad_captures_are_refused_with_file_and_frame() {
    require_root("bad_captures_are_refused_with_file_and_frame");
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("geo.csv"), GEO_CSV).expect("geo.csv");
    let config = dir.path().join("exfilmon.toml");
    fs::write(&config, config_text("csv", "geo.csv", "")).expect("config");
    let replay = |capture: &Path| -> Vec<OsString> {
        vec![
            "replay".into(),
            "--config".into(),
            config.clone().into_os_string(),
            capture.as_os_str().to_owned(),
        ]
    };

    // The valid captures replay, also under a name that is not UTF-8.
    let (pcapng, _) = pcapng();
    for (name, bytes) in [
        (non_utf8("good-"), pcap()),
        (OsString::from("good.pcapng"), pcapng),
    ] {
        let path = dir.path().join(&name);
        fs::write(&path, bytes).expect("capture");
        accepted(
            dir.path(),
            &args(&replay(&path)),
            &format!("{}", path.display()),
        );
        fs::remove_file(&path).expect("remove");
    }
    let mut cases = 0;
    for (i, (what, bytes, want)) in bad_captures().into_iter().enumerate() {
        // Every fourth under a name that is not UTF-8.
        let name = if i % 4 == 0 {
            non_utf8(&format!("bad{i}-"))
        } else {
            OsString::from(format!("bad{i}.cap"))
        };
        let shown = name.to_string_lossy().into_owned();
        let path = dir.path().join(&name);
        fs::write(&path, &bytes).expect("capture");
        refused(
            dir.path(),
            &args(&replay(&path)),
            &[&format!("{shown}{want}")],
            &what,
        );
        fs::remove_file(&path).expect("remove");
        cases += 1;
    }
    println!("{cases} garbage or truncated captures refused, each naming its file (and frame)");
}
