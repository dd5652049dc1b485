//! Address pools: which addresses a pool may hand out, and which of them are taken.
//!
//! Memory is proportional to the addresses in use, never to the size of a pool: every entry keeps
//! the addresses it may not hand out fresh as maximal runs `start..=end` in a `BTreeMap`. Because
//! runs are kept maximal (adjacent runs are merged), the address right after a run is always free,
//! so "first free address" is one `BTreeMap` lookup, O(log runs), even in a /48 with a million
//! services packed at its start.
//!
//! `avoidBuggyIPs` pools would break runs at every `.255`/`.0` pair. To keep lookups O(log n)
//! there too, an entry stores *ranks* instead of addresses: the position of an address among the
//! addresses the entry may hand out. Without `avoidBuggyIPs` the rank of an address is the address.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// One entry of an address pool, as the configuration wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolEntry {
    /// The addresses of the entry; host bits are ignored.
    pub cidr: IpNet,
    /// True when the user wrote a `start-end` range that was summarised into this CIDR. The
    /// network and broadcast addresses of IPv4 CIDRs shorter than /31 are only handed out from
    /// such entries: a user who writes `192.0.2.0/24` does not mean `.0` or `.255`.
    pub from_range: bool,
}

impl PoolEntry {
    /// An entry the user wrote as a CIDR.
    pub fn cidr(cidr: IpNet) -> PoolEntry {
        PoolEntry {
            cidr,
            from_range: false,
        }
    }

    /// An entry summarised from a `start-end` range.
    pub fn from_range(cidr: IpNet) -> PoolEntry {
        PoolEntry {
            cidr,
            from_range: true,
        }
    }
}

/// An address pool as the allocator sees it (the controller maps its configuration to this).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolDef {
    pub name: String,
    /// Entries in the order the configuration lists them: allocation walks them in this order.
    pub entries: Vec<PoolEntry>,
    /// False: the pool is only used when a Service names it or requests one of its addresses.
    pub auto_assign: bool,
    /// Skip every IPv4 address ending in `.0` or `.255`.
    pub avoid_buggy_ips: bool,
    /// `serviceAllocation.priority`: lower is preferred, 0 (unset) comes last.
    pub priority: i32,
}

/// Why an address of a pool's CIDR may not be handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Usability {
    Usable,
    /// Network or broadcast address of an IPv4 CIDR entry shorter than /31.
    NetworkOrBroadcast,
    /// `.0` or `.255` in an `avoidBuggyIPs` pool.
    Buggy,
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        // Values of IPv4 entries never exceed u32::MAX: they come from IPv4 addresses.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

fn is_buggy(value: u128) -> bool {
    matches!(value & 0xff, 0 | 255)
}

/// A set of `u128` stored as maximal runs `start -> end` (inclusive).
#[derive(Clone, Debug, Default)]
pub(crate) struct RunSet {
    runs: BTreeMap<u128, u128>,
}

impl RunSet {
    fn run_containing(&self, value: u128) -> Option<(u128, u128)> {
        self.runs
            .range(..=value)
            .next_back()
            .filter(|(_, end)| **end >= value)
            .map(|(start, end)| (*start, *end))
    }

    /// The smallest value `>= from` not in the set (`None` only if everything up to
    /// `u128::MAX` is in it).
    pub(crate) fn first_absent_from(&self, from: u128) -> Option<u128> {
        match self.run_containing(from) {
            // Runs are maximal, so `end + 1` is not in the set.
            Some((_, end)) => end.checked_add(1),
            None => Some(from),
        }
    }

    /// Adds `value`; false if it was already present.
    pub(crate) fn insert(&mut self, value: u128) -> bool {
        if self.run_containing(value).is_some() {
            return false;
        }
        let mut start = value;
        let mut end = value;
        if let Some(before) = value.checked_sub(1)
            && let Some((prev_start, _)) = self.run_containing(before)
        {
            start = prev_start;
        }
        if let Some(after) = value.checked_add(1)
            && let Some(next_end) = self.runs.remove(&after)
        {
            end = next_end;
        }
        // Overwrites the previous run when `value` extends it.
        self.runs.insert(start, end);
        true
    }

