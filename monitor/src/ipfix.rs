//! IPFIX export (RFC 7011) of the flows the kernel tracks, over UDP to the collectors of
//! `[ipfix]`.
//!
//! Each flow is exported as up to two unidirectional records: outbound (inside → remote,
//! `flowDirection` egress) and inbound (remote → inside, ingress), each only when its
//! direction moved. Counts are deltas (`octetDeltaCount`, `packetDeltaCount`) since the
//! flow's previous record, so a collector that sums records gets the totals:
//!
//! - an update event (every `[flows] update_interval_secs` or `update_bytes`, the active
//!   timeout) exports what moved since, with `flowEndReason` 2 (active timeout);
//! - a TCP FIN/RST exports with reason 3 (end of flow), an idle flow with reason 1;
//! - at shutdown, what moved since the last record is exported (reason 2).
//!
//! The classification travels in standard elements where IANA has them
//! (`bgpSourceAsNumber`/`bgpDestinationAsNumber` carry the remote AS) and in three
//! enterprise-specific elements otherwise, under `[ipfix] enterprise_number` (default
//! 32473, the number RFC 5612 reserves for documentation: see [`ELEMENTS`]).
//!
//! The encoding is `netflow_parser`'s: its IPFIX structures serialize as well as parse,
//! so the unit tests decode what the exporter sends with the same, independent parser.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    ops::Range,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use monitor_common::flow::{FlowKey, FlowState};
use netflow_parser::variable_versions::{
    field_value::{DataNumber, FieldValue, StringValue},
    ipfix::{
        Data, FlowSet, FlowSetBody, FlowSetHeader, Header, IPFix, Template, TemplateField,
        lookup::{IANAIPFixField, IPFixField},
    },
};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Deserialize;
use toml::Spanned;

use crate::{
    config::{ConfigError, Location},
    events::{Clock, EventKind, addresses},
    tables::Labels,
};

/// The default `[ipfix] enterprise_number`: 32473, reserved for documentation (RFC 5612).
pub const DOC_ENTERPRISE: u32 = 32473;
/// The IANA port for IPFIX over UDP, used when a collector is given without one.
pub const IPFIX_PORT: u16 = 4739;
/// Template IDs: IPv4 and IPv6 flows.
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;
/// Variable length, in a template field specifier.
const VARIABLE: u16 = 0xffff;

/// `flowEndReason` values (IANA).
pub mod end_reason {
    pub const IDLE_TIMEOUT: u8 = 1;
    pub const ACTIVE_TIMEOUT: u8 = 2;
    pub const END_OF_FLOW: u8 = 3;
}

/// `flowDirection` values (IANA): the record's source is the remote end, or the inside one.
pub mod direction {
    pub const INGRESS: u8 = 0;
    pub const EGRESS: u8 = 1;
}

/// The enterprise-specific elements, by number under `enterprise_number`.
pub const ELEMENTS: [(u16, &str, &str); 3] = [
    (
        1,
        "exfilmonCountry",
        "string (variable length): ISO 3166 code of the remote address, ?? when unknown",
    ),
    (
        2,
        "exfilmonGroup",
        "string (variable length): source group of the inside address, or ungrouped",
    ),
    (
        3,
        "exfilmonVerdict",
        "unsigned8: policy verdict, 0 unknown, 1 domestic, 2 allowed, 3 violation",
    ),
];

/// `[ipfix]`: where flow records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipfix {
    /// UDP collectors. Default: none (no export).
    pub collectors: Vec<SocketAddr>,
    /// `observationDomainId` of every message. Default 1.
    pub observation_domain: u32,
    /// How often the templates are sent again (UDP has no session to keep them). Default 60 s.
    pub template_refresh: Duration,
    /// Private enterprise number of exfilmon's own elements. Default 32473.
    pub enterprise_number: u32,
    /// Largest message, in bytes (with IP and UDP headers it must fit the path MTU).
    /// Default 1400.
    pub max_message_bytes: usize,
}

impl Default for Ipfix {
    fn default() -> Self {
        Self {
            collectors: Vec::new(),
            observation_domain: 1,
            template_refresh: Duration::from_secs(60),
            enterprise_number: DOC_ENTERPRISE,
            max_message_bytes: 1400,
        }
    }
}

/// `[ipfix]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIpfix {
    collectors: Option<Vec<Spanned<String>>>,
    observation_domain: Option<Spanned<i64>>,
    template_refresh_secs: Option<Spanned<i64>>,
    enterprise_number: Option<Spanned<i64>>,
    max_message_bytes: Option<Spanned<i64>>,
}

