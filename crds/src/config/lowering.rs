//! The one conversion of a legacy MetalLB ConfigMap into FerroLB CR specs. Validation
//! ([`super::Config::build`]) and `ferrolbctl migrate` ([`crate::migrate`]) both start from it,
//! so a ConfigMap that validates migrates to CRs that say the same thing.
//!
//! Each lowered object keeps the ConfigMap entry it came from (`address-pools[0] "lan"`,
//! `peers[0] (192.0.2.1)`), for errors. What cannot be expressed as a spec at all (a missing
//! `my-asn`, an unknown `protocol`) is a [`Problem`]; every other check is the CR's.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::DEFAULT_PEER_PORT;
use super::error::Reason;
use crate::legacy::{self, LegacyConfig, names};
use crate::v1beta1::{
    BFDProfileSpec, BGPAdvertisementSpec, BGPPeerSpec, IPAddressPoolSpec, L2AdvertisementSpec,
};

/// One object lowered from an entry of the ConfigMap.
#[derive(Debug, Clone, PartialEq)]
pub struct Lowered<S> {
    /// The entry, as errors name it: `address-pools[0] "lan"`.
    pub entry: String,
    /// Where inside the entry the object comes from: `bgp-advertisements[1]`, or empty.
    pub prefix: String,
    /// The object's name in the configuration: a pool's or profile's name as written (Services
    /// name pools in annotations), derived names for the rest (see [`legacy::names`]).
    pub name: String,
    /// The name a CR of it gets: a DNS-1123 label, unique per kind.
    pub cr_name: String,
    pub spec: S,
}

/// A peer, and its `my-asn` (`None` when missing: its spec then says 0).
#[derive(Debug, Clone, PartialEq)]
pub struct LoweredPeer {
    pub peer: Lowered<BGPPeerSpec>,
    pub my_asn: Option<u32>,
}

/// Something in an entry that no spec can say.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub entry: String,
    /// The field's CR (camelCase) name.
    pub field: &'static str,
    pub reason: Reason,
}

/// A legacy configuration as CR specs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoweredConfig {
    pub pools: Vec<Lowered<IPAddressPoolSpec>>,
    pub l2_advertisements: Vec<Lowered<L2AdvertisementSpec>>,
    pub bgp_advertisements: Vec<Lowered<BGPAdvertisementSpec>>,
    pub peers: Vec<LoweredPeer>,
    pub bfd_profiles: Vec<Lowered<BFDProfileSpec>>,
    /// `bgp-communities`: alias → value, in order.
    pub communities: Vec<(String, String)>,
    pub problems: Vec<Problem>,
}

/// `name` of a named entry, or its position alone.
fn entry_of(list: &str, i: usize, name: Option<&str>) -> String {
    match name.map(str::trim) {
        Some(name) if !name.is_empty() => format!("{list}[{i}] {name:?}"),
        _ => format!("{list}[{i}]"),
    }
}

/// The entry label and name of the `i`-th entry of `list`; a missing name is a problem, and
/// the entry is then called `<fallback>-<i+1>`.
fn named_entry(
    list: &str,
    i: usize,
    name: Option<&str>,
    fallback: &str,
    out: &mut LoweredConfig,
) -> (String, String) {
    let entry = entry_of(list, i, name);
    match name.map(str::trim) {
        Some(name) if !name.is_empty() => (entry, name.to_string()),
        _ => {
            out.problems.push(Problem {
                entry: entry.clone(),
                field: "name",
                reason: Reason::Missing,
            });
            (entry, format!("{fallback}-{}", i + 1))
        }
    }
}

/// Lowers `config`. Values are copied as written, after trimming; defaults that the legacy
/// format implies (a pool's `auto-assign`, a peer's port) are the CRs' defaults.
pub fn lower(config: &LegacyConfig) -> LoweredConfig {
    let mut out = LoweredConfig {
        communities: config
            .bgp_communities
            .iter()
            .map(|(alias, value)| (alias.clone(), value.clone()))
            .collect(),
        ..LoweredConfig::default()
    };
    lower_pools(config, &mut out);
    lower_peers(config, &mut out);
    lower_bfd(config, &mut out);
    out
}

