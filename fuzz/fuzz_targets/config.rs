//! `Config::parse` on arbitrary text: a valid config, or an error that names the file and
//! a line of it; never a panic.

#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::{Corpus, fuzz_target};
use monitor::config::{Config, MAX_GROUPS};

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| -> Corpus {
    // A config file is read as UTF-8; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    // An existing file stands for the default Tor GeoIP files, so that a config without
    // [geoip] sources gets past that check.
    let default_tor = [std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/"))];
    let parse = || Config::parse_with_geoip_defaults(text, Path::new(FILE), &default_tor);
    match parse() {
        Ok(config) => {
            assert!(config.groups.len() <= MAX_GROUPS);
            assert!((1..=1 << 24).contains(&config.flows.max_entries));
            let ring = config.flows.ring_bytes;
            assert!(
                ring.is_power_of_two() && ring % 4096 == 0,
                "ring_bytes {ring}"
            );
            assert!(config.flows.wakeup_bytes < u64::from(ring));
            assert_ne!(config.home.networks.len(), 0, "[home] networks is required");
            assert_eq!(parse().ok(), Some(config), "parsing is deterministic");
        }
        Err(e) => {
            // `fuzz.toml:LINE: ...`, or `fuzz.toml: ...` for the file as a whole.
            let message = e.to_string();
            let rest = message
                .strip_prefix(FILE)
                .and_then(|r| r.strip_prefix(':'))
                .unwrap_or_else(|| panic!("the error does not name the file: {message}"));
            let lines = text.matches('\n').count() + 1;
            if let Some(line) = rest.split(':').next().and_then(|l| l.parse::<usize>().ok()) {
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of {lines}: {message}"
                );
            }
        }
    }
    Corpus::Keep
});
