//! Offline `GeoIP` country data: loading Tor and CSV range files, lookups, and
//! splitting ranges into CIDR prefixes (for the kernel's LPM trie).
//!
//! Formats:
//! - [`GeoFormat::Tor`]: Debian `tor-geoipdb` files. `/usr/share/tor/geoip`
//!   has IPv4 rows `FIRST_INT,LAST_INT,CC` (decimal `u32`);
//!   `/usr/share/tor/geoip6` has IPv6 rows `first_addr,last_addr,CC`. Lines
//!   starting with `#` are comments. The form is detected per line.
//! - [`GeoFormat::Csv`]: ip-location-db / DB-IP lite layout,
//!   `first_ip,last_ip,country`, IPv4 and IPv6 mixed, fields possibly quoted.
//!   A first line whose first field is not an address is taken as a header.
//!
//! Rows whose country is unknown (`??`, `--`, `ZZ`, empty) are skipped.

use std::{
    collections::BTreeSet,
    fmt,
    fs::File,
    io::{self, BufRead, BufReader},
    net::{AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr},
    num::ParseIntError,
    path::{Path, PathBuf},
    time::SystemTime,
};

use ipnet::{Ipv4Net, Ipv6Net};
use thiserror::Error;

use crate::{
    config::{GeoFormat, GeoSource},
    country::{CountryCode, CountryError},
};

/// Why `GeoIP` data could not be loaded. Every variant names the file; those
/// about a row also name its line (1-based).
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
    /// Reading failed part-way (I/O error, or a line that is not UTF-8).
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
    /// The CSV reader failed (bad quoting, invalid UTF-8, I/O).
    #[error("{}:{line}: bad CSV: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The line where the error was found.
        line: u64,
        /// The CSV error.
        #[source]
        source: csv::Error,
    },
    /// A row does not have exactly three fields.
    #[error("{}:{line}: expected 3 fields (first,last,country), found {found}", path.display())]
    FieldCount {
        /// The file.
        path: PathBuf,
        /// The row's line.
        line: u64,
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
}

/// What is known about an address. (Provisional: replaced by the ASN-aware loader.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Location {
    /// The country.
    pub country: Option<CountryCode>,
    /// The autonomous system number.
    pub asn: Option<u32>,
}

/// What was loaded from one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: GeoFormat,
    /// IPv4 rows with a known country in the file.
    pub ranges_v4: usize,
    /// IPv6 rows with a known country in the file.
    pub ranges_v6: usize,
    /// The file's modification time, where the OS gives one.
    pub modified: Option<SystemTime>,
}

/// Country data: sorted, non-overlapping address ranges. Adjacent ranges of
/// the same country are coalesced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoDb {
    v4: Vec<(u32, u32, CountryCode)>,
    v6: Vec<(u128, u128, CountryCode)>,
    /// The sources, in precedence order.
    pub sources: Vec<SourceInfo>,
}

impl GeoDb {
    /// Loads and merges `sources`. Where ranges of different sources overlap
    /// the earlier source wins; later sources only fill gaps.
    ///
    /// # Errors
    ///
    /// The first problem found in any file, naming the file and line.
    pub fn load(sources: &[GeoSource]) -> Result<GeoDb, GeoIpError> {
        let mut db = GeoDb::default();
        for source in sources {
            let (file, info) = load_file(&source.path, source.format)?;
            db.v4 = merge_under(db.v4, file.v4);
            db.v6 = merge_under(db.v6, file.v6);
            db.sources.push(info);
        }
        coalesce(&mut db.v4);
        coalesce(&mut db.v6);
        Ok(db)
    }

