//! Watchlists: `[[watchlist]]` config, entry slots, domain matching, DNS learning with
//! expiry, and the kernel maps that carry them (see `monitor-ebpf/src/watch.rs` for the
//! kernel's side and why it is built this way).
//!
//! Limits, so that the metric label set is bounded by the config: at most
//! [`MAX_WATCHLISTS`] watchlists and [`MAX_ENTRIES`] entries (prefixes, AS numbers and
//! domains) in all; IPv4 prefixes of /8 or longer and IPv6 of /32 or longer; watched AS
//! numbers share the 255 named ASN slots with `[metrics] asns` and the policies'; at most
//! `LEARNED_ENTRIES` (16,384) DNS-learned addresses at a time.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    net::IpAddr,
    ops::Range,
};

use ipnet::IpNet;
use monitor_common::watch::{
    LEARNED_ENTRIES, MAX_WATCH_ENTRIES, MIN_PREFIX_V4, MIN_PREFIX_V6, WATCH_BITS_WORDS, bucket_v4,
    bucket_v6, mapped_v4,
};
use serde::Deserialize;
use toml::Spanned;

use crate::{
    config::{ConfigError, Location},
    dns::Resolved,
};

/// Most `[[watchlist]]` tables.
pub const MAX_WATCHLISTS: usize = 32;
/// Most entries over all watchlists (entry ids are 1..=255 in the kernel).
pub const MAX_ENTRIES: usize = MAX_WATCH_ENTRIES as usize - 1;
/// Grace added to a DNS record's TTL before a learned address expires: clients keep
/// using an address a little past its TTL.
pub const GRACE_SECS: u64 = 60;
/// TTLs are capped at a day, so that one answer cannot pin an address for years.
pub const MAX_TTL_SECS: u64 = 86_400;
/// How long an address named by a ClientHello stays attributed to the name (plus
/// `GRACE_SECS`), renewed by every ClientHello that names it: long enough for the uploads
/// a connection carries, short enough that a reused CDN address is soon forgotten.
pub const HELLO_TTL_SECS: u32 = 3600;

/// A domain pattern: an exact name, or `*.suffix` for every name below the suffix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    Exact(String),
    Suffix(String),
}

impl Domain {
    /// Parses a pattern; names are case-insensitive and a final dot is ignored.
    #[must_use]
    pub fn parse(text: &str) -> Option<Domain> {
        let t = text.trim().to_ascii_lowercase();
        let t = t.strip_suffix('.').unwrap_or(&t);
        let (wild, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return None;
        }
        Some(if wild {
            Domain::Suffix(name.to_owned())
        } else {
            Domain::Exact(name.to_owned())
        })
    }

    /// Whether `name` (any case, final dot or not) matches. `*.example.com` matches names
    /// below example.com, not example.com itself.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        match self {
            Domain::Exact(d) => name.eq_ignore_ascii_case(d),
            Domain::Suffix(s) => {
                name.len() > s.len() + 1
                    && name.as_bytes()[name.len() - s.len() - 1] == b'.'
                    && name[name.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Exact(d) => f.write_str(d),
            Domain::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

/// `[[watchlist]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watchlist {
    /// `[a-z0-9_-]{1,32}`, unique.
    pub name: String,
    /// Watched networks (IPv4 /8 or longer, IPv6 /32 or longer). Default: none.
    pub prefixes: Vec<IpNet>,
    /// Watched AS numbers. Default: none.
    pub asns: Vec<u32>,
    /// Watched domains, exact or `*.suffix`. Default: none.
    pub domains: Vec<Domain>,
}

impl Watchlist {
    /// The entry names, in config order: prefixes, `AS<n>`, domain patterns.
    pub fn entries(&self) -> impl Iterator<Item = String> + '_ {
        self.prefixes
            .iter()
            .map(ToString::to_string)
            .chain(self.asns.iter().map(|a| format!("AS{a}")))
            .chain(self.domains.iter().map(ToString::to_string))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWatchlist {
    name: Spanned<String>,
    #[serde(default)]
    prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    asns: Vec<Spanned<i64>>,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
}

/// What is wrong with a `[[watchlist]]` key.
#[derive(Debug, thiserror::Error)]
pub enum WatchConfigError {
    #[error("{0:?} is not a valid watchlist name (1 to 32 of a-z, 0-9, '_', '-')")]
    Name(String),
    #[error("watchlist name {0:?} is already used")]
    DuplicateName(String),
    #[error("at most {MAX_WATCHLISTS} watchlists are allowed")]
    TooManyWatchlists,
    #[error("at most {MAX_ENTRIES} entries are allowed over all watchlists")]
    TooManyEntries,
    #[error("{value:?} is not a CIDR network ({source})")]
    Cidr {
        value: String,
        #[source]
        source: ipnet::AddrParseError,
    },
    #[error("{0:?} has host bits set")]
    HostBits(String),
    #[error(
        "{0} is too wide: IPv4 prefixes must be /{MIN_PREFIX_V4} or longer, IPv6 /{MIN_PREFIX_V6} or longer"
    )]
    TooWide(IpNet),
    #[error("{0} is out of range (must be 1..=4294967295)")]
    Asn(i64),
    #[error(
        "[metrics] asns, the policies' allow_asns and deny_asns and the watched AS numbers \
         together exceed the {0} named ASN slots"
    )]
    TooManyAsns(usize),
    #[error("{0:?} is not a domain name or *.suffix pattern")]
    Domain(String),
    #[error("{0} is listed twice in this watchlist")]
    Duplicate(String),
}

