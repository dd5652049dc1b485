//! `L2Advertisement`: announce pool addresses on the local network with ARP / NDP.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigStatus;

/// Announce the addresses of some pools in layer 2 mode (ARP for IPv4, NDP for IPv6).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    namespaced,
    category = "ferrolb",
    status = "ConfigStatus",
    derive = "PartialEq",
    doc = "L2Advertisement announces the addresses of IPAddressPools in layer 2 mode: one elected node per address answers ARP (IPv4) or NDP (IPv6). Same fields as MetalLB's metallb.io/v1beta1 L2Advertisement.",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools",
        description = "Pools announced, by name"
    ),
    printcolumn(
        name = "IPAddressPool Selectors",
        type_ = "string",
        json_path = ".spec.ipAddressPoolSelectors",
        description = "Pools announced, by label",
        priority = 10
    ),
    printcolumn(
        name = "Interfaces",
        type_ = "string",
        json_path = ".spec.interfaces",
        description = "Interfaces to announce on"
    ),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        description = "Nodes allowed to announce",
        priority = 10
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L2AdvertisementSpec {
    /// Names of the IPAddressPools to announce (no duplicates). If both this and
    /// `ipAddressPoolSelectors` are empty, every pool is announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,

    /// Label selectors on IPAddressPools: pools matching any selector are announced. If both
    /// this and `ipAddressPools` are empty, every pool is announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// Label selectors on Nodes: only matching nodes may be elected to announce (OR across
    /// selectors). Empty: every node running a speaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,

    /// Network interface names to announce on. Empty: every interface not excluded by the
    /// speaker's exclusion list. Interfaces do not influence the election: if the elected node
    /// lacks all of them, the address is not announced (Warning event `announceFailed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,

    /// Label selectors on Services: only matching Services are announced by this advertisement
    /// (OR across selectors). Empty: all Services. Services sharing an address
    /// (`allow-shared-ip`) are not announced by an advertisement with service selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,

    /// Soft preferences for which node is elected to announce: the weights of the selectors a
    /// node matches are summed (across all advertisements for the pool) and the highest total
    /// wins among the live nodes; the hash breaks ties. Only nodes allowed by `nodeSelectors`
    /// are considered. A preferred node that comes back takes the address back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// A weighted node preference for the layer 2 election.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreferredNodeSelector {
    /// Weight added to a node's score when it matches `preference`, 1 to 100.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,

    /// Label selector on Nodes that earns the weight.
    pub preference: LabelSelector,
}
