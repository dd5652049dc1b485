//! The deployable manifests in `config/`: the all-in-one file is what kustomize renders, the
//! samples use documentation addresses only and form one valid configuration, and everything is
//! accepted by the real kube-apiserver v1.36 (server-side dry-run against the installed CRDs), the
//! controller's pod meets the "restricted" Pod Security level, and the RBAC grants each component
//! what it needs and not more (`kubectl auth can-i` with minted ServiceAccount tokens), and the real
//! controller does its work with exactly that RBAC. MetalLB configurations (FerroLB's versions of
//! v0.16's configsamples, the v0.12 tutorials' ConfigMaps) apply too, as a migrating user edits
//! them and as `ferrolbctl migrate` converts them (`FERROLB_METALLB_CONFIGSAMPLES` adds MetalLB's
//! own configsamples directory).
//!
//! `FERROLB_BLESS=1 cargo test -p ferrolb-tests --test manifests` rewrites
//! `config/manifests/ferrolb.yaml`. The API-server tests need the binaries from
//! `cargo xtask controlplane build` (no root), the controller test a built
//! `target/debug/ferrolb-controller`: without them they skip, or FAIL when `CI` is set.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferrolb_crds::cluster;
use ferrolb_tests::controlplane::{self, ControlPlane, ControlPlaneConfig, FERROLB_NAMESPACE};
use ferrolb_tests::harness::{StopControlPlane, built_ferrolbctl, require};
use ferrolb_tests::paths;
use serde_json::Value;

const ALL_IN_ONE: &str = "config/manifests/ferrolb.yaml";
const ALL_IN_ONE_HEADER: &str = "\
# FerroLB: CRDs, namespace, RBAC, controller Deployment and speaker DaemonSet.
# Generated with `kubectl kustomize config/` from config/: do not edit.
# Regenerate with: FERROLB_BLESS=1 cargo test -p ferrolb-tests --test manifests
";
const SAMPLES_DIR: &str = "config/samples";
const CONTROLLER_ACCOUNT: &str = "ferrolb-controller";
const SPEAKER_ACCOUNT: &str = "ferrolb-speaker";
const IMAGE: &str = "ferrolb:0.1.0";

fn workspace(relative: &str) -> PathBuf {
    paths::workspace_root().join(relative)
}

fn output(mut command: Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"))
}

fn stdout_of(command: Command) -> String {
    let description = format!("{command:?}");
    let output = output(command);
    assert!(
        output.status.success(),
        "{description} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A kubectl for `kubectl kustomize`: the machine's, else the lab's (both render identically).
fn kustomize_kubectl() -> Result<PathBuf, String> {
    let candidates = [PathBuf::from("kubectl")].into_iter().chain(
        controlplane::binaries()
            .ok()
            .map(|binaries| binaries.kubectl),
    );
    for candidate in candidates {
        let works = Command::new(&candidate)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|output| output.status.success());
        if works {
            return Ok(candidate);
        }
    }
    Err("no kubectl on PATH and no lab kubectl (cargo xtask controlplane build)".to_string())
}

/// `kubectl kustomize config/` with the generated-file header.
fn render_all_in_one(kubectl: &Path) -> String {
    let mut command = Command::new(kubectl);
    command.arg("kustomize").arg(workspace("config"));
    format!("{ALL_IN_ONE_HEADER}{}", stdout_of(command))
}

#[test]
fn all_in_one_manifest_is_what_kustomize_renders() {
    let kubectl = match kustomize_kubectl() {
        Ok(kubectl) => kubectl,
        Err(reason) => {
            require(Err(reason));
            return;
        }
    };
    let rendered = render_all_in_one(&kubectl);
    let path = workspace(ALL_IN_ONE);
    if std::env::var_os("FERROLB_BLESS").is_some() {
        fs::write(&path, &rendered).expect("writing the all-in-one manifest");
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    if committed != rendered {
        let first_difference = committed
            .lines()
            .zip(rendered.lines())
            .position(|(old, new)| old != new)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
        panic!(
            "{ALL_IN_ONE} is out of date (first difference at line {}); regenerate it with \
             FERROLB_BLESS=1 cargo test -p ferrolb-tests --test manifests",
            first_difference + 1
        );
    }
    // The image the kustomization pins reaches both workloads.
    assert_eq!(
        rendered.matches(&format!("image: {IMAGE}")).count(),
        2,
        "controller and speaker must both run {IMAGE}"
    );
}

/// Whether `ip` is in 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 or 2001:db8::/32.
fn is_documentation_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(
            v4.octets(),
            [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]
        ),
        IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0xdb8],
    }
}

/// Every IP address in `text`: words made of hex digits, dots and colons that parse as an address
/// (CIDR prefixes and range ends split off).
fn addresses_in(text: &str) -> Vec<IpAddr> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .filter_map(|word| {
            // "2001:db8::" is an address; "a:" may be a YAML key before one.
            word.parse::<IpAddr>()
                .or_else(|_| word.trim_matches(':').parse::<IpAddr>())
                .ok()
        })
        .collect()
}