/// A watchlist name: 1 to 32 of `a-z`, `0-9`, `_` and `-`.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A watched prefix: a CIDR without host bits, no wider than the prefilter allows.
fn prefix(value: &str) -> Result<IpNet, WatchConfigError> {
    let net: IpNet = value
        .trim()
        .parse()
        .map_err(|source| WatchConfigError::Cidr {
            value: value.to_owned(),
            source,
        })?;
    if net.trunc() != net {
        return Err(WatchConfigError::HostBits(value.to_owned()));
    }
    let min = if net.addr().is_ipv4() {
        MIN_PREFIX_V4
    } else {
        MIN_PREFIX_V6
    };
    if net.prefix_len() < min {
        return Err(WatchConfigError::TooWide(net));
    }
    Ok(net)
}

/// A watched AS number: 1..=4294967295.
fn asn(value: i64) -> Result<u32, WatchConfigError> {
    u32::try_from(value)
        .ok()
        .filter(|a| *a != 0)
        .ok_or(WatchConfigError::Asn(value))
}

/// Validates the `[[watchlist]]` tables. `at` makes a location of a span and key path;
/// `named` are the ASNs that already hold named slots (`[metrics]` and the policies').
pub(crate) fn validate(
    raw: &[RawWatchlist],
    mut named: BTreeSet<u32>,
    at: &dyn Fn(&Range<usize>, String) -> Box<Location>,
) -> Result<Vec<Watchlist>, ConfigError> {
    let err = |span: &Range<usize>, key: String, problem| ConfigError::Watchlist {
        at: at(span, key),
        problem,
    };
    let mut out: Vec<Watchlist> = Vec::new();
    let mut entries = 0usize;
    for (w, r) in raw.iter().enumerate() {
        let key = |k: &str| format!("watchlist[{w}].{k}");
        let name = r.name.get_ref();
        if w == MAX_WATCHLISTS {
            return Err(err(
                &r.name.span(),
                key("name"),
                WatchConfigError::TooManyWatchlists,
            ));
        }
        if !valid_name(name) {
            return Err(err(
                &r.name.span(),
                key("name"),
                WatchConfigError::Name(name.clone()),
            ));
        }
        if out.iter().any(|o| o.name == *name) {
            return Err(err(
                &r.name.span(),
                key("name"),
                WatchConfigError::DuplicateName(name.clone()),
            ));
        }
        let mut list = Watchlist {
            name: name.clone(),
            prefixes: Vec::new(),
            asns: Vec::new(),
            domains: Vec::new(),
        };
        let mut count = |span: &Range<usize>, k: String| {
            entries += 1;
            if entries > MAX_ENTRIES {
                Err(err(span, k, WatchConfigError::TooManyEntries))
            } else {
                Ok(())
            }
        };
        for (i, s) in r.prefixes.iter().enumerate() {
            let k = key(&format!("prefixes[{i}]"));
            let net = prefix(s.get_ref()).map_err(|problem| err(&s.span(), k.clone(), problem))?;
            if list.prefixes.contains(&net) {
                return Err(err(
                    &s.span(),
                    k,
                    WatchConfigError::Duplicate(net.to_string()),
                ));
            }
            count(&s.span(), k)?;
            list.prefixes.push(net);
        }
        for (i, v) in r.asns.iter().enumerate() {
            let k = key(&format!("asns[{i}]"));
            let asn = asn(*v.get_ref()).map_err(|problem| err(&v.span(), k.clone(), problem))?;
            if list.asns.contains(&asn) {
                return Err(err(
                    &v.span(),
                    k,
                    WatchConfigError::Duplicate(format!("AS{asn}")),
                ));
            }
            named.insert(asn);
            if named.len() > crate::config::MAX_NAMED_ASNS {
                return Err(err(
                    &v.span(),
                    k,
                    WatchConfigError::TooManyAsns(crate::config::MAX_NAMED_ASNS),
                ));
            }
            count(&v.span(), k)?;
            list.asns.push(asn);
        }
        for (i, s) in r.domains.iter().enumerate() {
            let k = key(&format!("domains[{i}]"));
            let d = Domain::parse(s.get_ref()).ok_or_else(|| {
                err(
                    &s.span(),
                    k.clone(),
                    WatchConfigError::Domain(s.get_ref().clone()),
                )
            })?;
            if list.domains.contains(&d) {
                return Err(err(
                    &s.span(),
                    k,
                    WatchConfigError::Duplicate(d.to_string()),
                ));
            }
            count(&s.span(), k)?;
            list.domains.push(d);
        }
        out.push(list);
    }
    Ok(out)
}

