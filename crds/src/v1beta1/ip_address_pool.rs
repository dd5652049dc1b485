//! `IPAddressPool`: the addresses FerroLB may assign to LoadBalancer Services.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A pool of IP addresses that FerroLB assigns to Services of `type: LoadBalancer`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    namespaced,
    category = "ferrolb",
    status = "IPAddressPoolStatus",
    derive = "PartialEq",
    doc = "IPAddressPool is a set of IP addresses that FerroLB can assign to Services of type LoadBalancer. Same fields as MetalLB's metallb.io/v1beta1 IPAddressPool.",
    printcolumn(
        name = "Addresses",
        type_ = "string",
        json_path = ".spec.addresses",
        description = "The pool's CIDRs and ranges"
    ),
    printcolumn(
        name = "Auto Assign",
        type_ = "boolean",
        json_path = ".spec.autoAssign",
        description = "Whether Services get addresses from this pool without asking for it"
    ),
    printcolumn(
        name = "Assigned IPv4",
        type_ = "integer",
        json_path = ".status.assignedIPv4",
        description = "IPv4 addresses in use"
    ),
    printcolumn(
        name = "Assigned IPv6",
        type_ = "integer",
        json_path = ".status.assignedIPv6",
        description = "IPv6 addresses in use"
    ),
    printcolumn(
        name = "Available IPv4",
        type_ = "integer",
        json_path = ".status.availableIPv4",
        description = "IPv4 addresses still free"
    ),
    printcolumn(
        name = "Available IPv6",
        type_ = "integer",
        json_path = ".status.availableIPv6",
        description = "IPv6 addresses still free"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAddressPoolSpec {
    /// The addresses of the pool (at least one). Each entry is either a CIDR (`192.0.2.0/24`,
    /// `2001:db8::/64`; host bits are masked) or an inclusive range `first-last`
    /// (`192.0.2.10-192.0.2.20`). A single address is written `/32` (IPv4) or `/128` (IPv6).
    /// IPv4 and IPv6 entries may be mixed, which dual-stack Services need. No entry may overlap
    /// an entry of this or any other pool.
    #[schemars(length(min = 1))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub addresses: Vec<String>,

    /// Whether Services may get an address from this pool without asking for it (default
    /// `true`). When `false`, the pool is used only by Services that name it in the
    /// `ferrolb.io/address-pool` annotation or request one of its addresses explicitly.
    #[serde(default = "default_true")]
    pub auto_assign: bool,

    /// Skip every IPv4 address whose last octet is `0` or `255` (default `false`), for clients
    /// that wrongly treat them as network or broadcast addresses. Applies to all IPv4 entries
    /// regardless of prefix length; IPv6 entries are unaffected.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,

    /// Restricts which Services may get addresses from this pool and with what priority.
    /// Unset: every Service may use the pool, at the lowest priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

fn default_true() -> bool {
    true
}

/// Which Services may use a pool, and how much the pool is preferred.
///
/// If present with all three lists empty, the pool matches every Service (a priority-only pool).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAllocation {
    /// Preference among pools that can serve a Service: a lower number is preferred; `0` or unset
    /// is the lowest priority (used last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,

    /// Namespaces whose Services may use the pool (no duplicates). Empty: not restricted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,

    /// Label selectors on Namespace objects: Services in a matching namespace may use the pool.
    /// Empty: not restricted by namespace labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,

    /// Label selectors on Services: matching Services may use the pool (OR across selectors).
    /// Empty: not restricted by Service labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// Usage counters of a pool, written by the FerroLB controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// Number of IPv4 addresses of the pool assigned to Services.
    #[serde(default, rename = "assignedIPv4")]
    pub assigned_ipv4: i64,

    /// Number of IPv6 addresses of the pool assigned to Services.
    #[serde(default, rename = "assignedIPv6")]
    pub assigned_ipv6: i64,

    /// Number of IPv4 addresses of the pool still free.
    #[serde(default, rename = "availableIPv4")]
    pub available_ipv4: i64,

    /// Number of IPv6 addresses of the pool still free (capped at 9223372036854775807 for huge
    /// pools).
    #[serde(default, rename = "availableIPv6")]
    pub available_ipv6: i64,

    /// Conditions written by the FerroLB controller, keyed by `type`. `ConfigValid` is `False`
    /// when the pool is rejected by configuration validation; its message names the offending
    /// field and the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,
}
