//! Address ranges: CIDR cover, lookup, merging under earlier sources, and
//! the sweep that joins the country and ASN fields.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::Location;
use crate::country::CountryCode;

/// Unsigned address integers (`u32` for IPv4, `u128` for IPv6).
pub(crate) trait Addr: Copy + Ord + fmt::Debug {
    const BITS: u32;
    const MAX: Self;
    /// `IPv4` or `IPv6`.
    const FAMILY: &'static str;
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
    ($t:ty, $ip:ty, $family:literal) => {
        impl Addr for $t {
            const BITS: u32 = <$t>::BITS;
            const MAX: Self = <$t>::MAX;
            const FAMILY: &'static str = $family;
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
impl_addr!(u32, Ipv4Addr, "IPv4");
impl_addr!(u128, Ipv6Addr, "IPv6");

/// Yields `(start, prefix_len)` of the minimal CIDR cover of `[next, last]`.
pub(super) struct PrefixIter<T> {
    next: Option<T>,
    last: T,
}

impl<T: Addr> PrefixIter<T> {
    pub(super) fn new(first: T, last: T) -> Self {
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

/// One address family's data: per field, sorted disjoint `(first, last,
/// value)` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Ranges<T> {
    pub(super) country: Vec<(T, T, CountryCode)>,
    pub(super) asn: Vec<(T, T, u32)>,
}

impl<T: Addr> Ranges<T> {
    pub(super) fn lookup(&self, x: T) -> Location {
        Location {
            country: find(&self.country, x),
            asn: find(&self.asn, x),
        }
    }

    /// Puts `new` under `self`, field by field.
    pub(super) fn merge_under(&mut self, new: Ranges<T>) {
        self.country = merge_under(std::mem::take(&mut self.country), new.country);
        self.asn = merge_under(std::mem::take(&mut self.asn), new.asn);
    }

    pub(super) fn coalesce(&mut self) {
        coalesce(&mut self.country);
        coalesce(&mut self.asn);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.country.is_empty() && self.asn.is_empty()
    }

    /// A sweep over the boundaries of both fields: each output range has one
    /// country (or none) and one ASN (or none) throughout.
    pub(super) fn locations(&self) -> Vec<(T, T, Location)> {
        let (country, asn) = (&self.country, &self.asn);
        let mut out: Vec<(T, T, Location)> = Vec::with_capacity(country.len().max(asn.len()));
        let (mut ci, mut ai) = (0, 0);
        // The lowest address not yet swept; ranges before index ci/ai end
        // below it, and those at ci/ai end at or above it.
        let Some(mut pos) = [country.first().map(|r| r.0), asn.first().map(|r| r.0)]
            .into_iter()
            .flatten()
            .min()
        else {
            return out;
        };
        loop {
            let c = country.get(ci);
            let a = asn.get(ai);
            let c_start = c.map(|r| r.0.max(pos));
            let a_start = a.map(|r| r.0.max(pos));
            let Some(start) = [c_start, a_start].into_iter().flatten().min() else {
                return out;
            };
            let c_on = c.filter(|_| c_start == Some(start));
            let a_on = a.filter(|_| a_start == Some(start));
            // The piece ends where a range that holds `start` ends, or just
            // before one that does not begins.
            let end_of = |on: Option<T>, next: Option<T>| match (on, next) {
                (Some(last), _) => last,
                (None, Some(next)) => next.dec(),
                (None, None) => T::MAX,
            };
            let end = end_of(c_on.map(|r| r.1), c_start).min(end_of(a_on.map(|r| r.1), a_start));
            let loc = Location {
                country: c_on.map(|r| r.2),
                asn: a_on.map(|r| r.2),
            };
            match out.last_mut() {
                Some(prev) if prev.2 == loc && prev.1.checked_inc() == Some(start) => prev.1 = end,
                _ => out.push((start, end, loc)),
            }
            if c_on.is_some_and(|r| r.1 == end) {
                ci += 1;
            }
            if a_on.is_some_and(|r| r.1 == end) {
                ai += 1;
            }
            match end.checked_inc() {
                Some(next) => pos = next,
                None => return out,
            }
        }
    }
}

pub(super) fn find<T: Addr, V: Copy>(ranges: &[(T, T, V)], x: T) -> Option<V> {
    let idx = ranges.partition_point(|r| r.0 <= x);
    let r = ranges.get(idx.checked_sub(1)?)?;
    (x <= r.1).then_some(r.2)
}

/// Merges `new` (sorted, disjoint) under `acc` (sorted, disjoint): the parts
/// of `new` not covered by `acc` are added.
pub(crate) fn merge_under<T: Addr, V: Copy>(
    mut acc: Vec<(T, T, V)>,
    new: Vec<(T, T, V)>,
) -> Vec<(T, T, V)> {
    if acc.is_empty() {
        return new;
    }
    let mut pieces = Vec::new();
    for (first, last, value) in new {
        let mut cursor = Some(first);
        let start = acc.partition_point(|r| r.1 < first);
        for &(a_first, a_last, _) in &acc[start..] {
            let Some(cur) = cursor else { break };
            if a_first > last {
                break;
            }
            if a_first > cur {
                pieces.push((cur, a_first.dec(), value));
            }
            cursor = a_last.checked_inc().filter(|&c| c <= last);
        }
        if let Some(cur) = cursor
            && cur <= last
        {
            pieces.push((cur, last, value));
        }
    }
    acc.extend(pieces);
    acc.sort_unstable_by_key(|r| r.0);
    acc
}

/// Joins adjacent ranges of equal value.
pub(crate) fn coalesce<T: Addr, V: PartialEq>(ranges: &mut Vec<(T, T, V)>) {
    ranges.dedup_by(|next, prev| {
        if prev.2 == next.2 && prev.1.checked_inc() == Some(next.0) {
            prev.1 = next.1;
            true
        } else {
            false
        }
    });
}
