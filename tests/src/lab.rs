//! The whole lab: network namespaces + control plane + FerroLB processes, under one name prefix.
//!
//! State lives in the run directory ([`crate::paths::run_dir`]): `lab.json` (what `up` built),
//! pid and log files of every process, FRR configs, the control plane's PKI and kubeconfigs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

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

/// One lab: its network and its run directory.
#[derive(Debug, Clone)]
pub struct Lab {
    pub netlab: Netlab,
}

impl Lab {
    /// The lab with this prefix and node count (nothing is started).
    pub fn new(prefix: &str, nodes: usize) -> anyhow::Result<Lab> {
        Ok(Lab {
            netlab: Netlab::new(prefix, nodes, &paths::run_dir(prefix))?,
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

    /// Stops everything the lab started and deletes its namespaces (idempotent).
    pub fn down(&self) -> anyhow::Result<()> {
        self.netlab.down().context("tearing the network lab down")?;
        Ok(())
    }

    /// Starts the FerroLB controller (in `cp`) and one speaker per node, each with `KUBECONFIG`
    /// and `NODE_NAME`, if the binaries are real implementations (see [`real_binary`]). Returns
    /// what was started, for the log.
    pub fn start_ferrolb(&self, kubeconfigs: &FerrolbKubeconfigs) -> anyhow::Result<Vec<String>> {
        let mut started = Vec::new();
        let topology = &self.netlab.topology;
        if let Some(controller) = real_binary("ferrolb-controller") {
            let mut env = BTreeMap::new();
            env.insert(
                "KUBECONFIG".to_string(),
                kubeconfigs.controller.display().to_string(),
            );
            env.insert("NODE_NAME".to_string(), "cp".to_string());
            env.insert("RUST_LOG".to_string(), "info".to_string());
            let ns = topology.control_plane_ns();
            let pid = Background {
                name: "controller",
                ns: &ns,
                program: &controller,
                args: Vec::new(),
                env,
                dir: self.run_dir(),
            }
            .start()?;
            started.push(format!("controller (pid {pid})"));
        }
        if let Some(speaker) = real_binary("ferrolb-speaker") {
            for node in topology.nodes() {
                let Some(kubeconfig) = kubeconfigs.speakers.get(&node.name) else {
                    anyhow::bail!("no speaker kubeconfig for {}", node.name);
                };
                let mut env = BTreeMap::new();
                env.insert("KUBECONFIG".to_string(), kubeconfig.display().to_string());
                env.insert("NODE_NAME".to_string(), node.name.clone());
                env.insert("RUST_LOG".to_string(), "info".to_string());
                let ns = topology.ns(&node.name);
                let pid = Background {
                    name: &format!("speaker-{}", node.name),
                    ns: &ns,
                    program: &speaker,
                    args: Vec::new(),
                    env,
                    dir: self.run_dir(),
                }
                .start()?;
                started.push(format!("speaker on {} (pid {pid})", node.name));
            }
        }
        Ok(started)
    }
}

/// The kubeconfigs the FerroLB processes run with.
#[derive(Debug, Clone, Default)]
pub struct FerrolbKubeconfigs {
    pub controller: PathBuf,
    /// Per node name (`node1` ...).
    pub speakers: BTreeMap<String, PathBuf>,
}

/// The path of a FerroLB binary (`$FERROLB_CONTROLLER_BIN` / `$FERROLB_SPEAKER_BIN`, else
/// `target/debug/<name>`) if it is a real implementation: it exists and `--version` succeeds
/// within 5 s. The stubs exit 1, so today the lab runs without them.
pub fn real_binary(name: &str) -> Option<PathBuf> {
    let var = format!(
        "{}_BIN",
        name.trim_start_matches("ferrolb-").to_ascii_uppercase()
    );
    let path = std::env::var_os(format!("FERROLB_{var}"))
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::target_dir().join("debug").join(name));
    if !path.exists() {
        tracing::info!("{} not built: not starting it", path.display());
        return None;
    }
    let mut probe = Command::new(&path);
    probe
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = probe.spawn() else {
        return None;
    };
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
    if !success {
        tracing::info!(
            "{} --version failed (a stub?): not starting it",
            path.display()
        );
        return None;
    }
    Some(path)
}

pub fn up(opts: &UpOptions) -> anyhow::Result<()> {
    let lab = Lab::new(&opts.prefix, opts.nodes)?;
    lab.network_up()?;
    println!(
        "lab {:?} up: {} nodes, run directory {}",
        lab.prefix(),
        opts.nodes,
        lab.run_dir().display()
    );
    if opts.demo {
        println!("demo: not available yet (needs the FerroLB controller and speaker)");
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
    Ok(())
}

/// Path of the lab's admin kubeconfig.
pub fn kubeconfig(prefix: &str) -> anyhow::Result<std::path::PathBuf> {
    let _ = prefix;
    anyhow::bail!("lab kubeconfig not implemented yet")
}

/// Runs the machine's `kubectl` against the lab; returns its exit code.
pub fn kubectl(prefix: &str, args: &[String]) -> anyhow::Result<i32> {
    let _ = (prefix, args);
    anyhow::bail!("lab kubectl not implemented yet")
}
