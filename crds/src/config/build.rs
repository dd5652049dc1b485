//! `Config::build`: CRs and the legacy ConfigMap are first lowered to the same raw shapes
//! (`Raw*`, strings still unparsed, each with its [`Origin`] so errors name what the user wrote),
//! then validated and resolved by one set of rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::{
    BfdProfile, BgpAdvertisement, ClusterResources, Community, Config, ConfigError, ConfigErrors,
    ConfigWarning, DEFAULT_HOLD_TIME, FieldPath, L2Advertisement, ObjectId, Peer, PeerAsn,
    PeerPassword, PeerTarget, Pool, PoolAddress, PreferredNode, Reason, Selector,
    ServiceAllocation, overlaps, parse_go_duration,
};
use crate::legacy::LegacyConfigMap;
use crate::v1beta1::DynamicASNMode;

/// `BGPPeer.spec.peerPort`'s maximum (MetalLB's CRD), for legacy peers too.
const CR_PEER_PORT_MAX: u16 = 16384;

/// Where a raw object came from, to name it and its fields in errors.
#[derive(Debug, Clone)]
struct Origin {
    id: ObjectId,
    /// `spec` for CRs; empty or `bgp-advertisements[0]` inside a legacy ConfigMap.
    prefix: FieldPath,
    legacy: bool,
}

impl Origin {
    fn cr(kind: &str, name: &str) -> Origin {
        Origin {
            id: ObjectId::new(kind, name),
            prefix: FieldPath::new("spec"),
            legacy: false,
        }
    }

    /// A field given by its CR (camelCase) name, spelled as the user wrote it.
    fn field(&self, camel: &str) -> FieldPath {
        if self.legacy {
            self.prefix.child(&legacy_field_name(camel))
        } else {
            self.prefix.child(camel)
        }
    }

    /// The object (and, inside a ConfigMap, the entry) as a whole: `spec` or `bgp-advertisements[1]`.
    fn whole(&self) -> FieldPath {
        if self.legacy {
            self.prefix.clone()
        } else {
            FieldPath::new("spec")
        }
    }

    /// `BGPPeer/a`, `ConfigMap/config address-pools[0] "lan"`, `ConfigMap/config peers[0] (192.0.2.1)`.
    fn describe(&self) -> String {
        if self.legacy && !self.prefix.0.is_empty() {
            format!("{} {}", self.id, self.prefix)
        } else {
            self.id.to_string()
        }
    }

    fn name_field(&self) -> FieldPath {
        if self.legacy {
            self.prefix.child("name")
        } else {
            FieldPath::new("metadata.name")
        }
    }
}

