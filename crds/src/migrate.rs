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
//! input said; defaults stay implicit. The legacy ConfigMap's conversion is the one validation
//! uses ([`crate::config::lowering`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::{InputDocument, InputObject, lowering};
use crate::legacy::LegacyConfigMap;
use crate::v1beta1::{
    self, BFDProfile, BGPAdvertisement, BGPPeer, Community, CommunityAlias, CommunitySpec,
    IPAddressPool, L2Advertisement,
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

/// Migrates a legacy ConfigMap: the CRs of its one lowering ([`crate::config::lowering`], the
/// same that validation reads), under their CR names; references to renamed pools and
/// profiles follow the rename.
pub fn from_legacy(cm: &LegacyConfigMap) -> Migrated {
    let lowered = lowering::lower(&cm.config);
    let mut out = Migrated::default();
    for problem in &lowered.problems {
        out.notes.push(format!(
            "{}: {}: {} (the migrated configuration will say so too)",
            problem.entry, problem.field, problem.reason
        ));
    }
    let pool_names: BTreeMap<&str, &str> = lowered
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.cr_name.as_str()))
        .collect();
    let profile_names: BTreeMap<&str, &str> = lowered
        .bfd_profiles
        .iter()
        .map(|p| (p.name.as_str(), p.cr_name.as_str()))
        .collect();
    let renamed_pools = |pools: &[String]| -> Vec<String> {
        pools
            .iter()
            .map(|p| {
                pool_names
                    .get(p.as_str())
                    .map_or(p.clone(), |n| n.to_string())
            })
            .collect()
    };
    for pool in &lowered.pools {
        if pool.cr_name != pool.name {
            out.notes.push(format!(
                "{}: pool {:?} is named {:?} (Services that name the pool in an annotation must be updated)",
                pool.entry, pool.name, pool.cr_name
            ));
        }
        out.objects.push(InputObject::IPAddressPool(IPAddressPool {
            metadata: meta(&pool.cr_name, None),
            spec: pool.spec.clone(),
            status: None,
        }));
    }
    for ad in &lowered.l2_advertisements {
        let mut spec = ad.spec.clone();
        spec.ip_address_pools = renamed_pools(&spec.ip_address_pools);
        out.objects
            .push(InputObject::L2Advertisement(L2Advertisement {
                metadata: meta(&ad.cr_name, None),
                spec,
                status: None,
            }));
    }
    for ad in &lowered.bgp_advertisements {
        let mut spec = ad.spec.clone();
        spec.ip_address_pools = renamed_pools(&spec.ip_address_pools);
        out.objects
            .push(InputObject::BGPAdvertisement(BGPAdvertisement {
                metadata: meta(&ad.cr_name, None),
                spec,
                status: None,
            }));
    }
    for peer in &lowered.peers {
        let mut spec = peer.peer.spec.clone();
        if let Some(profile) = spec.bfd_profile.as_mut()
            && let Some(renamed) = profile_names.get(profile.as_str())
        {
            *profile = renamed.to_string();
        }
        out.objects.push(InputObject::BGPPeer(BGPPeer {
            metadata: meta(&peer.peer.cr_name, None),
            spec,
            status: None,
        }));
    }
    if !lowered.communities.is_empty() {
        out.objects.push(InputObject::Community(Community {
            metadata: meta("communities", None),
            spec: CommunitySpec {
                communities: lowered
                    .communities
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
    for profile in &lowered.bfd_profiles {
        if profile.cr_name != profile.name {
            out.notes.push(format!(
                "{}: profile {:?} is named {:?}",
                profile.entry, profile.name, profile.cr_name
            ));
        }
        out.objects.push(InputObject::BFDProfile(BFDProfile {
            metadata: meta(&profile.cr_name, None),
            spec: profile.spec.clone(),
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
