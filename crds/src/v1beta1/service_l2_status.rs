//! `ServiceL2Status`: which node announces a Service in layer 2 mode (written by speakers).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Empty: a ServiceL2Status carries everything in its status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    plural = "servicel2statuses",
    namespaced,
    category = "ferrolb",
    status = "ServiceL2StatusStatus",
    derive = "PartialEq",
    doc = "ServiceL2Status reports that a node announces a Service's addresses in layer 2 mode. Created and deleted by the announcing FerroLB speaker; read-only for users.",
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
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceL2StatusSpec {}

/// What a speaker announces in layer 2 mode for one Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusStatus {
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

    /// Interfaces the addresses are announced on: the L2Advertisement's `interfaces` when it
    /// names some, else the node's interfaces chosen by the speaker (those with an address in
    /// the same subnet as the service address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceInfo>,
}

/// A network interface of the announcing node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceInfo {
    /// Interface name, e.g. `eth0`.
    pub name: String,
}