/// What is wrong with an `[ipfix]` key, beyond an integer out of range.
#[derive(Debug, thiserror::Error)]
pub enum IpfixConfigError {
    #[error("{0:?} is not an address:port or an address ({1})")]
    Collector(String, std::net::AddrParseError),
    #[error("{0} is listed twice")]
    DuplicateCollector(SocketAddr),
    #[error("{0}: a collector needs a real address and port")]
    Unspecified(SocketAddr),
}

/// Validates `[ipfix]`; `at` names a key's place in the file.
pub(crate) fn validate(
    raw: Option<&RawIpfix>,
    at: &dyn Fn(&Range<usize>, String) -> Box<Location>,
) -> Result<Ipfix, ConfigError> {
    let d = Ipfix::default();
    let Some(r) = raw else { return Ok(d) };
    let mut collectors: Vec<SocketAddr> = Vec::new();
    for (i, c) in r.collectors.iter().flatten().enumerate() {
        let problem = |problem| ConfigError::Ipfix {
            at: at(&c.span(), format!("ipfix.collectors[{i}]")),
            problem,
        };
        let text = c.get_ref();
        let addr = text
            .parse::<SocketAddr>()
            .or_else(|e| {
                text.parse::<IpAddr>()
                    .map(|ip| SocketAddr::new(ip, IPFIX_PORT))
                    .map_err(|_| e)
            })
            .map_err(|e| problem(IpfixConfigError::Collector(text.clone(), e)))?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(problem(IpfixConfigError::Unspecified(addr)));
        }
        if collectors.contains(&addr) {
            return Err(problem(IpfixConfigError::DuplicateCollector(addr)));
        }
        collectors.push(addr);
    }
    let int = |v: &Option<Spanned<i64>>, key: &str, default: i64, min: i64, max: i64| {
        crate::config::bounded(v.as_ref(), default, min..=max, |span| {
            at(span, format!("ipfix.{key}"))
        })
    };
    let u32_max = i64::from(u32::MAX);
    let observation_domain = int(
        &r.observation_domain,
        "observation_domain",
        d.observation_domain.into(),
        0,
        u32_max,
    )?;
    let refresh = int(
        &r.template_refresh_secs,
        "template_refresh_secs",
        d.template_refresh.as_secs().cast_signed(),
        1,
        86_400,
    )?;
    let enterprise = int(
        &r.enterprise_number,
        "enterprise_number",
        d.enterprise_number.into(),
        1,
        u32_max,
    )?;
    // The largest record (IPv6, a 32-byte group name) and the headers fit in 512 bytes.
    let max_message = int(
        &r.max_message_bytes,
        "max_message_bytes",
        i64::try_from(d.max_message_bytes).unwrap_or(i64::MAX),
        512,
        65_000,
    )?;
    Ok(Ipfix {
        collectors,
        observation_domain: u32::try_from(observation_domain).unwrap_or_default(),
        template_refresh: Duration::from_secs(refresh.unsigned_abs()),
        enterprise_number: u32::try_from(enterprise).unwrap_or(DOC_ENTERPRISE),
        max_message_bytes: usize::try_from(max_message).unwrap_or(d.max_message_bytes),
    })
}

/// The exporter's own metrics.
#[derive(Clone)]
pub struct IpfixMetrics {
    messages: IntCounter,
    records: IntCounter,
    errors: IntCounterVec,
    remembered: IntGauge,
    forgotten: IntCounter,
}

impl IpfixMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            messages: IntCounter::new(
                "exfilmon_ipfix_messages_total",
                "IPFIX messages sent, counted once for all collectors.",
            )?,
            records: IntCounter::new(
                "exfilmon_ipfix_records_total",
                "IPFIX data records sent (one per flow direction that moved).",
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "exfilmon_ipfix_errors_total",
                    "IPFIX messages not sent to a collector, by reason.",
                ),
                &["reason"],
            )?,
            remembered: IntGauge::new(
                "exfilmon_ipfix_flows_remembered",
                "Flows whose exported totals the IPFIX exporter keeps, to export deltas.",
            )?,
            forgotten: IntCounter::new(
                "exfilmon_ipfix_flows_forgotten_total",
                "Flows the IPFIX exporter forgot because the kernel evicted them from its full \
                 flow table; they ended without a last record.",
            )?,
        };
        registry.register(Box::new(m.remembered.clone()))?;
        registry.register(Box::new(m.forgotten.clone()))?;
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        for reason in ["send", "encode"] {
            m.errors.with_label_values(&[reason]);
        }
        Ok(m)
    }
}

