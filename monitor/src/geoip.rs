//! Offline `GeoIP` data: the country and the autonomous system (ASN) of
//! address ranges, loaded from several file formats and merged; lookups; and
//! splitting ranges into CIDR prefixes (for the kernel's LPM trie).
//!
//! Formats (the TOML spelling in brackets):
//! - [`GeoFormat::Tor`] (`"tor"`): Debian `tor-geoipdb` files.
//!   `/usr/share/tor/geoip` has IPv4 rows `FIRST_INT,LAST_INT,CC` (decimal
//!   `u32`); `/usr/share/tor/geoip6` has IPv6 rows `first_addr,last_addr,CC`.
//!   Lines starting with `#` are comments. The form is detected per line.
//!   As Tor reads them, each file holds one family: a file named `geoip`
//!   (`geoip.*`) IPv4, `geoip6*` IPv6, any other that of its first range.
//! - [`GeoFormat::Csv`] (`"csv"`): ip-location-db / DB-IP lite layout,
//!   `first_ip,last_ip,country`, IPv4 and IPv6 mixed, fields possibly quoted,
//!   one record per line, `#` comments. A first line whose first field is
//!   not an address is taken as a header. A file whose name says `ipv4` and
//!   not `ipv6` (ip-location-db's `…-ipv4.csv`) may hold IPv4 ranges only,
//!   and the other way round.
//! - [`GeoFormat::AsnCsv`] (`"asn-csv"`): ip-location-db ASN layout,
//!   `first_ip,last_ip,asn[,organisation]`, otherwise as `csv`. Fields after
//!   the ASN are ignored, so an unquoted organisation with commas is fine.
//! - [`GeoFormat::IpToAsn`] (`"iptoasn"`): iptoasn.com `ip2asn-combined.tsv`,
//!   `ip2asn-v4.tsv`, `ip2asn-v6.tsv` and `ip2asn-v4-u32.tsv`: tab-separated
//!   `range_start range_end AS_number country_code AS_description`. AS 0 is
//!   "Not routed"; country `None`, `Unknown` or empty is unknown. A file
//!   named `ip2asn-v4*` (`ip2asn-v6*`) may hold IPv4 (IPv6) ranges only.
//! - [`GeoFormat::Rir`] (`"rir"`): RIR delegated(-extended) statistics,
//!   `registry|cc|type|start|value|date|status[|opaque-id[|...]]`, giving the
//!   registration country. For `ipv4` the value is an address count (not
//!   necessarily a power of two), for `ipv6` a prefix length. The version
//!   line, summary lines, comments, `asn` records, `available` and
//!   `reserved` records and records without a country are skipped.
//! - [`GeoFormat::Mmdb`] (`"mmdb"`): MaxMind DB files (GeoLite2-Country,
//!   GeoLite2-ASN, DB-IP country/ASN lite, ipinfo lite). Every network of the
//!   tree is read: the country is `country.iso_code`, else
//!   `registered_country.iso_code`, else `country_code` (ipinfo); the ASN is
//!   `autonomous_system_number`, else `asn` (ipinfo's `"AS13335"`). IPv4
//!   data in an IPv6 tree is read once, as IPv4: the aliases of the IPv4
//!   subtree (`::ffff:0:0/96`, `2002::/16`, Teredo) are skipped.
//!
//! Unknown countries (`??`, `--`, `ZZ`, empty) and AS 0 count as absent;
//! rows with neither a country nor an ASN are skipped. Text files are read a
//! line at a time; a line over [`MAX_LINE`] bytes is an error (it is not a
//! text file). MaxMind DB files are read into memory whole, as the format
//! needs random access.
//!
//! Precedence is per field: the country of an address comes from the first
//! source (in config order) that has a country for it, its ASN from the first
//! source that has an ASN for it.

mod mmdb;
mod ranges;

/// Range-list operations the kernel tables are built with too (`tables.rs`).
pub(crate) use ranges::{coalesce, merge_under};
#[cfg(test)]
mod tests;
mod text;

