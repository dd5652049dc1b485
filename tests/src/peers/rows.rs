//! The measurements, each against a [`Subject`] running in its lab. Every raw sample goes into
//! [`Results`] as it is taken; the summaries are computed by [`super::report`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use super::report::{Results, Sample};
use super::{PeersOptions, Subject, cpu_seconds, memory_kib};
use crate::l2probe::{L2Probe, bracketed_mac};
use crate::netlab::netns;

/// The failover Service's pool (inside the node LAN, so the client's ARP reaches the owner).
const WEB_POOL: &str = "192.0.2.240/28";
/// The burst's pool: IPv6, because the lab's IPv4 ClusterIP range holds only 126 Services.
const BURST_POOL: &str = "2001:db8:b::/112";
/// MetalLB's pool annotation, which FerroLB honours too: both pick the pool the same way.
const POOL_ANNOTATION: &str = "metallb.io/address-pool";
/// How often the failover probe sends a broadcast ARP request.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// Longest a failover may take before the trial counts as failed.
const FAILOVER_WINDOW: Duration = Duration::from_secs(30);
/// API writes in flight when the benchmark itself creates or patches objects.
const IN_FLIGHT: usize = 32;

/// Every row for `subject`, in order.
pub fn measure_all(
    subject: &dyn Subject,
    options: &PeersOptions,
    results: &mut Results,
) -> anyhow::Result<()> {
    let label = subject.kind().label();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let client = runtime.block_on(subject.lab().control_plane().client())?;

    let ip = web_service(subject)?;
    println!("[{label}] web has {ip}");
    for trial in 0..options.link_down_trials {
        let sample = failover_trial(subject, ip, Fault::LinkDown)
            .with_context(|| format!("{label}: link-down trial {trial}"))?;
        println!("[{label}] link-down trial {trial}: {:.0} ms", sample.value);
        results.push(Sample {
            trial: Some(trial),
            ..sample
        });
    }
    for trial in 0..options.kill_trials {
        let sample = failover_trial(subject, ip, Fault::SpeakerKill)
            .with_context(|| format!("{label}: speaker-kill trial {trial}"))?;
        println!(
            "[{label}] speaker-kill trial {trial}: {:.0} ms",
            sample.value
        );
        results.push(Sample {
            trial: Some(trial),
            ..sample
        });
    }

    runtime.block_on(burst(subject, &client, options.services, results))?;
    idle_cpu(subject, options.idle_window, results);
    churn(subject, &runtime, &client, options, results)?;
    Ok(())
}

