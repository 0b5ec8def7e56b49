//! From config and GeoIP data to the kernel's tables: group slots, country slots, the
//! policy (see `policy`), and the label names the metrics use.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;
use monitor_common::{
    class::{
        COUNTRY_SLOTS, GROUP_UNGROUPED, MAX_GROUPS, NAMED_ASN_SLOTS, VERDICT_ALLOWED,
        VERDICT_DOMESTIC, VERDICT_UNKNOWN, VERDICT_VIOLATION,
    },
    geo::{ASN_SLOTS_MAX, inside, location},
};

use crate::{
    config::Config,
    country::CountryCode,
    ebpf::{GeoTables, Tables},
    geoip::{GeoDb, Location, coalesce, merge_under},
    policy::{self, PolicyError},
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
    #[error(
        "{count} groups since the daemon started, but only {max} group slots; a group \
         removed by a reload keeps its slot until a restart, so restart to apply this config"
    )]
    TooManyGroupSlots { count: usize, max: u32 },
    #[error(
        "more than {max} watch entries since the daemon started; an entry removed by a \
         reload keeps its slot until a restart, so restart to apply this config"
    )]
    TooManyWatchSlots { max: usize },
    #[error(
        "more than {max} AS numbers named in [metrics] asns, the policies and the watchlists \
         since the daemon started; an ASN removed by a reload keeps its slot until a restart, \
         so restart to apply this config"
    )]
    TooManyNamedAsns { max: u32 },
    #[error(transparent)]
    Policy(#[from] PolicyError),
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
    /// AS number by ASN slot; slot 0 is unknown, and the named slots
    /// (`1..NAMED_ASN_SLOTS`) that no ASN holds are 0 too.
    pub asns: Vec<u32>,
    /// Policy rule names by rule id (see `policy`).
    pub rules: Vec<String>,
    /// (watchlist, entry) name by watch entry slot; slot 0 is unused (`watch::entry_slots`).
    pub watch: Vec<(String, String)>,
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

    /// The distinct AS numbers that have a slot.
    #[must_use]
    pub fn asn_count(&self) -> usize {
        self.asns
            .iter()
            .filter(|a| **a != 0)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The name of a policy rule id.
    #[must_use]
    pub fn rule(&self, id: u16) -> &str {
        match self.rules.get(usize::from(id)) {
            Some(name) => name,
            None if id == 0 => policy::RULE_UNKNOWN,
            None => "unnamed rule",
        }
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

/// The group slot of an inside address, or `None` for a remote one. The most specific
/// network wins, as in the kernel's LPM lookup.
#[must_use]
pub fn inside_group(config: &Config, addr: IpAddr) -> Option<u32> {
    longest_match(config.inside_networks(), addr)
}

/// The value of the most specific of `networks` that holds `addr`.
pub fn longest_match<T>(networks: impl IntoIterator<Item = (IpNet, T)>, addr: IpAddr) -> Option<T> {
    networks
        .into_iter()
        .filter(|(net, _)| net.contains(&addr))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, value)| value)
}

/// The name of a config group slot (`Config::inside_networks`): 0 is the home networks
/// outside every group.
#[must_use]
pub fn group_name(config: &Config, slot: u32) -> &str {
    match slot {
        0 => UNGROUPED,
        s => config.groups[s as usize - 1].name.as_str(),
    }
}

/// Builds the kernel tables and label names.
pub fn plan(config: &Config, geo: &GeoDb) -> Result<Plan, TablesError> {
    plan_after(config, geo, None)
}

/// Like [`plan`], keeping every slot of `previous` (a reload): counters and flows already in
/// the kernel are indexed by group, country and ASN slots, so a name must keep its slot.
/// New groups, codes and ASNs take new slots; a group or named ASN that left the config
/// keeps its slot (and its counters' label) until a restart.
pub fn plan_after(
    config: &Config,
    geo: &GeoDb,
    previous: Option<&Labels>,
) -> Result<Plan, TablesError> {
    let groups = group_slots(config, previous)?;
    // The slot of each config group, in config order (`Config::inside_networks` numbers
    // them 1.. in that order; 0 is ungrouped).
    let slot_of_group: Vec<u32> = std::iter::once(GROUP_UNGROUPED)
        .chain(config.groups.iter().map(|g| {
            groups
                .iter()
                .position(|n| *n == g.name)
                .map_or(GROUP_UNGROUPED, |i| i as u32)
        }))
        .collect();

    let mut codes: BTreeSet<CountryCode> = geo.countries();
    codes.extend(config.home.countries.iter().copied());
    codes.extend(config.home.policy.codes());
    for g in &config.groups {
        codes.extend(g.policy.codes());
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

    let (asns, asn_slot) = asn_slots(config, geo, previous)?;

    let word = |l: &Location| {
        location(
            l.country
                .and_then(|c| country_slot.get(&c).copied())
                .unwrap_or(0),
            l.asn.and_then(|a| asn_slot.get(&a).copied()).unwrap_or(0),
        )
    };
    let (v4, v6) = address_ranges(config, geo, &slot_of_group, word);
    let v6_table = Tier6::build(&v6)?;

    let policy = policy::tables(
        config,
        &groups,
        &countries,
        &asns,
        previous.map(|p| p.rules.as_slice()),
    )?;
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
            policy: policy.country,
            policy_asn: policy.asn,
            country_codes,
        },
        labels: Labels {
            groups,
            countries,
            asns,
            rules: policy.rules,
            watch: crate::watch::entry_slots(
                &config.watchlists,
                previous.map(|p| p.watch.as_slice()),
            )
            .ok_or(TablesError::TooManyWatchSlots {
                max: crate::watch::MAX_ENTRIES,
            })?,
        },
    })
}

