//! The text formats: samples of each, and errors naming the file and line.

use std::borrow::Cow;

use super::*;
use crate::geoip::text::split_csv;

#[test]
fn tor_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v4 = write(
        dir.path(),
        "geoip",
        "# comment\n\n16777216,16777471,AU\n16777472,16778239,CN\n16778240,16779263,??\n",
    );
    let v6 = write(
        dir.path(),
        "geoip6",
        "# c\n2001::,2001:0:ffff:ffff:ffff:ffff:ffff:ffff,??\n2001:2::,2001:2:0:ffff:ffff:ffff:ffff:ffff,JP\n",
    );
    let db = load(&[v4, v6]);
    assert_eq!(country(&db, "1.0.0.0"), Some(cc("AU")));
    assert_eq!(country(&db, "1.0.0.255"), Some(cc("AU")));
    assert_eq!(country(&db, "1.0.1.0"), Some(cc("CN")));
    assert_eq!(country(&db, "1.0.3.255"), Some(cc("CN")));
    assert_eq!(
        db.lookup(ip("1.0.4.0")),
        Location::default(),
        "?? rows are skipped"
    );
    assert_eq!(db.lookup(ip("0.255.255.255")), Location::default());
    assert_eq!(country(&db, "::ffff:1.0.0.1"), Some(cc("AU")), "v4-mapped");
    assert_eq!(db.lookup(ip("2001:2::1")), loc(Some("JP"), None));
    assert_eq!(country(&db, "2001::1"), None);
    assert_eq!((db.len_v4(), db.len_v6()), (2, 1));
    assert_eq!(db.sources[0].ranges_v4, 2);
    assert_eq!(db.sources[0].asn_ranges_v4, 0);
    assert_eq!(db.sources[1].ranges_v6, 1);
    assert!(db.sources[0].modified.is_some(), "mtime recorded");
    assert_eq!(
        db.sources[0].built, None,
        "only MaxMind DB has a build time"
    );
    assert_eq!(
        db.countries()
            .into_iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
        ["AU", "CN", "JP"]
    );
    assert!(db.asns().is_empty());
    let p4: Vec<String> = db
        .prefixes_v4()
        .map(|(n, l)| format!("{n} {}", l.country.expect("country")))
        .collect();
    assert_eq!(p4, ["1.0.0.0/24 AU", "1.0.1.0/24 CN", "1.0.2.0/23 CN"]);
    assert_eq!(db.prefix_count_v6(), 1);
    assert_eq!(
        db.prefixes_v6()
            .next()
            .map(|(n, _)| n.to_string())
            .as_deref(),
        Some("2001:2::/48")
    );
}

#[test]
fn csv_sample_with_header_quotes_and_mixed_families() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = write(
        dir.path(),
        "geo.csv",
        "ip_range_start,ip_range_end,country_code\n\"1.0.0.0\",\"1.0.0.255\",\"AU\"\n2001:db8::, 2001:db8::ffff ,de\n1.0.1.0,1.0.1.255,ZZ\n",
    );
    let db = load(&[src]);
    assert_eq!(country(&db, "1.0.0.7"), Some(cc("AU")));
    assert_eq!(country(&db, "2001:db8::ff"), Some(cc("DE")));
    assert_eq!(country(&db, "1.0.1.1"), None, "ZZ means unknown");
    assert_eq!((db.len_v4(), db.len_v6()), (1, 1));
    let bom = write(dir.path(), "bom.csv", "\u{feff}1.0.0.0,1.0.0.255,AU\n");
    assert_eq!(
        country(&load(&[bom]), "1.0.0.1"),
        Some(cc("AU")),
        "BOM skipped"
    );
}

#[test]
fn csv_quoting() {
    let split =
        |line: &str| -> Vec<String> { split_csv(line).into_iter().map(Cow::into_owned).collect() };
    assert_eq!(split("a, b ,c"), ["a", "b", "c"]);
    assert_eq!(split("\"a,b\",\" c \""), ["a,b", "c"]);
    assert_eq!(split("\"say \"\"hi\"\"\",x"), ["say \"hi\"", "x"]);
    assert_eq!(split("\"ab\"c,d"), ["abc", "d"]);
    assert_eq!(split("1,\"open,2"), ["1", "open,2"]);
    assert_eq!(split("1,,"), ["1", "", ""]);
    assert_eq!(split(""), [""]);
}

