//! Inputs built with the builders the unit and kernel tests use: the seed corpora of the
//! cargo-fuzz targets in `fuzz/` (written by `cargo xtask fuzz`), and the valid MaxMind DB
//! that the bad-input tests corrupt. Each seed is a valid input of its target's format, so
//! that the fuzzer starts deep inside each parser rather than at its first length check.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, UNIX_EPOCH},
};

use hickory_proto::rr::{
    Name, RData,
    rdata::{A, AAAA, CNAME, TXT},
};
use mmdb_writer::{IpVersion, Ipv4Aliasing, Value, Writer};
use monitor_common::{
    flow::{EVENT_FLOW_END, EVENT_FLOW_START, EVENT_FLOW_UPDATE, FlowEvent, FlowState},
    watch::{DNS_COPY, DnsEvent, EVENT_DNS, EVENT_HELLO, HELLO_COPY, HelloEvent},
};

use crate::packet::{self, TCP, UDP};

/// One seed: the fuzz target it is for, a file name, and its bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The formats of the `geoip_text` target, in the order of its `FILES` table
/// (fuzz/fuzz_targets/geoip_text.rs): a seed's first byte picks one.
pub const GEOIP_TEXT_FORMATS: [&str; 7] = [
    "tor",
    "csv",
    "asn-csv",
    "iptoasn",
    "iptoasn-v4",
    "iptoasn-v6",
    "rir",
];

/// Every seed of every target.
///
/// # Panics
/// When a builder refuses its fixed input (a bug here).
#[must_use]
pub fn fuzz_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed {
            target,
            name: name.to_owned(),
            bytes,
        });
    };
    for (name, text) in configs() {
        add("config", name, text.into_bytes());
    }
    for (i, (format, text)) in geoip_texts().into_iter().enumerate() {
        let pick = GEOIP_TEXT_FORMATS
            .iter()
            .position(|f| *f == format)
            .expect("a geoip_text format");
        let mut bytes = vec![u8::try_from(pick).expect("small")];
        bytes.extend_from_slice(text.as_bytes());
        add("geoip_text", &format!("{format}-{i}"), bytes);
    }
    add("mmdb", "country", country_mmdb());
    add("mmdb", "asn", asn_mmdb());
    add("mmdb", "ipinfo", ipinfo_mmdb());
    for (name, bytes) in dns_answers() {
        add("dns", name, bytes);
    }
    for (name, bytes) in hellos() {
        add("tls", name, bytes);
    }
    for (name, bytes) in ring_records() {
        add("ring", name, bytes);
    }
    seeds
}

/// The README's config example and the lab's config, filled in.
fn configs() -> Vec<(&'static str, String)> {
    let root = crate::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's config example");
    let lab = std::fs::read_to_string(root.join("tests/lab/exfilmon.toml"))
        .expect("tests/lab/exfilmon.toml")
        .replace("@NETNS@", "router")
        .replace("@PORT@", "9477")
        .replace("@LOG@", "events.jsonl")
        .replace("@STATE@", "state")
        .replace("@PIN@", "/sys/fs/bpf/exfilmon-lab");
    vec![("readme", example.to_owned()), ("lab", lab)]
}

/// `(format, file)` pairs of the text GeoIP formats.
fn geoip_texts() -> Vec<(&'static str, String)> {
    let lab = std::fs::read_to_string(crate::workspace_root().join("tests/lab/geoip.csv"))
        .expect("tests/lab/geoip.csv");
    vec![
        (
            "tor",
            "# Tor geoip\n16777216,16777471,AU\n16777472,16778239,CN\n".to_owned(),
        ),
        (
            "tor",
            "2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,JP\n2a00::,2a00:ff::,DE\n"
                .to_owned(),
        ),
        ("csv", lab),
        (
            "csv",
            "\u{feff}first,last,country\n\"1.0.0.0\",\"1.0.0.255\",\"AU\"\n2001:db8::,2001:db8::ffff,ZZ\n"
                .to_owned(),
        ),
        (
            "asn-csv",
            "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n2001:db8::,2001:db8::ff,AS64500\n"
                .to_owned(),
        ),
        (
            "iptoasn",
            "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n1.0.1.0\t1.0.3.255\t0\tNone\tNot routed\n2001:db8::\t2001:db8::ffff\t64500\tDE\tEXAMPLE\n"
                .to_owned(),
        ),
        (
            "iptoasn-v4",
            "16777216\t16777471\t13335\tUS\tCLOUDFLARENET\n".to_owned(),
        ),
        (
            "iptoasn-v6",
            "2001:db8::\t2001:db8::ffff\t64500\tDE\tEXAMPLE\n".to_owned(),
        ),
        (
            "rir",
            "2|ripencc|1700000000|4|19830705|20231114|+0100\n\
             ripencc|*|ipv4|*|2|summary\n\
             ripencc|DE|ipv4|2.0.0.0|1024|20100712|allocated\n\
             ripencc|FR|ipv4|2.0.4.0|768|20100712|assigned|opaque\n\
             ripencc||ipv4|2.0.8.0|256||available\n\
             ripencc|NL|ipv6|2001:610::|32|19990819|allocated\n\
             ripencc|GB|asn|7|1|19930901|allocated\n"
                .to_owned(),
        ),
    ]
}

