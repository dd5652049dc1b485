//! Which nodes may announce an IP for a Service, whatever the mode, and why a node may not.
//!
//! Eligibility is the part both modes share: the node must be selected by an advertisement of
//! the mode (pool, service and node selectors), must not report `NetworkUnavailable`, must not
//! carry the exclude label, and the Service must have a serving endpoint (on this node, for
//! `externalTrafficPolicy: Local`). What a mode then does with the eligible nodes is its own
//! planner's business: layer2 elects one owner per IP, BGP announces from every one of them.
//!
//! Pure: no I/O, no Kubernetes types.

use std::net::IpAddr;

use ferrolb_crds::config::{BgpAdvertisement, L2Advertisement, Selector};

use crate::election::SkipReason;
use crate::view::{EXCLUDE_LB_LABEL, NodeInfo, ServiceInfo, SpeakerView};

/// Options that change eligibility.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EligibilityOptions {
    /// Announce from nodes labelled [`EXCLUDE_LB_LABEL`] too.
    pub ignore_exclude_lb: bool,
}

/// What eligibility reads of an advertisement, whatever its mode.
pub trait Advertisement {
    fn pools(&self) -> &[String];
    /// Empty: every node.
    fn node_selectors(&self) -> &[Selector];
    /// Empty: every Service.
    fn service_selectors(&self) -> &[Selector];

    /// Whether this advertisement covers `pool`, `service` and `node`. As in MetalLB, an
    /// advertisement with service selectors never covers a Service that shares its IP
    /// (`allow-shared-ip`): the Services on one IP could match different advertisements, and
    /// one IP is announced one way.
    fn selects(&self, pool: &str, service: &ServiceInfo, node: &NodeInfo) -> bool {
        self.pools().iter().any(|p| p == pool)
            && (self.service_selectors().is_empty()
                || (!service.shares_ip
                    && self
                        .service_selectors()
                        .iter()
                        .any(|s| s.matches(&service.labels))))
            && self.selects_node(node)
    }

    /// Whether the advertisement's node selectors admit `node`.
    fn selects_node(&self, node: &NodeInfo) -> bool {
        self.node_selectors().is_empty()
            || self
                .node_selectors()
                .iter()
                .any(|s| s.matches(&node.labels))
    }
}

impl Advertisement for L2Advertisement {
    fn pools(&self) -> &[String] {
        &self.pools
    }
    fn node_selectors(&self) -> &[Selector] {
        &self.node_selectors
    }
    fn service_selectors(&self) -> &[Selector] {
        &self.service_selectors
    }
}

impl Advertisement for BgpAdvertisement {
    fn pools(&self) -> &[String] {
        &self.pools
    }
    fn node_selectors(&self) -> &[Selector] {
        &self.node_selectors
    }
    fn service_selectors(&self) -> &[Selector] {
        &self.service_selectors
    }
}

/// The advertisements of `ads` under which `node` may announce `ip` for `service`, or why it may
/// not. Never empty when `Ok`.
pub fn node_eligibility<'a, A: Advertisement>(
    view: &SpeakerView,
    ads: &'a [A],
    options: EligibilityOptions,
    service: &ServiceInfo,
    ip: IpAddr,
    node: &str,
) -> Result<Vec<&'a A>, SkipReason> {
    let Some(info) = view.nodes.get(node) else {
        return Err(SkipReason::NoMatchingAdvertisement);
    };
    let Some(pool) = view.config.pool_containing(&ip) else {
        return Err(SkipReason::NoMatchingAdvertisement);
    };
    let matching: Vec<&A> = ads
        .iter()
        .filter(|ad| ad.selects(&pool.name, service, info))
        .collect();
    if matching.is_empty() {
        return Err(SkipReason::NoMatchingAdvertisement);
    }
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
    Ok(matching)
}

