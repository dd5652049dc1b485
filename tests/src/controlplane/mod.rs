//! The test control plane: kube-apiserver and etcd built from Go modules (see
//! `tests/controlplane/go.mod`), started with real authentication and RBAC.
//!
//! * [`build`] compiles kube-apiserver, kubectl (both `k8s.io/kubernetes` v1.36.3), a small etcd
//!   main and Helm (`helm.sh/helm/v3`, module `tests/helm/`) into `target/controlplane/`;
//!   [`binaries`] and [`helm`] find them.
//! * [`ControlPlane::start`] generates a PKI, starts etcd and kube-apiserver as detached processes
//!   (optionally inside a network namespace), writes an admin kubeconfig into the run directory
//!   and waits for `/readyz`. [`ControlPlane::attach`] picks up a running one, [`stop`] ends it.
//! * From the root namespace, [`ControlPlane::client`] reaches an API server inside a namespace
//!   through a loopback [`Forwarder`]; [`in_netns`] runs code inside a namespace.
//!
//! Run directory layout: `controlplane.json` (the config), `admin.kubeconfig`, `pki/`,
//! `etcd-data/`, `etcd.{pid,log}`, `kube-apiserver.{pid,log}`.

mod build;
pub mod certs;
pub mod netns;
mod process;

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::{Deserialize, Serialize};

pub use build::{HELM_VERSION, KUBERNETES_VERSION, go_module_dir, helm_module_dir, output_dir};
pub use netns::{Forwarder, enter_netns, in_netns};

/// The Service CIDRs (dual-stack; documentation ranges only).
pub const SERVICE_CLUSTER_IP_RANGE: &str = "203.0.113.0/25,2001:db8:100::/112";
/// The `kubernetes` Service's ClusterIP: the first address of the IPv4 Service CIDR.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The API server's addresses inside the lab's control-plane namespace.
pub const LAB_APISERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const LAB_APISERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
pub const LAB_APISERVER_PORT: u16 = 6443;
/// The namespace FerroLB's components run in.
pub const FERROLB_NAMESPACE: &str = "ferrolb-system";
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Lifetime of minted ServiceAccount tokens: longer than any lab session.
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 30 * 24 * 3600;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STATE_FILE: &str = "controlplane.json";
const ETCD: &str = "etcd";
const APISERVER: &str = "kube-apiserver";

/// Builds kube-apiserver, etcd, kubectl and Helm into `target/controlplane/` unless they are
/// already there and built from the current pins. Prints progress; the first build takes many
/// minutes.
pub fn build() -> anyhow::Result<()> {
    build::build()
}

/// The built Helm ([`HELM_VERSION`]), or [`BinariesMissing`] with a hint. Separate from
/// [`binaries`], so that tests that need no Helm do not depend on it.
pub fn helm() -> Result<PathBuf, BinariesMissing> {
    let helm = build::helm_path();
    if helm.is_file() {
        Ok(helm)
    } else {
        Err(BinariesMissing {
            missing: vec![helm],
        })
    }
}

/// Paths of the control-plane binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
}

/// The binaries have not been built (yet).
#[derive(Debug, thiserror::Error)]
#[error(
    "Go-built binaries missing ({}); build them with `cargo xtask controlplane build`",
    missing.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ")
)]
pub struct BinariesMissing {
    pub missing: Vec<PathBuf>,
}

/// The built binaries, or [`BinariesMissing`] with a hint.
pub fn binaries() -> Result<Binaries, BinariesMissing> {
    build::existing_binaries()
}

/// Where and how to run the control plane. Saved as `controlplane.json` in the run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPlaneConfig {
    /// Holds the PKI, kubeconfig, etcd data, logs and pid files.
    pub run_dir: PathBuf,
    /// Network namespace to run in (`ip netns exec`); `None` runs in the caller's namespace.
    pub netns: Option<String>,
    /// The API server's advertised address; also the address in the kubeconfigs.
    pub listen_v4: Ipv4Addr,
    /// An IPv6 address of the API server (put into the serving certificate).
    pub listen_v6: Option<Ipv6Addr>,
    /// The API server's secure port.
    pub port: u16,
    /// etcd's client and peer ports, on 127.0.0.1.
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
}

