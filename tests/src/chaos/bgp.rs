//! BGP in the chaos run: the Services announced over BGP to the lab router (FRR), the faults
//! aimed at the router and its sessions, and the invariant the issue adds for BGP, numbered 7
//! here: **the router has exactly the eligible next hops** for every BGP Service address, in
//! steady state (every node with a running speaker for ETP Cluster, the nodes with an endpoint
//! for ETP Local).
//!
//! The speakers peer with the router over IPv4 and IPv6 with BFD (the router's `lab` profile,
//! 100 ms × 3) and no graceful restart, so a lost session withdraws its routes at once.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::ServiceShape;
use super::faults::{self, Injected};
use super::invariants::{ServiceUnderTest, Violation};
use super::schedule::FaultKind;
use crate::controlplane::FERROLB_NAMESPACE;
use crate::harness::TestLab;
use crate::netlab::router::bfd_profile_manifest;
use crate::netlab::topology::{NODE_ASN, ROUTER_ASN, ROUTER_LAN_V4, ROUTER_LAN_V6};

/// The BGP pool (not on the node LAN: only routes reach it). `autoAssign: false`, so the
/// layer2 Services never draw from it.
pub const POOL: &str = "chaos-bgp";
pub const POOL_RANGES: [&str; 2] = ["203.0.113.64/27", "2001:db8:ee:1::/120"];
/// The invariant's number in reports (the issue lists it without one).
pub const INVARIANT: u8 = 7;
/// The nftables table [`FaultKind::BfdLoss`] adds in the router's namespace.
const BFD_TABLE: &str = "ferrolb_chaos_bfd";
/// Single-hop BFD control packets (RFC 5881).
const BFD_PORT: u16 = 3784;
/// How long BFD may take to take a node's sessions down and its next hops out. A hang guard,
/// not a speed target (that is the measured recovery time, ~0.4 s): with BFD dropped and BGP
/// keepalives flowing, nothing but BFD would ever take the session down, so any bound tells
/// BFD acting from BFD ignored, and the default test run asserts no tight wall-clock bound.
const BFD_TAKES_EFFECT: Duration = Duration::from_secs(10);
/// How often the router's RIB is read.
const POLL: Duration = Duration::from_millis(100);

/// The configuration and Services of the BGP part, as YAML: a BFDProfile with the router's
/// timers, the pool, a BGPAdvertisement, an IPv4 and an IPv6 BGPPeer (the router's two
/// addresses), and two dual-stack Services: one ETP Cluster on every node, one ETP Local with
/// endpoints on the last two nodes.
pub fn manifest(nodes: &[String]) -> (String, Vec<ServiceUnderTest>) {
    let mut yaml = bfd_profile_manifest("chaos");
    yaml.push_str(&format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {POOL}, \
         namespace: {FERROLB_NAMESPACE}}}\nspec:\n  addresses: [\"{}\", \"{}\"]\n  autoAssign: \
         false\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: \
         {POOL}, namespace: {FERROLB_NAMESPACE}}}\nspec:\n  ipAddressPools: [{POOL}]\n",
        POOL_RANGES[0], POOL_RANGES[1]
    ));
    for (name, address) in [
        ("chaos-v4", ROUTER_LAN_V4.to_string()),
        ("chaos-v6", ROUTER_LAN_V6.to_string()),
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: {name}, \
             namespace: {FERROLB_NAMESPACE}}}\nspec: {{myASN: {NODE_ASN}, peerASN: {ROUTER_ASN}, \
             peerAddress: \"{address}\", bfdProfile: chaos}}\n"
        ));
    }
    let local_nodes: Vec<String> = nodes.iter().rev().take(2).rev().cloned().collect();
    let mut services = Vec::new();
    for (index, local) in [false, true].into_iter().enumerate() {
        let shape = ServiceShape {
            name: format!("chaos-bgp-{index}"),
            port: 90 + index,
            local,
            endpoints: if local {
                local_nodes.clone()
            } else {
                nodes.to_vec()
            },
            shared: false,
            pool: Some(POOL),
        };
        yaml.push_str(&shape.yaml());
        services.push(ServiceUnderTest {
            name: shape.name.clone(),
            endpoint_nodes: local.then(|| shape.endpoints.iter().cloned().collect()),
            ips: Vec::new(),
            shape,
        });
    }
    (yaml, services)
}

