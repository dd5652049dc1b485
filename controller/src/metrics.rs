//! Prometheus metrics (text format on `/metrics`).

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Every metric the controller exports, prefixed `ferrolb_`.
pub struct Metrics {
    registry: Registry,
    /// `ferrolb_addresses_total{pool,family}`: addresses a pool may hand out (clamped to i64).
    pub addresses_total: Family<PoolLabels, Gauge>,
    /// `ferrolb_addresses_in_use{pool,family}`.
    pub addresses_in_use: Family<PoolLabels, Gauge>,
    /// `ferrolb_allocation_failures_total{reason}`.
    pub allocation_failures: Family<FailureLabels, Counter>,
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
        Metrics {
            registry: root,
            addresses_total: metrics_addresses_total,
            addresses_in_use,
            allocation_failures,
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
