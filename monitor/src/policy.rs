//! Policies: which rule decides the verdict of traffic between a group and a remote
//! address, the rule's name, and the kernel's policy words.
//!
//! Precedence, highest first (the first rule that matches decides):
//!
//! | rank | rule | verdict |
//! |---|---|---|
//! | 5 | the ASN is in the group's `deny_asns` | violation |
//! | 4 | the country is in the group's `deny` | violation |
//! | 3 | the country is in `[home] countries` | domestic |
//! | 2 | the ASN is in the group's `allow_asns` | allowed |
//! | 1 | the country is in the group's `allow` | allowed |
//! | 0 | none: a known country | violation |
//! | 0 | none: an unknown country | unknown |
//!
//! Ungrouped inside addresses follow `[home]`'s lists. The kernel holds the country
//! rules in `POLICY` and the ASN rules in `POLICY_ASN` (for the named ASN slots), and takes
//! the higher-ranked word of the two (see `monitor_common::policy`).

use std::collections::HashMap;

use monitor_common::{
    class::{GROUP_UNGROUPED, NAMED_ASN_SLOTS, policy_index},
    policy::{
        MODE_DROPPED, MODE_DRY_RUN, RANK_ALLOW, RANK_ALLOW_ASN, RANK_DEFAULT, RANK_DENY,
        RANK_DENY_ASN, RANK_DOMESTIC, asn_index, drop_index, word,
    },
};

use crate::{
    config::Config,
    country::CountryCode,
    ebpf::Counters,
    tables::{Labels, Verdict},
};

/// The rule of unknown countries; rule id 0, so that a policy word the daemon never
/// wrote names it.
pub const RULE_UNKNOWN: &str = "default: unknown country";
/// The rule of known countries that no rule allows.
pub const RULE_NOT_ALLOWED: &str = "default: not allowed";

/// One country of an `allow` or `deny` list, and the `@jurisdiction` that brought it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub code: CountryCode,
    /// The jurisdiction's name (without `@`) when the code came from one.
    pub via: Option<String>,
}

impl Listed {
    /// `CN`, or `@sanctioned (CN)`.
    fn describe(&self) -> String {
        match &self.via {
            Some(j) => format!("@{j} ({})", self.code),
            None => self.code.to_string(),
        }
    }
}

/// The rules of `[home]` (for inside addresses in no group) or of one `[[group]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Allowed countries, jurisdictions expanded; the first listing of a code names it.
    pub allow: Vec<Listed>,
    /// Allowed AS numbers.
    pub allow_asns: Vec<u32>,
    /// Denied countries; a denial wins over every allow and over domestic.
    pub deny: Vec<Listed>,
    /// Denied AS numbers; they win over everything.
    pub deny_asns: Vec<u32>,
    /// Drop violation packets (groups only; `[home]` never enforces).
    pub enforce: bool,
}

impl Policy {
    /// Every AS number the policy names.
    pub fn asns(&self) -> impl Iterator<Item = u32> + '_ {
        self.deny_asns.iter().chain(&self.allow_asns).copied()
    }

    /// Every country code the policy names.
    pub fn codes(&self) -> impl Iterator<Item = CountryCode> + '_ {
        self.allow.iter().chain(&self.deny).map(|l| l.code)
    }
}

/// A verdict, the rule that decided it, and the rule's rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rank: u32,
    pub rule: String,
}

/// Whose rules: `group phones`, or `home` for ungrouped addresses.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The group's name; `None` for `[home]`.
    pub group: Option<&'a str>,
    pub policy: &'a Policy,
}

impl Scope<'_> {
    fn name(&self, rest: &str) -> String {
        match self.group {
            Some(g) => format!("group {g}: {rest}"),
            None => format!("home: {rest}"),
        }
    }
}

impl Config {
    /// The rules for group slot `group` in config numbering (0 = ungrouped, `i + 1` =
    /// `groups[i]`); a number past the groups gets `[home]`'s rules.
    #[must_use]
    pub fn scope(&self, group: u32) -> Scope<'_> {
        match group {
            GROUP_UNGROUPED => None,
            g => self.groups.get(g as usize - 1),
        }
        .map_or(
            Scope {
                group: None,
                policy: &self.home.policy,
            },
            |g| Scope {
                group: Some(&g.name),
                policy: &g.policy,
            },
        )
    }
}

