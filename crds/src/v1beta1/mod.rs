//! The `ferrolb.io/v1beta1` custom resources.
//!
//! Field names, types, defaults and meanings are MetalLB's (`metallb.io/v1beta1`, and `v1beta2` for
//! BGPPeer), so a MetalLB user migrates by changing `apiVersion` only. These modules hold the kube
//! derives and the OpenAPI/CEL rules that are local to one object; cross-object rules (overlapping
//! CIDRs, unknown pool names, ...) belong to the validated config model in `crate::config`.

// `#[kube(printcolumn(type_ = ..), printcolumn(type_ = ..))]` repeats keys inside distinct
// printcolumn lists, which clippy's `duplicated_attributes` mistakes for duplicate attributes.
#![allow(clippy::duplicated_attributes)]

mod bfd_profile;
mod bgp_advertisement;
mod bgp_peer;
mod bgp_session_state;
mod community;
mod ip_address_pool;
mod l2_advertisement;
mod service_bgp_status;
mod service_l2_status;

pub use bfd_profile::{BFDProfile, BFDProfileSpec};
pub use bgp_advertisement::{BGPAdvertisement, BGPAdvertisementSpec};
pub use bgp_peer::{BGPPeer, BGPPeerSpec, DynamicASNMode};
pub use bgp_session_state::{BGPSessionState, BGPSessionStateSpec, BGPSessionStateStatus};
pub use community::{Community, CommunityAlias, CommunitySpec};
pub use ip_address_pool::{
    IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, ServiceAllocation,
};
pub use l2_advertisement::{L2Advertisement, L2AdvertisementSpec, PreferredNodeSelector};
pub use service_bgp_status::{ServiceBGPStatus, ServiceBGPStatusSpec, ServiceBGPStatusStatus};
pub use service_l2_status::{
    InterfaceInfo, ServiceL2Status, ServiceL2StatusSpec, ServiceL2StatusStatus,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The API group of every FerroLB custom resource.
pub const GROUP: &str = "ferrolb.io";
/// The API version of this module's resources.
pub const VERSION: &str = "v1beta1";
/// `apiVersion` of this module's resources, as written in manifests.
pub const API_VERSION: &str = "ferrolb.io/v1beta1";
/// The namespace the configuration objects live in unless the deployment says otherwise.
pub const DEFAULT_NAMESPACE: &str = "ferrolb-system";

/// Condition type the controller sets on a configuration object: `True` when the object is part
/// of the valid configuration, `False` (message naming the field and reason) when it is rejected.
pub const CONDITION_CONFIG_VALID: &str = "ConfigValid";

/// Label on ServiceL2Status / ServiceBGPStatus / BGPSessionState objects: name of the node.
pub const LABEL_NODE: &str = "ferrolb.io/node";
/// Label on ServiceL2Status / ServiceBGPStatus objects: name of the Service.
pub const LABEL_SERVICE_NAME: &str = "ferrolb.io/service-name";
/// Label on ServiceL2Status / ServiceBGPStatus objects: namespace of the Service.
pub const LABEL_SERVICE_NAMESPACE: &str = "ferrolb.io/service-namespace";
/// `metadata.generateName` of ServiceL2Status objects (as in MetalLB).
pub const SERVICE_L2_STATUS_GENERATE_NAME: &str = "l2-";
/// `metadata.generateName` of ServiceBGPStatus objects (as in MetalLB).
pub const SERVICE_BGP_STATUS_GENERATE_NAME: &str = "bgp-";
/// Label on BGPSessionState objects: name of the BGPPeer.
pub const LABEL_PEER: &str = "ferrolb.io/peer";
/// `metadata.generateName` of BGPSessionState objects.
pub const BGP_SESSION_STATE_GENERATE_NAME: &str = "session-";

/// Regular expression for a Go `time.Duration` string (`90s`, `1m30s`, `500ms`, `0`), which is
/// how MetalLB's `metav1.Duration` fields are written.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";

/// Status of a configuration object: conditions written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// Conditions written by the FerroLB controller, keyed by `type`. `ConfigValid` is `False`
    /// when this object is rejected by configuration validation; its message names the
    /// offending field and the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests;