fn sample_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(workspace(SAMPLES_DIR))
        .expect("config/samples")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn samples_use_documentation_addresses_only() {
    assert_eq!(
        addresses_in("- 192.0.2.240-192.0.2.250\n- 2001:db8:100::/124, 10.1.2.3"),
        ["192.0.2.240", "192.0.2.250", "2001:db8:100::", "10.1.2.3"]
            .map(|ip| ip.parse::<IpAddr>().expect("ip"))
    );
    let files = sample_files();
    assert!(files.len() >= 5, "samples missing: {files:?}");
    let mut seen = 0;
    for file in files
        .iter()
        .chain([&workspace("config/controller/deployment.yaml")])
        .chain([&workspace("config/speaker/daemonset.yaml")])
    {
        let text = fs::read_to_string(file).expect("reading a sample");
        for ip in addresses_in(&text) {
            seen += 1;
            assert!(
                ip.is_unspecified() || is_documentation_address(ip),
                "{}: {ip} is not in a documentation range",
                file.display()
            );
        }
    }
    assert!(seen >= 9, "expected addresses in the samples, found {seen}");
}

/// `ferrolbctl validate` on every configuration sample at once: no overlaps between the pools of
/// different samples, advertisements name existing pools. Skips when ferrolbctl is not built
/// (fails instead under CI).
#[test]
fn samples_form_one_valid_configuration() {
    let Some(ferrolbctl) = built_ferrolbctl() else {
        return;
    };
    let configuration: Vec<PathBuf> = sample_files()
        .into_iter()
        .filter(|path| !path.ends_with("service.yaml"))
        .collect();
    let mut command = Command::new(&ferrolbctl);
    command.arg("validate").args(&configuration);
    stdout_of(command);

    // A pool overlapping the layer2 sample's is refused, so the check above can fail.
    let overlapping =
        std::env::temp_dir().join(format!("ferrolb-overlap-{}.yaml", std::process::id()));
    fs::write(
        &overlapping,
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\n\
         metadata: {name: overlap, namespace: ferrolb-system}\n\
         spec: {addresses: [192.0.2.245/32]}\n",
    )
    .expect("writing the overlapping pool");
    let mut command = Command::new(&ferrolbctl);
    command
        .arg("validate")
        .args(&configuration)
        .arg(&overlapping);
    let refused = output(command);
    let _ = fs::remove_file(&overlapping);
    assert!(
        !refused.status.success(),
        "an overlapping pool was accepted"
    );
}

// ---------------------------------------------------------------------------------------------
// Against the real API server.

/// `kubectl apply --dry-run=server -f file` succeeds without a warning from the API server.
fn assert_applies(control_plane: &ControlPlane, file: &Path) {
    let (stdout, stderr) = control_plane.kubectl_ok([
        "apply".as_ref(),
        "--dry-run=server".as_ref(),
        "-f".as_ref(),
        file.as_os_str(),
    ]);
    assert!(
        stdout.contains("(server dry run)"),
        "{}: {stdout}",
        file.display()
    );
    assert_eq!(
        controlplane::api_warnings(&stderr),
        Vec::<&str>::new(),
        "{}",
        file.display()
    );
}

/// The objects of `kubectl ... -o json` (one object or a List).
fn objects(json: &str) -> Vec<Value> {
    let value: Value = serde_json::from_str(json).expect("kubectl -o json output");
    match value["kind"].as_str() {
        Some("List") => value["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![value],
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn env_source<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|variable| variable["name"] == name))
        .map(|variable| &variable["valueFrom"]["fieldRef"]["fieldPath"])
        .unwrap_or_else(|| panic!("env {name} missing in {}", container["name"]))
}

