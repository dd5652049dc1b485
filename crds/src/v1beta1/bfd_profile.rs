//! `BFDProfile`: BFD timers shared by BGP sessions.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigStatus;

/// Bidirectional Forwarding Detection settings that BGPPeers refer to by name.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    namespaced,
    category = "ferrolb",
    status = "ConfigStatus",
    derive = "PartialEq",
    doc = "BFDProfile holds Bidirectional Forwarding Detection (RFC 5880) settings that a BGPPeer refers to by name in bfdProfile. Same fields as MetalLB's metallb.io/v1beta1 BFDProfile.",
    printcolumn(
        name = "Passive Mode",
        type_ = "boolean",
        json_path = ".spec.passiveMode",
        description = "Wait for the peer to start BFD"
    ),
    printcolumn(
        name = "Transmit Interval",
        type_ = "integer",
        json_path = ".spec.transmitInterval",
        description = "Minimum transmit interval, ms"
    ),
    printcolumn(
        name = "Receive Interval",
        type_ = "integer",
        json_path = ".spec.receiveInterval",
        description = "Minimum receive interval, ms"
    ),
    printcolumn(
        name = "Multiplier",
        type_ = "integer",
        json_path = ".spec.detectMultiplier",
        description = "Detection multiplier"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BFDProfileSpec {
    /// Minimum interval at which this system can receive BFD control packets, in milliseconds,
    /// 10 to 60000. Unset: 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    #[schemars(extend("format" = "int64"))]
    pub receive_interval: Option<u32>,

    /// Minimum interval at which this system wants to send BFD control packets, in
    /// milliseconds, 10 to 60000. Unset: 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    #[schemars(extend("format" = "int64"))]
    pub transmit_interval: Option<u32>,

    /// Number of missed packets after which the session is declared down, 2 to 255. Unset: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    #[schemars(extend("format" = "int64"))]
    pub detect_multiplier: Option<u32>,

    /// Minimum interval between BFD echo packets, in milliseconds, 10 to 60000. Unset: 50.
    /// Used only with `echoMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    #[schemars(extend("format" = "int64"))]
    pub echo_interval: Option<u32>,

    /// Send BFD echo packets (default `false`). Not for multi-hop sessions, and not with IPv6
    /// pools announced to the peer.
    #[serde(default)]
    pub echo_mode: bool,

    /// Do not start BFD; wait for the peer's control packets (default `false`).
    #[serde(default)]
    pub passive_mode: bool,

    /// For multi-hop sessions, the minimum TTL accepted on incoming BFD packets, 1 to 254.
    /// Unset: 254.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    #[schemars(extend("format" = "int64"))]
    pub minimum_ttl: Option<u32>,
}
