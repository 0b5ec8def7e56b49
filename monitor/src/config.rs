//! The TOML configuration: parsing, defaults and validation.
//!
//! Every error names the file, the line and the key path (for example
//! `config.toml:12: group[1].networks[0]: "192.0.2.300/24" is not a CIDR
//! network (invalid IP address syntax)`). Unknown keys are rejected
//! everywhere.
//!
//! ```toml
//! [jurisdictions]               # named groups of countries, used as "@name" (default none)
//! eu = ["AT", "BE", "DE", "FR"] # name: [a-z0-9_-]{1,32}; "domestic" is built in
//! sanctioned = ["KP", "IR"]     #   (@domestic = [home] countries)
//!
//! [home]                        # required
//! networks = ["192.0.2.0/24"]   # inside networks (required, non-empty)
//! countries = ["IN"]            # domestic jurisdictions (default [])
//! allow = ["SG", "@eu"]         # for ungrouped inside addresses: allowed countries and
//! allow_asns = [13335]          #   @jurisdictions, allowed AS numbers, denied countries
//! deny = ["@sanctioned"]        #   and @jurisdictions, denied AS numbers (each default [])
//! deny_asns = [4134]
//!
//! [[group]]                     # 0..=31 groups
//! name = "phones"               # [a-z0-9_-]{1,32}, unique, not "ungrouped"
//! networks = ["192.0.2.0/26"]   # non-empty, disjoint from other groups' networks
//! allow = ["US", "@eu"]         # allow, allow_asns, deny, deny_asns as in [home]
//! allow_asns = [13335]          #   (each default [])
//! deny = ["@sanctioned", "FR"]
//! deny_asns = [4134, 4837]
//! enforce = false               # true: drop this group's violation packets (default false)
//!
//! [geoip]                       # earlier sources win, per field (country, ASN)
//! sources = [{ format = "csv", path = "geo.csv" }]
//!                               # format: "tor" | "csv" | "asn-csv" | "iptoasn" | "rir" | "mmdb"
//!
//! [[interface]]
//! name = "eth1"
//! hook = "xdp"                  # "xdp" | "tc-egress" | "tc-ingress"
//! mode = "auto"                 # "auto" | "native" | "skb" (xdp only)
//! netns = "router"              # optional named network namespace
//! mirror = false                # true: a SPAN/TAP port: count each frame, then drop it
//!                               #   (xdp only; default false)
//!
//! [metrics]
//! listen = "127.0.0.1:9477"
//! asns = [4134, 4837]           # AS numbers with per-ASN counters (default []); these and
//!                               # the ASNs the policies name share 255 slots
//! web_config = "web.yml"        # TLS and basic auth, exporter-toolkit format (default none:
//!                               # plain HTTP); see crate::web::config
//! max_connections = 64          # open connections at once; more are closed (1..=1024)
//! header_timeout_secs = 10      # TLS handshake, and each request's headers (1..=300)
//!
//! [flows]
//! max_entries = 65536
//! ring_bytes = 4194304
//! update_interval_secs = 10
//! update_bytes = 1048576
//! idle_timeout_secs = 60
//! track_unknown = false
//! wakeup_bytes = 65536
//!
//! [events]                      # see docs/event-log.md for the lines and the hash chain
//! log = "/var/log/exfilmon/events.jsonl"  # default none: no event log
//! max_bytes = 104857600         # rotate before the file would pass this (default 100 MiB);
//!                               # 0: never (logrotate moves it, SIGHUP reopens); else >= 4096
//! keep = 10                     # rotated files kept, events.jsonl.1 (newest) .. .10 (1..=1000)
//! hash_chain = false            # each line carries the SHA-256 of the line before (default false)
//!
//! [ipfix]                       # IPFIX export of the tracked flows (see crate::ipfix)
//! collectors = ["192.0.2.9:4739"] # UDP address:port or address (port 4739); default none
//! observation_domain = 1        # 0..=4294967295
//! template_refresh_secs = 60    # templates are sent again this often (1..=86400)
//! enterprise_number = 32473     # PEN of exfilmon's own elements (default 32473, RFC 5612)
//! max_message_bytes = 1400      # 512..=65000
//!
//! [[watchlist]]                 # 0..=32 watchlists, at most 255 entries in all
//! name = "xiaomi"               # [a-z0-9_-]{1,32}, unique
//! prefixes = ["203.0.113.0/24"] # IPv4 /8 or longer, IPv6 /32 or longer (default [])
//! asns = [4134]                 # named ASN slots, shared with [metrics] asns (default [])
//! domains = ["api.account.xiaomi.com", "*.xiaomi.com"]
//!                               # exact names or *.suffix, any case (default [])
//!
//! [detections]                  # see crate::detect::config for every key and default
//! state_dir = "/var/lib/exfilmon"
//! tick_secs = 10
//! [detections.volume]
//! window_secs = 3600
//! min_bytes = 1073741824
//! ```
//!
//! Policy precedence, highest first; the first rule that matches decides the verdict (see
//! [`crate::policy`]):
//!
//! 1. the remote ASN is in the group's `deny_asns` → violation;
//! 2. the remote country is in the group's `deny` → violation;
//! 3. the country is in `[home] countries` → domestic;
//! 4. the ASN is in the group's `allow_asns` → allowed;
//! 5. the country is in the group's `allow` → allowed;
//! 6. otherwise violation for a known country, unknown for an unknown one.
//!
//! Ungrouped inside addresses follow `[home]`'s lists. With `enforce = true` a group's
//! violation packets (both directions) are dropped; nothing else is ever dropped, except on
//! an interface with `mirror = true`, whose frames are copies: each is dropped once counted.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::{self, Write as _},
    io,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::{
    country::{CountryCode, CountryError},
    policy::{Listed, Policy},
};

/// Most groups a config may define (group slots are a 32-bit mask, one slot
/// being "ungrouped").
pub const MAX_GROUPS: usize = 31;

/// Most AS numbers `[metrics] asns` may name (the kernel reserves that many ASN slots).
pub const MAX_NAMED_ASNS: usize = monitor_common::class::NAMED_ASN_SLOTS as usize - 1;

/// Group name that is reserved for inside addresses in no group.
pub const RESERVED_GROUP: &str = "ungrouped";

/// The Debian `tor-geoipdb` files used when `[geoip] sources` is absent or empty.
pub const DEFAULT_TOR_GEOIP: [&str; 2] = ["/usr/share/tor/geoip", "/usr/share/tor/geoip6"];

/// The default `[metrics] listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

/// The default `[metrics] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// The default `[metrics] header_timeout_secs`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where in the config something is: file, 1-based line, key path.
/// Displays as `file:line: key` (or `file:line` with an empty key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Key path such as `group[1].networks[0]`; may be empty.
    pub key: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        Ok(())
    }
}

