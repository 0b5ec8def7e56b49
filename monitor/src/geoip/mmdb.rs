//! MaxMind DB files (`.mmdb`), read with the `maxminddb` crate.

use std::{
    collections::HashMap,
    fmt,
    io::Read,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use maxminddb::{MaxMindDbError, Reader, WithinOptions};
use serde::{Deserialize, de};

use super::{GeoIpError, Location, Row, Rows, text::asn_number};
use crate::country::CountryCode;

/// The fields of a MaxMind DB record that are used; all optional, others
/// ignored. GeoLite2 and DB-IP have `country` / `registered_country` maps
/// and `autonomous_system_number`; ipinfo lite has `country_code`, `asn`
/// (`"AS13335"`) and a `country` name.
#[derive(Deserialize)]
struct MmdbRecord {
    #[serde(default)]
    country: Option<MmdbCountry>,
    #[serde(default)]
    registered_country: Option<MmdbCountry>,
    #[serde(default)]
    country_code: Option<MmdbIso>,
    #[serde(default)]
    autonomous_system_number: Option<MmdbAsn>,
    #[serde(default)]
    asn: Option<MmdbAsn>,
}

impl MmdbRecord {
    fn location(&self) -> Location {
        let iso = |c: &Option<MmdbCountry>| c.as_ref().and_then(|c| c.0);
        Location {
            country: iso(&self.country)
                .or(iso(&self.registered_country))
                .or(self.country_code.as_ref().and_then(|c| c.0)),
            asn: self
                .autonomous_system_number
                .as_ref()
                .and_then(|a| a.0)
                .or(self.asn.as_ref().and_then(|a| a.0)),
        }
    }
}

/// A `country` value: a map whose `iso_code` is used, or (ipinfo) a country
/// name, which is ignored.
struct MmdbCountry(Option<CountryCode>);

impl<'de> Deserialize<'de> for MmdbCountry {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = MmdbCountry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map with iso_code, or a country name")
            }
            fn visit_str<E: de::Error>(self, _name: &str) -> Result<MmdbCountry, E> {
                Ok(MmdbCountry(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<MmdbCountry, A::Error> {
                let mut code = None;
                while let Some(key) = map.next_key::<&str>()? {
                    if key == "iso_code" {
                        code = map.next_value::<MmdbIso>()?.0;
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                Ok(MmdbCountry(code))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A two-letter country code string.
struct MmdbIso(Option<CountryCode>);

impl<'de> Deserialize<'de> for MmdbIso {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <&str>::deserialize(d)?;
        CountryCode::parse_data(text)
            .map(MmdbIso)
            .map_err(de::Error::custom)
    }
}

/// An AS number: an unsigned integer (GeoLite2, DB-IP) or a string
/// `"AS13335"` (ipinfo). 0 is no AS.
struct MmdbAsn(Option<u32>);

impl<'de> Deserialize<'de> for MmdbAsn {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = MmdbAsn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number (integer, or a string like \"AS13335\")")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<MmdbAsn, E> {
                u32::try_from(n)
                    .map(|n| MmdbAsn((n != 0).then_some(n)))
                    .map_err(|_| E::custom(format!("AS number {n} does not fit in 32 bits")))
            }
            fn visit_u128<E: de::Error>(self, n: u128) -> Result<MmdbAsn, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("AS number {n} does not fit in 32 bits")))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<MmdbAsn, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("AS number {n} is negative")))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<MmdbAsn, E> {
                asn_number(text)
                    .map(MmdbAsn)
                    .map_err(|e| E::custom(format!("{text:?} is not a 32-bit AS number ({e})")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Reads every network of a MaxMind DB file. Returns the rows and the
/// database's build time.
pub(super) fn read_mmdb(
    path: &Path,
    mut file: impl Read,
) -> Result<(Rows, Option<SystemTime>), GeoIpError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| GeoIpError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
    let bad_db = |source| GeoIpError::Mmdb {
        path: path.to_owned(),
        source,
    };
    let reader = Reader::from_source(bytes).map_err(bad_db)?;
    let built = UNIX_EPOCH.checked_add(Duration::from_secs(reader.metadata().build_epoch));
    let mut rows = Rows::default();
    // Many networks share a record (GeoLite2-Country has a few hundred):
    // decode each once.
    let mut decoded: HashMap<usize, Location> = HashMap::new();
    // A tree of N nodes has at most 2N + 1 leaves; more means the nodes
    // form a DAG (a corrupted file) whose paths could take forever to walk.
    // Leaves without data are yielded too so that every one is counted.
    let max_leaves = 2 * u64::from(reader.metadata().node_count) + 1;
    // The options skip the IPv6 aliases of the IPv4 subtree (::ffff:0:0/96,
    // 2002::/16, Teredo) and yield networks of the subtree at ::/96 as IPv4,
    // so IPv4 data is read once, as IPv4.
    let options = WithinOptions::default().include_networks_without_data();
    for (leaves, item) in (1u64..).zip(reader.networks(options).map_err(bad_db)?) {
        if leaves > max_leaves {
            return Err(bad_db(MaxMindDbError::invalid_database(format!(
                "the search tree has more than {max_leaves} leaves for {} nodes",
                reader.metadata().node_count
            ))));
        }
        let found = item.map_err(bad_db)?;
        let Some(offset) = found.offset() else {
            continue;
        };
        let network = found.network().map_err(bad_db)?;
        let network = IpNet::new(network.ip(), network.prefix()).map_err(|_| {
            bad_db(MaxMindDbError::invalid_database(format!(
                "network {}/{} is not a prefix",
                network.ip(),
                network.prefix()
            )))
        })?;
        let loc = if let Some(&loc) = decoded.get(&offset) {
            loc
        } else {
            let record: Option<MmdbRecord> =
                found.decode().map_err(|source| GeoIpError::MmdbRecord {
                    path: path.to_owned(),
                    network,
                    source,
                })?;
            let loc = record.map(|r| r.location()).unwrap_or_default();
            decoded.insert(offset, loc);
            loc
        };
        if !loc.is_known() {
            continue;
        }
        match network {
            IpNet::V4(n) => {
                rows.v4
                    .push(Row::network(n.network().into(), n.broadcast().into(), loc));
            }
            IpNet::V6(n) => {
                // A record above the IPv4 subtree (a network that holds all
                // of ::/96) is what an IPv4 lookup finds too.
                if n.prefix_len() <= 96 && u128::from(n.network()) == 0 {
                    rows.v4.push(Row::network(0, u32::MAX, loc));
                }
                rows.v6
                    .push(Row::network(n.network().into(), n.broadcast().into(), loc));
            }
        }
    }
    Ok((rows, built))
}
