//! Recently released addresses, held back from other Services for a while.
//!
//! MetalLB hands out the lowest free address, so an IP released by one Service goes to the next
//! Service that asks (MetalLB #2723, #686): clients and DNS caches still pointing at the old
//! Service reach a new one. FerroLB keeps the last `capacity` released addresses out of fresh
//! allocation. They are still used, deterministically:
//! - the Service that released an address gets it back first (delete + re-create keeps the IP);
//! - an explicit request or a restore may claim one at any time;
//! - when a pool has no other free address, its oldest quarantined address is handed out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use super::ServiceKey;

#[derive(Clone, Debug)]
pub(crate) struct Quarantine {
    capacity: usize,
    next_seq: u64,
    /// Release order; entries whose sequence number no longer matches `released` are stale.
    order: VecDeque<(u64, IpAddr)>,
    released: BTreeMap<IpAddr, (u64, ServiceKey)>,
    by_service: BTreeMap<ServiceKey, BTreeSet<IpAddr>>,
}

impl Quarantine {
    pub(crate) fn new(capacity: usize) -> Quarantine {
        Quarantine {
            capacity,
            next_seq: 0,
            order: VecDeque::new(),
            released: BTreeMap::new(),
            by_service: BTreeMap::new(),
        }
    }

    /// Quarantines `ip`, released by `service`. Returns the address that leaves quarantine to
    /// make room (possibly `ip` itself when the capacity is 0): the caller frees it.
    pub(crate) fn add(&mut self, ip: IpAddr, service: &ServiceKey) -> Option<IpAddr> {
        if self.capacity == 0 {
            return Some(ip);
        }
        self.remove(&ip);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.released.insert(ip, (seq, service.clone()));
        self.by_service
            .entry(service.clone())
            .or_default()
            .insert(ip);
        self.order.push_back((seq, ip));
        let evicted = if self.released.len() > self.capacity {
            self.pop_oldest()
        } else {
            None
        };
        // Stale entries pile up when quarantined addresses are claimed; drop them now and then.
        if self.order.len() > 2 * self.capacity + 16 {
            let released = &self.released;
            self.order
                .retain(|(seq, ip)| released.get(ip).is_some_and(|(s, _)| s == seq));
        }
        evicted
    }

    fn pop_oldest(&mut self) -> Option<IpAddr> {
        while let Some((seq, ip)) = self.order.pop_front() {
            if self.released.get(&ip).is_some_and(|(s, _)| *s == seq) {
                self.remove(&ip);
                return Some(ip);
            }
        }
        None
    }

    /// Takes `ip` out of quarantine; false if it was not quarantined.
    pub(crate) fn remove(&mut self, ip: &IpAddr) -> bool {
        let Some((_, service)) = self.released.remove(ip) else {
            return false;
        };
        if let Some(ips) = self.by_service.get_mut(&service) {
            ips.remove(ip);
            if ips.is_empty() {
                self.by_service.remove(&service);
            }
        }
        true
    }

    /// Addresses `service` released that are still quarantined, lowest first.
    pub(crate) fn released_by(&self, service: &ServiceKey) -> impl Iterator<Item = IpAddr> + '_ {
        self.by_service.get(service).into_iter().flatten().copied()
    }

    /// Quarantined addresses, oldest release first.
    pub(crate) fn oldest_first(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.order
            .iter()
            .filter(|(seq, ip)| self.released.get(ip).is_some_and(|(s, _)| s == seq))
            .map(|(_, ip)| *ip)
    }

    /// Keeps only the addresses for which `keep` is true; returns the others.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&IpAddr) -> bool) -> Vec<IpAddr> {
        let dropped: Vec<IpAddr> = self
            .released
            .keys()
            .filter(|ip| !keep(ip))
            .copied()
            .collect();
        for ip in &dropped {
            self.remove(ip);
        }
        dropped
    }

    pub(crate) fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.released.keys().copied()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.released.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn evicts_oldest_and_tracks_releasers() {
        let a = ServiceKey::new("ns", "a");
        let b = ServiceKey::new("ns", "b");
        let mut q = Quarantine::new(2);
        assert_eq!(q.add(ip(1), &a), None);
        assert_eq!(q.add(ip(2), &b), None);
        assert_eq!(q.add(ip(3), &a), Some(ip(1)));
        assert_eq!(q.released_by(&a).collect::<Vec<_>>(), vec![ip(3)]);
        assert!(q.remove(&ip(2)));
        assert!(!q.remove(&ip(2)));
        assert_eq!(q.oldest_first().collect::<Vec<_>>(), vec![ip(3)]);
        assert_eq!(q.add(ip(4), &b), None);
        assert_eq!(q.add(ip(5), &b), Some(ip(3)));
        assert_eq!(q.len(), 2);
        assert_eq!(q.released_by(&a).count(), 0);
    }

    #[test]
    fn zero_capacity_frees_at_once() {
        let mut q = Quarantine::new(0);
        assert_eq!(q.add(ip(1), &ServiceKey::new("ns", "a")), Some(ip(1)));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let a = ServiceKey::new("ns", "a");
        let mut q = Quarantine::new(4);
        for _ in 0..1000 {
            q.add(ip(1), &a);
            q.remove(&ip(1));
        }
        assert!(q.order.len() <= 2 * 4 + 17);
    }
}
