//! Writes to Services: `status.loadBalancer.ingress` and the `ip-allocated-from-pool` annotation.

use ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::allocator::{Assignment, ServiceKey};

/// Field manager of the controller's writes.
pub const FIELD_MANAGER: &str = "ferrolb-controller";

pub use ferrolb_crds::cluster::ingress_ips;

/// The pool our annotation names, if the Service carries it.
pub fn allocated_pool(service: &Service) -> Option<&str> {
    service
        .metadata
        .annotations
        .as_ref()?
        .get(IP_ALLOCATED_FROM_POOL)
        .map(String::as_str)
}

/// Writes the assignment: the annotation first, so that whoever sees the address also sees its
/// pool.
pub async fn apply(
    api: &Api<Service>,
    key: &ServiceKey,
    assignment: &Assignment,
) -> Result<(), kube::Error> {
    let params = PatchParams::default();
    let annotation =
        json!({"metadata": {"annotations": {IP_ALLOCATED_FROM_POOL: assignment.pool}}});
    api.patch(&key.name, &params, &Patch::Merge(&annotation))
        .await?;
    let ingress: Vec<_> = assignment
        .ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    let status = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    api.patch_status(&key.name, &params, &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Removes the ingress addresses and the annotation.
pub async fn clear(api: &Api<Service>, key: &ServiceKey) -> Result<(), kube::Error> {
    let params = PatchParams::default();
    let status = json!({"status": {"loadBalancer": {"ingress": null}}});
    api.patch_status(&key.name, &params, &Patch::Merge(&status))
        .await?;
    let annotation = json!({"metadata": {"annotations": {IP_ALLOCATED_FROM_POOL: null}}});
    api.patch(&key.name, &params, &Patch::Merge(&annotation))
        .await?;
    Ok(())
}