/// A MaxMind DB of `records` (network, record), as the unit tests build them.
///
/// # Panics
/// When a network is not one or mmdb-writer refuses the database.
#[must_use]
pub fn mmdb(version: IpVersion, records: &[(&str, Value)]) -> Vec<u8> {
    let mut w = Writer::builder("exfilmon-seed")
        .ip_version(version)
        .ipv4_aliasing(Ipv4Aliasing::Enabled)
        .description(&[("en", "exfilmon test fixture")])
        .build_epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .build();
    for (net, value) in records {
        let net: mmdb_writer::ipnet::IpNet = net.parse().unwrap_or_else(|e| panic!("{net}: {e}"));
        w.insert_value(net, value.clone())
            .unwrap_or_else(|e| panic!("insert {net}: {e}"));
    }
    w.to_bytes().expect("serialise mmdb")
}

fn country(iso: &str) -> Value {
    Value::map([("country", Value::map([("iso_code", Value::from(iso))]))])
}

/// A GeoLite2-Country shaped database: an IPv6 tree with IPv4 in it.
#[must_use]
pub fn country_mmdb() -> Vec<u8> {
    mmdb(
        IpVersion::V6,
        &[
            ("1.0.0.0/24", country("AU")),
            ("1.0.1.0/24", country("CN")),
            (
                "1.0.2.0/23",
                Value::map([(
                    "registered_country",
                    Value::map([("iso_code", Value::from("JP"))]),
                )]),
            ),
            ("2001:db8::/32", country("DE")),
        ],
    )
}

/// A GeoLite2-ASN shaped database: an IPv4 tree.
fn asn_mmdb() -> Vec<u8> {
    let asn = |n: u32| Value::map([("autonomous_system_number", Value::from(n))]);
    mmdb(
        IpVersion::V4,
        &[("1.0.0.0/23", asn(13335)), ("1.0.4.0/22", asn(4134))],
    )
}

