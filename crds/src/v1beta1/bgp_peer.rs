//! `BGPPeer`: a BGP session opened by the speakers.

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConfigStatus, DURATION_PATTERN};

/// A BGP router that the speakers peer with.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPPeer",
    plural = "bgppeers",
    namespaced,
    category = "ferrolb",
    status = "ConfigStatus",
    derive = "PartialEq",
    doc = "BGPPeer is a BGP router that FerroLB speakers open a session with. Same fields as MetalLB's metallb.io/v1beta2 BGPPeer.",
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".spec.peerAddress",
        description = "Address of the peer"
    ),
    printcolumn(
        name = "Interface",
        type_ = "string",
        json_path = ".spec.interface",
        description = "Interface of an unnumbered session",
        priority = 10
    ),
    printcolumn(
        name = "ASN",
        type_ = "integer",
        json_path = ".spec.peerASN",
        description = "AS number of the peer"
    ),
    printcolumn(
        name = "Dynamic ASN",
        type_ = "string",
        json_path = ".spec.dynamicASN",
        description = "internal or external, when the peer's AS number is not fixed",
        priority = 10
    ),
    printcolumn(
        name = "My ASN",
        type_ = "integer",
        json_path = ".spec.myASN",
        description = "AS number the speakers use"
    ),
    printcolumn(
        name = "BFD Profile",
        type_ = "string",
        json_path = ".spec.bfdProfile",
        description = "BFDProfile of the session"
    ),
    printcolumn(
        name = "Multi Hops",
        type_ = "boolean",
        json_path = ".spec.ebgpMultiHop",
        description = "Whether the eBGP peer may be several hops away",
        priority = 10
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.peerASN) || has(self.dynamicASN)")
        .message("one of peerASN and dynamicASN is required")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!(has(self.peerASN) && has(self.dynamicASN))")
        .message("peerASN and dynamicASN are mutually exclusive")
        .field_path(".dynamicASN")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("has(self.peerAddress) || has(self.interface)")
        .message("one of peerAddress and interface is required")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!(has(self.peerAddress) && has(self.interface))")
        .message("peerAddress and interface are mutually exclusive")
        .field_path(".interface")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.password) && has(self.passwordSecret))")
        .message("password and passwordSecret are mutually exclusive")
        .field_path(".passwordSecret")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new(
        "!has(self.ebgpMultiHop) || !self.ebgpMultiHop || !has(self.peerASN) || self.peerASN != self.myASN"
    )
    .message("ebgpMultiHop cannot be set for an iBGP session (peerASN equal to myASN)")
    .field_path(".ebgpMultiHop")
    .reason(Reason::FieldValueForbidden),
    validation = Rule::new(
        "!has(self.holdTime) || !has(self.keepaliveTime) || duration(self.keepaliveTime) <= duration(self.holdTime)"
    )
    .message("keepaliveTime must not be longer than holdTime")
    .field_path(".keepaliveTime")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPPeerSpec {
    /// AS number the speakers use for this session, 1 to 4294967295. Required.
    #[serde(rename = "myASN")]
    #[schemars(range(min = 1, max = 4_294_967_295u32), extend("format" = "int64"))]
    pub my_asn: u32,

    /// AS number of the peer, 1 to 4294967295. Exactly one of `peerASN` and `dynamicASN` must
    /// be set.
    #[serde(default, rename = "peerASN", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4_294_967_295u32), extend("format" = "int64"))]
    pub peer_asn: Option<u32>,

    /// Accept the peer's AS number whatever it is: `internal` (iBGP: same as `myASN`) or
    /// `external` (eBGP: any other). Exactly one of `peerASN` and `dynamicASN` must be set.
    #[serde(
        default,
        rename = "dynamicASN",
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<DynamicASNMode>,

    /// AS number presented to the peer instead of `myASN` (BGP local-as), 1 to 4294967295. Not
    /// supported by FerroLB: a value other than `myASN` is rejected with that reason.
    #[serde(default, rename = "localASN", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4_294_967_295u32), extend("format" = "int64"))]
    pub local_asn: Option<u32>,

    /// IP address of the peer. Exactly one of `peerAddress` and `interface` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<String>,

    /// Local IP address to open the session from. Used only if a local interface of the node
    /// has it; unset: chosen by the kernel's routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,

    /// TCP port of the peer, 1 to 16384 (default `179`).
    #[serde(default = "default_peer_port")]
    #[schemars(range(min = 1, max = 16384), extend("format" = "int32"))]
    pub peer_port: u16,

    /// BGP hold time proposed to the peer, a duration such as `90s` or `1m30s`; `0` or at
    /// least `3s`. If only one of `holdTime` and `keepaliveTime` is set, the other is derived
    /// (keepalive = hold / 3). Neither set: 90s hold, 30s keepalive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) == duration('0s') || duration(self) >= duration('3s')")
        .message("holdTime must be 0 or at least 3s"))]
    pub hold_time: Option<String>,

    /// Interval between BGP keepalive messages, a duration such as `30s`; must not exceed
    /// `holdTime`. Unset: a third of the hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub keepalive_time: Option<String>,

    /// Time to wait between attempts to connect to the peer, a duration of 1s to 65535s (whole
    /// seconds). Unset: the speaker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('65535s')")
        .message("connectTime must be between 1s and 65535s"))]
    pub connect_time: Option<String>,

    /// BGP router ID to use, written as an IPv4 address. Unset: the node's IPv4 address used to
    /// reach the peer (for IPv6-only sessions, an ID derived from the node name).
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,

    /// Label selectors on Nodes: only matching nodes open this session (OR across selectors).
    /// Empty: every node running a speaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,

    /// TCP MD5 (RFC 2385) password of the session, in plain text. Mutually exclusive with
    /// `passwordSecret`. Unset: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,

    /// Reference to a Secret of type `kubernetes.io/basic-auth` in the FerroLB namespace whose
    /// key `password` holds the TCP MD5 password. Mutually exclusive with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,

    /// Name of the BFDProfile used to detect a failed session quickly. Unset: no BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,

    /// Enable BGP graceful restart (RFC 4724) so the peer keeps the routes while a speaker
    /// restarts (default `false`). Cannot be changed after creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("enableGracefulRestart cannot be changed after creation"))]
    pub enable_graceful_restart: bool,

    /// Allow an eBGP peer that is more than one hop away (default `false`). Not allowed for
    /// iBGP sessions (`peerASN` equal to `myASN`).
    #[serde(default)]
    pub ebgp_multi_hop: bool,

    /// Name of the host VRF through which the peer is reached (MetalLB's field). Not supported
    /// by FerroLB: a BGPPeer that sets it is rejected with that reason. Leave unset for the
    /// default VRF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,

    /// Deprecated and ignored (default `false`); kept so MetalLB manifests apply unchanged.
    #[serde(default, rename = "disableMP")]
    pub disable_mp: bool,

    /// Also announce the other address family over this session: IPv6 routes over an IPv4
    /// session and vice versa (default `false`: IPv4 routes only over IPv4 sessions, IPv6 over
    /// IPv6).
    #[serde(default)]
    pub dual_stack_address_family: bool,

    /// Network interface for an unnumbered BGP session (MetalLB's field). Not supported by
    /// FerroLB: a BGPPeer that sets it is rejected with that reason; use `peerAddress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

