//! Writes to Services: `status.loadBalancer.ingress`, the `ip-allocated-from-pool` annotation and
//! the `ferrolb.io/AddressAssigned` condition.

use std::net::IpAddr;

use ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::allocator::ServiceKey;

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

/// Sets (`Some`) or removes (`None`) the pool annotation when it differs, and returns the
/// Service as the API server has it afterwards (the given one when nothing was written). An
/// assignment writes it with the status instead (`with_pool_annotation`); this is for releases,
/// and for a server that drops metadata from status writes.
pub async fn set_pool_annotation(
    api: &Api<Service>,
    key: &ServiceKey,
    service: &Service,
    pool: Option<&str>,
) -> Result<Service, kube::Error> {
    if allocated_pool(service) == pool {
        return Ok(service.clone());
    }
    let annotation = json!({"metadata": {"annotations": {IP_ALLOCATED_FROM_POOL: pool}}});
    api.patch(
        &key.name,
        &PatchParams::default(),
        &Patch::Merge(&annotation),
    )
    .await
}

/// What a status write does with `status.loadBalancer.ingress`.
#[derive(Clone, Copy, Debug)]
pub enum Ingress<'a> {
    Keep,
    Set(&'a [IpAddr]),
    Clear,
}

/// The one status patch that sets the ingress addresses and our condition (`None`: remove it),
/// or `None` when neither changes.
///
/// It is a strategic merge patch: Service `status.conditions` merges by `type`, so the patch
/// carries only our entry (or a `$patch: delete` for it) and other controllers' conditions are
/// left as they are, whatever they wrote meanwhile; `loadBalancer.ingress` is replaced whole.
pub fn status_patch(
    base: &Service,
    ingress: Ingress<'_>,
    condition: Option<&AddressCondition>,
    now: Time,
) -> Option<serde_json::Value> {
    let existing = address_condition(base);
    let ours = match condition {
        Some(desired) => condition_update(existing, desired, base.metadata.generation, now)
            .map(|condition| json!(condition)),
        None => existing
            .is_some()
            .then(|| json!({"type": ADDRESS_ASSIGNED_CONDITION, "$patch": "delete"})),
    };
    let mut status = serde_json::Map::new();
    match ingress {
        Ingress::Keep => {}
        Ingress::Set(ips) => {
            let ingress: Vec<_> = ips
                .iter()
                .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                .collect();
            status.insert("loadBalancer".into(), json!({"ingress": ingress}));
        }
        Ingress::Clear => {
            status.insert("loadBalancer".into(), json!({"ingress": null}));
        }
    }
    if let Some(ours) = ours {
        status.insert("conditions".into(), json!([ours]));
    }
    (!status.is_empty()).then(|| json!({"status": status}))
}

/// `patch` (from [`status_patch`]) that also sets the pool annotation to `pool`; a patch of the
/// annotation alone when `patch` is `None`; `patch` as it is when there is no annotation to set.
pub fn with_pool_annotation(
    patch: Option<serde_json::Value>,
    pool: Option<&str>,
) -> Option<serde_json::Value> {
    let Some(pool) = pool else {
        return patch;
    };
    let mut patch = patch.unwrap_or_else(|| json!({}));
    patch["metadata"] = json!({"annotations": {IP_ALLOCATED_FROM_POOL: pool}});
    Some(patch)
}

/// Now, as a condition time (conditions serialise with second precision: rounded, so that a
/// re-read compares equal).
pub fn now() -> Time {
    let now = jiff::Timestamp::now();
    Time(now.round(jiff::Unit::Second).unwrap_or(now))
}

/// Sends a patch made by [`status_patch`]; returns the Service as written.
pub async fn send_status(
    api: &Api<Service>,
    key: &ServiceKey,
    patch: &serde_json::Value,
) -> Result<Service, kube::Error> {
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
}

