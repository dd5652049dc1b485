//! The one validated configuration model that the controller, the speaker and `ferrolbctl` read.
//!
//! [`Config::build`] turns the raw inputs ([`ClusterResources`]: FerroLB CRs and/or a legacy
//! MetalLB ConfigMap) into a [`Config`] that is valid by construction: addresses are parsed CIDRs,
//! references are resolved, timers are [`Duration`]s, communities are numbers. Nothing downstream
//! parses YAML or address strings again. All errors are collected (see [`error`]).

mod address;
mod build;
mod community;
mod duration;
mod error;
mod input;
pub mod lowering;
mod selector;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

pub use address::{AddressEntry, AddressError, PoolAddress, overlaps};
pub use community::{Community, CommunityError};
pub use duration::{DurationError, format_go_duration, parse_go_duration};
pub use error::{ConfigError, ConfigErrors, ConfigWarning, FieldPath, ObjectId, Reason};
pub use input::{InputDocument, InputObject, OtherObject, ParsedInput, SourceApi, parse_documents};
pub use selector::{
    Operator, Requirement, Selector, SelectorError, is_dns1123_label, is_dns1123_subdomain,
};

use k8s_openapi::api::core::v1::Secret;

use crate::legacy::LegacyConfigMap;
use crate::v1beta1;

/// Everything the configuration is built from. Lists may be empty; `legacy` is the parsed MetalLB
/// ConfigMap if there is one. `secrets` is `None` when Secrets cannot be looked up (offline, in
/// `ferrolbctl`): a `passwordSecret` is then only a warning.
#[derive(Debug, Clone, Default)]
pub struct ClusterResources {
    pub ip_address_pools: Vec<v1beta1::IPAddressPool>,
    pub l2_advertisements: Vec<v1beta1::L2Advertisement>,
    pub bgp_advertisements: Vec<v1beta1::BGPAdvertisement>,
    pub bgp_peers: Vec<v1beta1::BGPPeer>,
    pub bfd_profiles: Vec<v1beta1::BFDProfile>,
    pub communities: Vec<v1beta1::Community>,
    pub legacy: Option<LegacyConfigMap>,
    pub secrets: Option<Vec<Secret>>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// By pool name.
    pub pools: BTreeMap<String, Pool>,
    pub l2_advertisements: Vec<L2Advertisement>,
    pub bgp_advertisements: Vec<BgpAdvertisement>,
    /// By peer name (for the legacy ConfigMap: `peer-<address>`, see [`crate::migrate`]).
    pub peers: BTreeMap<String, Peer>,
    /// By profile name.
    pub bfd_profiles: BTreeMap<String, BfdProfile>,
    /// Community aliases, resolved.
    pub community_aliases: BTreeMap<String, Community>,
    /// Problems that do not make the configuration invalid.
    pub warnings: Vec<ConfigWarning>,
}

/// An address pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    /// The pool object's labels (what `ipAddressPoolSelectors` match on).
    pub labels: BTreeMap<String, String>,
    /// Non-empty; no CIDR overlaps any other CIDR of any pool.
    pub addresses: Vec<PoolAddress>,
    pub auto_assign: bool,
    pub avoid_buggy_ips: bool,
    pub allocation: Option<ServiceAllocation>,
}

impl Pool {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.addresses.iter().any(|a| a.contains(ip))
    }
}

/// `spec.serviceAllocation`: which Services prefer this pool. As in MetalLB, when all three
/// lists are empty it applies to every Service (a priority-only pool); how the namespace and
/// Service conditions combine is the allocator's decision (MetalLB: namespace condition and
/// Service selectors must both hold when both are given).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceAllocation {
    /// Lower is preferred; 0 (unset) is used last.
    pub priority: i32,
    pub namespaces: Vec<String>,
    pub namespace_selectors: Vec<Selector>,
    pub service_selectors: Vec<Selector>,
}

/// Layer 2 announcement rules, resolved to pool names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2Advertisement {
    pub name: String,
    pub pools: Vec<String>,
    /// Empty: every node may announce.
    pub node_selectors: Vec<Selector>,
    /// Empty: every (not excluded) interface.
    pub interfaces: Vec<String>,
    pub service_selectors: Vec<Selector>,
    pub preferred_node_selectors: Vec<PreferredNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredNode {
    /// 1..=100
    pub weight: u8,
    pub preference: Selector,
}

