//! What every GeoIP import must give, shared by the `geoip_text` and `mmdb` targets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use monitor::geoip::{GeoDb, GeoIpError};

/// Ranges sorted, disjoint and found by a lookup of their ends; the prefixes of the
/// IPv4 locations cover them exactly.
pub fn db(db: &GeoDb) {
    let v4 = |a: u32| IpAddr::V4(Ipv4Addr::from(a));
    let v6 = |a: u128| IpAddr::V6(Ipv6Addr::from(a));
    disjoint(db.ranges_v4());
    disjoint(db.ranges_v6());
    disjoint(db.asn_ranges_v4());
    disjoint(db.asn_ranges_v6());
    for &(first, last, cc) in db.ranges_v4() {
        assert_eq!(db.lookup(v4(first)).country, Some(cc));
        assert_eq!(db.lookup(v4(last)).country, Some(cc));
    }
    for &(first, last, cc) in db.ranges_v6() {
        // IPv4-mapped addresses are looked up as IPv4.
        if Ipv6Addr::from(first).to_ipv4_mapped().is_none() {
            assert_eq!(db.lookup(v6(first)).country, Some(cc));
        }
        if Ipv6Addr::from(last).to_ipv4_mapped().is_none() {
            assert_eq!(db.lookup(v6(last)).country, Some(cc));
        }
    }
    for &(first, _, asn) in db.asn_ranges_v4() {
        assert_eq!(db.lookup(v4(first)).asn, Some(asn));
    }
    let locations = db.locations_v4();
    disjoint(&locations);
    let covered: u64 = locations
        .iter()
        .map(|&(first, last, _)| u64::from(last - first) + 1)
        .sum();
    let prefixes: u64 = db
        .prefixes_v4()
        .map(|(net, _)| 1u64 << (32 - net.prefix_len()))
        .sum();
    assert_eq!(
        prefixes, covered,
        "the IPv4 prefixes cover the ranges exactly"
    );
}

fn disjoint<T: Ord + Copy + std::fmt::Debug, V>(ranges: &[(T, T, V)]) {
    for r in ranges {
        assert!(r.0 <= r.1, "reversed range {:?}-{:?}", r.0, r.1);
    }
    for pair in ranges.windows(2) {
        assert!(
            pair[0].1 < pair[1].0,
            "{:?} overlaps or follows {:?}",
            pair[1].0,
            pair[0].1
        );
    }
}

/// An error begins with the file's name.
pub fn names_file(e: &GeoIpError, file: &str) {
    let message = e.to_string();
    assert!(
        message.starts_with(file),
        "the error does not name {file}: {message}"
    );
}