#[test]
fn asn_csv_sample() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(
        dir.path(),
        "asn.csv",
        GeoFormat::AsnCsv,
        "first,last,asn,org\n\
         1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n\
         1.0.1.0,1.0.1.255,AS4134,Chinanet, Backbone, unquoted\n\
         1.0.2.0,1.0.2.255,0,Not routed\n\
         1.0.3.0,1.0.3.255,as7497\n\
         2001:db8::,2001:db8::ffff,64512,\"x\"\n",
    );
    let db = load(&[src]);
    assert_eq!(db.lookup(ip("1.0.0.1")), loc(None, Some(13335)));
    assert_eq!(asn(&db, "1.0.1.1"), Some(4134), "AS prefix accepted");
    assert_eq!(asn(&db, "1.0.2.1"), None, "AS 0 is none");
    assert_eq!(asn(&db, "1.0.3.255"), Some(7497));
    assert_eq!(asn(&db, "2001:db8::1"), Some(64512));
    assert_eq!(
        db.asns().into_iter().collect::<Vec<_>>(),
        [4134, 7497, 13335, 64512]
    );
    assert!(db.countries().is_empty());
    assert!(db.ranges_v4().is_empty(), "no country ranges");
    assert_eq!(db.asn_ranges_v4().len(), 3);
    let info = &db.sources[0];
    assert_eq!(
        (
            info.ranges_v4,
            info.asn_ranges_v4,
            info.ranges_v6,
            info.asn_ranges_v6
        ),
        (3, 3, 1, 1)
    );
    assert_eq!(
        db.locations_v4(),
        [
            (0x0100_0000, 0x0100_00ff, loc(None, Some(13335))),
            (0x0100_0100, 0x0100_01ff, loc(None, Some(4134))),
            (0x0100_0300, 0x0100_03ff, loc(None, Some(7497))),
        ]
    );
}

#[test]
fn iptoasn_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let combined = source(
        dir.path(),
        "ip2asn-combined.tsv",
        GeoFormat::IpToAsn,
        "0.0.0.0\t0.255.255.255\t0\tNone\tNot routed\n\
         1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET - Cloudflare, Inc.\n\
         1.0.1.0\t1.0.3.255\t0\tCN\tNot routed\n\
         1.0.4.0\t1.0.7.255\t38803\tUnknown\tGTELECOM-AUSTRALIA\n\
         1.0.8.0\t1.0.8.255\t4134\t\n\
         2001:200::\t2001:200:ffff:ffff:ffff:ffff:ffff:ffff\t2500\tJP\tWIDE-BB WIDE Project\n",
    );
    let db = load(&[combined]);
    assert_eq!(db.lookup(ip("0.1.2.3")), Location::default(), "not routed");
    assert_eq!(db.lookup(ip("1.0.0.1")), loc(Some("US"), Some(13335)));
    assert_eq!(db.lookup(ip("1.0.2.0")), loc(Some("CN"), None));
    assert_eq!(db.lookup(ip("1.0.5.0")), loc(None, Some(38803)));
    assert_eq!(db.lookup(ip("1.0.8.8")), loc(None, Some(4134)));
    assert_eq!(db.lookup(ip("2001:200::1")), loc(Some("JP"), Some(2500)));
    let info = &db.sources[0];
    assert_eq!((info.ranges_v4, info.asn_ranges_v4), (4, 3));
    assert_eq!((info.ranges_v6, info.asn_ranges_v6), (1, 1));

    let u32_form = source(
        dir.path(),
        "ip2asn-v4-u32.tsv",
        GeoFormat::IpToAsn,
        "16777216\t16777471\t13335\tUS\tCLOUDFLARENET\n16777472\t16778239\t0\tNone\tNot routed\n",
    );
    let db = load(&[u32_form]);
    assert_eq!(db.lookup(ip("1.0.0.255")), loc(Some("US"), Some(13335)));
    assert_eq!(db.lookup(ip("1.0.1.0")), Location::default());
    assert_eq!(db.sources[0].ranges_v4, 1);
}