impl ControlPlaneConfig {
    /// The lab layout: inside `netns`, API server on 192.0.2.2 / 2001:db8:2::2 port 6443 (it binds
    /// every address of that namespace), etcd on 127.0.0.1:2379/2380.
    pub fn lab(run_dir: impl Into<PathBuf>, netns: impl Into<String>) -> Self {
        ControlPlaneConfig {
            run_dir: run_dir.into(),
            netns: Some(netns.into()),
            listen_v4: LAB_APISERVER_V4,
            listen_v6: Some(LAB_APISERVER_V6),
            port: LAB_APISERVER_PORT,
            etcd_client_port: 2379,
            etcd_peer_port: 2380,
        }
    }

    /// In the caller's namespace on 127.0.0.1 only, with free ports picked now: for tests that
    /// need no root and no lab.
    pub fn loopback(run_dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        // Hold all three listeners at once so the ports differ; they are released right away.
        let listeners = (0..3)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<Result<Vec<_>, _>>()
            .context("picking free loopback ports")?;
        let ports = listeners
            .iter()
            .map(|listener| listener.local_addr().map(|addr| addr.port()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ControlPlaneConfig {
            run_dir: run_dir.into(),
            netns: None,
            listen_v4: Ipv4Addr::LOCALHOST,
            listen_v6: None,
            port: ports[0],
            etcd_client_port: ports[1],
            etcd_peer_port: ports[2],
        })
    }

    /// `https://<listen_v4>:<port>`, the URL as seen from inside the control plane's namespace.
    pub fn server_url(&self) -> String {
        format!("https://{}", SocketAddr::from((self.listen_v4, self.port)))
    }

    fn serving_ips(&self) -> Vec<IpAddr> {
        let mut ips = vec![
            IpAddr::V4(self.listen_v4),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(KUBERNETES_SERVICE_IP),
        ];
        ips.extend(self.listen_v6.map(IpAddr::V6));
        ips.dedup();
        ips
    }

    /// kube-apiserver's command line.
    fn apiserver_args(&self, pki: &certs::Pki) -> Vec<String> {
        // In a namespace of its own the API server binds every address there (v4 and v6); in a
        // shared namespace only the loopback-or-given address, never the machine's interfaces.
        let bind = match self.netns {
            Some(_) => "::".to_string(),
            None => self.listen_v4.to_string(),
        };
        let path = |path: &Path| path.display().to_string();
        vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_client_port),
            format!("--bind-address={bind}"),
            format!("--advertise-address={}", self.listen_v4),
            format!("--secure-port={}", self.port),
            format!("--tls-cert-file={}", path(&pki.serving_cert)),
            format!("--tls-private-key-file={}", path(&pki.serving_key)),
            format!("--client-ca-file={}", path(&pki.ca_cert)),
            "--authorization-mode=Node,RBAC".to_string(),
            format!(
                "--service-account-key-file={}",
                path(&pki.service_account_pub)
            ),
            format!(
                "--service-account-signing-key-file={}",
                path(&pki.service_account_key)
            ),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            "--allow-privileged=true".to_string(),
            "--profiling=false".to_string(),
            // On top of the default admission chain (which needs no controller-manager or
            // scheduler: tests create no Pods), NodeRestriction as on a real cluster.
            "--enable-admission-plugins=NodeRestriction".to_string(),
            "--v=1".to_string(),
        ]
    }
}

/// A Node to register (there is no kubelet to do it).
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    pub name: String,
    pub internal_ipv4: Option<Ipv4Addr>,
    pub internal_ipv6: Option<Ipv6Addr>,
    /// Extra labels besides `kubernetes.io/hostname` and `kubernetes.io/os`.
    pub labels: BTreeMap<String, String>,
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    pub config: ControlPlaneConfig,
    pub run_dir: PathBuf,
    /// Admin kubeconfig (client certificate in `system:masters`), pointing at [`Self::server_url`].
    pub kubeconfig: PathBuf,
    /// The API server URL as seen from inside its namespace.
    pub server_url: String,
    pub binaries: Binaries,
    /// Lazily started root-namespace forwarder to the API server (only with a netns).
    forwarder: Mutex<Option<Forwarder>>,
}