/// The resourceVersion as a number. The API conventions call it opaque; kube-apiserver's is
/// etcd's revision, which only grows. `None` for anything else, and then nothing is compared.
pub fn revision(service: &Service) -> Option<u64> {
    service.metadata.resource_version.as_deref()?.parse().ok()
}

/// Whether `service` is an older version than the one our last write produced (`written`):
/// the watch has not delivered our write yet, so reconciling it would write the same again.
pub fn is_stale(service: &Service, written: Option<u64>) -> bool {
    matches!((revision(service), written), (Some(seen), Some(written)) if seen < written)
}

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
    fn the_pool_annotation_rides_on_the_status_patch() {
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        let both = with_pool_annotation(Some(status.clone()), Some("web")).unwrap();
        assert_eq!(both["status"], status["status"]);
        assert_eq!(
            both["metadata"]["annotations"][IP_ALLOCATED_FROM_POOL],
            "web"
        );
        let alone = with_pool_annotation(None, Some("web")).unwrap();
        assert_eq!(
            alone,
            json!({"metadata": {"annotations": {IP_ALLOCATED_FROM_POOL: "web"}}})
        );
        assert_eq!(
            with_pool_annotation(Some(status.clone()), None),
            Some(status)
        );
        assert_eq!(with_pool_annotation(None, None), None);
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
    fn one_patch_carries_ingress_and_only_our_condition() {
        let base: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 3},
            "status": {"conditions": [{
                "type": "example.com/Other", "status": "True", "reason": "Theirs",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z",
            }]},
        }))
        .unwrap();
        let ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        let assigned = AddressCondition {
            assigned: true,
            reason: "Assigned",
            message: "assigned [192.0.2.1] from pool a".to_string(),
        };
        let patch = status_patch(&base, Ingress::Set(&ips), Some(&assigned), at(10)).unwrap();
        assert_eq!(
            patch["status"]["loadBalancer"]["ingress"][0]["ip"],
            "192.0.2.1"
        );
        let conditions = patch["status"]["conditions"].as_array().unwrap();
        assert_eq!(
            conditions.len(),
            1,
            "others' entries are merged by type, not resent"
        );
        assert_eq!(conditions[0]["type"], ADDRESS_ASSIGNED_CONDITION);
        assert_eq!(conditions[0]["observedGeneration"], 3);

        // Written back: the same state writes nothing; removal deletes only our entry.
        let mut written = base.clone();
        let mut all = written.status.as_ref().unwrap().conditions.clone().unwrap();
        all.push(serde_json::from_value(conditions[0].clone()).unwrap());
        written.status.as_mut().unwrap().conditions = Some(all);
        assert_eq!(
            status_patch(&written, Ingress::Keep, Some(&assigned), at(20)),
            None
        );
        let removed = status_patch(&written, Ingress::Clear, None, at(20)).unwrap();
        assert_eq!(removed["status"]["loadBalancer"]["ingress"], json!(null));
        assert_eq!(
            removed["status"]["conditions"],
            json!([{"type": ADDRESS_ASSIGNED_CONDITION, "$patch": "delete"}])
        );
    }

    #[test]
    fn only_an_older_numeric_version_than_our_write_is_stale() {
        let at_version = |rv: &str| -> Service {
            serde_json::from_value(json!({"metadata": {"name": "web", "resourceVersion": rv}}))
                .unwrap()
        };
        assert!(is_stale(&at_version("99"), Some(100)));
        assert!(!is_stale(&at_version("100"), Some(100)));
        assert!(!is_stale(&at_version("101"), Some(100)));
        assert!(!is_stale(&at_version("99"), None), "nothing written yet");
        assert!(
            !is_stale(&at_version("opaque"), Some(100)),
            "not comparable"
        );
    }

    #[test]
    fn long_messages_are_cut_at_the_api_limit() {
        let long = "é".repeat(MAX_CONDITION_MESSAGE);
        let condition = condition_update(None, &pending(&long), None, at(0)).unwrap();
        assert!(condition.message.len() <= MAX_CONDITION_MESSAGE);
    }
}
