//! Reading the per-CPU counter arrays: class, named-ASN, policy-drop, watch and reason
//! counters, summed over CPUs.
//!
//! The arrays are sized for every slot the layouts allow (the class array alone is 131,072
//! entries, 2 MiB per CPU), but only the slots the labels hand out can ever count. A read
//! takes just those key ranges ([`Extent`]): with one group and the tor data's 250
//! countries, 4,000 of the 131,072 class entries. Each entry costs the kernel a lookup and
//! a copy per CPU, about 0.3 µs: a whole read took 40 ms on the 2-vCPU VM, at every scrape
//! and every detection tick, and the kernel test's 3 groups and 5 countries now take
//! 0.12 ms.

use std::{ops::Range, os::fd::AsFd as _};

use aya::{
    maps::{Map, MapData, PerCpuArray},
    util::nr_cpus,
};
use monitor_common::{
    class::{
        COUNTRY_BITS, COUNTRY_SLOTS, ClassCounter, MAX_GROUPS, NAMED_ASN_BITS, NAMED_ASN_SLOTS,
    },
    maps,
    reason::REASON_ENTRIES,
    watch::{MAX_WATCH_ENTRIES, WATCH_COUNTER_ENTRIES},
};

use super::{EbpfError, lookup_batch, map_err};
use crate::tables::Labels;

/// Counters summed over CPUs.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Non-zero class counters: (class index, packets, bytes).
    pub classes: Vec<(u32, ClassCounter)>,
    /// Non-zero per-ASN counters: (`class::asn_counter_index`, packets, bytes).
    pub asns: Vec<(u32, ClassCounter)>,
    /// Every reason counter by id.
    pub reasons: Vec<u64>,
    /// Non-zero policy drop counters: (`policy::drop_index`, packets, bytes).
    pub policy_drops: Vec<(u32, ClassCounter)>,
    /// Non-zero watch entry counters: (`watch::watch_counter_index`, packets, bytes).
    pub watch: Vec<(u32, ClassCounter)>,
}

/// The slots that can hold counts: group, country, named-ASN and watch-entry slots below
/// these bounds. Entries beyond them are never counted, so they are not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    groups: u32,
    countries: u32,
    asns: u32,
    watch: u32,
}

impl Extent {
    /// Every slot of every layout (`exfilmon status`, which has no labels to go by).
    pub const ALL: Self = Self {
        groups: MAX_GROUPS,
        countries: COUNTRY_SLOTS,
        asns: NAMED_ASN_SLOTS,
        watch: MAX_WATCH_ENTRIES,
    };

    /// The slots `labels` hands out. The kernel counts only slots its tables hold, and the
    /// labels are made with the tables.
    #[must_use]
    pub fn of(labels: &Labels) -> Self {
        let len = |n: usize, max: u32| u32::try_from(n).unwrap_or(u32::MAX).min(max);
        // ASN slots at and above NAMED_ASN_SLOTS are not counted; below it, only named
        // ones (the kernel skips slot 0, and unnamed slots there hold no ASN).
        let named = labels
            .asns
            .iter()
            .take(NAMED_ASN_SLOTS as usize)
            .rposition(|&asn| asn != 0)
            .map_or(0, |i| i + 1);
        Self {
            // The ungrouped slot and the unknown country count even when unnamed.
            groups: len(labels.groups.len(), MAX_GROUPS).max(1),
            countries: len(labels.countries.len(), COUNTRY_SLOTS).max(1),
            asns: len(named, NAMED_ASN_SLOTS),
            watch: len(labels.watch.len(), MAX_WATCH_ENTRIES),
        }
    }

    /// Covers both: a slot that once counted stays read after a reload that no longer
    /// names it, so its series does not vanish while the kernel still holds its counts.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        Self {
            groups: self.groups.max(other.groups),
            countries: self.countries.max(other.countries),
            asns: self.asns.max(other.asns),
            watch: self.watch.max(other.watch),
        }
    }

    /// Key ranges of the class array (`class_index`: group, then country, then direction
    /// and verdict).
    fn classes(self) -> impl Iterator<Item = Range<u32>> {
        let per_group = 1 << (COUNTRY_BITS + 3);
        let used = self.countries << 3;
        (0..self.groups).map(move |g| g * per_group..g * per_group + used)
    }

    /// Key ranges of the named-ASN array (`asn_counter_index`: group, slot, direction).
    fn asns(self) -> impl Iterator<Item = Range<u32>> {
        let per_group = 1 << (NAMED_ASN_BITS + 1);
        let used = self.asns << 1;
        (0..self.groups).map(move |g| g * per_group..g * per_group + used)
    }

    /// The key range of the watch array (`watch_counter_index`: entry, group, direction).
    fn watch(self) -> Range<u32> {
        0..(self.watch << 6).min(WATCH_COUNTER_ENTRIES)
    }
}