/// `default/web`: an IPv4 LoadBalancer Service from pool `web`, with a ready endpoint on every
/// node (externalTrafficPolicy Cluster: any node may announce it). Returns its address once
/// exactly one node answers ARP for it.
fn web_service(subject: &dyn Subject) -> anyhow::Result<Ipv4Addr> {
    let lab = subject.lab();
    subject.apply_layer2_pool("web", &[WEB_POOL])?;
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations: {{{POOL_ANNOTATION}: web}}\nspec:\n  type: LoadBalancer\n  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv4]\n  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n"
    );
    for node in lab.netlab().topology.nodes() {
        yaml.push_str(&format!(
            "- addresses: [\"{}\"]\n  nodeName: {}\n  conditions: {{ready: true, serving: true}}\n",
            node.ipv4, node.name
        ));
    }
    super::apply_yaml(lab, "web", &yaml)?;
    let probe = L2Probe::new(lab);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ip = loop {
        if let Some(IpAddr::V4(ip)) = probe.ingress_ips("web").first() {
            break *ip;
        }
        if Instant::now() > deadline {
            bail!("default/web got no address within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    single_answerer(&probe, ip, Duration::from_secs(60))?;
    Ok(ip)
}

/// The one MAC that answers for `ip` (two probes agree), within `timeout`.
fn single_answerer(probe: &L2Probe<'_>, ip: Ipv4Addr, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let macs = probe.arp_macs(ip, 2);
        if macs.len() == 1
            && let Some(mac) = macs.first()
        {
            return Ok(mac.clone());
        }
        if Instant::now() > deadline {
            bail!("not exactly one node answers for {ip} within {timeout:?}: {macs:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The owner's port on the switch goes down (the node is cut off, its processes run on).
    LinkDown,
    /// The owner's speaker gets SIGKILL.
    SpeakerKill,
}

impl Fault {
    fn metric(self) -> &'static str {
        match self {
            Fault::LinkDown => "failover_link_down_ms",
            Fault::SpeakerKill => "failover_speaker_kill_ms",
        }
    }
}

/// One failover: finds the owner of `ip`, fails it, times the first ARP answer from another MAC,
/// then undoes the fault and waits for the cluster to settle.
fn failover_trial(subject: &dyn Subject, ip: Ipv4Addr, fault: Fault) -> anyhow::Result<Sample> {
    let lab = subject.lab();
    let probe = L2Probe::new(lab);
    let owner_mac = single_answerer(&probe, ip, Duration::from_secs(60))?;
    let owner = probe.node_of_mac(&owner_mac);
    let failed_at = Instant::now();
    match fault {
        Fault::LinkDown => lab.netlab().set_port(&owner, false)?,
        Fault::SpeakerKill => {
            let pid = subject
                .speaker_pid(&owner)
                .with_context(|| format!("no speaker pid on {owner}"))?;
            crate::process::signal(pid, libc::SIGKILL);
        }
    }
    let answered = first_answer_from_another(&probe, ip, &owner_mac, failed_at);
    match fault {
        Fault::LinkDown => lab.netlab().set_port(&owner, true)?,
        Fault::SpeakerKill => {
            if let Some(pid) = subject.speaker_pid(&owner) {
                crate::process::wait_dead(&[pid], Duration::from_secs(5));
            }
            subject.restart_speaker(&owner)?;
        }
    }
    let Some((after, new_mac)) = answered else {
        bail!("no other node answered for {ip} within {FAILOVER_WINDOW:?} of {owner}'s failure");
    };
    // Both back, one answerer, and time for the membership to take the node in again.
    single_answerer(&probe, ip, Duration::from_secs(90))?;
    std::thread::sleep(subject.settle());
    Ok(Sample {
        subject: subject.kind().label().to_string(),
        metric: fault.metric().to_string(),
        value: after.as_secs_f64() * 1000.0,
        detail: Some(format!("{owner} -> {}", probe.node_of_mac(&new_mac))),
        ..Sample::default()
    })
}

/// A broadcast ARP request for `ip` from the client every [`PROBE_EVERY`] (each `arping` waits up
/// to a second for its reply, so the resolution is the interval): the time since `since` of the
/// first reply from a MAC other than `old_mac`, and that MAC.
fn first_answer_from_another(
    probe: &L2Probe<'_>,
    ip: Ipv4Addr,
    old_mac: &str,
    since: Instant,
) -> Option<(Duration, String)> {
    let client = probe.client_ns();
    let until = since + FAILOVER_WINDOW;
    let mut running: Vec<Child> = Vec::new();
    let mut next = Instant::now();
    let mut answered = None;
    while answered.is_none() && (Instant::now() < until || !running.is_empty()) {
        if Instant::now() >= next && Instant::now() < until {
            let spawned = netns::exec(&client, "arping")
                .args(["-f", "-b", "-c", "1", "-w", "1", "-I", "eth0"])
                .arg(ip.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            if let Ok(child) = spawned {
                running.push(child);
            }
            next += PROBE_EVERY;
        }
        let mut still = Vec::new();
        for mut child in running.drain(..) {
            if matches!(child.try_wait(), Ok(None)) {
                still.push(child);
                continue;
            }
            let at = since.elapsed();
            let out = child
                .wait_with_output()
                .map(|o| o.stdout)
                .unwrap_or_default();
            let other = String::from_utf8_lossy(&out)
                .lines()
                .filter_map(bracketed_mac)
                .find(|mac| mac != old_mac);
            if answered.is_none()
                && let Some(mac) = other
            {
                answered = Some((at, mac));
            }
        }
        running = still;
        std::thread::sleep(Duration::from_millis(5));
    }
    for mut child in running {
        let _ = child.kill();
        let _ = child.wait();
    }
    answered
}

/// An IPv6 LoadBalancer Service `namespace/name` asking for pool `pool`.
fn service(namespace: &str, name: &str, pool: &str) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": {POOL_ANNOTATION: pool}},
        "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                 "allocateLoadBalancerNodePorts": false,
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }))?)
}