    /// Removes `value`; false if it was absent.
    pub(crate) fn remove(&mut self, value: u128) -> bool {
        let Some((start, end)) = self.run_containing(value) else {
            return false;
        };
        self.runs.remove(&start);
        if start < value {
            self.runs.insert(start, value - 1);
        }
        if value < end {
            self.runs.insert(value + 1, end);
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn runs(&self) -> Vec<(u128, u128)> {
        self.runs.iter().map(|(s, e)| (*s, *e)).collect()
    }
}

/// One entry of a pool with its taken addresses.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) family: Family,
    /// First and last address of the CIDR, as integers.
    net_bounds: (u128, u128),
    /// First and last rank that may be handed out; `None` if the entry has no usable address.
    usable_ranks: Option<(u128, u128)>,
    /// Whether ranks skip `.0`/`.255` (IPv4 entries of `avoidBuggyIPs` pools).
    skip_buggy: bool,
    /// Network and broadcast address are not handed out.
    skip_network_broadcast: bool,
    /// Ranks that may not be handed out fresh: addresses in use, and recently released ones.
    taken: RunSet,
}

impl Entry {
    pub(crate) fn new(entry: &PoolEntry, avoid_buggy_ips: bool) -> Entry {
        let net = entry.cidr.trunc();
        let family = match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        };
        let first = to_u128(net.network());
        let last = to_u128(net.broadcast());
        let skip_network_broadcast =
            family == Family::V4 && !entry.from_range && net.prefix_len() < 31;
        let skip_buggy = family == Family::V4 && avoid_buggy_ips;
        let mut low = Some(first);
        let mut high = Some(last);
        if skip_network_broadcast {
            low = first.checked_add(1);
            high = last.checked_sub(1);
        }
        if skip_buggy {
            // At most two steps: `.255` is followed by `.0`.
            for _ in 0..2 {
                low = low.and_then(|l| {
                    if is_buggy(l) {
                        l.checked_add(1)
                    } else {
                        Some(l)
                    }
                });
                high = high.and_then(|h| {
                    if is_buggy(h) {
                        h.checked_sub(1)
                    } else {
                        Some(h)
                    }
                });
            }
        }
        let mut result = Entry {
            family,
            net_bounds: (first, last),
            usable_ranks: None,
            skip_buggy,
            skip_network_broadcast,
            taken: RunSet::default(),
        };
        if let (Some(low), Some(high)) = (low, high)
            && low <= high
        {
            result.usable_ranks = Some((result.rank(low), result.rank(high)));
        }
        result
    }

    fn rank(&self, value: u128) -> u128 {
        if self.skip_buggy {
            // 254 usable addresses per /24: .1 to .254.
            (value >> 8) * 254 + (value & 0xff).saturating_sub(1)
        } else {
            value
        }
    }

    fn unrank(&self, rank: u128) -> u128 {
        if self.skip_buggy {
            (rank / 254) * 256 + rank % 254 + 1
        } else {
            rank
        }
    }

    /// Whether `ip` lies in this entry's CIDR (usable or not).
    pub(crate) fn covers(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family && {
            let value = to_u128(*ip);
            self.net_bounds.0 <= value && value <= self.net_bounds.1
        }
    }

    /// Whether `ip`, which must be covered by this entry, may be handed out.
    pub(crate) fn usability(&self, ip: &IpAddr) -> Usability {
        let value = to_u128(*ip);
        if self.skip_network_broadcast && (value == self.net_bounds.0 || value == self.net_bounds.1)
        {
            Usability::NetworkOrBroadcast
        } else if self.skip_buggy && is_buggy(value) {
            Usability::Buggy
        } else {
            Usability::Usable
        }
    }

    /// Number of addresses the entry may hand out (saturating for a whole IPv6 space).
    pub(crate) fn total(&self) -> u128 {
        self.usable_ranks
            .map(|(low, high)| (high - low).saturating_add(1))
            .unwrap_or(0)
    }

    /// The lowest usable address that is neither in use nor recently released.
    pub(crate) fn first_free(&self) -> Option<IpAddr> {
        let (low, high) = self.usable_ranks?;
        let rank = self.taken.first_absent_from(low)?;
        (rank <= high).then(|| from_u128(self.family, self.unrank(rank)))
    }

    /// Marks a usable address of this entry as taken.
    pub(crate) fn mark_taken(&mut self, ip: &IpAddr) {
        let rank = self.rank(to_u128(*ip));
        self.taken.insert(rank);
    }

    /// Marks a usable address of this entry as free.
    pub(crate) fn mark_free(&mut self, ip: &IpAddr) {
        let rank = self.rank(to_u128(*ip));
        self.taken.remove(rank);
    }

    #[cfg(test)]
    pub(crate) fn taken_runs(&self) -> Vec<(u128, u128)> {
        self.taken.runs()
    }
}

/// A pool with its entries and counters.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    /// Shared with every assignment from this pool.
    pub(crate) name: Arc<str>,
    pub(crate) auto_assign: bool,
    pub(crate) priority: i32,
    pub(crate) entries: Vec<Entry>,
    /// Distinct addresses in use, per family (`Family::index`).
    pub(crate) in_use: [u128; 2],
}

impl Pool {
    pub(crate) fn new(def: &PoolDef) -> Pool {
        Pool {
            name: Arc::from(def.name.as_str()),
            auto_assign: def.auto_assign,
            priority: def.priority,
            entries: def
                .entries
                .iter()
                .map(|entry| Entry::new(entry, def.avoid_buggy_ips))
                .collect(),
            in_use: [0, 0],
        }
    }

