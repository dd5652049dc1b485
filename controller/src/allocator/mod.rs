//! The IP allocator: which LoadBalancer addresses each Service holds.
//!
//! Pure logic: no Kubernetes types, no I/O, no async. The controller edge decides which pools a
//! Service may use (namespaces and selectors need Kubernetes objects) and passes them in the
//! [`AllocRequest`]; it maps the configuration to [`PoolDef`]s.
//!
//! Behaviour follows MetalLB (`internal/allocator`) except where noted:
//! - Pool order is deterministic: pools admitting the Service through a `serviceAllocation`
//!   ("pinned") first, by priority (lower first, 0 last), then name; then the other
//!   auto-assign pools by name (MetalLB: Go map order).
//! - The network and broadcast addresses of IPv4 CIDR entries shorter than /31 are never handed
//!   out, unless the entry came from a `start-end` range (MetalLB #674, #1684).
//! - A Service with a sharing key first looks, pool by pool, for an address already used by
//!   Services with the same key that it may join (lowest such address), and only then for a free
//!   address. MetalLB takes the lowest address that is free *or* shareable, which packs compatible
//!   Services together only when the shared address happens to be lower than the first free one.
//! - Released addresses are quarantined (see `quarantine.rs`): not handed to *another* Service
//!   while any other address is free, but given back to the Service that released them.
//! - Cost: memory proportional to the addresses in use; `assign`/`release` O(log n) in the number
//!   of addresses in use (plus the number of pools and entries, which are few).

mod error;
mod pool;
mod quarantine;
mod sharing;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

pub use error::{
    AllocError, Attempts, IpRejection, PoolAttempt, PoolConfigError, PoolRejection, RequestProblem,
};
pub use pool::{Family, PoolDef, PoolEntry};
pub use sharing::{Protocol, ServicePort, Sharing, SharingRejection};

use pool::{Pool, Usability};
use quarantine::Quarantine;

/// How many released addresses `Allocator::new` keeps out of fresh allocation.
pub const DEFAULT_RELEASE_QUARANTINE: usize = 1024;

/// A Service, by namespace and name (defined once for both binaries).
pub use ferrolb_crds::cluster::ServiceKey;

/// Which address families a Service gets (`spec.ipFamilyPolicy` with the ClusterIP families).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyPolicy {
    /// One address of the ClusterIP's family.
    SingleStack(Family),
    /// One address of each family if one pool can give both, else one of `primary`.
    PreferDualStack { primary: Family },
    /// One address of each family, both from the same pool.
    RequireDualStack { primary: Family },
}

impl FamilyPolicy {
    /// The family listed first in the Service's `ipFamilies`: its address comes first.
    pub fn primary(self) -> Family {
        match self {
            FamilyPolicy::SingleStack(family)
            | FamilyPolicy::PreferDualStack { primary: family }
            | FamilyPolicy::RequireDualStack { primary: family } => family,
        }
    }

    /// Whether a set of addresses of these (distinct) families satisfies the policy.
    fn accepts(self, families: &[Family]) -> bool {
        match self {
            FamilyPolicy::SingleStack(family) => families == [family],
            FamilyPolicy::PreferDualStack { .. } => !families.is_empty(),
            FamilyPolicy::RequireDualStack { .. } => families.len() == 2,
        }
    }

    /// The family sets to try, best first.
    fn attempts(self) -> Vec<Vec<Family>> {
        match self {
            FamilyPolicy::SingleStack(family) => vec![vec![family]],
            FamilyPolicy::RequireDualStack { primary } => vec![vec![primary, primary.other()]],
            FamilyPolicy::PreferDualStack { primary } => {
                vec![vec![primary, primary.other()], vec![primary]]
            }
        }
    }
}

/// A pool the Service may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedPool {
    pub name: String,
    /// The pool has a `serviceAllocation` that selects this Service: it is tried before pools
    /// without one.
    pub pinned: bool,
}

/// What a Service asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocRequest {
    pub service: ServiceKey,
    pub families: FamilyPolicy,
    /// Explicit addresses (`loadBalancerIPs` annotation or `spec.loadBalancerIP`), at most one per
    /// family. They may come from `autoAssign: false` pools.
    pub requested: Vec<IpAddr>,
    /// The `address-pool` annotation.
    pub pool: Option<String>,
    /// Pools whose `serviceAllocation` admits the Service (all pools without one, and those whose
    /// selectors match). Pools not listed are never used for it.
    pub allowed_pools: Vec<AllowedPool>,
    /// `None` (or an empty key): the Service does not share its addresses.
    pub sharing: Option<Sharing>,
}

