//! MetalLB configuration → FerroLB CRs (`ferrolbctl migrate`).
//!
//! * MetalLB CRs (`metallb.io/v1beta1`, `v1beta2`): same spec, `apiVersion: ferrolb.io/v1beta1`,
//!   namespace `ferrolb-system`; name and labels kept (pool selectors match on labels), every
//!   server-populated field (uid, resourceVersion, status, annotations, ...) dropped.
//! * The legacy ConfigMap: one IPAddressPool per pool (named after it, made a DNS-1123 label), one
//!   L2Advertisement per `layer2` pool (named like the pool), one BGPAdvertisement per
//!   `bgp-advertisements` entry (`<pool>-bgp-<n>`, or one default ad), BGPPeers named after their
//!   address (`peer-192-0-2-1`, not MetalLB's position-dependent `peer1..N`), one Community CR
//!   `communities` for `bgp-communities`, and the BFDProfiles.
//!
//! Values are copied as written (after trimming), never re-derived, so the output says what the
//! input said; defaults stay implicit.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::config::{InputDocument, InputObject};
use crate::legacy::{LegacyConfigMap, names};
use crate::v1beta1::{
    self, BFDProfile, BFDProfileSpec, BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec,
    Community, CommunityAlias, CommunitySpec, IPAddressPool, IPAddressPoolSpec, L2Advertisement,
    L2AdvertisementSpec,
};

/// The migrated objects, and notes for the user (renames, skipped documents) for stderr.
#[derive(Debug, Clone, Default)]
pub struct Migrated {
    pub objects: Vec<InputObject>,
    pub notes: Vec<String>,
}

/// Migrates every document (FerroLB documents pass through with cleaned metadata).
pub fn migrate(documents: Vec<InputDocument>) -> Migrated {
    let mut out = Migrated::default();
    for document in documents {
        match document.object {
            InputObject::Legacy(cm) => {
                let migrated = from_legacy(&cm);
                out.objects.extend(migrated.objects);
                out.notes.extend(
                    migrated
                        .notes
                        .into_iter()
                        .map(|n| format!("{}: {n}", document.location)),
                );
            }
            object => out.objects.push(clean(object)),
        }
    }
    out
}

fn meta(name: &str, labels: Option<BTreeMap<String, String>>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(v1beta1::DEFAULT_NAMESPACE.to_string()),
        labels: labels.filter(|l| !l.is_empty()),
        ..ObjectMeta::default()
    }
}

/// Keeps name and labels, moves the object to the FerroLB namespace, drops the rest.
fn clean(object: InputObject) -> InputObject {
    macro_rules! cleaned {
        ($variant:ident, $o:expr) => {{
            let mut o = $o;
            o.metadata = meta(
                o.metadata.name.as_deref().unwrap_or(""),
                o.metadata.labels.take(),
            );
            o.status = None;
            InputObject::$variant(o)
        }};
    }
    match object {
        InputObject::IPAddressPool(o) => cleaned!(IPAddressPool, o),
        InputObject::L2Advertisement(o) => cleaned!(L2Advertisement, o),
        InputObject::BGPAdvertisement(o) => cleaned!(BGPAdvertisement, o),
        InputObject::BGPPeer(o) => cleaned!(BGPPeer, o),
        InputObject::BFDProfile(o) => cleaned!(BFDProfile, o),
        InputObject::Community(o) => cleaned!(Community, o),
        InputObject::Legacy(cm) => InputObject::Legacy(cm),
    }
}