fn ports(container: &Value) -> Vec<(u64, String)> {
    container["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|port| {
                    (
                        port["containerPort"].as_u64().unwrap_or_default(),
                        port["protocol"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The webhook's pieces fit together: the configuration calls the Service, the Service reaches
/// the controller pods' `webhook` port, and the names match the controller's defaults and RBAC.
fn check_webhook(objects: &[Value]) {
    let configuration = find(
        objects,
        "ValidatingWebhookConfiguration",
        cluster::WEBHOOK_CONFIGURATION_NAME,
    );
    let service = find(objects, "Service", cluster::WEBHOOK_SERVICE_NAME);
    let webhooks = configuration["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), 2);
    for webhook in webhooks {
        assert_eq!(
            webhook["failurePolicy"], "Ignore",
            "docs/configuration.md explains why"
        );
        assert_eq!(
            webhook["sideEffects"], "None",
            "so that --dry-run=server works"
        );
        let target = &webhook["clientConfig"]["service"];
        assert_eq!(target["name"], service["metadata"]["name"]);
        assert_eq!(target["namespace"], FERROLB_NAMESPACE);
        assert_eq!(target["path"], "/validate");
        assert_eq!(target["port"], service["spec"]["ports"][0]["port"]);
    }
    let deployment = find(objects, "Deployment", CONTROLLER_ACCOUNT);
    let template = &deployment["spec"]["template"];
    for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(
            &template["metadata"]["labels"][key], value,
            "the Service selects the pods"
        );
    }
    let port = template["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == service["spec"]["ports"][0]["targetPort"])
        .expect("the Service's targetPort is a named container port")
        .clone();
    assert_eq!(port["containerPort"], cluster::WEBHOOK_PORT);
    let rules = &find(objects, "ClusterRole", CONTROLLER_ACCOUNT)["rules"];
    assert!(
        rules.as_array().expect("rules").iter().any(|rule| {
            rule["resources"][0] == "validatingwebhookconfigurations"
                && rule["resourceNames"][0] == configuration["metadata"]["name"]
        }),
        "the controller may patch the caBundle of its webhook configuration"
    );
}

/// What the server would store for the whole of `config/`: the right set of objects, all
/// namespaced ones in ferrolb-system, and the workloads hardened as documented.
fn check_rendered_objects(objects: &[Value]) {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for object in objects {
        *kinds
            .entry(object["kind"].as_str().unwrap_or("?"))
            .or_default() += 1;
        let namespace = &object["metadata"]["namespace"];
        assert!(
            namespace.is_null() || namespace == FERROLB_NAMESPACE,
            "{} {} in namespace {namespace}",
            object["kind"],
            object["metadata"]["name"]
        );
    }
    let expected: BTreeMap<&str, usize> = [
        ("Namespace", 1),
        ("CustomResourceDefinition", 9),
        ("ServiceAccount", 2),
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("Role", 2),
        ("RoleBinding", 2),
        ("Deployment", 1),
        // The controller's leader election Lease and the webhook's certificate Secret, declared
        // empty so that deleting the manifest removes them.
        ("Lease", 1),
        ("Secret", 1),
        ("DaemonSet", 1),
        ("Service", 1),
        ("ValidatingWebhookConfiguration", 1),
    ]
    .into();
    assert_eq!(kinds, expected);
    check_webhook(objects);
    let namespace = find(objects, "Namespace", FERROLB_NAMESPACE);
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged",
        "the speaker needs hostNetwork and NET_RAW"
    );

    // The controller.
    let deployment = find(objects, "Deployment", CONTROLLER_ACCOUNT);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], CONTROLLER_ACCOUNT);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65534);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let anti_affinity =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti_affinity["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        anti_affinity["podAffinityTerm"]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
        "anti-affinity must select the controller's own pods"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], IMAGE);
    assert_eq!(
        strings(&container["command"]),
        ["/usr/local/bin/ferrolb-controller"]
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        strings(&container["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    assert!(container["securityContext"]["capabilities"]["add"].is_null());
    assert_eq!(
        ports(container),
        [
            (7472, "TCP".to_string()),
            (u64::from(cluster::WEBHOOK_PORT), "TCP".to_string())
        ]
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(env_source(container, "POD_NAME"), "metadata.name");
    assert_eq!(env_source(container, "POD_NAMESPACE"), "metadata.namespace");

    // The speaker.
    let daemonset = find(objects, "DaemonSet", SPEAKER_ACCOUNT);
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SPEAKER_ACCOUNT);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert!(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .is_some_and(|seconds| seconds <= 10)
    );
    let tolerated: Vec<&Value> = pod["tolerations"]
        .as_array()
        .map(|tolerations| {
            tolerations
                .iter()
                .map(|toleration| &toleration["key"])
                .collect()
        })
        .unwrap_or_default();
    assert!(
        tolerated.contains(&&Value::from("node-role.kubernetes.io/control-plane")),
        "speakers must run on control-plane nodes: {tolerated:?}"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], IMAGE);
    assert_eq!(
        strings(&container["command"]),
        ["/usr/local/bin/ferrolb-speaker"]
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert!(security["privileged"].is_null() || security["privileged"] == false);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strings(&security["capabilities"]["add"]), ["NET_RAW"]);
    assert_eq!(
        ports(container),
        [
            (7946, "UDP".to_string()),
            (7946, "TCP".to_string()),
            (7473, "TCP".to_string())
        ]
    );
    assert_eq!(env_source(container, "NODE_NAME"), "spec.nodeName");
    assert_eq!(env_source(container, "HOST_IP"), "status.hostIP");
    assert_eq!(env_source(container, "POD_NAME"), "metadata.name");
    assert_eq!(env_source(container, "POD_NAMESPACE"), "metadata.namespace");
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/etc/ferrolb/memberlist"
    );
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "ferrolb-memberlist"
    );
    assert_eq!(pod["volumes"][0]["secret"]["items"][0]["key"], "secretkey");
}