/// The decision of the country rules alone.
#[must_use]
pub fn by_country(config: &Config, scope: Scope<'_>, country: Option<CountryCode>) -> Decision {
    let decision = |verdict, rank, rule| Decision {
        verdict,
        rank,
        rule,
    };
    let Some(country) = country else {
        return decision(Verdict::Unknown, RANK_DEFAULT, RULE_UNKNOWN.to_owned());
    };
    let p = scope.policy;
    if let Some(l) = p.deny.iter().find(|l| l.code == country) {
        let rule = scope.name(&format!("deny {}", l.describe()));
        return decision(Verdict::Violation, RANK_DENY, rule);
    }
    if config.home.countries.contains(&country) {
        return decision(
            Verdict::Domestic,
            RANK_DOMESTIC,
            format!("domestic ({country})"),
        );
    }
    if let Some(l) = p.allow.iter().find(|l| l.code == country) {
        let rule = scope.name(&format!("allow {}", l.describe()));
        return decision(Verdict::Allowed, RANK_ALLOW, rule);
    }
    decision(
        Verdict::Violation,
        RANK_DEFAULT,
        RULE_NOT_ALLOWED.to_owned(),
    )
}

/// The decision of the ASN rules alone, if one covers `asn`.
#[must_use]
pub fn by_asn(scope: Scope<'_>, asn: u32) -> Option<Decision> {
    let p = scope.policy;
    let (verdict, rank, list) = if p.deny_asns.contains(&asn) {
        (Verdict::Violation, RANK_DENY_ASN, "deny_asns")
    } else if p.allow_asns.contains(&asn) {
        (Verdict::Allowed, RANK_ALLOW_ASN, "allow_asns")
    } else {
        return None;
    };
    Some(Decision {
        verdict,
        rank,
        rule: scope.name(&format!("{list} {asn}")),
    })
}

/// The decision for traffic between an inside address of `group` (config numbering, see
/// [`Config::scope`]) and a remote address in `country` and `asn`: what the kernel
/// decides, computed in userspace (`exfilmon lookup`, tests).
#[must_use]
pub fn decide(
    config: &Config,
    group: u32,
    country: Option<CountryCode>,
    asn: Option<u32>,
) -> Decision {
    let scope = config.scope(group);
    let by_country = by_country(config, scope, country);
    match asn.and_then(|a| by_asn(scope, a)) {
        Some(a) if a.rank > by_country.rank => a,
        _ => by_country,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "more than {max} distinct policy rules since the daemon started; rules keep their \
         ids until a restart, so restart to apply this config"
    )]
    TooManyRules { max: usize },
}

/// Rule ids by name, append-only: a rule keeps its id across reloads, so the rule id of a
/// flow the kernel tracks always names the rule that decided it.
struct Rules {
    names: Vec<String>,
    ids: HashMap<String, u16>,
}

impl Rules {
    fn new(previous: Option<&[String]>) -> Self {
        let names = previous
            .filter(|p| !p.is_empty())
            .map_or_else(|| vec![RULE_UNKNOWN.to_owned()], <[String]>::to_vec);
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), u16::try_from(i).unwrap_or(u16::MAX)))
            .collect();
        Self { names, ids }
    }

    fn id(&mut self, name: String) -> Result<u16, PolicyError> {
        if let Some(id) = self.ids.get(&name) {
            return Ok(*id);
        }
        let id = u16::try_from(self.names.len()).map_err(|_| PolicyError::TooManyRules {
            max: usize::from(u16::MAX) + 1,
        })?;
        self.ids.insert(name.clone(), id);
        self.names.push(name);
        Ok(id)
    }
}

/// The kernel's policy tables of one config.
#[derive(Debug, Default)]
pub struct PolicyTables {
    /// `(class::policy_index, word)` for every group slot × country slot.
    pub country: Vec<(u32, u32)>,
    /// `(policy::asn_index, word)` for every group slot × named ASN slot, 0 where no
    /// ASN rule applies (so that a reload clears the rules it removed).
    pub asn: Vec<(u32, u32)>,
    /// Rule names by id (the previous ones first, unchanged).
    pub rules: Vec<String>,
}

/// Builds the policy words for the group slots `groups` (names, slot 0 ungrouped), the
/// country slots `countries` and the ASN slots `asns` (AS number by slot; the named
/// slots are `1..NAMED_ASN_SLOTS`), keeping the rule ids of `previous_rules`.
///
/// # Errors
///
/// [`PolicyError::TooManyRules`] when the rule ids run out.
pub fn tables(
    config: &Config,
    groups: &[String],
    countries: &[Option<CountryCode>],
    asns: &[u32],
    previous_rules: Option<&[String]>,
) -> Result<PolicyTables, PolicyError> {
    let mut rules = Rules::new(previous_rules);
    let mut out = PolicyTables::default();
    for (g, name) in groups.iter().enumerate() {
        // A group that left the config has no addresses any more: home's rules.
        let in_config = if g == 0 {
            GROUP_UNGROUPED
        } else {
            config
                .groups
                .iter()
                .position(|c| c.name == *name)
                .map_or(u32::MAX, |i| i as u32 + 1)
        };
        let scope = config.scope(in_config);
        let mut to_word = |d: Decision| -> Result<u32, PolicyError> {
            let drop = scope.policy.enforce && d.verdict == Verdict::Violation;
            Ok(word(d.verdict.code(), d.rank, rules.id(d.rule)?, drop))
        };
        for (slot, code) in countries.iter().enumerate() {
            let w = to_word(by_country(config, scope, *code))?;
            out.country.push((policy_index(g as u32, slot as u32), w));
        }
        for slot in 1..NAMED_ASN_SLOTS {
            let asn = asns.get(slot as usize).copied().unwrap_or(0);
            let w = match (asn != 0).then(|| by_asn(scope, asn)).flatten() {
                Some(d) => to_word(d)?,
                None => 0,
            };
            out.asn.push((asn_index(g as u32, slot), w));
        }
    }
    out.rules = rules.names;
    Ok(out)
}