fn default_peer_port() -> u16 {
    179
}

impl Default for BGPPeerSpec {
    /// An empty spec with the schema defaults (`peerPort: 179`); `myASN` is `0` and must be set.
    fn default() -> Self {
        Self {
            my_asn: 0,
            peer_asn: None,
            dynamic_asn: None,
            local_asn: None,
            peer_address: None,
            source_address: None,
            peer_port: default_peer_port(),
            hold_time: None,
            keepalive_time: None,
            connect_time: None,
            router_id: None,
            node_selectors: Vec::new(),
            password: None,
            password_secret: None,
            bfd_profile: None,
            enable_graceful_restart: false,
            ebgp_multi_hop: false,
            vrf: None,
            disable_mp: false,
            dual_stack_address_family: false,
            interface: None,
        }
    }
}

/// Accept the peer's AS number whatever it is: `internal` (iBGP: same as `myASN`) or
/// `external` (eBGP: any other). Exactly one of `peerASN` and `dynamicASN` must be set.
// This doc is also the schema description of `dynamicASN`: for an optional enum field, kube's
// schema rewriter keeps the enum's description and drops the field's.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicASNMode {
    /// The peer is in the same AS as the speakers (iBGP).
    Internal,
    /// The peer is in another AS (eBGP).
    External,
}
