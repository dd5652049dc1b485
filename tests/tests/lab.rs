//! The whole lab end to end: network, real kube-apiserver + etcd in `<P>cp`, CRDs applied with
//! kubectl, a Service created through kube-rs, FerroLB processes started in the right namespaces
//! with their kubeconfigs, `up` twice, and a teardown that leaves nothing behind.
//! Needs root; skipped with a printed reason otherwise (fails instead when `CI` is set).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferrolb_tests::harness::TestLab;
use ferrolb_tests::lab::FerrolbBinaries;
use ferrolb_tests::netlab::netns;
use ferrolb_tests::netlab::topology::{ROUTER_LAN_V4, ROUTER_LAN_V6};
use ferrolb_tests::{paths, process};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

/// Stands in for the controller and the speaker: answers `--version` (so the lab treats it as a
/// real implementation), prints its environment, then stays alive until stopped.
const FAKE_FERROLB: &str = "#!/bin/sh
if [ \"$1\" = --version ]; then echo fake-ferrolb 0.0.0; exit 0; fi
echo \"NODE_NAME=$NODE_NAME KUBECONFIG=$KUBECONFIG HOST_IP=$HOST_IP\"
exec sleep 600
";

fn fake_binaries(dir: &Path) -> FerrolbBinaries {
    std::fs::create_dir_all(dir).expect("fake binary dir");
    let path = dir.join("fake-ferrolb");
    std::fs::write(&path, FAKE_FERROLB).expect("write fake binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    FerrolbBinaries {
        controller: path.clone(),
        speaker: path,
    }
}

/// Names of the CRDs in `config/crd/` (what `up` must have applied).
fn crd_names_in_repo() -> BTreeSet<String> {
    let dir = paths::workspace_root().join("config/crd");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for doc in text.split("\n---") {
            if !doc.contains("kind: CustomResourceDefinition") {
                continue;
            }
            // `metadata.name` is the first `name:` at two-space indent after `metadata:`.
            let name = doc
                .split("metadata:")
                .nth(1)
                .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix("  name: ")))
                .map(|name| name.trim().trim_matches('"').to_string());
            names.extend(name);
        }
    }
    names
}

