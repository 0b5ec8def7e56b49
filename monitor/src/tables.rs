//! From config and GeoIP data to the kernel's tables: group slots, country slots, the
//! policy (verdict of every group × country), and the label names the metrics use.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;
use monitor_common::{
    class::{
        COUNTRY_SLOTS, GROUP_UNGROUPED, VERDICT_ALLOWED, VERDICT_DOMESTIC, VERDICT_UNKNOWN,
        VERDICT_VIOLATION, policy_index,
    },
    geo::{ASN_SLOTS_MAX, inside, location},
};

use crate::{
    config::Config,
    country::CountryCode,
    ebpf::{GeoTables, Tables},
    geoip::{GeoDb, Location, coalesce, merge_under},
    tier6::{Tier6, TooManyWords},
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
    #[error("{count} distinct AS numbers in the GeoIP data, but only {max} slots")]
    TooManyAsns { count: usize, max: u32 },
    #[error(transparent)]
    Ipv6Table(#[from] TooManyWords),
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
    /// AS number by ASN slot; slot 0 is unknown (0).
    pub asns: Vec<u32>,
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
    plan_after(config, geo, None)
}

/// Like [`plan`], keeping the country and ASN slots of `previous` (a reload): counters and
/// flows already in the kernel are indexed by them, so they must not move. New codes and
/// ASNs take new slots.
pub fn plan_after(
    config: &Config,
    geo: &GeoDb,
    previous: Option<&Labels>,
) -> Result<Plan, TablesError> {
    let mut codes: BTreeSet<CountryCode> = geo.countries();
    codes.extend(config.home.countries.iter().copied());
    codes.extend(config.home.allow.iter().copied());
    for g in &config.groups {
        codes.extend(g.allow.iter().copied());
    }
    // Slot 0 is unknown; earlier slots keep their codes, the new codes follow in order.
    let mut countries: Vec<Option<CountryCode>> =
        previous.map_or_else(|| vec![None], |p| p.countries.clone());
    let known: BTreeSet<CountryCode> = countries.iter().flatten().copied().collect();
    countries.extend(codes.difference(&known).copied().map(Some));
    if countries.len() > COUNTRY_SLOTS as usize {
        return Err(TablesError::TooManyCountries {
            count: countries.len() - 1,
            max: COUNTRY_SLOTS - 1,
        });
    }
    let country_slot: HashMap<CountryCode, u32> = countries
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some(((*c)?, i as u32)))
        .collect();

    let mut asns: Vec<u32> = previous.map_or_else(|| vec![0], |p| p.asns.clone());
    let known: BTreeSet<u32> = asns.iter().copied().collect();
    asns.extend(geo.asns().difference(&known).copied());
    if asns.len() > ASN_SLOTS_MAX as usize {
        return Err(TablesError::TooManyAsns {
            count: asns.len() - 1,
            max: ASN_SLOTS_MAX - 1,
        });
    }
    let asn_slot: HashMap<u32, u32> = asns
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, a)| (*a, i as u32))
        .collect();

    let word = |l: &Location| {
        location(
            l.country
                .and_then(|c| country_slot.get(&c).copied())
                .unwrap_or(0),
            l.asn.and_then(|a| asn_slot.get(&a).copied()).unwrap_or(0),
        )
    };
    let (v4, v6) = address_ranges(config, geo, word);
    let v6_table = Tier6::build(&v6)?;

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
            geo: GeoTables {
                v4,
                v6,
                v6_table,
                asns: asns
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (i as u32, *a))
                    .collect(),
            },
            policy,
            country_codes,
        },
        labels: Labels {
            groups,
            countries,
            asns,
        },
    })
}

