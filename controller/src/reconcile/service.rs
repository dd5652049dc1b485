//! Reconciles one Service: assign (or confirm) its addresses, write status, emit Events.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::{Instrument, info, info_span, warn};

use super::{Context, Error, lock, object_reference};
use crate::allocator::{AllocError, AllocRequest, PoolRejection, ServiceKey};
use crate::metrics::{FailureLabels, PoolLabel};
use crate::request::{RequestError, deprecated_annotations, is_handled, service_key};
use crate::status::{self, Ingress};

/// Why a Service has no address.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Request(RequestError),
    #[error("{0}")]
    Alloc(AllocError),
}

impl Failure {
    fn metric_label(&self) -> &'static str {
        match self {
            Failure::Request(_) => "invalid_request",
            Failure::Alloc(AllocError::InvalidRequest(_)) => "invalid_request",
            Failure::Alloc(AllocError::NoPoolAvailable) => "no_pool",
            Failure::Alloc(AllocError::NoIpAvailable { .. }) => "no_ip_available",
            Failure::Alloc(AllocError::UnknownPool { .. }) => "unknown_pool",
            Failure::Alloc(AllocError::PoolNotAdmitted { .. }) => "pool_not_admitted",
            // A full pool is "no IP available" whether the Service named it or not.
            Failure::Alloc(AllocError::PoolUnusable {
                why: PoolRejection::Exhausted { .. },
                ..
            }) => "no_ip_available",
            Failure::Alloc(AllocError::PoolUnusable { .. }) => "pool_unusable",
            Failure::Alloc(AllocError::RequestedIpNotInPool { .. })
            | Failure::Alloc(AllocError::RequestedIpNotAllowed { .. }) => "requested_ip",
            Failure::Alloc(AllocError::SharingConflict { .. }) => "sharing_conflict",
        }
    }

    /// The `ferrolb.io/AddressAssigned` reason: the metric label's cause in CamelCase.
    fn condition_reason(&self) -> &'static str {
        match self.metric_label() {
            "no_pool" => "NoPoolAvailable",
            "no_ip_available" => "NoIPAvailable",
            "unknown_pool" => "UnknownPool",
            "pool_not_admitted" => "PoolNotAdmitted",
            "pool_unusable" => "PoolUnusable",
            "requested_ip" => "RequestedIPUnavailable",
            "sharing_conflict" => "SharingConflict",
            _ => "InvalidRequest",
        }
    }
}

/// Writes the Service's status when it changes (see [`status::status_patch`]), as the leader.
async fn write_status(
    ctx: &Context,
    api: &Api<Service>,
    key: &ServiceKey,
    base: &Service,
    ingress: Ingress<'_>,
    condition: Option<&status::AddressCondition>,
) -> Result<(), Error> {
    if let Some(patch) = status::status_patch(base, ingress, condition, status::now()) {
        ctx.ensure_leader()?;
        let written = status::send_status(api, key, &patch).await?;
        ctx.remember_write(key, &written);
    }
    Ok(())
}

/// An assignment's one write: the status (addresses and condition) and the pool annotation in
/// a single patch of the status subresource, so that whoever sees the address also sees its pool
/// and a burst costs one round trip per Service. kube-apiserver's Service status strategy keeps
/// metadata changes (it resets only `spec`); should a server drop the annotation, a second
/// patch writes it on the main resource.
async fn write_assignment(
    ctx: &Context,
    api: &Api<Service>,
    key: &ServiceKey,
    service: &Service,
    pool: &str,
    ingress: Ingress<'_>,
    condition: &status::AddressCondition,
) -> Result<(), Error> {
    let annotate = status::allocated_pool(service) != Some(pool);
    let patch = status::status_patch(service, ingress, Some(condition), status::now());
    let Some(patch) = status::with_pool_annotation(patch, annotate.then_some(pool)) else {
        return Ok(());
    };
    ctx.ensure_leader()?;
    let written = status::send_status(api, key, &patch).await?;
    ctx.remember_write(key, &written);
    if annotate && status::allocated_pool(&written) != Some(pool) {
        let written = status::set_pool_annotation(api, key, &written, Some(pool)).await?;
        ctx.remember_write(key, &written);
    }
    Ok(())
}

/// The condition of a Service that cannot get an address yet because no configuration is valid.
fn no_configuration() -> status::AddressCondition {
    status::AddressCondition {
        assigned: false,
        reason: "NoValidConfiguration",
        message: "no valid FerroLB configuration is in force yet (see the ConfigValid conditions \
                  of the configuration objects)"
            .to_string(),
    }
}