impl AllocRequest {
    fn admits(&self, pool: &str) -> bool {
        self.allowed_pools
            .iter()
            .any(|allowed| allowed.name == pool)
    }
}

/// The addresses a Service holds and the pool they come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub pool: String,
    /// The primary family's address first.
    pub ips: Vec<IpAddr>,
}

/// What a configuration change did to a Service's assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Displacement {
    /// An address left every pool (or the addresses now lie in different pools): the Service
    /// lost its addresses and must be allocated again.
    Unassigned,
    /// The addresses now belong to another pool; the Service keeps them.
    Rehomed { from: String, to: String },
}

/// A Service whose assignment a configuration change touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Displaced {
    pub service: ServiceKey,
    pub ips: Vec<IpAddr>,
    pub change: Displacement,
}

/// Address counts of one family of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyStats {
    /// Addresses the pool may hand out (saturating at `u128::MAX`).
    pub total: u128,
    /// Distinct addresses held by at least one Service.
    pub in_use: u128,
}

impl FamilyStats {
    pub fn available(&self) -> u128 {
        self.total.saturating_sub(self.in_use)
    }
}

/// Address counts of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub v4: FamilyStats,
    pub v6: FamilyStats,
}

#[derive(Clone, Debug)]
struct Held {
    pool: Arc<str>,
    ips: Vec<IpAddr>,
    /// Boxed: most Services do not share, and there may be a million of them.
    sharing: Option<Box<Sharing>>,
}

#[derive(Clone, Debug)]
struct Address {
    /// Sorted; usually one. (A `Vec`: an empty `BTreeSet` node costs ~0.5 KiB per address.)
    holders: Vec<ServiceKey>,
}

impl Address {
    fn add_holder(&mut self, service: &ServiceKey) {
        if let Err(at) = self.holders.binary_search(service) {
            self.holders.insert(at, service.clone());
        }
    }

    fn remove_holder(&mut self, service: &ServiceKey) {
        if let Ok(at) = self.holders.binary_search(service) {
            self.holders.remove(at);
        }
    }
}

/// All assignments. Not thread-safe by itself: the controller keeps it behind a mutex.
#[derive(Clone, Debug)]
pub struct Allocator {
    pools: BTreeMap<String, Pool>,
    services: BTreeMap<ServiceKey, Held>,
    addresses: BTreeMap<IpAddr, Address>,
    /// Addresses whose holders share with this key.
    by_sharing_key: BTreeMap<String, BTreeSet<IpAddr>>,
    quarantine: Quarantine,
}

impl Default for Allocator {
    fn default() -> Self {
        Allocator::new()
    }
}

/// Whether `a` and `b` hold the same addresses, each once. (Length plus one-way containment
/// is not enough: `[x, x]` and `[x, y]` would pass.)
fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|ip| b.contains(ip)) && b.iter().all(|ip| a.contains(ip))
}

fn primary_first(ips: &mut [IpAddr], primary: Family) {
    ips.sort_by_key(|ip| Family::of(ip) != primary);
}

fn check_families(policy: FamilyPolicy, ips: &[IpAddr]) -> Result<(), RequestProblem> {
    if ips.len() > 2 {
        return Err(RequestProblem::TooManyAddresses { count: ips.len() });
    }
    let families: Vec<Family> = ips.iter().map(Family::of).collect();
    if families.len() == 2 && families[0] == families[1] {
        return Err(RequestProblem::TwoOfFamily {
            family: families[0],
        });
    }
    if !policy.accepts(&families) {
        return Err(RequestProblem::FamiliesDoNotMatch);
    }
    Ok(())
}

/// The pool and entry covering `ip`, if any.
fn locate<'a>(pools: &'a BTreeMap<String, Pool>, ip: &IpAddr) -> Option<(&'a Pool, Usability)> {
    pools
        .values()
        .find_map(|pool| pool.entry_for(ip).map(|entry| (pool, entry.usability(ip))))
}

/// The pool that may hand out `ip`.
fn usable_owner<'a>(pools: &'a BTreeMap<String, Pool>, ip: &IpAddr) -> Option<&'a Arc<str>> {
    match locate(pools, ip) {
        Some((pool, Usability::Usable)) => Some(&pool.name),
        _ => None,
    }
}