/// Writes a kubeconfig (JSON, which is YAML) with one cluster, one user, one context.
fn write_kubeconfig(
    out: &Path,
    server: &str,
    ca_cert: &Path,
    user_name: &str,
    user: serde_json::Value,
) -> anyhow::Result<()> {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "ferrolb-lab", "cluster": {
            "server": server,
            "certificate-authority": ca_cert,
        }}],
        "users": [{ "name": user_name, "user": user }],
        "contexts": [{ "name": "ferrolb-lab", "context": {
            "cluster": "ferrolb-lab",
            "user": user_name,
        }}],
        "current-context": "ferrolb-lab",
    });
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(out, serde_json::to_string_pretty(&kubeconfig)?)
        .with_context(|| format!("writing {}", out.display()))
}

impl ControlPlane {
    fn new(config: ControlPlaneConfig, binaries: Binaries) -> Self {
        ControlPlane {
            run_dir: config.run_dir.clone(),
            kubeconfig: config.run_dir.join("admin.kubeconfig"),
            server_url: config.server_url(),
            binaries,
            config,
            forwarder: Mutex::new(None),
        }
    }

    /// Starts etcd and kube-apiserver with a fresh PKI and fresh etcd data, waits until `/readyz`
    /// passes (up to 60 s), creates the `ferrolb-system` namespace and prints the server version.
    /// Fails if a control plane is already running in `config.run_dir` (use [`Self::attach`]).
    pub fn start(mut config: ControlPlaneConfig) -> anyhow::Result<Self> {
        let binaries = binaries()?;
        fs::create_dir_all(&config.run_dir)
            .with_context(|| format!("creating {}", config.run_dir.display()))?;
        // Absolute paths everywhere: kubectl resolves relative paths in a kubeconfig against the
        // kubeconfig's directory, the processes against their working directory.
        config.run_dir = fs::canonicalize(&config.run_dir)
            .with_context(|| format!("resolving {}", config.run_dir.display()))?;
        let run_dir = &config.run_dir.clone();
        for name in [ETCD, APISERVER] {
            if let Some(pid) = process::read_pid(&process::pid_file(run_dir, name))
                && process::is_alive(pid)
                && process::runs_program(pid, name)
            {
                bail!(
                    "{name} is already running (pid {pid}) in {}; attach to it or stop it first",
                    run_dir.display()
                );
            }
        }
        let etcd_data = run_dir.join("etcd-data");
        if etcd_data.exists() {
            fs::remove_dir_all(&etcd_data)
                .with_context(|| format!("removing old {}", etcd_data.display()))?;
        }
        let pki = certs::generate(run_dir, &config.serving_ips())?;
        fs::write(
            run_dir.join(STATE_FILE),
            serde_json::to_string_pretty(&config)?,
        )
        .context("writing the control-plane state file")?;

        let control_plane = ControlPlane::new(config, binaries);
        write_kubeconfig(
            &control_plane.kubeconfig,
            &control_plane.server_url,
            &pki.ca_cert,
            "admin",
            serde_json::json!({
                "client-certificate": pki.admin_cert,
                "client-key": pki.admin_key,
            }),
        )?;

        let config = &control_plane.config;
        let netns = config.netns.as_deref();
        println!(
            "[controlplane] starting etcd and kube-apiserver {KUBERNETES_VERSION} ({}) in {}",
            control_plane.server_url,
            netns.map_or_else(|| "this namespace".to_string(), |ns| format!("netns {ns}"))
        );
        process::spawn_detached(
            netns,
            &control_plane.binaries.etcd,
            &[
                format!("--data-dir={}", etcd_data.display()),
                format!(
                    "--listen-client-url=http://127.0.0.1:{}",
                    config.etcd_client_port
                ),
                format!(
                    "--listen-peer-url=http://127.0.0.1:{}",
                    config.etcd_peer_port
                ),
                // At "warn", etcd logs every request from kube-apiserver as "request stats".
                "--log-level=error".to_string(),
            ],
            &process::log_file(run_dir, ETCD),
            &process::pid_file(run_dir, ETCD),
        )?;
        // kube-apiserver retries etcd until it answers, so no wait in between.
        process::spawn_detached(
            netns,
            &control_plane.binaries.kube_apiserver,
            &config.apiserver_args(&pki),
            &process::log_file(run_dir, APISERVER),
            &process::pid_file(run_dir, APISERVER),
        )?;

        let started = Instant::now();
        if let Err(error) = control_plane.wait_ready(READY_TIMEOUT) {
            let _ = control_plane.stop();
            return Err(error);
        }
        control_plane.create_namespace(FERROLB_NAMESPACE)?;
        let version = control_plane.server_version_blocking()?;
        println!(
            "[controlplane] kube-apiserver {version} ready after {:.1?}; kubeconfig {}",
            started.elapsed(),
            control_plane.kubeconfig.display()
        );
        Ok(control_plane)
    }

