//! What the speaker knows about the cluster, as plain data: the input of the decision step
//! ([`crate::engine`]).
//!
//! No Kubernetes types and no I/O here: [`crate::cluster`] converts watched objects into a
//! [`SpeakerView`], so every rule over it is unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::config::Config;

/// The label that takes a node out of external load balancing.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A Node, reduced to what eligibility needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub labels: BTreeMap<String, String>,
    /// Condition `NetworkUnavailable` is `True`.
    pub network_unavailable: bool,
}

/// A Service's key: namespace and name (shared with the controller).
pub use ferrolb_crds::cluster::ServiceKey;

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
    /// It has an `allow-shared-ip` sharing key (any of its spellings): advertisements with
    /// service selectors do not announce it (see `eligibility`).
    pub shares_ip: bool,
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

/// Everything the decisions read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpeakerView {
    pub config: Config,
    pub nodes: BTreeMap<String, NodeInfo>,
    pub services: Vec<ServiceInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_conditions() {
        let c = |ready, serving| EndpointConditions { ready, serving };
        assert!(c(None, None).is_serving());
        assert!(c(Some(true), None).is_serving());
        assert!(c(Some(false), Some(true)).is_serving());
        assert!(!c(Some(false), None).is_serving());
        assert!(!c(Some(false), Some(false)).is_serving());
    }
}