/// The route prefix of a Service address: a /32 or a /128.
fn host_prefix(ip: IpAddr) -> String {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    format!("{ip}/{len}")
}

/// The node addresses of `names` in `ip`'s family: the next hops the router must have.
fn node_hops(lab: &TestLab, names: &BTreeSet<String>, ip: IpAddr) -> BTreeSet<IpAddr> {
    lab.netlab()
        .topology
        .nodes()
        .filter(|node| names.contains(&node.name))
        .map(|node| {
            if ip.is_ipv4() {
                IpAddr::V4(node.ipv4)
            } else {
                IpAddr::V6(node.ipv6)
            }
        })
        .collect()
}

/// The nodes allowed to announce `service` (all, or its endpoints' for ETP Local).
fn eligible_nodes(lab: &TestLab, service: &ServiceUnderTest) -> BTreeSet<String> {
    service.endpoint_nodes.clone().unwrap_or_else(|| {
        lab.netlab()
            .topology
            .nodes()
            .map(|n| n.name.clone())
            .collect()
    })
}

/// Where the router's next hops for one address differ from what they must be.
fn mismatches(
    lab: &TestLab,
    services: &[ServiceUnderTest],
    want: impl Fn(&ServiceUnderTest, IpAddr) -> BTreeSet<IpAddr>,
) -> Vec<String> {
    let router = lab.netlab().router();
    let mut found = Vec::new();
    for service in services {
        for ip in &service.ips {
            let prefix = host_prefix(*ip);
            let wanted = want(service, *ip);
            match router.rib_next_hops(&prefix) {
                Ok(hops) if hops == wanted => {}
                Ok(hops) => found.push(format!(
                    "default/{} {prefix}: the router has next hops {hops:?}, must have \
                     {wanted:?}",
                    service.name
                )),
                Err(error) => found.push(format!("default/{} {prefix}: {error}", service.name)),
            }
        }
    }
    found
}

/// Invariant 7: the router's selected route for every address of `services` has exactly the
/// eligible nodes as next hops. Waits up to `within` for it to hold (reconnects back off: 1 s,
/// doubling while sessions keep failing); returns how long that took.
pub fn router_has_the_eligible_next_hops(
    lab: &TestLab,
    services: &[ServiceUnderTest],
    within: Duration,
) -> (Option<Duration>, Vec<Violation>) {
    let started = Instant::now();
    loop {
        let found = mismatches(lab, services, |service, ip| {
            node_hops(lab, &eligible_nodes(lab, service), ip)
        });
        if found.is_empty() {
            return (Some(started.elapsed()), Vec::new());
        }
        if started.elapsed() >= within {
            let violations = found
                .into_iter()
                .map(|what| Violation {
                    invariant: INVARIANT,
                    what: format!("{what} ({within:?} after the heal)"),
                })
                .collect();
            return (None, violations);
        }
        std::thread::sleep(POLL);
    }
}

/// After a router restart: FRR's BFD sessions with every node (both families) are up again
/// within `within`. A session bgpd brought up without BFD would leave that node to the hold
/// timer, which the next `bfd-loss` would then report late, so it is checked here, where it
/// happens.
pub fn bfd_back_up(lab: &TestLab, within: Duration) -> Vec<Violation> {
    let wanted: BTreeSet<IpAddr> = lab
        .netlab()
        .topology
        .nodes()
        .flat_map(|n| [IpAddr::V4(n.ipv4), IpAddr::V6(n.ipv6)])
        .collect();
    let router = lab.netlab().router();
    let started = Instant::now();
    loop {
        let up = router.bfd_peers_up().unwrap_or_default();
        let missing: Vec<&IpAddr> = wanted.difference(&up).collect();
        if missing.is_empty() {
            return Vec::new();
        }
        if started.elapsed() >= within {
            return vec![Violation {
                invariant: INVARIANT,
                what: format!(
                    "{within:?} after the router's restart, its BFD sessions with {missing:?} \
                     are not up"
                ),
            }];
        }
        std::thread::sleep(POLL);
    }
}

