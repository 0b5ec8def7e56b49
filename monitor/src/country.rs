//! ISO 3166-1 alpha-2 country codes.
//!
//! Two parsers with different strictness:
//! - [`CountryCode::parse_config`] for codes an operator writes in the config:
//!   only officially assigned ISO 3166-1 alpha-2 codes (plus the exceptionally
//!   reserved `EU` and `UK`) are accepted, so that a typo such as `XZ` is caught.
//! - [`CountryCode::parse_data`] for `GeoIP` data files, which carry
//!   non-ISO codes such as `AP`, `EU`, `AN` or `CS`: any two ASCII letters.

use std::{fmt, str::FromStr};

use thiserror::Error;

/// A two-letter country code, stored as two uppercase ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct CountryCode([u8; 2]);

/// Why a country code was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CountryError {
    /// The text is not two ASCII letters.
    #[error("{input:?} is not a two-letter country code")]
    NotTwoLetters {
        /// The rejected text.
        input: String,
    },
    /// Two letters, but not an assigned ISO 3166-1 alpha-2 code.
    #[error("{code} is not an ISO 3166-1 alpha-2 code")]
    Unassigned {
        /// The rejected code, uppercased.
        code: CountryCode,
    },
}

/// The officially assigned ISO 3166-1 alpha-2 codes (249 of them), sorted.
///
/// Source: the ISO 3166 Maintenance Agency's list of officially assigned
/// codes (ISO Online Browsing Platform), unchanged since `SS` was added in
/// 2011; cross-checked against the `celes` crate's table (which adds the
/// user-assigned `XK`). A const table is used instead of a crate dependency:
/// the list is small and stable, and crates that carry it also bring names,
/// numeric codes and extra dependencies (`phf`, `derive_more`) that are not
/// needed here.
const ASSIGNED: [[u8; 2]; 249] = [
    *b"AD", *b"AE", *b"AF", *b"AG", *b"AI", *b"AL", *b"AM", *b"AO", *b"AQ", *b"AR", *b"AS", *b"AT",
    *b"AU", *b"AW", *b"AX", *b"AZ", *b"BA", *b"BB", *b"BD", *b"BE", *b"BF", *b"BG", *b"BH", *b"BI",
    *b"BJ", *b"BL", *b"BM", *b"BN", *b"BO", *b"BQ", *b"BR", *b"BS", *b"BT", *b"BV", *b"BW", *b"BY",
    *b"BZ", *b"CA", *b"CC", *b"CD", *b"CF", *b"CG", *b"CH", *b"CI", *b"CK", *b"CL", *b"CM", *b"CN",
    *b"CO", *b"CR", *b"CU", *b"CV", *b"CW", *b"CX", *b"CY", *b"CZ", *b"DE", *b"DJ", *b"DK", *b"DM",
    *b"DO", *b"DZ", *b"EC", *b"EE", *b"EG", *b"EH", *b"ER", *b"ES", *b"ET", *b"FI", *b"FJ", *b"FK",
    *b"FM", *b"FO", *b"FR", *b"GA", *b"GB", *b"GD", *b"GE", *b"GF", *b"GG", *b"GH", *b"GI", *b"GL",
    *b"GM", *b"GN", *b"GP", *b"GQ", *b"GR", *b"GS", *b"GT", *b"GU", *b"GW", *b"GY", *b"HK", *b"HM",
    *b"HN", *b"HR", *b"HT", *b"HU", *b"ID", *b"IE", *b"IL", *b"IM", *b"IN", *b"IO", *b"IQ", *b"IR",
    *b"IS", *b"IT", *b"JE", *b"JM", *b"JO", *b"JP", *b"KE", *b"KG", *b"KH", *b"KI", *b"KM", *b"KN",
    *b"KP", *b"KR", *b"KW", *b"KY", *b"KZ", *b"LA", *b"LB", *b"LC", *b"LI", *b"LK", *b"LR", *b"LS",
    *b"LT", *b"LU", *b"LV", *b"LY", *b"MA", *b"MC", *b"MD", *b"ME", *b"MF", *b"MG", *b"MH", *b"MK",
    *b"ML", *b"MM", *b"MN", *b"MO", *b"MP", *b"MQ", *b"MR", *b"MS", *b"MT", *b"MU", *b"MV", *b"MW",
    *b"MX", *b"MY", *b"MZ", *b"NA", *b"NC", *b"NE", *b"NF", *b"NG", *b"NI", *b"NL", *b"NO", *b"NP",
    *b"NR", *b"NU", *b"NZ", *b"OM", *b"PA", *b"PE", *b"PF", *b"PG", *b"PH", *b"PK", *b"PL", *b"PM",
    *b"PN", *b"PR", *b"PS", *b"PT", *b"PW", *b"PY", *b"QA", *b"RE", *b"RO", *b"RS", *b"RU", *b"RW",
    *b"SA", *b"SB", *b"SC", *b"SD", *b"SE", *b"SG", *b"SH", *b"SI", *b"SJ", *b"SK", *b"SL", *b"SM",
    *b"SN", *b"SO", *b"SR", *b"SS", *b"ST", *b"SV", *b"SX", *b"SY", *b"SZ", *b"TC", *b"TD", *b"TF",
    *b"TG", *b"TH", *b"TJ", *b"TK", *b"TL", *b"TM", *b"TN", *b"TO", *b"TR", *b"TT", *b"TV", *b"TW",
    *b"TZ", *b"UA", *b"UG", *b"UM", *b"US", *b"UY", *b"UZ", *b"VA", *b"VC", *b"VE", *b"VG", *b"VI",
    *b"VN", *b"VU", *b"WF", *b"WS", *b"YE", *b"YT", *b"ZA", *b"ZM", *b"ZW",
];

