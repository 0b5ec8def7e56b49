//! The MaxMind DB importer on arbitrary bytes: the maxminddb reader and exfilmon's walk of
//! every network in the tree. Sorted, disjoint ranges that lookups agree with, or an error
//! that names the file; never a panic, and (the walk is bounded by the node count) never a
//! hang.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use monitor::{config::GeoFormat, geoip::GeoDb};

mod check;

const FILE: &str = "fuzz.mmdb";

fuzz_target!(|data: &[u8]| {
    match GeoDb::parse_bytes(Path::new(FILE), GeoFormat::Mmdb, data) {
        Ok(db) => check::db(&db),
        Err(e) => check::names_file(&e, FILE),
    }
});
