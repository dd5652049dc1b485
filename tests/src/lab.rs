//! The whole lab: network namespaces + control plane + FerroLB processes, under one name prefix.
//!
//! `up` = network ([`Netlab`]) -> control plane in `<P>cp` ([`ControlPlane`], see
//! [`crate::controlplane`]) -> FerroLB installed ([`Install`]: manifests from `config/crd/` and
//! `config/rbac/`, or the Helm chart) -> Nodes `node1..N` registered -> ServiceAccount
//! kubeconfigs minted -> FerroLB controller and speakers started (only when their binaries are
//! real implementations, see [`real_binary`]). Every step is idempotent: a second `up` attaches
//! to the running control plane and starts only what is missing.
//!
//! State lives in the run directory ([`crate::paths::run_dir`]): `lab.json` (what `up` built),
//! pid and log files of every process, `frr/` (router configs and logs), `controlplane/` (PKI,
//! etcd data, `admin.kubeconfig`, API server logs) and `kubeconfigs/` (ServiceAccount ones).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::controlplane::{self, ControlPlane, ControlPlaneConfig, FERROLB_NAMESPACE, NodeSpec};
use crate::helm::HelmRelease;
use crate::netlab::Netlab;
use crate::paths;
use crate::process::Background;

/// The default number of node namespaces.
pub const DEFAULT_NODES: usize = 3;

/// Options for `lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Name prefix of every namespace (default `flb-`, from `$FERROLB_LAB_PREFIX`).
    pub prefix: String,
    /// Number of node namespaces.
    pub nodes: usize,
    /// Also run the layer2 demo (pool, Service, HTTP responders, curl from `client`).
    pub demo: bool,
}

/// What `up` built, so that `down` and `status` need no options.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabState {
    pub prefix: String,
    pub nodes: usize,
}

const STATE_FILE: &str = "lab.json";
/// ServiceAccounts (in `ferrolb-system`) the FerroLB processes run as.
/// (Also created, with their RBAC, by `config/rbac/`.)
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "ferrolb-controller";
pub const SPEAKER_SERVICE_ACCOUNT: &str = "ferrolb-speaker";
/// Manifest directories applied on `up`, relative to the workspace root (missing ones are
/// skipped).
pub const MANIFEST_DIRS: [&str; 2] = ["config/crd", "config/rbac"];

/// One lab: its network, its run directory, the FerroLB binaries it runs and how FerroLB's
/// objects get into its API server.
#[derive(Debug, Clone)]
pub struct Lab {
    pub netlab: Netlab,
    pub binaries: FerrolbBinaries,
    pub install: Install,
    /// Controller processes, as the Deployment's replicas (1 unless set; they compete for the
    /// Lease).
    pub controller_replicas: usize,
}

/// The lab's name for controller replica `replica` (0-based): its pid and log file names.
/// The first is `controller`, as with one replica.
pub fn controller_process_name(replica: usize) -> String {
    match replica {
        0 => "controller".to_string(),
        n => format!("controller-{}", n + 1),
    }
}

/// The `POD_NAME` (and so the Lease holder identity) of controller replica `replica`.
pub fn controller_pod_name(replica: usize) -> String {
    match replica {
        0 => "ferrolb-controller-lab".to_string(),
        n => format!("ferrolb-controller-lab-{}", n + 1),
    }
}

/// How `up` puts FerroLB's objects into the lab's API server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Install {
    /// `kubectl apply --server-side` of [`MANIFEST_DIRS`] (CRDs and RBAC); the configuration is
    /// up to the caller. The processes run as config/ runs them.
    #[default]
    Manifests,
    /// `helm upgrade --install` of the chart: CRDs, RBAC, configuration and everything else it
    /// renders. The lab has no kubelet, so the chart's Deployment and DaemonSet are only stored;
    /// the lab runs the binaries itself, as the ServiceAccounts the chart created and with the
    /// arguments of the chart's pod templates.
    Helm(HelmRelease),
}

