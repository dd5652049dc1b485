//! What the speaker knows about the cluster, as plain data, and the pure decisions over it: which
//! nodes are eligible to announce an IP (and why a node is not), and which IPs this node owns.
//!
//! No Kubernetes types and no I/O here: `run.rs` converts watched objects into a [`SpeakerView`],
//! so every rule (advertisement selectors, `NetworkUnavailable`, the exclude label, endpoints,
//! `externalTrafficPolicy: Local`) is unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::config::Config;

use crate::election::{self, Liveness, NodeName, SkipReason};
use crate::layer2::Interfaces;

/// The label that takes a node out of external load balancing.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A Node, reduced to what eligibility needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub labels: BTreeMap<String, String>,
    /// Condition `NetworkUnavailable` is `True`.
    pub network_unavailable: bool,
}

/// A Service's key: namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A LoadBalancer Service handled by this speaker (class already filtered), with its assigned IPs
/// and where its serving endpoints are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub key: ServiceKey,
    pub labels: BTreeMap<String, String>,
    /// `status.loadBalancer.ingress[].ip`.
    pub ips: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local`.
    pub local_traffic_policy: bool,
    /// The Service has at least one serving endpoint (on any node, or without a node name).
    pub has_serving_endpoint: bool,
    /// Nodes that run at least one serving endpoint.
    pub serving_nodes: BTreeSet<String>,
}

/// One EndpointSlice endpoint's conditions, as the API reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
}

impl EndpointConditions {
    /// Ready (nil counts as ready, per the EndpointSlice API) or explicitly serving.
    pub fn is_serving(self) -> bool {
        self.ready.unwrap_or(true) || self.serving == Some(true)
    }
}

/// Options that change eligibility.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EligibilityOptions {
    /// Announce from nodes labelled [`EXCLUDE_LB_LABEL`] too.
    pub ignore_exclude_lb: bool,
}

/// Everything the decisions read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpeakerView {
    pub config: Config,
    pub nodes: BTreeMap<String, NodeInfo>,
    pub services: Vec<ServiceInfo>,
}

/// Why `node` may announce `ip` for `service` (and on which interfaces), or why not.
pub fn node_eligibility(
    view: &SpeakerView,
    options: EligibilityOptions,
    service: &ServiceInfo,
    ip: IpAddr,
    node: &str,
) -> Result<Interfaces, SkipReason> {
    let Some(info) = view.nodes.get(node) else {
        return Err(SkipReason::NoMatchingAdvertisement);
    };
    let interfaces = matching_interfaces(view, service, ip, info)?;
    if info.network_unavailable {
        return Err(SkipReason::NetworkUnavailable);
    }
    if !options.ignore_exclude_lb && info.labels.contains_key(EXCLUDE_LB_LABEL) {
        return Err(SkipReason::NodeExcluded);
    }
    if !service.has_serving_endpoint {
        return Err(SkipReason::NoEndpoints);
    }
    if service.local_traffic_policy && !service.serving_nodes.contains(node) {
        return Err(SkipReason::NoEndpoints);
    }
    Ok(interfaces)
}

/// The interfaces the L2Advertisements that select (pool, service, node) name; all if one of them
/// names none.
fn matching_interfaces(
    view: &SpeakerView,
    service: &ServiceInfo,
    ip: IpAddr,
    node: &NodeInfo,
) -> Result<Interfaces, SkipReason> {
    let Some(pool) = view.config.pool_containing(&ip) else {
        return Err(SkipReason::NoMatchingAdvertisement);
    };
    let mut named = BTreeSet::new();
    let mut matched = false;
    for ad in &view.config.l2_advertisements {
        let selects_pool = ad.pools.iter().any(|p| p == &pool.name);
        let selects_service = ad.service_selectors.is_empty()
            || ad
                .service_selectors
                .iter()
                .any(|s| s.matches(&service.labels));
        let selects_node = ad.node_selectors.is_empty()
            || ad.node_selectors.iter().any(|s| s.matches(&node.labels));
        if !(selects_pool && selects_service && selects_node) {
            continue;
        }
        if ad.interfaces.is_empty() {
            return Ok(Interfaces::All);
        }
        matched = true;
        named.extend(ad.interfaces.iter().cloned());
    }
    if matched {
        Ok(Interfaces::Only(named))
    } else {
        Err(SkipReason::NoMatchingAdvertisement)
    }
}

/// What this node announces for one IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub interfaces: Interfaces,
    /// The Services that use the IP.
    pub services: BTreeSet<ServiceKey>,
}

/// The election over the whole view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The IPs this node announces.
    pub announce: BTreeMap<IpAddr, Announcement>,
    /// The winner of every IP (None: nobody is eligible and live).
    pub owners: BTreeMap<IpAddr, Option<NodeName>>,
    /// Why this node does not announce an IP.
    pub skipped: BTreeMap<IpAddr, SkipReason>,
}

/// Options of the election.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    pub eligibility: EligibilityOptions,
    /// Balanced ownership (`election::assign_balanced`) instead of per-IP rendezvous hashing.
    pub spread: bool,
}

/// Per IP: the Services using it and, per node, its eligibility (interfaces or reason).
type IpCandidates<'a> = BTreeMap<
    IpAddr,
    Vec<(
        &'a ServiceInfo,
        BTreeMap<&'a str, Result<Interfaces, SkipReason>>,
    )>,
>;

/// Decides, for every assigned IP, who announces it and whether `local` does.
///
/// Services sharing an IP share one election: the candidates are the nodes eligible for every
/// Service of the IP, or (when no node is) the nodes eligible for any of them, so all of them
/// pick the same node.
pub fn plan(view: &SpeakerView, local: &str, live: &impl Liveness, options: PlanOptions) -> Plan {
    let mut per_ip: IpCandidates<'_> = BTreeMap::new();
    for service in &view.services {
        for &ip in &service.ips {
            let by_node = view
                .nodes
                .keys()
                .map(|node| {
                    (
                        node.as_str(),
                        node_eligibility(view, options.eligibility, service, ip, node),
                    )
                })
                .collect();
            per_ip.entry(ip).or_default().push((service, by_node));
        }
    }
    let mut candidates: BTreeMap<IpAddr, BTreeSet<NodeName>> = BTreeMap::new();
    for (ip, services) in &per_ip {
        let eligible_for = |node: &str| {
            services
                .iter()
                .filter(|(_, by_node)| matches!(by_node.get(node), Some(Ok(_))))
                .count()
        };
        let all: BTreeSet<NodeName> = view
            .nodes
            .keys()
            .filter(|n| eligible_for(n) == services.len())
            .map(|n| NodeName::new(n.as_str()))
            .collect();
        let chosen = if all.is_empty() {
            view.nodes
                .keys()
                .filter(|n| eligible_for(n) > 0)
                .map(|n| NodeName::new(n.as_str()))
                .collect()
        } else {
            all
        };
        candidates.insert(*ip, chosen);
    }

    let owners: BTreeMap<IpAddr, Option<NodeName>> = if options.spread {
        let ips: BTreeSet<IpAddr> = candidates.keys().copied().collect();
        // Balanced assignment needs one candidate set; per-IP eligibility still applies, so an
        // IP whose balanced owner is not eligible for it falls back to rendezvous hashing.
        let everyone: BTreeSet<NodeName> = candidates.values().flatten().cloned().collect();
        let balanced = election::assign_balanced(&ips, &everyone, live);
        candidates
            .iter()
            .map(|(ip, eligible)| {
                let owner = match balanced.get(ip) {
                    Some(node) if eligible.contains(node) => Some(node.clone()),
                    _ => election::owner(*ip, eligible, live).cloned(),
                };
                (*ip, owner)
            })
            .collect()
    } else {
        candidates
            .iter()
            .map(|(ip, eligible)| (*ip, election::owner(*ip, eligible, live).cloned()))
            .collect()
    };

    let mut result = Plan {
        owners: owners.clone(),
        ..Plan::default()
    };
    for (ip, services) in &per_ip {
        let local_reason = || {
            // The most telling reason among the Services (all failed for this node).
            services
                .iter()
                .filter_map(|(_, by_node)| match by_node.get(local) {
                    Some(Err(reason)) => Some(*reason),
                    _ => None,
                })
                .min_by_key(|reason| reason_rank(*reason))
                .unwrap_or(SkipReason::NoMatchingAdvertisement)
        };
        match owners.get(ip) {
            Some(Some(owner)) if owner.as_str() == local => {
                let mut interfaces: Option<Interfaces> = None;
                let mut keys = BTreeSet::new();
                for (service, by_node) in services {
                    keys.insert(service.key.clone());
                    if let Some(Ok(on)) = by_node.get(local) {
                        interfaces = Some(merge_interfaces(interfaces, on));
                    }
                }
                result.announce.insert(
                    *ip,
                    Announcement {
                        interfaces: interfaces.unwrap_or(Interfaces::All),
                        services: keys,
                    },
                );
            }
            Some(Some(_)) => {
                let eligible_here = candidates.get(ip).is_some_and(|c| c.contains(local));
                let reason = if eligible_here {
                    SkipReason::NotOwner
                } else {
                    local_reason()
                };
                result.skipped.insert(*ip, reason);
            }
            _ => {
                let eligible_here = candidates.get(ip).is_some_and(|c| c.contains(local));
                let reason = if eligible_here {
                    SkipReason::NoLiveCandidate
                } else {
                    local_reason()
                };
                result.skipped.insert(*ip, reason);
            }
        }
    }
    result
}

/// Node-level reasons first: they say the most about this node.
fn reason_rank(reason: SkipReason) -> u8 {
    match reason {
        SkipReason::NetworkUnavailable => 0,
        SkipReason::NodeExcluded => 1,
        SkipReason::NoMatchingAdvertisement => 2,
        SkipReason::NoEndpoints => 3,
        SkipReason::NoLiveCandidate => 4,
        SkipReason::NotOwner => 5,
    }
}

fn merge_interfaces(current: Option<Interfaces>, more: &Interfaces) -> Interfaces {
    match (current, more) {
        (None, more) => more.clone(),
        (Some(Interfaces::All), _) | (_, Interfaces::All) => Interfaces::All,
        (Some(Interfaces::Only(mut a)), Interfaces::Only(b)) => {
            a.extend(b.iter().cloned());
            Interfaces::Only(a)
        }
    }
}
