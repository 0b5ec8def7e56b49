//! Tests of loading and merging, with the helpers and fixtures that the
//! per-format tests (`tests/formats.rs`, `tests/mmdb.rs`) share.

use std::{
    fmt::Write as _,
    time::{Duration, UNIX_EPOCH},
};

use mmdb_writer::{IpVersion, Ipv4Aliasing, Value, Writer};
use proptest::prelude::*;

use super::{ranges::find, *};

mod formats;
mod mmdb;

fn cc(s: &str) -> CountryCode {
    CountryCode::parse_data(s).expect("valid").expect("known")
}

fn loc(country: Option<&str>, asn: Option<u32>) -> Location {
    Location {
        country: country.map(cc),
        asn,
    }
}

/// Writes `bytes` to `dir/name` as a source of `format`.
fn source(dir: &Path, name: &str, format: GeoFormat, bytes: impl AsRef<[u8]>) -> GeoSource {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write sample");
    GeoSource { format, path }
}

/// A Tor or CSV source, by the name's extension.
fn write(dir: &Path, name: &str, text: &str) -> GeoSource {
    let format = if Path::new(name).extension().is_some_and(|e| e == "csv") {
        GeoFormat::Csv
    } else {
        GeoFormat::Tor
    };
    source(dir, name, format, text)
}

fn load(sources: &[GeoSource]) -> GeoDb {
    GeoDb::load(sources).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err_as(name: &str, format: GeoFormat, bytes: impl AsRef<[u8]>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path(), name, format, bytes);
    match GeoDb::load(&[src]) {
        Ok(db) => panic!("expected an error for {name} as {format}, got {db:?}"),
        Err(e) => e.to_string(),
    }
}