    /// The country of `ip`, if any range holds it. IPv4-mapped IPv6
    /// addresses (`::ffff:a.b.c.d`) are looked up as IPv4.
    #[must_use]
    pub fn lookup(&self, ip: IpAddr) -> Option<CountryCode> {
        match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => find(&self.v4, u32::from(v4)),
                None => find(&self.v6, u128::from(a)),
            },
        }
    }

    /// Locations of IPv4 ranges, sorted and disjoint.
    #[must_use]
    pub fn locations_v4(&self) -> Vec<(u32, u32, Location)> {
        self.v4
            .iter()
            .map(|&(a, b, cc)| {
                (
                    a,
                    b,
                    Location {
                        country: Some(cc),
                        asn: None,
                    },
                )
            })
            .collect()
    }

    /// Locations of IPv6 ranges, sorted and disjoint.
    #[must_use]
    pub fn locations_v6(&self) -> Vec<(u128, u128, Location)> {
        self.v6
            .iter()
            .map(|&(a, b, cc)| {
                (
                    a,
                    b,
                    Location {
                        country: Some(cc),
                        asn: None,
                    },
                )
            })
            .collect()
    }

    /// Every AS number in the data.
    #[must_use]
    pub fn asns(&self) -> BTreeSet<u32> {
        BTreeSet::new()
    }

    /// The IPv4 ranges `(first, last, country)`, sorted and disjoint.
    #[must_use]
    pub fn ranges_v4(&self) -> &[(u32, u32, CountryCode)] {
        &self.v4
    }

    /// The IPv6 ranges `(first, last, country)`, sorted and disjoint.
    #[must_use]
    pub fn ranges_v6(&self) -> &[(u128, u128, CountryCode)] {
        &self.v6
    }

    /// Number of IPv4 ranges (after merging and coalescing).
    #[must_use]
    pub fn len_v4(&self) -> usize {
        self.v4.len()
    }

    /// Number of IPv6 ranges (after merging and coalescing).
    #[must_use]
    pub fn len_v6(&self) -> usize {
        self.v6.len()
    }

    /// Whether there are no ranges at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Every IPv4 range as the minimal set of CIDR prefixes, in address order.
    pub fn prefixes_v4(&self) -> impl Iterator<Item = (Ipv4Net, CountryCode)> + '_ {
        self.v4.iter().flat_map(|&(first, last, cc)| {
            range_to_prefixes_v4(first, last).map(move |net| (net, cc))
        })
    }

    /// Every IPv6 range as the minimal set of CIDR prefixes, in address order.
    pub fn prefixes_v6(&self) -> impl Iterator<Item = (Ipv6Net, CountryCode)> + '_ {
        self.v6.iter().flat_map(|&(first, last, cc)| {
            range_to_prefixes_v6(first, last).map(move |net| (net, cc))
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
        self.v4
            .iter()
            .map(|r| r.2)
            .chain(self.v6.iter().map(|r| r.2))
            .collect()
    }
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

/// Unsigned address integers (`u32` for IPv4, `u128` for IPv6).
trait Addr: Copy + Ord + fmt::Debug {
    const BITS: u32;
    fn checked_inc(self) -> Option<Self>;
    fn dec(self) -> Self;
    fn trailing_zeros_(self) -> u32;
    /// `last - self` for `self <= last`; the number of addresses minus one.
    fn span_to(self, last: Self) -> Self;
    /// The largest `k` with `2^k - 1 <= span`.
    fn log2_size(span: Self) -> u32;
    /// `self | (2^k - 1)`, for `k <= BITS`.
    fn or_low_bits(self, k: u32) -> Self;
    fn to_ip(self) -> IpAddr;
}

macro_rules! impl_addr {
    ($t:ty, $ip:ty) => {
        impl Addr for $t {
            const BITS: u32 = <$t>::BITS;
            fn checked_inc(self) -> Option<Self> {
                self.checked_add(1)
            }
            fn dec(self) -> Self {
                self.saturating_sub(1)
            }
            fn trailing_zeros_(self) -> u32 {
                self.trailing_zeros()
            }
            fn span_to(self, last: Self) -> Self {
                last.saturating_sub(self)
            }
            fn log2_size(span: Self) -> u32 {
                match span.checked_add(1) {
                    None => Self::BITS,
                    Some(n) => Self::BITS - 1 - n.leading_zeros(),
                }
            }
            fn or_low_bits(self, k: u32) -> Self {
                if k >= Self::BITS {
                    <$t>::MAX
                } else {
                    self | ((1 << k) - 1)
                }
            }
            fn to_ip(self) -> IpAddr {
                IpAddr::from(<$ip>::from(self))
            }
        }
    };
}
impl_addr!(u32, Ipv4Addr);
impl_addr!(u128, Ipv6Addr);

/// Yields `(start, prefix_len)` of the minimal CIDR cover of `[next, last]`.
struct PrefixIter<T> {
    next: Option<T>,
    last: T,
}

impl<T: Addr> PrefixIter<T> {
    fn new(first: T, last: T) -> Self {
        PrefixIter {
            next: (first <= last).then_some(first),
            last,
        }
    }
}

impl<T: Addr> Iterator for PrefixIter<T> {
    type Item = (T, u32);

    fn next(&mut self) -> Option<(T, u32)> {
        let cur = self.next?;
        // The block size 2^k is limited by the alignment of `cur` and by the
        // addresses left; `trailing_zeros` of 0 is BITS (the whole space).
        let k = cur
            .trailing_zeros_()
            .min(T::log2_size(cur.span_to(self.last)));
        let end = cur.or_low_bits(k);
        self.next = if end >= self.last {
            None
        } else {
            end.checked_inc()
        };
        Some((cur, T::BITS - k))
    }
}

fn find<T: Addr>(ranges: &[(T, T, CountryCode)], x: T) -> Option<CountryCode> {
    let idx = ranges.partition_point(|r| r.0 <= x);
    let r = ranges.get(idx.checked_sub(1)?)?;
    (x <= r.1).then_some(r.2)
}

/// Merges `new` (sorted, disjoint) under `acc` (sorted, disjoint): the parts
/// of `new` not covered by `acc` are added.
fn merge_under<T: Addr>(
    mut acc: Vec<(T, T, CountryCode)>,
    new: Vec<(T, T, CountryCode)>,
) -> Vec<(T, T, CountryCode)> {
    if acc.is_empty() {
        return new;
    }
    let mut pieces = Vec::new();
    for (first, last, cc) in new {
        let mut cursor = Some(first);
        let start = acc.partition_point(|r| r.1 < first);
        for &(a_first, a_last, _) in &acc[start..] {
            let Some(cur) = cursor else { break };
            if a_first > last {
                break;
            }
            if a_first > cur {
                pieces.push((cur, a_first.dec(), cc));
            }
            cursor = a_last.checked_inc().filter(|&c| c <= last);
        }
        if let Some(cur) = cursor
            && cur <= last
        {
            pieces.push((cur, last, cc));
        }
    }
    acc.extend(pieces);
    acc.sort_unstable_by_key(|r| r.0);
    acc
}

/// Joins adjacent ranges of the same country.
fn coalesce<T: Addr>(ranges: &mut Vec<(T, T, CountryCode)>) {
    ranges.dedup_by(|next, prev| {
        if prev.2 == next.2 && prev.1.checked_inc() == Some(next.0) {
            prev.1 = next.1;
            true
        } else {
            false
        }
    });
}

/// The rows of one file, each family sorted and checked for overlaps.
#[derive(Default)]
struct FileRanges {
    v4: Vec<(u32, u32, CountryCode)>,
    v6: Vec<(u128, u128, CountryCode)>,
}

/// Rows as read, with line numbers.
#[derive(Default)]
struct Rows {
    v4: Vec<(u32, u32, CountryCode, u64)>,
    v6: Vec<(u128, u128, CountryCode, u64)>,
}

enum Parsed {
    V4(u32, u32),
    V6(u128, u128),
}

fn load_file(path: &Path, format: GeoFormat) -> Result<(FileRanges, SourceInfo), GeoIpError> {
    let file = File::open(path).map_err(|source| GeoIpError::Open {
        path: path.to_owned(),
        source,
    })?;
    let modified = file.metadata().and_then(|m| m.modified()).ok();
    let rows = match format {
        GeoFormat::Tor => read_tor(path, file)?,
        GeoFormat::Csv => read_csv(path, file)?,
    };
    let info = SourceInfo {
        path: path.to_owned(),
        format,
        ranges_v4: rows.v4.len(),
        ranges_v6: rows.v6.len(),
        modified,
    };
    let ranges = FileRanges {
        v4: check_disjoint(path, rows.v4)?,
        v6: check_disjoint(path, rows.v6)?,
    };
    Ok((ranges, info))
}

fn read_tor(path: &Path, file: File) -> Result<Rows, GeoIpError> {
    let mut reader = BufReader::new(file);
    let mut rows = Rows::default();
    let mut buf = String::new();
    let mut line = 0u64;
    loop {
        line += 1;
        buf.clear();
        let n = reader
            .read_line(&mut buf)
            .map_err(|source| GeoIpError::Read {
                path: path.to_owned(),
                line,
                source,
            })?;
        if n == 0 {
            return Ok(rows);
        }
        let text = buf.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = text.split(',').collect();
        push_row(path, line, &fields, &mut rows)?;
    }
}

fn read_csv(path: &Path, file: File) -> Result<Rows, GeoIpError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(BufReader::new(file));
    let mut rows = Rows::default();
    let mut record = csv::StringRecord::new();
    let mut first_record = true;
    let mut line = 0u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(rows),
            Ok(true) => {}
            Err(source) => {
                let line = source.position().map_or(line + 1, csv::Position::line);
                return Err(GeoIpError::Csv {
                    path: path.to_owned(),
                    line,
                    source,
                });
            }
        }
        line = record.position().map_or(line + 1, csv::Position::line);
        let fields: Vec<&str> = record.iter().collect();
        if std::mem::take(&mut first_record)
            && fields.first().is_some_and(|f| parse_addr(f).is_none())
        {
            continue; // a header line
        }
        push_row(path, line, &fields, &mut rows)?;
    }
}