use std::{
    borrow::Cow,
    collections::BTreeSet,
    fs::File,
    io::{self, Read},
    net::{AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr},
    num::ParseIntError,
    path::{Path, PathBuf},
    time::SystemTime,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use maxminddb::MaxMindDbError;
use thiserror::Error;

use self::ranges::{Addr, PrefixIter, Ranges};
use crate::{
    config::{GeoFormat, GeoSource},
    country::{CountryCode, CountryError},
};

/// The longest line a text `GeoIP` file may have, in bytes. Real rows are
/// under 200 bytes; the limit keeps a binary file given as text from being
/// read into memory as one huge line.
pub const MAX_LINE: usize = 64 * 1024;

/// Why `GeoIP` data could not be loaded. Every variant names the file; those
/// about a row of a text file also name its line (1-based); MaxMind DB errors
/// carry the reader's error, which gives the byte offset where it has one.
#[derive(Debug, Error)]
pub enum GeoIpError {
    /// The file could not be opened (missing, permissions, ...).
    #[error("{}: cannot open GeoIP file: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading failed part-way (I/O error, a line that is not UTF-8 or is
    /// over [`MAX_LINE`] bytes).
    #[error("{}:{line}: cannot read GeoIP file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The line being read.
        line: u64,
        /// The OS or decoding error.
        #[source]
        source: io::Error,
    },
    /// Reading a MaxMind DB file into memory failed.
    #[error("{}: cannot read GeoIP file: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A row does not have the fields its format needs.
    #[error("{}:{line}: expected {expected}, found {found}", path.display())]
    FieldCount {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The fields the format has, e.g. `3 fields (first,last,country)`.
        expected: &'static str,
        /// How many fields the row has.
        found: usize,
    },
    /// A field is not an IP address.
    #[error("{}:{line}: {text:?} is not an IP address ({source})", path.display())]
    BadAddress {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The field.
        text: String,
        /// The parse error.
        #[source]
        source: AddrParseError,
    },
    /// A field in the integer IPv4 form is not a `u32`.
    #[error("{}:{line}: {text:?} is not an IPv4 address as a 32-bit integer ({source})", path.display())]
    BadInteger {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The field.
        text: String,
        /// The parse error.
        #[source]
        source: ParseIntError,
    },
    /// One address is IPv4 and the other IPv6 (or one integer, one address).
    #[error("{}:{line}: {first:?} and {last:?} are not of the same address family", path.display())]
    MixedFamilies {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The first field.
        first: String,
        /// The last field.
        last: String,
    },
    /// A range of one family where the file or record allows only the other.
    #[error("{}:{line}: {first}-{last} is an {found} range, but {why}", path.display())]
    WrongFamily {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The first address.
        first: IpAddr,
        /// The last address.
        last: IpAddr,
        /// `IPv4` or `IPv6`.
        found: &'static str,
        /// What allows only the other family.
        why: Cow<'static, str>,
    },
    /// The first address is after the last.
    #[error("{}:{line}: first address {first} is after last address {last}", path.display())]
    Reversed {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The first address.
        first: IpAddr,
        /// The last address.
        last: IpAddr,
    },
    /// The country field is not a two-letter code.
    #[error("{}:{line}: {source}", path.display())]
    BadCountry {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// What is wrong with it.
        #[source]
        source: CountryError,
    },
    /// The ASN field is not a 32-bit AS number (`13335` or `AS13335`).
    #[error("{}:{line}: {text:?} is not a 32-bit AS number ({source})", path.display())]
    BadAsn {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
        /// The field.
        text: String,
        /// The parse error (not a number, or over `u32::MAX`).
        #[source]
        source: ParseIntError,
    },
    /// A RIR record's type is not `asn`, `ipv4` or `ipv6`.
    #[error("{}:{line}: {text:?} is not a RIR record type (asn, ipv4, ipv6)", path.display())]
    BadRirType {
        /// The file.
        path: PathBuf,
        /// The record's line.
        line: u64,
        /// The type field.
        text: String,
    },
    /// A RIR record's value (address count or prefix length) is not a number.
    #[error("{}:{line}: {text:?} is not an address count or prefix length ({source})", path.display())]
    BadRirValue {
        /// The file.
        path: PathBuf,
        /// The record's line.
        line: u64,
        /// The value field.
        text: String,
        /// The parse error.
        #[source]
        source: ParseIntError,
    },
    /// A RIR `ipv4` record's count is zero or runs past `255.255.255.255`.
    #[error("{}:{line}: {count} addresses from {start} is not an IPv4 range (zero, or past 255.255.255.255)", path.display())]
    RirCount {
        /// The file.
        path: PathBuf,
        /// The record's line.
        line: u64,
        /// The first address.
        start: Ipv4Addr,
        /// The address count.
        count: u64,
    },
    /// A RIR `ipv6` record is not a prefix (length over 128, or host bits set).
    #[error("{}:{line}: {start}/{len} is not an IPv6 prefix (length over 128, or host bits set)", path.display())]
    RirPrefix {
        /// The file.
        path: PathBuf,
        /// The record's line.
        line: u64,
        /// The first address.
        start: Ipv6Addr,
        /// The prefix length.
        len: u32,
    },
    /// Two ranges in one file overlap.
    #[error(
        "{}:{line}: range {first}-{last} overlaps range {other_first}-{other_last} on line {other_line}",
        path.display()
    )]
    Overlap {
        /// The file.
        path: PathBuf,
        /// The later range's line.
        line: u64,
        /// The later range's first address.
        first: IpAddr,
        /// The later range's last address.
        last: IpAddr,
        /// The earlier range's line.
        other_line: u64,
        /// The earlier range's first address.
        other_first: IpAddr,
        /// The earlier range's last address.
        other_last: IpAddr,
    },
    /// The file is not a readable MaxMind DB (wrong format, truncated,
    /// corrupted search tree).
    #[error("{}: not a usable MaxMind DB file: {source}", path.display())]
    Mmdb {
        /// The file.
        path: PathBuf,
        /// The reader's error, with the byte offset where it has one.
        #[source]
        source: MaxMindDbError,
    },
    /// A MaxMind DB record cannot be decoded, or holds a bad country code or
    /// AS number.
    #[error("{}: MaxMind DB record of {network}: {source}", path.display())]
    MmdbRecord {
        /// The file.
        path: PathBuf,
        /// The network the record belongs to.
        network: IpNet,
        /// The decoding error, with the byte offset and field path.
        #[source]
        source: MaxMindDbError,
    },
}