#[test]
fn rir_sample_with_non_power_of_two_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(
        dir.path(),
        "delegated-ripencc-extended-latest",
        GeoFormat::Rir,
        "# RIPE NCC extended stats\n\
         2|ripencc|1700000000|150000|19830705|20231114|+0100\n\
         ripencc|*|asn|*|40000|summary\n\
         ripencc|*|ipv4|*|80000|summary\n\
         ripencc|*|ipv6|*|30000|summary\n\
         ripencc|DE|asn|3320|1|19930901|allocated|abc\n\
         ripencc|FR|ipv4|2.0.0.0|1048576|20100712|allocated|def\n\
         ripencc|NL|ipv4|5.0.0.0|768|20120101|assigned|ghi\n\
         ripencc||ipv4|5.0.3.0|256||available\n\
         ripencc|ZZ|ipv4|5.0.4.0|256||reserved|\n\
         ripencc|ZZ|ipv4|5.0.5.0|256|20120101|assigned|jkl\n\
         ripencc|EU|ipv6|2001:db8::|32|20020801|allocated|mno|e-stats\n",
    );
    let db = load(&[src]);
    assert_eq!(country(&db, "2.0.0.0"), Some(cc("FR")));
    assert_eq!(country(&db, "2.15.255.255"), Some(cc("FR")));
    assert_eq!(country(&db, "2.16.0.0"), None);
    assert_eq!(country(&db, "5.0.0.0"), Some(cc("NL")));
    assert_eq!(
        country(&db, "5.0.2.255"),
        Some(cc("NL")),
        "768 = 3 x /24, not a power of two"
    );
    assert_eq!(country(&db, "5.0.3.0"), None, "available");
    assert_eq!(country(&db, "5.0.4.0"), None, "reserved");
    assert_eq!(country(&db, "5.0.5.0"), None, "ZZ");
    assert_eq!(db.lookup(ip("2001:db8:ffff::1")), loc(Some("EU"), None));
    assert_eq!(country(&db, "2001:db9::"), None);
    assert!(db.asns().is_empty(), "asn records give no address data");
    let p4: Vec<String> = db.prefixes_v4().map(|(n, _)| n.to_string()).collect();
    assert_eq!(p4, ["2.0.0.0/12", "5.0.0.0/23", "5.0.2.0/24"]);
    assert_eq!((db.sources[0].ranges_v4, db.sources[0].ranges_v6), (2, 1));
}

#[test]
fn tor_and_csv_errors_name_file_and_line() {
    use GeoFormat::{Csv, Rir, Tor};
    check_errors(&[
        (
            "geoip",
            Tor,
            "1,2,AU\n3,x,AU\n",
            ":2: \"x\" is not an IP address",
        ),
        (
            "geoip",
            Tor,
            "1,2,AU\n\n4294967296,4294967297,AU\n",
            ":3: \"4294967296\" is not an IPv4 address as a 32-bit integer",
        ),
        (
            "geoip",
            Tor,
            "5,2,AU\n",
            ":1: first address 0.0.0.5 is after last address 0.0.0.2",
        ),
        (
            "geoip",
            Tor,
            "1,2\n",
            ":1: expected 3 fields (first,last,country), found 2",
        ),
        ("geoip", Tor, "1,2,AU,x\n", ":1: expected 3 fields"),
        (
            "geoip",
            Tor,
            "1,2,A1\n",
            ":1: \"A1\" is not a two-letter country code",
        ),
        (
            "geoip6",
            Tor,
            "::1,1.2.3.4,AU\n",
            ":1: \"::1\" and \"1.2.3.4\" are not of the same address family",
        ),
        (
            "geoip6",
            Tor,
            "1.2.3.4,7,AU\n",
            ":1: \"1.2.3.4\" and \"7\" are not of the same address family",
        ),
        (
            "geoip",
            Tor,
            "1,10,AU\n20,30,AU\n5,15,US\n",
            ":3: range 0.0.0.5-0.0.0.15 overlaps range 0.0.0.1-0.0.0.10 on line 1",
        ),
        (
            "geo.csv",
            Csv,
            "a,b,c\n1.0.0.0,1.0.0.9,AU\n1.0.0.9,1.0.0.20,AU\n",
            ":3: range 1.0.0.9-1.0.0.20 overlaps range 1.0.0.0-1.0.0.9 on line 2",
        ),
        (
            "geo.csv",
            Csv,
            "1.0.0.0,1.0.0.9,AU\n1.0.0.10,nope,AU\n",
            ":2: \"nope\" is not an IP address",
        ),
        ("geo.csv", Csv, "1.0.0.0,1.0.0.9\n", ":1: expected 3 fields"),
        (
            "geo.csv",
            Csv,
            "# comment, with \"quote\n\nh1,h2,h3\n1.0.0.0,1.0.0.9,AU\r\n\n1.0.0.10,\"1.0.0.x\",AU\n",
            ":6: \"1.0.0.x\" is not an IP address",
        ),
        (
            "geo.csv",
            Csv,
            "1.0.0.0,\"1.0.0.9,AU\n",
            ":1: expected 3 fields",
        ),
        (
            "geoip",
            Tor,
            "1.0.0.0\t1.0.0.255\t13335\tUS\tX\n",
            ":1: expected 3 fields",
        ),
        (
            "delegated",
            Rir,
            "1.0.0.0,1.0.0.255,AU\n",
            ":1: expected at least 7 fields",
        ),
    ]);
    let bin = load_err("geoip", "1,2,AU\n\u{0}\u{ff}");
    assert!(bin.contains("geoip:2:"), "{bin}");
}