/// camelCase CR field → kebab-case legacy key.
fn legacy_field_name(camel: &str) -> String {
    match camel {
        "localPref" => return "localpref".into(),
        "ebgpMultiHop" => return "ebgp-multihop".into(),
        _ => {}
    }
    let mut out = String::new();
    let mut prev_lower = false;
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else {
            out.push(c);
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

#[derive(Debug, Clone)]
struct RawPool {
    origin: Origin,
    name: String,
    labels: BTreeMap<String, String>,
    addresses: Vec<String>,
    auto_assign: bool,
    avoid_buggy_ips: bool,
    allocation: Option<crate::v1beta1::ServiceAllocation>,
}

#[derive(Debug, Clone)]
struct RawL2 {
    origin: Origin,
    name: String,
    spec: crate::v1beta1::L2AdvertisementSpec,
}

#[derive(Debug, Clone)]
struct RawBgpAd {
    origin: Origin,
    name: String,
    spec: crate::v1beta1::BGPAdvertisementSpec,
}

#[derive(Debug, Clone)]
struct RawPeer {
    origin: Origin,
    name: String,
    /// `None` only for a legacy peer without `my-asn`.
    my_asn: Option<u32>,
    /// The CR spec, with `my_asn` 0 when missing (reported from `my_asn` above).
    spec: crate::v1beta1::BGPPeerSpec,
    /// Legacy `peer-address` is required (there is no `interface`).
    address_required: bool,
    port_max: u16,
}

#[derive(Debug, Clone)]
struct RawBfd {
    origin: Origin,
    name: String,
    spec: crate::v1beta1::BFDProfileSpec,
}

#[derive(Debug, Clone)]
struct RawAlias {
    origin: Origin,
    field: FieldPath,
    name: String,
    value: String,
}

#[derive(Default)]
struct Raw {
    pools: Vec<RawPool>,
    l2: Vec<RawL2>,
    bgp: Vec<RawBgpAd>,
    peers: Vec<RawPeer>,
    bfd: Vec<RawBfd>,
    aliases: Vec<RawAlias>,
}

#[derive(Default)]
struct Sink {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl Sink {
    fn error(&mut self, origin: &Origin, field: FieldPath, reason: Reason) {
        self.errors.push(ConfigError {
            object: origin.id.clone(),
            field,
            reason,
        });
    }

    fn warn(&mut self, origin: &Origin, field: FieldPath, reason: Reason) {
        self.warnings.push(ConfigError {
            object: origin.id.clone(),
            field,
            reason,
        });
    }

    /// Validates a list of selectors (each, and no two equal).
    fn selectors(&mut self, origin: &Origin, camel: &str, list: &[LabelSelector]) -> Vec<Selector> {
        let field = origin.field(camel);
        let mut out: Vec<Selector> = Vec::new();
        for (i, raw) in list.iter().enumerate() {
            match Selector::from_label_selector(raw, !origin.legacy) {
                Ok(selector) => {
                    if let Some(j) = out.iter().position(|s| *s == selector) {
                        self.error(origin, field.index(i), Reason::DuplicateSelector(j));
                    }
                    out.push(selector);
                }
                Err(errors) => {
                    for e in errors {
                        self.error(
                            origin,
                            FieldPath::new(format!("{}.{}", field.index(i), e.field)),
                            Reason::BadSelector(e.detail),
                        );
                    }
                    // Keep indices aligned for the duplicate check.
                    out.push(Selector {
                        match_labels: BTreeMap::from([(String::new(), format!("invalid-{i}"))]),
                        requirements: vec![],
                    });
                }
            }
        }
        out
    }

    /// Reports duplicate strings in a list.
    fn unique_values(&mut self, origin: &Origin, camel: &str, list: &[String]) {
        let mut seen = BTreeSet::new();
        for (i, v) in list.iter().enumerate() {
            if !seen.insert(v) {
                self.error(
                    origin,
                    origin.field(camel).index(i),
                    Reason::DuplicateValue(v.clone()),
                );
            }
        }
    }
}

pub(super) fn build(
    resources: &ClusterResources,
) -> (Result<Config, ConfigErrors>, Vec<ConfigWarning>) {
    let mut sink = Sink::default();
    let raw = lower(resources, &mut sink);
    let config = validate(&raw, resources.secrets.as_deref(), &mut sink);
    let warnings = sink.warnings.clone();
    if sink.errors.is_empty() {
        (
            Ok(Config {
                warnings: sink.warnings,
                ..config
            }),
            warnings,
        )
    } else {
        (Err(ConfigErrors(sink.errors)), warnings)
    }
}

/// CRs and the legacy ConfigMap → raw objects.
fn lower(resources: &ClusterResources, sink: &mut Sink) -> Raw {
    let mut raw = Raw::default();
    for pool in &resources.ip_address_pools {
        let name = pool.name_any();
        raw.pools.push(RawPool {
            origin: Origin::cr("IPAddressPool", &name),
            labels: pool.labels().clone(),
            name,
            addresses: pool.spec.addresses.clone(),
            auto_assign: pool.spec.auto_assign,
            avoid_buggy_ips: pool.spec.avoid_buggy_ips,
            allocation: pool.spec.service_allocation.clone(),
        });
    }
    for ad in &resources.l2_advertisements {
        let name = ad.name_any();
        raw.l2.push(RawL2 {
            origin: Origin::cr("L2Advertisement", &name),
            name,
            spec: ad.spec.clone(),
        });
    }
    for ad in &resources.bgp_advertisements {
        let name = ad.name_any();
        raw.bgp.push(RawBgpAd {
            origin: Origin::cr("BGPAdvertisement", &name),
            name,
            spec: ad.spec.clone(),
        });
    }
    for peer in &resources.bgp_peers {
        let name = peer.name_any();
        raw.peers.push(RawPeer {
            origin: Origin::cr("BGPPeer", &name),
            name,
            my_asn: Some(peer.spec.my_asn),
            spec: peer.spec.clone(),
            address_required: false,
            port_max: CR_PEER_PORT_MAX,
        });
    }
    for profile in &resources.bfd_profiles {
        let name = profile.name_any();
        raw.bfd.push(RawBfd {
            origin: Origin::cr("BFDProfile", &name),
            name,
            spec: profile.spec.clone(),
        });
    }
    for community in &resources.communities {
        let origin = Origin::cr("Community", &community.name_any());
        for (i, alias) in community.spec.communities.iter().enumerate() {
            raw.aliases.push(RawAlias {
                field: origin.field("communities").index(i),
                origin: origin.clone(),
                name: alias.name.clone(),
                value: alias.value.clone(),
            });
        }
    }
    if let Some(cm) = &resources.legacy {
        lower_legacy(cm, &mut raw, sink);
    }
    raw
}

/// A legacy ConfigMap's objects, from the one lowering shared with `migrate`
/// ([`super::lowering`]). Its peers keep the CR's port limit, so every valid ConfigMap migrates
/// to CRs the API server accepts.
fn lower_legacy(cm: &LegacyConfigMap, raw: &mut Raw, sink: &mut Sink) {
    let lowered = super::lowering::lower(&cm.config);
    let origin = |entry: &str, prefix: &str| Origin {
        id: ObjectId::config_map_entry(&cm.name, entry),
        prefix: if prefix.is_empty() {
            FieldPath::default()
        } else {
            FieldPath::new(prefix)
        },
        legacy: true,
    };
    let whole = Origin {
        id: ObjectId::new("ConfigMap", &cm.name),
        prefix: FieldPath::default(),
        legacy: true,
    };
    for (alias, value) in &lowered.communities {
        raw.aliases.push(RawAlias {
            origin: whole.clone(),
            field: FieldPath::new(format!("bgp-communities.{alias}")),
            name: alias.clone(),
            value: value.clone(),
        });
    }
    for problem in &lowered.problems {
        let o = origin(&problem.entry, "");
        sink.error(&o, o.field(problem.field), problem.reason.clone());
    }
    for peer in lowered.peers {
        raw.peers.push(RawPeer {
            origin: origin(&peer.peer.entry, &peer.peer.prefix),
            name: peer.peer.name,
            my_asn: peer.my_asn,
            spec: peer.peer.spec,
            address_required: true,
            port_max: CR_PEER_PORT_MAX,
        });
    }
    for pool in lowered.pools {
        raw.pools.push(RawPool {
            origin: origin(&pool.entry, &pool.prefix),
            name: pool.name,
            labels: BTreeMap::new(),
            addresses: pool.spec.addresses,
            auto_assign: pool.spec.auto_assign,
            avoid_buggy_ips: pool.spec.avoid_buggy_ips,
            allocation: None,
        });
    }
    for ad in lowered.l2_advertisements {
        raw.l2.push(RawL2 {
            origin: origin(&ad.entry, &ad.prefix),
            name: ad.name,
            spec: ad.spec,
        });
    }
    for ad in lowered.bgp_advertisements {
        raw.bgp.push(RawBgpAd {
            origin: origin(&ad.entry, &ad.prefix),
            name: ad.name,
            spec: ad.spec,
        });
    }
    for profile in lowered.bfd_profiles {
        raw.bfd.push(RawBfd {
            origin: origin(&profile.entry, &profile.prefix),
            name: profile.name,
            spec: profile.spec,
        });
    }
}

fn validate(raw: &Raw, secrets: Option<&[Secret]>, sink: &mut Sink) -> Config {
    let community_aliases = validate_aliases(raw, sink);
    let pools = validate_pools(raw, sink);
    let bfd_profiles = validate_bfd(raw, sink);
    let peers = validate_peers(raw, secrets, sink);
    let l2_advertisements = validate_l2(raw, &pools, sink);
    let bgp_advertisements = validate_bgp(raw, &pools, &community_aliases, sink);
    check_local_pref_conflicts(raw, &bgp_advertisements, &pools, sink);
    check_echo_mode_v6(
        raw,
        &bgp_advertisements,
        &pools,
        &peers,
        &bfd_profiles,
        sink,
    );
    Config {
        pools,
        l2_advertisements,
        bgp_advertisements,
        peers,
        bfd_profiles,
        community_aliases,
        warnings: vec![],
    }
}

fn validate_aliases(raw: &Raw, sink: &mut Sink) -> BTreeMap<String, Community> {
    let mut aliases = BTreeMap::new();
    for alias in &raw.aliases {
        if alias.name.is_empty() {
            sink.error(&alias.origin, alias.field.child("name"), Reason::Missing);
            continue;
        }
        if aliases.contains_key(&alias.name) {
            sink.error(
                &alias.origin,
                alias.field.clone(),
                Reason::DuplicateName(alias.name.clone()),
            );
            continue;
        }
        match Community::parse(&alias.value) {
            Ok(value) => {
                aliases.insert(alias.name.clone(), value);
            }
            Err(e) => {
                let field = if alias.origin.legacy {
                    alias.field.clone()
                } else {
                    alias.field.child("value")
                };
                sink.error(
                    &alias.origin,
                    field,
                    Reason::BadCommunity {
                        value: alias.value.clone(),
                        detail: e.to_string(),
                    },
                );
            }
        }
    }
    aliases
}

fn validate_pools(raw: &Raw, sink: &mut Sink) -> BTreeMap<String, Pool> {
    let mut pools = BTreeMap::new();
    let mut names = BTreeSet::new();
    let mut seen_cidrs: Vec<(IpNet, String)> = Vec::new();
    for rp in &raw.pools {
        let o = &rp.origin;
        let mut valid = true;
        if !names.insert(rp.name.clone()) {
            sink.error(o, o.name_field(), Reason::DuplicateName(rp.name.clone()));
            valid = false;
        }
        if rp.addresses.is_empty() {
            sink.error(o, o.field("addresses"), Reason::Empty);
            valid = false;
        }
        let mut addresses = Vec::new();
        for (i, text) in rp.addresses.iter().enumerate() {
            let field = o.field("addresses").index(i);
            match PoolAddress::parse(text) {
                Ok(address) => {
                    for cidr in &address.cidrs {
                        if let Some((other, other_pool)) =
                            seen_cidrs.iter().find(|(other, _)| overlaps(cidr, other))
                        {
                            sink.error(
                                o,
                                field.clone(),
                                Reason::Overlap {
                                    cidr: *cidr,
                                    other: *other,
                                    other_pool: other_pool.clone(),
                                },
                            );
                            valid = false;
                            break;
                        }
                    }
                    seen_cidrs.extend(address.cidrs.iter().map(|c| (*c, rp.name.clone())));
                    addresses.push(address);
                }
                Err(e) => {
                    sink.error(
                        o,
                        field,
                        Reason::BadAddress {
                            value: text.clone(),
                            detail: e.to_string(),
                        },
                    );
                    valid = false;
                }
            }
        }
        let allocation = rp.allocation.as_ref().map(|a| {
            let alloc_origin = Origin {
                prefix: o.field("serviceAllocation"),
                ..o.clone()
            };
            sink.unique_values(&alloc_origin, "namespaces", &a.namespaces);
            ServiceAllocation {
                priority: a.priority.unwrap_or(0),
                namespaces: a.namespaces.clone(),
                namespace_selectors: sink.selectors(
                    &alloc_origin,
                    "namespaceSelectors",
                    &a.namespace_selectors,
                ),
                service_selectors: sink.selectors(
                    &alloc_origin,
                    "serviceSelectors",
                    &a.service_selectors,
                ),
            }
        });
        if valid {
            pools.insert(
                rp.name.clone(),
                Pool {
                    name: rp.name.clone(),
                    labels: rp.labels.clone(),
                    addresses,
                    auto_assign: rp.auto_assign,
                    avoid_buggy_ips: rp.avoid_buggy_ips,
                    allocation,
                },
            );
        }
    }
    pools
}

/// Pools an advertisement applies to: by name, by label, or all when neither is given.
fn resolve_pools(
    origin: &Origin,
    names: &[String],
    selectors: &[Selector],
    raw: &Raw,
    sink: &mut Sink,
) -> Vec<String> {
    sink.unique_values(origin, "ipAddressPools", names);
    let declared: BTreeMap<&str, &RawPool> =
        raw.pools.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut out: Vec<String> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if !declared.contains_key(name.as_str()) {
            // MetalLB ignores names of pools that do not exist (yet): a warning, not an error,
            // so that the order in which objects are created does not matter.
            sink.warn(
                origin,
                origin.field("ipAddressPools").index(i),
                Reason::UnknownPool(name.clone()),
            );
        } else if !out.contains(name) {
            out.push(name.clone());
        }
    }
    for pool in &raw.pools {
        let by_label = selectors.iter().any(|s| s.matches(&pool.labels));
        let all = names.is_empty() && selectors.is_empty();
        if (by_label || all) && !out.contains(&pool.name) {
            out.push(pool.name.clone());
        }
    }
    out
}

fn validate_l2(raw: &Raw, pools: &BTreeMap<String, Pool>, sink: &mut Sink) -> Vec<L2Advertisement> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for ad in &raw.l2 {
        let o = &ad.origin;
        if !o.legacy && !names.insert(ad.name.clone()) {
            sink.error(o, o.name_field(), Reason::DuplicateName(ad.name.clone()));
        }
        let pool_selectors = sink.selectors(
            o,
            "ipAddressPoolSelectors",
            &ad.spec.ip_address_pool_selectors,
        );
        let selected = resolve_pools(o, &ad.spec.ip_address_pools, &pool_selectors, raw, sink);
        sink.unique_values(o, "interfaces", &ad.spec.interfaces);
        let mut preferred = Vec::new();
        for (i, p) in ad.spec.preferred_node_selectors.iter().enumerate() {
            let field = o.field("preferredNodeSelectors").index(i);
            if !(1..=100).contains(&p.weight) {
                sink.error(
                    o,
                    field.child("weight"),
                    Reason::OutOfRange {
                        value: p.weight.into(),
                        min: 1,
                        max: 100,
                    },
                );
            }
            let p_origin = Origin {
                prefix: field.clone(),
                ..o.clone()
            };
            let sel = sink.selectors(&p_origin, "preference", std::slice::from_ref(&p.preference));
            if let Some(preference) = sel.into_iter().next() {
                preferred.push(PreferredNode {
                    weight: p.weight.clamp(1, 100) as u8,
                    preference,
                });
            }
        }
        out.push(L2Advertisement {
            name: ad.name.clone(),
            pools: selected
                .into_iter()
                .filter(|p| pools.contains_key(p))
                .collect(),
            node_selectors: sink.selectors(o, "nodeSelectors", &ad.spec.node_selectors),
            interfaces: ad.spec.interfaces.clone(),
            service_selectors: sink.selectors(o, "serviceSelectors", &ad.spec.service_selectors),
            preferred_node_selectors: preferred,
        });
    }
    out
}

fn validate_bgp(
    raw: &Raw,
    pools: &BTreeMap<String, Pool>,
    aliases: &BTreeMap<String, Community>,
    sink: &mut Sink,
) -> Vec<BgpAdvertisement> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    let declared_peers: BTreeSet<&str> = raw.peers.iter().map(|p| p.name.as_str()).collect();
    for (index, ad) in raw.bgp.iter().enumerate() {
        let o = &ad.origin;
        let spec = &ad.spec;
        if !names.insert(ad.name.clone()) {
            sink.error(o, o.name_field(), Reason::DuplicateName(ad.name.clone()));
        }
        if let Some(first) = raw.bgp[..index].iter().find(|other| other.spec == ad.spec) {
            sink.error(o, o.whole(), Reason::Identical(first.origin.describe()));
        }
        let v4_ok = (1..=32).contains(&spec.aggregation_length);
        if !v4_ok {
            sink.error(
                o,
                o.field("aggregationLength"),
                Reason::OutOfRange {
                    value: spec.aggregation_length.into(),
                    min: 1,
                    max: 32,
                },
            );
        }
        let v6_ok = (1..=128).contains(&spec.aggregation_length_v6);
        if !v6_ok {
            sink.error(
                o,
                o.field("aggregationLengthV6"),
                Reason::OutOfRange {
                    value: spec.aggregation_length_v6.into(),
                    min: 1,
                    max: 128,
                },
            );
        }
        let aggregation_length = spec.aggregation_length.clamp(1, 32) as u8;
        let aggregation_length_v6 = spec.aggregation_length_v6.clamp(1, 128) as u8;
        if !spec.service_selectors.is_empty()
            && (aggregation_length != 32 || aggregation_length_v6 != 128)
        {
            sink.error(
                o,
                o.field("serviceSelectors"),
                Reason::ServiceSelectorsWithAggregation,
            );
        }
        let pool_selectors =
            sink.selectors(o, "ipAddressPoolSelectors", &spec.ip_address_pool_selectors);
        let selected = resolve_pools(o, &spec.ip_address_pools, &pool_selectors, raw, sink);
        for pool in selected.iter().filter_map(|name| pools.get(name)) {
            for address in &pool.addresses {
                let (length, field, ok) = if address.is_ipv4() {
                    (aggregation_length, "aggregationLength", v4_ok)
                } else {
                    (aggregation_length_v6, "aggregationLengthV6", v6_ok)
                };
                let prefix = address.shortest_prefix_len();
                if ok && length < prefix {
                    sink.error(
                        o,
                        o.field(field),
                        Reason::AggregationTooShort {
                            length,
                            entry: address.to_string(),
                            prefix,
                            pool: pool.name.clone(),
                        },
                    );
                }
            }
        }
        sink.unique_values(o, "communities", &spec.communities);
        let mut communities = Vec::new();
        for (i, text) in spec.communities.iter().enumerate() {
            let field = o.field("communities").index(i);
            let value = if Community::is_literal(text) {
                match Community::parse(text) {
                    Ok(c) => c,
                    Err(e) => {
                        sink.error(
                            o,
                            field,
                            Reason::BadCommunity {
                                value: text.clone(),
                                detail: e.to_string(),
                            },
                        );
                        continue;
                    }
                }
            } else if let Some(c) = aliases.get(text) {
                *c
            } else {
                sink.error(o, field, Reason::UnknownCommunityAlias(text.clone()));
                continue;
            };
            if communities.contains(&value) {
                // Same value written twice (e.g. once as alias, once as number).
                if !spec.communities[..i].contains(text) {
                    sink.error(o, field, Reason::DuplicateValue(value.to_string()));
                }
                continue;
            }
            communities.push(value);
        }
        sink.unique_values(o, "peers", &spec.peers);
        for (i, peer) in spec.peers.iter().enumerate() {
            if !declared_peers.contains(peer.as_str()) {
                // As for pools: MetalLB accepts it, the ad simply matches no session.
                sink.warn(
                    o,
                    o.field("peers").index(i),
                    Reason::UnknownPeer(peer.clone()),
                );
            }
        }
        out.push(BgpAdvertisement {
            name: ad.name.clone(),
            pools: selected
                .into_iter()
                .filter(|p| pools.contains_key(p))
                .collect(),
            aggregation_length,
            aggregation_length_v6,
            local_pref: (spec.local_pref != 0).then_some(spec.local_pref),
            communities,
            node_selectors: sink.selectors(o, "nodeSelectors", &spec.node_selectors),
            // Kept as written: a name without a BGPPeer matches no session (it must not
            // turn into "all peers").
            peers: spec.peers.clone(),
            service_selectors: sink.selectors(o, "serviceSelectors", &spec.service_selectors),
        });
    }
    out
}