    /// Attaches to the control plane already running in `run_dir` (checks that both processes
    /// are alive and the API server is ready).
    pub fn attach(run_dir: &Path) -> anyhow::Result<Self> {
        let state = run_dir.join(STATE_FILE);
        let config: ControlPlaneConfig = serde_json::from_str(
            &fs::read_to_string(&state)
                .with_context(|| format!("no control plane in {}", run_dir.display()))?,
        )
        .with_context(|| format!("parsing {}", state.display()))?;
        let control_plane = ControlPlane::new(config, binaries()?);
        control_plane.check_processes()?;
        control_plane.wait_ready(Duration::from_secs(5))?;
        Ok(control_plane)
    }

    /// Whether both processes are alive.
    pub fn is_running(&self) -> bool {
        self.check_processes().is_ok()
    }

    fn check_processes(&self) -> anyhow::Result<()> {
        for name in [ETCD, APISERVER] {
            let pid = process::read_pid(&process::pid_file(&self.run_dir, name));
            let running = || {
                pid.is_some_and(|pid| process::is_alive(pid) && process::runs_program(pid, name))
            };
            // While `ip netns exec` execs the program, /proc/PID/cmdline reads empty for a moment:
            // look twice before declaring it dead (a false "died" used to abort `lab up`).
            let mut alive = running();
            if !alive {
                thread::sleep(Duration::from_millis(300));
                alive = running();
            }
            if !alive {
                bail!(
                    "{name} is not running (pid {pid:?}); last log lines:\n{}",
                    process::log_tail(&process::log_file(&self.run_dir, name), 3000)
                );
            }
        }
        Ok(())
    }

    /// Pids of (etcd, kube-apiserver) as recorded in the run directory.
    pub fn pids(&self) -> (Option<i32>, Option<i32>) {
        (
            process::read_pid(&process::pid_file(&self.run_dir, ETCD)),
            process::read_pid(&process::pid_file(&self.run_dir, APISERVER)),
        )
    }

    /// Stops kube-apiserver, then etcd. See [`stop`].
    pub fn stop(&self) -> anyhow::Result<()> {
        stop(&self.run_dir)
    }