/// Where the FerroLB binaries are: `$FERROLB_CONTROLLER_BIN` / `$FERROLB_SPEAKER_BIN`, else
/// `target/debug/ferrolb-{controller,speaker}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FerrolbBinaries {
    pub controller: PathBuf,
    pub speaker: PathBuf,
}

impl Default for FerrolbBinaries {
    fn default() -> Self {
        let locate = |var: &str, name: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| paths::target_dir().join("debug").join(name))
        };
        FerrolbBinaries {
            controller: locate("FERROLB_CONTROLLER_BIN", "ferrolb-controller"),
            speaker: locate("FERROLB_SPEAKER_BIN", "ferrolb-speaker"),
        }
    }
}

impl Lab {
    /// The lab with this prefix and node count (nothing is started).
    pub fn new(prefix: &str, nodes: usize) -> anyhow::Result<Lab> {
        Ok(Lab {
            netlab: Netlab::new(prefix, nodes, &paths::run_dir(prefix))?,
            binaries: FerrolbBinaries::default(),
            install: Install::default(),
            controller_replicas: 1,
        })
    }

    /// The lab as `up` last built it (default node count if it never ran).
    pub fn existing(prefix: &str) -> anyhow::Result<Lab> {
        let state_file = paths::run_dir(prefix).join(STATE_FILE);
        let nodes = fs::read_to_string(&state_file)
            .ok()
            .and_then(|text| serde_json::from_str::<LabState>(&text).ok())
            .map_or(DEFAULT_NODES, |state| state.nodes);
        Lab::new(prefix, nodes)
    }

    pub fn prefix(&self) -> &str {
        &self.netlab.topology.prefix
    }

    pub fn run_dir(&self) -> &Path {
        &self.netlab.run_dir
    }

    /// Brings the network up (idempotent).
    pub fn network_up(&self) -> anyhow::Result<()> {
        fs::create_dir_all(self.run_dir())
            .with_context(|| format!("creating {}", self.run_dir().display()))?;
        let state = LabState {
            prefix: self.prefix().to_string(),
            nodes: self.netlab.topology.nodes().count(),
        };
        let state_file = self.run_dir().join(STATE_FILE);
        fs::write(&state_file, serde_json::to_string_pretty(&state)?)
            .with_context(|| format!("writing {}", state_file.display()))?;
        self.netlab.up().context("building the network lab")?;
        Ok(())
    }

    /// The control plane's run directory.
    pub fn control_plane_dir(&self) -> PathBuf {
        self.run_dir().join("controlplane")
    }

    /// Where the ServiceAccount kubeconfigs go.
    pub fn kubeconfig_dir(&self) -> PathBuf {
        self.run_dir().join("kubeconfigs")
    }