/// Why a config was rejected.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// TOML syntax error, unknown key, missing key or wrong value type.
    #[error("{at}: {message}")]
    Toml {
        /// Where.
        at: Box<Location>,
        /// The parser's message.
        message: String,
        /// The parser's error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A network is not in CIDR notation.
    #[error("{at}: {value:?} is not a CIDR network ({source})")]
    BadCidr {
        /// Where.
        at: Box<Location>,
        /// The text.
        value: String,
        /// The parse error.
        #[source]
        source: ipnet::AddrParseError,
    },
    /// A network has host bits set, such as `192.0.2.1/24`.
    #[error("{at}: {value:?} has host bits set; the network is {network}")]
    HostBits {
        /// Where.
        at: Box<Location>,
        /// The text.
        value: String,
        /// The network it lies in.
        network: IpNet,
    },
    /// A network list is empty.
    #[error("{at}: must list at least one network")]
    NoNetworks {
        /// Where.
        at: Box<Location>,
    },
    /// A country code is not valid.
    #[error("{at}: {source}")]
    Country {
        /// Where.
        at: Box<Location>,
        /// What is wrong with it.
        #[source]
        source: CountryError,
    },
    /// A group name does not match `[a-z0-9_-]{1,32}`.
    #[error("{at}: {name:?} is not a valid group name (1 to 32 of a-z, 0-9, '_', '-')")]
    GroupName {
        /// Where.
        at: Box<Location>,
        /// The name.
        name: String,
    },
    /// A group is named `ungrouped`.
    #[error("{at}: group name {name:?} is reserved")]
    ReservedGroupName {
        /// Where.
        at: Box<Location>,
        /// The name.
        name: String,
    },
    /// Two groups have the same name.
    #[error(
        "{at}: group name {name:?} is already used by group[{other_index}] on line {other_line}"
    )]
    DuplicateGroup {
        /// Where (the later group).
        at: Box<Location>,
        /// The name.
        name: String,
        /// Index of the earlier group.
        other_index: usize,
        /// Line of the earlier group's name.
        other_line: usize,
    },
    /// More than [`MAX_GROUPS`] groups.
    #[error("{at}: {count} groups defined; at most {max} are allowed")]
    TooManyGroups {
        /// Where (the first group past the limit).
        at: Box<Location>,
        /// How many groups there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Networks of two groups overlap.
    #[error(
        "{at}: {network} of group {group:?} overlaps {other_network} of group {other_group:?} ({other_key}, line {other_line})"
    )]
    GroupOverlap {
        /// Where (the later network).
        at: Box<Location>,
        /// The later network.
        network: IpNet,
        /// Its group.
        group: String,
        /// The earlier network.
        other_network: IpNet,
        /// Its group.
        other_group: String,
        /// Its key path.
        other_key: String,
        /// Its line.
        other_line: usize,
    },
    /// A `GeoIP` source file cannot be opened.
    #[error("{at}: GeoIP file {} cannot be opened: {source}", path.display())]
    GeoIpFile {
        /// Where.
        at: Box<Location>,
        /// The resolved path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No `GeoIP` sources are set and the default Tor files are missing.
    #[error(
        "{}: no [geoip] sources are set and the default GeoIP files ({}) are missing: install tor-geoipdb or set [geoip] sources",
        file.display(), tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoGeoIp {
        /// The config file.
        file: PathBuf,
        /// The default files looked for.
        tried: Vec<PathBuf>,
    },
    /// `[metrics] listen` is not a socket address.
    #[error("{at}: {value:?} is not an address:port ({source})")]
    BadListen {
        /// Where.
        at: Box<Location>,
        /// The text.
        value: String,
        /// The parse error.
        #[source]
        source: std::net::AddrParseError,
    },
    /// `[metrics] web_config` names a web config that cannot be read or is not valid.
    #[error("{at}: {source}")]
    Web {
        /// Where (the `web_config` key).
        at: Box<Location>,
        /// What is wrong, with the web config's own file, line and key.
        #[source]
        source: Box<crate::web::WebConfigError>,
    },
    /// An AS number is listed twice in `[metrics] asns`.
    #[error("{at}: AS{asn} is already listed as metrics.asns[{other_index}]")]
    DuplicateAsn {
        /// Where (the later entry).
        at: Box<Location>,
        /// The AS number.
        asn: u32,
        /// Index of the earlier entry.
        other_index: usize,
    },
    /// More than [`MAX_NAMED_ASNS`] AS numbers in `[metrics] asns`.
    #[error("{at}: at most {max} AS numbers may have per-ASN counters")]
    TooManyAsns {
        /// Where (the first entry past the limit).
        at: Box<Location>,
        /// The limit.
        max: usize,
    },
    /// A number is out of its range.
    #[error("{at}: {value} is out of range (must be {min}..={max})")]
    OutOfRange {
        /// Where.
        at: Box<Location>,
        /// The value.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// `ring_bytes` is not a power of two and a multiple of 4096.
    #[error("{at}: {value} is not a power of two that is a multiple of 4096")]
    RingBytes {
        /// Where.
        at: Box<Location>,
        /// The value.
        value: i64,
    },
    /// `[events] max_bytes` is neither 0 nor at least [`MIN_LOG_BYTES`].
    #[error("{at}: {value} must be 0 (no rotation) or at least {MIN_LOG_BYTES}")]
    LogBytes {
        /// Where.
        at: Box<Location>,
        /// The value.
        value: i64,
    },
    /// `wakeup_bytes` is not below `ring_bytes`.
    #[error("{at}: {value} must be less than ring_bytes ({ring_bytes})")]
    WakeupBytes {
        /// Where.
        at: Box<Location>,
        /// The value.
        value: u64,
        /// The ring size.
        ring_bytes: u32,
    },
    /// A string is not one of the allowed words.
    #[error("{at}: {value:?} is not one of {expected}")]
    BadChoice {
        /// Where.
        at: Box<Location>,
        /// The text.
        value: String,
        /// The allowed words.
        expected: &'static str,
    },
    /// An XDP attach mode was set on a tc hook.
    #[error("{at}: mode {mode} applies to xdp hooks only; hook {hook} takes mode auto")]
    ModeOnTc {
        /// Where.
        at: Box<Location>,
        /// The mode given.
        mode: XdpMode,
        /// The hook.
        hook: Hook,
    },
    /// `mirror = true` on a tc hook.
    #[error(
        "{at}: a mirror port is hooked with xdp (it counts and drops each copy as it \
         arrives); hook {hook} cannot be a mirror"
    )]
    MirrorOnTc {
        /// Where.
        at: Box<Location>,
        /// The hook.
        hook: Hook,
    },
    /// An interface name is not a valid Linux interface name.
    #[error(
        "{at}: {name:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or whitespace)"
    )]
    InterfaceName {
        /// Where.
        at: Box<Location>,
        /// The name.
        name: String,
    },
    /// A network namespace name is not valid.
    #[error("{at}: {name:?} is not a valid network namespace name")]
    NetnsName {
        /// Where.
        at: Box<Location>,
        /// The name.
        name: String,
    },
    /// The same interface and hook are listed twice.
    #[error("{at}: interface {name:?} with hook {hook} is already listed on line {other_line}")]
    DuplicateInterface {
        /// Where (the later entry).
        at: Box<Location>,
        /// The interface.
        name: String,
        /// The hook.
        hook: Hook,
        /// Line of the earlier entry.
        other_line: usize,
    },
    /// A jurisdiction name does not match `[a-z0-9_-]{1,32}` or is `domestic`.
    #[error(
        "{at}: {name:?} is not a valid jurisdiction name (1 to 32 of a-z, 0-9, '_', '-'; \"domestic\" is built in)"
    )]
    JurisdictionName {
        /// Where.
        at: Box<Location>,
        /// The name.
        name: String,
    },
    /// An `@name` that `[jurisdictions]` does not define.
    #[error("{at}: unknown jurisdiction \"@{name}\" (defined: {known})")]
    UnknownJurisdiction {
        /// Where.
        at: Box<Location>,
        /// The name, without `@`.
        name: String,
        /// The names that are defined, `@domestic` included.
        known: String,
    },
    /// `[metrics] asns` and the policies name more AS numbers than there are named slots.
    #[error(
        "{at}: [metrics] asns and the policies' allow_asns and deny_asns name more than {max} distinct AS numbers"
    )]
    TooManyNamedAsns {
        /// Where (the first AS number past the limit).
        at: Box<Location>,
        /// The limit.
        max: usize,
    },
    /// `[events] log` is empty.
    #[error("{at}: must not be empty")]
    EmptyPath {
        /// Where.
        at: Box<Location>,
    },
    /// `[pin] dir` is not an absolute path.
    #[error(
        "{at}: must be an absolute path on a bpffs mount, e.g. {}",
        DEFAULT_PIN_DIR
    )]
    RelativePinDir {
        /// Where.
        at: Box<Location>,
    },
    /// A `[[watchlist]]` key is wrong.
    #[error("{at}: {problem}")]
    Watchlist {
        /// Where.
        at: Box<Location>,
        /// What is wrong.
        #[source]
        problem: crate::watch::WatchConfigError,
    },
    /// An `[ipfix]` key is wrong (beyond a plain integer range).
    #[error("{at}: {problem}")]
    Ipfix {
        /// Where.
        at: Box<Location>,
        /// What is wrong.
        #[source]
        problem: crate::ipfix::IpfixConfigError,
    },
    /// A `[detections]` key is wrong (beyond a plain integer range).
    #[error("{at}: {problem}")]
    Detections {
        /// Where.
        at: Box<Location>,
        /// What is wrong.
        #[source]
        problem: crate::detect::config::DetectConfigError,
    },
    /// An interface (or its network namespace) does not exist.
    #[error("{at}: {what} {name:?} not found ({}: {source})", path.display())]
    InterfaceMissing {
        /// Where.
        at: Box<Location>,
        /// "interface" or "network namespace".
        what: &'static str,
        /// The interface or namespace name.
        name: String,
        /// The path that was checked.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A loaded, validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[jurisdictions]`: name → countries. `domestic` is not in it (it is built in).
    pub jurisdictions: BTreeMap<String, Vec<CountryCode>>,
    /// `[home]`.
    pub home: Home,
    /// `[[group]]`, in file order (slot `i` is `groups[i]`).
    pub groups: Vec<Group>,
    /// `[geoip]`, defaulted and with paths resolved.
    pub geoip: GeoIp,
    /// `[[interface]]`, in file order.
    pub interfaces: Vec<Interface>,
    /// `[metrics]`.
    pub metrics: Metrics,
    /// `[flows]`.
    pub flows: Flows,
    /// `[events]`.
    pub events: Events,
    /// `[ipfix]`.
    pub ipfix: crate::ipfix::Ipfix,
    /// `[[watchlist]]`, in file order.
    pub watchlists: Vec<crate::watch::Watchlist>,
    /// `[detections]`.
    pub detections: crate::detect::config::Detections,
    /// `[pin]`.
    pub pin: Pin,
}

/// `[home]`: the inside networks and the home jurisdictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// Inside networks (required, non-empty). Group networks are inside too.
    pub networks: Vec<IpNet>,
    /// Domestic jurisdictions. Default: none.
    pub countries: Vec<CountryCode>,
    /// The rules for inside addresses in no group (`allow`, `allow_asns`, `deny`,
    /// `deny_asns`; each default none). Never enforcing.
    pub policy: Policy,
}

/// `[[group]]`: a named set of inside networks with its own policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `[a-z0-9_-]{1,32}`, unique, not `ungrouped`.
    pub name: String,
    /// Non-empty; disjoint from every other group's networks.
    pub networks: Vec<IpNet>,
    /// `allow`, `allow_asns`, `deny`, `deny_asns` (each default none) and `enforce`
    /// (default false).
    pub policy: Policy,
}

/// `[geoip]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoIp {
    /// The sources in precedence order (earlier wins), paths resolved against
    /// the config file's directory. Default (when `[geoip]` or `sources` is
    /// absent or empty): the Tor files [`DEFAULT_TOR_GEOIP`] that exist.
    pub sources: Vec<GeoSource>,
}

/// One `GeoIP` data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoSource {
    /// Its format.
    pub format: GeoFormat,
    /// The file.
    pub path: PathBuf,
}

/// `GeoIP` file formats, with their TOML spelling. See [`crate::geoip`] for
/// the layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeoFormat {
    /// Debian `tor-geoipdb` (`"tor"`): country.
    Tor,
    /// `first_ip,last_ip,country` CSV (`"csv"`): country.
    Csv,
    /// ip-location-db `first_ip,last_ip,asn[,organisation]` CSV (`"asn-csv"`): ASN.
    AsnCsv,
    /// iptoasn.com `ip2asn-*.tsv` (`"iptoasn"`): country and ASN.
    IpToAsn,
    /// RIR delegated(-extended) statistics (`"rir"`): registration country.
    Rir,
    /// MaxMind DB, as GeoLite2, DB-IP lite or ipinfo lite ship it (`"mmdb"`):
    /// country and/or ASN.
    Mmdb,
}

impl GeoFormat {
    /// Every format, in the order the config error lists them.
    pub const ALL: [GeoFormat; 6] = [
        GeoFormat::Tor,
        GeoFormat::Csv,
        GeoFormat::AsnCsv,
        GeoFormat::IpToAsn,
        GeoFormat::Rir,
        GeoFormat::Mmdb,
    ];

    /// The TOML spelling.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            GeoFormat::Tor => "tor",
            GeoFormat::Csv => "csv",
            GeoFormat::AsnCsv => "asn-csv",
            GeoFormat::IpToAsn => "iptoasn",
            GeoFormat::Rir => "rir",
            GeoFormat::Mmdb => "mmdb",
        }
    }
}

impl fmt::Display for GeoFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[[interface]]`: where to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The interface name.
    pub name: String,
    /// The hook.
    pub hook: Hook,
    /// XDP attach mode. Default: [`XdpMode::Auto`]; tc hooks only take `auto`.
    pub mode: XdpMode,
    /// Named network namespace (`/run/netns/NAME`) holding the interface.
    /// Default: none (the daemon's namespace).
    pub netns: Option<String>,
    /// A SPAN or TAP port (xdp only): every frame is a copy, counted and then dropped.
    /// Default: false.
    pub mirror: bool,
    /// The line of the entry's `name`, for later error messages.
    pub line: usize,
}

/// Attach points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `"xdp"`.
    Xdp,
    /// `"tc-egress"`.
    TcEgress,
    /// `"tc-ingress"`.
    TcIngress,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Xdp => "xdp",
            Hook::TcEgress => "tc-egress",
            Hook::TcIngress => "tc-ingress",
        })
    }
}

/// XDP attach modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum XdpMode {
    /// `"auto"`: let the kernel choose (the default).
    #[default]
    Auto,
    /// `"native"`: driver mode.
    Native,
    /// `"skb"`: generic mode.
    Skb,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        })
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Prometheus listen address. Default: `127.0.0.1:9477` ([`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// AS numbers that get per-ASN counters (`exfilmon_asn_packets_total`, ...), at most
    /// [`MAX_NAMED_ASNS`]. Default: none.
    pub asns: Vec<u32>,
    /// `web_config`: TLS and basic auth from an exporter-toolkit web config file, resolved
    /// against the config file's directory and loaded whole. Default: none (plain HTTP).
    pub web: Option<crate::web::WebConfig>,
    /// Connections open at once; one more is closed when accepted. Default:
    /// [`DEFAULT_MAX_CONNECTIONS`]; 1..=1024. Changing it needs a restart.
    pub max_connections: usize,
    /// `header_timeout_secs`: the TLS handshake, and then each request's headers, must
    /// arrive within it. Default: [`DEFAULT_HEADER_TIMEOUT`]; 1..=300 s.
    pub header_timeout: Duration,
}

/// `[flows]`: flow table and ring buffer tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flows {
    /// LRU flow table size. Default: 65536; range 1..=16777216.
    pub max_entries: u32,
    /// Ring buffer bytes: a power of two and a multiple of 4096.
    /// Default: 4194304 (4 MiB).
    pub ring_bytes: u32,
    /// Periodic flow update interval (`update_interval_secs`). Default: 10 s; at least 1 s.
    pub update_interval: Duration,
    /// A flow update is also sent after this many more bytes. Default: 1048576 (1 MiB); at least 1.
    pub update_bytes: u64,
    /// Flows idle this long are ended by the daemon (`idle_timeout_secs`).
    /// Default: 60 s; at least 1 s.
    pub idle_timeout: Duration,
    /// Also track flows to addresses of unknown country. Default: false.
    pub track_unknown: bool,
    /// Ring fill at which the kernel forces a wakeup; below `ring_bytes`.
    /// Default: 65536 (64 KiB), or half of `ring_bytes` when the ring is
    /// 64 KiB or smaller.
    pub wakeup_bytes: u64,
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            max_entries: 65536,
            ring_bytes: 4 << 20,
            update_interval: Duration::from_secs(10),
            update_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(60),
            track_unknown: false,
            wakeup_bytes: 64 << 10,
        }
    }
}

