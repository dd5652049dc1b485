//! Which node announces which IP in layer2 mode. Pure: no I/O, no Kubernetes types.
//!
//! Ownership is decided per IP, not per Service, so every Service sharing an IP gets the same
//! announcer. The rule is rendezvous (highest-random-weight) hashing: among the nodes that are
//! both *eligible* for the IP (computed from advertisements, node conditions, endpoints by the
//! caller) and *live* (membership), the node with the highest `rendezvous_score(node, ip)` wins.
//! Consequences, tested below as properties:
//! - every speaker computes the same owner from the same inputs, on any platform and version;
//! - adding a node moves only the IPs that the new node wins;
//! - removing a node moves only the IPs that node held.
//!
//! Rendezvous hashing spreads IPs evenly only on average. [`assign_balanced`] is the opt-in
//! alternative for a shared set of IPs: a deterministic bounded-load assignment in which per-node
//! counts differ by at most one, at the price of the minimal-movement properties.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;

/// The name of a Kubernetes node (a DNS-1123 subdomain; never contains a NUL byte).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: impl Into<String>) -> NodeName {
        NodeName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeName {
    fn from(name: &str) -> NodeName {
        NodeName(name.to_owned())
    }
}

impl From<String> for NodeName {
    fn from(name: String) -> NodeName {
        NodeName(name)
    }
}

impl Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which nodes are alive according to the membership protocol.
pub trait Liveness {
    fn is_live(&self, node: &str) -> bool;
}

impl<F: Fn(&str) -> bool> Liveness for F {
    fn is_live(&self, node: &str) -> bool {
        self(node)
    }
}

impl Liveness for BTreeSet<NodeName> {
    fn is_live(&self, node: &str) -> bool {
        self.contains(node)
    }
}

impl Liveness for HashSet<NodeName> {
    fn is_live(&self, node: &str) -> bool {
        self.contains(node)
    }
}

/// Every node counts as live (membership disabled: a speaker is assumed on every eligible node).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllLive;

impl Liveness for AllLive {
    fn is_live(&self, _node: &str) -> bool {
        true
    }
}

/// Why this node does not announce an IP; a status/log/metric label, never free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Another live, eligible node wins the election for the IP.
    NotOwner,
    /// The Service has no serving endpoint (anywhere, or on this node for
    /// `externalTrafficPolicy: Local`).
    NoEndpoints,
    /// No advertisement of the pool selects this node (or this Service).
    NoMatchingAdvertisement,
    /// The node carries `node.kubernetes.io/exclude-from-external-load-balancers`.
    NodeExcluded,
    /// The node has condition `NetworkUnavailable=True`.
    NetworkUnavailable,
    /// No eligible node is live, this one included (e.g. membership not yet converged).
    NoLiveCandidate,
}

impl SkipReason {
    /// A stable snake_case label for metrics and status.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotOwner => "not_owner",
            SkipReason::NoEndpoints => "no_endpoints",
            SkipReason::NoMatchingAdvertisement => "no_matching_advertisement",
            SkipReason::NodeExcluded => "node_excluded",
            SkipReason::NetworkUnavailable => "network_unavailable",
            SkipReason::NoLiveCandidate => "no_live_candidate",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The weight of `node` for `ip`: 64-bit FNV-1a over `node ‖ 0x00 ‖ family ‖ octets`, then the
/// MurmurHash3 `fmix64` finalizer.
///
/// FNV-1a (<http://www.isthe.com/chongo/tech/comp/fnv/>) is fully specified by its offset basis
/// and prime, so the value is the same in every process, on every platform and with every Rust
/// version (std's `DefaultHasher` promises none of that). FNV alone mixes the last bytes poorly
/// into the high bits, which biases a "highest score wins" choice between IPs that differ only in
/// the last octet; the finalizer (a fixed bijection) removes that bias. The NUL separator keeps
/// `("a", …)` and `("a\0…", …)` apart; the family byte keeps `0.0.0.1` and `::1`-style inputs
/// apart. Callers must canonicalise IPv4-mapped IPv6 addresses if they want them equal to IPv4.
pub fn rendezvous_score(node: &str, ip: IpAddr) -> u64 {
    let mut hash = Fnv1a::new();
    hash.write(node.as_bytes());
    hash.write(&[0]);
    match ip {
        IpAddr::V4(v4) => {
            hash.write(&[4]);
            hash.write(&v4.octets());
        }
        IpAddr::V6(v6) => {
            hash.write(&[6]);
            hash.write(&v6.octets());
        }
    }
    fmix64(hash.finish())
}

/// The node that announces `ip`: the live, eligible node with the highest rendezvous score
/// (ties, which need a 64-bit collision, go to the greater name). `None` if no node qualifies.
pub fn owner<'a>(
    ip: IpAddr,
    eligible: &'a BTreeSet<NodeName>,
    live: &impl Liveness,
) -> Option<&'a NodeName> {
    eligible
        .iter()
        .filter(|node| live.is_live(node.as_str()))
        .max_by_key(|node| (rendezvous_score(node.as_str(), ip), *node))
}

