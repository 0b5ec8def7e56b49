//! The text formats: Tor, CSV, ASN CSV, iptoasn TSV and RIR statistics,
//! read a line at a time.

use std::{
    borrow::Cow,
    io::{self, BufRead, BufReader, Read},
    net::{IpAddr, Ipv4Addr},
    num::ParseIntError,
    path::Path,
};

use ipnet::Ipv6Net;

use super::{GeoIpError, Location, MAX_LINE, NameRule, OnlyFamily, Parsed, Rows};
use crate::country::CountryCode;

/// Fails a read once a line runs over [`MAX_LINE`] bytes, so that a binary
/// file given as text is not buffered whole.
struct LineLimit<R> {
    inner: R,
    run: usize,
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        self.run = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => n - 1 - i,
            None => self.run + n,
        };
        if self.run > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line is longer than {MAX_LINE} bytes (not a text file?)"),
            ));
        }
        Ok(n)
    }
}

fn line_limit<R: Read>(inner: R) -> LineLimit<R> {
    LineLimit { inner, run: 0 }
}

/// Calls `row` with each line (without its line ending or a leading byte
/// order mark) and its number, skipping empty lines and `#` comments.
fn for_each_line(
    path: &Path,
    file: impl Read,
    mut row: impl FnMut(u64, &str) -> Result<(), GeoIpError>,
) -> Result<(), GeoIpError> {
    let mut reader = BufReader::new(line_limit(file));
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
            return Ok(());
        }
        let mut text = buf.trim_end_matches(['\n', '\r']);
        if line == 1 {
            text = text.strip_prefix('\u{feff}').unwrap_or(text); // a UTF-8 byte order mark
        }
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        row(line, text)?;
    }
}

/// Tor reads `geoip` as IPv4 and `geoip6` as IPv6, and either file holds one family: so
/// does one of ours, named so or else by its first range.
pub(super) fn read_tor(path: &Path, file: impl Read) -> Result<Rows, GeoIpError> {
    let mut rows = Rows {
        only: OnlyFamily::by_name(
            path,
            &[
                (
                    NameRule::Prefix("geoip6"),
                    false,
                    "the file is named geoip6 (Tor's IPv6 file)",
                ),
                (
                    NameRule::Stem("geoip"),
                    true,
                    "the file is named geoip (Tor's IPv4 file)",
                ),
            ],
        ),
        first_decides: Some("a Tor GeoIP file"),
        ..Rows::default()
    };
    for_each_line(path, file, |line, text| {
        let fields: Vec<&str> = text.trim().split(',').collect();
        country_csv_row(path, line, &fields, &mut rows)
    })?;
    Ok(rows)
}

/// Reads a CSV file a line at a time, skipping a header line, and hands each
/// record to `row`. GeoIP CSV files have one record per line, so a record's
/// line is exact (comments and blank lines counted).
pub(super) fn read_csv(
    path: &Path,
    file: impl Read,
    row: fn(&Path, u64, &[&str], &mut Rows) -> Result<(), GeoIpError>,
) -> Result<Rows, GeoIpError> {
    // ip-location-db names its single-family files `…-ipv4.csv`, `…-ipv6-num.csv`.
    let mut rows = Rows {
        only: OnlyFamily::by_name(
            path,
            &[
                (
                    NameRule::Contains("ipv4", "ipv6"),
                    true,
                    "the file name says ipv4 (IPv4 only)",
                ),
                (
                    NameRule::Contains("ipv6", "ipv4"),
                    false,
                    "the file name says ipv6 (IPv6 only)",
                ),
            ],
        ),
        ..Rows::default()
    };
    let mut first_record = true;
    for_each_line(path, file, |line, text| {
        let fields = split_csv(text);
        let fields: Vec<&str> = fields.iter().map(AsRef::as_ref).collect();
        if std::mem::take(&mut first_record) && is_header(&fields) {
            return Ok(());
        }
        row(path, line, &fields, &mut rows)
    })?;
    Ok(rows)
}