/// The modes of the drop counters, as the metric and replay name them.
pub const DROP_MODES: [(u32, &str); 2] = [(MODE_DROPPED, "dropped"), (MODE_DRY_RUN, "dry_run")];

/// Calls `f(group, mode, packets)` for every group slot `labels` names and both modes,
/// zeros included, so that every series exists from the start.
pub fn drop_series(counters: &Counters, labels: &Labels, mut f: impl FnMut(&str, &str, u64)) {
    for (g, name) in (0u32..).zip(&labels.groups) {
        for (mode, mode_name) in DROP_MODES {
            let index = drop_index(g, mode);
            let packets = counters
                .policy_drops
                .iter()
                .find(|(i, _)| *i == index)
                .map_or(0, |(_, c)| c.packets);
            f(name, mode_name, packets);
        }
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::policy::{drops, rank, rule, verdict};

    use super::*;

    /// A config with groups `phones` (every kind of rule, enforcing) and `laptops`, and
    /// `[home]` rules for ungrouped addresses.
    fn config() -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("geo.csv"), "1.0.0.0,1.0.0.255,AU\n").expect("write");
        let text = r#"
[jurisdictions]
eu = ["DE", "FR", "NL"]
sanctioned = ["KP", "IR"]

[home]
networks = ["192.0.2.0/24"]
countries = ["IN"]
allow = ["SG"]
deny_asns = [64500]

[[group]]
name = "phones"
networks = ["192.0.2.0/26"]
allow = ["@eu", "US", "CN"]
allow_asns = [13335, 64501]
deny = ["@sanctioned", "FR", "CN"]
deny_asns = [4134, 64501]
enforce = true

[[group]]
name = "laptops"
networks = ["192.0.2.64/26"]
allow = ["@domestic", "US"]
deny = ["IN"]

[geoip]
sources = [{ format = "csv", path = "geo.csv" }]
"#;
        Config::parse(text, &dir.path().join("exfilmon.toml")).expect("valid config")
    }

    /// A parsed code, as `decide` takes it.
    fn cc(s: &str) -> Option<CountryCode> {
        let code = s.parse().ok();
        assert!(code.is_some(), "{s} is a code");
        code
    }

    /// (group, country, asn, verdict, rule).
    type Case = (u32, Option<CountryCode>, Option<u32>, Verdict, &'static str);

    #[test]
    fn precedence_table() {
        let c = config();
        let phones = 1;
        // (group, country, asn, verdict, rule)
        #[rustfmt::skip]
        let cases: [Case; 16] = [
            // deny_asns beats a country allow, domestic and an allow_asns of the same ASN.
            (phones, cc("US"), Some(4134), Verdict::Violation, "group phones: deny_asns 4134"),
            (phones, cc("IN"), Some(4134), Verdict::Violation, "group phones: deny_asns 4134"),
            (phones, cc("US"), Some(64501), Verdict::Violation, "group phones: deny_asns 64501"),
            (phones, None, Some(4134), Verdict::Violation, "group phones: deny_asns 4134"),
            // deny (country) beats domestic, allow_asns and an allow of the same code.
            (phones, cc("KP"), Some(13335), Verdict::Violation, "group phones: deny @sanctioned (KP)"),
            (phones, cc("FR"), None, Verdict::Violation, "group phones: deny FR"),
            (phones, cc("CN"), None, Verdict::Violation, "group phones: deny CN"),
            // domestic beats allow_asns.
            (phones, cc("IN"), Some(13335), Verdict::Domestic, "domestic (IN)"),
            // allow_asns beats the default and lifts an unknown country.
            (phones, cc("BR"), Some(13335), Verdict::Allowed, "group phones: allow_asns 13335"),
            (phones, None, Some(13335), Verdict::Allowed, "group phones: allow_asns 13335"),
            // allow (country), through a jurisdiction or directly.
            (phones, cc("DE"), Some(1), Verdict::Allowed, "group phones: allow @eu (DE)"),
            (phones, cc("US"), None, Verdict::Allowed, "group phones: allow US"),
            // defaults.
            (phones, cc("BR"), Some(1), Verdict::Violation, RULE_NOT_ALLOWED),
            (phones, None, None, Verdict::Unknown, RULE_UNKNOWN),
            // Ungrouped addresses follow [home]; another group's rules do not leak.
            (0, cc("SG"), Some(4134), Verdict::Allowed, "home: allow SG"),
            (0, cc("SG"), Some(64500), Verdict::Violation, "home: deny_asns 64500"),
        ];
        for (group, country, asn, verdict, rule) in cases {
            let d = decide(&c, group, country, asn);
            assert_eq!(
                (d.verdict, d.rule.as_str()),
                (verdict, rule),
                "group {group}, country {country:?}, asn {asn:?}"
            );
        }
        // A deny of a domestic code wins; @domestic expands to [home] countries.
        let laptops = 2;
        let d = decide(&c, laptops, cc("IN"), None);
        assert_eq!(
            (d.verdict, d.rule.as_str()),
            (Verdict::Violation, "group laptops: deny IN")
        );
        assert_eq!(
            c.groups[1].policy.allow[0],
            Listed {
                code: "IN".parse().expect("IN"),
                via: Some("domestic".into())
            }
        );
    }

    #[test]
    fn kernel_words_carry_verdict_rule_rank_and_drop() {
        let c = config();
        let groups: Vec<String> = ["ungrouped", "phones", "laptops"]
            .map(String::from)
            .to_vec();
        let countries = vec![None, cc("US"), cc("KP"), cc("IN")];
        let mut asns = vec![0u32; NAMED_ASN_SLOTS as usize];
        asns[1] = 4134;
        asns[2] = 13335;
        let t = tables(&c, &groups, &countries, &asns, None).expect("tables");
        let country: HashMap<u32, u32> = t.country.iter().copied().collect();
        let asn: HashMap<u32, u32> = t.asn.iter().copied().collect();
        assert_eq!(country.len(), 3 * 4);
        assert_eq!(asn.len(), 3 * (NAMED_ASN_SLOTS as usize - 1));
        let name = |w: u32| t.rules[usize::from(rule(w))].as_str();

        let kp = country[&policy_index(1, 2)];
        assert_eq!(
            (verdict(kp), rank(kp)),
            (Verdict::Violation.code(), RANK_DENY)
        );
        assert_eq!(name(kp), "group phones: deny @sanctioned (KP)");
        assert!(drops(kp), "phones enforce");
        let us = country[&policy_index(1, 1)];
        assert!(!drops(us), "allowed traffic never drops");
        let unknown = country[&policy_index(1, 0)];
        assert_eq!(unknown, 0, "unknown, rule 0: the same as an unwritten word");
        assert_eq!(name(unknown), RULE_UNKNOWN);
        let laptops_us = country[&policy_index(2, 1)];
        let laptops_kp = country[&policy_index(2, 2)];
        assert_eq!(name(laptops_kp), RULE_NOT_ALLOWED);
        assert!(!drops(laptops_kp), "laptops do not enforce");
        assert_eq!(name(laptops_us), "group laptops: allow US");

        let deny = asn[&asn_index(1, 1)];
        assert_eq!(name(deny), "group phones: deny_asns 4134");
        assert!(drops(deny));
        assert!(
            deny > country[&policy_index(1, 3)],
            "deny_asns outranks domestic"
        );
        let allow = asn[&asn_index(1, 2)];
        assert_eq!(verdict(allow), Verdict::Allowed.code());
        assert!(
            allow < country[&policy_index(1, 3)],
            "domestic outranks allow_asns"
        );
        assert!(allow > unknown && allow > us);
        assert_eq!(asn[&asn_index(2, 1)], 0, "laptops have no ASN rule");
        assert_eq!(asn[&asn_index(1, 3)], 0, "a free named slot has no rule");

        // Rule ids are stable across a rebuild from the same names, and new rules append.
        let again = tables(&c, &groups, &countries, &asns, Some(&t.rules)).expect("tables");
        assert_eq!(again.rules, t.rules);
        assert_eq!(again.country, t.country);
        let more = vec![None, cc("US"), cc("KP"), cc("IN"), cc("DE")];
        let grown = tables(&c, &groups, &more, &asns, Some(&t.rules)).expect("tables");
        assert_eq!(grown.rules[..t.rules.len()], t.rules[..]);
        assert!(grown.rules.len() > t.rules.len());
    }

    #[test]
    fn rule_ids_run_out_with_an_error() {
        let names: Vec<String> = (0..=u16::MAX).map(|i| format!("rule {i}")).collect();
        let mut rules = Rules::new(Some(&names));
        assert_eq!(rules.id("rule 7".into()).expect("known"), 7);
        assert!(matches!(
            rules.id("one more".into()),
            Err(PolicyError::TooManyRules { max: 65536 })
        ));
    }
}
