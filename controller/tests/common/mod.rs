//! Shared helpers of the controller's end-to-end tests: a real kube-apiserver + etcd (loopback,
//! no root), objects from JSON, polling.

#![allow(dead_code)]

use std::fs;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrolb_crds::v1beta1::IPAddressPool;
use ferrolb_tests::controlplane::{self, ControlPlane, ControlPlaneConfig};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub const CONFIG_NAMESPACE: &str = "ferrolb-system";

/// Whether the control plane binaries exist; without them: skip (say why), or FAIL under CI.
pub fn prerequisites() -> bool {
    if let Err(missing) = controlplane::binaries() {
        assert!(std::env::var_os("CI").is_none(), "CI is set and {missing}");
        eprintln!("SKIP: {missing}");
        return false;
    }
    true
}

/// Stops the control plane even when an assertion fails half-way; removes its run directory
/// (etcd data, logs) when the test passed, keeps it for inspection when it failed.
pub struct StopOnDrop(pub PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = controlplane::stop(&self.0);
        if std::thread::panicking() {
            eprintln!("control plane logs kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh loopback control plane with the FerroLB CRDs and the config namespace.
pub fn start_control_plane(name: &str) -> (ControlPlane, StopOnDrop) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("controller-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let config = ControlPlaneConfig::loopback(&dir).expect("loopback config");
    let control_plane = ControlPlane::start(config).expect("control plane starts");
    let guard = StopOnDrop(control_plane.run_dir.clone());
    control_plane
        .install_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crd"))
        .expect("CRDs install");
    control_plane
        .create_namespace(CONFIG_NAMESPACE)
        .expect("config namespace");
    (control_plane, guard)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_every(what, timeout, Duration::from_millis(200), check).await
}

/// [`eventually`], polling every `interval`.
pub async fn eventually_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(interval).await;
    }
}

pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// Creates or replaces (server-side apply) an IPAddressPool in the config namespace.
pub async fn apply_pool(client: &Client, name: &str, spec: serde_json::Value) {
    let api: Api<IPAddressPool> = Api::namespaced(client.clone(), CONFIG_NAMESPACE);
    let pool = json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": name},
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&pool),
    )
    .await
    .expect("apply pool");
}

/// A LoadBalancer Service on port 80 with `extra` merged into it.
pub fn service_json(name: &str, extra: serde_json::Value) -> Service {
    let mut base = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"port": 80, "protocol": "TCP"}]},
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("service")
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

pub async fn create_service(
    client: &Client,
    namespace: &str,
    name: &str,
    extra: serde_json::Value,
) {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &service_json(name, extra))
        .await
        .unwrap_or_else(|e| panic!("create service {namespace}/{name}: {e}"));
}

pub async fn delete_service(client: &Client, namespace: &str, name: &str) {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete service");
}

pub async fn get_service(client: &Client, namespace: &str, name: &str) -> Service {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    api.get(name).await.expect("get service")
}

/// `status.loadBalancer.ingress[].ip`.
pub fn ingress(service: &Service) -> Vec<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| list.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

/// Waits until the Service has exactly `count` ingress addresses and returns them.
pub async fn wait_for_ips(
    client: &Client,
    namespace: &str,
    name: &str,
    count: usize,
) -> Vec<String> {
    eventually(
        &format!("{namespace}/{name} to have {count} address(es)"),
        Duration::from_secs(30),
        || async {
            let ips = ingress(&get_service(client, namespace, name).await);
            (ips.len() == count).then_some(ips)
        },
    )
    .await
}

/// Events about `name` in `namespace` with `reason`: their notes.
pub async fn events(client: &Client, namespace: &str, name: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

/// Waits for at least one Event and returns the notes.
pub async fn wait_for_event(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
) -> Vec<String> {
    eventually(
        &format!("a {reason} Event on {namespace}/{name}"),
        Duration::from_secs(30),
        || async {
            let found = events(client, namespace, name, reason).await;
            (!found.is_empty()).then_some(found)
        },
    )
    .await
}

pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Kills a child process when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The controller's clients for an in-process run: one client serves as both (the test's own
/// API server answers).
pub fn clients(client: &kube::Client) -> ferrolb_crds::runtime::ApiClients {
    ferrolb_crds::runtime::ApiClients {
        watch: client.clone(),
        write: client.clone(),
    }
}

/// The processes run with the shipped RBAC (config/rbac/controller.yaml), not as admin: applies
/// it and returns a kubeconfig of the controller's ServiceAccount.
pub async fn controller_kubeconfig(
    control_plane: &ferrolb_tests::controlplane::ControlPlane,
) -> std::path::PathBuf {
    control_plane
        .kubectl_output([
            "apply",
            "-f",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../config/rbac/controller.yaml"
            ),
        ])
        .expect("apply controller RBAC");
    control_plane
        .mint_service_account_kubeconfig(
            CONFIG_NAMESPACE,
            "ferrolb-controller",
            &control_plane.run_dir.join("controller.kubeconfig"),
        )
        .await
        .expect("service account kubeconfig")
}

/// Starts the `ferrolb-controller` binary with `kubeconfig`, `RUST_LOG=rust_log`, no downward-API
/// variables (the defaults: namespace ferrolb-system, identity from the flags), stderr into `log`
/// and `args` after its flags.
pub fn spawn_controller(
    kubeconfig: &Path,
    log: &Path,
    rust_log: &str,
    args: &[&str],
) -> std::process::Child {
    let log = fs::File::create(log).expect("controller log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_ferrolb-controller"))
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", rust_log)
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn ferrolb-controller")
}