/// MetalLB: two advertisements of the same pool with different `localPref` conflict, unless the
/// prefixes they produce differ (aggregation length, per family present in the pool), they go to
/// disjoint non-empty peer lists, or they may apply to different nodes (node sets are only known
/// in the cluster, so different `nodeSelectors` are given the benefit of the doubt). Ads with
/// `serviceSelectors` are checked per Service by the speaker instead.
fn check_local_pref_conflicts(
    raw: &Raw,
    ads: &[BgpAdvertisement],
    pools: &BTreeMap<String, Pool>,
    sink: &mut Sink,
) {
    for (j, later) in ads.iter().enumerate() {
        for earlier in &ads[..j] {
            if later.local_pref == earlier.local_pref
                || !later.service_selectors.is_empty()
                || !earlier.service_selectors.is_empty()
                || later.node_selectors != earlier.node_selectors
                || (!later.peers.is_empty()
                    && !earlier.peers.is_empty()
                    && later.peers.iter().all(|p| !earlier.peers.contains(p)))
            {
                continue;
            }
            let shared = later.pools.iter().filter(|p| earlier.pools.contains(p));
            for pool in shared.filter_map(|name| pools.get(name)) {
                let has_v4 = pool.addresses.iter().any(PoolAddress::is_ipv4);
                let has_v6 = pool.addresses.iter().any(|a| !a.is_ipv4());
                let same_v4 = has_v4 && later.aggregation_length == earlier.aggregation_length;
                let same_v6 =
                    has_v6 && later.aggregation_length_v6 == earlier.aggregation_length_v6;
                if same_v4 || same_v6 {
                    let o = &raw.bgp[j].origin;
                    sink.error(
                        o,
                        o.field("localPref"),
                        Reason::LocalPrefConflict {
                            other: earlier.name.clone(),
                            pool: pool.name.clone(),
                        },
                    );
                    break;
                }
            }
        }
    }
}

