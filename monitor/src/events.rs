//! Flow events from the kernel: decoding ring buffer records, the daemon's flow records,
//! and the JSON-lines event log (`logfile`), which `verify` checks.

mod logfile;
pub mod verify;

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use monitor_common::flow::{
    EVENT_FLOW_END, EVENT_FLOW_START, EVENT_FLOW_UPDATE, FAMILY_V4, FlowEvent, FlowKey, FlowState,
};
use serde::Serialize;

pub use self::logfile::{
    EventLog, Head, LogOptions, SCHEMA_VERSION, ZERO_HASH, hex, rotated, sha256,
};
use crate::tables::{Labels, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("ring buffer record of {len} bytes, expected {expected}")]
    Size { len: usize, expected: usize },
    #[error("ring buffer record with unknown kind {kind}")]
    Kind { kind: u32 },
    #[error("cannot open event log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write event log {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Rotation failed at `path`; the line went to the current file, and rotation is
    /// tried again later.
    #[error("cannot rotate event log at {path}")]
    Rotate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What happened to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    FlowStart,
    FlowUpdate,
    /// TCP FIN/RST seen by the kernel.
    FlowEnd,
    /// Idle past the timeout, ended by the daemon's sweep.
    FlowIdle,
}

impl EventKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FlowStart => "flow_start",
            Self::FlowUpdate => "flow_update",
            Self::FlowEnd => "flow_end",
            Self::FlowIdle => "flow_idle",
        }
    }
}

/// A ring buffer record, by kind.
pub enum Record<'a> {
    Flow(EventKind, FlowKey, FlowState),
    /// A DNS answer: its payload as copied, whether it came over TCP, and whether the
    /// kernel cut it.
    Dns {
        payload: &'a [u8],
        tcp: bool,
        cut: bool,
        /// The answering server and the client it answered.
        server: IpAddr,
        client: IpAddr,
    },
    /// A ClientHello packet from its IP header on, as copied, and whether the kernel cut it.
    Hello {
        packet: &'a [u8],
        cut: bool,
    },
}

/// Decodes one ring buffer record by its kind (the first word).
pub fn decode_record(bytes: &[u8]) -> Result<Record<'_>, EventError> {
    use monitor_common::watch::{
        DNS_COPY, DnsEvent, EVENT_DNS, EVENT_HELLO, HELLO_COPY, HelloEvent,
    };
    let kind = bytes
        .first_chunk::<4>()
        .map(|k| u32::from_ne_bytes(*k))
        .ok_or(EventError::Size {
            len: bytes.len(),
            expected: 4,
        })?;
    // Both copies share their header: kind, copied length (u16), then the copied
    // thing's own length at bytes 8..12; the data starts at `at`, at most `max` bytes.
    let copied = |at: usize, max: usize| -> Result<(&[u8], bool), EventError> {
        if bytes.len() != at + max {
            return Err(EventError::Size {
                len: bytes.len(),
                expected: at + max,
            });
        }
        let len = usize::from(u16::from_ne_bytes([bytes[4], bytes[5]])).min(max);
        let whole = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        Ok((&bytes[at..at + len], whole as usize > len))
    };
    match kind {
        EVENT_DNS => {
            const AT: usize = size_of::<DnsEvent>() - DNS_COPY;
            let (payload, cut) = copied(AT, DNS_COPY)?;
            let addr = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&bytes[at..at + 16]);
                ip(bytes[7], &b)
            };
            Ok(Record::Dns {
                payload,
                tcp: bytes[6] == 6,
                cut,
                server: addr(16),
                client: addr(32),
            })
        }
        EVENT_HELLO => {
            const AT: usize = size_of::<HelloEvent>() - HELLO_COPY;
            let (packet, cut) = copied(AT, HELLO_COPY)?;
            Ok(Record::Hello { packet, cut })
        }
        _ => decode(bytes).map(|(k, key, st)| Record::Flow(k, key, st)),
    }
}