/// Entry slots by (watchlist, entry) name: `previous`'s first (slot 0 is unused), then
/// the config's new entries in order. An entry that left the config keeps its slot (and
/// its series) until a restart, as groups do. `None` when the slots ran out.
#[must_use]
pub fn entry_slots(
    watchlists: &[Watchlist],
    previous: Option<&[(String, String)]>,
) -> Option<Vec<(String, String)>> {
    let mut slots = previous.map_or_else(|| vec![(String::new(), String::new())], <[_]>::to_vec);
    for w in watchlists {
        for e in w.entries() {
            let pair = (w.name.clone(), e);
            if !slots.contains(&pair) {
                slots.push(pair);
            }
        }
    }
    (slots.len() <= MAX_WATCH_ENTRIES as usize).then_some(slots)
}

/// The name of an entry slot as flows carry it: `watchlist/entry`.
#[must_use]
pub fn slot_name(slots: &[(String, String)], slot: u32) -> Option<String> {
    match slots.get(slot as usize) {
        Some((w, e)) if slot != 0 => Some(format!("{w}/{e}")),
        _ => None,
    }
}

/// What the kernel needs of the config's watchlists, with entry slots resolved.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Watched prefixes and their slots.
    pub prefixes: Vec<(IpNet, u32)>,
    /// (named ASN slot, entry slot).
    pub asns: Vec<(u32, u32)>,
    /// Domain patterns and their slots, in config order (the first match wins).
    pub domains: Vec<(Domain, u32)>,
}

impl Plan {
    /// `slots` from [`entry_slots`]; `asn_slots` is the AS number of each ASN slot.
    #[must_use]
    pub fn new(watchlists: &[Watchlist], slots: &[(String, String)], asn_slots: &[u32]) -> Plan {
        let slot = |w: &str, e: String| {
            slots
                .iter()
                .position(|(sw, se)| sw == w && *se == e)
                .map_or(0, |i| i as u32)
        };
        let mut plan = Plan::default();
        for w in watchlists {
            for p in &w.prefixes {
                plan.prefixes.push((*p, slot(&w.name, p.to_string())));
            }
            for a in &w.asns {
                let named = asn_slots
                    .iter()
                    .enumerate()
                    .take(monitor_common::class::NAMED_ASN_SLOTS as usize)
                    .skip(1)
                    .find(|(_, x)| **x == *a);
                if let Some((asn_slot, _)) = named {
                    plan.asns
                        .push((asn_slot as u32, slot(&w.name, format!("AS{a}"))));
                }
            }
            for d in &w.domains {
                plan.domains.push((d.clone(), slot(&w.name, d.to_string())));
            }
        }
        plan
    }

