//! Prometheus metrics (text format on `/metrics`).

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::allocator::PoolStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

/// Reconcile durations: most take well under a millisecond (no write), a write is a few
/// milliseconds on a LAN, and a hung API server shows up in the top buckets (5 s write timeout).
const RECONCILE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the controller exports, prefixed `ferrolb_`.
pub struct Metrics {
    registry: Registry,
    /// `ferrolb_addresses_total{pool,family}`: addresses a pool may hand out (clamped to i64).
    pub addresses_total: Family<PoolLabels, Gauge>,
    /// `ferrolb_addresses_in_use{pool,family}`.
    pub addresses_in_use: Family<PoolLabels, Gauge>,
    /// `ferrolb_allocation_failures_total{reason}`.
    pub allocation_failures: Family<FailureLabels, Counter>,
    /// `ferrolb_allocations_total{pool}`: a Service got addresses it did not hold.
    pub allocations: Family<PoolLabel, Counter>,
    /// `ferrolb_services_pending{reason}`: handled Services without an address.
    pub services_pending: Family<FailureLabels, Gauge>,
    /// `ferrolb_reconcile_duration_seconds`: one Service reconcile, writes included.
    pub reconcile_duration: Histogram,
    /// `ferrolb_reconcile_errors_total{kind}`: reconciles that failed and are retried.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// `ferrolb_config_loaded`: 1 once a valid configuration is in force.
    pub config_loaded: Gauge,
    /// `ferrolb_config_stale`: 1 while the newest configuration is invalid (the last valid one
    /// stays in force).
    pub config_stale: Gauge,
    /// `ferrolb_leader`: 1 while this replica holds the Lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// u128 counts as a gauge value.
pub fn clamp_i64(value: u128) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn new() -> Metrics {
        // The root holds the unprefixed process_* metrics; ours are under `ferrolb_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(ferrolb_crds::process_metrics::ProcessCollector));
        let registry = root.sub_registry_with_prefix("ferrolb");
        let metrics_addresses_total = Family::<PoolLabels, Gauge>::default();
        let addresses_in_use = Family::<PoolLabels, Gauge>::default();
        let allocation_failures = Family::<FailureLabels, Counter>::default();
        let allocations = Family::<PoolLabel, Counter>::default();
        let services_pending = Family::<FailureLabels, Gauge>::default();
        let reconcile_duration = Histogram::new(RECONCILE_BUCKETS);
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let config_loaded = Gauge::default();
        let config_stale = Gauge::default();
        let leader = Gauge::default();
        registry.register(
            "addresses_total",
            "Addresses an address pool may hand out, by family",
            metrics_addresses_total.clone(),
        );
        registry.register(
            "addresses_in_use",
            "Addresses of an address pool held by at least one Service, by family",
            addresses_in_use.clone(),
        );
        registry.register(
            "allocation_failures",
            "Failed allocations, by reason",
            allocation_failures.clone(),
        );
        registry.register(
            "allocations",
            "Services that got addresses they did not hold, by pool",
            allocations.clone(),
        );
        registry.register(
            "services_pending",
            "LoadBalancer Services handled by FerroLB that have no address, by reason",
            services_pending.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one Service reconcile took, its API writes included",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Service reconciles that failed and are retried, by kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "config_loaded",
            "1 when a valid configuration is loaded",
            config_loaded.clone(),
        );
        registry.register(
            "config_stale",
            "1 when the newest configuration is invalid and the last valid one is still used",
            config_stale.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica is the leader",
            leader.clone(),
        );
        // Known label values exist from the start, so rate() and increase() see the first one.
        for kind in ["kube", "not_leader"] {
            drop(reconcile_errors.get_or_create(&ErrorLabels {
                kind: kind.to_string(),
            }));
        }
        Metrics {
            registry: root,
            addresses_total: metrics_addresses_total,
            addresses_in_use,
            allocation_failures,
            allocations,
            services_pending,
            reconcile_duration,
            reconcile_errors,
            config_loaded,
            config_stale,
            leader,
        }
    }

