//! DNS answers copied by the kernel: parsed with hickory-proto into the addresses each
//! name resolves to, following CNAME chains, so that `watch` can learn the addresses of
//! watched domains.
//!
//! Untrusted input: every failure is a [`Malformed`] reason (counted in metrics), never a
//! panic. Memory stays bounded: the kernel copies at most `DNS_COPY` bytes, the header's
//! record counts are checked against the bytes before anything is allocated for them, and
//! chains are followed at most [`MAX_CHAIN`] steps. hickory-proto refuses compression
//! pointers that do not point strictly backwards, so a pointer loop ends in an error.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::IpAddr,
};

use hickory_proto::{
    op::{Message, MessageType},
    rr::{Name, RData},
    serialize::binary::DecodeError,
};

/// CNAME steps followed from an address record back to the names that lead to it.
pub const MAX_CHAIN: usize = 16;
/// Smallest wire size of a question (root name, type, class) and of a resource record
/// (root name, type, class, TTL, rdlength).
const MIN_QUESTION: usize = 5;
const MIN_RECORD: usize = 11;
const HEADER: usize = 12;

/// Why an answer could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Malformed {
    /// The message ends inside a record, or was cut by the kernel's copy length.
    #[error("truncated")]
    Truncated,
    /// A compression pointer does not point backwards (a loop or a forward reference).
    #[error("compression pointer loop")]
    CompressionLoop,
    /// The header claims more records than the bytes can hold.
    #[error("record counts exceed the message")]
    HugeCounts,
    /// A TCP answer whose length prefix does not match the segment (split over segments).
    #[error("TCP message not in one segment")]
    TcpFraming,
    /// Anything else hickory-proto refuses.
    #[error("invalid")]
    Invalid,
}

impl Malformed {
    /// Every reason, for counters that exist from the start at zero.
    pub const ALL: [Malformed; 5] = [
        Self::Truncated,
        Self::CompressionLoop,
        Self::HugeCounts,
        Self::TcpFraming,
        Self::Invalid,
    ];

    /// The metric label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::CompressionLoop => "compression_loop",
            Self::HugeCounts => "huge_counts",
            Self::TcpFraming => "tcp_framing",
            Self::Invalid => "invalid",
        }
    }
}

/// One address of an answer, with every name that resolves to it: the owner of the A or
/// AAAA record and the names whose CNAME chains lead there (lower case, no final dot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub addr: IpAddr,
    pub ttl: u32,
    pub names: Vec<String>,
}

/// What an answer tells: the addresses it resolves, and what the DNS-tunnel detection
/// looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub resolved: Vec<Resolved>,
    /// The first question's name (lower case, no final dot).
    pub question: Option<String>,
    /// Bytes of TXT and NULL record data in the answer section: the record types tunnels
    /// carry their downstream data in.
    pub txt_null_bytes: u64,
}

/// Parses a DNS payload as the kernel copied it: UDP as is, TCP with its length prefix.
pub fn parse(payload: &[u8], tcp: bool) -> Result<Vec<Resolved>, Malformed> {
    parse_message(payload, tcp).map(|p| p.resolved)
}

/// [`parse`], with the question and the TXT/NULL volume too. A query (not a response)
/// gives nothing.
pub fn parse_message(payload: &[u8], tcp: bool) -> Result<Parsed, Malformed> {
    let msg = if tcp {
        let (len, rest) = payload
            .split_first_chunk::<2>()
            .ok_or(Malformed::Truncated)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if len > rest.len() {
            return Err(Malformed::TcpFraming);
        }
        &rest[..len]
    } else {
        payload
    };
    check_counts(msg)?;
    let message = Message::from_vec(msg).map_err(|e| match e {
        DecodeError::InsufficientBytes | DecodeError::IncorrectRDataLengthRead { .. } => {
            Malformed::Truncated
        }
        DecodeError::PointerNotPriorToLabel { .. } | DecodeError::LabelOverlapsWithOther { .. } => {
            Malformed::CompressionLoop
        }
        _ => Malformed::Invalid,
    })?;
    if message.metadata.message_type != MessageType::Response {
        return Ok(Parsed::default());
    }
    let txt_null_bytes = message
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::TXT(t) => t.txt_data.iter().map(|d| d.len() as u64 + 1).sum(),
            RData::NULL(n) => n.anything.len() as u64,
            _ => 0,
        })
        .sum();
    Ok(Parsed {
        resolved: resolve(&message),
        question: message.queries.first().map(|q| name(&q.name)),
        txt_null_bytes,
    })
}

