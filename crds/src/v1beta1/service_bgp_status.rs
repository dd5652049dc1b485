//! `ServiceBGPStatus`: which peers a node announces a Service to (written by speakers).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Empty: a ServiceBGPStatus carries everything in its status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceBGPStatus",
    plural = "servicebgpstatuses",
    namespaced,
    category = "ferrolb",
    status = "ServiceBGPStatusStatus",
    derive = "PartialEq",
    doc = "ServiceBGPStatus reports which BGP peers a node intends to announce a Service's addresses to (one object per Service and node). Created and deleted by the FerroLB speaker; read-only for users.",
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".status.serviceName",
        description = "Name of the announced Service"
    ),
    printcolumn(
        name = "Service Namespace",
        type_ = "string",
        json_path = ".status.serviceNamespace",
        description = "Namespace of the announced Service"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "Node that announces the Service"
    ),
    printcolumn(
        name = "Peers",
        type_ = "string",
        json_path = ".status.peers",
        description = "BGPPeers the Service is announced to"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceBGPStatusSpec {}

/// What a speaker announces over BGP for one Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBGPStatusStatus {
    /// Name of the node that announces the Service. Once set, the API server refuses a write that changes it to
    /// another value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("node is immutable"))]
    pub node: Option<String>,

    /// Name of the announced Service. Once set, the API server refuses a write that changes it to
    /// another value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("serviceName is immutable"))]
    pub service_name: Option<String>,

    /// Namespace of the announced Service. Once set, the API server refuses a write that changes it to
    /// another value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("serviceNamespace is immutable"))]
    pub service_namespace: Option<String>,

    /// Names of the BGPPeers the node intends to announce the Service to (not the state of
    /// the sessions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}