    /// The admin kubeconfig (its server is 192.0.2.2:6443, reachable inside the lab only).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.control_plane_dir().join("admin.kubeconfig")
    }

    /// Attaches to this lab's running control plane, or starts one in `<P>cp` (needs the network
    /// up and the binaries built: `cargo xtask controlplane build`).
    pub fn control_plane_up(&self) -> anyhow::Result<ControlPlane> {
        let dir = self.control_plane_dir();
        if let Ok(running) = ControlPlane::attach(&dir) {
            return Ok(running);
        }
        // Whatever is left of an earlier one (a crashed etcd, say) goes first.
        controlplane::stop(&dir)?;
        let config = ControlPlaneConfig::lab(&dir, self.netlab.topology.control_plane_ns());
        ControlPlane::start(config).context("starting the control plane")
    }

    /// Everything: network, control plane, Nodes, manifests, kubeconfigs, FerroLB processes.
    /// Idempotent. Returns the running control plane.
    pub fn up(&self) -> anyhow::Result<ControlPlane> {
        self.network_up()?;
        let control_plane = self.control_plane_up()?;
        let version = control_plane.server_version_blocking()?;
        println!(
            "lab {:?}: kube-apiserver {version} at {}",
            self.prefix(),
            control_plane.server_url
        );
        let args = self.install_ferrolb(&control_plane)?;
        self.remove_stale_nodes(&control_plane)?;
        let kubeconfigs = self.cluster_setup(&control_plane)?;
        for started in self.start_ferrolb_with(&kubeconfigs, &args)? {
            println!("lab {:?}: {started}", self.prefix());
        }
        Ok(control_plane)
    }

    /// Installs FerroLB's objects as [`Self::install`] says. Returns the arguments to run the
    /// binaries with: none for [`Install::Manifests`] (config/'s pods pass only what the lab's
    /// defaults already are), the pod templates' for [`Install::Helm`].
    fn install_ferrolb(&self, control_plane: &ControlPlane) -> anyhow::Result<FerrolbArgs> {
        match &self.install {
            Install::Manifests => {
                for dir in MANIFEST_DIRS {
                    control_plane
                        .install_crds(&paths::workspace_root().join(dir))
                        .with_context(|| format!("applying {dir}"))?;
                }
                Ok(FerrolbArgs::default())
            }
            Install::Helm(release) => {
                // As docs/install.md says to before `helm install`: Helm does not label the
                // namespace, and the speaker's pods need this level.
                control_plane.kubectl_output([
                    "label",
                    "--overwrite",
                    "namespace",
                    FERROLB_NAMESPACE,
                    "pod-security.kubernetes.io/enforce=privileged",
                ])?;
                let output = release
                    .upgrade_install(control_plane)
                    .with_context(|| format!("helm install of {}", release.chart.display()))?;
                println!(
                    "lab {:?}: helm release {:?} of {} installed:\n{}",
                    self.prefix(),
                    release.name,
                    release.chart.display(),
                    output.trim_end()
                );
                // The ServiceAccounts must be the chart's: minting would create missing ones.
                for account in [CONTROLLER_SERVICE_ACCOUNT, SPEAKER_SERVICE_ACCOUNT] {
                    control_plane
                        .kubectl_output(["get", "serviceaccount", account, "-n", FERROLB_NAMESPACE])
                        .with_context(|| {
                            format!("the chart created no ServiceAccount {account}")
                        })?;
                }
                Ok(FerrolbArgs {
                    controller: container_args(
                        control_plane,
                        "deployment",
                        CONTROLLER_SERVICE_ACCOUNT,
                    )?,
                    speaker: container_args(control_plane, "daemonset", SPEAKER_SERVICE_ACCOUNT)?,
                })
            }
        }
    }

    /// Sets a Node's Ready condition, as the node lifecycle controller would after its kubelet
    /// stopped reporting (there is neither in the lab: Nodes stay Ready unless a test says so).
    pub fn set_node_ready(
        &self,
        control_plane: &ControlPlane,
        node: &str,
        ready: bool,
    ) -> anyhow::Result<()> {
        let (status, reason) = if ready {
            ("True", "KubeletReady")
        } else {
            ("Unknown", "NodeStatusUnknown")
        };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({ "status": { "conditions": [{
            "type": "Ready", "status": status, "reason": reason,
            "message": "set by the FerroLB lab", "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }]}});
        control_plane.kubectl_output([
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=strategic",
            "-p",
            &patch.to_string(),
        ])?;
        Ok(())
    }

    /// Deletes Node objects `node<k>` left from an earlier `up` with more nodes.
    fn remove_stale_nodes(&self, control_plane: &ControlPlane) -> anyhow::Result<()> {
        let wanted: Vec<String> = self
            .netlab
            .topology
            .nodes()
            .map(|node| format!("node/{}", node.name))
            .collect();
        let listed = control_plane.kubectl_output(["get", "nodes", "-o", "name"])?;
        for node in listed.lines().map(str::trim) {
            let is_lab_node = node
                .strip_prefix("node/node")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if is_lab_node && !wanted.iter().any(|w| w == node) {
                control_plane.kubectl_output(["delete", node, "--ignore-not-found"])?;
            }
        }
        Ok(())
    }

    /// Registers the Nodes and mints the ServiceAccount kubeconfigs (async kube calls, run on a
    /// thread of their own so this works from sync code and from inside a tokio runtime alike).
    fn cluster_setup(&self, control_plane: &ControlPlane) -> anyhow::Result<FerrolbKubeconfigs> {
        let nodes: Vec<NodeSpec> = self
            .netlab
            .topology
            .nodes()
            .map(|node| NodeSpec {
                name: node.name.clone(),
                internal_ipv4: Some(node.ipv4),
                internal_ipv6: Some(node.ipv6),
                labels: BTreeMap::new(),
            })
            .collect();
        let dir = self.kubeconfig_dir();
        let controller = dir.join("controller.kubeconfig");
        let speaker = dir.join("speaker.kubeconfig");
        let mut speaker_pods = BTreeMap::new();
        block_on_own_thread(async {
            for node in &nodes {
                control_plane.register_node(node).await?;
                let pod = speaker_pod_name(&node.name);
                let uid = control_plane
                    .register_pod(FERROLB_NAMESPACE, &pod, &node.name, SPEAKER_SERVICE_ACCOUNT)
                    .await?;
                speaker_pods.insert(node.name.clone(), (pod, uid));
            }
            control_plane
                .mint_service_account_kubeconfig(
                    FERROLB_NAMESPACE,
                    CONTROLLER_SERVICE_ACCOUNT,
                    &controller,
                )
                .await?;
            control_plane
                .mint_service_account_kubeconfig(
                    FERROLB_NAMESPACE,
                    SPEAKER_SERVICE_ACCOUNT,
                    &speaker,
                )
                .await?;
            anyhow::Ok(())
        })?;
        Ok(FerrolbKubeconfigs {
            controller,
            speakers: nodes
                .into_iter()
                .map(|node| (node.name, speaker.clone()))
                .collect(),
            speaker_pods,
        })
    }

    /// Stops everything the lab started and deletes its namespaces (idempotent).
    pub fn down(&self) -> anyhow::Result<()> {
        // The control plane first, gracefully (etcd likes a clean shutdown); everything left in
        // the lab's namespaces is then stopped by pid.
        controlplane::stop(&self.control_plane_dir())?;
        self.netlab.down().context("tearing the network lab down")?;
        Ok(())
    }

    /// Starts the FerroLB controller (in `cp`) and one speaker per node, each with `KUBECONFIG`,
    /// `NODE_NAME`, `POD_NAME`, `POD_NAMESPACE` (speakers also `POD_UID` of the Pod object the
    /// lab registers, and `HOST_IP`) and `RUST_LOG=info` (output in `controller.log` /
    /// `speaker-<node>.log`), if the
    /// binaries are real implementations (see [`real_binary`]). Already running ones are left
    /// alone. Returns what was (or was not) started, for the log.
    pub fn start_ferrolb(&self, kubeconfigs: &FerrolbKubeconfigs) -> anyhow::Result<Vec<String>> {
        self.start_ferrolb_with(kubeconfigs, &FerrolbArgs::default())
    }

    /// [`Self::start_ferrolb`] with these command-line arguments.
    pub fn start_ferrolb_with(
        &self,
        kubeconfigs: &FerrolbKubeconfigs,
        args: &FerrolbArgs,
    ) -> anyhow::Result<Vec<String>> {
        let mut processes = Vec::new();
        let topology = &self.netlab.topology;
        match real_binary(&self.binaries.controller) {
            Err(why) => processes.push(format!("controller: {why}")),
            Ok(controller) => {
                for replica in 0..self.controller_replicas.max(1) {
                    let mut env = BTreeMap::new();
                    env.insert(
                        "KUBECONFIG".to_string(),
                        kubeconfigs.controller.display().to_string(),
                    );
                    env.insert("NODE_NAME".to_string(), "cp".to_string());
                    // As the Deployment's downward API sets them
                    // (config/controller/deployment.yaml).
                    env.insert("POD_NAME".to_string(), controller_pod_name(replica));
                    env.insert("POD_NAMESPACE".to_string(), FERROLB_NAMESPACE.to_string());
                    env.insert("RUST_LOG".to_string(), "info".to_string());
                    // The output goes to a log file: no colour escapes.
                    env.insert("NO_COLOR".to_string(), "1".to_string());
                    let mut replica_args = args.controller.clone();
                    if replica > 0 {
                        // The replicas share one namespace here, not one pod each: their
                        // servers need ports of their own (the last occurrence wins).
                        let offset = 100 * u16::try_from(replica).unwrap_or(1);
                        replica_args.extend([
                            format!("--metrics-addr=0.0.0.0:{}", 7472 + offset),
                            format!("--webhook-addr=0.0.0.0:{}", 9443 + offset),
                        ]);
                    }
                    let name = controller_process_name(replica);
                    let ns = topology.control_plane_ns();
                    let started = Background {
                        name: &name,
                        ns: &ns,
                        program: &controller,
                        args: replica_args,
                        env,
                        dir: self.run_dir(),
                    }
                    .start()?;
                    processes.push(format!("{name}: {started}"));
                }
            }
        }
        match real_binary(&self.binaries.speaker) {
            Err(why) => processes.push(format!("speakers: {why}")),
            Ok(speaker) => {
                for node in topology.nodes() {
                    let Some(kubeconfig) = kubeconfigs.speakers.get(&node.name) else {
                        anyhow::bail!("no speaker kubeconfig for {}", node.name);
                    };
                    let mut env = BTreeMap::new();
                    env.insert("KUBECONFIG".to_string(), kubeconfig.display().to_string());
                    env.insert("NODE_NAME".to_string(), node.name.clone());
                    // As the DaemonSet's downward API sets them (config/speaker/daemonset.yaml).
                    let (pod, uid) = kubeconfigs
                        .speaker_pods
                        .get(&node.name)
                        .cloned()
                        .unwrap_or_else(|| (speaker_pod_name(&node.name), String::new()));
                    env.insert("POD_NAME".to_string(), pod);
                    env.insert("POD_UID".to_string(), uid);
                    env.insert("POD_NAMESPACE".to_string(), FERROLB_NAMESPACE.to_string());
                    env.insert("HOST_IP".to_string(), node.ipv4.to_string());
                    // $FERROLB_LAB_SPEAKER_LOG: a filter for digging (e.g.
                    // `info,ferrolb_speaker::membership=debug`).
                    let filter = std::env::var("FERROLB_LAB_SPEAKER_LOG")
                        .unwrap_or_else(|_| "info".to_string());
                    env.insert("RUST_LOG".to_string(), filter);
                    // The output goes to a log file: no colour escapes.
                    env.insert("NO_COLOR".to_string(), "1".to_string());
                    let ns = topology.ns(&node.name);
                    let started = Background {
                        name: &format!("speaker-{}", node.name),
                        ns: &ns,
                        program: &speaker,
                        args: args.speaker.clone(),
                        env,
                        dir: self.run_dir(),
                    }
                    .start()?;
                    processes.push(format!("speaker on {}: {started}", node.name));
                }
            }
        }
        Ok(processes)
    }
}

/// Command-line arguments of the FerroLB processes (besides what the environment carries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FerrolbArgs {
    pub controller: Vec<String>,
    pub speaker: Vec<String>,
}

/// `args` of the first container of the stored `kind`/`name` in `ferrolb-system` (empty when it
/// has none).
fn container_args(
    control_plane: &ControlPlane,
    kind: &str,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    let json = control_plane.kubectl_output([
        "get",
        kind,
        name,
        "-n",
        FERROLB_NAMESPACE,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ])?;
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&json).with_context(|| format!("args of {kind}/{name}: {json}"))
}

/// The kubeconfigs the FerroLB processes run with.
#[derive(Debug, Clone, Default)]
pub struct FerrolbKubeconfigs {
    pub controller: PathBuf,
    /// Per node name (`node1` ...).
    pub speakers: BTreeMap<String, PathBuf>,
    /// Per node name: the speaker's Pod object (name, uid), as the DaemonSet would make it.
    pub speaker_pods: BTreeMap<String, (String, String)>,
}

/// The name of the Pod object the lab registers for the speaker on `node`.
pub fn speaker_pod_name(node: &str) -> String {
    format!("ferrolb-speaker-{node}")
}

/// `path` if it is a real implementation: it exists and `--version` succeeds within 5 s. The
/// stubs exit 1, so until the controller and speaker exist the lab simply runs without them.
pub fn real_binary(path: &Path) -> Result<PathBuf, NotReal> {
    if !path.exists() {
        return Err(NotReal::Missing(path.to_path_buf()));
    }
    let mut probe = Command::new(path);
    probe
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = probe
        .spawn()
        .map_err(|_| NotReal::ProbeFailed(path.to_path_buf()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let success = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                // A binary that ignores --version and keeps running is not usable here.
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    };
    if success {
        Ok(path.to_path_buf())
    } else {
        Err(NotReal::ProbeFailed(path.to_path_buf()))
    }
}

/// Why a FerroLB binary is not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReal {
    #[error("not started: {} is not built", .0.display())]
    Missing(PathBuf),
    #[error("not started: `{} --version` failed (still a stub?)", .0.display())]
    ProbeFailed(PathBuf),
}

/// Runs a future to completion on a new thread with its own tokio runtime.
fn block_on_own_thread<F, T>(future: F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>> + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("lab setup thread panicked")))
    })
}