/// What a flow's earlier records carried, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sent {
    packets_out: u64,
    bytes_out: u64,
    packets_in: u64,
    bytes_in: u64,
    /// The exporter's event count when this was last written ([`Exporter::mark`]).
    seen: u64,
}

impl Sent {
    fn of(st: &FlowState, seen: u64) -> Self {
        Self {
            packets_out: st.packets_out,
            bytes_out: st.bytes_out,
            packets_in: st.packets_in,
            bytes_in: st.bytes_in,
            seen,
        }
    }
}

type Fields = Vec<(IPFixField, FieldValue)>;

/// Sends flow records to the collectors.
pub struct Exporter {
    settings: Ipfix,
    /// The IPv4 and IPv6 templates.
    templates: [Template; 2],
    /// Their template set's encoded size.
    templates_bytes: usize,
    socket_v4: Option<UdpSocket>,
    socket_v6: Option<UdpSocket>,
    /// Per tracked flow, what has been exported.
    sent: HashMap<FlowKey, Sent>,
    /// Flow events handled so far: what [`Sent::seen`] counts in.
    events: u64,
    /// Records waiting for a message: IPv4, IPv6.
    pending: [Vec<Fields>; 2],
    /// Encoded size of the pending records.
    pending_bytes: usize,
    /// Data records sent so far (the header's sequence number), modulo 2^32.
    sequence: u32,
    templates_sent: Option<Instant>,
    clock: Clock,
    metrics: IpfixMetrics,
}

impl Exporter {
    /// Opens a UDP socket per address family the collectors use.
    ///
    /// # Errors
    /// When a socket cannot be bound.
    pub fn open(settings: Ipfix, clock: Clock, metrics: IpfixMetrics) -> std::io::Result<Self> {
        let bind = |v6: bool| -> std::io::Result<Option<UdpSocket>> {
            if !settings.collectors.iter().any(|c| c.is_ipv6() == v6) {
                return Ok(None);
            }
            let any: SocketAddr = if v6 {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let s = UdpSocket::bind(any)?;
            // A full socket buffer drops the message (counted), never stalls the daemon.
            s.set_nonblocking(true)?;
            Ok(Some(s))
        };
        let templates = [false, true].map(|v6| template(v6, settings.enterprise_number));
        // The set header, and per template its ID and field count, then 4 bytes a field
        // (8 with an enterprise number).
        let templates_bytes = 4 + templates
            .iter()
            .map(|t| {
                let fields = t
                    .fields
                    .iter()
                    .map(|f| if f.enterprise_number.is_some() { 8 } else { 4 });
                4 + fields.sum::<usize>()
            })
            .sum::<usize>();
        Ok(Self {
            templates,
            templates_bytes,
            socket_v4: bind(false)?,
            socket_v6: bind(true)?,
            settings,
            sent: HashMap::new(),
            events: 0,
            pending: [Vec::new(), Vec::new()],
            pending_bytes: 0,
            sequence: 0,
            templates_sent: None,
            clock,
            metrics,
        })
    }

    /// Takes the flows a previous daemon left in the pinned table as exported up to now:
    /// that daemon exported them when it stopped, so their next record carries only what
    /// is new (what moved between the two daemons is counted in the metrics, not here).
    pub fn assume_exported<'a>(
        &mut self,
        flows: impl IntoIterator<Item = &'a (FlowKey, FlowState)>,
    ) {
        for (key, st) in flows {
            self.sent.insert(*key, Sent::of(st, self.events));
        }
    }