/// Decodes one flow event record.
pub fn decode(bytes: &[u8]) -> Result<(EventKind, FlowKey, FlowState), EventError> {
    if bytes.len() != size_of::<FlowEvent>() {
        return Err(EventError::Size {
            len: bytes.len(),
            expected: size_of::<FlowEvent>(),
        });
    }
    // SAFETY: the length matches and FlowEvent is plain old data; the read is unaligned.
    let event: FlowEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = match event.kind {
        EVENT_FLOW_START => EventKind::FlowStart,
        EVENT_FLOW_UPDATE => EventKind::FlowUpdate,
        EVENT_FLOW_END => EventKind::FlowEnd,
        kind => return Err(EventError::Kind { kind }),
    };
    Ok((kind, event.key, event.state))
}

/// The addresses of a flow key.
#[must_use]
pub fn addresses(key: &FlowKey) -> (IpAddr, IpAddr) {
    (ip(key.family, &key.inside), ip(key.family, &key.remote))
}

/// An address as the kernel writes it: 16 bytes in network order, IPv4 in the first four.
#[must_use]
pub fn ip(family: u8, b: &[u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

/// A flow as the operator sees it: `src` is the inside address, `dst` the remote one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub group: String,
    pub country: String,
    pub asn: u32,
    pub verdict: Verdict,
    /// The policy rule that decided the verdict, e.g. `group phones: deny @sanctioned (CN)`.
    pub rule: String,
    /// The watch entry the flow is attributed to, as `watchlist/entry`, or null.
    pub watch: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Monotonic nanoseconds of the first and last packet (see `Clock` for wall time).
    #[serde(skip)]
    pub first_ns: u64,
    #[serde(skip)]
    pub last_ns: u64,
}

impl FlowRecord {
    #[must_use]
    pub fn new(key: &FlowKey, st: &FlowState, labels: &Labels) -> Self {
        let (src, dst) = addresses(key);
        Self {
            src,
            dst,
            proto: key.proto,
            sport: key.inside_port,
            dport: key.remote_port,
            group: labels.group(u32::from(st.group)).to_owned(),
            country: labels.country(u32::from(st.country)),
            asn: st.asn,
            verdict: Verdict::try_from(u32::from(st.verdict)).unwrap_or(Verdict::Unknown),
            rule: labels.rule(st.rule).to_owned(),
            watch: crate::watch::slot_name(&labels.watch, u32::from(st.watch)),
            packets: st.packets_out + st.packets_in,
            bytes: st.bytes_out + st.bytes_in,
            packets_out: st.packets_out,
            bytes_out: st.bytes_out,
            packets_in: st.packets_in,
            bytes_in: st.bytes_in,
            first_ns: st.first_ns,
            last_ns: st.last_ns,
        }
    }
}

/// Converts the kernel's CLOCK_MONOTONIC nanoseconds to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset: Duration,
}

