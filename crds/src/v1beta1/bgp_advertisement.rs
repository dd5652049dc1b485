//! `BGPAdvertisement`: announce pool addresses to BGP peers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::ConfigStatus;

/// Announce the addresses of some pools to BGP peers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    namespaced,
    category = "ferrolb",
    status = "ConfigStatus",
    derive = "PartialEq",
    doc = "BGPAdvertisement announces the addresses of IPAddressPools to BGP peers, with optional aggregation, local preference and communities. Same fields as MetalLB's metallb.io/v1beta1 BGPAdvertisement.",
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
        name = "Peers",
        type_ = "string",
        json_path = ".spec.peers",
        description = "BGPPeers announced to (empty: all)"
    ),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        description = "Nodes that announce",
        priority = 10
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.serviceSelectors) || size(self.serviceSelectors) == 0 || \
     ((!has(self.aggregationLength) || self.aggregationLength == 32) && \
      (!has(self.aggregationLengthV6) || self.aggregationLengthV6 == 128))"
).message("serviceSelectors cannot be used together with a non-default aggregationLength or aggregationLengthV6")
.field_path(".serviceSelectors")
.reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPAdvertisementSpec {
    /// Prefix length used to announce IPv4 addresses, 1 to 32 (default `32`: one route per
    /// address). A shorter length aggregates addresses into one route; it must not be shorter
    /// than the prefix length of any IPv4 entry of a selected pool.
    #[serde(default = "default_aggregation_length")]
    #[schemars(range(min = 1, max = 32))]
    pub aggregation_length: i32,

    /// Prefix length used to announce IPv6 addresses, 1 to 128 (default `128`). Same rule as
    /// `aggregationLength`, for IPv6 entries.
    #[serde(
        default = "default_aggregation_length_v6",
        rename = "aggregationLengthV6"
    )]
    #[schemars(range(min = 1, max = 128))]
    pub aggregation_length_v6: i32,

    /// BGP LOCAL_PREF attribute of the announced routes, sent to iBGP peers only (default `0`:
    /// the attribute is not sent).
    #[serde(default)]
    #[schemars(range(max = 4_294_967_295u32), extend("format" = "int64"))]
    pub local_pref: u32,

    /// BGP communities attached to the announced routes (no duplicates). Each entry is a
    /// standard community `A:B` (16-bit numbers), a large community `large:A:B:C` (32-bit
    /// numbers), or the name of an alias defined in a Community object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,

    /// Names of the IPAddressPools to announce (no duplicates). If both this and
    /// `ipAddressPoolSelectors` are empty, every pool is announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,

    /// Label selectors on IPAddressPools: pools matching any selector are announced. If both
    /// this and `ipAddressPools` are empty, every pool is announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// Label selectors on Nodes: only matching nodes announce the routes (act as next hops;
    /// OR across selectors). Empty: every node running a speaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,

    /// Names of the BGPPeer objects to announce to. Empty: every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,

    /// Label selectors on Services: only matching Services are announced by this advertisement
    /// (OR across selectors). Empty: all Services. Not allowed together with a non-default
    /// `aggregationLength` or `aggregationLengthV6`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

fn default_aggregation_length() -> i32 {
    32
}

fn default_aggregation_length_v6() -> i32 {
    128
}

impl Default for BGPAdvertisementSpec {
    fn default() -> Self {
        Self {
            aggregation_length: default_aggregation_length(),
            aggregation_length_v6: default_aggregation_length_v6(),
            local_pref: 0,
            communities: Vec::new(),
            ip_address_pools: Vec::new(),
            ip_address_pool_selectors: Vec::new(),
            node_selectors: Vec::new(),
            peers: Vec::new(),
            service_selectors: Vec::new(),
        }
    }
}
