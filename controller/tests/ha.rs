//! Restart and leader failover against a real kube-apiserver v1.36 + etcd (loopback, no root).
//!
//! * A restarted controller keeps every address (100 Services), even when a new Service was
//!   created while it was down (restore runs before any new assignment).
//! * Two `ferrolb-controller` processes, with the ServiceAccount and RBAC of
//!   `config/rbac/controller.yaml`: after the leader is killed the standby takes the Lease, but
//!   only once the dead leader's Lease has expired, and the new leader serves new Services.
//! * A controller whose Lease is taken stops writing, and serves again once it leads again.
//!
//! These tests assert behaviour; their deadlines are hang guards. The failover time is a
//! benchmark, `failover_time_after_sigkill` (ignored by default, prints the numbers recorded in
//! docs/benchmarks.md):
//!
//! ```text
//! cargo test -p ferrolb-controller --test ha -- --ignored --nocapture
//! ```
//!
//! `FERROLB_BENCH_FAILOVER_ROUNDS` overrides its 10 kills.

mod common;

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use ferrolb_controller::{Options, run};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const LEASE_SECONDS: u64 = 4;

#[test]
fn restart_and_failover() {
    if !prerequisites() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .with_env_filter("info")
        .try_init();
    let (control_plane, _stop) = start_control_plane("ha");
    runtime().block_on(async {
        let client = control_plane.client().await.expect("client");
        apply_pool(&client, "bulk", json!({"addresses": ["198.51.100.0/25"]})).await;
        restart_keeps_every_ip(&client).await;
        lost_lease_stops_writes(&client).await;
        let kubeconfig = controller_kubeconfig(&control_plane).await;
        failover(&client, &kubeconfig, &control_plane.run_dir).await;
    });
}

fn options(identity: &str, lease: &str) -> (Options, std::net::SocketAddr) {
    let mut options = Options::defaults();
    let metrics = free_port();
    options.metrics_addr = metrics;
    options.webhook_addr = "127.0.0.1:0".to_string();
    options.identity = Some(identity.to_string());
    options.lease_name = lease.to_string();
    options.lease_duration = LEASE_SECONDS;
    (options, metrics)
}

async fn addresses(client: &Client, namespace: &str) -> BTreeMap<String, Vec<String>> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    api.list(&Default::default())
        .await
        .expect("list services")
        .items
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), ingress(s)))
        .collect()
}

async fn restart_keeps_every_ip(client: &Client) {
    create_namespace(client, "restart").await;
    let (first, _) = options("restart-1", "restart-lease");
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(run(clients(client), first, shutdown.clone()));
    for chunk in (0..100).collect::<Vec<_>>().chunks(20) {
        futures::future::join_all(chunk.iter().map(|i| async move {
            create_service(client, "restart", &format!("svc-{i:03}"), json!({})).await
        }))
        .await;
    }
    let before = eventually(
        "100 Services with an address",
        Duration::from_secs(60),
        || async {
            let found = addresses(client, "restart").await;
            (found.len() == 100 && found.values().all(|ips| ips.len() == 1)).then_some(found)
        },
    )
    .await;
    let distinct: std::collections::BTreeSet<_> = before.values().collect();
    assert_eq!(distinct.len(), 100, "every Service has its own address");
    shutdown.cancel();
    controller
        .await
        .expect("join")
        .expect("first controller ran cleanly");

    // While no controller runs, a new Service appears: without restore-first it would take the
    // lowest free address, which after a restart is svc-000's.
    create_service(client, "restart", "newcomer", json!({})).await;
    // And a genuine conflict: svc-099 claims svc-000's address in its status. The older Service
    // (svc-000) keeps it; svc-099 gets a ClearAssignment Event and another address.
    let contested = before["svc-000"][0].clone();
    let services: Api<Service> = Api::namespaced(client.clone(), "restart");
    services
        .patch_status(
            "svc-099",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": contested, "ipMode": "VIP"}]}}})),
        )
        .await
        .expect("forge a conflicting status");
    let (second, metrics) = options("restart-2", "restart-lease");
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(run(clients(client), second, shutdown.clone()));
    let newcomer = wait_for_ips(client, "restart", "newcomer", 1).await;
    // svc-099's own old address is free now (its status names another one).
    assert!(
        !before
            .iter()
            .any(|(name, ips)| name != "svc-099" && *ips == newcomer),
        "newcomer took a held address {newcomer:?}: {before:?}"
    );
    let loser = eventually(
        "svc-099 to get another address",
        Duration::from_secs(30),
        || async {
            let ips = ingress(&get_service(client, "restart", "svc-099").await);
            (ips.len() == 1 && ips[0] != contested).then_some(ips)
        },
    )
    .await;
    let notes = wait_for_event(client, "restart", "svc-099", "ClearAssignment").await;
    assert!(notes[0].contains(&contested), "{notes:?}");
    let after = addresses(client, "restart").await;
    for (name, ips) in before.iter().filter(|(name, _)| *name != "svc-099") {
        assert_eq!(after.get(name), Some(ips), "{name} kept its address");
    }
    // Its own old address is free again, so it may get that one back (or the newcomer may have
    // taken it first, depending on reconcile order); never one that another Service holds.
    let held_by_others: std::collections::BTreeSet<_> = before
        .iter()
        .filter(|(name, _)| *name != "svc-099")
        .map(|(_, ips)| ips)
        .collect();
    assert!(
        !held_by_others.contains(&loser),
        "svc-099 took an address another Service holds: {loser:?}"
    );
    assert_ne!(loser, newcomer);
    let cleared = futures::future::join_all(
        before
            .keys()
            .filter(|name| *name != "svc-099")
            .map(|name| events(client, "restart", name, "ClearAssignment")),
    )
    .await;
    assert!(
        cleared.iter().all(Vec::is_empty),
        "no other assignment was cleared"
    );
    assert_eq!(http_get(metrics, "/readyz").await.map(|r| r.0), Some(200));
    shutdown.cancel();
    controller
        .await
        .expect("join")
        .expect("second controller ran cleanly");
}

