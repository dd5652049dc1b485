//! Benchmark (ignored by default): time from creating 1 000 Services to all of them having an
//! EXTERNAL-IP, against the real API server, with the `ferrolb-controller` binary; and the
//! controller's peak RSS (VmHWM). Run:
//!
//! ```text
//! cargo test -p ferrolb-controller --test bench_services -- --ignored --nocapture
//! ```
//!
//! `FERROLB_BENCH_SERVICES` overrides the count.
//!
//! `pending_burst_to_external_ip` is issue #15's row: N Services created with no pool at all
//! (all Pending), then the pool is created, and the time until every one has an address. In the
//! same run it measures the floor: the same API server's rate for Service status patches from a
//! plain client with `FLOOR_IN_FLIGHT` patches in flight.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use serde_json::json;

/// `FERROLB_BENCH_SERVICES`, or 1 000.
fn bench_count() -> usize {
    std::env::var("FERROLB_BENCH_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

fn v6_service() -> serde_json::Value {
    json!({"spec": {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                    "allocateLoadBalancerNodePorts": false}})
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// User + system CPU seconds of `pid` (clock ticks assumed 100 Hz, as on Linux x86-64/arm64).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn thousand_services_to_external_ip() {
    if !prerequisites() {
        return;
    }
    let count = bench_count();
    let (control_plane, _stop) = start_control_plane("bench");
    runtime().block_on(async {
        let client = control_plane.client().await.expect("client");
        apply_pool(&client, "bench", json!({"addresses": ["198.51.100.0/24", "192.0.2.0/24", "2001:db8::/64"]})).await;
        create_namespace(&client, "bench").await;
        let child = spawn_controller(
            &control_plane.kubeconfig,
            &control_plane.run_dir.join("bench-controller.log"),
            "warn",
            &["--identity", "bench", "--metrics-addr", &free_port().to_string(), "--webhook-addr", "127.0.0.1:0"],
        );
        let pid = child.id();
        let _child = KillOnDrop(child);
        // Wait until it leads and serves (one Service gets an address).
        create_service(&client, "bench", "warmup", json!({})).await;
        wait_for_ips(&client, "bench", "warmup", 1).await;

        let started = Instant::now();
        let names: Vec<String> = (0..count).map(|i| format!("svc-{i:04}")).collect();
        create_all(&client, "bench", &names, v6_service()).await;
        let created = started.elapsed();
        let api: Api<Service> = Api::namespaced(client.clone(), "bench");
        eventually("every Service to have an address", Duration::from_secs(600), || async {
            let list = api.list(&Default::default()).await.ok()?;
            let done = list.items.iter().filter(|s| !ingress(s).is_empty()).count();
            (done == count + 1).then_some(())
        })
        .await;
        let all_ips = started.elapsed();
        let hwm = vm_hwm_kib(pid);
        let cpu = cpu_seconds(pid);
        println!(
            "BENCH services={count} created_in={created:?} all_external_ip_in={all_ips:?} controller_VmHWM_KiB={hwm:?} controller_cpu_s={cpu:?}"
        );
    });
}

/// Patches in flight for the floor measurement.
const FLOOR_IN_FLIGHT: usize = 32;

/// Creates `names` in `namespace`, 50 at a time.
/// Creates `names` in `namespace` with `extra` merged in, 50 at a time. (IPv6 Services: the
/// API server's IPv4 Service CIDR (/25) has only 126 ClusterIPs.)
async fn create_all(
    client: &kube::Client,
    namespace: &str,
    names: &[String],
    extra: serde_json::Value,
) {
    for chunk in names.chunks(50) {
        futures::future::join_all(chunk.iter().map(|name| {
            let client = client.clone();
            let extra = extra.clone();
            async move { create_service(&client, namespace, name, extra).await }
        }))
        .await;
    }
}

async fn count_with_address(api: &Api<Service>) -> Option<usize> {
    let list = api.list(&Default::default()).await.ok()?;
    Some(list.items.iter().filter(|s| !ingress(s).is_empty()).count())
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn pending_burst_to_external_ip() {
    use futures::StreamExt;
    use kube::api::{Patch, PatchParams};

    if !prerequisites() {
        return;
    }
    let count = bench_count();
    let (control_plane, _stop) = start_control_plane("burst");
    runtime().block_on(async {
        let client = control_plane.client().await.expect("client");

        // The floor: the API server's own rate for status patches from a plain client.
        create_namespace(&client, "floor").await;
        let names: Vec<String> = (0..count).map(|i| format!("svc-{i:05}")).collect();
        // Another class: the controller started later must leave these alone.
        let other_class = json!({"spec": {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
            "allocateLoadBalancerNodePorts": false, "loadBalancerClass": "example.com/other"}});
        create_all(&client, "floor", &names, other_class).await;
        let floor_api: Api<Service> = Api::namespaced(client.clone(), "floor");
        let started = Instant::now();
        futures::stream::iter(names.iter().enumerate())
            .for_each_concurrent(FLOOR_IN_FLIGHT, |(i, name)| {
                let api = floor_api.clone();
                async move {
                    let ip = format!("2001:db8:f::{:x}", i + 1);
                    let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
                    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("status patch");
                }
            })
            .await;
        let floor = started.elapsed();

        // The controller, up and leading, with nothing to do yet.
        create_namespace(&client, "burst").await;
        let metrics = free_port();
        let child = spawn_controller(
            &control_plane.kubeconfig,
            &control_plane.run_dir.join("burst-controller.log"),
            "warn",
            &["--identity", "burst", "--metrics-addr", &metrics.to_string(), "--webhook-addr", "127.0.0.1:0"],
        );
        let pid = child.id();
        let _child = KillOnDrop(child);
        create_all(&client, "burst", &names, v6_service()).await;
        // Every Service is Pending (no pool): wait until the controller has seen them all.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss_before = vm_rss_kib(pid);
        let cpu_before = cpu_seconds(pid);
        let api: Api<Service> = Api::namespaced(client.clone(), "burst");
        assert_eq!(count_with_address(&api).await, Some(0));

        let started = Instant::now();
        apply_pool(&client, "burst", json!({"addresses": ["2001:db8:b::/112"]})).await;
        eventually_every(
            "every Service to have an address",
            Duration::from_secs(600),
            Duration::from_millis(50),
            || async { (count_with_address(&api).await? == count).then_some(()) },
        )
        .await;
        let assigned = started.elapsed();
        let cpu = cpu_seconds(pid).zip(cpu_before).map(|(a, b)| a - b);
        if let Some((_, text)) = http_get(metrics, "/metrics").await {
            for line in text.lines().filter(|l| {
                l.starts_with("ferrolb_reconcile") || l.starts_with("ferrolb_allocation")
            }) {
                println!("  {line}");
            }
        }
        println!(
            "BENCH burst services={count} all_assigned_in={assigned:?} \
             floor_status_patches_in={floor:?} (in flight {FLOOR_IN_FLIGHT}) \
             ratio={:.2} controller_cpu_s={cpu:?} rss_before_KiB={rss_before:?} \
             rss_after_KiB={:?} VmHWM_KiB={:?}",
            assigned.as_secs_f64() / floor.as_secs_f64(),
            vm_rss_kib(pid),
            vm_hwm_kib(pid),
        );
    });
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