#[test]
fn asn_csv_and_iptoasn_errors_name_file_and_line() {
    use GeoFormat::{AsnCsv, IpToAsn};
    check_errors(&[
        (
            "asn.csv",
            AsnCsv,
            "1.0.0.0,1.0.0.255,13335\n1.0.1.0,1.0.1.255,cloudflare\n",
            ":2: \"cloudflare\" is not a 32-bit AS number (invalid digit",
        ),
        (
            "asn.csv",
            AsnCsv,
            "1.0.0.0,1.0.0.255,4294967296,x\n",
            ":1: \"4294967296\" is not a 32-bit AS number (number too large",
        ),
        (
            "asn.csv",
            AsnCsv,
            "1.0.0.0,1.0.0.255,AS\n",
            ":1: \"AS\" is not a 32-bit AS number",
        ),
        (
            "asn.csv",
            AsnCsv,
            "1.0.0.0,1.0.0.255\n",
            ":1: expected 3 or 4 fields (first,last,asn[,organisation]), found 2",
        ),
        (
            "asn.csv",
            AsnCsv,
            "1.0.0.0,1.0.0.255,1\n2001:db8::,2001:db8::1,2\n1.0.0.128,1.0.1.0,3\n",
            ":3: range 1.0.0.128-1.0.1.0 overlaps range 1.0.0.0-1.0.0.255 on line 1",
        ),
        (
            "asn.csv",
            AsnCsv,
            "1.0.0.0,2001:db8::,1\n",
            ":1: \"1.0.0.0\" and \"2001:db8::\" are not of the same address family",
        ),
        (
            "ip2asn-v4.tsv",
            IpToAsn,
            "1.0.0.0\t1.0.0.255\t13335\tUS\tX\n2001:db8::\t2001:db8::ff\t1\tUS\tY\n",
            ":2: 2001:db8::-2001:db8::ff is an IPv6 range, but the file is named ip2asn-v4* (IPv4 only)",
        ),
        (
            "ip2asn-v6.tsv",
            IpToAsn,
            "1.0.0.0\t1.0.0.255\t13335\tUS\tX\n",
            ":1: 1.0.0.0-1.0.0.255 is an IPv4 range, but the file is named ip2asn-v6*",
        ),
        (
            "ip2asn-combined.tsv",
            IpToAsn,
            "1.0.0.0\t::1\t13335\tUS\tX\n",
            ":1: \"1.0.0.0\" and \"::1\" are not of the same address family",
        ),
        (
            "ip2asn-combined.tsv",
            IpToAsn,
            "1.0.0.0\t1.0.0.255\tAS13335x\tUS\tX\n",
            ":1: \"AS13335x\" is not a 32-bit AS number",
        ),
        (
            "ip2asn-combined.tsv",
            IpToAsn,
            "1.0.0.0\t1.0.0.255\t13335\tUSA\tX\n",
            ":1: \"USA\" is not a two-letter country code",
        ),
        (
            "ip2asn-combined.tsv",
            IpToAsn,
            "1.0.0.0,1.0.0.255,13335,US\n",
            ":1: expected 4 or 5 tab-separated fields",
        ),
        (
            "ip2asn-combined.tsv",
            IpToAsn,
            "1.0.0.0\t1.0.0.255\t1\tUS\n1.0.0.255\t1.0.1.0\t2\tUS\n",
            ":2: range 1.0.0.255-1.0.1.0 overlaps",
        ),
    ]);
}