/// Kills the child processes when the test ends, however it ends.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_replica(
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    identity: &str,
    metrics: std::net::SocketAddr,
) -> Child {
    let lease_seconds = LEASE_SECONDS.to_string();
    let metrics = metrics.to_string();
    spawn_controller(
        kubeconfig,
        &dir.join(format!("{identity}.log")),
        "info",
        &[
            "--identity",
            identity,
            "--lease-name",
            "failover-lease",
            "--lease-duration",
            &lease_seconds,
            "--metrics-addr",
            &metrics,
            // Loopback, any port: two replicas run on this host.
            "--webhook-addr",
            "127.0.0.1:0",
        ],
    )
}

async fn lease_spec(client: &Client) -> Option<LeaseSpec> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), CONFIG_NAMESPACE);
    leases.get("failover-lease").await.ok()?.spec
}

async fn holder(client: &Client) -> Option<String> {
    lease_spec(client).await?.holder_identity
}

/// When the Lease held by the (now dead) holder stops being valid: its last renewal plus its
/// duration, as the Lease says.
async fn lease_expiry(client: &Client) -> Timestamp {
    let spec = lease_spec(client).await.expect("the Lease");
    let renewed = spec.renew_time.expect("a held Lease has a renewTime").0;
    let seconds = spec
        .lease_duration_seconds
        .expect("a held Lease has a duration");
    renewed + SignedDuration::from_secs(seconds.into())
}

/// SIGKILLs the child named `identity` (the Lease is not released).
fn kill(children: &mut Children, identity: &str) {
    let at = children
        .0
        .iter()
        .position(|(id, _)| id == identity)
        .expect("leader child");
    let (_, mut killed) = children.0.remove(at);
    killed.kill().expect("kill leader");
    let _ = killed.wait();
}