    /// The entry of the first domain pattern that any of `names` matches.
    #[must_use]
    pub fn domain_entry(&self, names: &[String]) -> Option<u32> {
        self.domains
            .iter()
            .find(|(d, _)| names.iter().any(|n| d.matches(n)))
            .map(|(_, e)| *e)
    }

    /// The entry of the longest watched prefix holding `addr` (what the kernel's trie
    /// answers), for `lookup`.
    #[must_use]
    pub fn prefix_entry(&self, addr: IpAddr) -> Option<(IpNet, u32)> {
        self.prefixes
            .iter()
            .filter(|(p, _)| p.contains(&addr))
            .max_by_key(|(p, _)| p.prefix_len())
            .copied()
    }
}

/// The prefilter bucket of an address.
#[must_use]
pub fn bucket(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => bucket_v4(u32::from(a)),
        IpAddr::V6(a) => bucket_v6((u128::from(a) >> 64) as u64),
    }
}

/// Every bucket a prefix covers: one per /24 (IPv4) or /48 (IPv6) in it.
fn prefix_buckets(net: &IpNet, out: &mut BTreeSet<u32>) {
    match net {
        IpNet::V4(n) => {
            let first = u32::from(n.network()) >> 8;
            let count = 1u32 << 24u8.saturating_sub(n.prefix_len());
            for i in 0..count {
                out.insert(bucket_v4((first + i) << 8));
            }
        }
        IpNet::V6(n) => {
            let first = (u128::from(n.network()) >> 80) as u64;
            let count = 1u64 << 48u8.saturating_sub(n.prefix_len());
            for i in 0..count {
                out.insert(bucket_v6((first + i) << 16));
            }
        }
    }
}

/// The key of an address in the kernel's watch maps.
#[must_use]
pub fn key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => mapped_v4(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// A count as a gauge value (saturating; counts here are bounded far below `i64::MAX`).
fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A change the kernel maps need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Learned address → entry.
    Learn(IpAddr, u32),
    /// Forget a learned address.
    Forget(IpAddr),
    /// Word `index` of the prefilter bitmap is now `value`.
    Bits(u32, u64),
}

/// What one DNS answer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Addresses of watched names (new or refreshed).
    pub addresses: u32,
    /// Addresses not learned because the map was full.
    pub full: u32,
}

/// DNS learning: addresses of watched domains with their expiry, and the prefilter
/// bitmap (prefix buckets plus the buckets of learned addresses). Pure: it returns the
/// [`Change`]s for the kernel maps, so it is tested without a kernel.
#[derive(Debug)]
pub struct Learner {
    plan: Plan,
    /// Learned address → (entry, expiry in monotonic seconds).
    learned: HashMap<IpAddr, (u32, u64)>,
    /// Learned addresses per bucket.
    refs: HashMap<u32, u32>,
    prefix_bits: BTreeSet<u32>,
    bits: Vec<u64>,
    capacity: usize,
}

impl Learner {
    /// A learner for `plan`; the first [`Learner::configure`] call's changes fill the maps.
    #[must_use]
    pub fn new(capacity: usize) -> Learner {
        Learner {
            plan: Plan::default(),
            learned: HashMap::new(),
            refs: HashMap::new(),
            prefix_bits: BTreeSet::new(),
            bits: vec![0; WATCH_BITS_WORDS as usize],
            capacity: capacity.min(LEARNED_ENTRIES as usize),
        }
    }