/// Splits one CSV line at commas, trimming each field. A field may be quoted
/// (`"..."`, with `""` for a quote inside) to hold commas; as with common CSV
/// readers, text after the closing quote is kept, and an unterminated quote
/// runs to the end of the line.
pub(super) fn split_csv(line: &str) -> Vec<Cow<'_, str>> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let text = rest.trim_start();
        let Some(quoted) = text.strip_prefix('"') else {
            let Some((field, next)) = text.split_once(',') else {
                fields.push(Cow::Borrowed(text.trim()));
                return fields;
            };
            fields.push(Cow::Borrowed(field.trim()));
            rest = next;
            continue;
        };
        let mut value = String::new();
        let mut after = "";
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '"' {
                value.push(c);
            } else if quoted[i + 1..].starts_with('"') {
                value.push('"');
                chars.next();
            } else {
                after = &quoted[i + 1..];
                break;
            }
        }
        let (tail, next) = match after.split_once(',') {
            Some((tail, next)) => (tail, Some(next)),
            None => (after, None),
        };
        value.push_str(tail);
        fields.push(Cow::Owned(value.trim().to_owned()));
        match next {
            Some(next) => rest = next,
            None => return fields,
        }
    }
}

/// A header line: text (no control characters, so not a binary file's
/// first "record") whose first field is not an address.
fn is_header(fields: &[&str]) -> bool {
    fields.first().is_some_and(|f| parse_addr(f).is_none())
        && fields.iter().all(|f| !f.contains(char::is_control))
}

/// `first,last,country` (Tor and CSV).
pub(super) fn country_csv_row(
    path: &Path,
    line: u64,
    fields: &[&str],
    rows: &mut Rows,
) -> Result<(), GeoIpError> {
    let &[first, last, country] = fields else {
        return Err(field_count(
            path,
            line,
            "3 fields (first,last,country)",
            fields,
        ));
    };
    let parsed = parse_pair(path, line, first.trim(), last.trim())?;
    let loc = Location {
        country: parse_country(path, line, country)?,
        asn: None,
    };
    rows.push(path, line, parsed, loc, None)
}

/// `first,last,asn[,organisation...]` (ip-location-db ASN CSV).
pub(super) fn asn_csv_row(
    path: &Path,
    line: u64,
    fields: &[&str],
    rows: &mut Rows,
) -> Result<(), GeoIpError> {
    let &[first, last, asn, ..] = fields else {
        return Err(field_count(
            path,
            line,
            "3 or 4 fields (first,last,asn[,organisation])",
            fields,
        ));
    };
    let parsed = parse_pair(path, line, first.trim(), last.trim())?;
    let loc = Location {
        country: None,
        asn: parse_asn(path, line, asn)?,
    };
    rows.push(path, line, parsed, loc, None)
}

pub(super) fn read_iptoasn(path: &Path, file: impl Read) -> Result<Rows, GeoIpError> {
    // iptoasn.com names its single-family files ip2asn-v4.tsv,
    // ip2asn-v4-u32.tsv and ip2asn-v6.tsv.
    let mut rows = Rows {
        only: OnlyFamily::by_name(
            path,
            &[
                (
                    NameRule::Prefix("ip2asn-v4"),
                    true,
                    "the file is named ip2asn-v4* (IPv4 only)",
                ),
                (
                    NameRule::Prefix("ip2asn-v6"),
                    false,
                    "the file is named ip2asn-v6* (IPv6 only)",
                ),
            ],
        ),
        ..Rows::default()
    };
    for_each_line(path, file, |line, text| {
        let fields: Vec<&str> = text.split('\t').collect();
        let &[first, last, asn, country, ..] = fields.as_slice() else {
            return Err(field_count(
                path,
                line,
                "4 or 5 tab-separated fields (range_start, range_end, AS_number, country_code, AS_description)",
                &fields,
            ));
        };
        let parsed = parse_pair(path, line, first.trim(), last.trim())?;
        let country = country.trim();
        let country =
            if country.eq_ignore_ascii_case("none") || country.eq_ignore_ascii_case("unknown") {
                None
            } else {
                parse_country(path, line, country)?
            };
        let loc = Location {
            country,
            asn: parse_asn(path, line, asn)?,
        };
        rows.push(path, line, parsed, loc, None)
    })?;
    Ok(rows)
}