async fn failover(client: &Client, kubeconfig: &std::path::Path, dir: &std::path::Path) {
    create_namespace(client, "failover").await;
    let metrics_a = free_port();
    let metrics_b = free_port();
    let mut children = Children(vec![
        (
            "ctl-a".to_string(),
            spawn_replica(kubeconfig, dir, "ctl-a", metrics_a),
        ),
        (
            "ctl-b".to_string(),
            spawn_replica(kubeconfig, dir, "ctl-b", metrics_b),
        ),
    ]);
    let leader = eventually("a Lease holder", Duration::from_secs(30), || async {
        holder(client)
            .await
            .filter(|h| h == "ctl-a" || h == "ctl-b")
    })
    .await;
    create_service(client, "failover", "before", json!({})).await;
    let before = wait_for_ips(client, "failover", "before", 1).await;

    let (standby, leader_metrics, standby_metrics) = if leader == "ctl-a" {
        ("ctl-b", metrics_a, metrics_b)
    } else {
        ("ctl-a", metrics_b, metrics_a)
    };
    let (_, text) = eventually("leader metrics", Duration::from_secs(30), || {
        http_get(leader_metrics, "/metrics")
    })
    .await;
    assert!(text.contains("ferrolb_leader 1"), "{text}");
    let (_, text) = eventually("standby metrics", Duration::from_secs(30), || {
        http_get(standby_metrics, "/metrics")
    })
    .await;
    assert!(text.contains("ferrolb_leader 0"), "{text}");

    // SIGKILL: the Lease is not released, the standby must wait for it to expire.
    kill(&mut children, &leader);
    let expiry = lease_expiry(client).await;
    create_service(client, "failover", "after", json!({})).await;
    let taken = eventually(
        "the standby to take the Lease",
        Duration::from_secs(60),
        || async {
            lease_spec(client)
                .await
                .filter(|spec| spec.holder_identity.as_ref().is_some_and(|h| *h != leader))
        },
    )
    .await;
    assert_eq!(taken.holder_identity.as_deref(), Some(standby));
    // Never two leaders: the standby did not take a Lease that was still valid.
    let acquired = taken
        .acquire_time
        .expect("a taken Lease has an acquireTime")
        .0;
    assert!(
        acquired >= expiry,
        "{standby} took the Lease at {acquired}, before it expired at {expiry}"
    );
    let after = wait_for_ips(client, "failover", "after", 1).await;
    assert_ne!(after, before);
    assert_eq!(
        ingress(&get_service(client, "failover", "before").await),
        before,
        "kept across failover"
    );
    let (_, text) = eventually("new leader metrics", Duration::from_secs(30), || {
        http_get(standby_metrics, "/metrics")
    })
    .await;
    assert!(text.contains("ferrolb_leader 1"), "{text}");
}