    /// The plan in force.
    #[must_use]
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Learned addresses now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.learned.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.learned.is_empty()
    }

    /// Applies a new plan (start or reload): learned addresses whose entry is no longer a
    /// domain entry are forgotten; the bitmap is recomputed.
    pub fn configure(&mut self, plan: Plan) -> Vec<Change> {
        let mut changes = Vec::new();
        let domain_slots: BTreeSet<u32> = plan.domains.iter().map(|(_, e)| *e).collect();
        let gone: Vec<IpAddr> = self
            .learned
            .iter()
            .filter(|(_, (e, _))| !domain_slots.contains(e))
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            changes.extend(self.forget(a));
        }
        self.prefix_bits.clear();
        for (p, _) in &plan.prefixes {
            prefix_buckets(p, &mut self.prefix_bits);
        }
        self.plan = plan;
        let mut bits = vec![0u64; WATCH_BITS_WORDS as usize];
        for b in self.prefix_bits.iter().chain(self.refs.keys()) {
            bits[(*b >> 6) as usize] |= 1 << (*b & 63);
        }
        for (i, (old, new)) in self.bits.iter().zip(&bits).enumerate() {
            if old != new {
                changes.push(Change::Bits(i as u32, *new));
            }
        }
        self.bits = bits;
        changes
    }

    /// Learns the addresses of watched names in one answer, at `now` (monotonic seconds).
    pub fn learn(&mut self, answer: &[Resolved], now: u64, changes: &mut Vec<Change>) -> Learned {
        let mut out = Learned::default();
        for r in answer {
            let Some(entry) = self.plan.domain_entry(&r.names) else {
                continue;
            };
            let expires = now + u64::from(r.ttl).min(MAX_TTL_SECS) + GRACE_SECS;
            let full = self.learned.len() >= self.capacity;
            match self.learned.get_mut(&r.addr) {
                Some(held) => {
                    held.1 = held.1.max(expires);
                    if held.0 != entry {
                        held.0 = entry;
                        changes.push(Change::Learn(r.addr, entry));
                    }
                }
                None if full => {
                    out.full += 1;
                    continue;
                }
                None => {
                    self.learned.insert(r.addr, (entry, expires));
                    // The address first, then its bit: a packet that sees the bit finds it.
                    changes.push(Change::Learn(r.addr, entry));
                    let b = bucket(r.addr);
                    let n = self.refs.entry(b).or_default();
                    *n += 1;
                    if *n == 1 {
                        self.set_bit(b, true, changes);
                    }
                }
            }
            out.addresses += 1;
        }
        out
    }

    /// Forgets the addresses that expired by `now`; returns how many.
    pub fn expire(&mut self, now: u64, changes: &mut Vec<Change>) -> usize {
        let gone: Vec<IpAddr> = self
            .learned
            .iter()
            .filter(|(_, (_, exp))| *exp <= now)
            .map(|(a, _)| *a)
            .collect();
        for a in &gone {
            changes.extend(self.forget(*a));
        }
        gone.len()
    }

    fn forget(&mut self, addr: IpAddr) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.learned.remove(&addr).is_none() {
            return changes;
        }
        let b = bucket(addr);
        if let Some(n) = self.refs.get_mut(&b) {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&b);
                self.set_bit(b, false, &mut changes);
            }
        }
        changes.push(Change::Forget(addr));
        changes
    }

    fn set_bit(&mut self, b: u32, on: bool, changes: &mut Vec<Change>) {
        let word = &mut self.bits[(b >> 6) as usize];
        let old = *word;
        if on {
            *word |= 1 << (b & 63);
        } else if !self.prefix_bits.contains(&b) {
            *word &= !(1 << (b & 63));
        }
        if *word != old {
            changes.push(Change::Bits(b >> 6, *word));
        }
    }
}

/// The DNS and learning metrics.
#[derive(Clone)]
pub struct WatchMetrics {
    answers: prometheus::IntCounterVec,
    malformed: prometheus::IntCounterVec,
    hellos: prometheus::IntCounterVec,
    hellos_malformed: prometheus::IntCounterVec,
    learned: prometheus::IntGauge,
    evictions: prometheus::IntCounter,
    full: prometheus::IntCounter,
    map_errors: prometheus::IntCounter,
}