    /// How many flows the exporter remembers.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.sent.len()
    }

    /// Where the exporter is in its events: a read of the kernel's table that starts after
    /// this and ends before [`Exporter::retain_since`] sees every flow the exporter knew
    /// at the mark that the kernel still holds.
    #[must_use]
    pub fn mark(&self) -> u64 {
        self.events
    }

    /// Forgets every flow `keep` says is gone from the kernel's table (evicted), except
    /// those with an event since `mark`: the read that `keep` reflects may have started
    /// before they did.
    pub fn retain_since(&mut self, mark: u64, keep: impl Fn(&FlowKey) -> bool) {
        let before = self.sent.len();
        self.sent.retain(|k, sent| sent.seen > mark || keep(k));
        self.metrics
            .forgotten
            .inc_by((before - self.sent.len()) as u64);
    }

    /// Forgets a flow that ended with nothing left to export.
    pub fn forget(&mut self, key: &FlowKey) {
        self.sent.remove(key);
    }

    /// Handles a flow event: exports what moved since the flow's last record.
    pub fn on_event(&mut self, kind: EventKind, key: &FlowKey, st: &FlowState, labels: &Labels) {
        self.events += 1;
        let reason = match kind {
            EventKind::FlowStart => {
                // Its first packets go out with its next record.
                let sent = Sent {
                    seen: self.events,
                    ..Sent::default()
                };
                self.sent.insert(*key, sent);
                return;
            }
            EventKind::FlowUpdate => end_reason::ACTIVE_TIMEOUT,
            EventKind::FlowEnd => end_reason::END_OF_FLOW,
            EventKind::FlowIdle => end_reason::IDLE_TIMEOUT,
        };
        let before = if kind == EventKind::FlowIdle {
            self.sent.remove(key)
        } else {
            self.sent.insert(*key, Sent::of(st, self.events))
        }
        .unwrap_or_default();
        let out = (
            st.packets_out.saturating_sub(before.packets_out),
            st.bytes_out.saturating_sub(before.bytes_out),
        );
        let inb = (
            st.packets_in.saturating_sub(before.packets_in),
            st.bytes_in.saturating_sub(before.bytes_in),
        );
        if out.0 == 0 && inb.0 == 0 {
            // Nothing moved (the shutdown pass offers every flow): no record, no labels.
            return;
        }
        let flow = Flow::new(key, st, labels, &self.clock, reason);
        if out.0 > 0 {
            self.push(&flow, direction::EGRESS, out);
        }
        if inb.0 > 0 {
            self.push(&flow, direction::INGRESS, inb);
        }
    }

    fn push(&mut self, flow: &Flow, dir: u8, (packets, bytes): (u64, u64)) {
        let (values, size) = flow.record(dir, packets, bytes);
        let template = &self.templates[usize::from(flow.v6)];
        let fields = template
            .fields
            .iter()
            .map(|f| f.field_type)
            .zip(values)
            .collect();
        // Header, both data set headers and their padding, and the templates when due.
        let templates = if self.templates_due() {
            self.templates_bytes
        } else {
            0
        };
        let overhead = 16 + 2 * (4 + 3) + templates;
        if self.pending_bytes + size + overhead > self.settings.max_message_bytes {
            self.send();
        }
        self.pending[usize::from(flow.v6)].push(fields);
        self.pending_bytes += size;
    }

    fn templates_due(&self) -> bool {
        self.templates_sent
            .is_none_or(|t| t.elapsed() >= self.settings.template_refresh)
    }

    /// Sends the pending records, if any (the daemon calls it every drain tick).
    pub fn flush(&mut self) {
        if self.pending_bytes > 0 {
            self.send();
        }
        self.metrics
            .remembered
            .set(i64::try_from(self.sent.len()).unwrap_or(i64::MAX));
    }

    fn send(&mut self) {
        let Some((bytes, records)) = self.encode() else {
            return;
        };
        self.metrics.messages.inc();
        self.metrics.records.inc_by(records as u64);
        for c in &self.settings.collectors {
            let socket = if c.is_ipv6() {
                self.socket_v6.as_ref()
            } else {
                self.socket_v4.as_ref()
            };
            if let Some(Err(e)) = socket.map(|s| s.send_to(&bytes, c)) {
                self.metrics.errors.with_label_values(&["send"]).inc();
                tracing::debug!(collector = %c, error = %e, "sending an IPFIX message failed");
            }
        }
    }

    /// Encodes the pending records (and the templates, when due) into one message; returns
    /// it and how many records it holds, or None if encoding failed (counted).
    fn encode(&mut self) -> Option<(Vec<u8>, usize)> {
        let records = self.pending.iter().map(Vec::len).sum::<usize>();
        let with_templates = self.templates_due();
        let message = self.message(with_templates);
        self.pending_bytes = 0;
        let bytes = match message.to_be_bytes() {
            Ok(b) => b,
            Err(e) => {
                self.metrics.errors.with_label_values(&["encode"]).inc();
                tracing::warn!(error = %e, records, "encoding an IPFIX message failed; its records are lost");
                return None;
            }
        };
        // The sequence number counts the data records sent before this message.
        self.sequence = self.sequence.wrapping_add(records as u32);
        if with_templates {
            self.templates_sent = Some(Instant::now());
        }
        Some((bytes, records))
    }

    /// The message of the pending records (which it takes), with the templates first when
    /// `with_templates`.
    fn message(&mut self, with_templates: bool) -> IPFix {
        let mut sets = Vec::new();
        if with_templates {
            sets.push(set(2, FlowSetBody::Templates(self.templates.to_vec())));
        }
        for (template, records) in self.templates.iter().zip(&mut self.pending) {
            if records.is_empty() {
                continue;
            }
            let lengths = template.fields.iter().map(|f| f.field_length).collect();
            let data = Data::with_template_field_lengths(std::mem::take(records), lengths)
                .unwrap_or_else(|e| unreachable!("records follow their template: {e}"));
            sets.push(set(template.template_id, FlowSetBody::Data(data)));
        }
        IPFix {
            header: Header {
                version: 10,
                length: 0, // set by to_be_bytes
                export_time: u32::try_from(
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs(),
                )
                .unwrap_or(u32::MAX),
                sequence_number: self.sequence,
                observation_domain_id: self.settings.observation_domain,
            },
            flowsets: sets,
        }
    }
}