/// What is known about an address: its country and its autonomous system.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Location {
    /// The country, if a source has one.
    pub country: Option<CountryCode>,
    /// The AS number, if a source has one (never 0).
    pub asn: Option<u32>,
}

impl Location {
    /// Whether the country or the ASN is known.
    #[must_use]
    pub fn is_known(self) -> bool {
        self.country.is_some() || self.asn.is_some()
    }
}

/// What was loaded from one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: GeoFormat,
    /// IPv4 rows (MaxMind DB: networks) with a known country or ASN.
    pub ranges_v4: usize,
    /// IPv6 rows (MaxMind DB: networks) with a known country or ASN.
    pub ranges_v6: usize,
    /// IPv4 rows with an ASN.
    pub asn_ranges_v4: usize,
    /// IPv6 rows with an ASN.
    pub asn_ranges_v6: usize,
    /// The file's modification time, where the OS gives one.
    pub modified: Option<SystemTime>,
    /// When the data was built: a MaxMind DB's `build_epoch`; `None` for
    /// other formats.
    pub built: Option<SystemTime>,
}

/// Country and ASN data: per field and address family, sorted and
/// non-overlapping address ranges, adjacent ranges of equal value coalesced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoDb {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    /// The sources, in precedence order.
    pub sources: Vec<SourceInfo>,
}

impl GeoDb {
    /// Loads and merges `sources`. Per field (country, ASN), where ranges of
    /// different sources overlap the earlier source wins; later sources only
    /// fill gaps.
    ///
    /// # Errors
    ///
    /// The first problem found in any file, naming the file and the line (or
    /// for MaxMind DB files the reader's error).
    pub fn load(sources: &[GeoSource]) -> Result<GeoDb, GeoIpError> {
        let mut db = GeoDb::default();
        for source in sources {
            db.add(load_file(&source.path, source.format)?);
        }
        Ok(db.coalesced())
    }

    /// Fuzzing support: [`GeoDb::load`] of one source whose file holds `bytes`, named
    /// `path` in errors (nothing is opened).
    ///
    /// # Errors
    ///
    /// As [`GeoDb::load`].
    #[doc(hidden)]
    pub fn parse_bytes(path: &Path, format: GeoFormat, bytes: &[u8]) -> Result<GeoDb, GeoIpError> {
        let mut db = GeoDb::default();
        db.add(read_source(path, format, bytes, None)?);
        Ok(db.coalesced())
    }