/// The header's counts must fit the bytes: refused before hickory allocates for them.
fn check_counts(msg: &[u8]) -> Result<(), Malformed> {
    let header = msg.get(..HEADER).ok_or(Malformed::Truncated)?;
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    let need = HEADER + count(4) * MIN_QUESTION + (count(6) + count(8) + count(10)) * MIN_RECORD;
    if need > msg.len() {
        return Err(Malformed::HugeCounts);
    }
    Ok(())
}

/// A name as the watchlists and the tunnel detection read it: its labels joined by dots,
/// lower case, no final dot. A byte other than a letter, digit, `-` or `_` is written
/// `\DDD` (decimal, as zone files write it), so that a dot inside a label never reads as a
/// label boundary: `x\046example.com` is not below `example.com`.
fn name(n: &Name) -> String {
    let mut s = String::with_capacity(n.len());
    for (i, label) in n.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                s.push(char::from(b.to_ascii_lowercase()));
            } else {
                // Writing to a String cannot fail.
                let _ = write!(s, "\\{b:03}");
            }
        }
    }
    s
}

/// Every address record of the answer section with the names that lead to it.
fn resolve(message: &Message) -> Vec<Resolved> {
    // CNAME target → the owners that alias it.
    let mut aliases: HashMap<String, Vec<String>> = HashMap::new();
    for r in &message.answers {
        if let RData::CNAME(target) = &r.data {
            aliases
                .entry(name(&target.0))
                .or_default()
                .push(name(&r.name));
        }
    }
    let mut out = Vec::new();
    for r in &message.answers {
        let addr = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        let owner = name(&r.name);
        let mut names = vec![owner.clone()];
        let mut seen: HashSet<String> = HashSet::from([owner]);
        let mut frontier = 0;
        // Breadth-first back along the chain, bounded in steps and by the names seen.
        for _ in 0..MAX_CHAIN {
            let end = names.len();
            for i in frontier..end {
                for alias in aliases.get(&names[i]).into_iter().flatten() {
                    if seen.insert(alias.clone()) {
                        names.push(alias.clone());
                    }
                }
            }
            if names.len() == end {
                break;
            }
            frontier = end;
        }
        out.push(Resolved {
            addr,
            ttl: r.ttl,
            names,
        });
    }
    out
}

