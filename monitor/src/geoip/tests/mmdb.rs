//! MaxMind DB files: the database shapes read, IPv4 in an IPv6 tree, and
//! broken files.

use maxminddb::{Reader, WithinOptions};

use super::*;

/// An ipinfo lite style database: `asn` as `"AS..."`, `country_code`,
/// and `country` as a name.
fn ipinfo_lite_fixture() -> Vec<u8> {
    mmdb(
        IpVersion::V6,
        Ipv4Aliasing::Enabled,
        &[
            (
                "8.8.8.0/24",
                Value::map([
                    ("asn", Value::from("AS15169")),
                    ("as_name", Value::from("Google LLC")),
                    ("country", Value::from("United States")),
                    ("country_code", Value::from("US")),
                    ("continent_code", Value::from("NA")),
                ]),
            ),
            (
                "2001:4860::/32",
                Value::map([
                    ("asn", Value::from("AS15169")),
                    ("country_code", Value::from("US")),
                ]),
            ),
        ],
    )
}

#[test]
fn mmdb_country_asn_and_ipinfo_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let country_db = mmdb(
        IpVersion::V6,
        Ipv4Aliasing::Enabled,
        &[
            ("1.0.0.0/24", country_record("AU")),
            ("1.0.1.0/24", country_record("CN")),
            (
                "1.0.2.0/23",
                Value::map([(
                    "registered_country",
                    Value::map([("iso_code", Value::from("JP"))]),
                )]),
            ),
            ("2001:db8::/32", country_record("DE")),
            ("2001:db9::/32", Value::map([("city", Value::from("x"))])),
        ],
    );
    let asn_db = mmdb(
        IpVersion::V4,
        Ipv4Aliasing::Enabled,
        &[
            ("1.0.0.0/23", asn_record(13335)),
            ("1.0.4.0/22", asn_record(0)),
        ],
    );
    let ipinfo_db = ipinfo_lite_fixture();
    let sources = [
        source(
            dir.path(),
            "GeoLite2-Country.mmdb",
            GeoFormat::Mmdb,
            &country_db,
        ),
        source(dir.path(), "GeoLite2-ASN.mmdb", GeoFormat::Mmdb, &asn_db),
        source(dir.path(), "ipinfo_lite.mmdb", GeoFormat::Mmdb, &ipinfo_db),
    ];
    let db = load(&sources);
    assert_eq!(db.lookup(ip("1.0.0.1")), loc(Some("AU"), Some(13335)));
    assert_eq!(db.lookup(ip("1.0.1.1")), loc(Some("CN"), Some(13335)));
    assert_eq!(
        db.lookup(ip("1.0.3.255")),
        loc(Some("JP"), None),
        "registered_country when country is absent"
    );
    assert_eq!(db.lookup(ip("1.0.5.0")), Location::default(), "AS 0");
    assert_eq!(
        db.lookup(ip("::ffff:1.0.0.1")),
        loc(Some("AU"), Some(13335))
    );
    assert_eq!(db.lookup(ip("2001:db8::1")), loc(Some("DE"), None));
    assert_eq!(db.lookup(ip("2001:db9::1")), Location::default());
    assert_eq!(db.lookup(ip("8.8.8.8")), loc(Some("US"), Some(15169)));
    assert_eq!(
        db.lookup(ip("2001:4860::8888")),
        loc(Some("US"), Some(15169))
    );
    let built = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for s in &db.sources {
        assert_eq!(s.built, Some(built), "{}: build_epoch", s.path.display());
    }
    let c = &db.sources[0];
    assert_eq!((c.ranges_v4, c.ranges_v6, c.asn_ranges_v4), (3, 1, 0));
    let a = &db.sources[1];
    assert_eq!((a.ranges_v4, a.asn_ranges_v4, a.ranges_v6), (1, 1, 0));
    assert_eq!(
        db.locations_v6(),
        [
            (
                u128::from(ip6("2001:db8::")),
                u128::from(ip6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")),
                loc(Some("DE"), None)
            ),
            (
                u128::from(ip6("2001:4860::")),
                u128::from(ip6("2001:4860:ffff:ffff:ffff:ffff:ffff:ffff")),
                loc(Some("US"), Some(15169))
            ),
        ]
    );
}