fn check_pool_defs(defs: &[PoolDef]) -> Result<(), PoolConfigError> {
    let mut names = BTreeSet::new();
    let mut ranges = Vec::new();
    for def in defs {
        if def.name.is_empty() {
            return Err(PoolConfigError::EmptyName);
        }
        if !names.insert(def.name.as_str()) {
            return Err(PoolConfigError::DuplicatePool {
                pool: def.name.clone(),
            });
        }
        for entry in &def.entries {
            let cidr = entry.cidr.trunc();
            let family = Family::of(&cidr.network());
            let start = pool::to_u128(cidr.network());
            let end = pool::to_u128(cidr.broadcast());
            ranges.push((family, start, end, cidr, def.name.as_str()));
        }
    }
    ranges.sort();
    for pair in ranges.windows(2) {
        let (family, _, end, cidr, pool) = pair[0];
        let (next_family, next_start, _, next_cidr, next_pool) = pair[1];
        // CIDRs either nest or are disjoint, so comparing neighbours is enough.
        if family == next_family && next_start <= end {
            return Err(PoolConfigError::Overlap {
                pool: next_pool.to_string(),
                cidr: next_cidr,
                other_pool: pool.to_string(),
                other: cidr,
            });
        }
    }
    Ok(())
}

impl Allocator {
    /// An allocator without pools, quarantining up to [`DEFAULT_RELEASE_QUARANTINE`] released
    /// addresses.
    pub fn new() -> Allocator {
        Allocator::with_release_quarantine(DEFAULT_RELEASE_QUARANTINE)
    }

    /// An allocator quarantining up to `capacity` released addresses; 0 gives MetalLB's
    /// behaviour (a released address is the first candidate for the next Service).
    pub fn with_release_quarantine(capacity: usize) -> Allocator {
        Allocator {
            pools: BTreeMap::new(),
            services: BTreeMap::new(),
            addresses: BTreeMap::new(),
            by_sharing_key: BTreeMap::new(),
            quarantine: Quarantine::new(capacity),
        }
    }

    /// Replaces the pools. Services whose addresses are no longer all usable in one pool lose
    /// them (`Displacement::Unassigned`); Services whose addresses moved to another pool keep them
    /// (`Displacement::Rehomed`). Sorted by Service. On error nothing changes.
    pub fn set_pools(&mut self, defs: Vec<PoolDef>) -> Result<Vec<Displaced>, PoolConfigError> {
        check_pool_defs(&defs)?;
        self.pools = defs
            .iter()
            .map(|def| (def.name.clone(), Pool::new(def)))
            .collect();

        let mut displaced = Vec::new();
        let mut unassigned = Vec::new();
        for (service, held) in self.services.iter_mut() {
            let mut owners = held.ips.iter().map(|ip| usable_owner(&self.pools, ip));
            let first = owners.next().flatten();
            let owner = first.filter(|first| owners.all(|other| other == Some(*first)));
            match owner {
                Some(owner) if *owner == held.pool => {}
                Some(owner) => {
                    displaced.push(Displaced {
                        service: service.clone(),
                        ips: held.ips.clone(),
                        change: Displacement::Rehomed {
                            from: std::mem::replace(&mut held.pool, owner.clone()).to_string(),
                            to: owner.to_string(),
                        },
                    });
                }
                None => {
                    displaced.push(Displaced {
                        service: service.clone(),
                        ips: held.ips.clone(),
                        change: Displacement::Unassigned,
                    });
                    unassigned.push(service.clone());
                }
            }
        }
        for service in &unassigned {
            let Some(held) = self.services.remove(service) else {
                continue;
            };
            for ip in &held.ips {
                if let Some(address) = self.addresses.get_mut(ip) {
                    address.remove_holder(service);
                    if address.holders.is_empty() {
                        self.addresses.remove(ip);
                        self.unindex_sharing(ip, held.sharing.as_deref());
                    }
                }
            }
        }

        // Counters and taken sets start empty in the new pools: rebuild them.
        for ip in self.addresses.keys() {
            let Some(owner) = usable_owner(&self.pools, ip).cloned() else {
                continue; // every holder was unassigned above, so this does not happen
            };
            if let Some(pool) = self.pools.get_mut(&*owner) {
                pool.in_use[Family::of(ip).index()] += 1;
                if let Some(entry) = pool.entry_for_mut(ip) {
                    entry.mark_taken(ip);
                }
            }
        }
        let pools = &self.pools;
        let addresses = &self.addresses;
        self.quarantine
            .retain(|ip| !addresses.contains_key(ip) && usable_owner(pools, ip).is_some());
        let quarantined: Vec<IpAddr> = self.quarantine.addresses().collect();
        for ip in quarantined {
            self.mark(&ip, true);
        }
        Ok(displaced)
    }