/// Group slots by name: `previous`'s slots first (slot 0 is [`UNGROUPED`]), then the
/// config's new groups in order.
fn group_slots(config: &Config, previous: Option<&Labels>) -> Result<Vec<String>, TablesError> {
    let mut groups = previous.map_or_else(|| vec![UNGROUPED.to_owned()], |p| p.groups.clone());
    for g in &config.groups {
        if !groups.contains(&g.name) {
            groups.push(g.name.clone());
        }
    }
    if groups.len() > MAX_GROUPS as usize {
        return Err(TablesError::TooManyGroupSlots {
            count: groups.len() - 1,
            max: MAX_GROUPS - 1,
        });
    }
    Ok(groups)
}

/// ASN slots: the AS number of each slot (0 = free or unknown), and the slot the address
/// words use for each AS number.
///
/// Slots `1..NAMED_ASN_SLOTS` hold the ASNs that `[metrics] asns` and the policies name
/// (the kernel keeps per-ASN counters and ASN rules for these slots only); the ASNs of
/// the GeoIP data take slots from
/// `NAMED_ASN_SLOTS` up. Named ASNs are looked up by their named slot, the others by their
/// data slot, so an ASN that leaves the list stops being counted on its own.
fn asn_slots(
    config: &Config,
    geo: &GeoDb,
    previous: Option<&Labels>,
) -> Result<(Vec<u32>, HashMap<u32, u32>), TablesError> {
    let named_end = NAMED_ASN_SLOTS as usize;
    let mut asns: Vec<u32> = previous.map_or_else(|| vec![0; named_end], |p| p.asns.clone());
    let named = config.named_asns();
    for &asn in &named {
        if asns[1..named_end].contains(&asn) {
            continue;
        }
        let free = asns[1..named_end].iter().position(|a| *a == 0).ok_or(
            TablesError::TooManyNamedAsns {
                max: NAMED_ASN_SLOTS - 1,
            },
        )?;
        asns[1 + free] = asn;
    }
    let known: BTreeSet<u32> = asns[named_end..].iter().copied().collect();
    asns.extend(geo.asns().difference(&known).copied());
    if asns.len() > ASN_SLOTS_MAX as usize {
        return Err(TablesError::TooManyAsns {
            count: asns.len() - named_end,
            max: ASN_SLOTS_MAX - NAMED_ASN_SLOTS,
        });
    }
    let mut slot: HashMap<u32, u32> = asns
        .iter()
        .enumerate()
        .skip(named_end)
        .map(|(i, a)| (*a, i as u32))
        .collect();
    for (i, a) in asns.iter().enumerate().take(named_end).skip(1) {
        if named.contains(a) {
            slot.insert(*a, i as u32);
        }
    }
    Ok((asns, slot))
}