#[test]
fn mmdb_ipv4_aliases_are_not_ipv6_ranges() {
    let bytes = mmdb(
        IpVersion::V6,
        Ipv4Aliasing::Enabled,
        &[
            ("1.0.0.0/24", country_record("AU")),
            ("0.0.0.0/8", asn_record(1)),
            ("255.255.255.0/24", country_record("NZ")),
            ("2a00::/16", country_record("GB")),
        ],
    );
    // The fixture really has the aliases: the reader finds IPv4 data
    // through ::ffff:0:0/96, 2002::/16 and Teredo when asked to.
    let reader = Reader::from_source(bytes.as_slice()).expect("fixture opens");
    let all = reader
        .networks(WithinOptions::default().include_aliased_networks())
        .expect("iterate")
        .count();
    let plain = reader
        .networks(WithinOptions::default())
        .expect("iterate")
        .count();
    assert!(all > plain, "aliases present: {all} > {plain}");
    let mapped = reader
        .lookup(ip("2002:100:1::"))
        .expect("6to4 lookup")
        .has_data();
    assert!(mapped, "6to4 address resolves to IPv4 data");

    let dir = tempfile::tempdir().expect("tempdir");
    let db = load(&[source(dir.path(), "v6.mmdb", GeoFormat::Mmdb, &bytes)]);
    assert_eq!(
        db.locations_v6(),
        [(
            u128::from(ip6("2a00::")),
            u128::from(ip6("2a00:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            loc(Some("GB"), None)
        )],
        "only the real IPv6 network"
    );
    assert_eq!(db.sources[0].ranges_v6, 1);
    assert_eq!(db.sources[0].ranges_v4, 3, "IPv4 read once");
    assert_eq!(db.lookup(ip("1.0.0.9")), loc(Some("AU"), None));
    assert_eq!(db.lookup(ip("0.1.2.3")), loc(None, Some(1)));
    assert_eq!(db.lookup(ip("255.255.255.255")), loc(Some("NZ"), None));
    assert_eq!(db.lookup(ip("::ffff:1.0.0.9")), loc(Some("AU"), None));
    assert_eq!(db.lookup(ip("2002:100:1::")), Location::default());

    // Without aliases the same data loads the same.
    let plain_bytes = mmdb(
        IpVersion::V6,
        Ipv4Aliasing::Disabled,
        &[("1.0.0.0/24", country_record("AU"))],
    );
    let db2 = load(&[source(
        dir.path(),
        "plain.mmdb",
        GeoFormat::Mmdb,
        &plain_bytes,
    )]);
    assert_eq!(db2.lookup(ip("1.0.0.9")), loc(Some("AU"), None));
    assert_eq!(db2.locations_v6(), []);
}

#[test]
fn mmdb_network_above_the_ipv4_subtree_covers_ipv4() {
    let bytes = mmdb(
        IpVersion::V6,
        Ipv4Aliasing::Disabled,
        &[("::/64", asn_record(64496))],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let db = load(&[source(dir.path(), "low.mmdb", GeoFormat::Mmdb, &bytes)]);
    assert_eq!(db.lookup(ip("1.2.3.4")), loc(None, Some(64496)));
    assert_eq!(db.lookup(ip("::1")), loc(None, Some(64496)));
    assert_eq!(db.locations_v4(), [(0, u32::MAX, loc(None, Some(64496)))]);
}

#[test]
fn broken_mmdb_files_are_errors_with_offsets() {
    let bytes = mmdb(
        IpVersion::V6,
        Ipv4Aliasing::Enabled,
        &[
            ("1.0.0.0/24", country_record("AU")),
            ("2001:db8::/32", asn_record(64496)),
        ],
    );
    // Truncated anywhere: the metadata is lost or cut.
    for cut in [0, 1, 16, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
        let msg = load_err_as("t.mmdb", GeoFormat::Mmdb, &bytes[..cut]);
        assert!(
            msg.contains("t.mmdb: not a usable MaxMind DB file:"),
            "cut at {cut}: {msg}"
        );
    }
    // A record whose type byte is corrupted: the decoder's offset is given.
    let reader = Reader::from_source(bytes.as_slice()).expect("fixture opens");
    let m = reader.metadata();
    let data_start = m.node_count as usize * usize::from(m.record_size) / 4 + 16;
    let mut bad = bytes.clone();
    // Extended type 0 + 7 (a pointer may not be extended): invalid.
    bad[data_start] = 0x00;
    bad[data_start + 1] = 0xf0;
    let msg = load_err_as("c.mmdb", GeoFormat::Mmdb, &bad);
    assert!(
        msg.contains("c.mmdb: MaxMind DB record of") && msg.contains("offset"),
        "{msg}"
    );
    // Values that decode but are not what they claim.
    let cases = [
        (
            "1.0.0.0/24",
            Value::map([("autonomous_system_number", Value::from(1u64 << 33))]),
            "does not fit in 32 bits",
        ),
        (
            "1.0.0.0/24",
            Value::map([("asn", Value::from("ASx"))]),
            "\"ASx\" is not a 32-bit AS number",
        ),
        (
            "1.0.0.0/24",
            country_record("USA"),
            "\"USA\" is not a two-letter country code",
        ),
        (
            "2001:db8::/32",
            Value::map([("country", Value::from(7u32))]),
            "a map with iso_code, or a country name",
        ),
    ];
    for (n, value, want) in cases {
        let bytes = mmdb(IpVersion::V6, Ipv4Aliasing::Enabled, &[(n, value)]);
        let msg = load_err_as("v.mmdb", GeoFormat::Mmdb, &bytes);
        assert!(
            msg.contains(&format!("v.mmdb: MaxMind DB record of {n}: decoding error"))
                && msg.contains(want),
            "{msg} should contain {want:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A MaxMind DB file with random bytes changed or cut off either
    /// loads or fails with an error naming the file; it never panics.
    #[test]
    fn corrupted_mmdb_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = mmdb(
            IpVersion::V6,
            Ipv4Aliasing::Enabled,
            &[
                ("1.0.0.0/24", country_record("AU")),
                ("1.0.1.0/24", asn_record(13335)),
                ("2001:db8::/32", country_record("DE")),
            ],
        );
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let src = source(dir.path(), "fuzz.mmdb", GeoFormat::Mmdb, &bytes);
        if let Err(e) = GeoDb::load(&[src]) {
            prop_assert!(e.to_string().contains("fuzz.mmdb"), "{}", e);
        }
    }
}
