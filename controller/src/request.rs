//! `AllocRequest::from_service`: the only bridge from a Kubernetes Service to the allocator.
//!
//! Everything the allocator needs to know about a Service (families, requested addresses, pool,
//! which pools admit it, sharing) is read here, once, so the allocator never sees Kubernetes
//! types and the reconciler never parses annotations.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_crds::annotations::{self, Key, Source};
use ferrolb_crds::config::{Config, Pool};
use k8s_openapi::api::core::v1::Service;

use crate::allocator::{
    AllocRequest, AllowedPool, Family, FamilyPolicy, Protocol, ServiceKey, ServicePort, Sharing,
};

/// Why a Service's request cannot even be put to the allocator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("both spec.loadBalancerIP and annotation {annotation} are set; use only one")]
    BothIpFields { annotation: &'static str },
    #[error("{value:?} in {field} is not an IP address")]
    BadIp { field: String, value: String },
    #[error("{count} addresses requested in {field}, at most 2 (one per family)")]
    TooManyIps { field: String, count: usize },
    #[error("two {family} addresses requested in {field}, at most one per family")]
    TwoOfFamily { field: String, family: Family },
    #[error("unknown ipFamilies entry {0:?}")]
    BadFamily(String),
    #[error("unknown ipFamilyPolicy {0:?}")]
    BadFamilyPolicy(String),
    #[error("port {port} has unknown protocol {protocol:?}")]
    BadProtocol { port: i32, protocol: String },
    #[error("port {0} is out of range")]
    BadPort(i32),
    #[error("service has no name or namespace")]
    Unnamed,
}

/// The Service's key (namespace/name).
pub fn service_key(service: &Service) -> Result<ServiceKey, RequestError> {
    ServiceKey::of(service).ok_or(RequestError::Unnamed)
}

pub use ferrolb_crds::cluster::is_handled;

/// The Service's annotations found only under MetalLB's deprecated `metallb.universe.tf/` prefix.
pub fn deprecated_annotations(service: &Service) -> Vec<&'static str> {
    let Some(found) = &service.metadata.annotations else {
        return Vec::new();
    };
    Key::ALL
        .into_iter()
        .filter(|key| *key != Key::IpAllocatedFromPool)
        .filter_map(|key| match annotations::annotation(found, key) {
            Some((_, Source::MetalLbLegacy)) => Some(key.name(Source::MetalLbLegacy)),
            _ => None,
        })
        .collect()
}

fn parse_family(text: &str) -> Result<Family, RequestError> {
    match text {
        "IPv4" => Ok(Family::V4),
        "IPv6" => Ok(Family::V6),
        other => Err(RequestError::BadFamily(other.to_string())),
    }
}

/// Families from `spec.ipFamilyPolicy`, `spec.ipFamilies` and, failing those, the ClusterIPs.
fn family_policy(service: &Service) -> Result<FamilyPolicy, RequestError> {
    let spec = service.spec.clone().unwrap_or_default();
    let mut families = spec
        .ip_families
        .unwrap_or_default()
        .iter()
        .map(|family| parse_family(family))
        .collect::<Result<Vec<_>, _>>()?;
    if families.is_empty() {
        families = spec
            .cluster_ips
            .unwrap_or_default()
            .iter()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| Family::of(&ip))
            .collect();
    }
    let primary = families.first().copied().unwrap_or(Family::V4);
    match spec.ip_family_policy.as_deref() {
        None if families.len() >= 2 => Ok(FamilyPolicy::RequireDualStack { primary }),
        None | Some("SingleStack") => Ok(FamilyPolicy::SingleStack(primary)),
        Some("PreferDualStack") => Ok(FamilyPolicy::PreferDualStack { primary }),
        Some("RequireDualStack") => Ok(FamilyPolicy::RequireDualStack { primary }),
        Some(other) => Err(RequestError::BadFamilyPolicy(other.to_string())),
    }
}