/// Exceptionally reserved codes accepted in the config: `EU` (European
/// Union) and `UK` (United Kingdom; `GB` is the assigned code).
const EXCEPTIONALLY_RESERVED: [[u8; 2]; 2] = [*b"EU", *b"UK"];

impl CountryCode {
    /// Parses a code written by an operator in the config.
    ///
    /// Lowercase input is accepted and normalised to uppercase. Only assigned
    /// ISO 3166-1 alpha-2 codes and the exceptionally reserved `EU` and `UK`
    /// are accepted.
    ///
    /// # Errors
    ///
    /// [`CountryError::NotTwoLetters`] or [`CountryError::Unassigned`].
    pub fn parse_config(s: &str) -> Result<CountryCode, CountryError> {
        let code = Self::letters(s)?;
        if ASSIGNED.binary_search(&code.0).is_ok() || EXCEPTIONALLY_RESERVED.contains(&code.0) {
            Ok(code)
        } else {
            Err(CountryError::Unassigned { code })
        }
    }

    /// Parses a code from a `GeoIP` data file.
    ///
    /// Any two ASCII letters are accepted (data files carry codes such as
    /// `AP`, `EU`, `AN` or `CS`), normalised to uppercase. `??`, `--`, `ZZ`
    /// and the empty string mean "unknown" and give `Ok(None)`. Surrounding
    /// whitespace is ignored.
    ///
    /// # Errors
    ///
    /// [`CountryError::NotTwoLetters`] if it is not two ASCII letters.
    pub fn parse_data(s: &str) -> Result<Option<CountryCode>, CountryError> {
        let s = s.trim();
        if s.is_empty() || s == "??" || s == "--" {
            return Ok(None);
        }
        let code = Self::letters(s)?;
        if code.0 == *b"ZZ" {
            Ok(None)
        } else {
            Ok(Some(code))
        }
    }

    /// The two uppercase ASCII letters.
    #[must_use]
    pub fn as_bytes(self) -> [u8; 2] {
        self.0
    }

    /// The code as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Invariant: both bytes are uppercase ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    fn letters(s: &str) -> Result<CountryCode, CountryError> {
        match s.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Ok(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => Err(CountryError::NotTwoLetters {
                input: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses with [`CountryCode::parse_config`] (the strict form).
impl FromStr for CountryCode {
    type Err = CountryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_config(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_uppercase() {
        for pair in ASSIGNED.windows(2) {
            assert!(pair[0] < pair[1], "ASSIGNED not sorted at {pair:?}");
        }
        for c in ASSIGNED {
            assert!(c.iter().all(u8::is_ascii_uppercase), "bad entry {c:?}");
        }
    }

    #[test]
    fn config_accepts_assigned_and_normalises() {
        for (input, want) in [
            ("IN", "IN"),
            ("sg", "SG"),
            ("Us", "US"),
            ("EU", "EU"),
            ("uk", "UK"),
            ("GB", "GB"),
        ] {
            let got = CountryCode::parse_config(input)
                .unwrap_or_else(|e| panic!("{input} should parse: {e}"));
            assert_eq!(got.to_string(), want, "normalising {input}");
            assert_eq!(
                got.as_bytes(),
                <[u8; 2]>::try_from(want.as_bytes()).expect("two bytes")
            );
        }
    }

    #[test]
    fn config_rejects_unknown() {
        let err = CountryCode::parse_config("XZ").expect_err("XZ is unassigned");
        assert_eq!(err.to_string(), "XZ is not an ISO 3166-1 alpha-2 code");
        let err = CountryCode::parse_config("xk").expect_err("XK is user-assigned");
        assert_eq!(err.to_string(), "XK is not an ISO 3166-1 alpha-2 code");
        for bad in ["AP", "AN", "ZZ", "??"] {
            assert!(
                CountryCode::parse_config(bad).is_err(),
                "{bad} must be rejected in config"
            );
        }
        for bad in ["", "U", "USA", "1A", "é", " US"] {
            let err = CountryCode::parse_config(bad).expect_err("not two letters");
            assert!(
                matches!(err, CountryError::NotTwoLetters { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn data_accepts_any_letters_and_unknowns() {
        for code in ["AP", "EU", "AN", "cs", "US"] {
            let got = CountryCode::parse_data(code)
                .unwrap_or_else(|e| panic!("{code}: {e}"))
                .unwrap_or_else(|| panic!("{code} should be known"));
            assert_eq!(got.to_string(), code.to_ascii_uppercase());
        }
        for unknown in ["??", "--", "ZZ", "zz", "", "  "] {
            assert_eq!(
                CountryCode::parse_data(unknown).expect("unknown is fine"),
                None,
                "{unknown:?}"
            );
        }
        for bad in ["A", "A1", "ABC", "ü"] {
            assert!(
                CountryCode::parse_data(bad).is_err(),
                "{bad} must be rejected"
            );
        }
    }

    #[test]
    fn ordering_and_from_str() {
        let a: CountryCode = "AD".parse().expect("AD");
        let b: CountryCode = "zw".parse().expect("ZW");
        assert!(a < b, "AD sorts before ZW");
    }
}