/// MetalLB: BFD echo mode is not supported for IPv6; an advertisement that sends an IPv6 pool to
/// a peer whose BFD profile uses echo mode is rejected.
fn check_echo_mode_v6(
    raw: &Raw,
    ads: &[BgpAdvertisement],
    pools: &BTreeMap<String, Pool>,
    peers: &BTreeMap<String, Peer>,
    bfd: &BTreeMap<String, BfdProfile>,
    sink: &mut Sink,
) {
    for (i, ad) in ads.iter().enumerate() {
        let Some(pool) = ad
            .pools
            .iter()
            .filter_map(|name| pools.get(name))
            .find(|p| p.addresses.iter().any(|a| !a.is_ipv4()))
        else {
            continue;
        };
        let targets = peers
            .values()
            .filter(|p| ad.peers.is_empty() || ad.peers.contains(&p.name));
        for peer in targets {
            let echo = peer
                .bfd_profile
                .as_ref()
                .and_then(|b| bfd.get(b))
                .is_some_and(|b| b.echo_mode);
            if echo {
                let o = &raw.bgp[i].origin;
                sink.error(
                    o,
                    o.whole(),
                    Reason::EchoModeWithIpv6 {
                        pool: pool.name.clone(),
                        peer: peer.name.clone(),
                    },
                );
            }
        }
    }
}