/// Whether any of `node`'s next hops is in the router's RIB for an address of `services`.
fn node_announced(lab: &TestLab, services: &[ServiceUnderTest], node: &str) -> bool {
    let names = BTreeSet::from([node.to_string()]);
    let router = lab.netlab().router();
    services.iter().any(|service| {
        service.ips.iter().any(|ip| {
            let hops = node_hops(lab, &names, *ip);
            router
                .rib_next_hops(&host_prefix(*ip))
                .is_ok_and(|rib| !rib.is_disjoint(&hops))
        })
    })
}

/// What a BGP fault must do while it is in force, and its recovery time, both measured at
/// the router from `since` (the injection):
/// - BFD loss: the node's next hops leave the RIB (the time that took is the recovery time:
///   BFD's detection, then bgpd and zebra); still there after [`BFD_TAKES_EFFECT`] (or the
///   hold, if longer) is a violation of invariant 7;
/// - a session reset: the node's next hops leave and come back (recovery: until back; a reset
///   too quick to see gives none);
/// - a router restart: nothing here (its recovery is measured after the restart).
pub fn while_in_force(
    lab: &TestLab,
    kind: FaultKind,
    nodes: &[String],
    services: &[ServiceUnderTest],
    since: Instant,
    until: Instant,
) -> (Option<Duration>, Vec<Violation>) {
    let Some(node) = nodes.first() else {
        return (None, Vec::new());
    };
    // Only a node that announced something can be seen to stop.
    let announced: Vec<ServiceUnderTest> = services
        .iter()
        .filter(|s| eligible_nodes(lab, s).contains(node))
        .cloned()
        .collect();
    match kind {
        FaultKind::BfdLoss => {
            let deadline = until.max(since + BFD_TAKES_EFFECT);
            while Instant::now() < deadline {
                if !node_announced(lab, &announced, node) {
                    return (Some(since.elapsed()), Vec::new());
                }
                std::thread::sleep(POLL);
            }
            let violation = Violation {
                invariant: INVARIANT,
                what: format!(
                    "BFD to {node} dropped for {:?}, and the router still routes to it",
                    deadline - since
                ),
            };
            (None, vec![violation])
        }
        FaultKind::BgpSessionReset => {
            let deadline = since + Duration::from_secs(5);
            let mut gone = false;
            while Instant::now() < deadline && !gone {
                gone = !node_announced(lab, &announced, node);
                if !gone {
                    std::thread::sleep(POLL);
                }
            }
            if !gone {
                return (None, Vec::new());
            }
            let want = |service: &ServiceUnderTest, ip: IpAddr| {
                node_hops(lab, &eligible_nodes(lab, service), ip)
            };
            while Instant::now() < until.max(since + Duration::from_secs(5)) {
                if mismatches(lab, &announced, want).is_empty() {
                    return (Some(since.elapsed()), Vec::new());
                }
                std::thread::sleep(POLL);
            }
            (None, Vec::new())
        }
        _ => (None, Vec::new()),
    }
}