/// Migrates a legacy ConfigMap.
pub fn from_legacy(cm: &LegacyConfigMap) -> Migrated {
    let mut out = Migrated::default();
    let config = &cm.config;
    let mut pool_names = BTreeSet::new();
    let mut ad_names = BTreeSet::new();
    for (i, pool) in config.address_pools.iter().enumerate() {
        let original = pool
            .name
            .clone()
            .unwrap_or_else(|| format!("pool-{}", i + 1));
        let name = names::unique(names::dns_label(&original), &mut pool_names);
        if name != original {
            out.notes.push(format!(
                "address-pools[{i}]: pool {original:?} is named {name:?} (Services that name the pool in an annotation must be updated)"
            ));
        }
        out.objects.push(InputObject::IPAddressPool(IPAddressPool {
            metadata: meta(&name, None),
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
            status: None,
        }));
        match pool.protocol.as_deref() {
            Some("layer2") => {
                let ad_name = names::unique(name.clone(), &mut ad_names);
                out.objects
                    .push(InputObject::L2Advertisement(L2Advertisement {
                        metadata: meta(&ad_name, None),
                        spec: L2AdvertisementSpec {
                            ip_address_pools: vec![name.clone()],
                            ..Default::default()
                        },
                        status: None,
                    }));
            }
            Some("bgp") => {
                let default_ad = [crate::legacy::LegacyBgpAdvertisement::default()];
                let ads = if pool.bgp_advertisements.is_empty() {
                    &default_ad[..]
                } else {
                    &pool.bgp_advertisements[..]
                };
                for (j, ad) in ads.iter().enumerate() {
                    let ad_name =
                        names::unique(names::bgp_advertisement(&name, j + 1), &mut ad_names);
                    out.objects
                        .push(InputObject::BGPAdvertisement(BGPAdvertisement {
                            metadata: meta(&ad_name, None),
                            spec: BGPAdvertisementSpec {
                                aggregation_length: ad.aggregation_length.unwrap_or(32),
                                aggregation_length_v6: ad.aggregation_length_v6.unwrap_or(128),
                                local_pref: ad.localpref.unwrap_or(0),
                                communities: ad.communities.clone(),
                                ip_address_pools: vec![name.clone()],
                                ..BGPAdvertisementSpec::default()
                            },
                            status: None,
                        }));
                }
            }
            other => out.notes.push(format!(
                "address-pools[{i}]: protocol {:?} is not layer2 or bgp: no advertisement created",
                other.unwrap_or("")
            )),
        }
    }

    let mut peer_names = BTreeSet::new();
    for peer in &config.peers {
        let name = names::unique(
            names::peer(peer.peer_address.as_deref().unwrap_or("")),
            &mut peer_names,
        );
        out.objects.push(InputObject::BGPPeer(BGPPeer {
            metadata: meta(&name, None),
            spec: BGPPeerSpec {
                my_asn: peer.my_asn.unwrap_or(0),
                peer_asn: peer.peer_asn,
                peer_address: peer.peer_address.as_ref().map(|a| a.trim().to_string()),
                source_address: peer.source_address.clone(),
                peer_port: peer.peer_port.unwrap_or(179),
                hold_time: peer.hold_time.clone(),
                keepalive_time: peer.keepalive_time.clone(),
                router_id: peer.router_id.clone(),
                node_selectors: peer
                    .node_selectors
                    .iter()
                    .map(LabelSelector::from)
                    .collect(),
                password: peer.password.clone(),
                password_secret: None::<SecretReference>,
                bfd_profile: peer.bfd_profile.clone(),
                ebgp_multi_hop: peer.ebgp_multihop.unwrap_or(false),
                ..BGPPeerSpec::default()
            },
            status: None,
        }));
    }

    if !config.bgp_communities.is_empty() {
        out.objects.push(InputObject::Community(Community {
            metadata: meta("communities", None),
            spec: CommunitySpec {
                communities: config
                    .bgp_communities
                    .iter()
                    .map(|(name, value)| CommunityAlias {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            },
            status: None,
        }));
    }

    let mut bfd_names = BTreeSet::new();
    for (i, profile) in config.bfd_profiles.iter().enumerate() {
        let original = profile
            .name
            .clone()
            .unwrap_or_else(|| format!("bfd-profile-{}", i + 1));
        let name = names::unique(names::dns_label(&original), &mut bfd_names);
        if name != original {
            out.notes.push(format!(
                "bfd-profiles[{i}]: profile {original:?} is named {name:?}"
            ));
        }
        out.objects.push(InputObject::BFDProfile(BFDProfile {
            metadata: meta(&name, None),
            spec: BFDProfileSpec {
                receive_interval: profile.receive_interval,
                transmit_interval: profile.transmit_interval,
                detect_multiplier: profile.detect_multiplier,
                echo_interval: profile.echo_interval,
                echo_mode: profile.echo_mode.unwrap_or(false),
                passive_mode: profile.passive_mode.unwrap_or(false),
                minimum_ttl: profile.minimum_ttl,
            },
            status: None,
        }));
    }
    out
}

/// Multi-document YAML of the objects (no comments).
pub fn to_yaml(objects: &[InputObject]) -> Result<String, String> {
    let mut docs = Vec::new();
    for object in objects {
        let text = match object {
            InputObject::IPAddressPool(o) => serde_saphyr::to_string(o),
            InputObject::L2Advertisement(o) => serde_saphyr::to_string(o),
            InputObject::BGPAdvertisement(o) => serde_saphyr::to_string(o),
            InputObject::BGPPeer(o) => serde_saphyr::to_string(o),
            InputObject::BFDProfile(o) => serde_saphyr::to_string(o),
            InputObject::Community(o) => serde_saphyr::to_string(o),
            InputObject::Legacy(_) => continue,
        }
        .map_err(|e| e.to_string())?;
        docs.push(text);
    }
    Ok(docs.iter().map(|d| format!("---\n{d}")).collect())
}