#[test]
fn rir_errors_name_file_and_line() {
    use GeoFormat::Rir;
    check_errors(&[
        (
            "delegated",
            Rir,
            "ripencc|NL|ipv4|5.0.0.0|zero|20120101|assigned\n",
            ":1: \"zero\" is not an address count or prefix length",
        ),
        (
            "delegated",
            Rir,
            "2|ripencc|1|2|3|4|+0100\nripencc|NL|ipv4|255.255.255.0|512|20120101|assigned\n",
            ":2: 512 addresses from 255.255.255.0 is not an IPv4 range",
        ),
        (
            "delegated",
            Rir,
            "ripencc|NL|ipv4|5.0.0.0|0|20120101|assigned\n",
            ":1: 0 addresses from 5.0.0.0",
        ),
        (
            "delegated",
            Rir,
            "ripencc|NL|ipv6|2001:db8::1|32|20120101|assigned\n",
            ":1: 2001:db8::1/32 is not an IPv6 prefix",
        ),
        (
            "delegated",
            Rir,
            "ripencc|NL|ipv6|2001:db8::|129|20120101|assigned\n",
            ":1: 2001:db8::/129 is not an IPv6 prefix",
        ),
        (
            "delegated",
            Rir,
            "ripencc|NL|ipv6|5.0.0.0|32|20120101|assigned\n",
            ":1: 5.0.0.0-5.0.0.0 is an IPv4 range, but the record type is ipv6",
        ),
        (
            "delegated",
            Rir,
            "ripencc|NL|ipx|5.0.0.0|32|20120101|assigned\n",
            ":1: \"ipx\" is not a RIR record type",
        ),
        (
            "delegated",
            Rir,
            "ripencc|NL|ipv4|5.0.0.0|256\n",
            ":1: expected at least 7 fields (registry|cc|type|start|value|date|status), found 5",
        ),
        (
            "delegated",
            Rir,
            "ripencc|NL|ipv4|5.0.0.0|512|x|assigned\nripencc|DE|ipv4|5.0.1.0|256|x|assigned\n",
            ":2: range 5.0.1.0-5.0.1.255 overlaps range 5.0.0.0-5.0.1.255 on line 1",
        ),
    ]);
}

#[test]
fn non_utf8_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, format) in [
        ("geoip", GeoFormat::Tor),
        ("geo.csv", GeoFormat::Csv),
        ("asn.csv", GeoFormat::AsnCsv),
        ("ip2asn-combined.tsv", GeoFormat::IpToAsn),
        ("delegated", GeoFormat::Rir),
    ] {
        let src = source(dir.path(), name, format, b"# ok\n\xff\xfe,3,AU\n");
        let msg = GeoDb::load(&[src]).expect_err("not UTF-8").to_string();
        assert!(msg.contains(&format!("{name}:2:")), "{format}: {msg}");
    }
}

#[test]
fn binary_and_wrong_format_files_are_errors() {
    let bytes = mmdb(
        IpVersion::V6,
        Ipv4Aliasing::Enabled,
        &[("1.0.0.0/24", country_record("AU"))],
    );
    // An mmdb given as a text format: an error on some line, naming the file.
    for format in [
        GeoFormat::Tor,
        GeoFormat::Csv,
        GeoFormat::AsnCsv,
        GeoFormat::IpToAsn,
        GeoFormat::Rir,
    ] {
        let msg = load_err_as("GeoLite2-Country.mmdb", format, &bytes);
        assert!(
            msg.starts_with("GeoLite2-Country.mmdb:") || msg.contains("/GeoLite2-Country.mmdb:"),
            "{format}: {msg}"
        );
        let line = msg
            .split("GeoLite2-Country.mmdb:")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<u64>().ok());
        assert!(line.is_some(), "{format}: names a line: {msg}");
    }
    // A long binary line is refused without reading the whole file.
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 | 1).collect();
    let no_newlines: Vec<u8> = blob
        .iter()
        .map(|&b| if b == b'\n' { b'x' } else { b })
        .collect();
    for format in [GeoFormat::Tor, GeoFormat::Csv, GeoFormat::IpToAsn] {
        let msg = load_err_as("blob", format, &no_newlines);
        assert!(msg.contains("blob:1:"), "{format}: {msg}");
    }
    let long_text = "1".repeat(MAX_LINE + 10);
    let msg = load_err_as("geoip", GeoFormat::Tor, &long_text);
    assert!(
        msg.contains("geoip:1: cannot read GeoIP file: a line is longer than 65536 bytes"),
        "{msg}"
    );
    // Text files given as mmdb.
    for text in ["16777216,16777471,AU\n", "", "\u{0}"] {
        let msg = load_err_as("geoip", GeoFormat::Mmdb, text);
        assert!(
            msg.contains("geoip: not a usable MaxMind DB file:"),
            "{text:?}: {msg}"
        );
    }
}