fn load_err(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = write(dir.path(), name, text);
    match GeoDb::load(&[src]) {
        Ok(db) => panic!("expected an error for {text:?}, got {db:?}"),
        Err(e) => e.to_string(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().expect("test IPv6 address")
}

fn country(db: &GeoDb, s: &str) -> Option<CountryCode> {
    db.lookup(ip(s)).country
}

fn asn(db: &GeoDb, s: &str) -> Option<u32> {
    db.lookup(ip(s)).asn
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test network")
}

/// Loads each `(name, format, text)` and checks that the error contains
/// `name` followed by `want` (so the file and the line).
fn check_errors(cases: &[(&str, GeoFormat, &str, &str)]) {
    for &(name, format, text, want) in cases {
        let msg = load_err_as(name, format, text);
        assert!(
            msg.contains(&format!("{name}{want}")),
            "{name} as {format}, {text:?}: {msg:?} should contain {want:?}"
        );
    }
}

/// Test values that `mmdb-writer` stores as they are.
fn country_record(iso: &str) -> Value {
    Value::map([
        (
            "country",
            Value::map([
                ("geoname_id", Value::from(2_921_044_u32)),
                ("is_in_european_union", Value::from(true)),
                ("iso_code", Value::from(iso)),
                ("names", Value::map([("en", Value::from("Somewhere"))])),
            ]),
        ),
        (
            "registered_country",
            Value::map([("iso_code", Value::from("US"))]),
        ),
        ("continent", Value::map([("code", Value::from("EU"))])),
    ])
}

fn asn_record(n: u32) -> Value {
    Value::map([
        ("autonomous_system_number", Value::from(n)),
        ("autonomous_system_organization", Value::from("Example")),
    ])
}

fn mmdb(version: IpVersion, aliasing: Ipv4Aliasing, records: &[(&str, Value)]) -> Vec<u8> {
    let mut w = Writer::builder("Test-DB")
        .ip_version(version)
        .ipv4_aliasing(aliasing)
        .description(&[("en", "exfilmon test fixture")])
        .build_epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .build();
    for (n, v) in records {
        w.insert_value(net(n), v.clone())
            .unwrap_or_else(|e| panic!("insert {n}: {e}"));
    }
    w.to_bytes().expect("serialise mmdb")
}

#[test]
fn precedence_is_per_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A: country only, for 10.0.0.0-10.0.1.255.
    let only_country = source(
        dir.path(),
        "a.csv",
        GeoFormat::Csv,
        "10.0.0.0,10.0.1.255,DE\n",
    );
    // B: country and ASN, for 10.0.1.0-10.0.3.255.
    let both = source(
        dir.path(),
        "ip2asn-combined.tsv",
        GeoFormat::IpToAsn,
        "10.0.1.0\t10.0.2.255\t64500\tUS\tX\n10.0.3.0\t10.0.3.255\t64501\tNone\tY\n",
    );
    // C: ASN only, everywhere; B's ASN wins where it has one.
    let only_asn = source(
        dir.path(),
        "c.csv",
        GeoFormat::AsnCsv,
        "10.0.0.0,10.0.255.255,64999\n",
    );
    let db = load(&[only_country, both, only_asn]);
    assert_eq!(db.lookup(ip("10.0.0.1")), loc(Some("DE"), Some(64999)));
    assert_eq!(
        db.lookup(ip("10.0.1.1")),
        loc(Some("DE"), Some(64500)),
        "country from A, ASN from B"
    );
    assert_eq!(db.lookup(ip("10.0.2.1")), loc(Some("US"), Some(64500)));
    assert_eq!(db.lookup(ip("10.0.3.1")), loc(None, Some(64501)));
    assert_eq!(db.lookup(ip("10.0.4.1")), loc(None, Some(64999)));
    let stretches: Vec<String> = db
        .locations_v4()
        .into_iter()
        .map(|(first, last, l)| format!("{}-{} {l:?}", Ipv4Addr::from(first), Ipv4Addr::from(last)))
        .collect();
    assert_eq!(
        stretches.len(),
        5,
        "one range per distinct (country, asn) stretch: {stretches:#?}"
    );
    let p: Vec<String> = db
        .prefixes_v4()
        .map(|(n, l)| {
            let c = l.country.map_or_else(|| "--".to_owned(), |c| c.to_string());
            format!("{n} {c} {}", l.asn.unwrap_or(0))
        })
        .collect();
    assert_eq!(
        p,
        [
            "10.0.0.0/24 DE 64999",
            "10.0.1.0/24 DE 64500",
            "10.0.2.0/24 US 64500",
            "10.0.3.0/24 -- 64501",
            "10.0.4.0/22 -- 64999",
            "10.0.8.0/21 -- 64999",
            "10.0.16.0/20 -- 64999",
            "10.0.32.0/19 -- 64999",
            "10.0.64.0/18 -- 64999",
            "10.0.128.0/17 -- 64999",
        ]
    );
}

#[test]
fn locations_join_equal_neighbours_only() {
    let r = Ranges::<u32> {
        country: vec![(0, 9, cc("DE")), (10, 19, cc("FR")), (30, 39, cc("FR"))],
        asn: vec![(5, 14, 1), (15, 25, 1), (40, u32::MAX, 2)],
    };
    assert_eq!(
        r.locations(),
        [
            (0, 4, loc(Some("DE"), None)),
            (5, 9, loc(Some("DE"), Some(1))),
            (10, 19, loc(Some("FR"), Some(1))),
            (20, 25, loc(None, Some(1))),
            (30, 39, loc(Some("FR"), None)),
            (40, u32::MAX, loc(None, Some(2))),
        ]
    );
    let empty = Ranges::<u128>::default();
    assert_eq!(empty.locations(), []);
    let whole = Ranges::<u128> {
        country: vec![(0, u128::MAX, cc("AU"))],
        asn: vec![(0, u128::MAX, 7)],
    };
    assert_eq!(
        whole.locations(),
        [(0, u128::MAX, loc(Some("AU"), Some(7)))]
    );
}

#[test]
fn missing_file_names_path_and_os_error() {
    let msg = GeoDb::load(&[GeoSource {
        format: GeoFormat::Tor,
        path: "/nonexistent/geoip".into(),
    }])
    .expect_err("missing")
    .to_string();
    assert!(
        msg.starts_with("/nonexistent/geoip: cannot open GeoIP file:")
            && msg.contains("No such file"),
        "{msg}"
    );
}

#[test]
fn earlier_source_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write(
        dir.path(),
        "a.csv",
        "10.0.0.0,10.0.0.255,DE\n10.0.2.0,10.0.2.255,FR\n",
    );
    let second = write(dir.path(), "b", "167772160,167773183,US\n");
    let db = load(&[first, second]);
    assert_eq!(country(&db, "10.0.0.5"), Some(cc("DE")), "first wins");
    assert_eq!(
        country(&db, "10.0.1.5"),
        Some(cc("US")),
        "gap filled by second"
    );
    assert_eq!(country(&db, "10.0.2.5"), Some(cc("FR")));
    assert_eq!(country(&db, "10.0.3.255"), Some(cc("US")));
    assert_eq!(country(&db, "10.0.4.0"), None);
    let p: Vec<String> = db
        .prefixes_v4()
        .map(|(n, l)| format!("{n} {}", l.country.expect("country")))
        .collect();
    assert_eq!(
        p,
        [
            "10.0.0.0/24 DE",
            "10.0.1.0/24 US",
            "10.0.2.0/24 FR",
            "10.0.3.0/24 US"
        ]
    );
}

