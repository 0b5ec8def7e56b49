//! The watchlist maps: the prefilter bitmap, the DNS-learned addresses, the watched
//! prefixes and ASNs. Owned by the daemon (or replay) once taken from the `Monitor`.

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, lpm_trie::Key};
use ipnet::IpNet;
use monitor_common::{class::NAMED_ASN_SLOTS, maps};

use super::{EbpfError, map_err};
use crate::watch::{Change, Plan, key};

/// The kernel's watchlist maps.
pub struct WatchMaps {
    bits: Array<MapData, u64>,
    learned: HashMap<MapData, [u8; 16], u32>,
    prefixes: LpmTrie<MapData, [u8; 16], u32>,
    asns: Array<MapData, u32>,
    /// The prefixes written, to remove them on a reload.
    written: Vec<Key<[u8; 16]>>,
}

impl WatchMaps {
    pub(super) fn new(
        bits: Map,
        learned: Map,
        prefixes: Map,
        asns: Map,
    ) -> Result<Self, EbpfError> {
        Ok(Self {
            bits: Array::try_from(bits).map_err(|s| map_err(maps::WATCH_BITS, "wrong type", s))?,
            learned: HashMap::try_from(learned)
                .map_err(|s| map_err(maps::WATCH_LEARNED, "wrong type", s))?,
            prefixes: LpmTrie::try_from(prefixes)
                .map_err(|s| map_err(maps::WATCH_PREFIXES, "wrong type", s))?,
            asns: Array::try_from(asns).map_err(|s| map_err(maps::WATCH_ASNS, "wrong type", s))?,
            written: Vec::new(),
        })
    }

    /// Writes the prefixes and ASNs of `plan`, replacing the previous ones.
    pub fn write_plan(&mut self, plan: &Plan) -> Result<(), EbpfError> {
        let name = maps::WATCH_PREFIXES;
        let mut keys = Vec::new();
        for (net, entry) in &plan.prefixes {
            let k = match net {
                IpNet::V4(n) => Key::new(96 + u32::from(n.prefix_len()), key(n.network().into())),
                IpNet::V6(n) => Key::new(u32::from(n.prefix_len()), key(n.network().into())),
            };
            self.prefixes
                .insert(&k, entry, 0)
                .map_err(|s| map_err(name, format!("insert {net}"), s))?;
            keys.push(k);
        }
        for old in std::mem::take(&mut self.written) {
            let kept = keys
                .iter()
                .any(|k| k.prefix_len() == old.prefix_len() && k.data() == old.data());
            if !kept {
                let _ = self.prefixes.remove(&old);
            }
        }
        self.written = keys;
        let name = maps::WATCH_ASNS;
        for slot in 1..NAMED_ASN_SLOTS {
            let entry = plan
                .asns
                .iter()
                .find(|(s, _)| *s == slot)
                .map_or(0, |(_, e)| *e);
            self.asns
                .set(slot, &entry, 0)
                .map_err(|s| map_err(name, format!("set {slot}"), s))?;
        }
        Ok(())
    }

    /// Applies the learner's changes, in order.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), EbpfError> {
        for c in changes {
            match c {
                Change::Learn(addr, entry) => self
                    .learned
                    .insert(&key(*addr), entry, 0)
                    .map_err(|s| map_err(maps::WATCH_LEARNED, format!("insert {addr}"), s))?,
                Change::Forget(addr) => {
                    // Gone already is fine: the goal is its absence.
                    let _ = self.learned.remove(&key(*addr));
                }
                Change::Bits(word, value) => self
                    .bits
                    .set(*word, value, 0)
                    .map_err(|s| map_err(maps::WATCH_BITS, format!("set {word}"), s))?,
            }
        }
        Ok(())
    }
}