fn pid_in(run_dir: &Path, name: &str) -> i32 {
    process::read_pid(&run_dir.join(format!("{name}.pid")))
        .unwrap_or_else(|| panic!("no pid file for {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_runs_control_plane_network_and_ferrolb_and_tears_down_cleanly() {
    let fake_dir: PathBuf =
        std::env::temp_dir().join(format!("ferrolb-fake-{}", std::process::id()));
    let Some(mut lab) = TestLab::start_with("lab", 2, fake_binaries(&fake_dir)).expect("lab up")
    else {
        return;
    };
    let control_plane = lab.control_plane();

    // The control plane's Kubernetes version, through kube-rs from the root namespace.
    let version = control_plane
        .server_version()
        .await
        .expect("server version");
    println!("control plane: kube-apiserver {version}");
    assert!(version.starts_with("v1.36."), "{version}");

    // A Service created through kube-rs gets a ClusterIP from the lab's Service CIDR.
    let client = control_plane.client().await.expect("admin client");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "lab-probe" },
        "spec": { "type": "ClusterIP", "ports": [{ "port": 80, "protocol": "TCP" }] },
    }))
    .expect("service literal");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("create Service");
    let read_back = services.get("lab-probe").await.expect("get Service");
    let cluster_ip: IpAddr = read_back
        .spec
        .and_then(|spec| spec.cluster_ip)
        .expect("ClusterIP assigned")
        .parse()
        .expect("ClusterIP is an address");
    println!("Service lab-probe: ClusterIP {cluster_ip}");
    assert!(
        matches!(cluster_ip, IpAddr::V4(v4) if v4.octets()[..3] == [203, 0, 113] && v4.octets()[3] < 128),
        "ClusterIP {cluster_ip} outside 203.0.113.0/25"
    );

    // The CRDs in config/crd/ were applied with kubectl and are served.
    let expected_crds = crd_names_in_repo();
    let served: BTreeSet<String> = control_plane
        .kubectl_output(["get", "crd", "-o", "name"])
        .expect("kubectl get crd")
        .lines()
        .filter_map(|line| line.strip_prefix("customresourcedefinition.apiextensions.k8s.io/"))
        .map(str::to_string)
        .collect();
    println!("CRDs in config/crd: {expected_crds:?}; served: {served:?}");
    assert!(
        expected_crds.is_subset(&served),
        "CRDs not applied: {:?}",
        expected_crds.difference(&served).collect::<Vec<_>>()
    );

    // The nodes are registered, Ready, with their lab addresses.
    let nodes = control_plane
        .kubectl_output(["get", "nodes", "-o", "wide", "--no-headers"])
        .expect("kubectl get nodes");
    assert!(
        nodes.contains("node1") && nodes.contains("192.0.2.11"),
        "{nodes}"
    );
    assert!(
        nodes.contains("node2") && nodes.contains("192.0.2.12"),
        "{nodes}"
    );

    // A test can mark a Node not Ready (the lab has no node lifecycle controller) and back.
    lab.set_node_ready("node2", false).expect("node2 not ready");
    let ready = |node: &str| {
        control_plane
            .kubectl_output([
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .expect("kubectl get node")
    };
    assert_eq!(ready("node2"), "Unknown");
    assert_eq!(ready("node1"), "True");
    lab.set_node_ready("node2", true).expect("node2 ready");
    assert_eq!(ready("node2"), "True");

    // Client reaches the router, v4 and v6; FRR bgpd runs there.
    let net = lab.netlab().clone();
    let topo = &net.topology;
    assert!(net.ping(&topo.client_ns(), IpAddr::V4(ROUTER_LAN_V4)));
    assert!(net.ping(&topo.client_ns(), IpAddr::V6(ROUTER_LAN_V6)));
    let bgp = net.router().vtysh("show running-config").expect("vtysh");
    assert!(bgp.contains("router bgp 64512"), "{bgp}");

    // The FerroLB processes run in their namespaces with NODE_NAME and a working kubeconfig.
    let run_dir = lab.run_dir().to_path_buf();
    let controller = pid_in(&run_dir, "controller");
    assert!(netns::pids(&topo.control_plane_ns()).contains(&controller));
    let speaker1 = pid_in(&run_dir, "speaker-node1");
    assert!(netns::pids(&topo.ns("node1")).contains(&speaker1));
    let log = std::fs::read_to_string(run_dir.join("speaker-node1.log")).expect("speaker log");
    assert!(log.contains("NODE_NAME=node1 KUBECONFIG="), "{log}");
    assert!(log.contains("HOST_IP=192.0.2.11"), "{log}");
    let kubeconfig = lab.lab().kubeconfig_dir().join("speaker.kubeconfig");
    let mut whoami = netns::exec(
        &topo.ns("node1"),
        &control_plane.binaries.kubectl.display().to_string(),
    );
    whoami.arg("--kubeconfig").arg(&kubeconfig).args([
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    let identity = ferrolb_tests::cmd::stdout(whoami).expect("speaker kubeconfig works from node1");
    assert!(
        identity.contains("system:serviceaccount:ferrolb-system:ferrolb-speaker"),
        "{identity}"
    );

    // `up` twice is harmless: same control plane and FerroLB processes, the Service survives.
    let before = (control_plane.pids(), controller, speaker1);
    lab.up_again().expect("second up");
    let after = (
        lab.control_plane().pids(),
        pid_in(&run_dir, "controller"),
        pid_in(&run_dir, "speaker-node1"),
    );
    assert_eq!(before, after, "second up restarted something");
    assert!(services.get_opt("lab-probe").await.expect("get").is_some());
    services
        .delete("lab-probe", &DeleteParams::default())
        .await
        .expect("delete Service");
    drop(client);

    // Teardown: no namespace, no process, no FRR state left.
    let prefix = lab.prefix().to_string();
    let mut pids: Vec<i32> = topo
        .namespaces()
        .iter()
        .flat_map(|ns| netns::pids(ns))
        .collect();
    pids.extend(process::pids_in(&run_dir));
    pids.extend(process::pids_in(&run_dir.join("controlplane")));
    assert!(
        pids.len() >= 8,
        "expected FRR, etcd, apiserver, FerroLB pids: {pids:?}"
    );
    drop(lab);
    let left = netns::list_with_prefix(&prefix);
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let alive: Vec<i32> = pids
        .into_iter()
        .filter(|pid| process::is_alive(*pid))
        .collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
    assert!(
        !Path::new("/var/run/frr")
            .join(format!("{prefix}router"))
            .exists()
    );
    let _ = std::fs::remove_dir_all(&fake_dir);
}