impl WatchMetrics {
    /// Registers the metrics, every series at zero.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
        let m = Self {
            answers: IntCounterVec::new(
                Opts::new(
                    "exfilmon_dns_answers_total",
                    "DNS answers copied by the kernel, by result: watched (an address of a watched domain was learned), unwatched, malformed.",
                ),
                &["result"],
            )?,
            malformed: IntCounterVec::new(
                Opts::new(
                    "exfilmon_dns_malformed_total",
                    "DNS answers that could not be parsed, by reason.",
                ),
                &["reason"],
            )?,
            hellos: IntCounterVec::new(
                Opts::new(
                    "exfilmon_tls_client_hellos_total",
                    "TLS ClientHellos copied by the kernel, by result: watched (the server address was learned for a watched name), unwatched, no_server_name (none, or past the copy's cut), malformed.",
                ),
                &["result"],
            )?,
            hellos_malformed: IntCounterVec::new(
                Opts::new(
                    "exfilmon_tls_malformed_total",
                    "Copied ClientHello packets that could not be read, by reason.",
                ),
                &["reason"],
            )?,
            learned: IntGauge::new(
                "exfilmon_dns_learned_addresses",
                "Addresses of watched domains learned from DNS answers and not yet expired.",
            )?,
            evictions: IntCounter::new(
                "exfilmon_dns_learned_evictions_total",
                "Learned addresses removed because their TTL and grace period ran out, or their domain left the config.",
            )?,
            full: IntCounter::new(
                "exfilmon_dns_learned_full_total",
                "Addresses of watched domains not learned because the learned-address map was full.",
            )?,
            map_errors: IntCounter::new(
                "exfilmon_dns_learned_map_errors_total",
                "Failed writes of learned addresses into the kernel maps.",
            )?,
        };
        for r in ["watched", "unwatched", "malformed"] {
            m.answers.with_label_values(&[r]);
        }
        for r in crate::dns::Malformed::ALL {
            m.malformed.with_label_values(&[r.as_str()]);
        }
        for r in ["watched", "unwatched", "no_server_name", "malformed"] {
            m.hellos.with_label_values(&[r]);
        }
        for r in crate::tls::Malformed::ALL {
            m.hellos_malformed.with_label_values(&[r.as_str()]);
        }
        registry.register(Box::new(m.answers.clone()))?;
        registry.register(Box::new(m.malformed.clone()))?;
        registry.register(Box::new(m.hellos.clone()))?;
        registry.register(Box::new(m.hellos_malformed.clone()))?;
        registry.register(Box::new(m.learned.clone()))?;
        registry.register(Box::new(m.evictions.clone()))?;
        registry.register(Box::new(m.full.clone()))?;
        registry.register(Box::new(m.map_errors.clone()))?;
        Ok(m)
    }
}

/// DNS learning wired to the kernel maps: the daemon's and replay's one way to apply a
/// DNS answer record.
pub struct Watcher {
    learner: Learner,
    maps: crate::ebpf::WatchMaps,
    metrics: WatchMetrics,
}

/// Monotonic seconds, the learner's clock.
fn now_secs() -> u64 {
    crate::events::monotonic_ns() / 1_000_000_000
}

impl Watcher {
    /// Writes `plan` into `maps` and starts learning.
    pub fn new(
        maps: crate::ebpf::WatchMaps,
        plan: Plan,
        metrics: WatchMetrics,
    ) -> Result<Self, crate::ebpf::EbpfError> {
        let mut w = Self {
            learner: Learner::new(LEARNED_ENTRIES as usize),
            maps,
            metrics,
        };
        w.configure(plan)?;
        Ok(w)
    }

    /// Applies a new plan (a reload).
    pub fn configure(&mut self, plan: Plan) -> Result<(), crate::ebpf::EbpfError> {
        self.maps.write_plan(&plan)?;
        let changes = self.learner.configure(plan);
        self.count_forgets(&changes);
        self.maps.apply(&changes)?;
        self.metrics.learned.set(gauge(self.learner.len()));
        Ok(())
    }

    /// The plan in force.
    #[must_use]
    pub fn plan(&self) -> &Plan {
        self.learner.plan()
    }

    /// Parses one DNS answer record and learns what it says about watched domains; returns
    /// the parsed answer (for the DNS-tunnel detection), or `None` when it is malformed.
    pub fn answer(&mut self, payload: &[u8], tcp: bool, cut: bool) -> Option<crate::dns::Parsed> {
        let parsed = match crate::dns::parse_message(payload, tcp) {
            Ok(r) => r,
            Err(e) => {
                // A cut answer that does not parse is a truncation, whatever broke first.
                let reason = if cut {
                    crate::dns::Malformed::Truncated
                } else {
                    e
                };
                self.metrics.answers.with_label_values(&["malformed"]).inc();
                self.metrics
                    .malformed
                    .with_label_values(&[reason.as_str()])
                    .inc();
                return None;
            }
        };
        let result = self.learn(&parsed.resolved);
        self.metrics.answers.with_label_values(&[result]).inc();
        Some(parsed)
    }