    /// Adds a source below the ones already added.
    fn add(&mut self, (file, info): (FileRanges, SourceInfo)) {
        self.v4.merge_under(file.v4);
        self.v6.merge_under(file.v6);
        self.sources.push(info);
    }

    /// Joins adjacent ranges of equal value, once every source is in.
    fn coalesced(mut self) -> Self {
        self.v4.coalesce();
        self.v6.coalesce();
        self
    }

    /// The country and ASN of `ip`. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) are looked up as IPv4.
    #[must_use]
    pub fn lookup(&self, ip: IpAddr) -> Location {
        match ip {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.lookup(u32::from(v4)),
                None => self.v6.lookup(u128::from(a)),
            },
        }
    }

    /// The IPv4 ranges `(first, last, location)` where the country or the
    /// ASN is known: sorted, disjoint, adjacent equal locations joined.
    #[must_use]
    pub fn locations_v4(&self) -> Vec<(u32, u32, Location)> {
        self.v4.locations()
    }

    /// The IPv6 ranges `(first, last, location)` where the country or the
    /// ASN is known: sorted, disjoint, adjacent equal locations joined.
    #[must_use]
    pub fn locations_v6(&self) -> Vec<(u128, u128, Location)> {
        self.v6.locations()
    }

    /// The IPv4 country ranges `(first, last, country)`, sorted and disjoint.
    #[must_use]
    pub fn ranges_v4(&self) -> &[(u32, u32, CountryCode)] {
        &self.v4.country
    }

    /// The IPv6 country ranges `(first, last, country)`, sorted and disjoint.
    #[must_use]
    pub fn ranges_v6(&self) -> &[(u128, u128, CountryCode)] {
        &self.v6.country
    }

    /// The IPv4 ASN ranges `(first, last, asn)`, sorted and disjoint.
    #[must_use]
    pub fn asn_ranges_v4(&self) -> &[(u32, u32, u32)] {
        &self.v4.asn
    }

    /// The IPv6 ASN ranges `(first, last, asn)`, sorted and disjoint.
    #[must_use]
    pub fn asn_ranges_v6(&self) -> &[(u128, u128, u32)] {
        &self.v6.asn
    }

    /// Number of IPv4 country ranges (after merging and coalescing).
    #[must_use]
    pub fn len_v4(&self) -> usize {
        self.v4.country.len()
    }

    /// Number of IPv6 country ranges (after merging and coalescing).
    #[must_use]
    pub fn len_v6(&self) -> usize {
        self.v6.country.len()
    }

    /// Whether there are no ranges at all, of either field.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// [`GeoDb::locations_v4`] as the minimal set of CIDR prefixes, in
    /// address order.
    pub fn prefixes_v4(&self) -> impl Iterator<Item = (Ipv4Net, Location)> {
        self.locations_v4()
            .into_iter()
            .flat_map(|(first, last, loc)| {
                range_to_prefixes_v4(first, last).map(move |net| (net, loc))
            })
    }

    /// [`GeoDb::locations_v6`] as the minimal set of CIDR prefixes, in
    /// address order.
    pub fn prefixes_v6(&self) -> impl Iterator<Item = (Ipv6Net, Location)> {
        self.locations_v6()
            .into_iter()
            .flat_map(|(first, last, loc)| {
                range_to_prefixes_v6(first, last).map(move |net| (net, loc))
            })
    }

    /// Number of IPv4 prefixes [`GeoDb::prefixes_v4`] yields.
    #[must_use]
    pub fn prefix_count_v4(&self) -> usize {
        self.prefixes_v4().count()
    }

    /// Number of IPv6 prefixes [`GeoDb::prefixes_v6`] yields.
    #[must_use]
    pub fn prefix_count_v6(&self) -> usize {
        self.prefixes_v6().count()
    }

    /// Every country that occurs in the data.
    #[must_use]
    pub fn countries(&self) -> BTreeSet<CountryCode> {
        values(&self.v4.country)
            .chain(values(&self.v6.country))
            .collect()
    }

    /// Every AS number that occurs in the data.
    #[must_use]
    pub fn asns(&self) -> BTreeSet<u32> {
        values(&self.v4.asn).chain(values(&self.v6.asn)).collect()
    }
}