/// [`owner`] with a preference: the live, eligible node with the highest `preference` wins, and
/// the rendezvous score breaks ties among the most preferred (MetalLB's `preferredNodeSelectors`:
/// the preferred nodes win while one of them is live, and the others keep the minimal-movement
/// properties among themselves). With a preference of 0 everywhere this is [`owner`].
pub fn owner_preferring<'a>(
    ip: IpAddr,
    eligible: &'a BTreeSet<NodeName>,
    live: &impl Liveness,
    preference: impl Fn(&str) -> u32,
) -> Option<&'a NodeName> {
    eligible
        .iter()
        .filter(|node| live.is_live(node.as_str()))
        .max_by_key(|node| {
            (
                preference(node.as_str()),
                rendezvous_score(node.as_str(), ip),
                *node,
            )
        })
}

/// Whether `local` announces `ip`, or why not. The reasons that depend on Kubernetes state
/// (endpoints, advertisements, node labels) are decided by the caller before `eligible` is built.
pub fn decide(
    ip: IpAddr,
    local: &str,
    eligible: &BTreeSet<NodeName>,
    live: &impl Liveness,
) -> Result<(), SkipReason> {
    match owner(ip, eligible, live) {
        Some(winner) if winner.as_str() == local => Ok(()),
        Some(_) => Err(SkipReason::NotOwner),
        None => Err(SkipReason::NoLiveCandidate),
    }
}

/// Assigns every IP of `ips` to one live, eligible node, deterministically, such that the number
/// of IPs per candidate node differs by at most one.
///
/// IPs are taken in ascending order; each goes to its highest-scoring candidate that still has
/// room. With `m` IPs and `n` candidates (`m = q·n + r`), a node has room while it holds fewer
/// than `q` IPs, or exactly `q` while fewer than `r` nodes hold `q + 1`. Every node thus ends with
/// `q` or `q + 1` IPs and there is always room for the next IP. Unlike [`owner`], a membership
/// change may move IPs between nodes that did not change. Empty if there is no candidate.
pub fn assign_balanced(
    ips: &BTreeSet<IpAddr>,
    eligible: &BTreeSet<NodeName>,
    live: &impl Liveness,
) -> BTreeMap<IpAddr, NodeName> {
    let candidates: Vec<&NodeName> = eligible
        .iter()
        .filter(|node| live.is_live(node.as_str()))
        .collect();
    let mut assignment = BTreeMap::new();
    if candidates.is_empty() {
        return assignment;
    }
    let quota = ips.len() / candidates.len();
    let with_extra = ips.len() % candidates.len();
    let mut load: BTreeMap<&NodeName, usize> = candidates.iter().map(|node| (*node, 0)).collect();
    let mut nodes_at_extra = 0;
    for &ip in ips {
        let mut ranked = candidates.clone();
        ranked.sort_by_key(|node| std::cmp::Reverse((rendezvous_score(node.as_str(), ip), *node)));
        let chosen = ranked.into_iter().find(|node| {
            let held = load.get(node).copied().unwrap_or(0);
            held < quota || (held == quota && nodes_at_extra < with_extra)
        });
        // The counting argument above guarantees a choice; if it were ever wrong, leaving the IP
        // unassigned is safer than panicking in the speaker.
        let Some(node) = chosen else { continue };
        let held = load.entry(node).or_insert(0);
        *held += 1;
        if *held == quota + 1 {
            nodes_at_extra += 1;
        }
        assignment.insert(ip, node.clone());
    }
    assignment
}