    /// `kubectl --kubeconfig <admin> ARGS`, run inside the control plane's namespace (with
    /// `ip netns exec`) when it has one. The matched v1.36 kubectl from `target/controlplane`.
    pub fn kubectl<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = match &self.config.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", ns])
                    .arg(&self.binaries.kubectl);
                command
            }
            None => Command::new(&self.binaries.kubectl),
        };
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command
    }

    /// `helm --kubeconfig <admin> ARGS` (the [`helm`] binary), run inside the control plane's
    /// namespace when it has one, as [`Self::kubectl`]. Helm's cache, configuration and data go
    /// to `helm/` in the run directory, not to the caller's home.
    pub fn helm<I, S>(&self, args: I) -> Result<Command, BinariesMissing>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let helm = helm()?;
        let mut command = match &self.config.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(helm);
                command
            }
            None => Command::new(helm),
        };
        let home = self.run_dir.join("helm");
        command
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args);
        Ok(command)
    }

    /// Runs helm, returning stdout or an error with its stderr.
    pub fn helm_output<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        stdout_of(self.helm(args)?)
    }

    /// Runs kubectl as admin and returns (stdout, stderr); panics, with stderr, unless it
    /// succeeds.
    pub fn kubectl_ok<I, S>(&self, args: I) -> (String, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = self.kubectl(args);
        let description = format!("{command:?}");
        let output = command
            .output()
            .unwrap_or_else(|error| panic!("running {description}: {error}"));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "{description} failed ({}): {stderr}",
            output.status
        );
        (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
    }

    /// Runs kubectl, returning stdout or an error with its stderr.
    pub fn kubectl_output<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        stdout_of(self.kubectl(args))
    }

    /// Polls `/readyz` with the admin credentials; on timeout or a crashed process the error
    /// carries the tail of the API server's log.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Err(error) = self.check_processes() {
                bail!("control plane died while starting: {error:#}");
            }
            let last_error = match self.kubectl_output(["get", "--raw", "/readyz"]) {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "kube-apiserver not ready after {timeout:?}: {last_error}\nlast lines of {}:\n{}",
                    process::log_file(&self.run_dir, APISERVER).display(),
                    process::log_tail(&process::log_file(&self.run_dir, APISERVER), 4000)
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Creates a Namespace unless it exists.
    pub fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let exists = self
            .kubectl_output(["get", "namespace", name, "--ignore-not-found", "-o", "name"])?
            .contains(name);
        if !exists {
            self.kubectl_output(["create", "namespace", name])?;
        }
        Ok(())
    }

    /// `gitVersion` of the server's `/version`, fetched with kubectl (no async runtime needed).
    pub fn server_version_blocking(&self) -> anyhow::Result<String> {
        let body = self.kubectl_output(["get", "--raw", "/version"])?;
        let info: serde_json::Value = serde_json::from_str(&body).context("parsing /version")?;
        info["gitVersion"]
            .as_str()
            .map(str::to_owned)
            .context("no gitVersion in /version")
    }

    /// `gitVersion` of the server's `/version`.
    pub async fn server_version(&self) -> anyhow::Result<String> {
        Ok(self.client().await?.apiserver_version().await?.git_version)
    }

    /// The API server URL reachable from the caller's namespace: the server URL itself without a
    /// netns, else `https://127.0.0.1:<port>` of a [`Forwarder`] into the namespace (covered by
    /// the serving certificate). Needs root with a netns.
    pub fn reachable_url(&self) -> anyhow::Result<String> {
        let Some(ns) = &self.config.netns else {
            return Ok(self.server_url.clone());
        };
        let mut forwarder = self
            .forwarder
            .lock()
            .map_err(|_| anyhow::anyhow!("forwarder lock poisoned"))?;
        if forwarder.is_none() {
            *forwarder = Some(Forwarder::start(
                ns,
                SocketAddr::from((self.config.listen_v4, self.config.port)),
            )?);
        }
        let local = forwarder
            .as_ref()
            .map(Forwarder::local_addr)
            .context("forwarder missing")?;
        Ok(format!("https://{local}"))
    }

    /// A kube client with the admin credentials, usable from the caller's namespace.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        self.client_for(&self.kubeconfig).await
    }

    /// A kube client from any kubeconfig for this control plane (e.g. one from
    /// [`Self::mint_service_account_kubeconfig`]), usable from the caller's namespace.
    pub async fn client_for(&self, kubeconfig: &Path) -> anyhow::Result<kube::Client> {
        let kubeconfig_file = Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig_file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading {}", kubeconfig.display()))?;
        config.cluster_url = self.reachable_url()?.parse()?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Writes to `out` a kubeconfig for ServiceAccount `namespace/name` (created if missing) with
    /// a TokenRequest token valid 30 days, so a component runs with exactly the RBAC granted to
    /// it. The server URL is [`Self::server_url`] (as seen inside the lab).
    pub async fn mint_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        out: &Path,
    ) -> anyhow::Result<PathBuf> {
        let client = self.client().await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, namespace);
        if accounts.get_opt(name).await?.is_none() {
            let account: ServiceAccount = serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "namespace": namespace },
            }))?;
            match accounts.create(&PostParams::default(), &account).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error).context("creating the ServiceAccount"),
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(SERVICE_ACCOUNT_TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let response = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for {namespace}/{name}"))?;
        let token = response
            .status
            .and_then(|status| status.token)
            .context("TokenRequest returned no token")?;
        write_kubeconfig(
            out,
            &self.server_url,
            &certs::Pki::in_dir(&self.run_dir).ca_cert,
            &format!("system:serviceaccount:{namespace}:{name}"),
            serde_json::json!({ "token": token }),
        )?;
        Ok(out.to_path_buf())
    }

    /// Creates (or updates) a Node and marks it Ready with its addresses, as a kubelet would.
    /// Creates (or keeps) the Pod object a DaemonSet would have made for `pod` on `node`, so a
    /// process started by the lab has a real owner for what it creates (its status objects'
    /// ownerReferences). No kubelet runs it: it stays Pending. Returns its UID.
    pub async fn register_pod(
        &self,
        namespace: &str,
        pod: &str,
        node: &str,
        service_account: &str,
    ) -> anyhow::Result<String> {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client().await?, namespace);
        let object: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": pod, "labels": { "app.kubernetes.io/component": "speaker" } },
            "spec": {
                "nodeName": node,
                "serviceAccountName": service_account,
                "automountServiceAccountToken": false,
                "containers": [{ "name": "speaker", "image": "ferrolb-speaker:lab" }],
            },
        }))?;
        let applied = pods
            .patch(
                pod,
                &PatchParams::apply("ferrolb-lab").force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("creating Pod {namespace}/{pod}"))?;
        applied
            .metadata
            .uid
            .with_context(|| format!("Pod {namespace}/{pod} has no uid"))
    }

    pub async fn register_node(&self, spec: &NodeSpec) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client().await?);
        let mut labels = spec.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), spec.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": spec.name, "labels": labels },
        }))?;
        nodes
            .patch(
                &spec.name,
                &PatchParams::apply("ferrolb-lab").force(),
                &Patch::Apply(&node),
            )
            .await
            .with_context(|| format!("creating Node {}", spec.name))?;

        let mut addresses = vec![serde_json::json!({ "type": "Hostname", "address": spec.name })];
        addresses.extend(
            spec.internal_ipv4
                .map(|ip| serde_json::json!({ "type": "InternalIP", "address": ip })),
        );
        addresses.extend(
            spec.internal_ipv6
                .map(|ip| serde_json::json!({ "type": "InternalIP", "address": ip })),
        );
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = serde_json::json!({ "status": {
            "conditions": [
                { "type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "registered by the FerroLB lab", "lastHeartbeatTime": now,
                  "lastTransitionTime": now },
                { "type": "NetworkUnavailable", "status": "False", "reason": "LabNetwork",
                  "message": "lab network is up", "lastHeartbeatTime": now,
                  "lastTransitionTime": now },
            ],
            "addresses": addresses,
        }});
        nodes
            .patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("setting the status of Node {}", spec.name))?;
        Ok(())
    }

    /// Applies every `*.yaml`/`*.yml` in `dir` except `kustomization.yaml` with kubectl and waits
    /// until the CRDs among them are Established. An empty or missing dir is not an error.
    /// Returns the applied files.
    pub fn install_crds(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| {
                    path.extension()
                        .is_some_and(|ext| ext == "yaml" || ext == "yml")
                        && path.file_stem().is_some_and(|stem| stem != "kustomization")
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        if files.is_empty() {
            println!("[controlplane] no CRD manifests in {}", dir.display());
            return Ok(files);
        }
        let mut args: Vec<std::ffi::OsString> = vec!["apply".into(), "--server-side".into()];
        for file in &files {
            args.push("-f".into());
            args.push(file.into());
        }
        self.kubectl_output(&args)?;
        let crds = self.kubectl_output(
            std::iter::once(std::ffi::OsString::from("get"))
                .chain(args[2..].iter().cloned())
                .chain(["-o".into(), "name".into()]),
        )?;
        let crds: Vec<&str> = crds
            .lines()
            .filter(|line| line.starts_with("customresourcedefinition"))
            .collect();
        if !crds.is_empty() {
            let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
            wait.extend(crds.iter().copied());
            self.kubectl_output(wait)?;
        }
        println!(
            "[controlplane] applied {} manifest(s) from {}; {} CRD(s) Established",
            files.len(),
            dir.display(),
            crds.len()
        );
        Ok(files)
    }
}

/// Stops the control plane recorded in `run_dir` (kube-apiserver first, then etcd; SIGTERM, then
/// SIGKILL after 10 s). Stopping one that is not running is not an error.
pub fn stop(run_dir: &Path) -> anyhow::Result<()> {
    for name in [APISERVER, ETCD] {
        process::stop_pid_file(
            &process::pid_file(run_dir, name),
            name,
            Duration::from_secs(10),
        );
    }
    Ok(())
}

/// The API server's warnings in kubectl's stderr (`Warning: ...` lines), except kubectl's own
/// about the last-applied annotation: tests create namespaces and CRDs otherwise than with a
/// client-side `kubectl apply`, which users will not have done.
pub fn api_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| {
            line.starts_with("Warning:") && !line.contains("last-applied-configuration annotation")
        })
        .collect()
}

/// Runs `command`: its stdout, or an error with its stderr.
fn stdout_of(mut command: Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