    /// Reads one ClientHello packet and, when it names a watched domain, learns its
    /// destination address for the name for `HELLO_TTL_SECS`, as an answer would teach it.
    /// The ClientHello itself, and the handshake before it, are not attributed: the
    /// address is watched from the next packet on.
    pub fn hello(&mut self, packet: &[u8], cut: bool) {
        let result = match crate::tls::parse(packet) {
            Ok(crate::tls::Hello {
                server,
                name: Some(name),
            }) => self.learn(&[Resolved {
                addr: server,
                ttl: HELLO_TTL_SECS,
                names: vec![name],
            }]),
            Ok(_) => "no_server_name",
            Err(e) => {
                tracing::debug!(error = %e, cut, "unreadable ClientHello copy");
                self.metrics
                    .hellos_malformed
                    .with_label_values(&[e.as_str()])
                    .inc();
                "malformed"
            }
        };
        self.metrics.hellos.with_label_values(&[result]).inc();
    }

    /// Learns what `resolved` says about watched names, now; "watched" when it taught an
    /// address, "unwatched" otherwise.
    fn learn(&mut self, resolved: &[Resolved]) -> &'static str {
        let mut changes = Vec::new();
        let got = self.learner.learn(resolved, now_secs(), &mut changes);
        self.metrics.full.inc_by(u64::from(got.full));
        self.write(&changes);
        if got.addresses > 0 {
            "watched"
        } else {
            "unwatched"
        }
    }

    /// Forgets expired addresses.
    pub fn expire(&mut self) {
        let mut changes = Vec::new();
        self.learner.expire(now_secs(), &mut changes);
        self.count_forgets(&changes);
        self.write(&changes);
    }

    fn count_forgets(&self, changes: &[Change]) {
        let n = changes
            .iter()
            .filter(|c| matches!(c, Change::Forget(_)))
            .count();
        self.metrics.evictions.inc_by(n as u64);
    }

    fn write(&mut self, changes: &[Change]) {
        if let Err(e) = self.maps.apply(changes) {
            self.metrics.map_errors.inc();
            tracing::warn!(error = %crate::error_chain(&e), "writing learned addresses failed");
        }
        self.metrics.learned.set(gauge(self.learner.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_exactly_or_below_a_suffix_in_any_case() {
        let exact = Domain::parse("API.Account.Xiaomi.com.").expect("valid");
        assert_eq!(exact, Domain::Exact("api.account.xiaomi.com".into()));
        assert!(exact.matches("api.account.xiaomi.com"));
        assert!(exact.matches("API.ACCOUNT.XIAOMI.COM."));
        assert!(!exact.matches("x.api.account.xiaomi.com"));
        assert!(!exact.matches("account.xiaomi.com"));

        let wild = Domain::parse("*.xiaomi.com").expect("valid");
        assert_eq!(wild.to_string(), "*.xiaomi.com");
        assert!(wild.matches("api.account.xiaomi.com"));
        assert!(wild.matches("A.XIAOMI.COM."));
        assert!(
            !wild.matches("xiaomi.com"),
            "the suffix itself is not below it"
        );
        assert!(!wild.matches("notxiaomi.com"), "label boundary");
        assert!(!wild.matches("xiaomi.com.evil.example"));

        for bad in [
            "",
            "*.",
            "a..b",
            "*.*.a",
            "a b.com",
            "a.*.b",
            &"x".repeat(64),
        ] {
            assert_eq!(Domain::parse(bad), None, "{bad:?}");
        }
    }

    fn plan() -> Plan {
        Plan {
            prefixes: vec![("198.51.100.0/24".parse().expect("net"), 1)],
            asns: vec![],
            domains: vec![
                (Domain::parse("api.account.xiaomi.com").expect("d"), 2),
                (Domain::parse("*.xiaomi.com").expect("d"), 3),
            ],
        }
    }

    fn resolved(addr: [u8; 4], ttl: u32, names: &[&str]) -> Resolved {
        Resolved {
            addr: IpAddr::from(addr),
            ttl,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    #[test]
    fn a_cname_chain_to_a_watched_name_is_learned_and_expires_after_ttl_and_grace() {
        let mut l = Learner::new(16);
        let changes = l.configure(plan());
        assert!(changes.iter().any(|c| *c
            == Change::Bits(
                bucket("198.51.100.0".parse().expect("ip")) >> 6,
                l.bits[(bucket("198.51.100.0".parse().expect("ip")) >> 6) as usize]
            )));

        // The parsed answer of api.account.xiaomi.com CNAME edge.cdn.example A 203.0.113.7.
        let bytes = crate::dns::response(
            "api.account.xiaomi.com.",
            &[
                (
                    "api.account.xiaomi.com.",
                    crate::dns::tests::cname("edge.cdn.example."),
                ),
                ("edge.cdn.example.", crate::dns::tests::a([203, 0, 113, 7])),
            ],
            100,
        );
        let answer = crate::dns::parse(&bytes, false).expect("parses");
        let mut ch = Vec::new();
        let got = l.learn(&answer, 1000, &mut ch);
        assert_eq!(
            got,
            Learned {
                addresses: 1,
                full: 0
            }
        );
        let addr: IpAddr = "203.0.113.7".parse().expect("ip");
        assert_eq!(
            ch[0],
            Change::Learn(addr, 2),
            "the exact entry wins, it is listed first"
        );
        let b = bucket(addr);
        assert_ne!(l.bits[(b >> 6) as usize] & (1 << (b & 63)), 0);

        // Unwatched names teach nothing.
        let mut ch = Vec::new();
        assert_eq!(
            l.learn(
                &[resolved([192, 0, 2, 1], 100, &["a.example"])],
                1000,
                &mut ch
            ),
            Learned::default()
        );
        assert_eq!(ch, []);

        // Still there just before TTL + grace, gone at it.
        let mut ch = Vec::new();
        assert_eq!(l.expire(1000 + 100 + GRACE_SECS - 1, &mut ch), 0);
        assert_eq!(l.expire(1000 + 100 + GRACE_SECS, &mut ch), 1);
        assert!(ch.contains(&Change::Forget(addr)));
        assert!(l.is_empty());
        assert_eq!(
            l.bits[(b >> 6) as usize] & (1 << (b & 63)),
            0,
            "bit cleared"
        );
    }

    #[test]
    fn a_full_map_is_counted_and_a_refresh_extends_the_expiry() {
        let mut l = Learner::new(2);
        l.configure(plan());
        let mut ch = Vec::new();
        let names = ["x.xiaomi.com"];
        let got = l.learn(
            &[
                resolved([203, 0, 113, 1], 10, &names),
                resolved([203, 0, 113, 2], 10, &names),
                resolved([203, 0, 113, 3], 10, &names),
            ],
            0,
            &mut ch,
        );
        assert_eq!(
            got,
            Learned {
                addresses: 2,
                full: 1
            }
        );
        l.learn(&[resolved([203, 0, 113, 1], 1000, &names)], 5, &mut ch);
        assert_eq!(
            l.expire(10 + GRACE_SECS, &mut ch),
            1,
            "only the unrefreshed one"
        );
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_reload_forgets_addresses_of_removed_domains() {
        let mut l = Learner::new(8);
        l.configure(plan());
        let mut ch = Vec::new();
        l.learn(
            &[resolved([203, 0, 113, 1], 10, &["a.xiaomi.com"])],
            0,
            &mut ch,
        );
        let mut p = plan();
        p.domains.truncate(1);
        let ch = l.configure(p);
        assert!(ch.contains(&Change::Forget("203.0.113.1".parse().expect("ip"))));
        assert!(l.is_empty());
    }

    #[test]
    fn entry_slots_keep_their_ids_across_reloads() {
        let w = |domains: &[&str]| Watchlist {
            name: "xiaomi".into(),
            prefixes: vec![],
            asns: vec![4134],
            domains: domains
                .iter()
                .map(|d| Domain::parse(d).expect("d"))
                .collect(),
        };
        let s1 = entry_slots(&[w(&["a.example", "*.b.example"])], None).expect("fits");
        assert_eq!(slot_name(&s1, 1).as_deref(), Some("xiaomi/AS4134"));
        assert_eq!(slot_name(&s1, 3).as_deref(), Some("xiaomi/*.b.example"));
        assert_eq!(slot_name(&s1, 0), None);
        let s2 = entry_slots(&[w(&["*.b.example", "c.example"])], Some(&s1)).expect("fits");
        assert_eq!(s2[3], s1[3]);
        assert_eq!(slot_name(&s2, 4).as_deref(), Some("xiaomi/c.example"));
        let plan = Plan::new(&[w(&["c.example"])], &s2, &[0, 64500, 4134]);
        assert_eq!(plan.asns, [(2, 1)]);
        assert_eq!(plan.domains[0].1, 4);
    }
}
