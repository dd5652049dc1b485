//! IPAddressPool status counts, the per-pool metrics and the pending counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrolb_crds::v1beta1::IPAddressPool;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::{Context, lock};
use crate::metrics::clamp_i64;

/// How often the counts are written at most.
const INTERVAL: Duration = Duration::from_millis(500);

/// Writes `assignedIPv4/IPv6` and `availableIPv4/IPv6` (clamped to i64) on pools whose counts
/// changed, and refreshes the metrics. Never returns.
pub async fn maintain_status(ctx: Arc<Context>) {
    let api: Api<IPAddressPool> = Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    loop {
        tokio::time::sleep(INTERVAL).await;
        if !ctx.pools_dirty.swap(false, Ordering::AcqRel) {
            continue;
        }
        let stats = lock(&ctx.allocator).stats();
        ctx.metrics.set_pool_stats(&stats);
        let mut pending = BTreeMap::new();
        for (reason, _) in lock(&ctx.last_failure).values() {
            *pending.entry(*reason).or_insert(0) += 1;
        }
        ctx.metrics.set_pending(&pending);
        for pool in ctx.stores.pools.state() {
            let name = pool.name_any();
            let Some(counts) = stats.get(&name) else {
                continue; // not part of the configuration in force
            };
            let want = [
                clamp_i64(counts.v4.in_use),
                clamp_i64(counts.v6.in_use),
                clamp_i64(counts.v4.available()),
                clamp_i64(counts.v6.available()),
            ];
            let have = pool.status.as_ref().map(|s| {
                [
                    s.assigned_ipv4,
                    s.assigned_ipv6,
                    s.available_ipv4,
                    s.available_ipv6,
                ]
            });
            if have == Some(want) || !ctx.is_leader() {
                continue;
            }
            let patch = json!({"status": {
                "assignedIPv4": want[0],
                "assignedIPv6": want[1],
                "availableIPv4": want[2],
                "availableIPv6": want[3],
            }});
            if let Err(error) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                warn!(%error, pool = %name, "writing the pool status failed");
                ctx.mark_pools_dirty();
            }
        }
    }
}
