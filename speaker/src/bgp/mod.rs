//! BGP mode: every eligible node announces the IP (the router spreads traffic over them, ECMP).
//!
//! - [`plan`]: pure, which IPs this node advertises and to which peers' advertisements.
//! - [`Announcer`] ([`announcer`]): one [`session`] task per BGPPeer that applies to this node,
//!   each fed the routes ([`announcer::routes_for`]) it should carry, and one [`report`] task
//!   beside it (BGPSessionState, Events, metrics).

pub mod announcer;
pub mod codec;
pub mod fsm;
pub mod report;
pub mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::election::SkipReason;
use crate::eligibility::{EligibilityOptions, node_eligibility, reason_rank};
use crate::view::{ServiceKey, SpeakerView};

pub use announcer::{Announcer, Context};

/// What this node advertises for one IP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// The Services that use the IP and for which this node is eligible.
    pub services: BTreeSet<ServiceKey>,
    /// The BGPAdvertisements (by name) under which it is advertised; each says to which peers,
    /// with which communities and at which aggregation length.
    pub advertisements: BTreeSet<String>,
}

/// The BGP decision from this node's point of view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The IPs this node advertises.
    pub announce: BTreeMap<IpAddr, Announcement>,
    /// Why this node does not advertise an IP that a BGPAdvertisement covers elsewhere.
    pub skipped: BTreeMap<IpAddr, SkipReason>,
}

/// Decides what `local` advertises: every IP of every Service for which it is eligible through
/// a BGPAdvertisement. Liveness plays no part: a dead node's sessions go down with it.
pub fn plan(view: &SpeakerView, local: &str, options: EligibilityOptions) -> Plan {
    let ads = &view.config.bgp_advertisements;
    let mut result = Plan::default();
    let mut reasons: BTreeMap<IpAddr, SkipReason> = BTreeMap::new();
    for service in &view.services {
        for &ip in &service.ips {
            match node_eligibility(view, ads, options, service, ip, local) {
                Ok(matching) => {
                    let entry = result.announce.entry(ip).or_default();
                    entry.services.insert(service.key.clone());
                    entry
                        .advertisements
                        .extend(matching.iter().map(|ad| ad.name.clone()));
                }
                Err(reason) => {
                    let best = reasons.entry(ip).or_insert(reason);
                    if reason_rank(reason) < reason_rank(*best) {
                        *best = reason;
                    }
                }
            }
        }
    }
    // An IP with no BGPAdvertisement at all is not a BGP IP.
    let bgp_ips: BTreeSet<IpAddr> = view
        .services
        .iter()
        .flat_map(|s| s.ips.iter().copied())
        .filter(|ip| {
            view.config.pool_containing(ip).is_some_and(|pool| {
                view.config
                    .bgp_advertisements_for(&pool.name)
                    .next()
                    .is_some()
            })
        })
        .collect();
    result.skipped = reasons
        .into_iter()
        .filter(|(ip, _)| bgp_ips.contains(ip) && !result.announce.contains_key(ip))
        .collect();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eligibility::tests::{service, view_with};

    fn bgp_ad(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: {name}, namespace: ferrolb-system}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn every_eligible_node_announces() {
        let docs = bgp_ad("all", "{ipAddressPools: [lan]}")
            + &bgp_ad(
                "zone-b",
                "{ipAddressPools: [lan], nodeSelectors: [{matchLabels: {zone: b}}]}",
            );
        let mut local = service("local", &["2001:db8:2::241"], &["node3"]);
        local.local_traffic_policy = true;
        let v = view_with(
            &docs,
            vec![
                service("web", &["192.0.2.241"], &["node1", "node2", "node3"]),
                local,
            ],
        );
        let opts = EligibilityOptions::default();
        let v4: IpAddr = "192.0.2.241".parse().unwrap();
        let v6: IpAddr = "2001:db8:2::241".parse().unwrap();
        for node in ["node1", "node2", "node3"] {
            let p = plan(&v, node, opts);
            assert!(p.announce.contains_key(&v4), "{node} announces {v4}");
        }
        let node1 = plan(&v, "node1", opts);
        assert_eq!(
            node1.announce[&v4].advertisements,
            BTreeSet::from(["all".to_string()])
        );
        assert_eq!(node1.skipped.get(&v6), Some(&SkipReason::NoEndpoints));
        let node3 = plan(&v, "node3", opts);
        assert_eq!(
            node3.announce[&v4].advertisements,
            BTreeSet::from(["all".to_string(), "zone-b".to_string()])
        );
        assert!(node3.announce.contains_key(&v6));
    }

    #[test]
    fn layer2_ips_are_not_bgp_ips() {
        let l2 = "---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2, namespace: ferrolb-system}\nspec: {}\n";
        let v = view_with(l2, vec![service("web", &["192.0.2.241"], &["node1"])]);
        let p = plan(&v, "node1", EligibilityOptions::default());
        assert!(p.announce.is_empty() && p.skipped.is_empty());
    }
}