/// `[events]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Events {
    /// JSON-lines event log, resolved against the config file's directory.
    /// Default: none (no event log).
    pub log: Option<PathBuf>,
    /// `max_bytes`, `keep` and `hash_chain`. Default: 100 MiB files, 10 rotated ones
    /// kept, no hash chain (see [`crate::events::LogOptions`]).
    pub options: crate::events::LogOptions,
}

/// Smallest non-zero `[events] max_bytes`: one page, so a file holds a few lines at least.
pub const MIN_LOG_BYTES: u64 = 4096;

/// Most rotated event log files `[events] keep` may keep.
pub const MAX_LOG_KEEP: u32 = 1000;

/// The default `[pin] dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/exfilmon";

/// `[pin]`: where `exfilmon run` pins its counters, flow table, ring buffer and links, so
/// that a restart or an upgrade loses no count (see `pins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Pin, and on exit leave the programs attached and counting. Default: true. When
    /// false, the daemon detaches at exit and the next one starts from zero.
    pub enabled: bool,
    /// The directory on bpffs. Default: [`DEFAULT_PIN_DIR`]. One per running daemon.
    pub dir: PathBuf,
}

impl Default for Pin {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from(DEFAULT_PIN_DIR),
        }
    }
}

impl Config {
    /// Reads, parses and validates the config at `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] if the file cannot be read, else as [`Config::parse`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`, read from `path` (used for messages and
    /// to resolve relative paths).
    ///
    /// # Errors
    ///
    /// The first problem found, with file, line and key path.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let defaults: Vec<PathBuf> = DEFAULT_TOR_GEOIP.iter().map(PathBuf::from).collect();
        Config::parse_with_geoip_defaults(text, path, &defaults)
    }

    /// Like [`Config::parse`], with other default Tor `GeoIP` files (for tests).
    ///
    /// # Errors
    ///
    /// As [`Config::parse`].
    pub fn parse_with_geoip_defaults(
        text: &str,
        path: &Path,
        default_tor: &[PathBuf],
    ) -> Result<Config, ConfigError> {
        let mut ctx = Ctx {
            text,
            file: path,
            jurisdictions: BTreeMap::new(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(e))?;
        ctx.validate(&raw, default_tor)
    }

    /// Checks that each interface exists: `/sys/class/net/NAME`, or for an
    /// interface in a network namespace, that `/run/netns/NAME` exists (the
    /// interface itself is checked when attaching).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InterfaceMissing`] for the first one missing.
    pub fn check_interfaces(&self) -> Result<(), ConfigError> {
        self.check_interfaces_under(Path::new("/sys/class/net"), Path::new("/run/netns"))
    }

    fn check_interfaces_under(&self, sys_net: &Path, run_netns: &Path) -> Result<(), ConfigError> {
        for (i, iface) in self.interfaces.iter().enumerate() {
            let (what, name, path) = match &iface.netns {
                Some(ns) => ("network namespace", ns, run_netns.join(ns)),
                None => ("interface", &iface.name, sys_net.join(&iface.name)),
            };
            if let Err(source) = std::fs::metadata(&path) {
                let key = if iface.netns.is_some() {
                    "netns"
                } else {
                    "name"
                };
                return Err(ConfigError::InterfaceMissing {
                    at: Box::new(Location {
                        file: self.path.clone(),
                        line: iface.line,
                        key: format!("interface[{i}].{key}"),
                    }),
                    what,
                    name: name.clone(),
                    path,
                    source,
                });
            }
        }
        Ok(())
    }

    /// The AS numbers that take named ASN slots: `[metrics] asns`, then the policies'
    /// (home, then each group's), then the watched ones.
    #[must_use]
    pub fn named_asns(&self) -> Vec<u32> {
        let mut asns = self.metrics.asns.clone();
        let policies = std::iter::once(&self.home.policy)
            .chain(self.groups.iter().map(|g| &g.policy))
            .flat_map(crate::policy::Policy::asns);
        let watched = self.watchlists.iter().flat_map(|w| w.asns.iter().copied());
        for a in policies.chain(watched) {
            if !asns.contains(&a) {
                asns.push(a);
            }
        }
        asns
    }

    /// All inside networks with their group slot: `[home] networks` in slot 0
    /// (ungrouped), then group `i`'s networks in slot `i + 1`.
    pub fn inside_networks(&self) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        let home = self
            .home
            .networks
            .iter()
            .map(|n| (*n, monitor_common::class::GROUP_UNGROUPED));
        let groups = self
            .groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.networks.iter().map(move |n| (*n, i as u32 + 1)));
        home.chain(groups)
    }
}

// ---------------------------------------------------------------------------
// Raw (as written) structures.