    /// Replaces the per-pool gauges (pools that disappeared lose their series).
    pub fn set_pool_stats(&self, stats: &BTreeMap<String, PoolStats>) {
        self.addresses_total.clear();
        self.addresses_in_use.clear();
        for (pool, stats) in stats {
            for (family, counts) in [("IPv4", stats.v4), ("IPv6", stats.v6)] {
                let labels = PoolLabels {
                    pool: pool.clone(),
                    family: family.to_string(),
                };
                self.addresses_total
                    .get_or_create(&labels)
                    .set(clamp_i64(counts.total));
                self.addresses_in_use
                    .get_or_create(&labels)
                    .set(clamp_i64(counts.in_use));
            }
        }
    }

    /// Replaces the pending counts (reasons no Service has any more lose their series).
    pub fn set_pending(&self, by_reason: &BTreeMap<&str, i64>) {
        self.services_pending.clear();
        for (reason, count) in by_reason {
            self.services_pending
                .get_or_create(&FailureLabels {
                    reason: reason.to_string(),
                })
                .set(*count);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use ferrolb_crds::metrics_doc;

    #[test]
    fn operations_page_documents_every_metric() {
        let page = include_str!("../../docs/operations.md");
        let mut documented = metrics_doc::documented(
            page,
            "### Controller (prefix `ferrolb_`, `controller/src/metrics.rs`)",
        );
        documented.extend(metrics_doc::documented(
            page,
            "### Both binaries: process metrics (`crds/src/process_metrics.rs`)",
        ));
        // Families without a sample are not encoded: give each one a sample.
        let metrics = Metrics::new();
        let pool = PoolLabels {
            pool: "p".to_string(),
            family: "IPv4".to_string(),
        };
        let reason = FailureLabels {
            reason: "no_pool".to_string(),
        };
        metrics.addresses_total.get_or_create(&pool).set(1);
        metrics.addresses_in_use.get_or_create(&pool).set(1);
        metrics.allocation_failures.get_or_create(&reason).inc();
        metrics
            .allocations
            .get_or_create(&PoolLabel {
                pool: "p".to_string(),
            })
            .inc();
        metrics.services_pending.get_or_create(&reason).set(1);
        metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: "kube".to_string(),
            })
            .inc();
        let exported = metrics_doc::exported(&metrics.encode());
        // A family registered but not given a sample above would slip through: count them.
        let registered = include_str!("metrics.rs")
            .matches(concat!("registry", ".register("))
            .count();
        let ours = exported.keys().filter(|name| name.starts_with("ferrolb_"));
        assert_eq!(ours.count(), registered, "give every family a sample above");
        assert_eq!(
            documented, exported,
            "docs/operations.md's controller and process tables must list exactly what the \
             controller exports, with the same types"
        );
    }

    use super::*;
    use crate::allocator::FamilyStats;

    #[test]
    fn pool_gauges_are_replaced_and_clamped() {
        let metrics = Metrics::new();
        let mut stats = BTreeMap::new();
        stats.insert(
            "big".to_string(),
            PoolStats {
                v4: FamilyStats {
                    total: 254,
                    in_use: 3,
                },
                v6: FamilyStats {
                    total: u128::MAX,
                    in_use: 1,
                },
            },
        );
        metrics.set_pool_stats(&stats);
        metrics.config_stale.set(1);
        let text = metrics.encode();
        assert!(
            text.contains("ferrolb_addresses_total{pool=\"big\",family=\"IPv4\"} 254"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "ferrolb_addresses_total{{pool=\"big\",family=\"IPv6\"}} {}",
                i64::MAX
            )),
            "{text}"
        );
        assert!(
            text.contains("ferrolb_addresses_in_use{pool=\"big\",family=\"IPv4\"} 3"),
            "{text}"
        );
        assert!(text.contains("ferrolb_config_stale 1"), "{text}");
        metrics.set_pool_stats(&BTreeMap::new());
        assert!(!metrics.encode().contains("pool=\"big\""));
    }
}
