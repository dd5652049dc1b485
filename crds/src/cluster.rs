//! The Kubernetes edge that the controller and the speaker share: which Services FerroLB
//! handles, how their assigned addresses are read, and the names of the objects both binaries
//! look up. Each of these facts is defined here once, so the two binaries cannot drift apart.

use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Service};

use crate::legacy::{self, LegacyConfigMap, LegacyParseError};

/// The Secret that holds the speakers' membership key (created by the leading controller,
/// read by every speaker), as MetalLB's `memberlist` Secret.
pub const MEMBERSHIP_SECRET_NAME: &str = "ferrolb-memberlist";
/// The key inside [`MEMBERSHIP_SECRET_NAME`].
pub const MEMBERSHIP_SECRET_KEY: &str = "secretkey";
/// The default name of MetalLB's legacy ConfigMap (`data.config`), in the configuration
/// namespace. Both binaries take `--config-map` with this default.
pub const LEGACY_CONFIG_MAP_NAME: &str = "config";
/// The label an EndpointSlice carries with the name of its Service.
pub const ENDPOINT_SLICE_SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// The admission webhook: the Service in front of the controllers, the
/// ValidatingWebhookConfiguration whose caBundle the controller keeps current, the Secret with
/// its certificate, and the container port (config/webhook/, config/controller/).
pub const WEBHOOK_SERVICE_NAME: &str = "ferrolb-webhook-service";
pub const WEBHOOK_CONFIGURATION_NAME: &str = "ferrolb-validating-webhook";
pub const WEBHOOK_SECRET_NAME: &str = "ferrolb-webhook-cert";
pub const WEBHOOK_PORT: u16 = 9443;
/// The condition the controller keeps in `status.conditions` of every Service it handles:
/// `True` with the addresses, or `False` with the reason the Service is Pending. Events expire
/// after an hour; this stays readable for as long as the Service is Pending.
pub const ADDRESS_ASSIGNED_CONDITION: &str = "ferrolb.io/AddressAssigned";

/// A Service, by namespace and name. Plain data: the allocator and the speaker's decision step
/// use it without knowing any Kubernetes type.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a Service object; `None` if it has no namespace or no name (never true of
    /// an object read from the API server).
    pub fn of(service: &Service) -> Option<ServiceKey> {
        Some(ServiceKey::new(
            service.metadata.namespace.as_deref()?,
            service.metadata.name.as_deref()?,
        ))
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether FerroLB handles the Service: `type: LoadBalancer`, the configured
/// `loadBalancerClass` (none configured: only Services without a class, as MetalLB), and not
/// being deleted (a Service with a deletion timestamp is on its way out: its address is
/// released and no longer announced).
pub fn is_handled(service: &Service, lb_class: Option<&str>) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec.load_balancer_class.as_deref() == lb_class
        && service.metadata.deletion_timestamp.is_none()
}

/// The addresses in the Service's `status.loadBalancer.ingress`, in order. Entries that are not
/// IP addresses (host names, which FerroLB never writes) are skipped.
pub fn ingress_ips(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|entry| entry.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// MetalLB's legacy configuration in a ConfigMap (`data.config`), parsed.
pub fn legacy_config_map(map: &ConfigMap) -> Result<LegacyConfigMap, LegacyParseError> {
    // A ConfigMap always serialises; the legacy parser works on the generic value so that
    // `ferrolbctl` can feed it a file as well.
    let value = serde_json::to_value(map).unwrap_or_default();
    legacy::from_config_map_value(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value, deleting: bool) -> Service {
        let mut metadata = json!({"name": "web", "namespace": "default"});
        if deleting {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(json!({
            "metadata": metadata,
            "spec": spec,
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.10"}, {"hostname": "lb.example"}, {"ip": "2001:db8::10"}
            ]}},
        }))
        .unwrap()
    }

    #[test]
    fn handled_services() {
        let plain = service(json!({"type": "LoadBalancer"}), false);
        assert!(is_handled(&plain, None));
        assert!(!is_handled(&plain, Some("ferrolb.io/lb")));
        let classed = service(
            json!({"type": "LoadBalancer", "loadBalancerClass": "ferrolb.io/lb"}),
            false,
        );
        assert!(is_handled(&classed, Some("ferrolb.io/lb")));
        assert!(!is_handled(&classed, None));
        assert!(!is_handled(
            &service(json!({"type": "ClusterIP"}), false),
            None
        ));
        assert!(!is_handled(
            &service(json!({"type": "LoadBalancer"}), true),
            None
        ));
    }

    #[test]
    fn ingress_ips_skip_host_names() {
        let svc = service(json!({"type": "LoadBalancer"}), false);
        let ips: Vec<String> = ingress_ips(&svc).iter().map(|ip| ip.to_string()).collect();
        assert_eq!(ips, ["192.0.2.10", "2001:db8::10"]);
        assert_eq!(
            ServiceKey::of(&svc).map(|k| k.to_string()).as_deref(),
            Some("default/web")
        );
    }

    #[test]
    fn legacy_config_map_parses_data_config() {
        let map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": LEGACY_CONFIG_MAP_NAME, "namespace": "ferrolb-system"},
            "data": {"config": "address-pools:\n- name: lan\n  protocol: layer2\n  addresses: [192.0.2.240/28]\n"},
        }))
        .unwrap();
        let parsed = legacy_config_map(&map).unwrap();
        assert_eq!(parsed.name, LEGACY_CONFIG_MAP_NAME);
        let broken: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "config"},
            "data": {"config": "no-such-key: 1"},
        }))
        .unwrap();
        assert!(legacy_config_map(&broken).is_err());
    }
}