/// BGP announcement rules, resolved to pool names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpAdvertisement {
    pub name: String,
    pub pools: Vec<String>,
    /// 1..=32, at least the shortest prefix of every IPv4 entry of every pool.
    pub aggregation_length: u8,
    /// 1..=128, same rule for IPv6 entries.
    pub aggregation_length_v6: u8,
    /// `None` when unset (0).
    pub local_pref: Option<u32>,
    /// Aliases resolved, no duplicates.
    pub communities: Vec<Community>,
    pub node_selectors: Vec<Selector>,
    /// Peer names as written; empty = all peers. A name without a BGPPeer (a warning at build
    /// time) matches no session.
    pub peers: Vec<String>,
    pub service_selectors: Vec<Selector>,
}

/// The AS number of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAsn {
    Fixed(u32),
    /// Accept whatever the peer says, as long as it equals `my_asn`.
    Internal,
    /// Accept whatever the peer says, as long as it differs from `my_asn`.
    External,
}

/// Where a BGP session goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTarget {
    Address(IpAddr),
    /// Unnumbered BGP over this interface.
    Interface(String),
}

/// The TCP-MD5 password of a session. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub enum PeerPassword {
    Plain(String),
    /// `passwordSecret`; `password` is filled when the Secret was known at build time.
    Secret {
        name: String,
        namespace: Option<String>,
        password: Option<String>,
    },
}

impl std::fmt::Debug for PeerPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerPassword::Plain(_) => f.write_str("Plain(<redacted>)"),
            PeerPassword::Secret {
                name,
                namespace,
                password,
            } => f
                .debug_struct("Secret")
                .field("name", name)
                .field("namespace", namespace)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// A BGP peer with parsed addresses and effective timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub my_asn: u32,
    pub peer_asn: PeerAsn,
    pub local_asn: Option<u32>,
    pub target: PeerTarget,
    pub source_address: Option<IpAddr>,
    pub peer_port: u16,
    /// 0 or ≥ 3 s (rounded to whole seconds). Default 90 s.
    pub hold_time: Duration,
    /// ≤ hold time. Default hold / 3.
    pub keepalive_time: Duration,
    pub connect_time: Option<Duration>,
    pub router_id: Option<Ipv4Addr>,
    pub node_selectors: Vec<Selector>,
    pub password: Option<PeerPassword>,
    /// Name of a profile in [`Config::bfd_profiles`].
    pub bfd_profile: Option<String>,
    pub ebgp_multihop: bool,
    pub enable_graceful_restart: bool,
    pub dual_stack_address_family: bool,
}

/// BFD settings with MetalLB's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdProfile {
    pub name: String,
    pub receive_interval: Duration,
    pub transmit_interval: Duration,
    pub detect_multiplier: u8,
    pub echo_interval: Duration,
    pub echo_mode: bool,
    pub passive_mode: bool,
    pub minimum_ttl: u8,
}

/// BGP defaults (MetalLB native mode).
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
pub const DEFAULT_PEER_PORT: u16 = 179;

impl Config {
    /// Validates and resolves everything. Errors: all of them, one per problem.
    pub fn build(resources: &ClusterResources) -> Result<Config, ConfigErrors> {
        let (result, _) = Config::build_with_warnings(resources);
        result
    }

    /// Like [`Config::build`], but also returns the warnings when the configuration is invalid
    /// (on success they are in [`Config::warnings`] too).
    pub fn build_with_warnings(
        resources: &ClusterResources,
    ) -> (Result<Config, ConfigErrors>, Vec<ConfigWarning>) {
        build::build(resources)
    }

    /// The pool an address belongs to (pools never overlap, so there is at most one).
    pub fn pool_containing(&self, ip: &IpAddr) -> Option<&Pool> {
        self.pools.values().find(|p| p.contains(ip))
    }

    /// The L2 advertisements that apply to a pool.
    pub fn l2_advertisements_for<'a>(
        &'a self,
        pool: &'a str,
    ) -> impl Iterator<Item = &'a L2Advertisement> + 'a {
        self.l2_advertisements
            .iter()
            .filter(move |ad| ad.pools.iter().any(|p| p == pool))
    }

    /// The BGP advertisements that apply to a pool.
    pub fn bgp_advertisements_for<'a>(
        &'a self,
        pool: &'a str,
    ) -> impl Iterator<Item = &'a BgpAdvertisement> + 'a {
        self.bgp_advertisements
            .iter()
            .filter(move |ad| ad.pools.iter().any(|p| p == pool))
    }
}