pub fn up(opts: &UpOptions) -> anyhow::Result<()> {
    let lab = Lab::new(&opts.prefix, opts.nodes)?;
    let control_plane = lab.up()?;
    println!(
        "lab {:?} up: {} nodes, run directory {}\nadmin kubeconfig: {} (server {} inside the lab; use `cargo xtask lab kubectl -- ...`)",
        lab.prefix(),
        opts.nodes,
        lab.run_dir().display(),
        control_plane.kubeconfig.display(),
        control_plane.server_url,
    );
    if opts.demo {
        crate::demo::run(&lab, &control_plane)?;
    }
    Ok(())
}

pub fn down(prefix: &str) -> anyhow::Result<()> {
    Lab::existing(prefix)?.down()?;
    println!("lab {prefix:?} down");
    Ok(())
}

pub fn status(prefix: &str) -> anyhow::Result<()> {
    let lab = Lab::existing(prefix)?;
    print!("{}", lab.netlab.status());
    if let Ok(summary) = lab.netlab.router().vtysh("show bgp summary") {
        println!("== router: show bgp summary\n{summary}");
    }
    match ControlPlane::attach(&lab.control_plane_dir()) {
        Ok(control_plane) => println!(
            "== control plane: kube-apiserver {} at {}, kubeconfig {}",
            control_plane.server_version_blocking()?,
            control_plane.server_url,
            control_plane.kubeconfig.display()
        ),
        Err(err) => println!("== control plane: not running ({err:#})"),
    }
    Ok(())
}

