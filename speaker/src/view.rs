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

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::config::ClusterResources;

    /// Two pools; `ads` are L2Advertisement specs (YAML flow maps).
    fn config(ads: &[&str]) -> Config {
        let mut yaml = String::from(
            "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: ferrolb-system}
spec: {addresses: [192.0.2.240/28, 2001:db8:2::240/124]}
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: other, namespace: ferrolb-system}
spec: {addresses: [203.0.113.128/28]}
",
        );
        for (i, spec) in ads.iter().enumerate() {
            yaml.push_str(&format!(
                "---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: ad{i}, namespace: ferrolb-system}}\nspec: {spec}\n"
            ));
        }
        let (resources, errors) = ClusterResources::from_yaml(&yaml, "test").unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        Config::build(&resources).unwrap()
    }

    fn node(labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            network_unavailable: false,
        }
    }

    fn service(name: &str, ips: &[&str], serving_nodes: &[&str]) -> ServiceInfo {
        ServiceInfo {
            key: ServiceKey {
                namespace: "default".into(),
                name: name.into(),
            },
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            local_traffic_policy: false,
            has_serving_endpoint: !serving_nodes.is_empty(),
            serving_nodes: serving_nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn view(ads: &[&str], services: Vec<ServiceInfo>) -> SpeakerView {
        SpeakerView {
            config: config(ads),
            nodes: BTreeMap::from([
                ("node1".to_string(), node(&[("zone", "a")])),
                ("node2".to_string(), node(&[("zone", "b")])),
                ("node3".to_string(), node(&[("zone", "b")])),
            ]),
            services,
        }
    }

    fn eligibility(view: &SpeakerView, ip: &str, node: &str) -> Result<Interfaces, SkipReason> {
        node_eligibility(
            view,
            EligibilityOptions::default(),
            &view.services[0],
            ip.parse().unwrap(),
            node,
        )
    }

    #[test]
    fn eligibility_table() {
        let web = || service("web", &["192.0.2.241"], &["node1", "node2", "node3"]);
        let ip = "192.0.2.241";
        // (case, advertisements, change to the view, node, expected)
        type Tweak = fn(&mut SpeakerView);
        type Case<'a> = (
            &'a str,
            Vec<&'a str>,
            Tweak,
            &'a str,
            Result<Interfaces, SkipReason>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "plain ad: every node",
                vec!["{ipAddressPools: [lan]}"],
                |_| {},
                "node1",
                Ok(Interfaces::All),
            ),
            (
                "ad of all pools",
                vec!["{}"],
                |_| {},
                "node2",
                Ok(Interfaces::All),
            ),
            (
                "ad of another pool",
                vec!["{ipAddressPools: [other]}"],
                |_| {},
                "node1",
                Err(SkipReason::NoMatchingAdvertisement),
            ),
            (
                "no ad",
                vec![],
                |_| {},
                "node1",
                Err(SkipReason::NoMatchingAdvertisement),
            ),
            (
                "node selector matches",
                vec!["{nodeSelectors: [{matchLabels: {zone: b}}]}"],
                |_| {},
                "node2",
                Ok(Interfaces::All),
            ),
            (
                "node selector does not match",
                vec!["{nodeSelectors: [{matchLabels: {zone: b}}]}"],
                |_| {},
                "node1",
                Err(SkipReason::NoMatchingAdvertisement),
            ),
            (
                "service selector does not match",
                vec!["{serviceSelectors: [{matchLabels: {app: db}}]}"],
                |_| {},
                "node1",
                Err(SkipReason::NoMatchingAdvertisement),
            ),
            (
                "service selector matches",
                vec!["{serviceSelectors: [{matchLabels: {app: web}}]}"],
                |_| {},
                "node1",
                Ok(Interfaces::All),
            ),
            (
                "interfaces named",
                vec![
                    "{interfaces: [eth1]}",
                    "{interfaces: [eth2], nodeSelectors: [{matchLabels: {zone: a}}]}",
                ],
                |_| {},
                "node1",
                Ok(Interfaces::Only(
                    ["eth1".to_string(), "eth2".to_string()].into(),
                )),
            ),
            (
                "one ad without interfaces wins",
                vec!["{interfaces: [eth1]}", "{}"],
                |_| {},
                "node1",
                Ok(Interfaces::All),
            ),
            (
                "NetworkUnavailable",
                vec!["{}"],
                |v| {
                    if let Some(n) = v.nodes.get_mut("node1") {
                        n.network_unavailable = true
                    }
                },
                "node1",
                Err(SkipReason::NetworkUnavailable),
            ),
            (
                "exclude label",
                vec!["{}"],
                |v| {
                    if let Some(n) = v.nodes.get_mut("node1") {
                        n.labels.insert(EXCLUDE_LB_LABEL.into(), String::new());
                    }
                },
                "node1",
                Err(SkipReason::NodeExcluded),
            ),
            (
                "no serving endpoint",
                vec!["{}"],
                |v| {
                    v.services[0].has_serving_endpoint = false;
                    v.services[0].serving_nodes.clear();
                },
                "node1",
                Err(SkipReason::NoEndpoints),
            ),
            (
                "ETP Local, endpoint elsewhere",
                vec!["{}"],
                |v| {
                    v.services[0].local_traffic_policy = true;
                    v.services[0].serving_nodes = ["node2".to_string()].into();
                },
                "node1",
                Err(SkipReason::NoEndpoints),
            ),
            (
                "ETP Local, endpoint here",
                vec!["{}"],
                |v| {
                    v.services[0].local_traffic_policy = true;
                    v.services[0].serving_nodes = ["node2".to_string()].into();
                },
                "node2",
                Ok(Interfaces::All),
            ),
            (
                "unknown node",
                vec!["{}"],
                |_| {},
                "node9",
                Err(SkipReason::NoMatchingAdvertisement),
            ),
        ];
        for (case, ads, tweak, node, expected) in cases {
            let mut v = view(&ads, vec![web()]);
            tweak(&mut v);
            assert_eq!(eligibility(&v, ip, node), expected, "{case}");
        }
    }

    #[test]
    fn ip_outside_every_pool_is_not_announced() {
        let v = view(&["{}"], vec![service("web", &["198.51.100.7"], &["node1"])]);
        assert_eq!(
            eligibility(&v, "198.51.100.7", "node1"),
            Err(SkipReason::NoMatchingAdvertisement)
        );
    }

    #[test]
    fn exclude_label_can_be_ignored() {
        let mut v = view(&["{}"], vec![service("web", &["192.0.2.241"], &["node1"])]);
        if let Some(n) = v.nodes.get_mut("node1") {
            n.labels.insert(EXCLUDE_LB_LABEL.into(), String::new());
        }
        let options = EligibilityOptions {
            ignore_exclude_lb: true,
        };
        let ip = "192.0.2.241".parse().unwrap();
        assert_eq!(
            node_eligibility(&v, options, &v.services[0], ip, "node1"),
            Ok(Interfaces::All)
        );
    }

    #[test]
    fn endpoint_conditions() {
        let c = |ready, serving| EndpointConditions { ready, serving };
        assert!(c(None, None).is_serving());
        assert!(c(Some(true), None).is_serving());
        assert!(c(Some(false), Some(true)).is_serving());
        assert!(!c(Some(false), None).is_serving());
        assert!(!c(Some(false), Some(false)).is_serving());
    }

    #[test]
    fn exactly_one_node_announces_each_ip_and_they_agree() {
        let services = vec![
            service(
                "web",
                &["192.0.2.241", "2001:db8:2::241"],
                &["node1", "node2", "node3"],
            ),
            service("db", &["192.0.2.242"], &["node1", "node2", "node3"]),
        ];
        let v = view(&["{}"], services);
        let plans: Vec<Plan> = ["node1", "node2", "node3"]
            .iter()
            .map(|n| plan(&v, n, &election::AllLive, PlanOptions::default()))
            .collect();
        for ip in ["192.0.2.241", "2001:db8:2::241", "192.0.2.242"] {
            let ip: IpAddr = ip.parse().unwrap();
            let announcing = plans
                .iter()
                .filter(|p| p.announce.contains_key(&ip))
                .count();
            assert_eq!(announcing, 1, "{ip}");
            assert!(
                plans
                    .windows(2)
                    .all(|w| w[0].owners.get(&ip) == w[1].owners.get(&ip))
            );
            let skipped: Vec<SkipReason> = plans
                .iter()
                .filter_map(|p| p.skipped.get(&ip).copied())
                .collect();
            assert_eq!(skipped, vec![SkipReason::NotOwner; 2], "{ip}");
        }
    }

    #[test]
    fn dead_owner_moves_the_ip_and_no_live_candidate_is_reported() {
        let v = view(
            &["{}"],
            vec![service(
                "web",
                &["192.0.2.241"],
                &["node1", "node2", "node3"],
            )],
        );
        let ip: IpAddr = "192.0.2.241".parse().unwrap();
        let all = plan(&v, "node1", &election::AllLive, PlanOptions::default());
        let Some(Some(first)) = all.owners.get(&ip).cloned() else {
            panic!("no owner")
        };
        let without_first = |n: &str| n != first.as_str();
        let next = plan(&v, "node1", &without_first, PlanOptions::default());
        let second = next.owners.get(&ip).cloned().flatten().unwrap();
        assert_ne!(first, second);
        let nobody = plan(&v, "node1", &|_: &str| false, PlanOptions::default());
        assert_eq!(nobody.skipped.get(&ip), Some(&SkipReason::NoLiveCandidate));
    }

    #[test]
    fn services_sharing_an_ip_pick_one_node_that_suits_both() {
        // web runs everywhere; local runs only on node3 with ETP Local: the shared IP goes to
        // node3, the only node eligible for both.
        let mut local = service("local", &["192.0.2.241"], &["node3"]);
        local.local_traffic_policy = true;
        let v = view(
            &["{}"],
            vec![
                service("web", &["192.0.2.241"], &["node1", "node2", "node3"]),
                local,
            ],
        );
        let ip: IpAddr = "192.0.2.241".parse().unwrap();
        let p = plan(&v, "node3", &election::AllLive, PlanOptions::default());
        let announcement = p.announce.get(&ip).expect("node3 announces");
        assert_eq!(announcement.services.len(), 2);
        for n in ["node1", "node2"] {
            let other = plan(&v, n, &election::AllLive, PlanOptions::default());
            assert!(other.announce.is_empty(), "{n}");
        }
    }

    #[test]
    fn spread_balances_ips_across_nodes() {
        let ips: Vec<String> = (240..246).map(|i| format!("192.0.2.{i}")).collect();
        let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        let v = view(
            &["{}"],
            vec![service("web", &ip_refs, &["node1", "node2", "node3"])],
        );
        let options = PlanOptions {
            spread: true,
            ..PlanOptions::default()
        };
        for n in ["node1", "node2", "node3"] {
            assert_eq!(
                plan(&v, n, &election::AllLive, options).announce.len(),
                2,
                "{n}"
            );
        }
    }
}