/// `kubectl auth can-i` as a ServiceAccount: `Some(answer)`; `namespace` `None` = all namespaces
/// (or a cluster-scoped resource).
fn can_i(
    control_plane: &ControlPlane,
    kubeconfig: &Path,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let mut command = Command::new(&control_plane.binaries.kubectl);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i", verb]);
    match resource.split_once('/') {
        Some((resource, subresource)) => command
            .arg(resource)
            .arg(format!("--subresource={subresource}")),
        None => command.arg(resource),
    };
    match namespace {
        Some(namespace) => command.args(["-n", namespace]),
        None => command.arg("--all-namespaces"),
    };
    let description = format!("{command:?}");
    let output = output(command);
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "{description}: unexpected answer {other:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

const SYSTEM: Option<&str> = Some(FERROLB_NAMESPACE);
const DEFAULT: Option<&str> = Some("default");
const ALL: Option<&str> = None;

/// (verb, resource[/subresource], namespace, allowed)
type Permission = (&'static str, &'static str, Option<&'static str>, bool);

const CONTROLLER_PERMISSIONS: &[Permission] = &[
    ("list", "services", ALL, true),
    ("watch", "services", ALL, true),
    ("patch", "services", DEFAULT, true),
    ("update", "services", DEFAULT, true),
    ("patch", "services/status", DEFAULT, true),
    ("update", "services/status", DEFAULT, true),
    ("watch", "namespaces", ALL, true),
    ("create", "events", DEFAULT, true),
    ("create", "events.events.k8s.io", DEFAULT, true),
    ("patch", "events.events.k8s.io", DEFAULT, true),
    ("get", "leases.coordination.k8s.io", SYSTEM, true),
    ("create", "leases.coordination.k8s.io", SYSTEM, true),
    ("update", "leases.coordination.k8s.io", SYSTEM, true),
    ("watch", "ipaddresspools.ferrolb.io", SYSTEM, true),
    ("list", "bgppeers.ferrolb.io", SYSTEM, true),
    ("patch", "ipaddresspools.ferrolb.io/status", SYSTEM, true),
    ("update", "ipaddresspools.ferrolb.io/status", SYSTEM, true),
    ("patch", "l2advertisements.ferrolb.io/status", SYSTEM, true),
    ("patch", "communities.ferrolb.io/status", SYSTEM, true),
    ("watch", "configmaps", SYSTEM, true),
    ("get", "secrets", SYSTEM, true),
    ("create", "secrets", SYSTEM, true),
    // Not needed, so not granted.
    ("delete", "nodes", ALL, false),
    ("list", "nodes", ALL, false),
    ("delete", "services", DEFAULT, false),
    ("create", "services", DEFAULT, false),
    ("get", "secrets", DEFAULT, false),
    ("list", "secrets", ALL, false),
    ("delete", "secrets", SYSTEM, false),
    ("update", "secrets", SYSTEM, false),
    ("update", "leases.coordination.k8s.io", DEFAULT, false),
    ("update", "ipaddresspools.ferrolb.io", SYSTEM, false),
    ("create", "ipaddresspools.ferrolb.io", SYSTEM, false),
    ("list", "ipaddresspools.ferrolb.io", DEFAULT, false),
    ("create", "servicel2statuses.ferrolb.io", SYSTEM, false),
    ("list", "pods", SYSTEM, false),
    ("update", "configmaps", SYSTEM, false),
];

const SPEAKER_PERMISSIONS: &[Permission] = &[
    ("list", "services", ALL, true),
    ("watch", "services", ALL, true),
    ("list", "endpointslices.discovery.k8s.io", ALL, true),
    ("watch", "endpointslices.discovery.k8s.io", ALL, true),
    ("watch", "nodes", ALL, true),
    ("list", "namespaces", ALL, true),
    ("create", "events.events.k8s.io", DEFAULT, true),
    ("create", "events", DEFAULT, true),
    ("create", "servicel2statuses.ferrolb.io", SYSTEM, true),
    ("delete", "servicel2statuses.ferrolb.io", SYSTEM, true),
    ("patch", "servicel2statuses.ferrolb.io/status", SYSTEM, true),
    ("create", "bgpsessionstates.ferrolb.io", SYSTEM, true),
    ("patch", "bgpsessionstates.ferrolb.io/status", SYSTEM, true),
    ("watch", "secrets", SYSTEM, true),
    ("create", "servicebgpstatuses.ferrolb.io", SYSTEM, true),
    (
        "update",
        "servicebgpstatuses.ferrolb.io/status",
        SYSTEM,
        true,
    ),
    ("watch", "ipaddresspools.ferrolb.io", SYSTEM, true),
    ("list", "bfdprofiles.ferrolb.io", SYSTEM, true),
    ("watch", "configmaps", SYSTEM, true),
    ("get", "secrets", SYSTEM, true),
    // Not needed, so not granted.
    ("list", "pods", SYSTEM, false),
    ("update", "services/status", DEFAULT, false),
    ("patch", "services/status", DEFAULT, false),
    ("patch", "services", DEFAULT, false),
    ("update", "nodes", ALL, false),
    ("delete", "nodes", ALL, false),
    ("create", "secrets", SYSTEM, false),
    ("get", "secrets", DEFAULT, false),
    ("list", "secrets", ALL, false),
    ("create", "servicel2statuses.ferrolb.io", DEFAULT, false),
    ("patch", "ipaddresspools.ferrolb.io/status", SYSTEM, false),
    ("update", "ipaddresspools.ferrolb.io", SYSTEM, false),
    ("create", "leases.coordination.k8s.io", SYSTEM, false),
    ("list", "pods", DEFAULT, false),
    ("update", "configmaps", SYSTEM, false),
];

/// Every permission in `table` that `kubeconfig` has differently than expected.
fn permission_mismatches(
    control_plane: &ControlPlane,
    account: &str,
    kubeconfig: &Path,
    table: &[Permission],
) -> Vec<String> {
    table
        .iter()
        .filter(|(verb, resource, namespace, allowed)| {
            can_i(control_plane, kubeconfig, verb, resource, *namespace) != *allowed
        })
        .map(|(verb, resource, namespace, allowed)| {
            format!(
                "{account}: {verb} {resource} in {}: expected {}",
                namespace.unwrap_or("all namespaces"),
                if *allowed { "allowed" } else { "denied" }
            )
        })
        .collect()
}

#[test]
fn manifests_on_the_real_api_server() {
    if !require(
        controlplane::binaries()
            .map(|_| ())
            .map_err(|missing| missing.to_string()),
    ) {
        return;
    }
    let run_dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("manifests-{}", std::process::id()));
    let _ = fs::remove_dir_all(&run_dir);
    let _stop = StopControlPlane(run_dir.clone());
    let control_plane = ControlPlane::start(
        ControlPlaneConfig::loopback(&run_dir).expect("loopback control-plane config"),
    )
    .expect("starting the control plane");

    // The CRDs for real (the samples and the dry-run of config/ need them), then everything else
    // as the server would store it.
    let crds = control_plane
        .install_crds(&workspace("config/crd"))
        .expect("installing the CRDs");
    assert_eq!(crds.len(), 9, "{crds:?}");
    let config = workspace("config");
    let (json, stderr) = control_plane.kubectl_ok([
        "apply".as_ref(),
        "--dry-run=server".as_ref(),
        "-k".as_ref(),
        config.as_os_str(),
        "-o".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(
        controlplane::api_warnings(&stderr),
        Vec::<&str>::new(),
        "applying -k config/"
    );
    check_rendered_objects(&objects(&json));
    let (_, stderr) = control_plane.kubectl_ok([
        "apply".as_ref(),
        "--dry-run=server".as_ref(),
        "-f".as_ref(),
        workspace(ALL_IN_ONE).as_os_str(),
    ]);
    assert_eq!(
        controlplane::api_warnings(&stderr),
        Vec::<&str>::new(),
        "applying {ALL_IN_ONE}"
    );

    // Every sample, on its own (each must be applicable alone, after the install).
    for sample in sample_files() {
        assert_applies(&control_plane, &sample);
    }

    check_migrated_legacy_configurations(&control_plane, &run_dir);
    check_metallb_configurations(&control_plane, &run_dir);
    check_pod_security(&control_plane);
    check_rbac(&control_plane, &run_dir);
    remove_run_dir(&run_dir);
}

/// The controller's pod meets the "restricted" Pod Security Standard; the speaker's does not
/// even meet "baseline" (hostNetwork), which shows the check sees violations at all.
fn check_pod_security(control_plane: &ControlPlane) {
    for (namespace, level) in [
        ("psa-restricted", "restricted"),
        ("psa-baseline", "baseline"),
    ] {
        control_plane
            .create_namespace(namespace)
            .expect("namespace");
        control_plane.kubectl_ok([
            "label",
            "namespace",
            namespace,
            &format!("pod-security.kubernetes.io/warn={level}"),
        ]);
    }
    let dry_run_in = |namespace: &str, manifest: &str| {
        let (_, stderr) = control_plane.kubectl_ok([
            "apply".as_ref(),
            "--dry-run=server".as_ref(),
            "-n".as_ref(),
            namespace.as_ref(),
            "-f".as_ref(),
            workspace(manifest).as_os_str(),
        ]);
        stderr
    };
    let stderr = dry_run_in("psa-restricted", "config/controller/deployment.yaml");
    assert_eq!(
        controlplane::api_warnings(&stderr),
        Vec::<&str>::new(),
        "the controller must meet the restricted Pod Security Standard"
    );
    let stderr = dry_run_in("psa-baseline", "config/speaker/daemonset.yaml");
    let speaker_warnings = controlplane::api_warnings(&stderr).join("\n");
    assert!(
        speaker_warnings.contains("hostNetwork"),
        "expected a baseline violation for hostNetwork, got: {stderr}"
    );
}

/// Applies `config/rbac` for real, mints tokens for both ServiceAccounts and asks the API server
/// what each may do.
fn check_rbac(control_plane: &ControlPlane, run_dir: &Path) {
    let rbac = workspace("config/rbac");
    control_plane.kubectl_ok([
        "apply".as_ref(),
        "--server-side".as_ref(),
        "-k".as_ref(),
        rbac.as_os_str(),
    ]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mint = |account: &str| {
        runtime
            .block_on(control_plane.mint_service_account_kubeconfig(
                FERROLB_NAMESPACE,
                account,
                &run_dir.join(format!("{account}.kubeconfig")),
            ))
            .unwrap_or_else(|error| panic!("minting a token for {account}: {error:#}"))
    };
    let controller = mint(CONTROLLER_ACCOUNT);
    let speaker = mint(SPEAKER_ACCOUNT);

    // The authorizer learns about new bindings through an informer: wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !can_i(control_plane, &speaker, "get", "secrets", SYSTEM) {
        assert!(
            Instant::now() < deadline,
            "the speaker's RoleBinding never took effect"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut mismatches = permission_mismatches(
        control_plane,
        CONTROLLER_ACCOUNT,
        &controller,
        CONTROLLER_PERMISSIONS,
    );
    mismatches.extend(permission_mismatches(
        control_plane,
        SPEAKER_ACCOUNT,
        &speaker,
        SPEAKER_PERMISSIONS,
    ));
    assert!(
        mismatches.is_empty(),
        "RBAC differs:\n{}",
        mismatches.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The real controller with exactly the RBAC of config/rbac.

/// The controller binary the lab would run (`$FERROLB_CONTROLLER_BIN`, else
/// `target/debug/ferrolb-controller`), if it is a real implementation (`--version` succeeds
/// within 5 s; the stub exits 1).
fn real_controller() -> Result<PathBuf, String> {
    let path = std::env::var_os("FERROLB_CONTROLLER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::target_dir().join("debug").join("ferrolb-controller"));
    let not_real = || {
        format!(
            "{} is not a built controller (cargo build -p ferrolb-controller)",
            path.display()
        )
    };
    let mut probe = Command::new(&path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|_| not_real())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match probe.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(path),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = probe.kill();
                let _ = probe.wait();
                return Err(not_real());
            }
        }
    }
}

/// Ends the controller this test started (by its pid, as a child of this process).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `kubectl get <args> -o jsonpath=<path>` until `done` accepts the output.
fn wait_for(
    control_plane: &ControlPlane,
    what: &str,
    args: &[&str],
    jsonpath: &str,
    done: impl Fn(&str) -> bool,
    log: &Path,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        let jsonpath = format!("jsonpath={jsonpath}");
        full.extend_from_slice(&["-o", &jsonpath]);
        let value = control_plane.kubectl_output(&full).unwrap_or_default();
        if done(value.trim()) {
            return value.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {value:?} after 60 s; controller log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The controller, running as ServiceAccount ferrolb-controller with the Roles of config/rbac and
/// the flags and environment of config/controller, takes the Lease, assigns the sample Service an
/// address of the sample pool, annotates it, updates the pool's status, and is never refused.
#[test]
fn controller_works_with_its_rbac() {
    if !require(
        controlplane::binaries()
            .map(|_| ())
            .map_err(|missing| missing.to_string()),
    ) {
        return;
    }
    let controller_binary = match real_controller() {
        Ok(path) => path,
        Err(reason) => {
            require(Err(reason));
            return;
        }
    };
    let run_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("manifests-controller-{}", std::process::id()));
    let _ = fs::remove_dir_all(&run_dir);
    let _stop = StopControlPlane(run_dir.clone());
    let control_plane = ControlPlane::start(
        ControlPlaneConfig::loopback(&run_dir).expect("loopback control-plane config"),
    )
    .expect("starting the control plane");
    control_plane
        .install_crds(&workspace("config/crd"))
        .expect("installing the CRDs");
    let rbac = workspace("config/rbac");
    control_plane.kubectl_ok([
        "apply".as_ref(),
        "--server-side".as_ref(),
        "-k".as_ref(),
        rbac.as_os_str(),
    ]);
    for sample in ["layer2-pool.yaml", "service.yaml"] {
        let path = workspace(SAMPLES_DIR).join(sample);
        control_plane.kubectl_ok(["apply".as_ref(), "-f".as_ref(), path.as_os_str()]);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let kubeconfig = runtime
        .block_on(control_plane.mint_service_account_kubeconfig(
            FERROLB_NAMESPACE,
            CONTROLLER_ACCOUNT,
            &run_dir.join("controller.kubeconfig"),
        ))
        .expect("minting the controller's token");

    // As config/controller/deployment.yaml runs it, except the metrics port (any free one: other
    // tests may run controllers at the same time).
    let log = run_dir.join("controller.log");
    let log_file = fs::File::create(&log).expect("controller log");
    let pod_name = "ferrolb-controller-test-0";
    let child = Command::new(&controller_binary)
        .args([
            "--log-format=json",
            "--metrics-addr=127.0.0.1:0",
            "--webhook-addr=127.0.0.1:0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", pod_name)
        .env("POD_NAMESPACE", FERROLB_NAMESPACE)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .expect("starting the controller");
    let mut controller = KillOnDrop(child);

    let holder = wait_for(
        &control_plane,
        "Lease holder",
        &["lease", "ferrolb-controller", "-n", FERROLB_NAMESPACE],
        "{.spec.holderIdentity}",
        |holder| !holder.is_empty(),
        &log,
    );
    assert_eq!(holder, pod_name);
    let ip = wait_for(
        &control_plane,
        "Service web's address",
        &["service", "web", "-n", "default"],
        "{.status.loadBalancer.ingress[*].ip}",
        |ip| !ip.is_empty(),
        &log,
    );
    let ip: std::net::Ipv4Addr = ip.parse().expect("one IPv4 address");
    assert!(
        (240..=250).contains(&ip.octets()[3]) && ip.octets()[..3] == [192, 0, 2],
        "{ip} is not from pool lan (192.0.2.240-192.0.2.250)"
    );
    wait_for(
        &control_plane,
        "the pool annotation",
        &["service", "web", "-n", "default"],
        "{.metadata.annotations.ferrolb\\.io/ip-allocated-from-pool}",
        |pool| pool == "lan",
        &log,
    );
    wait_for(
        &control_plane,
        "IPAddressPool lan's status",
        &["ipaddresspool", "lan", "-n", FERROLB_NAMESPACE],
        "{.status.assignedIPv4}",
        |assigned| assigned == "1",
        &log,
    );

    assert!(
        controller
            .0
            .try_wait()
            .expect("controller status")
            .is_none(),
        "the controller exited; log:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let text = fs::read_to_string(&log).unwrap_or_default();
    let refused: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("forbidden") || line.contains("Forbidden"))
        .collect();
    assert!(
        refused.is_empty(),
        "the API server refused the controller:\n{}",
        refused.join("\n")
    );
    drop(controller);
    remove_run_dir(&run_dir);
}

/// After a passing test: stops the control plane and removes its run directory (a failing test
/// keeps it, with the logs).
fn remove_run_dir(run_dir: &Path) {
    let _ = controlplane::stop(run_dir);
    let _ = fs::remove_dir_all(run_dir);
}

/// Legacy ConfigMaps at the edges where validation and migration used to disagree (the peer port
/// limit, spaces around addresses, names that are not DNS labels, a BFD profile reference):
/// `ferrolbctl validate` accepts each, and what `ferrolbctl migrate` makes of it is accepted by
/// the real API server. (The same-`Config` half of the property is
/// `crds/tests/config_cases.rs`, `legacy_migration_property`.)
fn check_migrated_legacy_configurations(control_plane: &ControlPlane, run_dir: &Path) {
    let Some(ferrolbctl) = built_ferrolbctl() else {
        return;
    };
    let cases = [
        "peers:\n- {peer-address: ' 192.0.2.1 ', peer-asn: 64512, my-asn: 64513, peer-port: 16384, bfd-profile: Fast.BFD}\nbfd-profiles:\n- {name: Fast.BFD, receive-interval: 100}\n",
        "address-pools:\n- name: My_Pool\n  protocol: bgp\n  addresses: [' 203.0.113.0/28 ']\n  bgp-advertisements:\n  - {aggregation-length: 28, communities: [lab], localpref: 100}\n  - {}\nbgp-communities: {lab: '64513:100'}\n",
        "address-pools:\n- {name: default, protocol: layer2, addresses: [192.0.2.100-192.0.2.110]}\n",
    ];
    for (i, inner) in cases.iter().enumerate() {
        let indented: String = inner.lines().map(|l| format!("    {l}\n")).collect();
        let source = run_dir.join(format!("legacy-{i}.yaml"));
        fs::write(
            &source,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config, namespace: metallb-system}}\ndata:\n  config: |\n{indented}"),
        )
        .expect("writing a legacy ConfigMap");
        let mut validate = Command::new(&ferrolbctl);
        validate.arg("validate").arg(&source);
        stdout_of(validate);
        let mut migrate = Command::new(&ferrolbctl);
        migrate.arg("migrate").arg(&source);
        let migrated = run_dir.join(format!("legacy-{i}-migrated.yaml"));
        fs::write(&migrated, stdout_of(migrate)).expect("writing the migrated CRs");
        assert_applies(control_plane, &migrated);
    }
}

/// FerroLB's versions of MetalLB v0.16's `configsamples/` (README there).
const METALLB_SAMPLES_DIR: &str = "tests/data/metallb-v0.16-configsamples";
/// The legacy ConfigMaps of MetalLB's v0.12 documentation and the tutorials.
const METALLB_TUTORIALS_DIR: &str = "tests/data/metallb-tutorials";
/// A directory of MetalLB's own `configsamples/`, checked too when set.
const METALLB_ORIGINALS_VARIABLE: &str = "FERROLB_METALLB_CONFIGSAMPLES";
/// The one sample FerroLB refuses (`vrf`: the speaker peers in the default VRF only), so
/// `ferrolbctl migrate` exits 1 for it; the API server stores it all the same (the CRD keeps the
/// field, so that the refusal comes from FerroLB with its reason).
const REFUSED_BY_FERROLB: &str = "bgppeer_with_vrf.yaml";

/// The edit docs/configuration.md ("Migrating from MetalLB") tells a migrating user to make, as
/// `crds/tests/common` makes it: `metallb.io` API versions become `ferrolb.io/v1beta1`,
/// `metallb-system` becomes `ferrolb-system`.
fn migrating_user_edit(metallb: &str) -> String {
    metallb
        .split_inclusive('\n')
        .map(|line| {
            if line.starts_with("apiVersion: metallb.io/v1beta1")
                || line.starts_with("apiVersion: metallb.io/v1beta2")
            {
                line.replacen("metallb.io/v1beta2", "ferrolb.io/v1beta1", 1)
                    .replacen("metallb.io/v1beta1", "ferrolb.io/v1beta1", 1)
            } else {
                line.replacen("namespace: metallb-system", "namespace: ferrolb-system", 1)
            }
        })
        .collect()
}

/// The `*.yaml` files of `dir` accepted by `keep`, sorted.
fn yaml_files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".yaml") && keep(name))
        })
        .collect();
    files.sort();
    files
}

/// MetalLB configurations on the real API server: each of MetalLB v0.16's configsamples (ours,
/// and MetalLB's own when `FERROLB_METALLB_CONFIGSAMPLES` names them) and each tutorial ConfigMap,
/// after the documented edit (CRs in ferrolb.io/v1beta1 and ferrolb-system, the ConfigMap copied
/// to ferrolb-system), and what `ferrolbctl migrate` makes of the MetalLB file, apply with
/// `--dry-run=server` and no warning. (validate and the same-objects half are
/// `crds/tests/metallb_configsamples.rs` and `metallb_tutorials.rs`.)
fn check_metallb_configurations(control_plane: &ControlPlane, run_dir: &Path) {
    let Some(ferrolbctl) = built_ferrolbctl() else {
        return;
    };
    let mut files = yaml_files_in(&workspace(METALLB_SAMPLES_DIR), |_| true);
    assert_eq!(files.len(), 18, "MetalLB v0.16 has 18 configsamples");
    files.extend(yaml_files_in(&workspace(METALLB_TUTORIALS_DIR), |name| {
        name.ends_with("-configmap.yaml")
    }));
    match std::env::var_os(METALLB_ORIGINALS_VARIABLE) {
        Some(dir) => files.extend(yaml_files_in(Path::new(&dir), |_| true)),
        None => {
            eprintln!("SKIP: MetalLB's own configsamples ({METALLB_ORIGINALS_VARIABLE} is not set)")
        }
    }
    let checked_dir = run_dir.join("metallb");
    fs::create_dir_all(&checked_dir).expect("creating the MetalLB check directory");
    for (i, file) in files.iter().enumerate() {
        let name = file
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        let metallb = fs::read_to_string(file).expect("reading a MetalLB configuration");
        let edited = checked_dir.join(format!("{i}-edited-{name}"));
        fs::write(&edited, migrating_user_edit(&metallb)).expect("writing the edited file");
        assert_applies(control_plane, &edited);

        let mut migrate = Command::new(&ferrolbctl);
        migrate.arg("migrate").arg(file);
        let migrated = output(migrate);
        if name == REFUSED_BY_FERROLB {
            assert_eq!(migrated.status.code(), Some(1), "{}", file.display());
            continue;
        }
        assert!(
            migrated.status.success(),
            "ferrolbctl migrate {}: {}",
            file.display(),
            String::from_utf8_lossy(&migrated.stderr)
        );
        let migrated_file = checked_dir.join(format!("{i}-migrated-{name}"));
        fs::write(&migrated_file, &migrated.stdout).expect("writing the migrated file");
        assert_applies(control_plane, &migrated_file);
    }
    eprintln!(
        "{} MetalLB configurations applied as edited and as migrated",
        files.len()
    );
}

#[test]
fn migrating_user_edit_changes_api_version_and_namespace_only() {
    let metallb = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: p\n  namespace: metallb-system  \n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\n---\napiVersion: apps/v1\n";
    assert_eq!(
        migrating_user_edit(metallb),
        "apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata:\n  name: p\n  namespace: ferrolb-system  \n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\n---\napiVersion: apps/v1\n"
    );
}