    /// Gives the Service addresses, or confirms the ones it holds.
    ///
    /// Idempotent: a Service that holds addresses compatible with the request keeps them (a
    /// `PreferDualStack` Service holding one family gains the other when its pool has one free).
    /// Held addresses that are no longer compatible (pool no longer admits the Service, other
    /// pool or addresses requested, family change, sharing conflict after a key change) are
    /// released, and the Service is allocated again: on error it holds nothing. An invalid
    /// request changes nothing.
    pub fn assign(&mut self, request: &AllocRequest) -> Result<Assignment, AllocError> {
        if !request.requested.is_empty() {
            check_families(request.families, &request.requested)
                .map_err(AllocError::InvalidRequest)?;
        }
        if self.services.contains_key(&request.service) {
            if let Some(kept) = self.keep_current(request, true) {
                return Ok(kept);
            }
            self.unhold(&request.service, true);
        }
        if !request.requested.is_empty() {
            self.claim(request, &request.requested)
        } else if let Some(pool) = &request.pool {
            self.allocate_from_named_pool(request, pool)
        } else {
            self.allocate_automatically(request)
        }
    }

    /// Re-claims addresses found in a Service's status (controller start, leadership gained).
    ///
    /// Succeeds if the addresses are still compatible with the request, exactly as if they had
    /// been requested explicitly (except that `autoAssign: false` pools are fine); never adds a
    /// family. When two Services claim the same address and may not share it, the first one to
    /// restore keeps it and the second gets `SharingConflict`: the controller restores in a
    /// deterministic order and then calls `assign` for the loser. A Service that held other
    /// addresses than `ips` loses them first (the status is the source of truth).
    pub fn restore(
        &mut self,
        request: &AllocRequest,
        ips: &[IpAddr],
    ) -> Result<Assignment, AllocError> {
        if ips.is_empty() {
            return Err(AllocError::InvalidRequest(
                RequestProblem::FamiliesDoNotMatch,
            ));
        }
        check_families(request.families, ips).map_err(AllocError::InvalidRequest)?;
        if !request.requested.is_empty() && !same_set(&request.requested, ips) {
            return Err(AllocError::InvalidRequest(
                RequestProblem::NotTheRequestedAddresses {
                    found: ips.to_vec(),
                    requested: request.requested.clone(),
                },
            ));
        }
        if let Some(held) = self.services.get(&request.service) {
            if same_set(&held.ips, ips)
                && let Some(kept) = self.keep_current(request, false)
            {
                return Ok(kept);
            }
            self.unhold(&request.service, false);
        }
        self.claim(request, ips)
    }

    /// Releases the Service's addresses; returns exactly the addresses it held.
    pub fn release(&mut self, service: &ServiceKey) -> Vec<IpAddr> {
        self.unhold(service, true)
            .map(|held| held.ips)
            .unwrap_or_default()
    }

    /// The Service's current assignment.
    pub fn assignment(&self, service: &ServiceKey) -> Option<Assignment> {
        self.services.get(service).map(|held| Assignment {
            pool: held.pool.to_string(),
            ips: held.ips.clone(),
        })
    }

    /// Services holding `ip`, sorted.
    pub fn holders(&self, ip: &IpAddr) -> Vec<ServiceKey> {
        self.addresses
            .get(ip)
            .map(|address| address.holders.clone())
            .unwrap_or_default()
    }

    /// The pool that may hand out `ip`, if any.
    pub fn pool_of(&self, ip: &IpAddr) -> Option<&str> {
        usable_owner(&self.pools, ip).map(|name| &**name)
    }

    /// Address counts per pool, by pool name.
    pub fn stats(&self) -> BTreeMap<String, PoolStats> {
        self.pools
            .iter()
            .map(|(name, pool)| {
                let stats = PoolStats {
                    v4: FamilyStats {
                        total: pool.total(Family::V4),
                        in_use: pool.in_use[Family::V4.index()],
                    },
                    v6: FamilyStats {
                        total: pool.total(Family::V6),
                        in_use: pool.in_use[Family::V6.index()],
                    },
                };
                (name.clone(), stats)
            })
            .collect()
    }