    pub(crate) fn has_family(&self, family: Family) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.family == family && entry.total() > 0)
    }

    /// The entry whose CIDR covers `ip`.
    pub(crate) fn entry_for(&self, ip: &IpAddr) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.covers(ip))
    }

    pub(crate) fn entry_for_mut(&mut self, ip: &IpAddr) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|entry| entry.covers(ip))
    }

    /// Whether the pool may hand out `ip`.
    pub(crate) fn can_hand_out(&self, ip: &IpAddr) -> bool {
        self.entry_for(ip)
            .is_some_and(|entry| entry.usability(ip) == Usability::Usable)
    }

    /// The first fresh free address of `family`, walking entries in configuration order.
    pub(crate) fn first_free(&self, family: Family) -> Option<IpAddr> {
        self.entries
            .iter()
            .filter(|entry| entry.family == family)
            .find_map(Entry::first_free)
    }

    pub(crate) fn total(&self, family: Family) -> u128 {
        self.entries
            .iter()
            .filter(|entry| entry.family == family)
            .fold(0u128, |sum, entry| sum.saturating_add(entry.total()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cidr: &str, from_range: bool, avoid_buggy: bool) -> Entry {
        Entry::new(
            &PoolEntry {
                cidr: cidr.parse().unwrap(),
                from_range,
            },
            avoid_buggy,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn run_set_merges_and_splits() {
        let mut set = RunSet::default();
        assert!(set.insert(5));
        assert!(set.insert(7));
        assert!(!set.insert(7));
        assert_eq!(set.runs(), vec![(5, 5), (7, 7)]);
        assert!(set.insert(6));
        assert_eq!(set.runs(), vec![(5, 7)]);
        assert_eq!(set.first_absent_from(5), Some(8));
        assert_eq!(set.first_absent_from(4), Some(4));
        assert!(set.remove(6));
        assert!(!set.remove(6));
        assert_eq!(set.runs(), vec![(5, 5), (7, 7)]);
        assert_eq!(set.first_absent_from(5), Some(6));
        assert!(set.insert(u128::MAX));
        assert!(set.insert(u128::MAX - 1));
        assert_eq!(set.first_absent_from(u128::MAX), None);
        assert!(set.insert(0));
        assert!(set.remove(0));
        assert!(set.remove(5));
        assert!(set.remove(7));
        assert_eq!(set.runs(), vec![(u128::MAX - 1, u128::MAX)]);
    }

    #[test]
    fn usable_bounds_per_entry_kind() {
        // (cidr, from_range, avoid_buggy, first free, total)
        let cases = [
            ("192.0.2.0/24", false, false, Some("192.0.2.1"), 254),
            ("192.0.2.0/24", true, false, Some("192.0.2.0"), 256),
            ("192.0.2.0/24", false, true, Some("192.0.2.1"), 254),
            ("192.0.2.0/23", true, true, Some("192.0.2.1"), 508),
            ("192.0.2.0/31", false, false, Some("192.0.2.0"), 2),
            ("192.0.2.7/32", false, false, Some("192.0.2.7"), 1),
            ("192.0.2.255/32", false, true, None, 0),
            ("192.0.2.254/31", false, true, Some("192.0.2.254"), 1),
            ("192.0.2.8/29", false, true, Some("192.0.2.9"), 6),
            ("2001:db8::/64", false, false, Some("2001:db8::"), 1 << 64),
            ("2001:db8::/126", false, true, Some("2001:db8::"), 4),
            ("::/0", false, false, Some("::"), u128::MAX),
        ];
        for (cidr, from_range, avoid, first, total) in cases {
            let e = entry(cidr, from_range, avoid);
            assert_eq!(e.first_free(), first.map(ip), "{cidr} {from_range} {avoid}");
            assert_eq!(e.total(), total, "{cidr} {from_range} {avoid}");
        }
    }

    #[test]
    fn buggy_ranks_skip_dot_zero_and_dot_255() {
        let mut e = entry("192.0.2.0/23", true, true);
        let mut handed = Vec::new();
        while let Some(next) = e.first_free() {
            assert_eq!(e.usability(&next), Usability::Usable);
            e.mark_taken(&next);
            handed.push(next);
        }
        assert_eq!(handed.len(), 508);
        assert_eq!(handed[253], ip("192.0.2.254"));
        assert_eq!(handed[254], ip("192.0.3.1"));
        // One run despite the .255/.0 gap.
        assert_eq!(e.taken_runs().len(), 1);
        e.mark_free(&ip("192.0.3.1"));
        assert_eq!(e.first_free(), Some(ip("192.0.3.1")));
    }

    #[test]
    fn usability_reports_why() {
        let e = entry("192.0.2.0/24", false, true);
        assert_eq!(e.usability(&ip("192.0.2.0")), Usability::NetworkOrBroadcast);
        assert_eq!(
            e.usability(&ip("192.0.2.255")),
            Usability::NetworkOrBroadcast
        );
        assert_eq!(e.usability(&ip("192.0.2.1")), Usability::Usable);
        let e = entry("192.0.2.0/23", true, true);
        assert_eq!(e.usability(&ip("192.0.2.255")), Usability::Buggy);
        assert_eq!(e.usability(&ip("192.0.3.0")), Usability::Buggy);
        assert!(e.covers(&ip("192.0.3.0")));
        assert!(!e.covers(&ip("192.0.4.0")));
        assert!(!e.covers(&ip("2001:db8::1")));
    }
}
