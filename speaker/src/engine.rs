//! The speaker's one decision step: from what the speaker knows to what each mode should
//! announce from this node. Pure: no I/O, no await, no Kubernetes types.
//!
//! Inputs: the view snapshot (Services with their endpoints, Nodes, the configuration), the live
//! set, this host's interfaces and the options. Output: a [`Plan`] per mode. Eligibility
//! ([`crate::eligibility`]) is shared; each mode has its own planner:
//! - layer2 ([`crate::layer2::planner`]): one owner per IP, elected;
//! - BGP ([`crate::bgp::plan`]): every eligible node.
//!
//! The daemon ([`crate::daemon`]) calls [`decide`] on every change and hands each mode's part to
//! its [`crate::announcer::Announcer`].

use crate::bgp;
use crate::election::Liveness;
use crate::eligibility::EligibilityOptions;
use crate::layer2::interfaces::HostIface;
use crate::layer2::planner as layer2;
use crate::membership::LiveSet;
use crate::view::SpeakerView;

/// Which speakers are alive.
#[derive(Debug, Clone, Copy)]
pub enum Live<'a> {
    /// Every node (membership off, or not converged yet).
    All,
    /// The membership's live set.
    Only(&'a LiveSet),
}

impl Liveness for Live<'_> {
    fn is_live(&self, node: &str) -> bool {
        match self {
            Live::All => true,
            Live::Only(set) => set.contains(node),
        }
    }
}

/// Options of the decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub eligibility: EligibilityOptions,
    /// Layer2: balanced ownership instead of per-IP rendezvous hashing.
    pub spread: bool,
}

/// Everything the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub view: &'a SpeakerView,
    /// This node's name.
    pub local: &'a str,
    pub live: Live<'a>,
    /// This host's interfaces (layer2 answers on them).
    pub host: &'a [HostIface],
    pub options: Options,
}

/// What every mode should announce from this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub layer2: layer2::Plan,
    pub bgp: bgp::Plan,
}