/// A ready IPv6 endpoint on `node` for Service `namespace/name`.
fn endpoint_slice(
    namespace: &str,
    name: &str,
    node: &str,
    address: &str,
) -> anyhow::Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv6",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "nodeName": node,
                       "conditions": {"ready": true, "serving": true}}],
    }))?)
}

async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err).with_context(|| format!("creating namespace {name}")),
    }
}

/// Creates `count` Services `svc-NNNNN` in `namespace` for pool `pool`, [`IN_FLIGHT`] at a
/// time; with `endpoints`, each also gets a ready endpoint on one of the lab's nodes (in turn).
async fn create_services(
    subject: &dyn Subject,
    client: &kube::Client,
    namespace: &str,
    count: usize,
    pool: &str,
    endpoints: bool,
) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let nodes: Vec<(String, String)> = subject
        .lab()
        .netlab()
        .topology
        .nodes()
        .map(|n| (n.name.clone(), n.ipv6.to_string()))
        .collect();
    futures::stream::iter(0..count)
        .map(Ok::<usize, anyhow::Error>)
        .try_for_each_concurrent(IN_FLIGHT, |i| {
            let (services, slices, nodes) = (&services, &slices, &nodes);
            async move {
                let name = format!("svc-{i:05}");
                services
                    .create(&PostParams::default(), &service(namespace, &name, pool)?)
                    .await
                    .with_context(|| format!("creating Service {namespace}/{name}"))?;
                if endpoints && let Some((node, address)) = nodes.get(i % nodes.len().max(1)) {
                    slices
                        .create(
                            &PostParams::default(),
                            &endpoint_slice(namespace, &name, node, address)?,
                        )
                        .await
                        .with_context(|| {
                            format!("creating EndpointSlice for {namespace}/{name}")
                        })?;
                }
                Ok(())
            }
        })
        .await
}