/// An address field: a decimal `u32` (Tor's IPv4 form) or an IP address.
/// `None` if it is neither; the caller reports the precise error.
fn parse_addr(text: &str) -> Option<IpAddr> {
    if is_integer_form(text) {
        text.parse::<u32>()
            .ok()
            .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
    } else {
        text.parse().ok()
    }
}

fn is_integer_form(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn push_row(path: &Path, line: u64, fields: &[&str], rows: &mut Rows) -> Result<(), GeoIpError> {
    let &[first, last, country] = fields else {
        return Err(GeoIpError::FieldCount {
            path: path.to_owned(),
            line,
            found: fields.len(),
        });
    };
    let (first, last, country) = (first.trim(), last.trim(), country.trim());
    let parsed = parse_pair(path, line, first, last)?;
    let cc = CountryCode::parse_data(country).map_err(|source| GeoIpError::BadCountry {
        path: path.to_owned(),
        line,
        source,
    })?;
    let reversed = |a: IpAddr, b: IpAddr| GeoIpError::Reversed {
        path: path.to_owned(),
        line,
        first: a,
        last: b,
    };
    match parsed {
        Parsed::V4(a, b) if a > b => Err(reversed(a.to_ip(), b.to_ip())),
        Parsed::V6(a, b) if a > b => Err(reversed(a.to_ip(), b.to_ip())),
        Parsed::V4(a, b) => {
            if let Some(cc) = cc {
                rows.v4.push((a, b, cc, line));
            }
            Ok(())
        }
        Parsed::V6(a, b) => {
            if let Some(cc) = cc {
                rows.v6.push((a, b, cc, line));
            }
            Ok(())
        }
    }
}

fn parse_pair(path: &Path, line: u64, first: &str, last: &str) -> Result<Parsed, GeoIpError> {
    let mixed = || GeoIpError::MixedFamilies {
        path: path.to_owned(),
        line,
        first: first.to_owned(),
        last: last.to_owned(),
    };
    match (is_integer_form(first), is_integer_form(last)) {
        (true, true) => Ok(Parsed::V4(
            parse_int(path, line, first)?,
            parse_int(path, line, last)?,
        )),
        (false, false) => match (parse_ip(path, line, first)?, parse_ip(path, line, last)?) {
            (IpAddr::V4(a), IpAddr::V4(b)) => Ok(Parsed::V4(a.into(), b.into())),
            (IpAddr::V6(a), IpAddr::V6(b)) => Ok(Parsed::V6(a.into(), b.into())),
            _ => Err(mixed()),
        },
        _ => {
            // Report a field that is neither form before calling it mixed.
            for f in [first, last] {
                if is_integer_form(f) {
                    parse_int(path, line, f)?;
                } else {
                    parse_ip(path, line, f)?;
                }
            }
            Err(mixed())
        }
    }
}

fn parse_int(path: &Path, line: u64, text: &str) -> Result<u32, GeoIpError> {
    text.parse().map_err(|source| GeoIpError::BadInteger {
        path: path.to_owned(),
        line,
        text: text.to_owned(),
        source,
    })
}

fn parse_ip(path: &Path, line: u64, text: &str) -> Result<IpAddr, GeoIpError> {
    text.parse().map_err(|source| GeoIpError::BadAddress {
        path: path.to_owned(),
        line,
        text: text.to_owned(),
        source,
    })
}

/// Sorts one file's rows and rejects overlaps, naming both lines.
fn check_disjoint<T: Addr>(
    path: &Path,
    mut rows: Vec<(T, T, CountryCode, u64)>,
) -> Result<Vec<(T, T, CountryCode)>, GeoIpError> {
    rows.sort_unstable_by_key(|r| (r.0, r.3));
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.0 <= a.1 {
            // Report on the later line of the two.
            let (early, late) = if a.3 < b.3 { (a, b) } else { (b, a) };
            return Err(GeoIpError::Overlap {
                path: path.to_owned(),
                line: late.3,
                first: late.0.to_ip(),
                last: late.1.to_ip(),
                other_line: early.3,
                other_first: early.0.to_ip(),
                other_last: early.1.to_ip(),
            });
        }
    }
    Ok(rows.into_iter().map(|(a, b, cc, _)| (a, b, cc)).collect())
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use proptest::prelude::*;

    use super::*;

    fn cc(s: &str) -> CountryCode {
        CountryCode::parse_data(s).expect("valid").expect("known")
    }

    fn write(dir: &Path, name: &str, text: &str) -> GeoSource {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write sample");
        let format = if Path::new(name).extension().is_some_and(|e| e == "csv") {
            GeoFormat::Csv
        } else {
            GeoFormat::Tor
        };
        GeoSource { format, path }
    }

    fn load_err(name: &str, text: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = write(dir.path(), name, text);
        match GeoDb::load(&[src]) {
            Ok(db) => panic!("expected an error for {text:?}, got {db:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn tor_samples() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v4 = write(
            dir.path(),
            "geoip",
            "# comment\n\n16777216,16777471,AU\n16777472,16778239,CN\n16778240,16779263,??\n",
        );
        let v6 = write(
            dir.path(),
            "geoip6",
            "# c\n2001::,2001:0:ffff:ffff:ffff:ffff:ffff:ffff,??\n2001:2::,2001:2:0:ffff:ffff:ffff:ffff:ffff,JP\n",
        );
        let db = GeoDb::load(&[v4, v6]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(db.lookup(ip("1.0.0.0")), Some(cc("AU")));
        assert_eq!(db.lookup(ip("1.0.0.255")), Some(cc("AU")));
        assert_eq!(db.lookup(ip("1.0.1.0")), Some(cc("CN")));
        assert_eq!(db.lookup(ip("1.0.3.255")), Some(cc("CN")));
        assert_eq!(db.lookup(ip("1.0.4.0")), None, "?? rows are skipped");
        assert_eq!(db.lookup(ip("0.255.255.255")), None);
        assert_eq!(db.lookup(ip("::ffff:1.0.0.1")), Some(cc("AU")), "v4-mapped");
        assert_eq!(db.lookup(ip("2001:2::1")), Some(cc("JP")));
        assert_eq!(db.lookup(ip("2001::1")), None);
        assert_eq!((db.len_v4(), db.len_v6()), (2, 1));
        assert_eq!(db.sources[0].ranges_v4, 2);
        assert_eq!(db.sources[1].ranges_v6, 1);
        assert!(db.sources[0].modified.is_some(), "mtime recorded");
        assert_eq!(
            db.countries()
                .into_iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            ["AU", "CN", "JP"]
        );
        let p4: Vec<String> = db.prefixes_v4().map(|(n, c)| format!("{n} {c}")).collect();
        assert_eq!(p4, ["1.0.0.0/24 AU", "1.0.1.0/24 CN", "1.0.2.0/23 CN"]);
        assert_eq!(db.prefix_count_v6(), 1);
        assert_eq!(
            db.prefixes_v6()
                .next()
                .map(|(n, _)| n.to_string())
                .as_deref(),
            Some("2001:2::/48")
        );
    }

    #[test]
    fn csv_sample_with_header_quotes_and_mixed_families() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = write(
            dir.path(),
            "geo.csv",
            "ip_range_start,ip_range_end,country_code\n\"1.0.0.0\",\"1.0.0.255\",\"AU\"\n2001:db8::, 2001:db8::ffff ,de\n1.0.1.0,1.0.1.255,ZZ\n",
        );
        let db = GeoDb::load(&[src]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(db.lookup(ip("1.0.0.7")), Some(cc("AU")));
        assert_eq!(db.lookup(ip("2001:db8::ff")), Some(cc("DE")));
        assert_eq!(db.lookup(ip("1.0.1.1")), None, "ZZ means unknown");
        assert_eq!((db.len_v4(), db.len_v6()), (1, 1));
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "geoip",
                "1,2,AU\n3,x,AU\n",
                ":2: \"x\" is not an IP address",
            ),
            (
                "geoip",
                "1,2,AU\n\n4294967296,4294967297,AU\n",
                ":3: \"4294967296\" is not an IPv4 address as a 32-bit integer",
            ),
            (
                "geoip",
                "5,2,AU\n",
                ":1: first address 0.0.0.5 is after last address 0.0.0.2",
            ),
            (
                "geoip",
                "1,2\n",
                ":1: expected 3 fields (first,last,country), found 2",
            ),
            ("geoip", "1,2,AU,x\n", ":1: expected 3 fields"),
            (
                "geoip",
                "1,2,A1\n",
                ":1: \"A1\" is not a two-letter country code",
            ),
            (
                "geoip6",
                "::1,1.2.3.4,AU\n",
                ":1: \"::1\" and \"1.2.3.4\" are not of the same address family",
            ),
            (
                "geoip6",
                "1.2.3.4,7,AU\n",
                ":1: \"1.2.3.4\" and \"7\" are not of the same address family",
            ),
            (
                "geoip",
                "1,10,AU\n20,30,AU\n5,15,US\n",
                ":3: range 0.0.0.5-0.0.0.15 overlaps range 0.0.0.1-0.0.0.10 on line 1",
            ),
            (
                "geo.csv",
                "a,b,c\n1.0.0.0,1.0.0.9,AU\n1.0.0.9,1.0.0.20,AU\n",
                ":3: range 1.0.0.9-1.0.0.20 overlaps range 1.0.0.0-1.0.0.9 on line 2",
            ),
            (
                "geo.csv",
                "1.0.0.0,1.0.0.9,AU\n1.0.0.10,nope,AU\n",
                ":2: \"nope\" is not an IP address",
            ),
            ("geo.csv", "1.0.0.0,1.0.0.9\n", ":1: expected 3 fields"),
            ("geo.csv", "1.0.0.0,\"1.0.0.9,AU\n", ":1: expected 3 fields"),
        ];
        for (name, text, want) in cases {
            let msg = load_err(name, text);
            assert!(
                msg.contains(&format!("{name}{want}")) || msg.contains(want),
                "{name} {text:?}: {msg:?} should contain {want:?}"
            );
            assert!(msg.contains(name), "{msg:?} names the file");
        }
        let bin = load_err("geoip", "1,2,AU\n\u{0}\u{ff}");
        assert!(bin.contains("geoip:2:"), "{bin}");
    }

    #[test]
    fn non_utf8_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["geoip", "geo.csv"] {
            let path = dir.path().join(name);
            std::fs::write(&path, b"1,2,AU\n\xff\xfe,3,AU\n").expect("write");
            let format = if Path::new(name).extension().is_some_and(|e| e == "csv") {
                GeoFormat::Csv
            } else {
                GeoFormat::Tor
            };
            let msg = GeoDb::load(&[GeoSource { format, path }])
                .expect_err("not UTF-8")
                .to_string();
            assert!(msg.contains(&format!("{name}:2:")), "{msg}");
        }
    }

    #[test]
    fn missing_file_names_path_and_os_error() {
        let msg = GeoDb::load(&[GeoSource {
            format: GeoFormat::Tor,
            path: "/nonexistent/geoip".into(),
        }])
        .expect_err("missing")
        .to_string();
        assert!(
            msg.starts_with("/nonexistent/geoip: cannot open GeoIP file:")
                && msg.contains("No such file"),
            "{msg}"
        );
    }

    #[test]
    fn earlier_source_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = write(
            dir.path(),
            "a.csv",
            "10.0.0.0,10.0.0.255,DE\n10.0.2.0,10.0.2.255,FR\n",
        );
        let second = write(dir.path(), "b", "167772160,167773183,US\n");
        let db = GeoDb::load(&[first, second]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(db.lookup(ip("10.0.0.5")), Some(cc("DE")), "first wins");
        assert_eq!(
            db.lookup(ip("10.0.1.5")),
            Some(cc("US")),
            "gap filled by second"
        );
        assert_eq!(db.lookup(ip("10.0.2.5")), Some(cc("FR")));
        assert_eq!(db.lookup(ip("10.0.3.255")), Some(cc("US")));
        assert_eq!(db.lookup(ip("10.0.4.0")), None);
        let p: Vec<String> = db.prefixes_v4().map(|(n, c)| format!("{n} {c}")).collect();
        assert_eq!(
            p,
            [
                "10.0.0.0/24 DE",
                "10.0.1.0/24 US",
                "10.0.2.0/24 FR",
                "10.0.3.0/24 US"
            ]
        );
    }

    #[test]
    fn full_range_edges() {
        let all4: Vec<_> = range_to_prefixes_v4(0, u32::MAX)
            .map(|n| n.to_string())
            .collect();
        assert_eq!(all4, ["0.0.0.0/0"]);
        let all6: Vec<_> = range_to_prefixes_v6(0, u128::MAX)
            .map(|n| n.to_string())
            .collect();
        assert_eq!(all6, ["::/0"]);
        let top: Vec<_> = range_to_prefixes_v4(u32::MAX, u32::MAX)
            .map(|n| n.to_string())
            .collect();
        assert_eq!(top, ["255.255.255.255/32"]);
        let upper: Vec<_> = range_to_prefixes_v4(1, u32::MAX).collect();
        assert_eq!(upper.len(), 32, "1..=MAX needs one prefix per bit");
        assert_eq!(
            range_to_prefixes_v4(5, 4).count(),
            0,
            "reversed range is empty"
        );
        let upper6: Vec<_> = range_to_prefixes_v6(1, u128::MAX).collect();
        assert_eq!(upper6.len(), 128);
    }

    /// Checks that `prefixes` (as `(start, end)` inclusive) are sorted,
    /// disjoint, contiguous and cover exactly `[first, last]`, and minimal
    /// (no two neighbours could be joined into one aligned prefix).
    fn check_cover(
        first: u128,
        last: u128,
        prefixes: &[(u128, u128, u8)],
        bits: u8,
    ) -> Result<(), TestCaseError> {
        prop_assert!(!prefixes.is_empty());
        prop_assert_eq!(prefixes[0].0, first, "starts at first");
        prop_assert_eq!(prefixes[prefixes.len() - 1].1, last, "ends at last");
        for w in prefixes.windows(2) {
            prop_assert_eq!(
                w[0].1.checked_add(1),
                Some(w[1].0),
                "contiguous and disjoint: {:?}",
                w
            );
            // Minimality: two equal-length siblings would form a shorter prefix.
            let (a, b) = (w[0], w[1]);
            if a.2 == b.2 && a.2 > 0 {
                let parent_bits = u32::from(bits - a.2 + 1);
                let siblings =
                    parent_bits <= 128 && (parent_bits == 128 || a.0 % (1u128 << parent_bits) == 0);
                prop_assert!(!siblings, "{:?} and {:?} could be merged", a, b);
            }
        }
        Ok(())
    }

    fn addr_pair_v4() -> impl Strategy<Value = (u32, u32)> {
        prop_oneof![
            any::<(u32, u32)>(),
            (0u32..5000, 0u32..5000),
            (u32::MAX - 5000..=u32::MAX, u32::MAX - 5000..=u32::MAX),
            (0u32..4, u32::MAX - 4..=u32::MAX),
        ]
        .prop_map(|(a, b)| (a.min(b), a.max(b)))
    }

    fn addr_pair_v6() -> impl Strategy<Value = (u128, u128)> {
        prop_oneof![
            any::<(u128, u128)>(),
            (0u128..5000, 0u128..5000),
            (u128::MAX - 5000..=u128::MAX, u128::MAX - 5000..=u128::MAX),
            (0u128..4, u128::MAX - 4..=u128::MAX),
        ]
        .prop_map(|(a, b)| (a.min(b), a.max(b)))
    }

    /// Ranges (first, last, country index) for the lookup model, possibly overlapping.
    fn ranges_strategy() -> impl Strategy<Value = Vec<(u32, u32, u8)>> {
        proptest::collection::vec(
            prop_oneof![(0u32..300, 0u32..40), (u32::MAX - 300..=u32::MAX, 0u32..40)]
                .prop_flat_map(|(a, len)| (Just(a), Just(a.saturating_add(len)), 0u8..4)),
            0..20,
        )
    }

    const COUNTRIES: [&str; 4] = ["AU", "DE", "US", "JP"];

    /// Drops ranges that overlap an earlier one (a file may not overlap itself).
    fn disjoint(ranges: &[(u32, u32, u8)]) -> Vec<(u32, u32, u8)> {
        let mut out: Vec<(u32, u32, u8)> = Vec::new();
        for &r in ranges {
            if out.iter().all(|o| r.1 < o.0 || r.0 > o.1) {
                out.push(r);
            }
        }
        out
    }

    fn tor_text(ranges: &[(u32, u32, u8)]) -> String {
        let mut text = String::new();
        for &(a, b, c) in ranges {
            let _ = writeln!(text, "{a},{b},{}", COUNTRIES[usize::from(c)]);
        }
        text
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prefixes_v4_cover_exactly((first, last) in addr_pair_v4()) {
            let p: Vec<(u128, u128, u8)> = range_to_prefixes_v4(first, last)
                .map(|n| (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast())), n.prefix_len()))
                .collect();
            check_cover(first.into(), last.into(), &p, 32)?;
        }

        #[test]
        fn prefixes_v6_cover_exactly((first, last) in addr_pair_v6()) {
            let p: Vec<(u128, u128, u8)> = range_to_prefixes_v6(first, last)
                .map(|n| (u128::from(n.network()), u128::from(n.broadcast()), n.prefix_len()))
                .collect();
            check_cover(first, last, &p, 128)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Loading several files and looking up agrees with a linear scan
        /// where the first file holding the address wins.
        #[test]
        fn lookup_matches_linear_scan(a in ranges_strategy(), b in ranges_strategy(), probes in proptest::collection::vec(any::<u32>(), 0..20)) {
            let (a, b) = (disjoint(&a), disjoint(&b));
            let dir = tempfile::tempdir().expect("tempdir");
            let sa = write(dir.path(), "a", &tor_text(&a));
            let sb = write(dir.path(), "b", &tor_text(&b));
            let db = GeoDb::load(&[sa, sb]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let naive = |x: u32| {
                a.iter().chain(&b).find(|r| r.0 <= x && x <= r.1).map(|r| cc(COUNTRIES[usize::from(r.2)]))
            };
            let mut points: Vec<u32> = probes;
            for r in a.iter().chain(&b) {
                points.extend([r.0, r.1, r.0.wrapping_sub(1), r.1.wrapping_add(1)]);
            }
            for x in points {
                prop_assert_eq!(db.lookup(IpAddr::V4(Ipv4Addr::from(x))), naive(x), "at {}", x);
            }
            // Ranges stay sorted and disjoint, and prefixes agree with lookup.
            for w in db.ranges_v4().windows(2) {
                prop_assert!(w[0].1 < w[1].0, "sorted disjoint {:?}", w);
            }
            for (net, c) in db.prefixes_v4() {
                for x in [net.network(), net.broadcast()] {
                    prop_assert_eq!(db.lookup(IpAddr::V4(x)), Some(c));
                }
            }
        }
    }

    #[test]
    fn real_tor_geoip_files() {
        let v4 = Path::new("/usr/share/tor/geoip");
        let v6 = Path::new("/usr/share/tor/geoip6");
        if !v4.is_file() || !v6.is_file() {
            eprintln!("skipping: /usr/share/tor/geoip{{,6}} not present (install tor-geoipdb)");
            return;
        }
        let sources = [
            GeoSource {
                format: GeoFormat::Tor,
                path: v4.into(),
            },
            GeoSource {
                format: GeoFormat::Tor,
                path: v6.into(),
            },
        ];
        let db = GeoDb::load(&sources).unwrap_or_else(|e| panic!("real Tor files: {e}"));
        assert!(
            db.sources[0].ranges_v4 > 100_000,
            "v4 rows: {}",
            db.sources[0].ranges_v4
        );
        assert!(
            db.sources[1].ranges_v6 > 100_000,
            "v6 rows: {}",
            db.sources[1].ranges_v6
        );
        assert!(db.lookup(ip("8.8.8.8")).is_some(), "8.8.8.8 has a country");
        assert!(
            db.lookup(ip("2001:4860:4860::8888")).is_some(),
            "Google DNS v6 has a country"
        );
        assert_eq!(db.lookup(ip("127.0.0.1")), None, "loopback has none");
        assert!(
            db.countries().len() > 200,
            "countries: {}",
            db.countries().len()
        );
        eprintln!(
            "real tor geoip: {} v4 ranges ({} prefixes), {} v6 ranges ({} prefixes)",
            db.len_v4(),
            db.prefix_count_v4(),
            db.len_v6(),
            db.prefix_count_v6()
        );
    }
}