type SpannedStrings = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    jurisdictions: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    home: RawHome,
    #[serde(default)]
    group: Vec<RawGroup>,
    geoip: Option<Spanned<RawGeoIp>>,
    #[serde(default)]
    interface: Vec<RawInterface>,
    metrics: Option<RawMetrics>,
    flows: Option<RawFlows>,
    events: Option<RawEvents>,
    ipfix: Option<crate::ipfix::RawIpfix>,
    #[serde(default)]
    watchlist: Vec<crate::watch::RawWatchlist>,
    detections: Option<crate::detect::config::RawDetections>,
    pin: Option<RawPin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHome {
    networks: SpannedStrings,
    #[serde(default)]
    countries: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    allow_asns: Vec<Spanned<i64>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    deny_asns: Vec<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    networks: SpannedStrings,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    allow_asns: Vec<Spanned<i64>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    deny_asns: Vec<Spanned<i64>>,
    #[serde(default)]
    enforce: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeoIp {
    #[serde(default)]
    sources: Vec<RawSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    format: Spanned<String>,
    path: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    hook: Spanned<String>,
    mode: Option<Spanned<String>>,
    netns: Option<Spanned<String>>,
    mirror: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
    asns: Option<Spanned<Vec<Spanned<i64>>>>,
    web_config: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    header_timeout_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlows {
    max_entries: Option<Spanned<i64>>,
    ring_bytes: Option<Spanned<i64>>,
    update_interval_secs: Option<Spanned<i64>>,
    update_bytes: Option<Spanned<i64>>,
    idle_timeout_secs: Option<Spanned<i64>>,
    track_unknown: Option<bool>,
    wakeup_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    log: Option<Spanned<String>>,
    max_bytes: Option<Spanned<i64>>,
    keep: Option<Spanned<i64>>,
    hash_chain: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    enabled: Option<bool>,
    dir: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------
// Validation.

struct Ctx<'a> {
    text: &'a str,
    file: &'a Path,
    /// `[jurisdictions]`, with the built-in `domestic`, once read.
    jurisdictions: BTreeMap<String, Vec<CountryCode>>,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end].split(|&b| b == b'\n').count()
    }

    #[allow(clippy::unnecessary_box_returns)] // boxed to keep `ConfigError` small
    fn at(&self, span: &Range<usize>, key: impl Into<String>) -> Box<Location> {
        Box::new(Location {
            file: self.file.to_owned(),
            line: self.line(span),
            key: key.into(),
        })
    }

    fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new(""))
    }

    fn toml_error(&self, source: toml::de::Error) -> ConfigError {
        let span = source.span().unwrap_or(0..0);
        // Errors about the whole document (a missing top-level key) come
        // with no span or an empty one at 0: they have no key path.
        let key = if span.end == 0 {
            String::new()
        } else {
            toml::de::DeTable::parse(self.text)
                .map(|table| key_path(table.get_ref(), &span))
                .unwrap_or_default()
        };
        ConfigError::Toml {
            at: self.at(&span, key),
            message: source.message().trim().to_owned(),
            source: Box::new(source),
        }
    }

    fn validate(
        &mut self,
        raw: &RawConfig,
        default_tor: &[PathBuf],
    ) -> Result<Config, ConfigError> {
        let networks = self.networks(&raw.home.networks, "home.networks")?;
        let countries = self.countries(&raw.home.countries, "home.countries")?;
        let jurisdictions = self.jurisdictions(&raw.jurisdictions, &countries)?;
        let h = &raw.home;
        let home = Home {
            networks,
            countries,
            policy: self.policy(
                [&h.allow, &h.deny],
                [&h.allow_asns, &h.deny_asns],
                false,
                "home",
            )?,
        };
        let groups = self.groups(&raw.group)?;
        let geoip = self.geoip(raw.geoip.as_ref(), default_tor)?;
        let interfaces = self.interfaces(&raw.interface)?;
        let metrics = self.metrics(raw.metrics.as_ref())?;
        let named = self.check_named_asns(raw, &metrics)?;
        let flows = self.flows(raw.flows.as_ref())?;
        let events = self.events(raw.events.as_ref())?;
        let pin = self.pin(raw.pin.as_ref())?;
        let ipfix = crate::ipfix::validate(raw.ipfix.as_ref(), &|span, key| self.at(span, key))?;
        let watchlists =
            crate::watch::validate(&raw.watchlist, named, &|span, key| self.at(span, key))?;
        let detections =
            crate::detect::config::validate(raw.detections.as_ref(), self.dir(), &|span, key| {
                self.at(span, key)
            })?;
        Ok(Config {
            path: self.file.to_owned(),
            jurisdictions,
            home,
            groups,
            geoip,
            interfaces,
            metrics,
            flows,
            events,
            ipfix,
            watchlists,
            detections,
            pin,
        })
    }

    fn networks(&self, list: &SpannedStrings, key: &str) -> Result<Vec<IpNet>, ConfigError> {
        if list.get_ref().is_empty() {
            return Err(ConfigError::NoNetworks {
                at: self.at(&list.span(), key),
            });
        }
        list.get_ref()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let at = || self.at(&s.span(), format!("{key}[{i}]"));
                let value = s.get_ref();
                let net: IpNet = value
                    .trim()
                    .parse()
                    .map_err(|source| ConfigError::BadCidr {
                        at: at(),
                        value: value.clone(),
                        source,
                    })?;
                if net.trunc() != net {
                    return Err(ConfigError::HostBits {
                        at: at(),
                        value: value.clone(),
                        network: net.trunc(),
                    });
                }
                Ok(net)
            })
            .collect()
    }

    fn countries(
        &self,
        list: &[Spanned<String>],
        key: &str,
    ) -> Result<Vec<CountryCode>, ConfigError> {
        let mut out: Vec<CountryCode> = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let cc =
                CountryCode::parse_config(s.get_ref()).map_err(|source| ConfigError::Country {
                    at: self.at(&s.span(), format!("{key}[{i}]")),
                    source,
                })?;
            if !out.contains(&cc) {
                out.push(cc);
            }
        }
        Ok(out)
    }

    /// `[jurisdictions]`, remembered for the `@name`s of the lists that follow; the
    /// built-in `domestic` is `[home] countries`.
    fn jurisdictions(
        &mut self,
        raw: &BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
        domestic: &[CountryCode],
    ) -> Result<BTreeMap<String, Vec<CountryCode>>, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, list) in raw {
            let key = format!("jurisdictions.{name}");
            if !valid_name(name) || name == "domestic" {
                return Err(ConfigError::JurisdictionName {
                    at: self.at(&list.span(), key),
                    name: name.clone(),
                });
            }
            out.insert(name.clone(), self.countries(list.get_ref(), &key)?);
        }
        self.jurisdictions.clone_from(&out);
        self.jurisdictions
            .insert("domestic".to_owned(), domestic.to_vec());
        Ok(out)
    }

    /// An `allow` or `deny` list: codes and `@jurisdiction`s, expanded; a code listed
    /// twice keeps its first listing.
    fn listed(&self, list: &[Spanned<String>], key: &str) -> Result<Vec<Listed>, ConfigError> {
        let mut out: Vec<Listed> = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let at = || self.at(&s.span(), format!("{key}[{i}]"));
            let entries: Vec<Listed> = match s.get_ref().strip_prefix('@') {
                Some(name) => {
                    let Some(codes) = self.jurisdictions.get(name) else {
                        return Err(ConfigError::UnknownJurisdiction {
                            at: at(),
                            name: name.to_owned(),
                            known: self
                                .jurisdictions
                                .keys()
                                .map(|k| format!("@{k}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    };
                    codes
                        .iter()
                        .map(|code| Listed {
                            code: *code,
                            via: Some(name.to_owned()),
                        })
                        .collect()
                }
                None => vec![Listed {
                    code: CountryCode::parse_config(s.get_ref())
                        .map_err(|source| ConfigError::Country { at: at(), source })?,
                    via: None,
                }],
            };
            for e in entries {
                if !out.iter().any(|o| o.code == e.code) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// A list of AS numbers, each 1..=2^32-1; repeats are dropped.
    fn asn_list(&self, list: &[Spanned<i64>], key: &str) -> Result<Vec<u32>, ConfigError> {
        let mut out: Vec<u32> = Vec::new();
        for (i, v) in list.iter().enumerate() {
            let value = *v.get_ref();
            match u32::try_from(value) {
                Ok(asn) if asn != 0 => {
                    if !out.contains(&asn) {
                        out.push(asn);
                    }
                }
                _ => {
                    return Err(ConfigError::OutOfRange {
                        at: self.at(&v.span(), format!("{key}[{i}]")),
                        value,
                        min: 1,
                        max: u32::MAX.into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The rules of `[home]` or a group (`prefix`): `[allow, deny]`,
    /// `[allow_asns, deny_asns]` and `enforce`.
    fn policy(
        &self,
        [allow, deny]: [&[Spanned<String>]; 2],
        [allow_asns, deny_asns]: [&[Spanned<i64>]; 2],
        enforce: bool,
        prefix: &str,
    ) -> Result<Policy, ConfigError> {
        Ok(Policy {
            allow: self.listed(allow, &format!("{prefix}.allow"))?,
            allow_asns: self.asn_list(allow_asns, &format!("{prefix}.allow_asns"))?,
            deny: self.listed(deny, &format!("{prefix}.deny"))?,
            deny_asns: self.asn_list(deny_asns, &format!("{prefix}.deny_asns"))?,
            enforce,
        })
    }

    /// `[metrics] asns` and the policies' ASNs share the named ASN slots (and the watched
    /// ASNs, which `watch::validate` adds to the set returned).
    fn check_named_asns(
        &self,
        raw: &RawConfig,
        metrics: &Metrics,
    ) -> Result<BTreeSet<u32>, ConfigError> {
        let mut named: BTreeSet<u32> = metrics.asns.iter().copied().collect();
        let lists = [
            ("home.allow_asns".to_owned(), &raw.home.allow_asns),
            ("home.deny_asns".to_owned(), &raw.home.deny_asns),
        ]
        .into_iter()
        .chain(raw.group.iter().enumerate().flat_map(|(gi, g)| {
            [
                (format!("group[{gi}].allow_asns"), &g.allow_asns),
                (format!("group[{gi}].deny_asns"), &g.deny_asns),
            ]
        }));
        for (key, list) in lists {
            for (i, v) in list.iter().enumerate() {
                // Already checked to be in range.
                named.insert(u32::try_from(*v.get_ref()).unwrap_or(0));
                if named.len() > MAX_NAMED_ASNS {
                    return Err(ConfigError::TooManyNamedAsns {
                        at: self.at(&v.span(), format!("{key}[{i}]")),
                        max: MAX_NAMED_ASNS,
                    });
                }
            }
        }
        Ok(named)
    }

    fn groups(&self, raw: &[RawGroup]) -> Result<Vec<Group>, ConfigError> {
        if let Some(extra) = raw.get(MAX_GROUPS) {
            return Err(ConfigError::TooManyGroups {
                at: self.at(&extra.name.span(), format!("group[{MAX_GROUPS}]")),
                count: raw.len(),
                max: MAX_GROUPS,
            });
        }
        let mut names: HashMap<&str, (usize, usize)> = HashMap::new();
        // (network, group index, network index, span) of every group network so far.
        let mut seen: Vec<(IpNet, usize, usize, Range<usize>)> = Vec::new();
        let mut groups = Vec::with_capacity(raw.len());
        for (gi, g) in raw.iter().enumerate() {
            let name = g.name.get_ref();
            let name_at = || self.at(&g.name.span(), format!("group[{gi}].name"));
            if !valid_name(name) {
                return Err(ConfigError::GroupName {
                    at: name_at(),
                    name: name.clone(),
                });
            }
            if name == RESERVED_GROUP {
                return Err(ConfigError::ReservedGroupName {
                    at: name_at(),
                    name: name.clone(),
                });
            }
            if let Some(&(other_index, other_line)) = names.get(name.as_str()) {
                return Err(ConfigError::DuplicateGroup {
                    at: name_at(),
                    name: name.clone(),
                    other_index,
                    other_line,
                });
            }
            names.insert(name, (gi, self.line(&g.name.span())));

            let key = format!("group[{gi}].networks");
            let networks = self.networks(&g.networks, &key)?;
            for (ni, (net, s)) in networks.iter().zip(g.networks.get_ref()).enumerate() {
                let clash = seen.iter().find(|(other, og, ..)| {
                    *og != gi && (other.contains(net) || net.contains(other))
                });
                if let Some((other, og, oi, ospan)) = clash {
                    return Err(ConfigError::GroupOverlap {
                        at: self.at(&s.span(), format!("{key}[{ni}]")),
                        network: *net,
                        group: name.clone(),
                        other_network: *other,
                        other_group: raw[*og].name.get_ref().clone(),
                        other_key: format!("group[{og}].networks[{oi}]"),
                        other_line: self.line(ospan),
                    });
                }
                seen.push((*net, gi, ni, s.span()));
            }
            groups.push(Group {
                name: name.clone(),
                networks,
                policy: self.policy(
                    [&g.allow, &g.deny],
                    [&g.allow_asns, &g.deny_asns],
                    g.enforce,
                    &format!("group[{gi}]"),
                )?,
            });
        }
        Ok(groups)
    }

    fn geoip(
        &self,
        raw: Option<&Spanned<RawGeoIp>>,
        default_tor: &[PathBuf],
    ) -> Result<GeoIp, ConfigError> {
        let raw_sources = raw
            .map(|g| g.get_ref().sources.as_slice())
            .unwrap_or_default();
        if raw_sources.is_empty() {
            let sources: Vec<GeoSource> = default_tor
                .iter()
                .filter(|p| p.is_file())
                .map(|p| GeoSource {
                    format: GeoFormat::Tor,
                    path: p.clone(),
                })
                .collect();
            if sources.is_empty() {
                return Err(ConfigError::NoGeoIp {
                    file: self.file.to_owned(),
                    tried: default_tor.to_vec(),
                });
            }
            return Ok(GeoIp { sources });
        }
        let mut sources = Vec::with_capacity(raw_sources.len());
        for (i, s) in raw_sources.iter().enumerate() {
            let text = s.format.get_ref().as_str();
            let Some(format) = GeoFormat::ALL.into_iter().find(|f| f.name() == text) else {
                return Err(ConfigError::BadChoice {
                    at: self.at(&s.format.span(), format!("geoip.sources[{i}].format")),
                    value: text.to_owned(),
                    expected: "\"tor\", \"csv\", \"asn-csv\", \"iptoasn\", \"rir\", \"mmdb\"",
                });
            };
            let at = || self.at(&s.path.span(), format!("geoip.sources[{i}].path"));
            if s.path.get_ref().is_empty() {
                return Err(ConfigError::EmptyPath { at: at() });
            }
            let path = self.dir().join(s.path.get_ref());
            if let Err(source) = std::fs::File::open(&path) {
                return Err(ConfigError::GeoIpFile {
                    at: at(),
                    path,
                    source,
                });
            }
            sources.push(GeoSource { format, path });
        }
        Ok(GeoIp { sources })
    }

    fn interfaces(&self, raw: &[RawInterface]) -> Result<Vec<Interface>, ConfigError> {
        let mut out: Vec<Interface> = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let name = r.name.get_ref();
            let name_at = self.at(&r.name.span(), format!("interface[{i}].name"));
            let valid = (1..=15).contains(&name.len())
                && name != "."
                && name != ".."
                && !name
                    .bytes()
                    .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
            if !valid {
                return Err(ConfigError::InterfaceName {
                    at: name_at,
                    name: name.clone(),
                });
            }
            let hook = match r.hook.get_ref().as_str() {
                "xdp" => Hook::Xdp,
                "tc-egress" => Hook::TcEgress,
                "tc-ingress" => Hook::TcIngress,
                other => {
                    return Err(ConfigError::BadChoice {
                        at: self.at(&r.hook.span(), format!("interface[{i}].hook")),
                        value: other.to_owned(),
                        expected: "\"xdp\", \"tc-egress\", \"tc-ingress\"",
                    });
                }
            };
            let mode = match &r.mode {
                None => XdpMode::Auto,
                Some(m) => {
                    let at = || self.at(&m.span(), format!("interface[{i}].mode"));
                    let mode = match m.get_ref().as_str() {
                        "auto" => XdpMode::Auto,
                        "native" => XdpMode::Native,
                        "skb" => XdpMode::Skb,
                        other => {
                            return Err(ConfigError::BadChoice {
                                at: at(),
                                value: other.to_owned(),
                                expected: "\"auto\", \"native\", \"skb\"",
                            });
                        }
                    };
                    if hook != Hook::Xdp && mode != XdpMode::Auto {
                        return Err(ConfigError::ModeOnTc {
                            at: at(),
                            mode,
                            hook,
                        });
                    }
                    mode
                }
            };
            let netns = r
                .netns
                .as_ref()
                .map(|ns| self.netns_name(ns, i))
                .transpose()?;
            let mirror = r.mirror.as_ref().is_some_and(|m| *m.get_ref());
            if let Some(m) = r.mirror.as_ref().filter(|_| mirror && hook != Hook::Xdp) {
                return Err(ConfigError::MirrorOnTc {
                    at: self.at(&m.span(), format!("interface[{i}].mirror")),
                    hook,
                });
            }
            if let Some(prev) = out
                .iter()
                .find(|p| p.name == *name && p.netns == netns && p.hook == hook)
            {
                return Err(ConfigError::DuplicateInterface {
                    at: name_at,
                    name: name.clone(),
                    hook,
                    other_line: prev.line,
                });
            }
            out.push(Interface {
                name: name.clone(),
                hook,
                mode,
                netns,
                mirror,
                line: name_at.line,
            });
        }
        Ok(out)
    }

    /// `interface[i].netns`: a name `ip netns` could have made.
    fn netns_name(&self, ns: &Spanned<String>, i: usize) -> Result<String, ConfigError> {
        let v = ns.get_ref();
        let valid = !v.is_empty()
            && v.len() <= 255
            && v != "."
            && v != ".."
            && !v
                .bytes()
                .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace());
        if valid {
            Ok(v.clone())
        } else {
            Err(ConfigError::NetnsName {
                at: self.at(&ns.span(), format!("interface[{i}].netns")),
                name: v.clone(),
            })
        }
    }

    fn metrics(&self, raw: Option<&RawMetrics>) -> Result<Metrics, ConfigError> {
        let listen = match raw.and_then(|m| m.listen.as_ref()) {
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|source| ConfigError::BadListen {
                    at: self.at(&(0..0), "metrics.listen"),
                    value: DEFAULT_LISTEN.to_owned(),
                    source,
                })?,
            Some(s) => s
                .get_ref()
                .parse()
                .map_err(|source| ConfigError::BadListen {
                    at: self.at(&s.span(), "metrics.listen"),
                    value: s.get_ref().clone(),
                    source,
                })?,
        };
        let mut asns: Vec<u32> = Vec::new();
        let list = raw.and_then(|m| m.asns.as_ref());
        for (i, v) in list
            .map(|l| l.get_ref().as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let key = format!("metrics.asns[{i}]");
            let value = *v.get_ref();
            let asn = match u32::try_from(value) {
                Ok(asn) if asn != 0 => asn,
                _ => {
                    return Err(ConfigError::OutOfRange {
                        at: self.at(&v.span(), key),
                        value,
                        min: 1,
                        max: u32::MAX.into(),
                    });
                }
            };
            if let Some(first) = asns.iter().position(|a| *a == asn) {
                return Err(ConfigError::DuplicateAsn {
                    at: self.at(&v.span(), key),
                    asn,
                    other_index: first,
                });
            }
            if asns.len() == MAX_NAMED_ASNS {
                return Err(ConfigError::TooManyAsns {
                    at: self.at(&v.span(), key),
                    max: MAX_NAMED_ASNS,
                });
            }
            asns.push(asn);
        }
        let (web, max_connections, header_timeout) = self.metrics_server(raw)?;
        Ok(Metrics {
            listen,
            asns,
            web,
            max_connections,
            header_timeout,
        })
    }

    /// `[metrics] web_config`, `max_connections` and `header_timeout_secs`.
    fn metrics_server(
        &self,
        raw: Option<&RawMetrics>,
    ) -> Result<(Option<crate::web::WebConfig>, usize, Duration), ConfigError> {
        let web = match raw.and_then(|m| m.web_config.as_ref()) {
            None => None,
            Some(p) if p.get_ref().is_empty() => {
                return Err(ConfigError::EmptyPath {
                    at: self.at(&p.span(), "metrics.web_config"),
                });
            }
            Some(p) => Some(
                crate::web::WebConfig::load(&self.dir().join(p.get_ref())).map_err(|source| {
                    ConfigError::Web {
                        at: self.at(&p.span(), "metrics.web_config"),
                        source: Box::new(source),
                    }
                })?,
            ),
        };
        let bounded = |v: Option<&Spanned<i64>>, key: &str, default: i64, max: i64| {
            let Some(v) = v else { return Ok(default) };
            let value = *v.get_ref();
            if (1..=max).contains(&value) {
                Ok(value)
            } else {
                Err(ConfigError::OutOfRange {
                    at: self.at(&v.span(), format!("metrics.{key}")),
                    value,
                    min: 1,
                    max,
                })
            }
        };
        let max_connections = bounded(
            raw.and_then(|m| m.max_connections.as_ref()),
            "max_connections",
            i64::try_from(DEFAULT_MAX_CONNECTIONS).unwrap_or(i64::MAX),
            1024,
        )?;
        let header_timeout = bounded(
            raw.and_then(|m| m.header_timeout_secs.as_ref()),
            "header_timeout_secs",
            DEFAULT_HEADER_TIMEOUT.as_secs().cast_signed(),
            300,
        )?;
        Ok((
            web,
            usize::try_from(max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS),
            Duration::from_secs(header_timeout.unsigned_abs()),
        ))
    }

    /// The integer at `flows.key` within `min..=max`, or `default` when absent.
    fn int(
        &self,
        v: Option<&Spanned<i64>>,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        self.int_in(v, "flows", key, default, min, max)
    }

    /// The integer at `section.key` within `min..=max`, or `default` when absent.
    fn int_in(
        &self,
        v: Option<&Spanned<i64>>,
        section: &str,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        bounded(v, default, min..=max, |span| {
            self.at(span, format!("{section}.{key}"))
        })
    }

    fn flows(&self, raw: Option<&RawFlows>) -> Result<Flows, ConfigError> {
        let d = Flows::default();
        let Some(r) = raw else { return Ok(d) };
        let secs = |v: i64| Duration::from_secs(v.unsigned_abs());
        let max_entries = self.int(
            r.max_entries.as_ref(),
            "max_entries",
            d.max_entries.into(),
            1,
            1 << 24,
        )?;
        let ring_bytes = self.int(
            r.ring_bytes.as_ref(),
            "ring_bytes",
            d.ring_bytes.into(),
            4096,
            1 << 31,
        )?;
        if let Some(v) = &r.ring_bytes {
            let value = *v.get_ref();
            if value.count_ones() != 1 || value % 4096 != 0 {
                return Err(ConfigError::RingBytes {
                    at: self.at(&v.span(), "flows.ring_bytes"),
                    value,
                });
            }
        }
        let ring_bytes = u32::try_from(ring_bytes).unwrap_or(d.ring_bytes);
        let update_interval = self.int(
            r.update_interval_secs.as_ref(),
            "update_interval_secs",
            10,
            1,
            u32::MAX.into(),
        )?;
        let update_bytes = self.int(
            r.update_bytes.as_ref(),
            "update_bytes",
            1 << 20,
            1,
            i64::MAX,
        )?;
        let idle_timeout = self.int(
            r.idle_timeout_secs.as_ref(),
            "idle_timeout_secs",
            60,
            1,
            u32::MAX.into(),
        )?;
        let default_wakeup = d.wakeup_bytes.min(u64::from(ring_bytes / 2));
        let wakeup_bytes = match &r.wakeup_bytes {
            None => default_wakeup,
            Some(v) => {
                let value = self
                    .int(Some(v), "wakeup_bytes", 0, 1, i64::MAX)?
                    .unsigned_abs();
                if value >= u64::from(ring_bytes) {
                    return Err(ConfigError::WakeupBytes {
                        at: self.at(&v.span(), "flows.wakeup_bytes"),
                        value,
                        ring_bytes,
                    });
                }
                value
            }
        };
        Ok(Flows {
            max_entries: u32::try_from(max_entries).unwrap_or(d.max_entries),
            ring_bytes,
            update_interval: secs(update_interval),
            update_bytes: update_bytes.unsigned_abs(),
            idle_timeout: secs(idle_timeout),
            track_unknown: r.track_unknown.unwrap_or(d.track_unknown),
            wakeup_bytes,
        })
    }

    fn events(&self, raw: Option<&RawEvents>) -> Result<Events, ConfigError> {
        let d = Events::default();
        let Some(r) = raw else { return Ok(d) };
        let log = match &r.log {
            None => None,
            Some(log) if log.get_ref().is_empty() => {
                return Err(ConfigError::EmptyPath {
                    at: self.at(&log.span(), "events.log"),
                });
            }
            Some(log) => Some(self.dir().join(log.get_ref())),
        };
        let max_bytes = match &r.max_bytes {
            None => d.options.max_bytes,
            // 0 turns rotation off; otherwise at least a page.
            Some(v) => match u64::try_from(*v.get_ref()) {
                Ok(n) if n == 0 || n >= MIN_LOG_BYTES => n,
                _ => {
                    return Err(ConfigError::LogBytes {
                        at: self.at(&v.span(), "events.max_bytes"),
                        value: *v.get_ref(),
                    });
                }
            },
        };
        let keep = self.int_in(
            r.keep.as_ref(),
            "events",
            "keep",
            d.options.keep.into(),
            1,
            MAX_LOG_KEEP.into(),
        )?;
        Ok(Events {
            log,
            options: crate::events::LogOptions {
                max_bytes,
                keep: u32::try_from(keep).unwrap_or(d.options.keep),
                hash_chain: r.hash_chain.unwrap_or(d.options.hash_chain),
            },
        })
    }

    fn pin(&self, raw: Option<&RawPin>) -> Result<Pin, ConfigError> {
        let d = Pin::default();
        let Some(r) = raw else { return Ok(d) };
        let dir = match &r.dir {
            None => d.dir,
            Some(dir) if dir.get_ref().starts_with('/') => PathBuf::from(dir.get_ref()),
            Some(dir) => {
                return Err(ConfigError::RelativePinDir {
                    at: self.at(&dir.span(), "pin.dir"),
                });
            }
        };
        Ok(Pin {
            enabled: r.enabled.unwrap_or(d.enabled),
            dir,
        })
    }
}

/// The integer `v` within `range`, or `default` when absent; `at` names its place.
pub(crate) fn bounded(
    v: Option<&Spanned<i64>>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
    at: impl FnOnce(&Range<usize>) -> Box<Location>,
) -> Result<i64, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    let value = *v.get_ref();
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            at: at(&v.span()),
            value,
            min: *range.start(),
            max: *range.end(),
        })
    }
}

/// Whether `name` is a valid group or jurisdiction name: `[a-z0-9_-]{1,32}`.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The key path (`group[1].networks[0]`) of the innermost key or value in
/// `table` whose span holds `span`; empty if none does.
fn key_path(table: &toml::de::DeTable<'_>, span: &Range<usize>) -> String {
    let mut path = String::new();
    walk_table(table, span, &mut path);
    path
}

/// Whether `outer` holds `inner` (an empty `inner` is held where it starts).
fn holds(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start
        && inner.end <= outer.end
        && inner.start < outer.end.max(outer.start + 1)
}

fn is_container(v: &toml::de::DeValue<'_>) -> bool {
    matches!(v, toml::de::DeValue::Table(_) | toml::de::DeValue::Array(_))
}

fn walk_table(table: &toml::de::DeTable<'_>, span: &Range<usize>, path: &mut String) -> bool {
    for (k, v) in table {
        let in_key = holds(&k.span(), span);
        let in_value = holds(&v.span(), span);
        // A `[header]` table's span does not cover its body: look inside containers anyway.
        if in_key || in_value || is_container(v.get_ref()) {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k.get_ref());
            if in_key || walk_value(v.get_ref(), span, path) || in_value {
                return true;
            }
            path.truncate(len);
        }
    }
    false
}

fn walk_value(value: &toml::de::DeValue<'_>, span: &Range<usize>, path: &mut String) -> bool {
    match value {
        toml::de::DeValue::Table(t) => walk_table(t, span, path),
        toml::de::DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                if walk_value(item.get_ref(), span, path) || holds(&item.span(), span) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp dir holding a Tor `GeoIP` file used as the default source.
    fn geo_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("geoip"), "16777216,16777471,AU\n").expect("write geoip");
        std::fs::write(dir.path().join("geo.csv"), "1.0.0.0,1.0.0.255,AU\n").expect("write csv");
        dir
    }

    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_geoip_defaults(text, &dir.join("config.toml"), &[dir.join("geoip")])
    }

    /// Parses `text` as `config.toml` (no directory), defaults pointing at a temp file.
    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = geo_dir();
        Config::parse_with_geoip_defaults(
            text,
            Path::new("config.toml"),
            &[dir.path().join("geoip")],
        )
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("expected an error for:\n{text}\ngot {c:#?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_err(text: &str, want: &[&str]) {
        let msg = err(text);
        for w in want {
            assert!(msg.contains(w), "error {msg:?} should contain {w:?}");
        }
    }

    const HOME: &str = "[home]\nnetworks = [\"192.0.2.0/24\"]\n";

    #[test]
    fn full_example_parses() {
        let dir = geo_dir();
        let text = r#"
[home]
networks = ["192.0.2.0/24", "2001:db8:1::/48"]
countries = ["in"]
allow = ["SG"]

[[group]]
name = "phones"
networks = ["198.51.100.0/26"]
allow = ["US"]

[[group]]
name = "lab_2"
networks = ["198.51.100.64/26", "2001:db8:2::/48"]

[geoip]
sources = [{ format = "csv", path = "geo.csv" }, { format = "tor", path = "geoip" }]

[[interface]]
name = "eth1"
hook = "xdp"
mode = "native"

[[interface]]
name = "veth0"
hook = "tc-egress"
netns = "router"

[metrics]
listen = "[::1]:9100"

[flows]
max_entries = 1024
ring_bytes = 1048576
update_interval_secs = 5
update_bytes = 4096
idle_timeout_secs = 30
track_unknown = true
wakeup_bytes = 8192

[events]
log = "events.jsonl"
max_bytes = 1048576
keep = 3
hash_chain = true
"#;
        let c = parse_in(dir.path(), text).unwrap_or_else(|e| panic!("full example: {e}"));
        assert_eq!(c.home.networks.len(), 2, "home networks");
        assert_eq!(
            c.home.countries,
            vec![CountryCode::parse_config("IN").expect("IN")],
            "normalised"
        );
        assert_eq!(c.groups.len(), 2, "groups");
        assert_eq!(c.groups[0].name, "phones");
        assert_eq!(c.groups[1].policy, Policy::default(), "default policy");
        assert_eq!(c.inside_networks().count(), 5, "inside = home + groups");
        assert_eq!(
            c.geoip.sources,
            vec![
                GeoSource {
                    format: GeoFormat::Csv,
                    path: dir.path().join("geo.csv")
                },
                GeoSource {
                    format: GeoFormat::Tor,
                    path: dir.path().join("geoip")
                },
            ],
            "sources resolved against the config dir"
        );
        assert_eq!(c.interfaces[0].mode, XdpMode::Native);
        assert_eq!(c.interfaces[0].line, 20, "interface line");
        assert_eq!(c.interfaces[1].hook.to_string(), "tc-egress");
        assert_eq!(c.interfaces[1].netns.as_deref(), Some("router"));
        assert_eq!(c.metrics.listen, "[::1]:9100".parse().expect("addr"));
        assert_eq!(
            c.flows,
            Flows {
                max_entries: 1024,
                ring_bytes: 1 << 20,
                update_interval: Duration::from_secs(5),
                update_bytes: 4096,
                idle_timeout: Duration::from_secs(30),
                track_unknown: true,
                wakeup_bytes: 8192,
            }
        );
        assert_eq!(c.events.log, Some(dir.path().join("events.jsonl")));
        assert_eq!(
            c.events.options,
            crate::events::LogOptions {
                max_bytes: 1 << 20,
                keep: 3,
                hash_chain: true,
            }
        );
    }

    #[test]
    fn defaults() {
        let dir = geo_dir();
        let c = parse_in(dir.path(), HOME).unwrap_or_else(|e| panic!("minimal config: {e}"));
        assert!(
            c.groups.is_empty() && c.interfaces.is_empty(),
            "no groups or interfaces"
        );
        assert_eq!(
            c.geoip.sources,
            vec![GeoSource {
                format: GeoFormat::Tor,
                path: dir.path().join("geoip")
            }]
        );
        assert_eq!(c.metrics.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.flows, Flows::default());
        assert_eq!(c.events, Events::default());
        assert_eq!(c.events.log, None);
        assert_eq!(
            c.events.options,
            crate::events::LogOptions {
                max_bytes: 100 << 20,
                keep: 10,
                hash_chain: false,
            },
            "100 MiB files, 10 kept, no chain"
        );
        let empty = format!("{HOME}[geoip]\nsources = []\n[flows]\n[metrics]\n[events]\n");
        let c2 = parse_in(dir.path(), &empty).unwrap_or_else(|e| panic!("empty sections: {e}"));
        assert_eq!(c2.geoip, c.geoip, "empty sources take the default");
        assert_eq!(c2.flows, Flows::default());
        assert_eq!(c2.events, Events::default());
        let small = format!("{HOME}[flows]\nring_bytes = 8192\n");
        let c3 = parse_in(dir.path(), &small).unwrap_or_else(|e| panic!("small ring: {e}"));
        assert_eq!(
            c3.flows.wakeup_bytes, 4096,
            "wakeup default is capped at half the ring"
        );
    }

    #[test]
    fn missing_default_geoip_is_explained() {
        let e = Config::parse_with_geoip_defaults(
            HOME,
            Path::new("c.toml"),
            &[PathBuf::from("/nonexistent/geoip")],
        )
        .expect_err("no default GeoIP files");
        let msg = e.to_string();
        assert!(
            msg.contains("tor-geoipdb") && msg.contains("/nonexistent/geoip"),
            "{msg}"
        );
    }

    #[test]
    fn bad_cidr_message_format() {
        let text = "[home]\nnetworks = [\n  \"192.0.2.0/24\",\n  \"192.0.2.300/24\",\n]\n";
        assert_eq!(
            err(text),
            "config.toml:4: home.networks[1]: \"192.0.2.300/24\" is not a CIDR network (invalid IP address syntax)"
        );
        assert_err(
            "[home]\nnetworks = [\"192.0.2.1/24\"]\n",
            &[
                "config.toml:2: home.networks[0]:",
                "host bits",
                "192.0.2.0/24",
            ],
        );
        assert_err(
            "[home]\nnetworks = [\"10.0.0.1\"]\n",
            &["not a CIDR network"],
        );
        assert_err(
            "[home]\nnetworks = []\n",
            &["config.toml:2: home.networks: must list at least one network"],
        );
        assert_err(
            "[home]\ncountries = [\"IN\"]\n",
            &["missing field `networks`"],
        );
        assert_err("[metrics]\n", &["config.toml:1: missing field `home`"]);
    }

    #[test]
    fn named_asns_are_checked_with_line_and_index() {
        let c = parse(&format!("{HOME}[metrics]\nasns = [4134, 4837]\n")).expect("valid");
        assert_eq!(c.metrics.asns, [4134, 4837]);
        assert_eq!(parse(HOME).expect("valid").metrics.asns, [] as [u32; 0]);
        assert_err(
            &format!("{HOME}[metrics]\nasns = [4134, 0]\n"),
            &["config.toml:4: metrics.asns[1]: 0 is out of range (must be 1..=4294967295)"],
        );
        assert_err(
            &format!("{HOME}[metrics]\nasns = [4294967296]\n"),
            &["metrics.asns[0]: 4294967296 is out of range"],
        );
        assert_err(
            &format!("{HOME}[metrics]\nasns = [\n  4134,\n  4134,\n]\n"),
            &["config.toml:6: metrics.asns[1]: AS4134 is already listed as metrics.asns[0]"],
        );
        let many: Vec<String> = (1..=256).map(|n| n.to_string()).collect();
        assert_err(
            &format!("{HOME}[metrics]\nasns = [{}]\n", many.join(", ")),
            &["metrics.asns[255]: at most 255 AS numbers may have per-ASN counters"],
        );
    }

    #[test]
    fn policies_parse_with_jurisdictions_and_defaults() {
        let c = parse(
            "[jurisdictions]\neu = [\"DE\", \"fr\"]\nempty = []\n\
             [home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"IN\"]\n\
             allow = [\"@eu\", \"DE\", \"SG\"]\ndeny_asns = [4134, 4134]\n\
             [[group]]\nname = \"phones\"\nnetworks = [\"192.0.2.0/26\"]\n\
             allow = [\"@domestic\"]\nallow_asns = [13335]\ndeny = [\"@eu\", \"CN\"]\nenforce = true\n\
             [[group]]\nname = \"laptops\"\nnetworks = [\"192.0.2.64/26\"]\n",
        )
        .expect("valid");
        let code = |s: &str| CountryCode::parse_config(s).expect("code");
        let listed = |s: &str, via: Option<&str>| Listed {
            code: code(s),
            via: via.map(str::to_owned),
        };
        assert_eq!(c.jurisdictions["eu"], [code("DE"), code("FR")]);
        assert_eq!(c.jurisdictions["empty"], [] as [CountryCode; 0]);
        assert!(
            !c.jurisdictions.contains_key("domestic"),
            "built in, not listed"
        );
        let home = &c.home.policy;
        assert_eq!(
            home.allow,
            [
                listed("DE", Some("eu")),
                listed("FR", Some("eu")),
                listed("SG", None)
            ],
            "expanded in order; a code listed again keeps its first listing"
        );
        assert_eq!(home.deny_asns, [4134], "repeats dropped");
        assert!(!home.enforce);
        let phones = &c.groups[0].policy;
        assert_eq!(phones.allow, [listed("IN", Some("domestic"))]);
        assert_eq!(phones.allow_asns, [13335]);
        assert_eq!(
            phones.deny,
            [
                listed("DE", Some("eu")),
                listed("FR", Some("eu")),
                listed("CN", None)
            ]
        );
        assert!(phones.enforce);
        assert_eq!(
            c.groups[1].policy,
            Policy::default(),
            "everything defaults off"
        );
    }

    #[test]
    fn policy_errors_name_file_line_and_key() {
        assert_err(
            &format!(
                "{HOME}[[group]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\n\
                 allow = [\"SG\"]\ndeny = [\"CN\",\n  \"@sanctioned\"]\n"
            ),
            &[
                "config.toml:8: group[0].deny[1]: unknown jurisdiction \"@sanctioned\" (defined: @domestic)",
            ],
        );
        assert_err(
            &format!("[jurisdictions]\neu = [\"DE\"]\n{HOME}allow = [\"@eux\"]\n"),
            &[
                "config.toml:5: home.allow[0]: unknown jurisdiction \"@eux\" (defined: @domestic, @eu)",
            ],
        );
        assert_err(
            &format!("[jurisdictions]\neu = [\"DE\", \"XZ\"]\n{HOME}"),
            &["config.toml:2: jurisdictions.eu[1]: XZ is not an ISO 3166-1 alpha-2 code"],
        );
        assert_err(
            &format!("[jurisdictions]\ndomestic = [\"DE\"]\n{HOME}"),
            &[
                "config.toml:2: jurisdictions.domestic: \"domestic\" is not a valid jurisdiction name",
            ],
        );
        assert_err(
            &format!("[jurisdictions]\n\"E U\" = [\"DE\"]\n{HOME}"),
            &["config.toml:2: jurisdictions.E U: \"E U\" is not a valid jurisdiction name"],
        );
        assert_err(
            &format!("{HOME}deny_asns = [1, 0]\n"),
            &["config.toml:3: home.deny_asns[1]: 0 is out of range (must be 1..=4294967295)"],
        );
        assert_err(
            &format!(
                "{HOME}[[group]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\nallow_asns = [-5]\n"
            ),
            &["config.toml:6: group[0].allow_asns[0]: -5 is out of range"],
        );
        assert_err(
            &format!("{HOME}enforce = true\n"),
            &["config.toml:3: home.enforce: unknown field `enforce`"],
        );
        assert_err(
            &format!(
                "{HOME}[[group]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\nenforce = \"yes\"\n"
            ),
            &["config.toml:6: group[0].enforce: invalid type"],
        );
    }

    #[test]
    fn policy_asns_and_metrics_asns_share_255_named_slots() {
        let list =
            |r: std::ops::Range<u32>| r.map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        // 200 counted + 55 others named by policies (some shared): 255 fit.
        let fits = format!(
            "{HOME}allow_asns = [{}]\n[[group]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\n\
             deny_asns = [{}]\n[metrics]\nasns = [{}]\n",
            list(150..230),
            list(190..256),
            list(1..201)
        );
        parse(&fits).expect("255 distinct ASNs fit");
        let over = fits.replace("deny_asns = [190", "deny_asns = [9999, 190");
        assert_err(
            &over,
            &[
                "config.toml:7: group[0].deny_asns[66]: [metrics] asns and the policies' allow_asns and deny_asns name more than 255 distinct AS numbers",
            ],
        );
    }

    #[test]
    fn watchlist_errors_name_file_line_and_key() {
        // (the [[watchlist]] table after HOME, which takes lines 1-2, and the message)
        let cases = [
            (
                "name = \"Xiaomi\"\n",
                "config.toml:4: watchlist[0].name: \"Xiaomi\" is not a valid watchlist name",
            ),
            (
                "name = \"a\"\nprefixes = [\"198.51.100.0/33\"]\n",
                "config.toml:5: watchlist[0].prefixes[0]: \"198.51.100.0/33\" is not a CIDR network",
            ),
            (
                "name = \"a\"\nprefixes = [\"198.51.100.1/24\"]\n",
                "config.toml:5: watchlist[0].prefixes[0]: \"198.51.100.1/24\" has host bits set",
            ),
            (
                "name = \"a\"\nprefixes = [\"198.51.100.0/24\", \"10.0.0.0/7\"]\n",
                "config.toml:5: watchlist[0].prefixes[1]: 10.0.0.0/7 is too wide",
            ),
            (
                "name = \"a\"\nprefixes = [\"2001:db8::/31\"]\n",
                "config.toml:5: watchlist[0].prefixes[0]: 2001:db8::/31 is too wide",
            ),
            (
                "name = \"a\"\nasns = [\n  64500,\n  0,\n]\n",
                "config.toml:7: watchlist[0].asns[1]: 0 is out of range",
            ),
            (
                "name = \"a\"\nasns = [64500, 64500]\n",
                "config.toml:5: watchlist[0].asns[1]: AS64500 is listed twice in this watchlist",
            ),
            (
                "name = \"a\"\ndomains = [\"ok.example\", \"bad..example\"]\n",
                "config.toml:5: watchlist[0].domains[1]: \"bad..example\" is not a domain name",
            ),
            (
                "name = \"a\"\ndomains = [\"*.example.com\", \"*.Example.com.\"]\n",
                "config.toml:5: watchlist[0].domains[1]: *.example.com is listed twice",
            ),
            (
                "name = \"a\"\nbogus = 1\n",
                "config.toml:5: watchlist[0].bogus: unknown field `bogus`",
            ),
        ];
        for (table, want) in cases {
            let text = format!("{HOME}[[watchlist]]\n{table}");
            let msg = err(&text);
            assert!(
                msg.contains(want),
                "error {msg:?} should contain {want:?} for:\n{text}"
            );
        }
        assert_err(
            &format!("{HOME}[[watchlist]]\nname = \"a\"\n[[watchlist]]\nname = \"a\"\n"),
            &["config.toml:6: watchlist[1].name: watchlist name \"a\" is already used"],
        );
    }

    #[test]
    fn watchlist_limits_count_entries_lists_and_named_asns() {
        use std::fmt::Write as _;

        let list = |r: std::ops::Range<u32>, f: &dyn Fn(u32) -> String| {
            r.map(f).collect::<Vec<_>>().join(", ")
        };
        // 33 watchlists: the 33rd name is refused.
        let mut many = String::new();
        for i in 0..33 {
            let _ = write!(many, "[[watchlist]]\nname = \"w{i}\"\n");
        }
        assert_err(
            &format!("{HOME}{many}"),
            &["watchlist[32].name: at most 32 watchlists are allowed"],
        );
        // 255 entries over all watchlists fit, the 256th does not.
        let domains = |r| list(r, &|i| format!("\"d{i}.example\""));
        let fits = format!(
            "{HOME}[[watchlist]]\nname = \"a\"\ndomains = [{}]\n[[watchlist]]\nname = \"b\"\n\
             domains = [{}]\n",
            domains(0..200),
            domains(200..255)
        );
        let c = parse(&fits).expect("255 entries fit");
        assert_eq!(c.watchlists.len(), 2);
        assert_err(
            &fits.replace("\"d254.example\"", "\"d254.example\", \"d255.example\""),
            &["config.toml:8: watchlist[1].domains[55]: at most 255 entries are allowed"],
        );
        // Watched ASNs share the 255 named ASN slots with [metrics] and the policies.
        let asns = |r| list(r, &|n: u32| n.to_string());
        let shared = format!(
            "{HOME}deny_asns = [{}]\n[metrics]\nasns = [{}]\n[[watchlist]]\nname = \"a\"\n\
             asns = [{}]\n",
            asns(1..101),
            asns(101..201),
            asns(150..256)
        );
        let c = parse(&shared).expect("255 distinct named ASNs fit");
        assert_eq!(c.named_asns().len(), 255);
        assert_err(
            &shared.replace("asns = [150", "asns = [9999, 150"),
            &[
                "config.toml:8: watchlist[0].asns[106]: [metrics] asns, the policies' allow_asns and deny_asns and the watched AS numbers together exceed the 255 named ASN slots",
            ],
        );
    }

    #[test]
    fn unknown_keys_have_line_and_path() {
        assert_err(
            &format!("{HOME}colour = 1\n"),
            &["config.toml:3: home.colour: unknown field `colour`"],
        );
        assert_err(
            &format!("{HOME}[flows]\nmax_entries = 5\nmax_entry = 5\n"),
            &["config.toml:5: flows.max_entry: unknown field"],
        );
        assert_err(
            &format!(
                "{HOME}[[group]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\n[[group]]\nname = \"b\"\nnetworks = [\"11.0.0.0/8\"]\nnets = 1\n"
            ),
            &["config.toml:9: group[1].nets: unknown field `nets`"],
        );
        assert_err(
            &format!("{HOME}[geo]\n"),
            &["config.toml:3: geo: unknown field `geo`"],
        );
        assert_err(
            &format!("{HOME}[flows]\nmax_entries = \"x\"\n"),
            &["config.toml:4: flows.max_entries: invalid type"],
        );
        assert_err("[home\n", &["config.toml:1:"]);
    }

    #[test]
    fn countries_are_checked() {
        assert_eq!(
            err("[home]\nnetworks = [\"10.0.0.0/8\"]\ncountries = [\"IN\", \"XZ\"]\n"),
            "config.toml:3: home.countries[1]: XZ is not an ISO 3166-1 alpha-2 code"
        );
        assert_err(
            &format!(
                "{HOME}[[group]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\nallow = [\"USA\"]\n"
            ),
            &["config.toml:6: group[0].allow[0]:", "two-letter"],
        );
    }

    #[test]
    fn groups_are_checked() {
        let group = |name: &str, net: &str| {
            format!("[[group]]\nname = \"{name}\"\nnetworks = [\"{net}\"]\n")
        };
        let overlap = format!(
            "{HOME}{}{}",
            group("phones", "10.0.0.0/8"),
            group("lab", "10.1.0.0/16")
        );
        assert_err(
            &overlap,
            &[
                "config.toml:8: group[1].networks[0]:",
                "10.1.0.0/16",
                "\"lab\"",
                "10.0.0.0/8",
                "\"phones\"",
                "group[0].networks[0], line 5",
            ],
        );
        let dup = format!(
            "{HOME}{}{}",
            group("a", "10.0.0.0/8"),
            group("a", "11.0.0.0/8")
        );
        assert_err(
            &dup,
            &[
                "config.toml:7: group[1].name:",
                "already used by group[0] on line 4",
            ],
        );
        assert_err(
            &format!("{HOME}{}", group("ungrouped", "10.0.0.0/8")),
            &["reserved"],
        );
        assert_err(
            &format!("{HOME}{}", group("Phones", "10.0.0.0/8")),
            &["group[0].name", "not a valid group name"],
        );
        assert_err(
            &format!("{HOME}{}", group(&"x".repeat(33), "10.0.0.0/8")),
            &["not a valid group name"],
        );
        assert_err(
            &format!("{HOME}[[group]]\nname = \"a\"\nnetworks = []\n"),
            &["group[0].networks: must list"],
        );

        let many = |n: usize| {
            let mut t = HOME.to_owned();
            for i in 0..n {
                t.push_str(&group(&format!("g{i}"), &format!("10.{i}.0.0/16")));
            }
            t
        };
        let c = parse(&many(MAX_GROUPS)).unwrap_or_else(|e| panic!("31 groups are fine: {e}"));
        assert_eq!(c.groups.len(), MAX_GROUPS);
        assert_err(
            &many(MAX_GROUPS + 1),
            &["group[31]", "32 groups defined; at most 31"],
        );
        // The same network twice inside one group is not an overlap between groups.
        let same = format!(
            "{HOME}[[group]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\", \"10.0.0.0/16\"]\n"
        );
        assert!(parse(&same).is_ok(), "overlap within one group is allowed");
    }

    #[test]
    fn geoip_sources_are_checked() {
        let dir = geo_dir();
        let text = format!(
            "{HOME}[geoip]\nsources = [\n  {{ format = \"tor\", path = \"geoip\" }},\n  {{ format = \"csv\", path = \"missing.csv\" }},\n]\n"
        );
        let msg = parse_in(dir.path(), &text)
            .expect_err("missing file")
            .to_string();
        assert!(
            msg.contains("config.toml:6: geoip.sources[1].path: GeoIP file"),
            "{msg}"
        );
        assert!(
            msg.contains("missing.csv") && msg.contains("No such file"),
            "{msg}"
        );
        let text =
            format!("{HOME}[geoip]\nsources = [{{ format = \"maxmind\", path = \"geoip\" }}]\n");
        let msg = parse_in(dir.path(), &text)
            .expect_err("bad format")
            .to_string();
        assert!(
            msg.contains("config.toml:4: geoip.sources[0].format: \"maxmind\" is not one of")
                && msg.contains("\"asn-csv\", \"iptoasn\", \"rir\", \"mmdb\""),
            "{msg}"
        );
    }

    #[test]
    fn every_geoip_format_spelling_parses() {
        let dir = geo_dir();
        for format in GeoFormat::ALL {
            let text = format!(
                "{HOME}[geoip]\nsources = [{{ format = \"{format}\", path = \"geoip\" }}]\n"
            );
            let c = parse_in(dir.path(), &text).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(c.geoip.sources[0].format, format, "{format} round-trips");
        }
        let names: Vec<&str> = GeoFormat::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["tor", "csv", "asn-csv", "iptoasn", "rir", "mmdb"]);
    }

    #[test]
    fn interfaces_metrics_flows_events_are_checked() {
        let iface = |body: &str| format!("{HOME}[[interface]]\n{body}\n");
        assert_err(
            &iface("name = \"eth0\"\nhook = \"tc\""),
            &["config.toml:5: interface[0].hook: \"tc\" is not one of"],
        );
        assert_err(
            &iface("name = \"eth0\"\nhook = \"tc-ingress\"\nmode = \"skb\""),
            &["config.toml:6: interface[0].mode: mode skb applies to xdp"],
        );
        assert!(
            parse(&iface(
                "name = \"eth0\"\nhook = \"tc-ingress\"\nmode = \"auto\""
            ))
            .is_ok(),
            "auto on tc is fine"
        );

        assert_err(
            &iface("name = \"eth0\"\nhook = \"xdp\"\nmode = \"fast\""),
            &["interface[0].mode", "\"fast\""],
        );
        assert_err(
            &iface("name = \"a-very-long-interface\"\nhook = \"xdp\""),
            &["interface[0].name", "not a valid interface name"],
        );
        assert_err(
            &iface("name = \"eth0\"\nhook = \"xdp\"\nnetns = \"../x\""),
            &["interface[0].netns", "namespace"],
        );
        assert_err(
            &format!(
                "{HOME}[[interface]]\nname = \"eth0\"\nhook = \"xdp\"\n[[interface]]\nname = \"eth0\"\nhook = \"xdp\"\n"
            ),
            &[
                "config.toml:7: interface[1].name:",
                "already listed on line 4",
            ],
        );
        assert_err(
            &format!("{HOME}[metrics]\nlisten = \"localhost\"\n"),
            &["config.toml:4: metrics.listen: \"localhost\" is not an address:port"],
        );
        let flows = |body: &str| format!("{HOME}[flows]\n{body}\n");
        assert_err(
            &flows("ring_bytes = 12288"),
            &["config.toml:4: flows.ring_bytes: 12288 is not a power of two"],
        );
        assert_err(
            &flows("ring_bytes = 2048"),
            &["flows.ring_bytes: 2048 is out of range"],
        );
        assert_err(
            &flows("ring_bytes = 8192\nwakeup_bytes = 8192"),
            &["config.toml:5: flows.wakeup_bytes: 8192 must be less than ring_bytes (8192)"],
        );
        assert_err(
            &flows("max_entries = 0"),
            &["flows.max_entries: 0 is out of range (must be 1..=16777216)"],
        );
        assert_err(&flows("max_entries = 16777217"), &["out of range"]);
        assert_err(
            &flows("update_interval_secs = 0"),
            &["flows.update_interval_secs"],
        );
        assert_err(&flows("update_bytes = -1"), &["flows.update_bytes"]);
        assert_err(
            &flows("idle_timeout_secs = 0"),
            &["flows.idle_timeout_secs"],
        );
        assert_err(&flows("wakeup_bytes = 0"), &["flows.wakeup_bytes"]);
        assert_err(
            &flows("track_unknown = 1"),
            &["flows.track_unknown: invalid type"],
        );
        assert_err(
            &format!("{HOME}[events]\nlog = \"\"\n"),
            &["config.toml:4: events.log: must not be empty"],
        );
        assert_err(
            &format!("{HOME}[pin]\ndir = \"bpf/exfilmon\"\n"),
            &["config.toml:4: pin.dir: must be an absolute path on a bpffs mount"],
        );
        assert_err(
            &format!("{HOME}[pin]\npath = \"/sys/fs/bpf/x\"\n"),
            &["config.toml:4", "unknown field `path`"],
        );
    }

    #[test]
    fn only_xdp_interfaces_can_be_mirror_ports() {
        let iface = |body: &str| format!("{HOME}[[interface]]\n{body}\n");
        assert_err(
            &iface("name = \"span0\"\nhook = \"tc-ingress\"\nmirror = true"),
            &["config.toml:6: interface[0].mirror: a mirror port is hooked with xdp"],
        );
        let c = parse(&iface(
            "name = \"span0\"\nhook = \"xdp\"\nmode = \"native\"\nmirror = true",
        ))
        .expect("a native xdp mirror");
        assert!(c.interfaces[0].mirror);
        assert!(
            !parse(&iface("name = \"eth0\"\nhook = \"xdp\""))
                .expect("plain xdp")
                .interfaces[0]
                .mirror,
            "mirror defaults to false"
        );
    }

    #[test]
    fn event_log_rotation_and_chain_settings_are_checked() {
        let events = |body: &str| format!("{HOME}[events]\nlog = \"e.jsonl\"\n{body}\n");
        assert_err(
            &events("max_bytes = 4095"),
            &["config.toml:5: events.max_bytes: 4095 must be 0 (no rotation) or at least 4096"],
        );
        assert_err(
            &events("max_bytes = -1"),
            &["config.toml:5: events.max_bytes: -1 must be 0 (no rotation) or at least 4096"],
        );
        assert_err(
            &events("max_bytes = \"100MiB\""),
            &["config.toml:5: events.max_bytes: invalid type"],
        );
        assert_err(
            &events("keep = 0"),
            &["config.toml:5: events.keep: 0 is out of range (must be 1..=1000)"],
        );
        assert_err(
            &events("keep = 1001"),
            &["config.toml:5: events.keep: 1001 is out of range (must be 1..=1000)"],
        );
        assert_err(
            &events("hash_chain = \"yes\""),
            &["config.toml:5: events.hash_chain: invalid type"],
        );
        assert_err(
            &events("rotate = true"),
            &["config.toml:5", "unknown field `rotate`"],
        );
    }

    #[test]
    fn event_log_rotation_can_be_left_to_logrotate() {
        let c = parse(&format!(
            "{HOME}[events]\nlog = \"e.jsonl\"\nmax_bytes = 0\nkeep = 1000\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.events.options.max_bytes, 0, "0: no rotation");
        assert_eq!(c.events.options.keep, 1000);
        let c = parse(&format!(
            "{HOME}[events]\nmax_bytes = 4096\nhash_chain = true\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.events.log, None, "settings without a log are valid");
        assert_eq!(
            (c.events.options.max_bytes, c.events.options.hash_chain),
            (4096, true)
        );
    }

    #[test]
    fn pinning_defaults_on_under_sys_fs_bpf() {
        let c = parse(HOME).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.pin, Pin::default());
        assert!(c.pin.enabled);
        assert_eq!(c.pin.dir, Path::new(DEFAULT_PIN_DIR));
        let off = parse(&format!(
            "{HOME}[pin]\nenabled = false\ndir = \"/sys/fs/bpf/site-a\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!off.pin.enabled);
        assert_eq!(off.pin.dir, Path::new("/sys/fs/bpf/site-a"));
    }

    #[test]
    fn metrics_server_settings_are_checked() {
        let c = parse(HOME).expect("valid");
        assert!(c.metrics.web.is_none());
        assert_eq!(c.metrics.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.metrics.header_timeout, DEFAULT_HEADER_TIMEOUT);
        let c = parse(&format!(
            "{HOME}[metrics]\nmax_connections = 1024\nheader_timeout_secs = 1\n"
        ))
        .expect("valid");
        assert_eq!(c.metrics.max_connections, 1024);
        assert_eq!(c.metrics.header_timeout, Duration::from_secs(1));
        assert_err(
            &format!("{HOME}[metrics]\nmax_connections = 0\n"),
            &["config.toml:4: metrics.max_connections: 0 is out of range (must be 1..=1024)"],
        );
        assert_err(
            &format!("{HOME}[metrics]\nheader_timeout_secs = 301\n"),
            &["config.toml:4: metrics.header_timeout_secs: 301 is out of range (must be 1..=300)"],
        );
        assert_err(
            &format!("{HOME}[metrics]\nweb_config = \"\"\n"),
            &["config.toml:4: metrics.web_config: "],
        );

        // The web config is read relative to the config file, and its errors name both.
        let dir = geo_dir();
        std::fs::write(dir.path().join("web.yml"), "basic_auth_users:\n  prom: x\n")
            .expect("write");
        let text = format!("{HOME}[metrics]\nweb_config = \"web.yml\"\n");
        let e = crate::error_chain(&parse_in(dir.path(), &text).expect_err("bad hash"));
        let want = format!(
            "{}: metrics.web_config: {}: basic_auth_users.prom: the password of \"prom\" is not a bcrypt hash",
            dir.path().join("config.toml:4").display(),
            dir.path().join("web.yml:2").display(),
        );
        assert!(e.starts_with(&want), "{e}");
        std::fs::write(dir.path().join("web.yml"), "").expect("write");
        let c = parse_in(dir.path(), &text).expect("an empty web config");
        assert_eq!(
            c.metrics.web.map(|w| w.path),
            Some(dir.path().join("web.yml"))
        );
        let e = parse_in(
            dir.path(),
            &format!("{HOME}[metrics]\nweb_config = \"none.yml\"\n"),
        )
        .expect_err("missing");
        assert!(
            e.to_string().contains("metrics.web_config: ")
                && e.to_string()
                    .contains("none.yml: cannot read the web config"),
            "{e}"
        );
    }

    #[test]
    fn check_interfaces_uses_sys_and_netns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path().join("sys");
        let netns = dir.path().join("netns");
        std::fs::create_dir_all(sys.join("eth0")).expect("mkdir");
        std::fs::create_dir_all(&netns).expect("mkdir");
        std::fs::write(netns.join("router"), "").expect("touch");
        let text = format!(
            "{HOME}[[interface]]\nname = \"eth0\"\nhook = \"xdp\"\n[[interface]]\nname = \"veth9\"\nhook = \"xdp\"\nnetns = \"router\"\n"
        );
        let mut c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        c.check_interfaces_under(&sys, &netns)
            .unwrap_or_else(|e| panic!("all present: {e}"));
        c.interfaces[0].name = "eth7".into();
        let msg = c
            .check_interfaces_under(&sys, &netns)
            .expect_err("eth7 missing")
            .to_string();
        assert!(
            msg.starts_with("config.toml:4: interface[0].name: interface \"eth7\" not found"),
            "{msg}"
        );
        c.interfaces[0].name = "eth0".into();
        c.interfaces[1].netns = Some("other".into());
        let msg = c
            .check_interfaces_under(&sys, &netns)
            .expect_err("netns missing")
            .to_string();
        assert!(
            msg.starts_with(
                "config.toml:7: interface[1].netns: network namespace \"other\" not found"
            ),
            "{msg}"
        );
    }

    #[test]
    fn load_reports_missing_file() {
        let msg = Config::load(Path::new("/nonexistent/exfilmon.toml"))
            .expect_err("missing")
            .to_string();
        assert!(
            msg.starts_with("/nonexistent/exfilmon.toml: cannot read config:"),
            "{msg}"
        );
    }

    #[test]
    fn ipfix_collectors_and_numbers_are_checked() {
        let dir = geo_dir();
        let ipfix = |body: &str| format!("{HOME}[ipfix]\n{body}\n");
        let c = parse_in(
            dir.path(),
            &ipfix("collectors = [\"192.0.2.9\", \"[2001:db8::9]:2055\"]\nobservation_domain = 7"),
        )
        .unwrap_or_else(|e| panic!("ipfix: {e}"));
        assert_eq!(
            c.ipfix.collectors,
            vec![
                "192.0.2.9:4739".parse().expect("addr"),
                "[2001:db8::9]:2055".parse().expect("addr")
            ],
            "a bare address takes the IPFIX port"
        );
        assert_eq!(c.ipfix.observation_domain, 7);
        assert_eq!(c.ipfix.enterprise_number, crate::ipfix::DOC_ENTERPRISE);
        assert_eq!(
            parse_in(dir.path(), HOME).expect("no [ipfix]").ipfix,
            crate::ipfix::Ipfix::default(),
            "no [ipfix]: no collectors"
        );
        assert_err(
            &ipfix("collectors = [\"192.0.2.9:4739\", \"collector.example\"]"),
            &["config.toml:4: ipfix.collectors[1]: \"collector.example\" is not an address:port"],
        );
        assert_err(
            &ipfix("collectors = [\"192.0.2.9\", \"192.0.2.9:4739\"]"),
            &["config.toml:4: ipfix.collectors[1]: 192.0.2.9:4739 is listed twice"],
        );
        assert_err(
            &ipfix("collectors = [\"0.0.0.0:4739\"]"),
            &["ipfix.collectors[0]: 0.0.0.0:4739: a collector needs a real address"],
        );
        assert_err(
            &ipfix("max_message_bytes = 100"),
            &["config.toml:4: ipfix.max_message_bytes: 100 is out of range (must be 512..=65000)"],
        );
        assert_err(
            &ipfix("template_refresh_secs = 0"),
            &["ipfix.template_refresh_secs"],
        );
        assert_err(
            &ipfix("enterprise_number = 0"),
            &["ipfix.enterprise_number"],
        );
        assert_err(&ipfix("collector = []"), &["unknown field `collector`"]);
    }
}
