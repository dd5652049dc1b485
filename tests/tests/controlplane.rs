//! The test control plane against itself: real etcd + kube-apiserver v1.36, real TLS, RBAC,
//! TokenRequest, dual-stack Services, Nodes without a kubelet, CRD installation.
//!
//! Needs the binaries from `cargo xtask controlplane build`: without them the tests skip (and say
//! why), or FAIL when `CI` is set. `loopback_control_plane` needs no root;
//! `control_plane_in_netns` needs root and skips without it (fails under CI).

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_tests::controlplane::{
    self, ControlPlane, ControlPlaneConfig, FERROLB_NAMESPACE, NodeSpec,
};
use ferrolb_tests::harness::{StopControlPlane, require};
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{ListParams, PostParams};

/// Whether to run; panics under CI when the environment is missing.
fn prerequisites(needs_root: bool) -> bool {
    if !require(
        controlplane::binaries()
            .map(drop)
            .map_err(|e| e.to_string()),
    ) {
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    !needs_root
        || require(if root {
            Ok(())
        } else {
            Err("this test needs root (network namespaces)".to_string())
        })
}

fn run_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("controlplane-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn process_exists(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Asserts that stopping ends both processes.
fn stop_and_check(control_plane: &ControlPlane) {
    let (etcd, apiserver) = control_plane.pids();
    let (etcd, apiserver) = (etcd.expect("etcd pid"), apiserver.expect("apiserver pid"));
    assert!(process_exists(etcd) && process_exists(apiserver));
    control_plane.stop().expect("stop");
    assert!(!process_exists(etcd), "etcd (pid {etcd}) still running");
    assert!(
        !process_exists(apiserver),
        "kube-apiserver (pid {apiserver}) still running"
    );
    assert!(!control_plane.is_running());
    // Stopping twice is fine.
    control_plane.stop().expect("second stop");
}

fn json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

async fn check_version(control_plane: &ControlPlane) {
    let version = control_plane
        .server_version()
        .await
        .expect("server version");
    assert!(version.starts_with("v1.36."), "server version {version}");
    let client_version = control_plane
        .kubectl_output(["version", "--client", "-o", "json"])
        .expect("kubectl version");
    assert!(
        client_version.contains("\"gitVersion\": \"v1.36.3\""),
        "{client_version}"
    );
}

async fn check_dual_stack_service(client: kube::Client, namespace: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &json(serde_json::json!({ "metadata": { "name": namespace } })),
        )
        .await
        .expect("create namespace");
    let services: Api<Service> = Api::namespaced(client, namespace);
    services
        .create(
            &PostParams::default(),
            &json(serde_json::json!({
                "metadata": { "name": "web" },
                "spec": {
                    "ipFamilyPolicy": "RequireDualStack",
                    "ports": [{ "port": 80, "protocol": "TCP" }],
                    "selector": { "app": "web" },
                },
            })),
        )
        .await
        .expect("create dual-stack Service");
    let service = services.get("web").await.expect("read back Service");
    let ips: Vec<IpAddr> = service
        .spec
        .and_then(|spec| spec.cluster_ips)
        .unwrap_or_default()
        .iter()
        .map(|ip| ip.parse().expect("ClusterIP parses"))
        .collect();
    assert_eq!(ips.len(), 2, "clusterIPs {ips:?}");
    let v4 = ips.iter().find_map(|ip| match ip {
        IpAddr::V4(ip) => Some(*ip),
        IpAddr::V6(_) => None,
    });
    let v6 = ips.iter().find_map(|ip| match ip {
        IpAddr::V6(ip) => Some(*ip),
        IpAddr::V4(_) => None,
    });
    let v4 = v4.expect("an IPv4 ClusterIP");
    let v6 = v6.expect("an IPv6 ClusterIP");
    assert_eq!(
        v4.octets()[..3],
        [203, 0, 113],
        "{v4} not in 203.0.113.0/25"
    );
    assert!(v4.octets()[3] < 128, "{v4} not in 203.0.113.0/25");
    assert_eq!(
        v6.segments()[..7],
        [0x2001, 0xdb8, 0x100, 0, 0, 0, 0],
        "{v6} not in 2001:db8:100::/112"
    );
}

async fn check_service_account_rbac(control_plane: &ControlPlane, namespace: &str, out: &Path) {
    let kubeconfig = control_plane
        .mint_service_account_kubeconfig(namespace, "reader", out)
        .await
        .expect("mint SA kubeconfig");
    let reader = control_plane
        .client_for(&kubeconfig)
        .await
        .expect("SA client");
    let secrets: Api<Secret> = Api::namespaced(reader, namespace);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 before the RoleBinding, got {other:?}"),
    }

    let admin = control_plane.client().await.expect("admin client");
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(
            &PostParams::default(),
            &json(serde_json::json!({
                "metadata": { "name": "secret-reader" },
                "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"] }],
            })),
        )
        .await
        .expect("create Role");
    Api::<RoleBinding>::namespaced(admin, namespace)
        .create(
            &PostParams::default(),
            &json(serde_json::json!({
                "metadata": { "name": "secret-reader" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader" },
                "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": namespace }],
            })),
        )
        .await
        .expect("create RoleBinding");
    // The authorizer sees new bindings through an informer: allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match secrets.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                eprintln!("waiting for the RoleBinding: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("still denied after the RoleBinding: {error}"),
        }
    }
}