    /// Number of Services holding addresses.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The Services holding addresses, sorted.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// The held assignment if it still fits the request (updating its sharing information and,
    /// when `extend`, adding a `PreferDualStack` family), else `None`.
    fn keep_current(&mut self, request: &AllocRequest, extend: bool) -> Option<Assignment> {
        let held = self.services.get(&request.service)?;
        let pool = self.pools.get(&*held.pool)?;
        let sharing = sharing::normalized(request.sharing.as_ref());
        let families: Vec<Family> = held.ips.iter().map(Family::of).collect();
        let fits = request.admits(&held.pool)
            && request
                .pool
                .as_ref()
                .is_none_or(|named| **named == *held.pool)
            && (request.requested.is_empty() || same_set(&request.requested, &held.ips))
            && request.families.accepts(&families)
            && held.ips.iter().all(|ip| pool.can_hand_out(ip))
            && held
                .ips
                .iter()
                .all(|ip| self.first_conflict(ip, &request.service, sharing).is_none());
        if !fits {
            return None;
        }
        let pool_name = held.pool.clone();
        let mut ips = held.ips.clone();
        if extend
            && matches!(request.families, FamilyPolicy::PreferDualStack { .. })
            && ips.len() == 1
            && request.requested.is_empty()
            && let Some(extra) =
                self.pick(&pool_name, families[0].other(), &request.service, sharing)
        {
            ips.push(extra);
        }
        primary_first(&mut ips, request.families.primary());
        if ips == held.ips && held.sharing.as_deref() == sharing {
            return Some(Assignment {
                pool: pool_name.to_string(),
                ips,
            });
        }
        // Re-hold so that the new family and a changed sharing key, backend key or port list are
        // recorded.
        self.unhold(&request.service, false);
        Some(self.hold(&request.service, pool_name, ips, sharing))
    }

    /// Takes specific addresses (requested or restored) for the Service.
    fn claim(&mut self, request: &AllocRequest, ips: &[IpAddr]) -> Result<Assignment, AllocError> {
        let mut pool_name: Option<Arc<str>> = None;
        for ip in ips {
            let (pool, usability) =
                locate(&self.pools, ip).ok_or(AllocError::RequestedIpNotInPool { ip: *ip })?;
            let why = match usability {
                Usability::Usable => None,
                Usability::NetworkOrBroadcast => Some(IpRejection::NetworkOrBroadcast {
                    pool: pool.name.to_string(),
                }),
                Usability::Buggy => Some(IpRejection::BuggyAddress {
                    pool: pool.name.to_string(),
                }),
            };
            if let Some(why) = why {
                return Err(AllocError::RequestedIpNotAllowed { ip: *ip, why });
            }
            match &pool_name {
                Some(first) if *first != pool.name => {
                    return Err(AllocError::RequestedIpNotAllowed {
                        ip: *ip,
                        why: IpRejection::DifferentPools {
                            first: first.to_string(),
                            second: pool.name.to_string(),
                        },
                    });
                }
                Some(_) => {}
                None => pool_name = Some(pool.name.clone()),
            }
            if let Some(requested) = &request.pool
                && **requested != *pool.name
            {
                return Err(AllocError::RequestedIpNotAllowed {
                    ip: *ip,
                    why: IpRejection::NotInRequestedPool {
                        requested: requested.clone(),
                        actual: pool.name.to_string(),
                    },
                });
            }
            if !request.admits(&pool.name) {
                return Err(AllocError::RequestedIpNotAllowed {
                    ip: *ip,
                    why: IpRejection::PoolNotAdmitted {
                        pool: pool.name.to_string(),
                    },
                });
            }
        }
        let Some(pool_name) = pool_name else {
            return Err(AllocError::InvalidRequest(
                RequestProblem::FamiliesDoNotMatch,
            ));
        };
        let sharing = sharing::normalized(request.sharing.as_ref());
        for ip in ips {
            if let Some((with, why)) = self.first_conflict(ip, &request.service, sharing) {
                return Err(AllocError::SharingConflict { ip: *ip, with, why });
            }
        }
        let mut ips = ips.to_vec();
        primary_first(&mut ips, request.families.primary());
        Ok(self.hold(&request.service, pool_name, ips, sharing))
    }