/// The decision step.
pub fn decide(inputs: &Inputs<'_>) -> Plan {
    let layer2 = layer2::plan(
        inputs.view,
        inputs.local,
        &inputs.live,
        inputs.host,
        layer2::Options {
            eligibility: inputs.options.eligibility,
            spread: inputs.options.spread,
        },
    );
    let bgp = bgp::plan(inputs.view, inputs.local, inputs.options.eligibility);
    Plan { layer2, bgp }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;

    use super::*;
    use crate::eligibility::tests::{l2_ads, service, view_with};
    use crate::layer2::interfaces::tests::iface;

    const NODES: [&str; 3] = ["node1", "node2", "node3"];

    fn host() -> Vec<HostIface> {
        vec![iface("eth0", &[("192.0.2.11", 24)])]
    }

    /// The cluster as every speaker sees it at one step of a replay.
    struct World {
        view: SpeakerView,
        live: LiveSet,
    }

    impl World {
        /// Each live node's decision; returns, per IP, the nodes that answer it (layer2) and
        /// the nodes that advertise it (BGP).
        fn decide_everywhere(
            &self,
        ) -> (
            BTreeMap<IpAddr, BTreeSet<String>>,
            BTreeMap<IpAddr, BTreeSet<String>>,
        ) {
            let host = host();
            let mut layer2: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
            let mut bgp: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
            for node in &self.live {
                let plan = decide(&Inputs {
                    view: &self.view,
                    local: node,
                    live: Live::Only(&self.live),
                    host: &host,
                    options: Options::default(),
                });
                for ip in plan.layer2.announce.keys() {
                    layer2.entry(*ip).or_default().insert(node.clone());
                }
                for ip in plan.bgp.announce.keys() {
                    bgp.entry(*ip).or_default().insert(node.clone());
                }
            }
            (layer2, bgp)
        }
    }

    type Step = (&'static str, fn(&mut World));

    /// A replayed sequence of inputs, in the manner of holo's protocol tests: after every step
    /// every layer2 IP is answered by exactly one live eligible node, the answering node moves
    /// only when it has to, and BGP IPs are advertised by every eligible live node.
    #[test]
    fn replayed_sequence_keeps_one_layer2_owner_and_every_bgp_node() {
        let docs = l2_ads(&["{ipAddressPools: [lan]}"])
            + "---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: bgp, namespace: ferrolb-system}\nspec: {ipAddressPools: [other]}\n";
        let mut world = World {
            view: view_with(&docs, vec![service("web", &["192.0.2.241"], &NODES)]),
            live: NODES.iter().map(|n| n.to_string()).collect(),
        };
        let l2_ip: IpAddr = "192.0.2.241".parse().unwrap();
        let bgp_ip: IpAddr = "203.0.113.130".parse().unwrap();
        let steps: Vec<Step> = vec![
            ("start", |_| {}),
            ("a BGP Service appears", |w| {
                w.view
                    .services
                    .push(service("api", &["203.0.113.130"], &NODES))
            }),
            ("the layer2 owner dies", |w| {
                let owner = owner_of(w, "192.0.2.241");
                w.live.remove(&owner);
            }),
            ("everyone comes back", |w| {
                w.live = NODES.iter().map(|n| n.to_string()).collect()
            }),
            ("web goes ETP Local on node2", |w| {
                let web = &mut w.view.services[0];
                web.local_traffic_policy = true;
                web.serving_nodes = ["node2".to_string()].into();
            }),
            ("node2 reports NetworkUnavailable", |w| {
                if let Some(n) = w.view.nodes.get_mut("node2") {
                    n.network_unavailable = true;
                }
            }),
            ("node2 recovers", |w| {
                if let Some(n) = w.view.nodes.get_mut("node2") {
                    n.network_unavailable = false;
                }
            }),
            ("the endpoints leave", |w| {
                let web = &mut w.view.services[0];
                web.serving_nodes.clear();
                web.has_serving_endpoint = false;
            }),
        ];
        let mut previous_owner: Option<String> = None;
        for (step, change) in steps {
            change(&mut world);
            let (layer2, bgp) = world.decide_everywhere();
            let web = &world.view.services[0];
            let eligible: BTreeSet<String> = world
                .live
                .iter()
                .filter(|n| !world.view.nodes[*n].network_unavailable)
                .filter(|n| {
                    web.has_serving_endpoint
                        && (!web.local_traffic_policy || web.serving_nodes.contains(*n))
                })
                .cloned()
                .collect();
            let answering = layer2.get(&l2_ip).cloned().unwrap_or_default();
            if eligible.is_empty() {
                assert!(answering.is_empty(), "{step}: {answering:?} answer");
                previous_owner = None;
            } else {
                assert_eq!(answering.len(), 1, "{step}: answering {answering:?}");
                let owner = answering.iter().next().cloned();
                assert!(eligible.contains(owner.as_deref().unwrap_or("")), "{step}");
                // No needless move: the owner changes only when it is no longer eligible or a
                // better (higher scoring) node became eligible again.
                if let (Some(before), Some(now)) = (&previous_owner, &owner)
                    && before != now
                {
                    assert!(
                        !eligible.contains(before) || step == "everyone comes back",
                        "{step}: moved from {before} to {now} for no reason"
                    );
                }
                previous_owner = owner;
            }
            assert!(!layer2.contains_key(&bgp_ip), "{step}: a BGP IP in layer2");
            if world.view.services.len() > 1 {
                // The BGP Service has endpoints everywhere: every live node that can reach the
                // network advertises it.
                let expected: BTreeSet<String> = world
                    .live
                    .iter()
                    .filter(|n| !world.view.nodes[*n].network_unavailable)
                    .cloned()
                    .collect();
                assert_eq!(bgp.get(&bgp_ip), Some(&expected), "{step}: BGP nodes");
            }
        }
    }

    fn owner_of(world: &World, ip: &str) -> String {
        let host = host();
        let plan = decide(&Inputs {
            view: &world.view,
            local: "node1",
            live: Live::Only(&world.live),
            host: &host,
            options: Options::default(),
        });
        plan.layer2.owners[&ip.parse::<IpAddr>().unwrap()]
            .as_ref()
            .map(|n| n.to_string())
            .unwrap()
    }
}
