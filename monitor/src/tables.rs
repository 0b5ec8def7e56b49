//! From config and GeoIP data to the kernel's tables: group slots, country slots, the
//! policy (verdict of every group × country), and the label names the metrics use.

use std::{collections::BTreeSet, fmt, net::IpAddr};

use monitor_common::class::{
    COUNTRY_SLOTS, GROUP_UNGROUPED, GeoValue, VERDICT_ALLOWED, VERDICT_DOMESTIC, VERDICT_UNKNOWN,
    VERDICT_VIOLATION, policy_index,
};

use crate::{
    config::Config,
    country::CountryCode,
    ebpf::Tables,
    geoip::{GeoDb, Location},
};

/// The label value of slot 0, inside addresses in no configured group.
pub const UNGROUPED: &str = "ungrouped";
/// The label value of the unknown country.
pub const UNKNOWN_COUNTRY: &str = "??";

#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error(
        "{count} distinct country codes in the GeoIP data and config, but only {max} slots; \
         check the GeoIP sources for non-country codes"
    )]
    TooManyCountries { count: usize, max: u32 },
}

/// A verdict, as the kernel encodes it (`VERDICT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Unknown,
    Domestic,
    Allowed,
    Violation,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Self::Domestic,
        Self::Allowed,
        Self::Violation,
        Self::Unknown,
    ];

    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            Self::Unknown => VERDICT_UNKNOWN,
            Self::Domestic => VERDICT_DOMESTIC,
            Self::Allowed => VERDICT_ALLOWED,
            Self::Violation => VERDICT_VIOLATION,
        }
    }

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Domestic => "domestic",
            Self::Allowed => "allowed",
            Self::Violation => "violation",
        }
    }
}

impl TryFrom<u32> for Verdict {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            VERDICT_UNKNOWN => Ok(Self::Unknown),
            VERDICT_DOMESTIC => Ok(Self::Domestic),
            VERDICT_ALLOWED => Ok(Self::Allowed),
            VERDICT_VIOLATION => Ok(Self::Violation),
            other => Err(other),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A direction of a classified packet or flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    #[must_use]
    pub const fn from_code(dir: u32) -> Self {
        if dir == monitor_common::class::DIR_OUTBOUND {
            Self::Outbound
        } else {
            Self::Inbound
        }
    }

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// Names of the group and country slots: the label values of the metrics.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    /// Group name by slot; slot 0 is [`UNGROUPED`].
    pub groups: Vec<String>,
    /// Country by slot; slot 0 is unknown.
    pub countries: Vec<Option<CountryCode>>,
}

/// The labels of one class counter.
#[derive(Clone, Debug)]
pub struct Class<'a> {
    pub group: &'a str,
    pub country: String,
    pub direction: Direction,
    pub verdict: Verdict,
}

impl Labels {
    /// Names the parts of a class counter index (`class_index`).
    #[must_use]
    pub fn class(&self, index: u32) -> Class<'_> {
        let (group, country, dir, verdict) = monitor_common::class::class_parts(index);
        Class {
            group: self.group(group),
            country: self.country(country),
            direction: Direction::from_code(dir),
            verdict: Verdict::try_from(verdict).unwrap_or(Verdict::Unknown),
        }
    }

    #[must_use]
    pub fn group(&self, slot: u32) -> &str {
        self.groups
            .get(slot as usize)
            .map_or(UNGROUPED, String::as_str)
    }

    #[must_use]
    pub fn country(&self, slot: u32) -> String {
        match self.countries.get(slot as usize) {
            Some(Some(code)) => code.to_string(),
            _ => UNKNOWN_COUNTRY.to_owned(),
        }
    }
}

/// Everything computed from one config and one GeoIP database.
#[derive(Debug)]
pub struct Plan {
    pub tables: Tables,
    pub labels: Labels,
}

/// The verdict for traffic between an inside address of `group` (0 = ungrouped) and a
/// remote address in `country`.
#[must_use]
pub fn verdict(config: &Config, group: u32, country: Option<CountryCode>) -> Verdict {
    let Some(country) = country else {
        return Verdict::Unknown;
    };
    if config.home.countries.contains(&country) {
        return Verdict::Domestic;
    }
    let allow = match group {
        GROUP_UNGROUPED => &config.home.allow,
        slot => config
            .groups
            .get(slot as usize - 1)
            .map_or(&config.home.allow, |g| &g.allow),
    };
    if allow.contains(&country) {
        Verdict::Allowed
    } else {
        Verdict::Violation
    }
}

/// The group slot and name of an inside address, or `None` for a remote one. The most
/// specific network wins, as in the kernel's LPM lookup.
#[must_use]
pub fn inside_group(config: &Config, addr: IpAddr) -> Option<u32> {
    config
        .inside_networks()
        .filter(|(net, _)| net.contains(&addr))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, slot)| slot)
}

/// Builds the kernel tables and label names.
pub fn plan(config: &Config, geo: &GeoDb) -> Result<Plan, TablesError> {
    let mut codes: BTreeSet<CountryCode> = geo.countries();
    codes.extend(config.home.countries.iter().copied());
    codes.extend(config.home.allow.iter().copied());
    for g in &config.groups {
        codes.extend(g.allow.iter().copied());
    }
    if codes.len() >= COUNTRY_SLOTS as usize {
        return Err(TablesError::TooManyCountries {
            count: codes.len(),
            max: COUNTRY_SLOTS - 1,
        });
    }
    let countries: Vec<Option<CountryCode>> = std::iter::once(None)
        .chain(codes.iter().copied().map(Some))
        .collect();
    // Slot 0 is unknown; the sorted codes take slots 1...
    let slots: std::collections::HashMap<CountryCode, u16> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i as u16 + 1))
        .collect();
    let value = |loc: Location| GeoValue {
        country: loc
            .country
            .and_then(|c| slots.get(&c).copied())
            .unwrap_or(0),
        _pad: 0,
        asn: loc.asn.unwrap_or(0),
    };

    let geo4 = geo
        .prefixes_v4()
        .map(|(net, loc)| (net.network().octets(), net.prefix_len(), value(loc)))
        .collect();
    let geo6 = geo
        .prefixes_v6()
        .map(|(net, loc)| (net.network().octets(), net.prefix_len(), value(loc)))
        .collect();

    let mut groups = vec![UNGROUPED.to_owned()];
    groups.extend(config.groups.iter().map(|g| g.name.clone()));
    let mut policy = Vec::with_capacity(groups.len() * countries.len());
    for g in 0..groups.len() as u32 {
        for (slot, code) in countries.iter().enumerate() {
            let v = verdict(config, g, *code);
            policy.push((policy_index(g, slot as u32), v.code() as u8));
        }
    }
    let country_codes = countries
        .iter()
        .enumerate()
        .map(|(slot, code)| (slot as u32, code.map_or(*b"??", CountryCode::as_bytes)))
        .collect();

    Ok(Plan {
        tables: Tables {
            inside: config.inside_networks().collect(),
            geo4,
            geo6,
            policy,
            country_codes,
        },
        labels: Labels { groups, countries },
    })
}