/// The counter maps, owned by the metrics collector and shared with the detection ticks.
pub struct CounterMaps {
    classes: MapData,
    asns: MapData,
    reasons: PerCpuArray<MapData, u64>,
    policy_drops: MapData,
    watch: MapData,
    /// Every extent read so far, together ([`Extent::max`]).
    extent: Option<Extent>,
}

impl CounterMaps {
    pub(super) fn new(
        classes: MapData,
        asns: MapData,
        reasons: PerCpuArray<MapData, u64>,
        policy_drops: MapData,
        watch: MapData,
    ) -> Self {
        Self {
            classes,
            asns,
            reasons,
            policy_drops,
            watch,
            extent: None,
        }
    }

    /// Reads the counters of the slots `labels` hands out, and of every slot read before.
    pub fn read(&mut self, labels: &Labels) -> Result<Counters, EbpfError> {
        let extent = self
            .extent
            .map_or_else(|| Extent::of(labels), |e| e.max(Extent::of(labels)));
        self.extent = Some(extent);
        read_all(
            &self.classes,
            &self.asns,
            &self.reasons,
            &self.policy_drops,
            &self.watch,
            extent,
        )
    }
}

/// The counters, summed over CPUs, from the maps `map` gives by name: the loaded object's,
/// or the pinned ones: the slots of `extent`.
pub(super) fn read_counters_from<M: std::borrow::Borrow<Map>>(
    map: impl Fn(&'static str) -> Result<M, EbpfError>,
    extent: Extent,
) -> Result<Counters, EbpfError> {
    let classes = map(maps::CLASS_COUNTERS)?;
    let asns = map(maps::ASN_COUNTERS)?;
    let policy_drops = map(maps::POLICY_DROPS)?;
    let watch = map(maps::WATCH_COUNTERS)?;
    let reasons = map(maps::REASONS)?;
    let reasons: PerCpuArray<_, u64> = PerCpuArray::try_from(reasons.borrow())
        .map_err(|s| map_err(maps::REASONS, "wrong type", s))?;
    read_all(
        per_cpu(classes.borrow(), maps::CLASS_COUNTERS)?,
        per_cpu(asns.borrow(), maps::ASN_COUNTERS)?,
        &reasons,
        per_cpu(policy_drops.borrow(), maps::POLICY_DROPS)?,
        per_cpu(watch.borrow(), maps::WATCH_COUNTERS)?,
        extent,
    )
}

fn per_cpu<'m>(map: &'m Map, name: &'static str) -> Result<&'m MapData, EbpfError> {
    match map {
        Map::PerCpuArray(m) => Ok(m),
        _ => Err(EbpfError::MissingMap { map: name }),
    }
}

fn read_all<T: std::borrow::Borrow<MapData>>(
    classes: &MapData,
    asns: &MapData,
    reasons: &PerCpuArray<T, u64>,
    policy_drops: &MapData,
    watch: &MapData,
    extent: Extent,
) -> Result<Counters, EbpfError> {
    Ok(Counters {
        classes: read_counter_array(classes, maps::CLASS_COUNTERS, extent.classes())?,
        asns: read_counter_array(asns, maps::ASN_COUNTERS, extent.asns())?,
        reasons: read_reasons(reasons)?,
        policy_drops: read_counter_array(
            policy_drops,
            maps::POLICY_DROPS,
            std::iter::once(0..monitor_common::policy::DROP_ENTRIES),
        )?,
        watch: read_counter_array(watch, maps::WATCH_COUNTERS, std::iter::once(extent.watch()))?,
    })
}

fn read_reasons<T: std::borrow::Borrow<MapData>>(
    reasons: &PerCpuArray<T, u64>,
) -> Result<Vec<u64>, EbpfError> {
    (0..REASON_ENTRIES)
        .map(|i| {
            reasons
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
                .map_err(|s| map_err(maps::REASONS, format!("read {i}"), s))
        })
        .collect()
}

/// Reads the key ranges `ranges` of a per-CPU counter array (`name`) in batches and sums
/// each entry over the CPUs. Only non-zero entries are returned, in key order.
fn read_counter_array(
    map: &MapData,
    name: &'static str,
    ranges: impl IntoIterator<Item = Range<u32>>,
) -> Result<Vec<(u32, ClassCounter)>, EbpfError> {
    let cpus = nr_cpus()
        .map_err(|(_, source)| EbpfError::Batch { map: name, source })?
        .get() as usize;
    let mut out = Vec::new();
    for range in ranges.into_iter().filter(|r| !r.is_empty()) {
        // The batch starts after the key it is given; none starts at the first key.
        let after = range.start.checked_sub(1);
        let len = (range.end - range.start) as usize;
        lookup_batch::<u32, ClassCounter>(
            map.fd().as_fd(),
            name,
            cpus,
            (after, len),
            |key, per_cpu| {
                let mut sum = ClassCounter::default();
                for c in per_cpu {
                    sum.packets = sum.packets.wrapping_add(c.packets);
                    sum.bytes = sum.bytes.wrapping_add(c.bytes);
                }
                if sum.packets != 0 {
                    out.push((*key, sum));
                }
            },
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use monitor_common::{
        class::{ASN_COUNTER_ENTRIES, CLASS_ENTRIES, asn_counter_index, class_index},
        watch::watch_counter_index,
    };

    use super::*;

    fn labels(groups: usize, countries: usize, asns: &[u32], watch: usize) -> Labels {
        Labels {
            groups: (0..groups).map(|g| format!("g{g}")).collect(),
            countries: vec![None; countries],
            asns: asns.to_vec(),
            watch: vec![(String::new(), String::new()); watch],
            ..Labels::default()
        }
    }

    fn keys(ranges: impl Iterator<Item = Range<u32>>) -> Vec<u32> {
        ranges.flatten().collect()
    }

    #[test]
    fn the_extent_covers_every_index_of_the_slots_labels_hand_out_and_no_other() {
        let e = Extent::of(&labels(3, 10, &[0, 64500, 0, 64501, 0], 4));
        let classes = keys(e.classes());
        let mut want = Vec::new();
        for g in 0..3 {
            for c in 0..10 {
                for d in 0..2 {
                    for v in 0..4 {
                        want.push(class_index(g, c, d, v));
                    }
                }
            }
        }
        want.sort_unstable();
        assert_eq!(classes, want);
        // Named slots 1 and 3: slots 0..4 are read.
        let asns = keys(e.asns());
        let want: Vec<u32> = (0..3)
            .flat_map(|g| (0..4).flat_map(move |s| (0..2).map(move |d| asn_counter_index(g, s, d))))
            .collect();
        assert_eq!(asns, want);
        let watch = keys(std::iter::once(e.watch()));
        assert!(watch.contains(&watch_counter_index(3, 31, 1)));
        assert!(!watch.contains(&watch_counter_index(4, 0, 0)));
    }

    #[test]
    fn asn_slots_from_the_geoip_data_are_not_read() {
        // Slots at and above NAMED_ASN_SLOTS hold ASNs met only in the data: never counted.
        let mut asns = vec![0; 300];
        asns[2] = 64500;
        asns[290] = 64510;
        assert_eq!(Extent::of(&labels(1, 1, &asns, 0)).asns, 3);
    }

    #[test]
    fn all_is_every_entry_of_every_array() {
        let e = Extent::ALL;
        assert_eq!(keys(e.classes()), (0..CLASS_ENTRIES).collect::<Vec<_>>());
        assert_eq!(keys(e.asns()), (0..ASN_COUNTER_ENTRIES).collect::<Vec<_>>());
        assert_eq!(e.watch(), 0..WATCH_COUNTER_ENTRIES);
    }

    #[test]
    fn a_slot_once_read_stays_read() {
        let wide = Extent::of(&labels(4, 200, &[0, 1], 2));
        let narrow = Extent::of(&labels(2, 250, &[], 0));
        let both = wide.max(narrow);
        assert_eq!(
            both,
            Extent {
                groups: 4,
                countries: 250,
                asns: 2,
                watch: 2
            }
        );
    }
}
