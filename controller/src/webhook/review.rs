//! The admission decision, pure: the configuration as it is, the object being written, and
//! what the API server should answer. No I/O and no HTTP: [`super`] lists the objects and
//! speaks the AdmissionReview protocol.
//!
//! A write is refused only for errors it *introduces*: the configuration is validated as it is
//! and as it would be, and the errors found only in the second are the answer. So a
//! configuration that is already invalid (written while the webhook was down) never blocks the
//! write that fixes it, and an unrelated broken object never blocks anyone else.

use ferrolb_crds::config::{ClusterResources, Config, ConfigError};
use ferrolb_crds::v1beta1::{
    BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement,
};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use crate::request::deprecated_annotations;

/// A FerroLB configuration object being created or updated.
#[derive(Debug, Clone)]
pub enum ConfigObject {
    IpAddressPool(IPAddressPool),
    L2Advertisement(L2Advertisement),
    BgpAdvertisement(BGPAdvertisement),
    BgpPeer(BGPPeer),
    BfdProfile(BFDProfile),
    Community(Community),
}

/// Puts `object` into `list` in place of the one with its name.
fn replace<K: ResourceExt>(list: &mut Vec<K>, object: K) {
    list.retain(|existing| existing.name_any() != object.name_any());
    list.push(object);
}

impl ConfigObject {
    /// The object's kind and JSON, if the kind is one of ours.
    pub fn from_json(
        kind: &str,
        object: serde_json::Value,
    ) -> Option<Result<ConfigObject, serde_json::Error>> {
        fn parse<K: serde::de::DeserializeOwned>(
            object: serde_json::Value,
            wrap: fn(K) -> ConfigObject,
        ) -> Result<ConfigObject, serde_json::Error> {
            serde_json::from_value(object).map(wrap)
        }
        Some(match kind {
            "IPAddressPool" => parse(object, ConfigObject::IpAddressPool),
            "L2Advertisement" => parse(object, ConfigObject::L2Advertisement),
            "BGPAdvertisement" => parse(object, ConfigObject::BgpAdvertisement),
            "BGPPeer" => parse(object, ConfigObject::BgpPeer),
            "BFDProfile" => parse(object, ConfigObject::BfdProfile),
            "Community" => parse(object, ConfigObject::Community),
            _ => return None,
        })
    }

    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            ConfigObject::IpAddressPool(o) => &o.metadata,
            ConfigObject::L2Advertisement(o) => &o.metadata,
            ConfigObject::BgpAdvertisement(o) => &o.metadata,
            ConfigObject::BgpPeer(o) => &o.metadata,
            ConfigObject::BfdProfile(o) => &o.metadata,
            ConfigObject::Community(o) => &o.metadata,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ConfigObject::IpAddressPool(_) => "IPAddressPool",
            ConfigObject::L2Advertisement(_) => "L2Advertisement",
            ConfigObject::BgpAdvertisement(_) => "BGPAdvertisement",
            ConfigObject::BgpPeer(_) => "BGPPeer",
            ConfigObject::BfdProfile(_) => "BFDProfile",
            ConfigObject::Community(_) => "Community",
        }
    }

    pub fn name(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }

    /// The resources with this object written into them.
    fn written_into(self, mut resources: ClusterResources) -> ClusterResources {
        match self {
            ConfigObject::IpAddressPool(o) => replace(&mut resources.ip_address_pools, o),
            ConfigObject::L2Advertisement(o) => replace(&mut resources.l2_advertisements, o),
            ConfigObject::BgpAdvertisement(o) => replace(&mut resources.bgp_advertisements, o),
            ConfigObject::BgpPeer(o) => replace(&mut resources.bgp_peers, o),
            ConfigObject::BfdProfile(o) => replace(&mut resources.bfd_profiles, o),
            ConfigObject::Community(o) => replace(&mut resources.communities, o),
        }
        resources
    }
}

/// The answer to one admission request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// `Some(reason)`: refused, with the message `kubectl apply` prints.
    pub denied: Option<String>,
    /// Shown by kubectl as `Warning: ...`, whether or not the write is allowed.
    pub warnings: Vec<String>,
}

fn errors_and_warnings(resources: &ClusterResources) -> (Vec<ConfigError>, Vec<ConfigError>) {
    let (result, warnings) = Config::build_with_warnings(resources);
    (result.err().map(|e| e.0).unwrap_or_default(), warnings)
}

/// Reviews a create or update of a configuration object in `object_namespace`, given the
/// configuration objects that exist now.
pub fn review_config(
    existing: &ClusterResources,
    object: ConfigObject,
    object_namespace: &str,
    config_namespace: &str,
) -> Verdict {
    let id = format!("{}/{}", object.kind(), object.name());
    if object_namespace != config_namespace {
        return Verdict {
            denied: Some(format!(
                "{id} in namespace {object_namespace}: FerroLB reads its configuration only from \
                 namespace {config_namespace}; there this object would be ignored"
            )),
            warnings: Vec::new(),
        };
    }
    let (errors_before, warnings_before) = errors_and_warnings(existing);
    let (errors_after, warnings_after) =
        errors_and_warnings(&object.written_into(existing.clone()));
    let introduced = errors_after
        .into_iter()
        .filter(|error| !errors_before.contains(error));
    // References another object may satisfy later (a pool, a peer, a BFDProfile, a Community,
    // a Secret) are MetalLB's "transient" errors: applying in any order must work, so they warn.
    let (dangling, refused): (Vec<_>, Vec<_>) =
        introduced.partition(|error| error.reason.is_dangling_reference());
    let mut warnings: Vec<String> = dangling
        .iter()
        .map(|error| format!("{error} (not found yet; ignored until it exists)"))
        .collect();
    warnings.extend(
        warnings_after
            .iter()
            .filter(|warning| !warnings_before.contains(warning))
            .map(ToString::to_string),
    );
    let denied = (!refused.is_empty()).then(|| {
        refused
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    });
    Verdict { denied, warnings }
}