/// BFD control packets to and from `node` dropped in the router's namespace.
fn bfd_rules(v4: std::net::Ipv4Addr, v6: std::net::Ipv6Addr) -> String {
    format!(
        "table inet {BFD_TABLE} {{\n  chain input {{\n    type filter hook input priority \
         filter - 10; policy accept;\n    ip saddr {v4} udp dport {BFD_PORT} drop\n    ip6 saddr \
         {v6} udp dport {BFD_PORT} drop\n  }}\n  chain output {{\n    type filter hook output \
         priority filter - 10; policy accept;\n    ip daddr {v4} udp dport {BFD_PORT} drop\n    \
         ip6 daddr {v6} udp dport {BFD_PORT} drop\n  }}\n}}\n"
    )
}

/// Injects a BGP fault (`nodes`: the node a session fault is aimed at).
pub fn inject(lab: &TestLab, kind: FaultKind, nodes: &[String]) -> anyhow::Result<Injected> {
    use anyhow::Context as _;
    let topology = &lab.netlab().topology;
    let node = || {
        let name = nodes.first().context("the fault needs a node")?;
        topology
            .nodes()
            .find(|n| &n.name == name)
            .with_context(|| format!("no node {name}"))
    };
    let router = lab.netlab().router();
    Ok(match kind {
        FaultKind::RouterRestart => {
            router.stop()?;
            Injected::RouterStopped
        }
        FaultKind::BgpSessionReset => {
            let node = node()?;
            for address in [IpAddr::V4(node.ipv4), IpAddr::V6(node.ipv6)] {
                router
                    .vtysh(&format!("clear bgp {address}"))
                    .with_context(|| format!("clear bgp {address}"))?;
            }
            Injected::Nothing
        }
        FaultKind::BfdLoss => {
            let node = node()?;
            let ns = vec![topology.router_ns()];
            let mut applied = Vec::new();
            if let Err(error) =
                faults::load_rules(lab, &bfd_rules(node.ipv4, node.ipv6), &ns, &mut applied)
            {
                faults::heal_filter(faults::INET, BFD_TABLE, &applied);
                return Err(error);
            }
            Injected::Filtered {
                family: faults::INET,
                table: BFD_TABLE,
                namespaces: applied,
            }
        }
        other => anyhow::bail!("{other} is not a BGP fault"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_peers_over_both_families_with_bfd() {
        let nodes: Vec<String> = ["node1", "node2", "node3"].map(String::from).to_vec();
        let (yaml, services) = manifest(&nodes);
        assert_eq!(yaml.matches("kind: BGPPeer\n").count(), 2, "{yaml}");
        assert_eq!(yaml.matches("bfdProfile: chaos").count(), 2, "{yaml}");
        assert!(yaml.contains("kind: BFDProfile"), "{yaml}");
        assert!(yaml.contains("autoAssign: false"), "{yaml}");
        assert_eq!(
            yaml.matches("ferrolb.io/address-pool: chaos-bgp").count(),
            2
        );
        assert_eq!(services[0].endpoint_nodes, None);
        assert_eq!(
            services[1].endpoint_nodes,
            Some(BTreeSet::from(["node2".to_string(), "node3".to_string()]))
        );
    }

    #[test]
    fn bfd_rules_drop_only_bfd_to_and_from_one_node() {
        let rules = bfd_rules(
            "192.0.2.12".parse().unwrap(),
            "2001:db8:2::12".parse().unwrap(),
        );
        for rule in [
            "ip saddr 192.0.2.12 udp dport 3784 drop",
            "ip daddr 192.0.2.12 udp dport 3784 drop",
            "ip6 saddr 2001:db8:2::12 udp dport 3784 drop",
            "ip6 daddr 2001:db8:2::12 udp dport 3784 drop",
        ] {
            assert!(rules.contains(rule), "{rule} missing: {rules}");
        }
        assert_eq!(rules.matches("policy accept").count(), 2, "{rules}");
    }

    #[test]
    fn host_prefixes() {
        assert_eq!(
            host_prefix("203.0.113.64".parse().unwrap()),
            "203.0.113.64/32"
        );
        assert_eq!(
            host_prefix("2001:db8:ee:1::".parse().unwrap()),
            "2001:db8:ee:1::/128"
        );
    }
}
