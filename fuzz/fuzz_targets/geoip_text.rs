//! The text GeoIP importers (Tor, CSV, ASN CSV, iptoasn TSV, RIR statistics) on arbitrary
//! bytes: sorted, disjoint ranges that lookups agree with, or an error that names the file
//! (and the line, for a row); never a panic.
//!
//! The first byte picks the format (and, for iptoasn, the file name, which may restrict the
//! family); the rest is the file.

#![no_main]

use std::path::Path;

use libfuzzer_sys::{Corpus, fuzz_target};
use monitor::{config::GeoFormat, geoip::GeoDb};

mod check;

const FILES: [(GeoFormat, &str); 7] = [
    (GeoFormat::Tor, "geoip"),
    (GeoFormat::Csv, "geo.csv"),
    (GeoFormat::AsnCsv, "asn.csv"),
    (GeoFormat::IpToAsn, "ip2asn-combined.tsv"),
    (GeoFormat::IpToAsn, "ip2asn-v4.tsv"),
    (GeoFormat::IpToAsn, "ip2asn-v6.tsv"),
    (GeoFormat::Rir, "delegated-ripencc-extended-latest"),
];

fuzz_target!(|data: &[u8]| -> Corpus {
    let Some((&pick, file)) = data.split_first() else {
        return Corpus::Reject;
    };
    let (format, name) = FILES[usize::from(pick) % FILES.len()];
    match GeoDb::parse_bytes(Path::new(name), format, file) {
        Ok(db) => check::db(&db),
        Err(e) => check::names_file(&e, name),
    }
    Corpus::Keep
});
