//! Writes to Services: `status.loadBalancer.ingress`, the `ip-allocated-from-pool` annotation and
//! the `ferrolb.io/AddressAssigned` condition.

use ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff;
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

/// The field manager of the `ferrolb.io/AddressAssigned` condition. A server-side apply under
/// its own manager owns that one entry of `status.conditions` (a list keyed by `type`), so other
/// controllers' conditions are left alone and no other field of ours can be dropped by it.
pub const CONDITION_MANAGER: &str = "ferrolb-controller/conditions";

pub use ferrolb_crds::cluster::ADDRESS_ASSIGNED_CONDITION;

/// The Kubernetes limit on a condition's message.
const MAX_CONDITION_MESSAGE: usize = 32 * 1024;

/// What `ferrolb.io/AddressAssigned` should say about a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressCondition {
    pub assigned: bool,
    /// CamelCase, as Kubernetes requires of a condition reason.
    pub reason: &'static str,
    pub message: String,
}

impl AddressCondition {
    fn status(&self) -> &'static str {
        if self.assigned { "True" } else { "False" }
    }
}

/// Our condition on the Service, if it has one.
pub fn address_condition(service: &Service) -> Option<&Condition> {
    service
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == ADDRESS_ASSIGNED_CONDITION)
}

/// The condition to write, or `None` when the Service already says exactly this (the condition
/// changes with the state, not with every reconcile). The transition time moves only when the
/// status flips, as the Kubernetes conventions ask.
pub fn condition_update(
    existing: Option<&Condition>,
    desired: &AddressCondition,
    generation: Option<i64>,
    now: Time,
) -> Option<Condition> {
    let mut message = desired.message.clone();
    if message.len() > MAX_CONDITION_MESSAGE {
        let mut end = MAX_CONDITION_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    if let Some(existing) = existing
        && existing.status == desired.status()
        && existing.reason == desired.reason
        && existing.message == message
        && existing.observed_generation == generation
    {
        return None;
    }
    let last_transition_time = match existing {
        Some(existing) if existing.status == desired.status() => {
            existing.last_transition_time.clone()
        }
        _ => now,
    };
    Some(Condition {
        type_: ADDRESS_ASSIGNED_CONDITION.to_string(),
        status: desired.status().to_string(),
        reason: desired.reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    })
}

fn apply_conditions(key: &ServiceKey, conditions: Vec<Condition>) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": key.name, "namespace": key.namespace},
        "status": {"conditions": conditions},
    })
}

/// Sets `ferrolb.io/AddressAssigned` when it changed. Returns whether it wrote.
pub async fn set_condition(
    api: &Api<Service>,
    key: &ServiceKey,
    service: &Service,
    desired: &AddressCondition,
) -> Result<bool, kube::Error> {
    // Conditions serialise with second precision; round so a re-read compares equal.
    let now = Time(
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    );
    let Some(condition) = condition_update(
        address_condition(service),
        desired,
        service.metadata.generation,
        now,
    ) else {
        return Ok(false);
    };
    let params = PatchParams::apply(CONDITION_MANAGER).force();
    api.patch_status(
        &key.name,
        &params,
        &Patch::Apply(&apply_conditions(key, vec![condition])),
    )
    .await?;
    Ok(true)
}

/// Removes our condition (the Service is not ours any more): applying no entry under our
/// manager drops the one it owned.
pub async fn remove_condition(
    api: &Api<Service>,
    key: &ServiceKey,
    service: &Service,
) -> Result<(), kube::Error> {
    if address_condition(service).is_none() {
        return Ok(());
    }
    let params = PatchParams::apply(CONDITION_MANAGER).force();
    api.patch_status(
        &key.name,
        &params,
        &Patch::Apply(&apply_conditions(key, Vec::new())),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn pending(message: &str) -> AddressCondition {
        AddressCondition {
            assigned: false,
            reason: "NoIPAvailable",
            message: message.to_string(),
        }
    }

    #[test]
    fn unchanged_condition_is_not_written_again() {
        let first = condition_update(None, &pending("pool tiny is full"), Some(1), at(10)).unwrap();
        assert_eq!(first.status, "False");
        assert_eq!(first.last_transition_time, at(10));
        assert_eq!(
            condition_update(Some(&first), &pending("pool tiny is full"), Some(1), at(20)),
            None
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let first = condition_update(None, &pending("a"), Some(1), at(10)).unwrap();
        let reworded = condition_update(Some(&first), &pending("b"), Some(1), at(20)).unwrap();
        assert_eq!(reworded.message, "b");
        assert_eq!(reworded.last_transition_time, at(10));
        let assigned = AddressCondition {
            assigned: true,
            reason: "Assigned",
            message: "assigned".to_string(),
        };
        let flipped = condition_update(Some(&reworded), &assigned, Some(1), at(30)).unwrap();
        assert_eq!(flipped.status, "True");
        assert_eq!(flipped.last_transition_time, at(30));
    }

    #[test]
    fn long_messages_are_cut_at_the_api_limit() {
        let long = "é".repeat(MAX_CONDITION_MESSAGE);
        let condition = condition_update(None, &pending(&long), None, at(0)).unwrap();
        assert!(condition.message.len() <= MAX_CONDITION_MESSAGE);
    }
}