    fn allocate_from_named_pool(
        &mut self,
        request: &AllocRequest,
        pool: &str,
    ) -> Result<Assignment, AllocError> {
        let Some(pool_name) = self.pools.get(pool).map(|found| found.name.clone()) else {
            return Err(AllocError::UnknownPool {
                pool: pool.to_string(),
            });
        };
        if !request.admits(pool) {
            return Err(AllocError::PoolNotAdmitted {
                pool: pool.to_string(),
            });
        }
        let sharing = sharing::normalized(request.sharing.as_ref());
        let mut last_rejection = None;
        for families in request.families.attempts() {
            match self.try_pool(pool, &families, &request.service, sharing) {
                Ok(ips) => {
                    return Ok(self.hold(&request.service, pool_name, ips, sharing));
                }
                Err(why) => last_rejection = Some(why),
            }
        }
        Err(AllocError::PoolUnusable {
            pool: pool.to_string(),
            why: last_rejection.unwrap_or(PoolRejection::NoAddressesOfFamily {
                family: request.families.primary(),
            }),
        })
    }

    fn allocate_automatically(&mut self, request: &AllocRequest) -> Result<Assignment, AllocError> {
        let order = self.automatic_pool_order(request);
        if order.is_empty() {
            return Err(AllocError::NoPoolAvailable);
        }
        let sharing = sharing::normalized(request.sharing.as_ref());
        let mut tried = Vec::new();
        for families in request.families.attempts() {
            // Report the attempts of the last (least demanding) family set.
            tried.clear();
            for pool in &order {
                match self.try_pool(pool, &families, &request.service, sharing) {
                    Ok(ips) => {
                        return Ok(self.hold(&request.service, pool.clone(), ips, sharing));
                    }
                    Err(why) => tried.push(PoolAttempt {
                        pool: pool.to_string(),
                        why,
                    }),
                }
            }
        }
        Err(AllocError::NoIpAvailable {
            tried: Attempts(tried),
        })
    }

    /// Auto-assign pools the Service may use, in the order they are tried.
    fn automatic_pool_order(&self, request: &AllocRequest) -> Vec<Arc<str>> {
        let mut pinned: Vec<&Pool> = Vec::new();
        let mut open: Vec<&Pool> = Vec::new();
        for allowed in &request.allowed_pools {
            let Some(pool) = self.pools.get(&allowed.name) else {
                continue;
            };
            if !pool.auto_assign {
                continue;
            }
            if allowed.pinned {
                pinned.push(pool);
            } else {
                open.push(pool);
            }
        }
        pinned.sort_by(|a, b| {
            (a.priority == 0, a.priority, &a.name).cmp(&(b.priority == 0, b.priority, &b.name))
        });
        open.sort_by(|a, b| a.name.cmp(&b.name));
        let mut order: Vec<Arc<str>> = Vec::new();
        for pool in pinned.into_iter().chain(open) {
            if !order.contains(&pool.name) {
                order.push(pool.name.clone());
            }
        }
        order
    }

    /// One address of each family from `pool`, primary first.
    fn try_pool(
        &self,
        pool: &str,
        families: &[Family],
        service: &ServiceKey,
        sharing: Option<&Sharing>,
    ) -> Result<Vec<IpAddr>, PoolRejection> {
        let Some(found) = self.pools.get(pool) else {
            return Err(PoolRejection::NoAddressesOfFamily {
                family: families.first().copied().unwrap_or(Family::V4),
            });
        };
        if let Some(family) = families.iter().find(|family| !found.has_family(**family)) {
            return Err(PoolRejection::NoAddressesOfFamily { family: *family });
        }
        families
            .iter()
            .map(|family| {
                self.pick(pool, *family, service, sharing)
                    .ok_or(PoolRejection::Exhausted { family: *family })
            })
            .collect()
    }