/// Node-level reasons first: they say the most about this node.
pub fn reason_rank(reason: SkipReason) -> u8 {
    match reason {
        SkipReason::NetworkUnavailable => 0,
        SkipReason::NodeExcluded => 1,
        SkipReason::NoMatchingAdvertisement => 2,
        SkipReason::NoEndpoints => 3,
        SkipReason::NoLiveCandidate => 4,
        SkipReason::NotOwner => 5,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::view::ServiceKey;
    use ferrolb_crds::config::{ClusterResources, Config};

    /// Two pools (`lan`: v4+v6, `other`: v4); `docs` are more YAML documents (advertisements).
    pub(crate) fn config(docs: &str) -> Config {
        let yaml = format!(
            "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {{name: lan, namespace: ferrolb-system}}
spec: {{addresses: [192.0.2.240/28, 2001:db8:2::240/124]}}
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {{name: other, namespace: ferrolb-system}}
spec: {{addresses: [203.0.113.128/28]}}
{docs}"
        );
        let (resources, errors) = ClusterResources::from_yaml(&yaml, "test").unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        Config::build(&resources).unwrap()
    }

    /// L2Advertisements from their specs (YAML flow maps).
    pub(crate) fn l2_ads(specs: &[&str]) -> String {
        specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                format!("---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: ad{i}, namespace: ferrolb-system}}\nspec: {spec}\n")
            })
            .collect()
    }

    pub(crate) fn node(labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            network_unavailable: false,
        }
    }

    pub(crate) fn service(name: &str, ips: &[&str], serving_nodes: &[&str]) -> ServiceInfo {
        ServiceInfo {
            key: ServiceKey::new("default", name),
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            local_traffic_policy: false,
            has_serving_endpoint: !serving_nodes.is_empty(),
            serving_nodes: serving_nodes.iter().map(|n| n.to_string()).collect(),
            shares_ip: false,
        }
    }

    /// Three nodes: node1 in zone a, node2 and node3 in zone b.
    pub(crate) fn view_with(docs: &str, services: Vec<ServiceInfo>) -> SpeakerView {
        SpeakerView {
            config: config(docs),
            nodes: BTreeMap::from([
                ("node1".to_string(), node(&[("zone", "a")])),
                ("node2".to_string(), node(&[("zone", "b")])),
                ("node3".to_string(), node(&[("zone", "b")])),
            ]),
            services,
        }
    }

    /// Layer2 eligibility of the first Service: the names of the matching advertisements.
    fn eligibility(view: &SpeakerView, ip: &str, node: &str) -> Result<Vec<String>, SkipReason> {
        node_eligibility(
            view,
            &view.config.l2_advertisements,
            EligibilityOptions::default(),
            &view.services[0],
            ip.parse().unwrap(),
            node,
        )
        .map(|ads| ads.iter().map(|ad| ad.name.clone()).collect())
    }

    #[test]
    fn eligibility_table() {
        let web = || service("web", &["192.0.2.241"], &["node1", "node2", "node3"]);
        let ip = "192.0.2.241";
        type Tweak = fn(&mut SpeakerView);
        // (case, advertisements, change to the view, node, expected)
        type Case<'a> = (
            &'a str,
            Vec<&'a str>,
            Tweak,
            &'a str,
            Result<Vec<&'a str>, SkipReason>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "plain ad: every node",
                vec!["{ipAddressPools: [lan]}"],
                |_| {},
                "node1",
                Ok(vec!["ad0"]),
            ),
            (
                "ad of all pools",
                vec!["{}"],
                |_| {},
                "node2",
                Ok(vec!["ad0"]),
            ),
            (
                "service selector matches",
                vec!["{serviceSelectors: [{matchLabels: {app: web}}]}"],
                |_| {},
                "node1",
                Ok(vec!["ad0"]),
            ),
            (
                "service selector, but the Service shares its IP",
                vec!["{serviceSelectors: [{matchLabels: {app: web}}]}"],
                |v| v.services[0].shares_ip = true,
                "node1",
                Err(SkipReason::NoMatchingAdvertisement),
            ),
            (
                "no service selector: a Service that shares its IP is covered",
                vec!["{}"],
                |v| v.services[0].shares_ip = true,
                "node1",
                Ok(vec!["ad0"]),
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
                Ok(vec!["ad0"]),
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
                Ok(vec!["ad0"]),
            ),
            (
                "two ads match",
                vec![
                    "{interfaces: [eth1]}",
                    "{interfaces: [eth2], nodeSelectors: [{matchLabels: {zone: a}}]}",
                ],
                |_| {},
                "node1",
                Ok(vec!["ad0", "ad1"]),
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
                Ok(vec!["ad0"]),
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
            let mut v = view_with(&l2_ads(&ads), vec![web()]);
            tweak(&mut v);
            let expected =
                expected.map(|names| names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
            assert_eq!(eligibility(&v, ip, node), expected, "{case}");
        }
    }

    #[test]
    fn ip_outside_every_pool_is_not_announced() {
        let v = view_with(
            &l2_ads(&["{}"]),
            vec![service("web", &["198.51.100.7"], &["node1"])],
        );
        assert_eq!(
            eligibility(&v, "198.51.100.7", "node1"),
            Err(SkipReason::NoMatchingAdvertisement)
        );
    }

    #[test]
    fn exclude_label_can_be_ignored() {
        let mut v = view_with(
            &l2_ads(&["{}"]),
            vec![service("web", &["192.0.2.241"], &["node1"])],
        );
        if let Some(n) = v.nodes.get_mut("node1") {
            n.labels.insert(EXCLUDE_LB_LABEL.into(), String::new());
        }
        let options = EligibilityOptions {
            ignore_exclude_lb: true,
        };
        let ip = "192.0.2.241".parse().unwrap();
        assert!(
            node_eligibility(
                &v,
                &v.config.l2_advertisements,
                options,
                &v.services[0],
                ip,
                "node1"
            )
            .is_ok()
        );
    }

    #[test]
    fn modes_are_eligible_through_their_own_advertisements() {
        let docs = format!(
            "{}---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: bgp, namespace: ferrolb-system}}\nspec: {{ipAddressPools: [other]}}\n",
            l2_ads(&["{ipAddressPools: [lan]}"])
        );
        let v = view_with(
            &docs,
            vec![service(
                "web",
                &["192.0.2.241", "203.0.113.130"],
                &["node1"],
            )],
        );
        let svc = &v.services[0];
        let l2 = &v.config.l2_advertisements;
        let bgp = &v.config.bgp_advertisements;
        let opts = EligibilityOptions::default();
        let lan: IpAddr = "192.0.2.241".parse().unwrap();
        let other: IpAddr = "203.0.113.130".parse().unwrap();
        assert!(node_eligibility(&v, l2, opts, svc, lan, "node1").is_ok());
        assert!(node_eligibility(&v, bgp, opts, svc, lan, "node1").is_err());
        assert!(node_eligibility(&v, bgp, opts, svc, other, "node1").is_ok());
        assert!(node_eligibility(&v, l2, opts, svc, other, "node1").is_err());
    }
}