/// Explicit addresses: `spec.loadBalancerIP` or the `loadBalancerIPs` annotation (not both).
fn requested_ips(
    service: &Service,
    found: &BTreeMap<String, String>,
) -> Result<Vec<IpAddr>, RequestError> {
    let spec_ip = service
        .spec
        .as_ref()
        .and_then(|spec| spec.load_balancer_ip.as_deref())
        .map(str::trim)
        .filter(|ip| !ip.is_empty());
    let annotated = annotations::annotation(found, Key::LoadBalancerIps)
        .filter(|(value, _)| !value.trim().is_empty());
    let (field, text) = match (spec_ip, annotated) {
        (Some(_), Some((_, source))) => {
            return Err(RequestError::BothIpFields {
                annotation: Key::LoadBalancerIps.name(source),
            });
        }
        (Some(ip), None) => ("spec.loadBalancerIP".to_string(), ip),
        (None, Some((value, source))) => (Key::LoadBalancerIps.name(source).to_string(), value),
        (None, None) => return Ok(Vec::new()),
    };
    let ips = text
        .split(',')
        .map(str::trim)
        .map(|value| {
            value.parse::<IpAddr>().map_err(|_| RequestError::BadIp {
                field: field.clone(),
                value: value.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ips.len() > 2 {
        return Err(RequestError::TooManyIps {
            field,
            count: ips.len(),
        });
    }
    if ips.len() == 2 && Family::of(&ips[0]) == Family::of(&ips[1]) {
        return Err(RequestError::TwoOfFamily {
            field,
            family: Family::of(&ips[0]),
        });
    }
    Ok(ips)
}

/// Whether the pool's `serviceAllocation` (if any) admits the Service.
fn admits(
    pool: &Pool,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    service_labels: &BTreeMap<String, String>,
) -> bool {
    let Some(allocation) = &pool.allocation else {
        return true;
    };
    let namespace_ok = (allocation.namespaces.is_empty()
        && allocation.namespace_selectors.is_empty())
        || allocation.namespaces.iter().any(|name| name == namespace)
        || allocation
            .namespace_selectors
            .iter()
            .any(|selector| selector.matches(namespace_labels));
    let service_ok = allocation.service_selectors.is_empty()
        || allocation
            .service_selectors
            .iter()
            .any(|selector| selector.matches(service_labels));
    namespace_ok && service_ok
}

fn parse_protocol(port: i32, protocol: Option<&str>) -> Result<Protocol, RequestError> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(RequestError::BadProtocol {
            port,
            protocol: other.to_string(),
        }),
    }
}

/// The sharing key, the backend key (`externalTrafficPolicy: Local` ⇒ the selector, so Local and
/// Cluster Services never share) and the ports.
fn sharing(
    service: &Service,
    found: &BTreeMap<String, String>,
) -> Result<Option<Sharing>, RequestError> {
    let Some((key, _)) = annotations::annotation(found, Key::AllowSharedIp) else {
        return Ok(None);
    };
    if key.is_empty() {
        return Ok(None);
    }
    let spec = service.spec.clone().unwrap_or_default();
    let backend_key = if spec.external_traffic_policy.as_deref() == Some("Local") {
        spec.selector
            .unwrap_or_default()
            .iter()
            .map(|(label, value)| format!("{label}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        String::new()
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .iter()
        .map(|port| {
            Ok(ServicePort {
                protocol: parse_protocol(port.port, port.protocol.as_deref())?,
                port: u16::try_from(port.port).map_err(|_| RequestError::BadPort(port.port))?,
            })
        })
        .collect::<Result<Vec<_>, RequestError>>()?;
    Ok(Some(Sharing {
        key: key.to_string(),
        backend_key,
        ports,
    }))
}

impl AllocRequest {
    /// What `service` asks of the allocator under `config`. `namespace_labels` are the labels of
    /// the Service's Namespace (for `serviceAllocation.namespaceSelectors`).
    pub fn from_service(
        service: &Service,
        config: &Config,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Result<AllocRequest, RequestError> {
        let key = service_key(service)?;
        let empty = BTreeMap::new();
        let found = service.metadata.annotations.as_ref().unwrap_or(&empty);
        let service_labels = service.metadata.labels.as_ref().unwrap_or(&empty);
        let allowed_pools = config
            .pools
            .values()
            .filter(|pool| admits(pool, &key.namespace, namespace_labels, service_labels))
            .map(|pool| AllowedPool {
                name: pool.name.clone(),
                pinned: pool.allocation.is_some(),
            })
            .collect();
        Ok(AllocRequest {
            families: family_policy(service)?,
            requested: requested_ips(service, found)?,
            pool: annotations::annotation(found, Key::AddressPool)
                .map(|(pool, _)| pool.trim().to_string())
                .filter(|pool| !pool.is_empty()),
            allowed_pools,
            sharing: sharing(service, found)?,
            service: key,
        })
    }
}

#[cfg(test)]
mod tests;