impl Clock {
    #[must_use]
    pub fn now() -> Self {
        let mono = monotonic_ns();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            offset: wall.saturating_sub(Duration::from_nanos(mono)),
        }
    }

    #[must_use]
    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        UNIX_EPOCH + self.offset + Duration::from_nanos(mono_ns)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use monitor_common::flow::FAMILY_V6;

    use super::*;

    fn event(kind: u32) -> FlowEvent {
        let mut key = FlowKey {
            family: FAMILY_V4,
            proto: 17,
            inside_port: 40000,
            remote_port: 443,
            ..FlowKey::default()
        };
        key.inside[..4].copy_from_slice(&[192, 0, 2, 10]);
        key.remote[..4].copy_from_slice(&[203, 0, 113, 10]);
        let state = FlowState {
            packets_out: 3,
            bytes_out: 300,
            packets_in: 1,
            bytes_in: 60,
            group: 1,
            country: 2,
            verdict: 3,
            rule: 1,
            ..FlowState::default()
        };
        FlowEvent {
            kind,
            _pad: 0,
            key,
            state,
        }
    }

    fn bytes(e: &FlowEvent) -> Vec<u8> {
        // SAFETY: FlowEvent is plain old data.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(e).cast::<u8>(), size_of::<FlowEvent>())
        }
        .to_vec()
    }

    fn labels() -> Labels {
        Labels {
            groups: vec!["ungrouped".into(), "phones".into()],
            countries: vec![
                None,
                Some("AU".parse().expect("AU")),
                Some("CN".parse().expect("CN")),
            ],
            asns: vec![0],
            rules: vec![
                crate::policy::RULE_UNKNOWN.into(),
                "group phones: deny @sanctioned (CN)".into(),
            ],
            watch: Vec::new(),
        }
    }

    #[test]
    fn decodes_a_flow_event_into_a_record() {
        let (kind, key, st) = decode(&bytes(&event(EVENT_FLOW_START))).expect("decode");
        assert_eq!(kind, EventKind::FlowStart);
        let r = FlowRecord::new(&key, &st, &labels());
        assert_eq!(r.src, "192.0.2.10".parse::<IpAddr>().expect("ip"));
        assert_eq!(r.dst, "203.0.113.10".parse::<IpAddr>().expect("ip"));
        assert_eq!((r.sport, r.dport, r.proto), (40000, 443, 17));
        assert_eq!(
            (r.group.as_str(), r.country.as_str(), r.verdict),
            ("phones", "CN", Verdict::Violation)
        );
        assert_eq!((r.packets, r.bytes), (4, 360));
        assert_eq!(r.rule, "group phones: deny @sanctioned (CN)");
    }

    #[test]
    fn rejects_short_records_and_unknown_kinds() {
        let b = bytes(&event(EVENT_FLOW_END));
        assert!(matches!(
            decode(&b[..100]),
            Err(EventError::Size { len: 100, .. })
        ));
        assert!(matches!(
            decode(&bytes(&event(99))),
            Err(EventError::Kind { kind: 99 })
        ));
    }

    #[test]
    fn ipv6_keys_decode_as_ipv6() {
        let mut e = event(EVENT_FLOW_UPDATE);
        e.key.family = FAMILY_V6;
        e.key.remote = "2001:db8::1".parse::<Ipv6Addr>().expect("v6").octets();
        let (_, key, _) = decode(&bytes(&e)).expect("decode");
        assert_eq!(
            addresses(&key).1,
            "2001:db8::1".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn event_log_writes_one_json_object_per_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/events.jsonl");
        let mut log = EventLog::open(&path, LogOptions::default(), Clock::now()).expect("open");
        let e = event(EVENT_FLOW_START);
        let r = FlowRecord::new(&e.key, &e.state, &labels());
        log.write(EventKind::FlowStart, &r).expect("write");
        log.write(EventKind::FlowEnd, &r).expect("write");
        log.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "flow_start");
        assert_eq!(lines[1]["event"], "flow_end");
        assert_eq!(lines[0]["country"], "CN");
        assert_eq!(lines[0]["rule"], "group phones: deny @sanctioned (CN)");
        assert_eq!(lines[0]["bytes"], 360);
        assert_eq!(lines[0]["v"], 2);
        assert_eq!((&lines[0]["seq"], &lines[1]["seq"]), (&1.into(), &2.into()));
        assert!(lines[0].get("prev").is_none(), "no hash chain by default");
    }

    #[test]
    fn detections_are_event_log_lines_of_their_own() {
        use crate::detect::{Detection, Stamp, What};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let chained = LogOptions {
            hash_chain: true,
            ..LogOptions::default()
        };
        let mut log = EventLog::open(&path, chained, Clock::now()).expect("open");
        let at = humantime::parse_rfc3339("2026-01-01T00:00:00Z").expect("time");
        log.write_detection(&Detection {
            time: Stamp(at),
            group: "phones".into(),
            country: "CN".into(),
            what: What::FirstContact {
                window_start: Stamp(at - Duration::from_secs(10)),
                window_end: Stamp(at),
                bytes_out: 420,
            },
        })
        .expect("write");
        log.flush().expect("flush");
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).expect("read").trim())
                .expect("one JSON line");
        assert_eq!(
            line,
            serde_json::json!({
                "v": 2,
                "seq": 1,
                "prev": "0".repeat(64),
                "event": "detection",
                "detection": "first_contact",
                "time": "2026-01-01T00:00:00.000Z",
                "group": "phones",
                "country": "CN",
                "window_start": "2025-12-31T23:59:50.000Z",
                "window_end": "2026-01-01T00:00:00.000Z",
                "bytes_out": 420,
            })
        );
    }
}