async fn check_node_registration(control_plane: &ControlPlane) {
    let spec = NodeSpec {
        name: "node-a".into(),
        internal_ipv4: Some(Ipv4Addr::new(192, 0, 2, 101)),
        internal_ipv6: Some("2001:db8:2::101".parse::<Ipv6Addr>().expect("v6")),
        labels: BTreeMap::from([("ferrolb.io/test".to_string(), "yes".to_string())]),
    };
    control_plane
        .register_node(&spec)
        .await
        .expect("register node");
    // Registering again (a lab `up` that runs twice) must work too.
    control_plane
        .register_node(&spec)
        .await
        .expect("register node again");

    let nodes: Api<Node> = Api::all(control_plane.client().await.expect("client"));
    let node = nodes.get("node-a").await.expect("get node");
    let labels = node.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("kubernetes.io/hostname").map(String::as_str),
        Some("node-a")
    );
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    assert_eq!(
        labels.get("ferrolb.io/test").map(String::as_str),
        Some("yes")
    );
    let status = node.status.expect("node status");
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|condition| condition.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
    let addresses: Vec<(String, String)> = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .map(|address| (address.type_, address.address))
        .collect();
    for expected in [
        ("InternalIP", "192.0.2.101"),
        ("InternalIP", "2001:db8:2::101"),
        ("Hostname", "node-a"),
    ] {
        assert!(
            addresses.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} missing from {addresses:?}"
        );
    }
}

const WIDGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.ferrolb.io
spec:
  group: test.ferrolb.io
  names: { kind: Widget, plural: widgets, singular: widget, listKind: WidgetList }
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: { type: object, x-kubernetes-preserve-unknown-fields: true }
"#;

fn check_crd_install(control_plane: &ControlPlane, run_dir: &Path) {
    let empty = run_dir.join("no-crds");
    fs::create_dir_all(&empty).expect("mkdir");
    assert!(
        control_plane
            .install_crds(&empty)
            .expect("empty dir")
            .is_empty()
    );

    let dir = run_dir.join("crds");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("widgets.yaml"), WIDGET_CRD).expect("write CRD");
    // kustomization.yaml is not a manifest: applying it would fail.
    fs::write(
        dir.join("kustomization.yaml"),
        "resources: [widgets.yaml]\n",
    )
    .expect("write");
    let applied = control_plane.install_crds(&dir).expect("install CRDs");
    assert_eq!(applied, vec![dir.join("widgets.yaml")]);
    let established = control_plane
        .kubectl_output([
            "get",
            "crd",
            "widgets.test.ferrolb.io",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ])
        .expect("get CRD");
    assert_eq!(established.trim(), "True");
    // Installing again is idempotent.
    control_plane
        .install_crds(&dir)
        .expect("install CRDs again");
}