/// `lab fail NODE`: cuts a node off and shows the demo Service answered by another node (works
/// with the API server stopped: it reads nothing from it).
pub fn fail(prefix: &str, node: &str) -> anyhow::Result<()> {
    crate::demo::fail(&Lab::existing(prefix)?, node)
}

/// `lab heal NODE`: reconnects a node cut off by `lab fail`.
pub fn heal(prefix: &str, node: &str) -> anyhow::Result<()> {
    crate::demo::heal(&Lab::existing(prefix)?, node)
}

/// Path of the lab's admin kubeconfig.
pub fn kubeconfig(prefix: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = Lab::existing(prefix)?.admin_kubeconfig();
    if !path.exists() {
        anyhow::bail!(
            "no kubeconfig at {}: is the lab {prefix:?} up? (cargo xtask lab up)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs kubectl (the v1.36 one from `target/controlplane`) against the lab, inside the control
/// plane's namespace where the API server address is reachable; returns its exit code.
pub fn kubectl(prefix: &str, args: &[String]) -> anyhow::Result<i32> {
    let lab = Lab::existing(prefix)?;
    let control_plane = ControlPlane::attach(&lab.control_plane_dir())
        .with_context(|| format!("is the lab {prefix:?} up? (cargo xtask lab up)"))?;
    let status = control_plane
        .kubectl(args)
        .status()
        .context("running kubectl")?;
    Ok(status.code().unwrap_or(1))
}