fn lower_pools(config: &LegacyConfig, out: &mut LoweredConfig) {
    let mut pool_names = BTreeSet::new();
    let mut ad_names = BTreeSet::new();
    for (i, pool) in config.address_pools.iter().enumerate() {
        let (entry, name) = named_entry("address-pools", i, pool.name.as_deref(), "pool", out);
        let cr_name = names::unique(names::dns_label(&name), &mut pool_names);
        out.pools.push(Lowered {
            entry: entry.clone(),
            prefix: String::new(),
            name: name.clone(),
            cr_name: cr_name.clone(),
            spec: IPAddressPoolSpec {
                addresses: pool
                    .addresses
                    .iter()
                    .map(|a| a.trim().to_string())
                    .collect(),
                auto_assign: pool.auto_assign.unwrap_or(true),
                avoid_buggy_ips: pool.avoid_buggy_ips.unwrap_or(false),
                service_allocation: None,
            },
        });
        match pool.protocol.as_deref().map(str::trim) {
            Some("layer2") => {
                if !pool.bgp_advertisements.is_empty() {
                    out.problems.push(Problem {
                        entry: entry.clone(),
                        field: "bgpAdvertisements",
                        reason: Reason::AdvertisementsWithoutBgp,
                    });
                }
                let ad_name = names::unique(cr_name.clone(), &mut ad_names);
                out.l2_advertisements.push(Lowered {
                    entry: entry.clone(),
                    prefix: String::new(),
                    name: ad_name.clone(),
                    cr_name: ad_name,
                    spec: L2AdvertisementSpec {
                        ip_address_pools: vec![name.clone()],
                        ..Default::default()
                    },
                });
            }
            Some("bgp") => {
                // No `bgp-advertisements`: one advertisement with the defaults (MetalLB).
                let default_ad = [legacy::LegacyBgpAdvertisement::default()];
                let ads: &[legacy::LegacyBgpAdvertisement] = if pool.bgp_advertisements.is_empty() {
                    &default_ad
                } else {
                    &pool.bgp_advertisements
                };
                for (j, ad) in ads.iter().enumerate() {
                    let ad_name =
                        names::unique(names::bgp_advertisement(&cr_name, j + 1), &mut ad_names);
                    out.bgp_advertisements.push(Lowered {
                        entry: entry.clone(),
                        prefix: if pool.bgp_advertisements.is_empty() {
                            String::new()
                        } else {
                            format!("bgp-advertisements[{j}]")
                        },
                        name: ad_name.clone(),
                        cr_name: ad_name,
                        spec: BGPAdvertisementSpec {
                            aggregation_length: ad.aggregation_length.unwrap_or(32),
                            aggregation_length_v6: ad.aggregation_length_v6.unwrap_or(128),
                            local_pref: ad.localpref.unwrap_or(0),
                            communities: ad
                                .communities
                                .iter()
                                .map(|c| c.trim().to_string())
                                .collect(),
                            ip_address_pools: vec![name.clone()],
                            ..BGPAdvertisementSpec::default()
                        },
                    });
                }
            }
            Some(other) => out.problems.push(Problem {
                entry,
                field: "protocol",
                reason: Reason::BadProtocol {
                    value: other.to_string(),
                },
            }),
            None => out.problems.push(Problem {
                entry,
                field: "protocol",
                reason: Reason::Missing,
            }),
        }
    }
}

fn lower_peers(config: &LegacyConfig, out: &mut LoweredConfig) {
    let mut peer_names = BTreeSet::new();
    for (i, peer) in config.peers.iter().enumerate() {
        let address = peer
            .peer_address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty());
        // Named as MetalLB names them: by address (the position alone is hard to find).
        let entry = match address {
            Some(address) => format!("peers[{i}] ({address})"),
            None => format!("peers[{i}]"),
        };
        if peer.my_asn.is_none() {
            out.problems.push(Problem {
                entry: entry.clone(),
                field: "myASN",
                reason: Reason::Missing,
            });
        }
        if peer.peer_asn.is_none() {
            out.problems.push(Problem {
                entry: entry.clone(),
                field: "peerASN",
                reason: Reason::Missing,
            });
        }
        let name = names::unique(names::peer(address.unwrap_or("")), &mut peer_names);
        out.peers.push(LoweredPeer {
            my_asn: peer.my_asn,
            peer: Lowered {
                entry,
                prefix: String::new(),
                name: name.clone(),
                cr_name: name,
                spec: BGPPeerSpec {
                    my_asn: peer.my_asn.unwrap_or(0),
                    // A missing peer-asn is a problem above; 1 keeps the other checks quiet.
                    peer_asn: Some(peer.peer_asn.unwrap_or(1)),
                    peer_address: address.map(str::to_string),
                    source_address: peer.source_address.as_deref().map(|a| a.trim().to_string()),
                    peer_port: peer.peer_port.unwrap_or(DEFAULT_PEER_PORT),
                    hold_time: peer.hold_time.clone(),
                    keepalive_time: peer.keepalive_time.clone(),
                    router_id: peer.router_id.as_deref().map(|a| a.trim().to_string()),
                    node_selectors: peer
                        .node_selectors
                        .iter()
                        .map(LabelSelector::from)
                        .collect(),
                    password: peer.password.clone(),
                    bfd_profile: peer.bfd_profile.clone(),
                    ebgp_multi_hop: peer.ebgp_multihop.unwrap_or(false),
                    ..BGPPeerSpec::default()
                },
            },
        });
    }
}

fn lower_bfd(config: &LegacyConfig, out: &mut LoweredConfig) {
    let mut bfd_names = BTreeSet::new();
    for (i, profile) in config.bfd_profiles.iter().enumerate() {
        let (entry, name) = named_entry(
            "bfd-profiles",
            i,
            profile.name.as_deref(),
            "bfd-profile",
            out,
        );
        out.bfd_profiles.push(Lowered {
            entry,
            prefix: String::new(),
            cr_name: names::unique(names::dns_label(&name), &mut bfd_names),
            name,
            spec: BFDProfileSpec {
                receive_interval: profile.receive_interval,
                transmit_interval: profile.transmit_interval,
                detect_multiplier: profile.detect_multiplier,
                echo_interval: profile.echo_interval,
                echo_mode: profile.echo_mode.unwrap_or(false),
                passive_mode: profile.passive_mode.unwrap_or(false),
                minimum_ttl: profile.minimum_ttl,
            },
        });
    }
}