#[test]
fn loopback_control_plane() {
    if !prerequisites(false) {
        return;
    }
    let run_dir = run_dir("loopback");
    let _stop = StopControlPlane(run_dir.clone());
    let config = ControlPlaneConfig::loopback(&run_dir).expect("config");
    let control_plane = ControlPlane::start(config).expect("start control plane");

    let namespaces = control_plane
        .kubectl_output(["get", "ns", "-o", "name"])
        .expect("kubectl get ns");
    assert!(
        namespaces.contains(&format!("namespace/{FERROLB_NAMESPACE}")),
        "{namespaces}"
    );

    // A second start in the same run dir is refused; attach finds the running one.
    let config = ControlPlaneConfig::loopback(&run_dir).expect("config");
    assert!(ControlPlane::start(config).is_err());
    let attached = ControlPlane::attach(&run_dir).expect("attach");
    assert_eq!(attached.server_url, control_plane.server_url);

    runtime().block_on(async {
        check_version(&control_plane).await;
        check_dual_stack_service(control_plane.client().await.expect("client"), "cp-test").await;
        check_service_account_rbac(
            &control_plane,
            "cp-test",
            &run_dir.join("reader.kubeconfig"),
        )
        .await;
        check_node_registration(&control_plane).await;
    });
    check_crd_install(&control_plane, &run_dir);

    stop_and_check(&control_plane);
    assert!(ControlPlane::attach(&run_dir).is_err());
    // Kept on failure (logs, pki) for debugging; removed on success.
    fs::remove_dir_all(&run_dir).expect("remove run dir");
}

/// A throwaway namespace with the lab's control-plane addresses on `lo`.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Self {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        let run = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?} failed");
        };
        run(&["netns", "add", name]);
        let netns = Netns(name.to_string());
        run(&["-n", name, "link", "set", "lo", "up"]);
        run(&["-n", name, "addr", "add", "192.0.2.2/32", "dev", "lo"]);
        run(&[
            "-n",
            name,
            "addr",
            "add",
            "2001:db8:2::2/128",
            "dev",
            "lo",
            "nodad",
        ]);
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn control_plane_in_netns() {
    if !prerequisites(true) {
        return;
    }
    let run_dir = run_dir("netns");
    let netns = Netns::create(&format!("fcpt{}", std::process::id()));
    let _stop = StopControlPlane(run_dir.clone());
    let config = ControlPlaneConfig::lab(&run_dir, &netns.0);
    let control_plane = ControlPlane::start(config).expect("start control plane in netns");
    assert_eq!(control_plane.server_url, "https://192.0.2.2:6443");

    // From the root namespace through the forwarder...
    runtime().block_on(async {
        check_version(&control_plane).await;
        check_node_registration(&control_plane).await;
    });
    // ...and from inside the namespace, directly at 192.0.2.2 and [2001:db8:2::2].
    let kubeconfig = control_plane.kubeconfig.clone();
    let versions = controlplane::in_netns(&netns.0, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let mut versions = Vec::new();
            for url in ["https://192.0.2.2:6443", "https://[2001:db8:2::2]:6443"] {
                let kubeconfig_file = kube::config::Kubeconfig::read_from(&kubeconfig)?;
                let mut config = kube::Config::from_custom_kubeconfig(
                    kubeconfig_file,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await?;
                config.cluster_url = url.parse()?;
                let client = kube::Client::try_from(config)?;
                versions.push(client.apiserver_version().await?.git_version);
            }
            anyhow::Ok(versions)
        })
    })
    .expect("reach the API server from inside the namespace");
    assert!(
        versions.iter().all(|version| version.starts_with("v1.36.")),
        "{versions:?}"
    );
    // kubectl runs inside the namespace too.
    let nodes = control_plane
        .kubectl_output(["get", "nodes", "-o", "name"])
        .expect("kubectl");
    assert_eq!(nodes.trim(), "node/node-a");

    stop_and_check(&control_plane);
    fs::remove_dir_all(&run_dir).expect("remove run dir");
}