#[test]
fn full_range_edges() {
    let all4: Vec<_> = range_to_prefixes_v4(0, u32::MAX)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(all4, ["0.0.0.0/0"]);
    let all6: Vec<_> = range_to_prefixes_v6(0, u128::MAX)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(all6, ["::/0"]);
    let top: Vec<_> = range_to_prefixes_v4(u32::MAX, u32::MAX)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(top, ["255.255.255.255/32"]);
    let upper: Vec<_> = range_to_prefixes_v4(1, u32::MAX).collect();
    assert_eq!(upper.len(), 32, "1..=MAX needs one prefix per bit");
    assert_eq!(
        range_to_prefixes_v4(5, 4).count(),
        0,
        "reversed range is empty"
    );
    let upper6: Vec<_> = range_to_prefixes_v6(1, u128::MAX).collect();
    assert_eq!(upper6.len(), 128);
}

/// Checks that `prefixes` (as `(start, end)` inclusive) are sorted,
/// disjoint, contiguous and cover exactly `[first, last]`, and minimal
/// (no two neighbours could be joined into one aligned prefix).
fn check_cover(
    first: u128,
    last: u128,
    prefixes: &[(u128, u128, u8)],
    bits: u8,
) -> Result<(), TestCaseError> {
    prop_assert!(!prefixes.is_empty());
    prop_assert_eq!(prefixes[0].0, first, "starts at first");
    prop_assert_eq!(prefixes[prefixes.len() - 1].1, last, "ends at last");
    for w in prefixes.windows(2) {
        prop_assert_eq!(
            w[0].1.checked_add(1),
            Some(w[1].0),
            "contiguous and disjoint: {:?}",
            w
        );
        // Minimality: two equal-length siblings would form a shorter prefix.
        let (a, b) = (w[0], w[1]);
        if a.2 == b.2 && a.2 > 0 {
            let parent_bits = u32::from(bits - a.2 + 1);
            let siblings =
                parent_bits <= 128 && (parent_bits == 128 || a.0 % (1u128 << parent_bits) == 0);
            prop_assert!(!siblings, "{:?} and {:?} could be merged", a, b);
        }
    }
    Ok(())
}

fn addr_pair_v4() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        any::<(u32, u32)>(),
        (0u32..5000, 0u32..5000),
        (u32::MAX - 5000..=u32::MAX, u32::MAX - 5000..=u32::MAX),
        (0u32..4, u32::MAX - 4..=u32::MAX),
    ]
    .prop_map(|(a, b)| (a.min(b), a.max(b)))
}

fn addr_pair_v6() -> impl Strategy<Value = (u128, u128)> {
    prop_oneof![
        any::<(u128, u128)>(),
        (0u128..5000, 0u128..5000),
        (u128::MAX - 5000..=u128::MAX, u128::MAX - 5000..=u128::MAX),
        (0u128..4, u128::MAX - 4..=u128::MAX),
    ]
    .prop_map(|(a, b)| (a.min(b), a.max(b)))
}

const COUNTRIES: [&str; 4] = ["AU", "DE", "US", "JP"];
const ASNS: [u32; 4] = [13335, 64496, 4_294_967_295, 1];

/// One generated row: first, last, country index, ASN index.
type GenRow = (u32, u32, Option<u8>, Option<u8>);