fn parse_duration_field(
    o: &Origin,
    camel: &str,
    text: &Option<String>,
    sink: &mut Sink,
) -> Result<Option<Duration>, ()> {
    match text {
        None => Ok(None),
        Some(t) => parse_go_duration(t).map(Some).map_err(|e| {
            sink.error(
                o,
                o.field(camel),
                Reason::BadDuration {
                    value: t.clone(),
                    detail: e.to_string(),
                },
            );
        }),
    }
}

fn parse_ip_field(
    o: &Origin,
    camel: &str,
    text: &Option<String>,
    sink: &mut Sink,
) -> Option<IpAddr> {
    let t = text.as_ref()?;
    match t.trim().parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            sink.error(o, o.field(camel), Reason::BadIp { value: t.clone() });
            None
        }
    }
}

fn validate_peers(
    raw: &Raw,
    secrets: Option<&[Secret]>,
    sink: &mut Sink,
) -> BTreeMap<String, Peer> {
    let mut out = BTreeMap::new();
    for (index, rp) in raw.peers.iter().enumerate() {
        let o = &rp.origin;
        let spec = &rp.spec;
        let errors_before = sink.errors.len();
        let fail = |sink: &mut Sink, field: FieldPath, reason: Reason| sink.error(o, field, reason);
        if out.contains_key(&rp.name) || raw.peers[..index].iter().any(|p| p.name == rp.name) {
            fail(sink, o.name_field(), Reason::DuplicateName(rp.name.clone()));
        }
        if let Some(first) = raw.peers[..index].iter().find(|p| p.spec == rp.spec) {
            fail(sink, o.whole(), Reason::Identical(first.origin.describe()));
        }
        if rp.my_asn == Some(0) {
            fail(sink, o.field("myASN"), Reason::ZeroAsn);
        }
        let peer_asn = match (spec.peer_asn, spec.dynamic_asn) {
            (Some(0), None) => {
                fail(sink, o.field("peerASN"), Reason::ZeroAsn);
                PeerAsn::Fixed(0)
            }
            (Some(asn), None) => PeerAsn::Fixed(asn),
            (None, Some(DynamicASNMode::Internal)) => PeerAsn::Internal,
            (None, Some(DynamicASNMode::External)) => PeerAsn::External,
            _ => {
                fail(
                    sink,
                    o.field("peerASN"),
                    Reason::ExactlyOneOf {
                        a: "peerASN",
                        b: "dynamicASN",
                    },
                );
                PeerAsn::Fixed(0)
            }
        };
        match spec.local_asn {
            Some(0) => fail(sink, o.field("localASN"), Reason::ZeroAsn),
            Some(local) if Some(local) != rp.my_asn => fail(
                sink,
                o.field("localASN"),
                Reason::NotSupported(
                    "the speaker always presents myASN (no local-as); remove localASN or set it to myASN",
                ),
            ),
            _ => {}
        }
        let target = match (&spec.peer_address, &spec.interface) {
            (Some(_), None) => match parse_ip_field(o, "peerAddress", &spec.peer_address, sink) {
                Some(ip) => PeerTarget::Address(ip),
                None => PeerTarget::Interface(String::new()),
            },
            (None, Some(interface)) if !interface.is_empty() => {
                fail(
                    sink,
                    o.field("interface"),
                    Reason::NotSupported(
                        "unnumbered BGP (a session over an interface's link-local address) is not implemented; use peerAddress",
                    ),
                );
                PeerTarget::Interface(interface.clone())
            }
            (None, _) if rp.address_required => {
                fail(sink, o.field("peerAddress"), Reason::Missing);
                PeerTarget::Interface(String::new())
            }
            _ => {
                fail(
                    sink,
                    o.field("peerAddress"),
                    Reason::ExactlyOneOf {
                        a: "peerAddress",
                        b: "interface",
                    },
                );
                PeerTarget::Interface(String::new())
            }
        };
        let source_address = parse_ip_field(o, "sourceAddress", &spec.source_address, sink);
        let router_id = match parse_ip_field(o, "routerID", &spec.router_id, sink) {
            Some(IpAddr::V4(v4)) => Some(v4),
            Some(IpAddr::V6(_)) => {
                fail(sink, o.field("routerID"), Reason::RouterIdNotIpv4);
                None
            }
            None => None,
        };
        if spec.peer_port == 0 || spec.peer_port > rp.port_max {
            fail(
                sink,
                o.field("peerPort"),
                Reason::OutOfRange {
                    value: spec.peer_port.into(),
                    min: 1,
                    max: rp.port_max.into(),
                },
            );
        }
        let hold = parse_duration_field(o, "holdTime", &spec.hold_time, sink);
        let keepalive = parse_duration_field(o, "keepaliveTime", &spec.keepalive_time, sink);
        let connect_time = parse_duration_field(o, "connectTime", &spec.connect_time, sink);
        let (hold_time, keepalive_time) = match (hold, keepalive) {
            (Ok(hold), Ok(keepalive)) => {
                let (hold, keepalive) = match (hold, keepalive) {
                    (None, None) => (DEFAULT_HOLD_TIME, DEFAULT_HOLD_TIME / 3),
                    (Some(h), None) => (h, h / 3),
                    (None, Some(k)) => (k.saturating_mul(3), k),
                    (Some(h), Some(k)) => (h, k),
                };
                // As MetalLB: the hold time is rounded to whole seconds before the check.
                let rounded = Duration::from_secs(
                    hold.as_secs() + u64::from(hold.subsec_nanos() >= 500_000_000),
                );
                if rounded != Duration::ZERO && rounded < Duration::from_secs(3) {
                    fail(sink, o.field("holdTime"), Reason::HoldTimeTooShort(hold));
                }
                if keepalive > hold {
                    fail(
                        sink,
                        o.field("keepaliveTime"),
                        Reason::KeepaliveAboveHold { keepalive, hold },
                    );
                }
                (rounded, keepalive)
            }
            _ => (Duration::ZERO, Duration::ZERO),
        };
        let connect_time = match connect_time {
            Ok(Some(d)) if d < Duration::from_secs(1) || d > Duration::from_secs(65535) => {
                fail(
                    sink,
                    o.field("connectTime"),
                    Reason::OutOfRange {
                        value: d.as_secs() as i64,
                        min: 1,
                        max: 65535,
                    },
                );
                None
            }
            Ok(d) => d,
            Err(()) => None,
        };
        let internal = match peer_asn {
            PeerAsn::Fixed(theirs) => rp.my_asn == Some(theirs),
            PeerAsn::Internal => true,
            PeerAsn::External => false,
        };
        if let Some(my) = rp.my_asn.filter(|_| internal && spec.ebgp_multi_hop) {
            fail(sink, o.field("ebgpMultiHop"), Reason::MultihopForIbgp(my));
        }
        let password = match (&spec.password, &spec.password_secret) {
            (Some(_), Some(_)) => {
                fail(
                    sink,
                    o.field("passwordSecret"),
                    Reason::MutuallyExclusive {
                        a: "password",
                        b: "passwordSecret",
                    },
                );
                None
            }
            (Some(p), None) => Some(PeerPassword::Plain(p.clone())),
            (None, Some(reference)) => {
                let name = reference.name.clone().unwrap_or_default();
                let namespace = reference.namespace.clone();
                let field = o.field("passwordSecret");
                let password = match secrets {
                    None => {
                        sink.warn(o, field, Reason::SecretUnchecked(name.clone()));
                        None
                    }
                    Some(secrets) => match secrets
                        .iter()
                        .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
                    {
                        None => {
                            // Transient (MetalLB): the Secret may come later. Only this
                            // peer's session waits for it; the rest of the configuration
                            // does not.
                            sink.warn(o, field, Reason::SecretNotFound(name.clone()));
                            None
                        }
                        Some(secret) => match secret_password(secret) {
                            Ok(p) => Some(p),
                            Err(detail) => {
                                fail(
                                    sink,
                                    field,
                                    Reason::BadSecret {
                                        secret: name.clone(),
                                        detail,
                                    },
                                );
                                None
                            }
                        },
                    },
                };
                Some(PeerPassword::Secret {
                    name,
                    namespace,
                    password,
                })
            }
            (None, None) => None,
        };
        if let Some(profile) = &spec.bfd_profile
            && !raw.bfd.iter().any(|b| &b.name == profile)
        {
            fail(
                sink,
                o.field("bfdProfile"),
                Reason::UnknownBfdProfile(profile.clone()),
            );
        }
        if let Some(vrf) = spec.vrf.as_ref().filter(|v| !v.is_empty()) {
            fail(sink, o.field("vrf"), Reason::VrfUnsupported(vrf.clone()));
        }
        let node_selectors = sink.selectors(o, "nodeSelectors", &spec.node_selectors);
        if sink.errors.len() == errors_before {
            out.insert(
                rp.name.clone(),
                Peer {
                    name: rp.name.clone(),
                    my_asn: rp.my_asn.unwrap_or(0),
                    peer_asn,
                    local_asn: spec.local_asn,
                    target,
                    source_address,
                    peer_port: spec.peer_port,
                    hold_time,
                    keepalive_time,
                    connect_time,
                    router_id,
                    node_selectors,
                    password,
                    bfd_profile: spec.bfd_profile.clone(),
                    ebgp_multihop: spec.ebgp_multi_hop,
                    enable_graceful_restart: spec.enable_graceful_restart,
                    dual_stack_address_family: spec.dual_stack_address_family,
                },
            );
        }
    }
    out
}

