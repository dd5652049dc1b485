//! The layer2 planner: one owner per IP, elected among the live eligible nodes, and what this
//! node answers for (IP → interfaces of this host).
//!
//! Election: the nodes eligible for the IP ([`crate::eligibility`], through L2Advertisements)
//! that are live; the highest `preferredNodeSelectors` total wins, and the rendezvous hash breaks
//! ties ([`election::owner_preferring`]). Services sharing an IP share one election. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::config::L2Advertisement;

use crate::election::{self, Liveness, NodeName, SkipReason};
use crate::eligibility::{EligibilityOptions, node_eligibility, reason_rank};
use crate::layer2::diff::Announced;
use crate::layer2::interfaces::{HostIface, select_for};
use crate::layer2::responder::Interfaces;
use crate::view::{ServiceInfo, ServiceKey, SpeakerView};

/// What this node answers for one IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// This host's interfaces the IP is answered on (empty: the advertisements name interfaces
    /// this host does not have, so nothing can answer).
    pub interfaces: BTreeSet<String>,
    /// The Services that use the IP.
    pub services: BTreeSet<ServiceKey>,
}

/// The layer2 election over the whole view, from this node's point of view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The IPs this node owns.
    pub announce: BTreeMap<IpAddr, Announcement>,
    /// The owner of every layer2 IP (None: no eligible node is live).
    pub owners: BTreeMap<IpAddr, Option<NodeName>>,
    /// Why this node does not announce a layer2 IP.
    pub skipped: BTreeMap<IpAddr, SkipReason>,
    /// The layer2 IPs some node should announce: those with at least one eligible node, live
    /// or not (an IP whose eligible nodes are all down is expected and announced by nobody,
    /// which is what an alert comparing this with the announced IPs should catch).
    pub expected: BTreeSet<IpAddr>,
}

impl Plan {
    /// What the announcer converges to: IP → interfaces.
    pub fn desired(&self) -> Announced {
        self.announce
            .iter()
            .map(|(ip, a)| (*ip, a.interfaces.clone()))
            .collect()
    }
}

/// Options of the layer2 election.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub eligibility: EligibilityOptions,
    /// Balanced ownership (`election::assign_balanced`) instead of per-IP rendezvous hashing.
    pub spread: bool,
}

/// Per node: the L2Advertisements under which it may announce, or why it may not.
type ByNode<'a> = BTreeMap<&'a str, Result<Vec<&'a L2Advertisement>, SkipReason>>;

