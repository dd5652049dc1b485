//! `BGPSessionState`: the state of one node's BGP session with one BGPPeer (written by
//! speakers; one object per node and peer, as frr-k8s' BGPSessionState).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Empty: a BGPSessionState carries everything in its status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPSessionState",
    plural = "bgpsessionstates",
    namespaced,
    category = "ferrolb",
    status = "BGPSessionStateStatus",
    derive = "PartialEq",
    doc = "BGPSessionState reports the state of one node's BGP session with one BGPPeer (one object per node and peer). Created, updated and deleted by the FerroLB speaker; read-only for users.",
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "Node that runs the session"
    ),
    printcolumn(
        name = "Peer",
        type_ = "string",
        json_path = ".status.peer",
        description = "Name of the BGPPeer"
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".status.peerAddress",
        description = "The peer's address and port"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.bgpState",
        description = "BGP FSM state (Established when up)"
    ),
    printcolumn(
        name = "BFD",
        type_ = "string",
        json_path = ".status.bfdState",
        description = "State of the BFD session bound to it (bfdProfile), if any"
    ),
    printcolumn(
        name = "Uptime",
        type_ = "date",
        json_path = ".status.establishedTime",
        description = "Since when the session is Established"
    ),
    printcolumn(
        name = "Prefixes",
        type_ = "integer",
        json_path = ".status.prefixesSent",
        description = "Prefixes the peer has from this node"
    ),
    printcolumn(
        name = "Last Error",
        type_ = "string",
        json_path = ".status.lastError",
        description = "Why the last session, or attempt at one, failed"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPSessionStateSpec {}

/// One node's session with one BGPPeer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStateStatus {
    /// Name of the node that runs the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// Name of the BGPPeer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,

    /// The peer's address and port, e.g. `192.0.2.1:179` or `[2001:db8::1]:179`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<String>,

    /// The RFC 4271 state: Idle, Connect, Active, OpenSent, OpenConfirm or Established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_state: Option<String>,

    /// The state of the BFD session bound to this session by the BGPPeer's `bfdProfile`
    /// (AdminDown, Down, Init or Up); absent without a profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_state: Option<String>,

    /// When the session became Established (RFC 3339); absent while it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established_time: Option<String>,

    /// Prefixes the peer currently has from this node.
    #[serde(default)]
    pub prefixes_sent: u64,

    /// Why the last session, or attempt at one, failed, e.g. "hold timer expired" or
    /// "NOTIFICATION OPEN Bad Peer AS received".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,

    /// Times the session went down after being Established, since the speaker started.
    #[serde(default)]
    pub flaps: u64,
}