/// An ipinfo lite shaped database: `asn` as `"AS…"`, `country_code`, a country name.
fn ipinfo_mmdb() -> Vec<u8> {
    mmdb(
        IpVersion::V6,
        &[
            (
                "8.8.8.0/24",
                Value::map([
                    ("asn", Value::from("AS15169")),
                    ("country", Value::from("United States")),
                    ("country_code", Value::from("US")),
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

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("name")
}

/// DNS answers over UDP: a CNAME chain to A and AAAA records, TXT data, a query.
fn dns_answers() -> Vec<(&'static str, Vec<u8>)> {
    let a = |ip: [u8; 4]| RData::A(A(Ipv4Addr::from(ip)));
    let chain = monitor::dns::response(
        "api.account.xiaomi.com.",
        &[
            (
                "api.account.xiaomi.com.",
                RData::CNAME(CNAME(name("edge.cdn.example."))),
            ),
            ("edge.cdn.example.", a([203, 0, 113, 7])),
            (
                "edge.cdn.example.",
                RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 1))),
            ),
        ],
        300,
    );
    let txt = monitor::dns::response(
        "aGVsbG8gd29ybGQ.t.example.",
        &[(
            "aGVsbG8gd29ybGQ.t.example.",
            RData::TXT(TXT::new(vec!["c2VjcmV0IGRhdGE=".to_owned()])),
        )],
        0,
    );
    let mut query = chain.clone();
    query[2] &= 0x7f; // QR = 0: a query
    vec![("cname-chain", chain), ("txt", txt), ("query", query)]
}

/// ClientHellos as a TCP payload and as IPv4 and IPv6 packets to port 443.
fn hellos() -> Vec<(&'static str, Vec<u8>)> {
    let named = monitor::tls::client_hello(Some("api.account.xiaomi.com"), 0);
    let padded = monitor::tls::client_hello(Some("Example.COM."), 200);
    let v4 = packet::ipv4(
        Ipv4Addr::new(192, 0, 2, 10),
        Ipv4Addr::new(203, 0, 113, 7),
        TCP,
        &packet::tcp(40000, 443, packet::ACK, &named),
    );
    let v6 = packet::ipv6(
        "2001:db8:1::10".parse().expect("address"),
        "2001:db8:7::1".parse().expect("address"),
        &[],
        TCP,
        &packet::tcp(40000, 443, packet::ACK, &padded),
    );
    vec![
        ("payload", named),
        ("unnamed", monitor::tls::client_hello(None, 0)),
        ("ipv4", v4),
        ("ipv6", v6),
    ]
}

/// A `Pod` value's bytes, as the kernel writes it to the ring.
fn bytes<T: aya::Pod>(v: &T) -> Vec<u8> {
    // SAFETY: `Pod` types are plain old data without implicit padding.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

/// Ring buffer records of every kind: flow start, update and end, a DNS answer, a
/// ClientHello.
fn ring_records() -> Vec<(&'static str, Vec<u8>)> {
    let key = packet::v4_key(
        Ipv4Addr::new(192, 0, 2, 10),
        Ipv4Addr::new(203, 0, 113, 7),
        UDP,
        40000,
        443,
    );
    let state = FlowState {
        first_ns: 1_000,
        last_ns: 2_000,
        packets_out: 3,
        bytes_out: 300,
        country: 1,
        verdict: 2,
        ..FlowState::default()
    };
    let flow = |kind| FlowEvent {
        kind,
        _pad: 0,
        key,
        state,
    };
    let answer = dns_answers().remove(0).1;
    let mut dns = DnsEvent {
        kind: EVENT_DNS,
        len: u16::try_from(answer.len()).expect("small"),
        proto: UDP,
        family: 4,
        payload_len: u32::try_from(answer.len()).expect("small"),
        _pad: 0,
        server: [0; 16],
        client: [0; 16],
        data: [0; DNS_COPY],
    };
    dns.server[..4].copy_from_slice(&[198, 51, 100, 53]);
    dns.client[..4].copy_from_slice(&[192, 0, 2, 10]);
    dns.data[..answer.len()].copy_from_slice(&answer);
    let packet = hellos().remove(2).1;
    let mut hello = HelloEvent {
        kind: EVENT_HELLO,
        len: u16::try_from(packet.len()).expect("small"),
        _pad: 0,
        packet_len: u32::try_from(packet.len()).expect("small"),
        _pad2: 0,
        data: [0; HELLO_COPY],
    };
    hello.data[..packet.len()].copy_from_slice(&packet);
    vec![
        ("flow-start", bytes(&flow(EVENT_FLOW_START))),
        ("flow-update", bytes(&flow(EVENT_FLOW_UPDATE))),
        ("flow-end", bytes(&flow(EVENT_FLOW_END))),
        ("dns", bytes(&dns)),
        ("hello", bytes(&hello)),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use monitor::{
        config::{Config, ConfigError, GeoFormat},
        events::{Record, decode_record},
        geoip::GeoDb,
    };

    use super::*;

    /// Every seed is a valid input of its target, as the target reads it: the fuzzer
    /// starts from inputs that reach past each parser's first checks.
    #[test]
    fn every_seed_is_accepted_by_its_parser() {
        let seeds = fuzz_seeds();
        for s in &seeds {
            let what = format!("{} seed {}", s.target, s.name);
            match s.target {
                "config" => {
                    let text = std::str::from_utf8(&s.bytes).expect("UTF-8");
                    // The seeds name GeoIP files that are not here: everything before
                    // that check (the TOML, every key) must pass.
                    match Config::parse(text, Path::new("seed.toml")) {
                        Ok(_) | Err(ConfigError::GeoIpFile { .. }) => {}
                        Err(e) => panic!("{what}: {e}"),
                    }
                }
                "geoip_text" => {
                    let format = match GEOIP_TEXT_FORMATS[usize::from(s.bytes[0])] {
                        "tor" => GeoFormat::Tor,
                        "csv" => GeoFormat::Csv,
                        "asn-csv" => GeoFormat::AsnCsv,
                        "rir" => GeoFormat::Rir,
                        _ => GeoFormat::IpToAsn,
                    };
                    let name = match GEOIP_TEXT_FORMATS[usize::from(s.bytes[0])] {
                        "iptoasn-v4" => "ip2asn-v4.tsv",
                        "iptoasn-v6" => "ip2asn-v6.tsv",
                        _ => "seed",
                    };
                    let db = GeoDb::parse_bytes(Path::new(name), format, &s.bytes[1..])
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(!db.is_empty(), "{what}: no ranges");
                }
                "mmdb" => {
                    let db = GeoDb::parse_bytes(Path::new("seed.mmdb"), GeoFormat::Mmdb, &s.bytes)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(!db.is_empty(), "{what}: no ranges");
                }
                "dns" => {
                    let parsed = monitor::dns::parse_message(&s.bytes, false)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let query = s.name == "query";
                    assert_eq!(parsed.question.is_none(), query, "{what}");
                }
                "tls" => {
                    let name = if s.name.starts_with("ip") {
                        monitor::tls::parse(&s.bytes).map(|h| h.name)
                    } else {
                        monitor::tls::server_name(&s.bytes)
                    };
                    let name = name.unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(name.is_none(), s.name == "unnamed", "{what}");
                }
                "ring" => {
                    let record = decode_record(&s.bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let ok = match record {
                        Record::Dns { payload, cut, .. } => {
                            !cut && monitor::dns::parse(payload, false).is_ok()
                        }
                        Record::Hello { packet, cut } => {
                            !cut && monitor::tls::parse(packet).is_ok()
                        }
                        Record::Flow(..) => true,
                    };
                    assert!(ok, "{what}");
                }
                other => panic!("a seed for an unknown target {other}"),
            }
        }
        println!("{} fuzz seeds, each accepted by its parser", seeds.len());
    }
}