fn ips_text(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `IPAllocated` Event's message. A Service that held other addresses (its pool was
/// narrowed or deleted under it, or its request changed) is told which ones it lost: an address
/// change breaks clients that cached the old one, so the Event must say it happened.
fn allocated_message(ips: &[IpAddr], pool: &str, replaced: &[IpAddr]) -> String {
    let mut message = format!("Assigned IP [{}] from pool {pool}", ips_text(ips));
    if !replaced.is_empty() {
        message.push_str(&format!(", replacing [{}]", ips_text(replaced)));
    }
    message
}

fn namespace_labels(ctx: &Context, namespace: &str) -> BTreeMap<String, String> {
    ctx.stores
        .namespaces
        .get(&ObjectRef::new(namespace))
        .and_then(|ns| ns.metadata.labels.clone())
        .unwrap_or_default()
}

/// The reconciler. Waits for the restore pass, so that no new assignment can take an address
/// a Service already holds in its status.
pub async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut restored = ctx.restored.subscribe();
    let _ = restored.wait_for(|done| *done).await;
    let Ok(key) = service_key(&service) else {
        return Ok(Action::await_change());
    };
    let span = info_span!("reconcile", service = %key, ip = tracing::field::Empty);
    let started = Instant::now();
    let result = reconcile_service(&service, &ctx, key)
        .instrument(span)
        .await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_service(
    service: &Service,
    ctx: &Context,
    key: ServiceKey,
) -> Result<Action, Error> {
    if status::is_stale(service, lock(&ctx.written).get(&key).copied()) {
        // Our own write is on its way back through the watch; that event reconciles again.
        return Ok(Action::await_change());
    }
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let Some(config) = ctx.config() else {
        // No valid configuration yet: reconcile_all runs when one arrives.
        if is_handled(service, ctx.options.lb_class.as_deref()) && ctx.is_leader() {
            let condition = no_configuration();
            write_status(ctx, &api, &key, service, Ingress::Keep, Some(&condition)).await?;
        }
        return Ok(Action::await_change());
    };
    let reference = object_reference(service);

    if !is_handled(service, ctx.options.lb_class.as_deref()) {
        let current = status::ingress_ips(service);
        let released = lock(&ctx.allocator).release(&key);
        lock(&ctx.pending).remove(&key);
        lock(&ctx.last_failure).remove(&key);
        ctx.mark_pools_dirty();
        // Only clear addresses we wrote (another implementation may own this Service); our
        // condition goes in any case.
        let ours = !released.is_empty() || status::allocated_pool(service).is_some();
        let ingress = if ours { Ingress::Clear } else { Ingress::Keep };
        write_status(ctx, &api, &key, service, ingress, None).await?;
        if ours {
            ctx.ensure_leader()?;
            status::set_pool_annotation(&api, &key, service, None).await?;
            info!(ips = ?released, "not a LoadBalancer of ours any more: cleared");
            ctx.publish(
                &reference,
                EventType::Normal,
                "ClearAssignment",
                "Release",
                format!(
                    "cleared [{}]: not a LoadBalancer Service handled by FerroLB",
                    ips_text(if released.is_empty() {
                        &current
                    } else {
                        &released
                    })
                ),
            )
            .await;
        }
        if !released.is_empty() {
            ctx.retry_pending();
        }
        return Ok(Action::await_change());
    }

    for name in deprecated_annotations(service) {
        if lock(&ctx.warned).insert((key.clone(), name)) {
            ctx.publish(
                &reference,
                EventType::Warning,
                "DeprecatedAnnotation",
                "Allocate",
                format!(
                    "annotation {name} is deprecated; use ferrolb.io/{}",
                    name.rsplit('/').next().unwrap_or(name)
                ),
            )
            .await;
        }
    }

    let labels = namespace_labels(ctx, &key.namespace);
    let outcome = match AllocRequest::from_service(service, &config, &labels) {
        Ok(request) => lock(&ctx.allocator)
            .assign(&request)
            .map_err(Failure::Alloc),
        Err(error) => {
            lock(&ctx.allocator).release(&key);
            Err(Failure::Request(error))
        }
    };
    ctx.mark_pools_dirty();
    let current = status::ingress_ips(service);
    match outcome {
        Ok(assignment) => {
            tracing::Span::current().record("ip", ips_text(&assignment.ips));
            lock(&ctx.pending).remove(&key);
            lock(&ctx.last_failure).remove(&key);
            let ingress = if current == assignment.ips {
                Ingress::Keep
            } else {
                Ingress::Set(&assignment.ips)
            };
            let condition = status::AddressCondition {
                assigned: true,
                reason: "Assigned",
                message: format!(
                    "assigned [{}] from pool {}",
                    ips_text(&assignment.ips),
                    assignment.pool
                ),
            };
            write_assignment(
                ctx,
                &api,
                &key,
                service,
                &assignment.pool,
                ingress,
                &condition,
            )
            .await?;
            if current != assignment.ips {
                ctx.metrics
                    .allocations
                    .get_or_create(&PoolLabel {
                        pool: assignment.pool.clone(),
                    })
                    .inc();
                info!(ips = %ips_text(&assignment.ips), pool = %assignment.pool, replaced = %ips_text(&current), "assigned");
                ctx.publish(
                    &reference,
                    EventType::Normal,
                    "IPAllocated",
                    "Allocate",
                    allocated_message(&assignment.ips, &assignment.pool, &current),
                )
                .await;
            }
        }
        Err(failure) => {
            lock(&ctx.pending).insert(key.clone());
            let message = failure.to_string();
            let reason = failure.metric_label();
            let condition = status::AddressCondition {
                assigned: false,
                reason: failure.condition_reason(),
                message: message.clone(),
            };
            if !current.is_empty() || status::allocated_pool(service).is_some() {
                write_status(ctx, &api, &key, service, Ingress::Clear, Some(&condition)).await?;
                ctx.ensure_leader()?;
                status::set_pool_annotation(&api, &key, service, None).await?;
                ctx.publish(
                    &reference,
                    EventType::Normal,
                    "ClearAssignment",
                    "Release",
                    format!("cleared [{}]: {message}", ips_text(&current)),
                )
                .await;
                ctx.retry_pending();
            } else {
                write_status(ctx, &api, &key, service, Ingress::Keep, Some(&condition)).await?;
            }
            let failure_now = (reason, message.clone());
            let changed = lock(&ctx.last_failure).insert(key.clone(), failure_now.clone())
                != Some(failure_now);
            if changed {
                warn!(reason = %message, "allocation failed");
                ctx.metrics
                    .allocation_failures
                    .get_or_create(&FailureLabels {
                        reason: reason.to_string(),
                    })
                    .inc();
                ctx.publish(
                    &reference,
                    EventType::Warning,
                    "AllocationFailed",
                    "Allocate",
                    message,
                )
                .await;
            }
        }
    }
    Ok(Action::await_change())
}

/// MetalLB's "reprocess all" on gaining leadership: re-claim every address found in a handled
/// Service's status before any new assignment, oldest Service first, so a genuine conflict
/// (two Services claiming one address they may not share) always goes to the older one; the
/// other gets a `ClearAssignment` Event and a new address from its reconcile. Then sets
/// `/readyz` and never returns.
pub async fn restore(ctx: Arc<Context>) {
    if ctx.services.wait_until_ready().await.is_err() {
        return futures::future::pending().await;
    }
    let mut config_ready = ctx.config_ready.subscribe();
    let _ = config_ready.wait_for(|ready| *ready).await;
    let Some(config) = ctx.config() else {
        return futures::future::pending().await;
    };
    let mut holders: Vec<Arc<Service>> = ctx
        .services
        .state()
        .into_iter()
        .filter(|service| is_handled(service, ctx.options.lb_class.as_deref()))
        .filter(|service| !status::ingress_ips(service).is_empty())
        .collect();
    holders.sort_by(|a, b| {
        let created = |s: &Service| s.metadata.creation_timestamp.clone().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.namespace.cmp(&b.metadata.namespace))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let mut kept = 0usize;
    let mut lost = Vec::new();
    for service in &holders {
        let Ok(key) = service_key(service) else {
            continue;
        };
        let labels = namespace_labels(&ctx, &key.namespace);
        let Ok(request) = AllocRequest::from_service(service, &config, &labels) else {
            continue; // its reconcile reports the problem
        };
        let ips = status::ingress_ips(service);
        match lock(&ctx.allocator).restore(&request, &ips) {
            Ok(_) => kept += 1,
            Err(error) => lost.push((service.clone(), ips, error)),
        }
    }
    ctx.mark_pools_dirty();
    info!(kept, lost = lost.len(), "restored existing assignments");
    ctx.restored.send_replace(true);
    ctx.health.ready.store(true, Ordering::Release);
    for (service, ips, error) in lost {
        warn!(service = ?service.metadata.name, ips = %ips_text(&ips), %error, "could not keep addresses");
        ctx.publish(
            &object_reference(service.as_ref()),
            EventType::Warning,
            "ClearAssignment",
            "Restore",
            format!(
                "could not keep [{}]: {error}; allocating again",
                ips_text(&ips)
            ),
        )
        .await;
    }
    futures::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocated_event_names_the_addresses_it_replaces() {
        let new: Vec<IpAddr> = vec!["192.0.2.9".parse().unwrap()];
        let old: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert_eq!(
            allocated_message(&new, "web", &[]),
            "Assigned IP [192.0.2.9] from pool web"
        );
        assert_eq!(
            allocated_message(&new, "web", &old),
            "Assigned IP [192.0.2.9] from pool web, replacing [192.0.2.1, 2001:db8::1]"
        );
    }
}