/// Test support: a response to an A query for `qname` with `records` (owner, data) in its
/// answer section, each with `ttl`, as a resolver sends it.
///
/// # Panics
/// On a name that is not valid ASCII DNS, or a message hickory cannot encode.
#[doc(hidden)]
#[must_use]
pub fn response(qname: &str, records: &[(&str, RData)], ttl: u32) -> Vec<u8> {
    use hickory_proto::{
        op::{OpCode, Query},
        rr::{Record, RecordType},
    };
    let mut m = Message::response(0x1234, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(qname).expect("name"),
        RecordType::A,
    ));
    for (owner, data) in records {
        m.add_answer(Record::from_rdata(
            Name::from_ascii(owner).expect("name"),
            ttl,
            data.clone(),
        ));
    }
    m.to_vec().expect("encodes")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::{
        op::{Message, OpCode, Query},
        rr::{
            Name, RData, Record, RecordType,
            rdata::{A, AAAA, CNAME},
        },
    };

    use super::*;

    pub(crate) fn a(ip: [u8; 4]) -> RData {
        RData::A(A(Ipv4Addr::from(ip)))
    }

    pub(crate) fn cname(target: &str) -> RData {
        RData::CNAME(CNAME(Name::from_ascii(target).expect("name")))
    }

    /// Found by the `dns` fuzz target: a label holding a dot read as two labels, so that
    /// `x\.xiaomi.com` (labels `x.xiaomi`, `com`) matched `*.xiaomi.com`, and a name could
    /// end in a dot.
    #[test]
    fn a_dot_or_odd_byte_inside_a_label_is_escaped_not_a_boundary() {
        let dotted = Name::from_labels([&b"x.xiaomi"[..], b"com"]).expect("name");
        let odd = Name::from_labels([&b"Odd\0."[..]]).expect("name");
        let mut m = Message::response(1, OpCode::Query);
        m.add_query(Query::query(dotted.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(dotted, 60, a([203, 0, 113, 7])));
        m.add_answer(Record::from_rdata(odd, 60, a([203, 0, 113, 8])));
        let got = parse_message(&m.to_vec().expect("encodes"), false).expect("parses");
        assert_eq!(got.question.as_deref(), Some("x\\046xiaomi.com"));
        assert_eq!(got.resolved[0].names, ["x\\046xiaomi.com"]);
        assert_eq!(got.resolved[1].names, ["odd\\000\\046"]);
        let watched = crate::watch::Domain::parse("*.xiaomi.com").expect("pattern");
        assert!(!watched.matches(&got.resolved[0].names[0]));
        assert!(watched.matches("x.xiaomi.com"));
    }

    #[test]
    fn a_cname_chain_names_every_alias_of_the_address() {
        let bytes = response(
            "api.account.xiaomi.com.",
            &[
                ("api.account.xiaomi.com.", cname("edge.cdn.example.")),
                ("edge.cdn.example.", cname("pop7.cdn.example.")),
                ("pop7.cdn.example.", a([203, 0, 113, 7])),
                (
                    "pop7.cdn.example.",
                    RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 1))),
                ),
            ],
            300,
        );
        let got = parse(&bytes, false).expect("parses");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].addr, IpAddr::from([203, 0, 113, 7]));
        assert_eq!(got[0].ttl, 300);
        assert_eq!(
            got[0].names,
            [
                "pop7.cdn.example",
                "edge.cdn.example",
                "api.account.xiaomi.com"
            ]
        );
        assert_eq!(got[1].names.len(), 3);
    }

    #[test]
    fn tcp_answers_carry_a_length_prefix() {
        let bytes = response("a.example.", &[("a.example.", a([192, 0, 2, 9]))], 60);
        let mut framed = u16::try_from(bytes.len())
            .expect("small")
            .to_be_bytes()
            .to_vec();
        framed.extend_from_slice(&bytes);
        assert_eq!(
            parse(&framed, true).expect("parses")[0].names,
            ["a.example"]
        );
        assert_eq!(
            parse(&framed[..framed.len() - 1], true),
            Err(Malformed::TcpFraming)
        );
    }

    #[test]
    fn a_query_teaches_nothing() {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("a.example.").expect("name"),
            RecordType::A,
        ));
        assert_eq!(parse(&m.to_vec().expect("encodes"), false), Ok(Vec::new()));
    }

    #[test]
    fn truncated_messages_are_refused_at_every_cut() {
        let bytes = response(
            "a.example.",
            &[
                ("a.example.", cname("b.example.")),
                ("b.example.", a([192, 0, 2, 1])),
            ],
            60,
        );
        for cut in 0..bytes.len() {
            let r = parse(&bytes[..cut], false);
            assert!(
                matches!(r, Err(Malformed::Truncated | Malformed::HugeCounts)),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn a_compression_loop_is_refused() {
        // Header: response, one question whose name is a pointer to itself (offset 12).
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&m, false), Err(Malformed::CompressionLoop));
        // Two pointers pointing at each other, in an answer record's name.
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 14, 0xc0, 12]);
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        assert_eq!(parse(&m, false), Err(Malformed::CompressionLoop));
    }

    #[test]
    fn huge_counts_are_refused_before_parsing() {
        let mut m = vec![
            0x12, 0x34, 0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        m.extend_from_slice(&[0; 64]);
        assert_eq!(parse(&m, false), Err(Malformed::HugeCounts));
        assert_eq!(parse(&[0x12, 0x34], false), Err(Malformed::Truncated));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: every message from a small generator parses or fails.
        let mut x: u32 = 0x1234_5678;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&bytes, len % 2 == 0);
        }
    }
}