fn set(id: u16, body: FlowSetBody) -> FlowSet {
    FlowSet {
        // The length is computed by to_be_bytes.
        header: FlowSetHeader {
            header_id: id,
            length: 0,
        },
        body,
    }
}

/// The template of IPv4 (or IPv6) flow records; [`Flow::record`] writes the fields in
/// this order.
#[must_use]
pub fn template(v6: bool, enterprise: u32) -> Template {
    // IANA element IDs: source/destinationIPv4Address 8/12 (IPv6 27/28), source- and
    // destinationTransportPort 7/11, protocolIdentifier 4, flowDirection 61,
    // octetDeltaCount 1, packetDeltaCount 2, flowStart/EndMilliseconds 152/153,
    // flowEndReason 136, bgpSource/DestinationAsNumber 16/17.
    let (addr, src, dst) = if v6 { (16, 27, 28) } else { (4, 8, 12) };
    let iana = [
        (src, addr),
        (dst, addr),
        (7, 2),
        (11, 2),
        (4, 1),
        (61, 1),
        (1, 8),
        (2, 8),
        (152, 8),
        (153, 8),
        (136, 1),
        (16, 4),
        (17, 4),
    ];
    let mut fields: Vec<TemplateField> = iana
        .into_iter()
        .map(|(id, len)| TemplateField {
            field_type_number: id,
            field_length: len,
            enterprise_number: None,
            field_type: IPFixField::IANA(IANAIPFixField::from(id)),
        })
        .collect();
    for (id, len) in [(1, VARIABLE), (2, VARIABLE), (3, 1)] {
        fields.push(TemplateField {
            field_type_number: id,
            field_length: len,
            enterprise_number: Some(enterprise),
            field_type: IPFixField::Enterprise {
                enterprise_number: enterprise,
                field_number: id,
            },
        });
    }
    Template {
        template_id: if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 },
        field_count: fields.len() as u16,
        fields,
    }
}

/// One flow, ready to become records.
struct Flow {
    v6: bool,
    inside: IpAddr,
    remote: IpAddr,
    inside_port: u16,
    remote_port: u16,
    proto: u8,
    start_ms: u64,
    end_ms: u64,
    reason: u8,
    asn: u32,
    country: String,
    group: String,
    verdict: u8,
}