/// 64-bit FNV-1a.
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Fnv1a {
        Fnv1a(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn nodes(names: &[&str]) -> BTreeSet<NodeName> {
        names.iter().map(|name| NodeName::from(*name)).collect()
    }

    fn fnv1a(bytes: &[u8]) -> u64 {
        let mut hash = Fnv1a::new();
        hash.write(bytes);
        hash.finish()
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (fnv_test.c, 64-bit FNV-1a).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn scores_are_pinned() {
        // Pinned values: if this fails the hash changed, and speakers of different versions
        // would disagree about owners during a rolling upgrade.
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 240));
        let v6 = IpAddr::V6("2001:db8:2::240".parse::<Ipv6Addr>().unwrap());
        assert_eq!(rendezvous_score("node-a", v4), PINNED_NODE_A_V4);
        assert_eq!(rendezvous_score("node-b", v6), PINNED_NODE_B_V6);
        assert_ne!(
            rendezvous_score("node-a", v4),
            rendezvous_score("node-b", v4)
        );
    }
    // Computed independently (Python: FNV-1a 64 + fmix64 over the documented byte layout).
    const PINNED_NODE_A_V4: u64 = 972_586_072_685_503_557;
    const PINNED_NODE_B_V6: u64 = 12_314_479_734_769_333_310;

    #[test]
    fn owner_is_none_without_live_candidates() {
        let eligible = nodes(&["a", "b"]);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(owner(ip, &eligible, &|_: &str| false), None);
        assert_eq!(owner(ip, &BTreeSet::new(), &AllLive), None);
        assert_eq!(
            decide(ip, "a", &eligible, &BTreeSet::new()),
            Err(SkipReason::NoLiveCandidate)
        );
    }

    #[test]
    fn decide_names_the_winner_only() {
        let eligible = nodes(&["a", "b", "c"]);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let winner = owner(ip, &eligible, &AllLive).unwrap().clone();
        for node in &eligible {
            let expected = if *node == winner {
                Ok(())
            } else {
                Err(SkipReason::NotOwner)
            };
            assert_eq!(decide(ip, node.as_str(), &eligible, &AllLive), expected);
        }
    }

    #[test]
    fn preference_wins_and_the_hash_breaks_ties() {
        let eligible = nodes(&["a", "b", "c", "d"]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let plain = owner(ip, &eligible, &AllLive).cloned();
        assert_eq!(
            owner_preferring(ip, &eligible, &AllLive, |_| 0).cloned(),
            plain
        );
        // Only c is preferred: c wins whatever the hash says.
        let c_only = |n: &str| u32::from(n == "c") * 50;
        assert_eq!(
            owner_preferring(ip, &eligible, &AllLive, c_only).map(NodeName::as_str),
            Some("c")
        );
        // c is dead: the others fall back to the plain hash order among themselves.
        let without_c: BTreeSet<NodeName> = nodes(&["a", "b", "d"]);
        let live = |n: &str| n != "c";
        assert_eq!(
            owner_preferring(ip, &eligible, &live, c_only).cloned(),
            owner(ip, &without_c, &AllLive).cloned()
        );
        // Two preferred nodes tie: the hash picks between them only.
        let b_and_d = |n: &str| if n == "b" || n == "d" { 10 } else { 0 };
        let winner = owner_preferring(ip, &eligible, &AllLive, b_and_d).cloned();
        assert_eq!(winner, owner(ip, &nodes(&["b", "d"]), &AllLive).cloned());
    }

    #[test]
    fn spread_is_roughly_even() {
        let eligible = nodes(&["node-1", "node-2", "node-3"]);
        let mut count: BTreeMap<&NodeName, usize> = BTreeMap::new();
        for last in 0..3000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + last)); // 198.51.100.0 onwards
            *count
                .entry(owner(ip, &eligible, &AllLive).unwrap())
                .or_default() += 1;
        }
        for (node, n) in count {
            assert!((850..=1150).contains(&n), "{node} owns {n} of 3000");
        }
    }

    #[test]
    fn balanced_spreads_even_when_few_ips() {
        let eligible = nodes(&["a", "b", "c", "d"]);
        let ips: BTreeSet<IpAddr> = (1..=5u8)
            .map(|last| IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
            .collect();
        let assignment = assign_balanced(&ips, &eligible, &AllLive);
        assert_eq!(assignment.len(), 5);
        let mut load: BTreeMap<&NodeName, usize> = BTreeMap::new();
        for node in assignment.values() {
            *load.entry(node).or_default() += 1;
        }
        assert_eq!(load.len(), 4, "every node gets at least one: {load:?}");
    }

    fn arb_nodes() -> impl Strategy<Value = BTreeSet<NodeName>> {
        proptest::collection::btree_set("node-[a-z0-9]{1,6}", 1..8)
            .prop_map(|names| names.into_iter().map(NodeName::from).collect())
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|bits| IpAddr::V4(Ipv4Addr::from(bits))),
            any::<u128>().prop_map(|bits| IpAddr::V6(Ipv6Addr::from(bits))),
        ]
    }

    fn arb_ips() -> impl Strategy<Value = BTreeSet<IpAddr>> {
        proptest::collection::btree_set(arb_ip(), 0..40)
    }

    proptest! {
        #[test]
        fn owner_is_deterministic_live_and_eligible(
            eligible in arb_nodes(), ip in arb_ip(), dead in any::<u64>()
        ) {
            // A node is dead if its bit in `dead` is set (by position in the set).
            let live: BTreeSet<NodeName> = eligible
                .iter()
                .enumerate()
                .filter(|(i, _)| dead & (1 << i) == 0)
                .map(|(_, node)| node.clone())
                .collect();
            let first = owner(ip, &eligible, &live);
            let (eligible_again, live_again) = (eligible.clone(), live.clone());
            prop_assert_eq!(first, owner(ip, &eligible_again, &live_again));
            match first {
                Some(node) => prop_assert!(live.contains(node) && eligible.contains(node)),
                None => prop_assert!(live.is_empty()),
            }
        }

        #[test]
        fn services_sharing_an_ip_share_the_owner(
            eligible in arb_nodes(),
            ips in proptest::collection::vec(arb_ip(), 1..4),
            services in proptest::collection::vec(any::<proptest::sample::Index>(), 1..20),
        ) {
            // Each service picks one of a few IPs; the owner is looked up per service.
            let service_ips: Vec<IpAddr> = services.iter().map(|pick| ips[pick.index(ips.len())]).collect();
            let mut owner_by_ip: BTreeMap<IpAddr, Option<&NodeName>> = BTreeMap::new();
            for ip in service_ips {
                let this = owner(ip, &eligible, &AllLive);
                let first = *owner_by_ip.entry(ip).or_insert(this);
                prop_assert_eq!(first, this);
            }
        }

        #[test]
        fn adding_a_node_moves_only_what_it_wins(
            eligible in arb_nodes(), ips in arb_ips(), newcomer in "new-[a-z]{1,4}"
        ) {
            let newcomer = NodeName::from(newcomer);
            let mut grown = eligible.clone();
            grown.insert(newcomer.clone());
            for ip in ips {
                let before = owner(ip, &eligible, &AllLive);
                let after = owner(ip, &grown, &AllLive);
                prop_assert!(before == after || after == Some(&newcomer),
                    "{ip}: {before:?} -> {after:?}");
            }
        }

        #[test]
        fn removing_a_node_moves_only_what_it_held(
            eligible in arb_nodes(), ips in arb_ips(), pick in any::<proptest::sample::Index>()
        ) {
            let leaving = eligible.iter().nth(pick.index(eligible.len())).cloned().unwrap();
            let mut shrunk = eligible.clone();
            shrunk.remove(&leaving);
            for ip in ips {
                let before = owner(ip, &eligible, &AllLive);
                let after = owner(ip, &shrunk, &AllLive);
                prop_assert!(before == after || before == Some(&leaving),
                    "{ip}: {before:?} -> {after:?}");
                // Killing the node (membership) has the same effect as making it ineligible.
                let dead = |node: &str| node != leaving.as_str();
                prop_assert_eq!(after, owner(ip, &eligible, &dead));
            }
        }

        #[test]
        fn balanced_is_complete_deterministic_and_within_one(
            eligible in arb_nodes(), ips in arb_ips()
        ) {
            let assignment = assign_balanced(&ips, &eligible, &AllLive);
            prop_assert_eq!(&assignment, &assign_balanced(&ips, &eligible, &AllLive));
            prop_assert_eq!(assignment.keys().copied().collect::<BTreeSet<_>>(), ips.clone());
            let mut load: BTreeMap<&NodeName, usize> =
                eligible.iter().map(|node| (node, 0)).collect();
            for node in assignment.values() {
                prop_assert!(eligible.contains(node));
                *load.get_mut(node).unwrap() += 1;
            }
            let max = load.values().max().copied().unwrap_or(0);
            let min = load.values().min().copied().unwrap_or(0);
            prop_assert!(max - min <= 1, "loads {load:?}");
        }

        #[test]
        fn balanced_skips_dead_nodes(eligible in arb_nodes(), ips in arb_ips()) {
            let Some(dead) = eligible.iter().next().cloned() else { return Ok(()) };
            let live = |node: &str| node != dead.as_str();
            let assignment = assign_balanced(&ips, &eligible, &live);
            prop_assert!(assignment.values().all(|node| *node != dead));
            if eligible.len() > 1 {
                prop_assert_eq!(assignment.len(), ips.len());
            } else {
                prop_assert!(assignment.is_empty());
            }
        }
    }
}
