//! Benchmark (ignored by default): time from creating 1 000 Services to all of them having an
//! EXTERNAL-IP, against the real API server, with the `ferrolb-controller` binary; and the
//! controller's peak RSS (VmHWM). Run:
//!
//! ```text
//! cargo test -p ferrolb-controller --test bench_services -- --ignored --nocapture
//! ```
//!
//! `FERROLB_BENCH_SERVICES` overrides the count.

mod common;

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use serde_json::json;

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
    let count: usize = std::env::var("FERROLB_BENCH_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let (control_plane, _stop) = start_control_plane("bench");
    runtime().block_on(async {
        let client = control_plane.client().await.expect("client");
        apply_pool(&client, "bench", json!({"addresses": ["198.51.100.0/24", "192.0.2.0/24", "2001:db8::/64"]})).await;
        create_namespace(&client, "bench").await;
        let log = File::create(control_plane.run_dir.join("bench-controller.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_ferrolb-controller"))
            .env("KUBECONFIG", &control_plane.kubeconfig)
            .env("RUST_LOG", "warn")
            .args(["--identity", "bench", "--metrics-addr", &free_port().to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn controller");
        let pid = child.id();
        let _child = KillOnDrop(child);
        // Wait until it leads and serves (one Service gets an address).
        create_service(&client, "bench", "warmup", json!({})).await;
        wait_for_ips(&client, "bench", "warmup", 1).await;

        let started = Instant::now();
        let names: Vec<String> = (0..count).map(|i| format!("svc-{i:04}")).collect();
        for chunk in names.chunks(50) {
            futures::future::join_all(chunk.iter().map(|name| {
                let client = client.clone();
                // IPv6: the API server's IPv4 Service CIDR (/25) has only 126 ClusterIPs.
                async move { create_service(&client, "bench", name, v6_service()).await }
            }))
            .await;
        }
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