/// Another holder takes the Lease: the controller stops writing (a new Service gets nothing),
/// and resumes once the Lease is free again.
async fn lost_lease_stops_writes(client: &Client) {
    create_namespace(client, "steal").await;
    let (options, metrics) = options("steal-1", "steal-lease");
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(run(clients(client), options, shutdown.clone()));
    create_service(client, "steal", "first", json!({})).await;
    wait_for_ips(client, "steal", "first", 1).await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), CONFIG_NAMESPACE);
    let steal = |holder: &str, renewed: k8s_openapi::jiff::Timestamp, seconds: i32| {
        json!({"spec": {"holderIdentity": holder,
                        "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
                        "acquireTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
                        "leaseDurationSeconds": seconds}})
    };
    // The intruder renews like a live replica with the same Lease duration would.
    let intruder = {
        let leases = leases.clone();
        tokio::spawn(async move {
            loop {
                let now = k8s_openapi::jiff::Timestamp::now();
                let _ = leases
                    .patch(
                        "steal-lease",
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(steal("intruder", now, LEASE_SECONDS as i32)),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    eventually(
        "the controller to notice it lost the Lease",
        Duration::from_secs(30),
        || async {
            let (_, text) = http_get(metrics, "/metrics").await?;
            text.contains("ferrolb_leader 0").then_some(())
        },
    )
    .await;
    create_service(client, "steal", "while-stolen", json!({})).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        ingress(&get_service(client, "steal", "while-stolen").await).is_empty(),
        "a controller without the Lease wrote a status"
    );
    intruder.abort();
    let _ = intruder.await;

    // The intruder stops renewing: the Lease expires, the controller leads again and serves.
    wait_for_ips(client, "steal", "while-stolen", 1).await;
    shutdown.cancel();
    controller
        .await
        .expect("join")
        .expect("controller ran cleanly");
}

fn bench_rounds() -> usize {
    std::env::var("FERROLB_BENCH_FAILOVER_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(10)
}

/// One line: `BENCH <what>: n=… min … median … p90 … max …` (median: upper median; p90:
/// nearest rank).
fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len();
    let s = |d: Duration| d.as_secs_f64();
    println!(
        "BENCH {what}: n={n} min {:.3} s, median {:.3} s, p90 {:.3} s, max {:.3} s",
        s(samples[0]),
        s(samples[n / 2]),
        s(samples[(n * 9).div_ceil(10) - 1]),
        s(samples[n - 1])
    );
}

/// Polls `check` every 20 ms until it returns `Some` (finer than [`eventually`], for timing);
/// panics with `what` after `timeout`, a hang guard.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually_every(what, timeout, Duration::from_millis(20), check).await
}

/// Benchmark: leader failover after SIGKILL, two `ferrolb-controller` processes (shipped RBAC,
/// `--lease-duration 4`), `FERROLB_BENCH_FAILOVER_ROUNDS` kills (default 10). Each round waits
/// for a running standby, kills the leader at a varying point of its renewal cycle, creates a
/// Service, and times: the standby holding the Lease, that Service getting an address; also how
/// much of the dead leader's Lease was left at the kill, and how long after its expiry the
/// standby took it (independent of the kill's phase). A fresh standby replaces the killed
/// process. Prints the numbers; never fails on one.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn failover_time_after_sigkill() {
    if !prerequisites() {
        return;
    }
    let rounds = bench_rounds();
    let (control_plane, _stop) = start_control_plane("ha-bench");
    runtime().block_on(async {
        let client = control_plane.client().await.expect("client");
        apply_pool(&client, "bench", json!({"addresses": ["198.51.100.0/25"]})).await;
        create_namespace(&client, "bench").await;
        let kubeconfig = controller_kubeconfig(&control_plane).await;
        let dir = control_plane.run_dir.clone();
        let mut children = Children(Vec::new());
        let mut metrics_of = BTreeMap::new();
        for identity in ["ctl-0", "ctl-1"] {
            let metrics = free_port();
            children.0.push((
                identity.to_string(),
                spawn_replica(&kubeconfig, &dir, identity, metrics),
            ));
            metrics_of.insert(identity.to_string(), metrics);
        }
        let (mut takeover, mut served, mut left, mut after_expiry) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let leader = eventually("a Lease holder", Duration::from_secs(60), || async {
                holder(&client)
                    .await
                    .filter(|h| children.0.iter().any(|(id, _)| id == h))
            })
            .await;
            let standby = children
                .0
                .iter()
                .map(|(id, _)| id.clone())
                .find(|id| *id != leader)
                .expect("a standby");
            let standby_metrics = metrics_of[&standby];
            eventually("the standby to run", Duration::from_secs(60), || async {
                let (_, text) = http_get(standby_metrics, "/metrics").await?;
                text.contains("ferrolb_leader 0").then_some(())
            })
            .await;
            // Spread the kills over the renewal cycle (a renewal every LEASE_SECONDS - 1 s).
            let phase = Duration::from_millis(700 * (round as u64 % 5));
            tokio::time::sleep(phase).await;

            kill(&mut children, &leader);
            let killed_at = Instant::now();
            let killed_wall = Timestamp::now();
            let expiry = lease_expiry(&client).await;
            let name = format!("after-{round}");
            create_service(&client, "bench", &name, json!({})).await;
            let taken = poll(
                "the standby to take the Lease",
                Duration::from_secs(60),
                || {
                    let (client, leader) = (&client, &leader);
                    async move {
                        lease_spec(client)
                            .await
                            .filter(|s| s.holder_identity.as_ref().is_some_and(|h| h != leader))
                    }
                },
            )
            .await;
            takeover.push(killed_at.elapsed());
            poll("the new Service's address", Duration::from_secs(60), || {
                let (client, name) = (&client, &name);
                async move {
                    let ips = ingress(&get_service(client, "bench", name).await);
                    (!ips.is_empty()).then_some(())
                }
            })
            .await;
            served.push(killed_at.elapsed());
            let acquired = taken.acquire_time.expect("acquireTime").0;
            let unsigned = |d: SignedDuration| Duration::try_from(d).unwrap_or_default();
            left.push(unsigned(expiry.duration_since(killed_wall)));
            after_expiry.push(unsigned(acquired.duration_since(expiry)));
            eprintln!(
                "round {round}: {leader} killed, {:?} holds after {:?}, Service served after {:?}",
                taken.holder_identity, takeover[round], served[round]
            );

            let identity = format!("ctl-{}", round + 2);
            let metrics = free_port();
            children.0.push((
                identity.clone(),
                spawn_replica(&kubeconfig, &dir, &identity, metrics),
            ));
            metrics_of.insert(identity, metrics);
        }
        let lease = format!("--lease-duration {LEASE_SECONDS}");
        report(
            &format!("controller failover, SIGKILL to standby holding the Lease ({lease})"),
            takeover,
        );
        report(
            &format!("controller failover, SIGKILL to a new Service's address ({lease})"),
            served,
        );
        report("controller failover, Lease validity left at the kill", left);
        report(
            "controller failover, Lease acquired after the dead leader's expiry",
            after_expiry,
        );
    });
}