fn values<T, V: Copy>(ranges: &[(T, T, V)]) -> impl Iterator<Item = V> + '_ {
    ranges.iter().map(|r| r.2)
}

/// Splits `[first, last]` into the minimal set of IPv4 CIDR prefixes, in
/// address order. Empty if `first > last`.
pub fn range_to_prefixes_v4(first: u32, last: u32) -> impl Iterator<Item = Ipv4Net> {
    PrefixIter::new(first, last).filter_map(|(start, len)| {
        Ipv4Net::new(Ipv4Addr::from(start), u8::try_from(len).ok()?).ok()
    })
}

/// Splits `[first, last]` into the minimal set of IPv6 CIDR prefixes, in
/// address order. Empty if `first > last`.
pub fn range_to_prefixes_v6(first: u128, last: u128) -> impl Iterator<Item = Ipv6Net> {
    PrefixIter::new(first, last).filter_map(|(start, len)| {
        Ipv6Net::new(Ipv6Addr::from(start), u8::try_from(len).ok()?).ok()
    })
}

/// One row as read: a range, what it says, and where.
#[derive(Clone, Copy, Debug)]
struct Row<T> {
    first: T,
    last: T,
    loc: Location,
    /// The 1-based line (0 for MaxMind DB networks, which cannot overlap).
    line: u64,
}

impl<T> Row<T> {
    /// A MaxMind DB network (no line).
    fn network(first: T, last: T, loc: Location) -> Self {
        Row {
            first,
            last,
            loc,
            line: 0,
        }
    }
}

/// The rows of one file with a known country or ASN.
#[derive(Default)]
struct Rows {
    v4: Vec<Row<u32>>,
    v6: Vec<Row<u128>>,
    /// The one family the whole file may hold, when its name or format says so.
    only: Option<OnlyFamily>,
    /// Set for formats whose files hold one family each (Tor's): the first range's family
    /// becomes `only` for the rest of the file.
    first_decides: Option<&'static str>,
}

/// A parsed `first,last` pair.
#[derive(Clone, Copy)]
enum Parsed {
    V4(u32, u32),
    V6(u128, u128),
}

/// Where one file may hold ranges of a single family only.
#[derive(Clone)]
struct OnlyFamily {
    v4: bool,
    why: Cow<'static, str>,
}

impl OnlyFamily {
    /// The family a file's name gives, from `(name prefix or part, IPv4, why)` rules: the
    /// first rule whose text the lowercased file name starts with (`prefix`) or contains.
    fn by_name(path: &Path, rules: &[(NameRule, bool, &'static str)]) -> Option<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        rules.iter().find_map(|&(rule, v4, why)| {
            rule.matches(&name).then(|| OnlyFamily {
                v4,
                why: why.into(),
            })
        })
    }
}