/// Every address range with its word: the inside networks overlaid on the locations (an
/// inside address is never located), adjacent equal words joined.
fn address_ranges(
    config: &Config,
    geo: &GeoDb,
    word: impl Fn(&Location) -> u32,
) -> (Ranges<u32>, Ranges<u128>) {
    let (inside4, inside6) = inside_ranges(config);
    let mut v4 = merge_under(
        inside4,
        geo.locations_v4()
            .iter()
            .map(|(a, b, l)| (*a, *b, word(l)))
            .collect(),
    );
    coalesce(&mut v4);
    let mut v6 = merge_under(
        inside6,
        geo.locations_v6()
            .iter()
            .map(|(a, b, l)| (*a, *b, word(l)))
            .collect(),
    );
    coalesce(&mut v6);
    (v4, v6)
}

/// Address ranges `(first, last, word)`.
type Ranges<T> = Vec<(T, T, u32)>;

/// The inside networks as sorted, disjoint address ranges with inside words; where
/// networks nest (a group inside a home network) the longest prefix wins.
fn inside_ranges(config: &Config) -> (Ranges<u32>, Ranges<u128>) {
    let mut nets: Vec<(IpNet, u32)> = config.inside_networks().collect();
    // Longest first, so that each shorter prefix only fills what the longer ones leave;
    // of equal ones the last listed (a group's over the home network it repeats), as
    // `inside_group` decides.
    nets.reverse();
    nets.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (net, group) in nets {
        let w = inside(group);
        match net {
            IpNet::V4(n) => {
                v4 = merge_under(v4, vec![(n.network().into(), n.broadcast().into(), w)]);
            }
            IpNet::V6(n) => {
                v6 = merge_under(v6, vec![(n.network().into(), n.broadcast().into(), w)]);
            }
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn naive(top: &[(u32, u32, u32)], base: &[(u32, u32, u32)], x: u32) -> Option<u32> {
        let find = |r: &[(u32, u32, u32)]| r.iter().find(|r| r.0 <= x && x <= r.1).map(|r| r.2);
        find(top).or_else(|| find(base))
    }

    fn disjoint(cuts: &[(u16, u32)]) -> Vec<(u32, u32, u32)> {
        let mut points: Vec<u32> = cuts.iter().map(|c| u32::from(c.0)).collect();
        points.sort_unstable();
        points.dedup();
        points
            .windows(2)
            .zip(cuts)
            .filter(|(_, c)| c.1 % 3 != 0)
            .map(|(w, c)| (w[0], w[1] - 1, c.1))
            .collect()
    }

    #[test]
    fn a_group_network_equal_to_a_home_network_belongs_to_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let geoip = dir.path().join("geoip");
        std::fs::write(&geoip, "16777216,16777471,AU\n").expect("write geoip");
        let config = Config::parse_with_geoip_defaults(
            "[home]\nnetworks = [\"10.0.0.0/8\", \"2001:db8:1::/48\"]\n\
             [[group]]\nname = \"g\"\nnetworks = [\"10.0.0.0/8\", \"2001:db8:1::/48\"]\n",
            &dir.path().join("test.toml"),
            &[geoip],
        )
        .expect("config");
        let (v4, v6) = inside_ranges(&config);
        assert_eq!(v4, vec![(0x0a00_0000, 0x0aff_ffff, inside(1))]);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].2, inside(1));
        let addr: IpAddr = "2001:db8:1::5".parse().expect("address");
        assert_eq!(
            inside_group(&config, addr),
            Some(1),
            "the same answer as userspace"
        );
    }

    proptest! {
        #[test]
        fn merge_under_lets_the_top_win_and_keeps_the_rest(
            top in prop::collection::vec((any::<u16>(), 1000u32..1010), 0..12),
            base in prop::collection::vec((any::<u16>(), 1u32..9), 0..30),
        ) {
            let (top, base) = (disjoint(&top), disjoint(&base));
            let out = merge_under(top.clone(), base.clone());
            for pair in out.windows(2) {
                prop_assert!(pair[0].1 < pair[1].0, "sorted and disjoint: {out:?}");
            }
            for x in 0..=u32::from(u16::MAX) {
                let got = out.iter().find(|r| r.0 <= x && x <= r.1).map(|r| r.2);
                prop_assert_eq!(got, naive(&top, &base, x), "address {}", x);
            }
        }
    }
}