impl Flow {
    fn new(key: &FlowKey, st: &FlowState, labels: &Labels, clock: &Clock, reason: u8) -> Self {
        let (inside, remote) = addresses(key);
        let ms = |ns| {
            clock
                .wall(ns)
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        let country = labels.country(u32::from(st.country));
        Self {
            v6: inside.is_ipv6(),
            inside,
            remote,
            inside_port: key.inside_port,
            remote_port: key.remote_port,
            proto: key.proto,
            start_ms: ms(st.first_ns),
            end_ms: ms(st.last_ns),
            reason,
            asn: st.asn,
            country,
            group: labels.group(u32::from(st.group)).to_owned(),
            verdict: st.verdict,
        }
    }

    /// The values of one direction's record, in [`template`] order, and its encoded size.
    fn record(&self, dir: u8, packets: u64, bytes: u64) -> (Vec<FieldValue>, usize) {
        let ip = |a: IpAddr| match a {
            IpAddr::V4(a) => FieldValue::Ip4Addr(a),
            IpAddr::V6(a) => FieldValue::Ip6Addr(a),
        };
        let (src, dst, sport, dport, src_as, dst_as) = if dir == direction::EGRESS {
            let f = self;
            (f.inside, f.remote, f.inside_port, f.remote_port, 0, f.asn)
        } else {
            let f = self;
            (f.remote, f.inside, f.remote_port, f.inside_port, f.asn, 0)
        };
        let string = |s: &str| {
            FieldValue::String(StringValue {
                value: s.to_owned(),
                raw: s.as_bytes().to_vec(),
            })
        };
        let values = vec![
            ip(src),
            ip(dst),
            FieldValue::DataNumber(DataNumber::U16(sport)),
            FieldValue::DataNumber(DataNumber::U16(dport)),
            FieldValue::DataNumber(DataNumber::U8(self.proto)),
            FieldValue::DataNumber(DataNumber::U8(dir)),
            FieldValue::DataNumber(DataNumber::U64(bytes)),
            FieldValue::DataNumber(DataNumber::U64(packets)),
            FieldValue::DataNumber(DataNumber::U64(self.start_ms)),
            FieldValue::DataNumber(DataNumber::U64(self.end_ms)),
            FieldValue::DataNumber(DataNumber::U8(self.reason)),
            FieldValue::DataNumber(DataNumber::U32(src_as)),
            FieldValue::DataNumber(DataNumber::U32(dst_as)),
            string(&self.country),
            string(&self.group),
            FieldValue::DataNumber(DataNumber::U8(self.verdict)),
        ];
        let addr = if self.v6 { 16 } else { 4 };
        // Fixed fields, country and group with their 1-byte lengths (codes and names are
        // at most 32 bytes), the verdict.
        let size = 2 * addr + 2 + 2 + 1 + 1 + 8 * 4 + 1 + 4 + 4;
        let size = size + 1 + self.country.len() + 1 + self.group.len() + 1;
        (values, size)
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::flow::{FAMILY_V4, FAMILY_V6};
    use netflow_parser::{NetflowPacket, NetflowParser};

    use super::*;

    fn labels() -> Labels {
        Labels {
            groups: vec!["ungrouped".into(), "phones".into()],
            countries: vec![None, Some("CN".parse().expect("CN"))],
            asns: vec![0],
            rules: vec![crate::policy::RULE_UNKNOWN.into()],
            watch: Vec::new(),
        }
    }

    fn key(v6: bool, port: u16) -> FlowKey {
        let mut k = FlowKey {
            family: if v6 { FAMILY_V6 } else { FAMILY_V4 },
            proto: 6,
            inside_port: port,
            remote_port: 443,
            ..FlowKey::default()
        };
        if v6 {
            k.inside = "2001:db8::10"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets();
            k.remote = "2001:db8:1::20"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets();
        } else {
            k.inside[..4].copy_from_slice(&[192, 0, 2, 10]);
            k.remote[..4].copy_from_slice(&[203, 0, 113, 20]);
        }
        k
    }

    fn state(out: (u64, u64), inb: (u64, u64)) -> FlowState {
        FlowState {
            packets_out: out.0,
            bytes_out: out.1,
            packets_in: inb.0,
            bytes_in: inb.1,
            first_ns: 1_000_000_000,
            last_ns: 3_000_000_000,
            asn: 4134,
            country: 1,
            group: 1,
            verdict: 3,
            ..FlowState::default()
        }
    }

    fn exporter(max_message_bytes: usize) -> Exporter {
        let settings = Ipfix {
            max_message_bytes,
            ..Ipfix::default()
        };
        let metrics = IpfixMetrics::register(&Registry::new()).expect("metrics");
        Exporter::open(settings, Clock::now(), metrics).expect("open")
    }

    /// A decoded data record: the template ID and its values by element ID
    /// (enterprise elements as 1000 + their number).
    #[derive(Debug)]
    struct Decoded {
        template: u16,
        values: HashMap<u32, FieldValue>,
    }

    impl Decoded {
        /// A number element, from its wire bytes (whatever type the parser gave it).
        fn num(&self, id: u32) -> u64 {
            let mut wire = Vec::new();
            self.values[&id].write_be_bytes(&mut wire).expect("encodes");
            assert!(wire.len() <= 8, "element {id} is not a number: {wire:?}");
            wire.iter().fold(0, |n, b| n << 8 | u64::from(*b))
        }

        fn text(&self, id: u32) -> String {
            match &self.values[&id] {
                FieldValue::Vec(b) => String::from_utf8(b.clone()).expect("utf-8"),
                FieldValue::String(s) => s.value.clone(),
                v => panic!("element {id} is not text: {v:?}"),
            }
        }

        fn ip(&self, id: u32) -> IpAddr {
            IpAddr::try_from(&self.values[&id]).expect("an address")
        }
    }

    /// Every message the exporter has pending, encoded and decoded again by a parser that
    /// keeps the templates between messages, as a collector does.
    fn decode(messages: &[Vec<u8>], parser: &mut NetflowParser) -> (Vec<Decoded>, usize) {
        let mut out = Vec::new();
        let mut templates = 0;
        for m in messages {
            let parsed = parser.parse_bytes(m);
            assert!(parsed.error.is_none(), "{:?}", parsed.error);
            for p in parsed.packets {
                let NetflowPacket::IPFix(ipfix) = p else {
                    panic!("not IPFIX: {p:?}");
                };
                assert_eq!(usize::from(ipfix.header.length), m.len());
                for set in ipfix.flowsets {
                    match set.body {
                        FlowSetBody::Templates(t) => templates += t.len(),
                        FlowSetBody::Template(_) => templates += 1,
                        FlowSetBody::Data(d) => {
                            for r in d.fields {
                                let values = r
                                    .into_iter()
                                    .map(|(f, v)| {
                                        let id = match f {
                                            IPFixField::IANA(f) => template(false, DOC_ENTERPRISE)
                                                .fields
                                                .iter()
                                                .chain(&template(true, DOC_ENTERPRISE).fields)
                                                .find(|t| t.field_type == IPFixField::IANA(f))
                                                .map(|t| u32::from(t.field_type_number))
                                                .expect("one of ours"),
                                            IPFixField::Enterprise {
                                                enterprise_number: DOC_ENTERPRISE,
                                                field_number,
                                            } => 1000 + u32::from(field_number),
                                            f => panic!("unexpected element {f:?}"),
                                        };
                                        (id, v)
                                    })
                                    .collect();
                                out.push(Decoded {
                                    template: set.header.header_id,
                                    values,
                                });
                            }
                        }
                        b => panic!("unexpected set {b:?}"),
                    }
                }
            }
        }
        (out, templates)
    }

    fn take(x: &mut Exporter) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while x.pending_bytes > 0 {
            out.push(x.encode().expect("encodes").0);
        }
        out
    }

    #[test]
    fn records_carry_deltas_per_direction_and_decode_as_sent() {
        let mut x = exporter(1400);
        let mut parser = NetflowParser::default();
        let (k, l) = (key(false, 40000), labels());
        x.on_event(EventKind::FlowStart, &k, &state((1, 60), (0, 0)), &l);
        assert!(
            take(&mut x).is_empty(),
            "a start is exported with the next record"
        );

        x.on_event(EventKind::FlowUpdate, &k, &state((10, 5000), (4, 400)), &l);
        let (recs, templates) = decode(&take(&mut x), &mut parser);
        assert_eq!(templates, 2, "the first message carries both templates");
        assert_eq!(recs.len(), 2);
        let out = &recs[0];
        assert_eq!(out.template, TEMPLATE_V4);
        assert_eq!(out.ip(8), "192.0.2.10".parse::<IpAddr>().expect("ip"));
        assert_eq!(out.ip(12), "203.0.113.20".parse::<IpAddr>().expect("ip"));
        assert_eq!((out.num(7), out.num(11), out.num(4)), (40000, 443, 6));
        assert_eq!((out.num(1), out.num(2)), (5000, 10));
        assert_eq!(out.num(61), u64::from(direction::EGRESS));
        assert_eq!(out.num(136), u64::from(end_reason::ACTIVE_TIMEOUT));
        assert_eq!((out.num(16), out.num(17)), (0, 4134));
        assert_eq!(
            out.num(153) - out.num(152),
            2000,
            "first and last packet, 2 s apart"
        );
        assert_eq!(
            (out.text(1001), out.text(1002), out.num(1003)),
            ("CN".to_owned(), "phones".to_owned(), 3)
        );
        let inb = &recs[1];
        assert_eq!(inb.ip(8), "203.0.113.20".parse::<IpAddr>().expect("ip"));
        assert_eq!((inb.num(7), inb.num(11)), (443, 40000));
        assert_eq!((inb.num(1), inb.num(2), inb.num(61)), (400, 4, 0));
        assert_eq!((inb.num(16), inb.num(17)), (4134, 0));

        // Only what moved since: nothing came back, so one record.
        x.on_event(EventKind::FlowEnd, &k, &state((12, 5100), (4, 400)), &l);
        let (recs, templates) = decode(&take(&mut x), &mut parser);
        assert_eq!(
            templates, 0,
            "templates are sent again only after the refresh time"
        );
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].num(1), recs[0].num(2)), (100, 2));
        assert_eq!(recs[0].num(136), u64::from(end_reason::END_OF_FLOW));

        // Idle with nothing new: no record, and the flow is forgotten.
        x.on_event(EventKind::FlowIdle, &k, &state((12, 5100), (4, 400)), &l);
        assert_eq!(take(&mut x).len(), 0);
        assert_eq!(x.tracked(), 0);
    }

    #[test]
    fn ipv6_flows_use_their_own_template() {
        let mut x = exporter(1400);
        let mut parser = NetflowParser::default();
        let k = key(true, 40001);
        x.on_event(EventKind::FlowIdle, &k, &state((3, 300), (0, 0)), &labels());
        let (recs, _) = decode(&take(&mut x), &mut parser);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].template, TEMPLATE_V6);
        assert_eq!(
            recs[0].ip(27),
            "2001:db8::10".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            recs[0].ip(28),
            "2001:db8:1::20".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(recs[0].num(136), u64::from(end_reason::IDLE_TIMEOUT));
    }

    #[test]
    fn messages_to_a_collector_stay_under_the_size_limit_and_lose_no_record() {
        let collector = UdpSocket::bind("127.0.0.1:0").expect("bind");
        collector
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let settings = Ipfix {
            collectors: vec![collector.local_addr().expect("addr")],
            max_message_bytes: 512,
            ..Ipfix::default()
        };
        let metrics = IpfixMetrics::register(&Registry::new()).expect("metrics");
        let mut x = Exporter::open(settings, Clock::now(), metrics.clone()).expect("open");
        let l = labels();
        for port in 0..100u16 {
            let st = state((1, 100 + u64::from(port)), (0, 0));
            x.on_event(EventKind::FlowIdle, &key(port % 3 == 0, port), &st, &l);
        }
        x.flush();
        let sent = metrics.messages.get();
        assert!(sent > 1, "100 records need several 512-byte messages");
        assert_eq!(metrics.records.get(), 100);
        let mut messages = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..sent {
            let (n, _) = collector.recv_from(&mut buf).expect("a message");
            assert!(n <= 512, "a message of {n} bytes");
            messages.push(buf[..n].to_vec());
        }
        let (recs, templates) = decode(&messages, &mut NetflowParser::default());
        assert_eq!(templates, 2);
        let mut bytes: Vec<u64> = recs.iter().map(|r| r.num(1)).collect();
        bytes.sort_unstable();
        assert_eq!(bytes, (100..200).collect::<Vec<u64>>());
        let sequence: Vec<u32> = messages
            .iter()
            .map(|m| u32::from_be_bytes([m[8], m[9], m[10], m[11]]))
            .collect();
        assert_eq!(sequence[0], 0, "the first message follows no data record");
        assert!(sequence.windows(2).all(|w| w[0] < w[1]), "{sequence:?}");
    }

    #[test]
    fn flows_of_a_previous_daemon_export_only_what_is_new() {
        let mut x = exporter(1400);
        let k = key(false, 40002);
        x.assume_exported(&[(k, state((10, 1000), (2, 200)))]);
        x.on_event(
            EventKind::FlowUpdate,
            &k,
            &state((11, 1100), (2, 200)),
            &labels(),
        );
        let (recs, _) = decode(&take(&mut x), &mut NetflowParser::default());
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].num(1), recs[0].num(2)), (100, 1));
    }

    #[test]
    fn the_template_set_size_is_what_it_encodes_to() {
        let mut x = exporter(1400);
        let only_templates = x.message(true).to_be_bytes().expect("encodes");
        assert_eq!(only_templates.len(), 16 + x.templates_bytes);
    }

    #[test]
    fn evicted_flows_are_forgotten() {
        let mut x = exporter(1400);
        let (a, b) = (key(false, 1), key(false, 2));
        x.on_event(EventKind::FlowStart, &a, &state((1, 60), (0, 0)), &labels());
        x.on_event(EventKind::FlowStart, &b, &state((1, 60), (0, 0)), &labels());
        // A table read starts here; c starts while it runs, so the read cannot hold it.
        let mark = x.mark();
        let c = key(false, 3);
        x.on_event(EventKind::FlowStart, &c, &state((1, 60), (0, 0)), &labels());
        x.retain_since(mark, |k| *k == b);
        assert_eq!(
            x.tracked(),
            2,
            "a was evicted; b is in the table; c is newer"
        );
        x.forget(&b);
        x.forget(&c);
        assert_eq!(x.tracked(), 0);
    }
}