/// Rows for the lookup model, possibly overlapping, near both ends of
/// the address space.
fn rows_strategy() -> impl Strategy<Value = Vec<GenRow>> {
    proptest::collection::vec(
        (
            prop_oneof![
                (0u32..300, 0u32..40),
                (u32::MAX - 300..=u32::MAX, 0u32..40),
                (Just(0u32), Just(u32::MAX)),
            ],
            proptest::option::of(0u8..4),
            proptest::option::of(0u8..4),
        )
            .prop_map(|((a, len), c, n)| (a, a.saturating_add(len), c, n)),
        0..16,
    )
}

/// Drops rows that overlap an earlier one (a file may not overlap itself).
fn disjoint(rows: &[GenRow]) -> Vec<GenRow> {
    let mut out: Vec<GenRow> = Vec::new();
    for &r in rows {
        if out.iter().all(|o| r.1 < o.0 || r.0 > o.1) {
            out.push(r);
        }
    }
    out
}

/// The IPv6 twin of an IPv4 test address: the top of the IPv6 space,
/// so that `u32::MAX` maps to `u128::MAX`.
fn twin(x: u32) -> u128 {
    (u128::MAX - u128::from(u32::MAX)) + u128::from(x)
}

/// A generated source: its format and rows (fields the format cannot
/// carry are dropped first), with each row in both families: as one file, or as
/// one file per family for Tor (whose files hold one family each).
fn gen_file(kind: u8, rows: &[GenRow]) -> (GeoFormat, Vec<(&'static str, String)>, Vec<GenRow>) {
    let (mut text, mut text6) = (String::new(), String::new());
    let (format, name) = match kind {
        0 => (GeoFormat::Tor, "geoip"),
        1 => (GeoFormat::AsnCsv, "asn.csv"),
        _ => (GeoFormat::IpToAsn, "ip2asn-combined.tsv"),
    };
    let rows: Vec<GenRow> = rows
        .iter()
        .map(|&(a, b, c, n)| match kind {
            0 => (a, b, c, None),
            1 => (a, b, None, n),
            _ => (a, b, c, n),
        })
        .collect();
    let c_text = |c: Option<u8>, none: &'static str| c.map_or(none, |c| COUNTRIES[usize::from(c)]);
    let n_text = |n: Option<u8>| n.map_or(0, |n| ASNS[usize::from(n)]);
    for &(a, b, c, n) in &rows {
        let (a6, b6) = (Ipv6Addr::from(twin(a)), Ipv6Addr::from(twin(b)));
        let (a4, b4) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
        match kind {
            0 => {
                let c = c_text(c, "??");
                let _ = writeln!(text, "{a},{b},{c}");
                let _ = writeln!(text6, "{a6},{b6},{c}");
            }
            1 => {
                let n = n_text(n);
                let _ = writeln!(text, "{a4},{b4},AS{n},\"Org, Inc.\"\n{a6},{b6},{n}");
            }
            _ => {
                let (c, n) = (c_text(c, "None"), n_text(n));
                let _ = writeln!(text, "{a4}\t{b4}\t{n}\t{c}\tX\n{a6}\t{b6}\t{n}\t{c}\tY");
            }
        }
    }
    let files = if kind == 0 {
        vec![(name, text), ("geoip6", text6)]
    } else {
        vec![(name, text)]
    };
    (format, files, rows)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prefixes_v4_cover_exactly((first, last) in addr_pair_v4()) {
        let p: Vec<(u128, u128, u8)> = range_to_prefixes_v4(first, last)
            .map(|n| (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast())), n.prefix_len()))
            .collect();
        check_cover(first.into(), last.into(), &p, 32)?;
    }

    #[test]
    fn prefixes_v6_cover_exactly((first, last) in addr_pair_v6()) {
        let p: Vec<(u128, u128, u8)> = range_to_prefixes_v6(first, last)
            .map(|n| (u128::from(n.network()), u128::from(n.broadcast()), n.prefix_len()))
            .collect();
        check_cover(first, last, &p, 128)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Loading several files of different formats and looking up
    /// agrees, per field, with a linear scan where the first file with
    /// that field for the address wins; `locations_v4`/`_v6` and the
    /// prefixes agree with lookup.
    #[test]
    fn lookup_matches_per_field_linear_scan(
        files in proptest::collection::vec((0u8..3, rows_strategy()), 1..4),
        probes in proptest::collection::vec(any::<u32>(), 0..20),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sources = Vec::new();
        let mut model: Vec<Vec<GenRow>> = Vec::new();
        for (i, (kind, rows)) in files.iter().enumerate() {
            let (format, files, rows) = gen_file(*kind, &disjoint(rows));
            for (name, text) in files {
                sources.push(source(dir.path(), &format!("{i}-{name}"), format, text));
            }
            model.push(rows);
        }
        let db = GeoDb::load(&sources).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let naive = |x: u32| {
            let holds = |r: &&GenRow| r.0 <= x && x <= r.1;
            Location {
                country: model.iter().flatten().filter(holds).find_map(|r| r.2)
                    .map(|c| cc(COUNTRIES[usize::from(c)])),
                asn: model.iter().flatten().filter(holds).find_map(|r| r.3)
                    .map(|n| ASNS[usize::from(n)]),
            }
        };
        let mut points: Vec<u32> = probes;
        points.extend([0, 1, u32::MAX - 1, u32::MAX]);
        for r in model.iter().flatten() {
            points.extend([r.0, r.1, r.0.wrapping_sub(1), r.1.wrapping_add(1)]);
        }
        let loc4 = db.locations_v4();
        let loc6 = db.locations_v6();
        for &x in &points {
            let want = naive(x);
            prop_assert_eq!(db.lookup(IpAddr::V4(Ipv4Addr::from(x))), want, "v4 at {}", x);
            prop_assert_eq!(db.lookup(IpAddr::V6(Ipv6Addr::from(twin(x)))), want, "v6 at {}", x);
            prop_assert_eq!(find(&loc4, x).unwrap_or_default(), want, "locations_v4 at {}", x);
            prop_assert_eq!(find(&loc6, twin(x)).unwrap_or_default(), want, "locations_v6 at {}", x);
        }
        // Sorted, disjoint, only known locations, equal neighbours joined.
        for w in loc4.windows(2) {
            prop_assert!(w[0].1 < w[1].0, "sorted disjoint {:?}", w);
            prop_assert!(w[0].1 + 1 < w[1].0 || w[0].2 != w[1].2, "coalesced {:?}", w);
        }
        prop_assert!(loc4.iter().all(|r| r.2.is_known() && r.0 <= r.1));
        prop_assert_eq!(loc4.len(), loc6.len(), "the twins have the same shape");
        for (net, l) in db.prefixes_v4() {
            for x in [net.network(), net.broadcast()] {
                prop_assert_eq!(db.lookup(IpAddr::V4(x)), l);
            }
        }
        prop_assert_eq!(db.prefix_count_v4(), db.prefixes_v4().count());
    }
}