/// Waits (watching, not polling) until `count` Services in `namespace` have an address.
async fn all_assigned(
    client: &kube::Client,
    namespace: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let mut assigned: BTreeSet<String> = BTreeSet::new();
    let has_address = |service: &Service| {
        service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|ingress| !ingress.is_empty())
    };
    let watch = async {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = events.try_next().await? {
            match event {
                watcher::Event::Apply(service) | watcher::Event::InitApply(service) => {
                    let name = service.metadata.name.clone().unwrap_or_default();
                    if has_address(&service) {
                        assigned.insert(name);
                    } else {
                        assigned.remove(&name);
                    }
                }
                watcher::Event::Delete(service) => {
                    assigned.remove(&service.metadata.name.clone().unwrap_or_default());
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
            if assigned.len() >= count {
                return Ok::<(), anyhow::Error>(());
            }
        }
        bail!("the watch of {namespace} ended")
    };
    tokio::time::timeout(timeout, watch)
        .await
        .with_context(|| format!("{count} Services in {namespace} assigned within {timeout:?}"))?
}

/// The Pending burst: `count` Services (each with a ready endpoint) for pool `burst`, which does
/// not exist yet; then the pool is created, and the time until every one has an address. Then
/// the floor, RSS at `count` and the controller's peak.
async fn burst(
    subject: &dyn Subject,
    client: &kube::Client,
    count: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let label = subject.kind().label();
    let push = |results: &mut Results, metric: &str, value: f64, detail: Option<String>| {
        results.push(Sample {
            subject: label.to_string(),
            metric: metric.to_string(),
            value,
            detail,
            ..Sample::default()
        });
    };
    create_namespace(client, "burst").await?;
    create_services(subject, client, "burst", count, "burst", true).await?;
    // Every Service is Pending: give the controller time to have seen them all.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let controller = subject.controller_pid().context("no controller pid")?;
    if let Some(kib) = memory_kib(controller, "VmRSS") {
        push(results, "controller_rss_pending_kib", kib as f64, None);
    }
    let started = Instant::now();
    subject.apply_layer2_pool("burst", &[BURST_POOL])?;
    all_assigned(client, "burst", count, Duration::from_secs(600)).await?;
    let assigned = started.elapsed().as_secs_f64();
    println!("[{label}] burst of {count}: all assigned in {assigned:.2} s");
    push(
        results,
        "burst_all_assigned_s",
        assigned,
        Some(format!("{count} Services")),
    );

    // The speakers announce them all: let them catch up before reading their memory.
    tokio::time::sleep(Duration::from_secs(15)).await;
    if let Some(kib) = memory_kib(controller, "VmRSS") {
        push(
            results,
            "controller_rss_kib",
            kib as f64,
            Some(format!("{count} Services")),
        );
    }
    if let Some(kib) = memory_kib(controller, "VmHWM") {
        push(results, "controller_peak_rss_kib", kib as f64, None);
    }
    // Heap and stacks, against the mapped files (the binary's own pages count in VmRSS too).
    if let Some(kib) = memory_kib(controller, "RssAnon") {
        push(results, "controller_rss_anon_kib", kib as f64, None);
    }
    for node in subject.lab().netlab().topology.nodes() {
        let Some(pid) = subject.speaker_pid(&node.name) else {
            continue;
        };
        for (field, metric) in [
            ("VmRSS", "speaker_rss_kib"),
            ("RssAnon", "speaker_rss_anon_kib"),
        ] {
            if let Some(kib) = memory_kib(pid, field) {
                push(results, metric, kib as f64, Some(node.name.clone()));
            }
        }
    }

    let floor = status_patch_floor(client, count).await?;
    println!("[{label}] floor: {count} status patches in {floor:.2} s ({IN_FLIGHT} in flight)");
    push(
        results,
        "floor_status_patches_s",
        floor,
        Some(format!("{count} patches, {IN_FLIGHT} in flight")),
    );
    Ok(())
}

/// The API server's own rate: `count` Service status patches from a plain client, [`IN_FLIGHT`]
/// in flight, on Services of another loadBalancerClass (no controller touches them). Seconds.
async fn status_patch_floor(client: &kube::Client, count: usize) -> anyhow::Result<f64> {
    create_namespace(client, "floor").await?;
    let api: Api<Service> = Api::namespaced(client.clone(), "floor");
    futures::stream::iter(0..count)
        .map(Ok::<usize, anyhow::Error>)
        .try_for_each_concurrent(IN_FLIGHT, |i| {
            let api = &api;
            async move {
                let mut service: serde_json::Value =
                    serde_json::to_value(service("floor", &format!("svc-{i:05}"), "none")?)?;
                service["spec"]["loadBalancerClass"] = json!("example.com/other");
                let service: Service = serde_json::from_value(service)?;
                api.create(&PostParams::default(), &service).await?;
                Ok(())
            }
        })
        .await?;
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(Ok::<usize, anyhow::Error>)
        .try_for_each_concurrent(IN_FLIGHT, |i| {
            let api = &api;
            async move {
                let patch = json!({"status": {"loadBalancer": {"ingress": [
                    {"ip": format!("2001:db8:f::{:x}", i + 1), "ipMode": "VIP"}]}}});
                api.patch_status(
                    &format!("svc-{i:05}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                Ok(())
            }
        })
        .await?;
    let floor = started.elapsed().as_secs_f64();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .context("deleting the floor's Services")?;
    Ok(floor)
}

/// Speaker (and controller) CPU while nothing changes, with the burst's Services announced: the
/// share of one core over `window`.
fn idle_cpu(subject: &dyn Subject, window: Duration, results: &mut Results) {
    let label = subject.kind().label();
    let mut pids: Vec<(String, String, i32)> = Vec::new();
    for node in subject.lab().netlab().topology.nodes() {
        if let Some(pid) = subject.speaker_pid(&node.name) {
            pids.push(("speaker_idle_cpu_percent".into(), node.name.clone(), pid));
        }
    }
    if let Some(pid) = subject.controller_pid() {
        pids.push((
            "controller_idle_cpu_percent".into(),
            "controller".into(),
            pid,
        ));
    }
    let before: Vec<Option<f64>> = pids.iter().map(|(_, _, pid)| cpu_seconds(*pid)).collect();
    let started = Instant::now();
    std::thread::sleep(window);
    let elapsed = started.elapsed().as_secs_f64();
    for ((metric, what, pid), before) in pids.iter().zip(before) {
        if let (Some(before), Some(after)) = (before, cpu_seconds(*pid)) {
            let percent = 100.0 * (after - before) / elapsed;
            println!("[{label}] idle CPU {what}: {percent:.2} %");
            results.push(Sample {
                subject: label.to_string(),
                metric: metric.clone(),
                value: percent,
                detail: Some(what.clone()),
                ..Sample::default()
            });
        }
    }
}

/// Rounds of create-N/delete-N Services (pool `burst`, no endpoints) while the controller's and
/// node1's speaker's RSS are sampled every 500 ms.
fn churn(
    subject: &dyn Subject,
    runtime: &tokio::runtime::Runtime,
    client: &kube::Client,
    options: &PeersOptions,
    results: &mut Results,
) -> anyhow::Result<()> {
    let label = subject.kind().label();
    runtime.block_on(create_namespace(client, "churn"))?;
    let api: Api<Service> = Api::namespaced(client.clone(), "churn");
    let stop = AtomicBool::new(false);
    let samples: Mutex<Vec<Sample>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let sample_rss = || {
        while !stop.load(Ordering::Relaxed) {
            let at = started.elapsed().as_secs_f64();
            let processes = [
                ("controller", subject.controller_pid()),
                ("speaker-node1", subject.speaker_pid("node1")),
            ];
            for (process, pid) in processes {
                if let Some(kib) = pid.and_then(|pid| memory_kib(pid, "VmRSS"))
                    && let Ok(mut samples) = samples.lock()
                {
                    samples.push(Sample {
                        subject: label.to_string(),
                        metric: "churn_rss_kib".to_string(),
                        value: kib as f64,
                        detail: Some(process.to_string()),
                        t_s: Some(at),
                        ..Sample::default()
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let rounds = async {
        for round in 0..options.churn_rounds {
            let round_started = Instant::now();
            create_services(subject, client, "churn", options.services, "burst", false).await?;
            all_assigned(client, "churn", options.services, Duration::from_secs(600)).await?;
            api.delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
                .context("deleting the churn Services")?;
            // Gone, not just marked: the next round creates the same names.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !api
                .list(&ListParams::default().limit(1))
                .await?
                .items
                .is_empty()
            {
                if Instant::now() > deadline {
                    bail!("churn Services not gone within 120 s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            println!(
                "[{label}] churn round {round}: {:.1} s",
                round_started.elapsed().as_secs_f64()
            );
        }
        // A quiet tail, so the plot shows where memory settles.
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<(), anyhow::Error>(())
    };
    let outcome = std::thread::scope(|scope| {
        scope.spawn(sample_rss);
        let outcome = runtime.block_on(rounds);
        stop.store(true, Ordering::Relaxed);
        outcome
    });
    for sample in samples.into_inner().unwrap_or_default() {
        results.push(sample);
    }
    outcome
}