    /// The address of `family` the Service should get from `pool`, in order of preference:
    /// one it may share with Services of the same sharing key, one it released recently, the
    /// first fresh free one, the oldest quarantined one.
    fn pick(
        &self,
        pool_name: &str,
        family: Family,
        service: &ServiceKey,
        sharing: Option<&Sharing>,
    ) -> Option<IpAddr> {
        let pool = self.pools.get(pool_name)?;
        if let Some(sharing) = sharing
            && let Some(shared) = self.by_sharing_key.get(&sharing.key)
        {
            let joinable = shared.iter().find(|ip| {
                Family::of(ip) == family
                    && self
                        .addresses
                        .get(ip)
                        .and_then(|address| address.holders.first())
                        .and_then(|holder| self.services.get(holder))
                        .is_some_and(|held| &*held.pool == pool_name)
                    && self.first_conflict(ip, service, Some(sharing)).is_none()
            });
            if let Some(ip) = joinable {
                return Some(*ip);
            }
        }
        let in_pool = |ip: &IpAddr| Family::of(ip) == family && pool.can_hand_out(ip);
        if let Some(ip) = self.quarantine.released_by(service).find(in_pool) {
            return Some(ip);
        }
        if let Some(ip) = pool.first_free(family) {
            return Some(ip);
        }
        self.quarantine.oldest_first().find(in_pool)
    }

    /// The first holder of `ip` (other than `service`) that `service` may not share it with.
    fn first_conflict(
        &self,
        ip: &IpAddr,
        service: &ServiceKey,
        sharing: Option<&Sharing>,
    ) -> Option<(ServiceKey, SharingRejection)> {
        let address = self.addresses.get(ip)?;
        address
            .holders
            .iter()
            .filter(|holder| *holder != service)
            .find_map(|holder| {
                let theirs = self.services.get(holder).and_then(|h| h.sharing.as_deref());
                sharing::check(sharing, theirs)
                    .err()
                    .map(|why| (holder.clone(), why))
            })
    }

    /// Records that `service` holds `ips` from `pool`; it must hold nothing yet.
    fn hold(
        &mut self,
        service: &ServiceKey,
        pool: Arc<str>,
        ips: Vec<IpAddr>,
        sharing: Option<&Sharing>,
    ) -> Assignment {
        for ip in &ips {
            let address = self.addresses.entry(*ip).or_insert_with(|| Address {
                holders: Vec::new(),
            });
            if address.holders.is_empty() {
                if let Some(found) = self.pools.get_mut(&*pool) {
                    found.in_use[Family::of(ip).index()] += 1;
                    if let Some(entry) = found.entry_for_mut(ip) {
                        entry.mark_taken(ip);
                    }
                }
                self.quarantine.remove(ip);
            }
            address.add_holder(service);
            if let Some(sharing) = sharing {
                self.by_sharing_key
                    .entry(sharing.key.clone())
                    .or_default()
                    .insert(*ip);
            }
        }
        let assignment = Assignment {
            pool: pool.to_string(),
            ips: ips.clone(),
        };
        self.services.insert(
            service.clone(),
            Held {
                pool,
                ips,
                sharing: sharing.cloned().map(Box::new),
            },
        );
        assignment
    }

    /// Forgets what `service` holds; addresses nobody holds any more are quarantined (when
    /// `quarantine`) or freed.
    fn unhold(&mut self, service: &ServiceKey, quarantine: bool) -> Option<Held> {
        let held = self.services.remove(service)?;
        for ip in &held.ips {
            let Some(address) = self.addresses.get_mut(ip) else {
                continue;
            };
            address.remove_holder(service);
            if !address.holders.is_empty() {
                continue;
            }
            self.addresses.remove(ip);
            self.unindex_sharing(ip, held.sharing.as_deref());
            if let Some(pool) = self.pools.get_mut(&*held.pool) {
                let in_use = &mut pool.in_use[Family::of(ip).index()];
                *in_use = in_use.saturating_sub(1);
            }
            let freed = if quarantine {
                self.quarantine.add(*ip, service)
            } else {
                Some(*ip)
            };
            if let Some(freed) = freed {
                self.mark(&freed, false);
            }
        }
        Some(held)
    }

    fn unindex_sharing(&mut self, ip: &IpAddr, sharing: Option<&Sharing>) {
        if let Some(sharing) = sharing
            && let Some(ips) = self.by_sharing_key.get_mut(&sharing.key)
        {
            ips.remove(ip);
            if ips.is_empty() {
                self.by_sharing_key.remove(&sharing.key);
            }
        }
    }

    /// Marks `ip` taken or free in whichever pool entry covers it.
    fn mark(&mut self, ip: &IpAddr, taken: bool) {
        if let Some(entry) = self
            .pools
            .values_mut()
            .find_map(|pool| pool.entry_for_mut(ip))
        {
            if taken {
                entry.mark_taken(ip);
            } else {
                entry.mark_free(ip);
            }
        }
    }
}