#[test]
fn real_tor_geoip_files() {
    let v4 = Path::new("/usr/share/tor/geoip");
    let v6 = Path::new("/usr/share/tor/geoip6");
    if !v4.is_file() || !v6.is_file() {
        eprintln!("skipping: /usr/share/tor/geoip{{,6}} not present (install tor-geoipdb)");
        return;
    }
    let sources = [
        GeoSource {
            format: GeoFormat::Tor,
            path: v4.into(),
        },
        GeoSource {
            format: GeoFormat::Tor,
            path: v6.into(),
        },
    ];
    let db = GeoDb::load(&sources).unwrap_or_else(|e| panic!("real Tor files: {e}"));
    assert!(
        db.sources[0].ranges_v4 > 100_000,
        "v4 rows: {}",
        db.sources[0].ranges_v4
    );
    assert!(
        db.sources[1].ranges_v6 > 100_000,
        "v6 rows: {}",
        db.sources[1].ranges_v6
    );
    assert!(country(&db, "8.8.8.8").is_some(), "8.8.8.8 has a country");
    assert!(
        country(&db, "2001:4860:4860::8888").is_some(),
        "Google DNS v6 has a country"
    );
    assert_eq!(
        db.lookup(ip("127.0.0.1")),
        Location::default(),
        "loopback has none"
    );
    assert!(
        db.countries().len() > 200,
        "countries: {}",
        db.countries().len()
    );
    eprintln!(
        "real tor geoip: {} v4 ranges ({} prefixes), {} v6 ranges ({} prefixes)",
        db.len_v4(),
        db.prefix_count_v4(),
        db.len_v6(),
        db.prefix_count_v6()
    );
}