/// How a file-name rule of [`OnlyFamily::by_name`] matches.
#[derive(Clone, Copy)]
enum NameRule {
    /// The name starts with this text.
    Prefix(&'static str),
    /// The name is this text, or this text and an extension.
    Stem(&'static str),
    /// The name contains the first text and not the second.
    Contains(&'static str, &'static str),
}

impl NameRule {
    fn matches(self, name: &str) -> bool {
        match self {
            NameRule::Prefix(p) => name.starts_with(p),
            NameRule::Stem(s) => name
                .strip_prefix(s)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.')),
            NameRule::Contains(yes, no) => name.contains(yes) && !name.contains(no),
        }
    }
}

/// The ranges of one file, per family and field.
struct FileRanges {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

impl Rows {
    /// Checks `parsed` (order, family) and keeps it if `loc` is known.
    fn push(
        &mut self,
        path: &Path,
        line: u64,
        parsed: Parsed,
        loc: Location,
        only: Option<&OnlyFamily>,
    ) -> Result<(), GeoIpError> {
        let v4 = matches!(parsed, Parsed::V4(..));
        if self.only.is_none()
            && let Some(format) = self.first_decides
        {
            self.only = Some(OnlyFamily {
                v4,
                why: format!(
                    "{format} holds one family, and its first range (line {line}) is {}",
                    if v4 { "IPv4" } else { "IPv6" }
                )
                .into(),
            });
        }
        let only = only.or(self.only.as_ref());
        let allowed = only.map(|o| (o.v4 == v4, o.why.clone()));
        match parsed {
            Parsed::V4(first, last) => {
                check_range(path, line, first, last, allowed)?;
                if loc.is_known() {
                    self.v4.push(Row {
                        first,
                        last,
                        loc,
                        line,
                    });
                }
            }
            Parsed::V6(first, last) => {
                check_range(path, line, first, last, allowed)?;
                if loc.is_known() {
                    self.v6.push(Row {
                        first,
                        last,
                        loc,
                        line,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Rejects a reversed range, and one of a family that `allowed` (whether
/// this family is allowed, and why not) forbids.
fn check_range<T: Addr>(
    path: &Path,
    line: u64,
    first: T,
    last: T,
    allowed: Option<(bool, Cow<'static, str>)>,
) -> Result<(), GeoIpError> {
    if first > last {
        return Err(GeoIpError::Reversed {
            path: path.to_owned(),
            line,
            first: first.to_ip(),
            last: last.to_ip(),
        });
    }
    if let Some((false, why)) = allowed {
        return Err(GeoIpError::WrongFamily {
            path: path.to_owned(),
            line,
            first: first.to_ip(),
            last: last.to_ip(),
            found: T::FAMILY,
            why,
        });
    }
    Ok(())
}

fn load_file(path: &Path, format: GeoFormat) -> Result<(FileRanges, SourceInfo), GeoIpError> {
    let file = File::open(path).map_err(|source| GeoIpError::Open {
        path: path.to_owned(),
        source,
    })?;
    let modified = file.metadata().and_then(|m| m.modified()).ok();
    read_source(path, format, file, modified)
}

/// Reads one source's contents from `reader`; `path` names it in errors (and, for
/// `iptoasn`, tells the family its name allows).
fn read_source(
    path: &Path,
    format: GeoFormat,
    reader: impl Read,
    modified: Option<SystemTime>,
) -> Result<(FileRanges, SourceInfo), GeoIpError> {
    let mut built = None;
    let rows = match format {
        GeoFormat::Tor => text::read_tor(path, reader)?,
        GeoFormat::Csv => text::read_csv(path, reader, text::country_csv_row)?,
        GeoFormat::AsnCsv => text::read_csv(path, reader, text::asn_csv_row)?,
        GeoFormat::IpToAsn => text::read_iptoasn(path, reader)?,
        GeoFormat::Rir => text::read_rir(path, reader)?,
        GeoFormat::Mmdb => {
            let (rows, epoch) = mmdb::read_mmdb(path, reader)?;
            built = epoch;
            rows
        }
    };
    let info = SourceInfo {
        path: path.to_owned(),
        format,
        ranges_v4: rows.v4.len(),
        ranges_v6: rows.v6.len(),
        asn_ranges_v4: rows.v4.iter().filter(|r| r.loc.asn.is_some()).count(),
        asn_ranges_v6: rows.v6.iter().filter(|r| r.loc.asn.is_some()).count(),
        modified,
        built,
    };
    let ranges = FileRanges {
        v4: check_disjoint(path, rows.v4)?,
        v6: check_disjoint(path, rows.v6)?,
    };
    Ok((ranges, info))
}

/// Sorts one file's rows, rejects overlaps (naming both lines), and splits
/// them into the per-field ranges.
fn check_disjoint<T: Addr>(path: &Path, mut rows: Vec<Row<T>>) -> Result<Ranges<T>, GeoIpError> {
    rows.sort_unstable_by_key(|r| (r.first, r.line));
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.first <= a.last {
            // Report on the later line of the two.
            let (early, late) = if a.line < b.line { (a, b) } else { (b, a) };
            return Err(GeoIpError::Overlap {
                path: path.to_owned(),
                line: late.line,
                first: late.first.to_ip(),
                last: late.last.to_ip(),
                other_line: early.line,
                other_first: early.first.to_ip(),
                other_last: early.last.to_ip(),
            });
        }
    }
    let mut ranges = Ranges {
        country: Vec::new(),
        asn: Vec::new(),
    };
    for r in rows {
        if let Some(cc) = r.loc.country {
            ranges.country.push((r.first, r.last, cc));
        }
        if let Some(asn) = r.loc.asn {
            ranges.asn.push((r.first, r.last, asn));
        }
    }
    Ok(ranges)
}