/// Every address range with its word: the inside networks overlaid on the locations (an
/// inside address is never located), adjacent equal words joined. `slot_of_group` maps
/// the config's group numbering to group slots.
fn address_ranges(
    config: &Config,
    geo: &GeoDb,
    slot_of_group: &[u32],
    word: impl Fn(&Location) -> u32,
) -> (Ranges<u32>, Ranges<u128>) {
    let (inside4, inside6) = inside_ranges(config, slot_of_group);
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
fn inside_ranges(config: &Config, slot_of_group: &[u32]) -> (Ranges<u32>, Ranges<u128>) {
    let mut nets: Vec<(IpNet, u32)> = config
        .inside_networks()
        .map(|(net, g)| (net, slot_of_group[g as usize]))
        .collect();
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
        let (v4, v6) = inside_ranges(&config, &[0, 1]);
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

#[cfg(test)]
mod slot_tests {
    use std::{fmt::Write as _, net::Ipv4Addr, path::Path};

    use monitor_common::geo::{asn_slot, group_slot};

    use super::*;
    use crate::dir24::Dir24;

    /// A config over `dir`'s `geo.csv` and `asn.tsv`, with `groups` and `[metrics] asns`.
    fn config(dir: &Path, groups: &[(&str, &str, &str)], asns: &str) -> Config {
        let mut text = format!(
            "[home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"IN\"]\n\
             [geoip]\nsources = [{{ format = \"csv\", path = \"{0}/geo.csv\" }}, \
             {{ format = \"iptoasn\", path = \"{0}/asn.tsv\" }}]\n\
             [metrics]\nasns = [{asns}]\n",
            dir.display()
        );
        for (name, net, allow) in groups {
            writeln!(
                text,
                "[[group]]\nname = \"{name}\"\nnetworks = [\"{net}\"]\nallow = [{allow}]"
            )
            .expect("write to a String");
        }
        Config::parse(&text, &dir.join("exfilmon.toml")).expect("valid config")
    }

    fn geo(dir: &Path) -> GeoDb {
        std::fs::write(
            dir.join("geo.csv"),
            "203.0.113.0,203.0.113.63,CN\n203.0.113.64,203.0.113.127,SG\n",
        )
        .expect("write");
        // AS64500..64502 are documentation ASNs (RFC 5398).
        std::fs::write(
            dir.join("asn.tsv"),
            "203.0.113.0\t203.0.113.31\t64500\tCN\tA\n\
             203.0.113.32\t203.0.113.63\t64501\tCN\tB\n\
             203.0.113.64\t203.0.113.127\t64502\tSG\tC\n",
        )
        .expect("write");
        GeoDb::load(&config(dir, &[], "").geoip.sources).expect("geo")
    }

    /// The word the plan's IPv4 table gives `addr`.
    fn word(plan: &Plan, addr: Ipv4Addr) -> u32 {
        let v4 = &plan.tables.geo.v4;
        let mut l1 = vec![0u32; monitor_common::geo::L1_WORDS as usize];
        let blocks = crate::dir24::blocks_needed(v4);
        let mut l2 = vec![0u32; (blocks * monitor_common::geo::L2_BLOCK_WORDS) as usize];
        let mut table = Dir24 {
            l1: &mut l1,
            l2: &mut l2,
            base: 0,
        };
        table.fill(v4).expect("fits");
        table.lookup(u32::from(addr))
    }

    #[test]
    fn group_slots_follow_names_across_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let geo = geo(dir.path());
        let first = config(
            dir.path(),
            &[
                ("phones", "192.0.2.0/26", ""),
                ("laptops", "192.0.2.64/26", ""),
            ],
            "",
        );
        let plan1 = plan(&first, &geo).expect("plan");
        assert_eq!(plan1.labels.groups, ["ungrouped", "phones", "laptops"]);

        // Reordered, one removed, one added: the survivors keep their slots, the new group
        // takes a new one, the removed one keeps its name.
        let second = config(
            dir.path(),
            &[
                ("cameras", "192.0.2.128/26", "\"CN\""),
                ("laptops", "192.0.2.64/26", "\"SG\""),
            ],
            "",
        );
        let plan2 = plan_after(&second, &geo, Some(&plan1.labels)).expect("plan");
        assert_eq!(
            plan2.labels.groups,
            ["ungrouped", "phones", "laptops", "cameras"]
        );
        assert_eq!(group_slot(word(&plan2, Ipv4Addr::new(192, 0, 2, 70))), 2);
        assert_eq!(group_slot(word(&plan2, Ipv4Addr::new(192, 0, 2, 130))), 3);
        assert_eq!(
            group_slot(word(&plan2, Ipv4Addr::new(192, 0, 2, 10))),
            GROUP_UNGROUPED,
            "the removed group's network is plain home now"
        );
        // The policy follows the slots: laptops (slot 2) may reach SG, cameras (3) CN.
        let slot = |code: &str| {
            plan2
                .labels
                .countries
                .iter()
                .position(|c| c.is_some_and(|c| c.to_string() == code))
                .expect("slot") as u32
        };
        let policy: HashMap<u32, u32> = plan2.tables.policy.iter().copied().collect();
        let verdict = |g: u32, code: &str| {
            monitor_common::policy::verdict(
                policy[&monitor_common::class::policy_index(g, slot(code))],
            )
        };
        assert_eq!(verdict(2, "SG"), Verdict::Allowed.code());
        assert_eq!(verdict(3, "CN"), Verdict::Allowed.code());
        assert_eq!(verdict(2, "CN"), Verdict::Violation.code());
    }

    #[test]
    fn policy_asns_take_named_slots_and_rules_keep_their_ids_across_reloads() {
        use monitor_common::policy::{asn_index, rule};
        let dir = tempfile::tempdir().expect("tempdir");
        let geo = geo(dir.path());
        let with_rules = |deny: &str, allow: &str| {
            let mut c = config(dir.path(), &[("phones", "192.0.2.0/26", "")], "64501");
            c.groups[0].policy.deny_asns = vec![deny.parse().expect("asn")];
            c.groups[0].policy.allow_asns = vec![allow.parse().expect("asn")];
            c
        };
        let b = Ipv4Addr::new(203, 0, 113, 40); // AS64501, counted and ruled
        let c = Ipv4Addr::new(203, 0, 113, 70); // AS64502
        let a = Ipv4Addr::new(203, 0, 113, 10); // AS64500

        let plan1 = plan(&with_rules("64502", "64500"), &geo).expect("plan");
        assert_eq!(&plan1.labels.asns[..4], [0, 64501, 64502, 64500]);
        assert_eq!(
            asn_slot(word(&plan1, c)),
            2,
            "a denied ASN takes a named slot"
        );
        assert_eq!(asn_slot(word(&plan1, a)), 3, "an allowed one too");
        assert_eq!(asn_slot(word(&plan1, b)), 1);
        let words: HashMap<u32, u32> = plan1.tables.policy_asn.iter().copied().collect();
        let name = |p: &Plan, w: u32| p.labels.rule(rule(w)).to_owned();
        assert_eq!(
            name(&plan1, words[&asn_index(1, 2)]),
            "group phones: deny_asns 64502"
        );
        assert_eq!(
            name(&plan1, words[&asn_index(1, 3)]),
            "group phones: allow_asns 64500"
        );
        assert_eq!(words[&asn_index(1, 1)], 0, "counted, not ruled");
        assert_eq!(
            words[&asn_index(0, 2)],
            0,
            "not a rule of ungrouped addresses"
        );

        // Reload with the roles swapped: slots stay, the old rules keep their ids (their
        // names stay valid for flows already tracked), the words follow the new config.
        let plan2 =
            plan_after(&with_rules("64500", "64502"), &geo, Some(&plan1.labels)).expect("plan");
        assert_eq!(&plan2.labels.asns[..4], [0, 64501, 64502, 64500]);
        assert_eq!(
            plan2.labels.rules[..plan1.labels.rules.len()],
            plan1.labels.rules[..]
        );
        let words: HashMap<u32, u32> = plan2.tables.policy_asn.iter().copied().collect();
        assert_eq!(
            name(&plan2, words[&asn_index(1, 2)]),
            "group phones: allow_asns 64502"
        );
        assert_eq!(
            name(&plan2, words[&asn_index(1, 3)]),
            "group phones: deny_asns 64500"
        );
    }

    #[test]
    fn group_slots_run_out_only_after_a_restarts_worth_of_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let geo = geo(dir.path());
        // 62 groups, each with a /32 of its own; 31 at a time.
        let groups: Vec<(String, String)> = (0..62)
            .map(|i| (format!("g{i}"), format!("192.0.2.{}/32", i + 1)))
            .collect();
        let batch = |range: std::ops::Range<usize>| -> Config {
            let refs: Vec<(&str, &str, &str)> = groups[range]
                .iter()
                .map(|(n, net)| (n.as_str(), net.as_str(), ""))
                .collect();
            config(dir.path(), &refs, "")
        };
        let plan1 = plan(&batch(0..31), &geo).expect("31 groups fit");
        let err =
            plan_after(&batch(31..62), &geo, Some(&plan1.labels)).expect_err("31 more do not");
        assert!(
            matches!(err, TablesError::TooManyGroupSlots { count: 62, max: 31 }),
            "{err}"
        );
    }

    #[test]
    fn named_asns_take_the_reserved_slots_and_keep_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let geo = geo(dir.path());
        let a = Ipv4Addr::new(203, 0, 113, 10); // AS64500
        let b = Ipv4Addr::new(203, 0, 113, 40); // AS64501
        let c = Ipv4Addr::new(203, 0, 113, 70); // AS64502

        let plan1 = plan(&config(dir.path(), &[], "64501"), &geo).expect("plan");
        assert_eq!(plan1.labels.asns[1], 64501);
        assert_eq!(asn_slot(word(&plan1, b)), 1, "named: a reserved slot");
        let data_slot_a = asn_slot(word(&plan1, a));
        assert!(data_slot_a >= NAMED_ASN_SLOTS, "not named: a data slot");
        assert_eq!(plan1.labels.asns[data_slot_a as usize], 64500);
        assert_eq!(plan1.labels.asn_count(), 3);

        // Reload naming 64502 instead: it takes the next reserved slot, 64501 keeps slot 1
        // (its counters keep their label) but is no longer counted on its own.
        let plan2 =
            plan_after(&config(dir.path(), &[], "64502"), &geo, Some(&plan1.labels)).expect("plan");
        assert_eq!(&plan2.labels.asns[..3], [0, 64501, 64502]);
        assert_eq!(asn_slot(word(&plan2, c)), 2);
        assert!(asn_slot(word(&plan2, b)) >= NAMED_ASN_SLOTS);
        assert_eq!(
            asn_slot(word(&plan2, a)),
            data_slot_a,
            "data slots are stable"
        );
        // Every slot a word uses names its AS number in the ASNS table.
        let asns: HashMap<u32, u32> = plan2.tables.geo.asns.iter().copied().collect();
        for (addr, want) in [(a, 64500), (b, 64501), (c, 64502)] {
            assert_eq!(asns[&asn_slot(word(&plan2, addr))], want, "{addr}");
        }
    }
}