/// The `password` key of a `kubernetes.io/basic-auth` Secret.
fn secret_password(secret: &Secret) -> Result<String, String> {
    if secret.type_.as_deref() != Some("kubernetes.io/basic-auth") {
        return Err(format!(
            "type must be kubernetes.io/basic-auth, not {:?}",
            secret.type_.as_deref().unwrap_or("")
        ));
    }
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get("password")) {
        return String::from_utf8(bytes.0.clone())
            .map_err(|_| "key password is not UTF-8".to_string());
    }
    if let Some(text) = secret.string_data.as_ref().and_then(|d| d.get("password")) {
        return Ok(text.clone());
    }
    Err("it has no key password".into())
}

fn validate_bfd(raw: &Raw, sink: &mut Sink) -> BTreeMap<String, BfdProfile> {
    let mut out = BTreeMap::new();
    let mut names = BTreeSet::new();
    for rb in &raw.bfd {
        let o = &rb.origin;
        let spec = &rb.spec;
        let mut valid = true;
        if !names.insert(rb.name.clone()) {
            sink.error(o, o.name_field(), Reason::DuplicateName(rb.name.clone()));
            valid = false;
        }
        let mut ranged =
            |camel: &str, value: Option<u32>, min: u32, max: u32, default: u32| -> u32 {
                match value {
                    Some(v) if v < min || v > max => {
                        sink.error(
                            o,
                            o.field(camel),
                            Reason::OutOfRange {
                                value: v.into(),
                                min: min.into(),
                                max: max.into(),
                            },
                        );
                        valid = false;
                        default
                    }
                    Some(v) => v,
                    None => default,
                }
            };
        let receive = ranged("receiveInterval", spec.receive_interval, 10, 60000, 300);
        let transmit = ranged("transmitInterval", spec.transmit_interval, 10, 60000, 300);
        let multiplier = ranged("detectMultiplier", spec.detect_multiplier, 2, 255, 3);
        let echo = ranged("echoInterval", spec.echo_interval, 10, 60000, 50);
        let ttl = ranged("minimumTtl", spec.minimum_ttl, 1, 254, 254);
        // The speaker's BFD sends and answers Control packets only (issue #11).
        if spec.echo_mode {
            sink.error(
                o,
                o.field("echoMode"),
                Reason::NotSupported(
                    "BFD echo mode is not implemented (the speaker runs BFD with Control packets only); remove echoMode",
                ),
            );
            valid = false;
        } else if spec.echo_interval.is_some() {
            sink.warn(
                o,
                o.field("echoInterval"),
                Reason::NotSupported("echoInterval is ignored: BFD echo mode is not implemented"),
            );
        }
        if valid {
            out.insert(
                rb.name.clone(),
                BfdProfile {
                    name: rb.name.clone(),
                    receive_interval: Duration::from_millis(receive.into()),
                    transmit_interval: Duration::from_millis(transmit.into()),
                    detect_multiplier: u8::try_from(multiplier).unwrap_or(u8::MAX),
                    echo_interval: Duration::from_millis(echo.into()),
                    echo_mode: spec.echo_mode,
                    passive_mode: spec.passive_mode,
                    minimum_ttl: u8::try_from(ttl).unwrap_or(u8::MAX),
                },
            );
        }
    }
    out
}