/// Reviews a Service write: never refused (Services are not ours to block), but warned about
/// MetalLB's deprecated annotations, which still work.
pub fn review_service(service: &Service) -> Verdict {
    let is_load_balancer =
        service.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer");
    if !is_load_balancer {
        return Verdict::default();
    }
    let warnings = deprecated_annotations(service)
        .into_iter()
        .map(|name| {
            format!(
                "annotation {name} is deprecated; use ferrolb.io/{} (or metallb.io/{0})",
                name.rsplit('/').next().unwrap_or(name)
            )
        })
        .collect();
    Verdict {
        denied: None,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NS: &str = "ferrolb-system";

    fn object(kind: &str, name: &str, spec: serde_json::Value) -> ConfigObject {
        ConfigObject::from_json(
            kind,
            json!({
                "apiVersion": "ferrolb.io/v1beta1",
                "kind": kind,
                "metadata": {"name": name, "namespace": NS},
                "spec": spec,
            }),
        )
        .expect("our kind")
        .expect("parses")
    }

    fn pool(name: &str, cidr: &str) -> IPAddressPool {
        match object("IPAddressPool", name, json!({"addresses": [cidr]})) {
            ConfigObject::IpAddressPool(pool) => pool,
            _ => unreachable!(),
        }
    }

    fn with_pools(pools: &[(&str, &str)]) -> ClusterResources {
        ClusterResources {
            ip_address_pools: pools.iter().map(|(n, c)| pool(n, c)).collect(),
            ..ClusterResources::default()
        }
    }

    #[test]
    fn an_overlapping_pool_is_refused_naming_both_pools_and_the_field() {
        let existing = with_pools(&[("a", "192.0.2.0/28")]);
        let verdict = review_config(
            &existing,
            object("IPAddressPool", "b", json!({"addresses": ["192.0.2.8/29"]})),
            NS,
            NS,
        );
        let denied = verdict.denied.expect("refused");
        assert!(denied.contains("IPAddressPool/"), "{denied}");
        assert!(denied.contains("spec.addresses"), "{denied}");
        assert!(denied.contains("overlaps"), "{denied}");
        assert!(denied.contains('a') && denied.contains('b'), "{denied}");
    }

    #[test]
    fn a_valid_pool_is_allowed() {
        let existing = with_pools(&[("a", "192.0.2.0/28")]);
        let verdict = review_config(
            &existing,
            object(
                "IPAddressPool",
                "b",
                json!({"addresses": ["192.0.2.16/28"]}),
            ),
            NS,
            NS,
        );
        assert_eq!(verdict, Verdict::default());
    }

    #[test]
    fn updating_a_pool_replaces_it_and_does_not_overlap_itself() {
        let existing = with_pools(&[("a", "192.0.2.0/28")]);
        let verdict = review_config(
            &existing,
            object("IPAddressPool", "a", json!({"addresses": ["192.0.2.0/27"]})),
            NS,
            NS,
        );
        assert_eq!(verdict.denied, None);
    }

    #[test]
    fn dangling_references_only_warn_so_any_order_applies() {
        let verdict = review_config(
            &ClusterResources::default(),
            object(
                "L2Advertisement",
                "l2",
                json!({"ipAddressPools": ["not-yet"]}),
            ),
            NS,
            NS,
        );
        assert_eq!(verdict.denied, None);
        assert!(
            verdict.warnings.iter().any(|w| w.contains("not-yet")),
            "{verdict:?}"
        );
    }

    #[test]
    fn an_existing_error_does_not_block_other_writes_or_its_fix() {
        let broken = with_pools(&[("a", "192.0.2.0/28"), ("b", "192.0.2.8/29")]);
        let unrelated = review_config(
            &broken,
            object(
                "IPAddressPool",
                "c",
                json!({"addresses": ["198.51.100.0/28"]}),
            ),
            NS,
            NS,
        );
        assert_eq!(unrelated.denied, None, "{unrelated:?}");
        let fix = review_config(
            &broken,
            object(
                "IPAddressPool",
                "b",
                json!({"addresses": ["192.0.2.16/29"]}),
            ),
            NS,
            NS,
        );
        assert_eq!(fix.denied, None, "{fix:?}");
    }

    #[test]
    fn objects_outside_the_config_namespace_are_refused() {
        let verdict = review_config(
            &ClusterResources::default(),
            object("IPAddressPool", "a", json!({"addresses": ["192.0.2.0/28"]})),
            "default",
            NS,
        );
        let denied = verdict.denied.expect("refused");
        assert!(denied.contains("IPAddressPool/a"), "{denied}");
        assert!(
            denied.contains("default") && denied.contains(NS),
            "{denied}"
        );
    }

    #[test]
    fn services_get_warnings_for_deprecated_annotations_only() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": {
                "metallb.universe.tf/address-pool": "a",
            }},
            "spec": {"type": "LoadBalancer"},
        }))
        .unwrap();
        let verdict = review_service(&service);
        assert_eq!(verdict.denied, None);
        assert_eq!(verdict.warnings.len(), 1, "{verdict:?}");
        assert!(verdict.warnings[0].contains("ferrolb.io/address-pool"));
        let current: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": {"metallb.io/address-pool": "a"}},
            "spec": {"type": "LoadBalancer"},
        }))
        .unwrap();
        assert_eq!(review_service(&current), Verdict::default());
    }
}