pub(super) fn read_rir(path: &Path, file: impl Read) -> Result<Rows, GeoIpError> {
    let mut rows = Rows::default();
    for_each_line(path, file, |line, text| {
        let fields: Vec<&str> = text.trim().split('|').map(str::trim).collect();
        // The version line (`2|ripencc|...` or `2.3|arin|...`) and summary
        // lines (`ripencc|*|ipv4|*|N|summary`).
        let version = fields.len() > 1
            && fields[0].starts_with(|c: char| c.is_ascii_digit())
            && fields[0].bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if version || fields.get(5) == Some(&"summary") {
            return Ok(());
        }
        let &[_registry, cc, kind, start, value, _date, status, ..] = fields.as_slice() else {
            return Err(field_count(
                path,
                line,
                "at least 7 fields (registry|cc|type|start|value|date|status)",
                &fields,
            ));
        };
        let v4 = match kind {
            "asn" => return Ok(()),
            "ipv4" => true,
            "ipv6" => false,
            _ => {
                return Err(GeoIpError::BadRirType {
                    path: path.to_owned(),
                    line,
                    text: kind.to_owned(),
                });
            }
        };
        if status.eq_ignore_ascii_case("available") || status.eq_ignore_ascii_case("reserved") {
            return Ok(());
        }
        let country = parse_country(path, line, cc)?;
        let start_ip = parse_ip(path, line, start)?;
        let bad_value = |source| GeoIpError::BadRirValue {
            path: path.to_owned(),
            line,
            text: value.to_owned(),
            source,
        };
        let parsed = match (v4, start_ip) {
            (true, IpAddr::V4(start)) => {
                let count: u64 = value.parse().map_err(bad_value)?;
                let first = u32::from(start);
                let last = count
                    .checked_sub(1)
                    .and_then(|n| u64::from(first).checked_add(n))
                    .and_then(|last| u32::try_from(last).ok())
                    .ok_or_else(|| GeoIpError::RirCount {
                        path: path.to_owned(),
                        line,
                        start,
                        count,
                    })?;
                Parsed::V4(first, last)
            }
            (false, IpAddr::V6(start)) => {
                let len: u32 = value.parse().map_err(bad_value)?;
                let net = u8::try_from(len)
                    .ok()
                    .and_then(|l| Ipv6Net::new(start, l).ok())
                    .filter(|net| net.network() == start)
                    .ok_or_else(|| GeoIpError::RirPrefix {
                        path: path.to_owned(),
                        line,
                        start,
                        len,
                    })?;
                Parsed::V6(net.network().into(), net.broadcast().into())
            }
            (_, IpAddr::V4(a)) => Parsed::V4(a.into(), a.into()),
            (_, IpAddr::V6(a)) => Parsed::V6(a.into(), a.into()),
        };
        let only = OnlyFamily {
            v4,
            why: if v4 {
                "the record type is ipv4"
            } else {
                "the record type is ipv6"
            }
            .into(),
        };
        let loc = Location { country, asn: None };
        rows.push(path, line, parsed, loc, Some(&only))
    })?;
    Ok(rows)
}

fn field_count(path: &Path, line: u64, expected: &'static str, fields: &[&str]) -> GeoIpError {
    GeoIpError::FieldCount {
        path: path.to_owned(),
        line,
        expected,
        found: fields.len(),
    }
}

fn parse_country(path: &Path, line: u64, text: &str) -> Result<Option<CountryCode>, GeoIpError> {
    CountryCode::parse_data(text).map_err(|source| GeoIpError::BadCountry {
        path: path.to_owned(),
        line,
        source,
    })
}

/// `13335`, `AS13335` or `as13335`; 0 (no AS) gives `None`.
pub(super) fn asn_number(text: &str) -> Result<Option<u32>, ParseIntError> {
    let text = text.trim();
    let digits = match text.get(..2) {
        Some(prefix) if prefix.eq_ignore_ascii_case("AS") => &text[2..],
        _ => text,
    };
    let n: u32 = digits.parse()?;
    Ok((n != 0).then_some(n))
}

fn parse_asn(path: &Path, line: u64, text: &str) -> Result<Option<u32>, GeoIpError> {
    asn_number(text).map_err(|source| GeoIpError::BadAsn {
        path: path.to_owned(),
        line,
        text: text.trim().to_owned(),
        source,
    })
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