/// Decides who owns every layer2 IP and what `local` answers for.
pub fn plan(
    view: &SpeakerView,
    local: &str,
    live: &impl Liveness,
    host: &[HostIface],
    options: Options,
) -> Plan {
    let ads = &view.config.l2_advertisements;
    let mut per_ip: BTreeMap<IpAddr, Vec<(&ServiceInfo, ByNode<'_>)>> = BTreeMap::new();
    for service in &view.services {
        for &ip in &service.ips {
            let by_node = view
                .nodes
                .keys()
                .map(|node| {
                    let eligible =
                        node_eligibility(view, ads, options.eligibility, service, ip, node);
                    (node.as_str(), eligible)
                })
                .collect();
            per_ip.entry(ip).or_default().push((service, by_node));
        }
    }
    // An IP that no L2Advertisement covers on any node is not a layer2 IP (it may be BGP's).
    per_ip.retain(|_, services| {
        services.iter().any(|(_, by_node)| {
            by_node
                .values()
                .any(|r| !matches!(r, Err(SkipReason::NoMatchingAdvertisement)))
        })
    });

    let candidates: BTreeMap<IpAddr, BTreeSet<NodeName>> = per_ip
        .iter()
        .map(|(ip, services)| (*ip, candidates_of(view, services)))
        .collect();
    let preference = |ip: &IpAddr, node: &str| -> u32 {
        per_ip
            .get(ip)
            .map_or(0, |services| preference_of(view, services, node))
    };

    let mut owners: BTreeMap<IpAddr, Option<NodeName>> = candidates
        .iter()
        .map(|(ip, eligible)| {
            let owner = election::owner_preferring(*ip, eligible, live, |n| preference(ip, n));
            (*ip, owner.cloned())
        })
        .collect();
    if options.spread {
        // Balanced assignment needs one candidate set; per-IP eligibility and preferences still
        // apply, so an IP whose balanced owner is not eligible, or less preferred than the best
        // live candidate, keeps its elected owner.
        let ips: BTreeSet<IpAddr> = candidates.keys().copied().collect();
        let everyone: BTreeSet<NodeName> = candidates.values().flatten().cloned().collect();
        let balanced = election::assign_balanced(&ips, &everyone, live);
        for (ip, owner) in owners.iter_mut() {
            let (Some(node), Some(elected)) = (balanced.get(ip), owner.as_ref()) else {
                continue;
            };
            let eligible = candidates.get(ip).is_some_and(|c| c.contains(node));
            if eligible && preference(ip, node.as_str()) >= preference(ip, elected.as_str()) {
                *owner = Some(node.clone());
            }
        }
    }

    let mut result = Plan {
        owners: owners.clone(),
        expected: candidates
            .iter()
            .filter(|(_, eligible)| !eligible.is_empty())
            .map(|(ip, _)| *ip)
            .collect(),
        ..Plan::default()
    };
    for (ip, services) in &per_ip {
        let eligible_here = candidates.get(ip).is_some_and(|c| c.contains(local));
        match owners.get(ip) {
            Some(Some(owner)) if owner.as_str() == local => {
                let mut on: Option<Interfaces> = None;
                let mut keys = BTreeSet::new();
                for (service, by_node) in services {
                    keys.insert(service.key.clone());
                    if let Some(Ok(ads)) = by_node.get(local) {
                        for ad in ads {
                            on = Some(merge_interfaces(on, ad));
                        }
                    }
                }
                let on = on.unwrap_or(Interfaces::All);
                result.announce.insert(
                    *ip,
                    Announcement {
                        interfaces: select_for(*ip, &on, host),
                        services: keys,
                    },
                );
            }
            Some(Some(_)) if eligible_here => {
                result.skipped.insert(*ip, SkipReason::NotOwner);
            }
            _ if eligible_here => {
                result.skipped.insert(*ip, SkipReason::NoLiveCandidate);
            }
            _ => {
                result.skipped.insert(*ip, local_reason(services, local));
            }
        }
    }
    result
}

/// The nodes eligible for every Service of the IP or, when no node is, the nodes eligible for
/// any of them: every speaker computes the same set, so all pick the same owner.
fn candidates_of(
    view: &SpeakerView,
    services: &[(&ServiceInfo, ByNode<'_>)],
) -> BTreeSet<NodeName> {
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
    if !all.is_empty() {
        return all;
    }
    view.nodes
        .keys()
        .filter(|n| eligible_for(n) > 0)
        .map(|n| NodeName::new(n.as_str()))
        .collect()
}

/// MetalLB's `preferredNodeSelectors`: the weights of every preference that matches `node`,
/// summed over the distinct L2Advertisements under which `node` may announce the IP (so an
/// advertisement's preferences only count for the nodes its `nodeSelectors` admit).
fn preference_of(view: &SpeakerView, services: &[(&ServiceInfo, ByNode<'_>)], node: &str) -> u32 {
    let Some(info) = view.nodes.get(node) else {
        return 0;
    };
    let mut counted: BTreeSet<&str> = BTreeSet::new();
    let mut total = 0u32;
    for (_, by_node) in services {
        let Some(Ok(ads)) = by_node.get(node) else {
            continue;
        };
        for ad in ads {
            if !counted.insert(ad.name.as_str()) {
                continue;
            }
            total += ad
                .preferred_node_selectors
                .iter()
                .filter(|p| p.preference.matches(&info.labels))
                .map(|p| u32::from(p.weight))
                .sum::<u32>();
        }
    }
    total
}

/// The most telling reason among the Services (all failed for this node).
fn local_reason(services: &[(&ServiceInfo, ByNode<'_>)], local: &str) -> SkipReason {
    services
        .iter()
        .filter_map(|(_, by_node)| match by_node.get(local) {
            Some(Err(reason)) => Some(*reason),
            _ => None,
        })
        .min_by_key(|reason| reason_rank(*reason))
        .unwrap_or(SkipReason::NoMatchingAdvertisement)
}

/// The interfaces of one more advertisement: one that names none means every interface.
fn merge_interfaces(current: Option<Interfaces>, ad: &L2Advertisement) -> Interfaces {
    if ad.interfaces.is_empty() {
        return Interfaces::All;
    }
    match current {
        Some(Interfaces::All) => Interfaces::All,
        Some(Interfaces::Only(mut names)) => {
            names.extend(ad.interfaces.iter().cloned());
            Interfaces::Only(names)
        }
        None => Interfaces::Only(ad.interfaces.iter().cloned().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::AllLive;
    use crate::eligibility::tests::{l2_ads, service, view_with};
    use crate::layer2::interfaces::tests::iface;

    fn host() -> Vec<HostIface> {
        vec![
            iface("eth0", &[("192.0.2.11", 24), ("2001:db8:2::11", 64)]),
            iface("eth1", &[("198.51.100.11", 24)]),
        ]
    }

    fn run(v: &SpeakerView, local: &str, live: &impl Liveness) -> Plan {
        plan(v, local, live, &host(), Options::default())
    }

    const NODES: [&str; 3] = ["node1", "node2", "node3"];

    #[test]
    fn exactly_one_node_announces_each_ip_and_they_agree() {
        let services = vec![
            service("web", &["192.0.2.241", "2001:db8:2::241"], &NODES),
            service("db", &["192.0.2.242"], &NODES),
        ];
        let v = view_with(&l2_ads(&["{}"]), services);
        let plans: Vec<Plan> = NODES.iter().map(|n| run(&v, n, &AllLive)).collect();
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
        let v = view_with(
            &l2_ads(&["{}"]),
            vec![service("web", &["192.0.2.241"], &NODES)],
        );
        let ip: IpAddr = "192.0.2.241".parse().unwrap();
        let all = run(&v, "node1", &AllLive);
        let Some(Some(first)) = all.owners.get(&ip).cloned() else {
            panic!("no owner")
        };
        let without_first = |n: &str| n != first.as_str();
        let next = run(&v, "node1", &without_first);
        let second = next.owners.get(&ip).cloned().flatten().unwrap();
        assert_ne!(first, second);
        let nobody = run(&v, "node1", &|_: &str| false);
        assert_eq!(nobody.skipped.get(&ip), Some(&SkipReason::NoLiveCandidate));
    }

    /// `expected`: every layer2 IP with an eligible node, whether or not that node is live or
    /// is this one; not an IP without eligible nodes, nor one no L2Advertisement covers.
    #[test]
    fn expected_ips_are_those_some_eligible_node_should_announce() {
        let v = view_with(
            &l2_ads(&["{ipAddressPools: [lan]}"]),
            vec![
                service("web", &["192.0.2.241", "2001:db8:2::241"], &NODES),
                // No serving endpoint anywhere: no node is eligible.
                service("idle", &["192.0.2.242"], &[]),
                // In the pool no L2Advertisement selects: not a layer2 IP at all.
                service("bgp-only", &["203.0.113.129"], &NODES),
            ],
        );
        let web: BTreeSet<IpAddr> = ["192.0.2.241", "2001:db8:2::241"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        for node in NODES {
            assert_eq!(run(&v, node, &AllLive).expected, web, "{node}");
        }
        // With every eligible node down, nobody announces the IPs, yet they are expected.
        let nobody = run(&v, "node1", &|_: &str| false);
        assert_eq!(nobody.expected, web);
        assert!(nobody.announce.is_empty());
    }

    #[test]
    fn services_sharing_an_ip_pick_one_node_that_suits_both() {
        // web runs everywhere; local runs only on node3 with ETP Local: the shared IP goes to
        // node3, the only node eligible for both.
        let mut local = service("local", &["192.0.2.241"], &["node3"]);
        local.local_traffic_policy = true;
        let v = view_with(
            &l2_ads(&["{}"]),
            vec![service("web", &["192.0.2.241"], &NODES), local],
        );
        let ip: IpAddr = "192.0.2.241".parse().unwrap();
        let p = run(&v, "node3", &AllLive);
        let announcement = p.announce.get(&ip).expect("node3 announces");
        assert_eq!(announcement.services.len(), 2);
        for n in ["node1", "node2"] {
            assert!(run(&v, n, &AllLive).announce.is_empty(), "{n}");
        }
    }

    #[test]
    fn spread_balances_ips_across_nodes() {
        let ips: Vec<String> = (240..246).map(|i| format!("192.0.2.{i}")).collect();
        let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        let v = view_with(&l2_ads(&["{}"]), vec![service("web", &ip_refs, &NODES)]);
        let options = Options {
            spread: true,
            ..Options::default()
        };
        for n in NODES {
            assert_eq!(
                plan(&v, n, &AllLive, &host(), options).announce.len(),
                2,
                "{n}"
            );
        }
    }

    #[test]
    fn interfaces_are_resolved_on_this_host() {
        let ip = "192.0.2.241";
        // (advertisements, expected interfaces of the owner)
        let cases: [(&[&str], &[&str]); 4] = [
            (&["{}"], &["eth0"]),
            (&["{interfaces: [eth1]}"], &["eth1"]),
            (
                &["{interfaces: [eth1]}", "{interfaces: [eth0]}"],
                &["eth0", "eth1"],
            ),
            (&["{interfaces: [eth9]}"], &[]),
        ];
        for (ads, expected) in cases {
            let v = view_with(&l2_ads(ads), vec![service("web", &[ip], &NODES)]);
            let owner = run(&v, "node1", &AllLive).owners[&ip.parse().unwrap()]
                .clone()
                .unwrap();
            let p = run(&v, owner.as_str(), &AllLive);
            let got: Vec<&str> = p.announce[&ip.parse().unwrap()]
                .interfaces
                .iter()
                .map(String::as_str)
                .collect();
            assert_eq!(got, expected, "{ads:?}");
        }
    }

    /// The owner of `ip` with every node live, and with `dead` nodes dead.
    fn owner_of(v: &SpeakerView, ip: &str, dead: &[&str]) -> Option<String> {
        let live = |n: &str| !dead.contains(&n);
        run(v, "node1", &live).owners[&ip.parse().unwrap()]
            .as_ref()
            .map(|n| n.to_string())
    }

    #[test]
    fn preferred_node_selectors_table() {
        // MetalLB semantics: weights of matching preferences add up, over every advertisement
        // of the pool that admits the node; the highest total wins among the live eligible
        // nodes; the hash breaks ties. node1 is in zone a, node2 and node3 in zone b.
        let ip = "192.0.2.241";
        let web = || vec![service("web", &[ip], &NODES)];
        let prefer = |labels: &str, weight: u8| {
            format!(
                "{{preferredNodeSelectors: [{{weight: {weight}, preference: {{matchLabels: {labels}}}}}]}}"
            )
        };
        // Without preferences, which node wins? Pick a preference against it.
        let plain = owner_of(&view_with(&l2_ads(&["{}"]), web()), ip, &[]).unwrap();
        let other = NODES.iter().find(|n| **n != plain).unwrap().to_string();
        let label_of = |node: &str| if node == "node1" { "a" } else { "b" };

        // One preference for the zone of a non-winner: that zone's nodes win.
        let zone = label_of(&other);
        let v = view_with(&l2_ads(&[&prefer(&format!("{{zone: {zone}}}"), 50)]), web());
        let winner = owner_of(&v, ip, &[]).unwrap();
        assert_eq!(label_of(&winner), zone, "preferred zone {zone} wins");

        // node1 alone is preferred: it wins; when it dies the rest fall back to the hash
        // order among themselves; when it comes back it reclaims the IP.
        let v = view_with(&l2_ads(&[&prefer("{zone: a}", 10)]), web());
        assert_eq!(owner_of(&v, ip, &[]).as_deref(), Some("node1"));
        let fallback = owner_of(&v, ip, &["node1"]).unwrap();
        let plain_without_node1 =
            owner_of(&view_with(&l2_ads(&["{}"]), web()), ip, &["node1"]).unwrap();
        assert_eq!(fallback, plain_without_node1);
        assert_eq!(owner_of(&v, ip, &[]).as_deref(), Some("node1"));

        // Weights add up across preferences and advertisements: zone a gets 30, zone b 20 + 20.
        let v = view_with(
            &l2_ads(&[
                &prefer("{zone: a}", 30),
                &prefer("{zone: b}", 20),
                &prefer("{zone: b}", 20),
            ]),
            web(),
        );
        assert_eq!(label_of(&owner_of(&v, ip, &[]).unwrap()), "b");
        let v = view_with(
            &l2_ads(&[
                &prefer("{zone: a}", 50),
                &prefer("{zone: b}", 20),
                &prefer("{zone: b}", 20),
            ]),
            web(),
        );
        assert_eq!(owner_of(&v, ip, &[]).as_deref(), Some("node1"));

        // An advertisement's preferences count only for the nodes its nodeSelectors admit: the
        // zone-a preference lives in an advertisement for zone b, so it helps nobody.
        let scoped = "{nodeSelectors: [{matchLabels: {zone: b}}], preferredNodeSelectors: [{weight: 90, preference: {matchLabels: {zone: a}}}]}";
        let v = view_with(&l2_ads(&["{}", scoped]), web());
        assert_eq!(
            owner_of(&v, ip, &[]),
            owner_of(&view_with(&l2_ads(&["{}"]), web()), ip, &[])
        );

        // Every speaker computes the same owner.
        let v = view_with(&l2_ads(&[&prefer("{zone: b}", 10)]), web());
        let owners: BTreeSet<Option<NodeName>> = NODES
            .iter()
            .map(|n| run(&v, n, &AllLive).owners[&ip.parse().unwrap()].clone())
            .collect();
        assert_eq!(owners.len(), 1);
    }

    #[test]
    fn ips_without_a_layer2_advertisement_are_left_to_other_modes() {
        let bgp_only = "---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: bgp, namespace: ferrolb-system}\nspec: {}\n";
        let v = view_with(bgp_only, vec![service("web", &["192.0.2.241"], &NODES)]);
        let p = run(&v, "node1", &AllLive);
        assert!(p.owners.is_empty() && p.announce.is_empty() && p.skipped.is_empty());
    }
}
