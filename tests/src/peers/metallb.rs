//! MetalLB v0.16.2 in the lab, for the side-by-side benchmark (issue #15): built from the
//! published Go module, installed into a started [`TestLab`] whose FerroLB processes do not run,
//! and run as the lab runs FerroLB (one controller in the control plane's namespace, one speaker
//! per node namespace, started with [`Background`]).
//!
//! ```no_run
//! use ferrolb_tests::harness::TestLab;
//! use ferrolb_tests::lab::FerrolbBinaries;
//! use ferrolb_tests::peers::metallb::{self, Memberlist, Metallb};
//!
//! let binaries = metallb::build().unwrap();
//! let none = FerrolbBinaries { controller: "/nonexistent".into(), speaker: "/nonexistent".into() };
//! let Some(lab) = TestLab::start_with("bench", 3, none).unwrap() else { return };
//! let metallb = Metallb::install(&lab, &binaries, Memberlist::Tuned).unwrap();
//! metallb.apply_layer2_pool("bench", &["192.0.2.240/28"]).unwrap();
//! ```
//!
//! What MetalLB needs without a kubelet (see `/work/shared/reference/metallb-in-lab.md`, the
//! measurements this module is built on): Pod objects that stand in for its pods (the controller
//! looks its own up for owner references; the speakers find their memberlist peers only through
//! their pods' `status.podIP`), the `default` ServiceAccount (no controller-manager creates it),
//! and the memberlist key both as a Secret and as a file.
//!
//! Build: MetalLB v0.16.2 requires `github.com/metallb/frr-k8s` v0.0.27, which the module proxy
//! here refuses (403). The build copies v0.0.26 from the module cache, adds the two declarations
//! MetalLB's frr-k8s mode needs (`benches/peers/metallb/frr-k8s-compat.go.txt` and one struct
//! field) and builds the module of `benches/peers/metallb/` with a `replace` to that copy.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::harness::TestLab;
use crate::netlab::topology::LanHost;
use crate::paths;
use crate::process::{self, Background};

/// The MetalLB release the Go module in `benches/peers/metallb/` pins.
pub const METALLB_VERSION: &str = "v0.16.2";
/// The namespace MetalLB runs in (its manifests' default).
pub const METALLB_NAMESPACE: &str = "metallb-system";

/// The frr-k8s release the build patches in place of the v0.0.27 MetalLB requires.
const FRR_K8S_VERSION: &str = "v0.0.26";
/// The main packages built; `go build -o DIR/` names the binaries after their last element.
const PACKAGES: [&str; 2] = [
    "go.universe.tf/metallb/controller",
    "go.universe.tf/metallb/speaker",
];
/// `go build` flags. No `-ldflags`: MetalLB's images are built without stripping, so the binary
/// sizes compare with what users run.
const BUILD_FLAGS: [&str; 6] = ["build", "-p", "2", "-v", "-trimpath", "-buildvcs=false"];
/// Files of the committed module copied into the build module.
const MODULE_FILES: [&str; 3] = ["go.mod", "go.sum", "tools.go"];
/// The compat source (see its header), copied into the frr-k8s copy under [`COMPAT_TARGET`].
const COMPAT_FILE: &str = "frr-k8s-compat.go.txt";
const COMPAT_TARGET: &str = "api/v1beta1/zz_ferrolb_compat.go";
/// The frr-k8s file whose `Advertise` struct gets [`ADVERTISE_FIELD`].
const ADVERTISE_FILE: &str = "api/v1beta1/frrconfiguration_types.go";
/// The `Advertise` field of frr-k8s v0.0.27 that v0.0.26 lacks: a struct field cannot be added
/// from another file, so the build inserts it after `PrefixesWithCommunity`.
const ADVERTISE_FIELD: &str = "\n\t// PrefixesWithAsPathPrepend: added by FerroLB's benchmark build (frr-k8s v0.0.27).\n\tPrefixesWithAsPathPrepend []AsPathPrependPrefixes `json:\"withAsPathPrepend,omitempty\"`\n";
const STAMP_FILE: &str = "build.stamp";
const LOG_FILE: &str = "build.log";

/// Names of the stand-in Pods and the memberlist Secret (as MetalLB's manifests name them).
const CONTROLLER_POD: &str = "metallb-controller-lab";
const MEMBERLIST_SECRET: &str = "memberlist";
/// The file name MetalLB reads the key from, in `METALLB_ML_SECRET_KEY_PATH`.
const SECRET_KEY_FILE: &str = "secretkey";
/// The speaker pods' labels: the speakers list pods with these to find their peers.
const SPEAKER_LABELS: &str = "app=metallb,component=speaker";
/// Process names in the run directory (`<name>.log`, `<name>.pid`).
const CONTROLLER_PROCESS: &str = "metallb-controller";
/// Where MetalLB's speaker reads an optional memberlist configuration (a fixed path in
/// `internal/speakerlist`; in its manifests a ConfigMap mounted there).
const MEMBERLIST_CONFIG_DIR: &str = "/etc/metallb";
/// Hang guard for the controller and speakers to start (not a speed assertion).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// SIGTERM grace: the speaker leaves memberlist (1 s) before it exits.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The built MetalLB binaries.
#[derive(Debug, Clone)]
pub struct MetallbBinaries {
    pub controller: PathBuf,
    pub speaker: PathBuf,
}

/// `<target>/peers`: the build module, the patched frr-k8s and [`output_dir`].
fn peers_dir() -> PathBuf {
    paths::target_dir().join("peers")
}

/// Where the binaries, the CRDs ([`crd_dir`]), the stamp and the build log go:
/// `<target>/peers/metallb/`.
pub fn output_dir() -> PathBuf {
    peers_dir().join("metallb")
}

/// MetalLB's CRDs (`config/crd/bases` of the module), copied there by [`build`].
pub fn crd_dir() -> PathBuf {
    output_dir().join("crds")
}

/// The committed Go module: `benches/peers/metallb/`.
pub fn module_dir() -> PathBuf {
    paths::workspace_root()
        .join("benches")
        .join("peers")
        .join("metallb")
}

/// The module that is built: the committed one, copied next to the patched frr-k8s that its
/// `replace` names relatively.
fn build_module_dir() -> PathBuf {
    peers_dir().join("metallb-module")
}

fn patched_frr_k8s_dir() -> PathBuf {
    peers_dir().join(format!("frr-k8s-{FRR_K8S_VERSION}-patched"))
}

/// The Go toolchain: `$GO`, else `go` on `PATH`, else `/usr/local/go/bin/go` (as the control
/// plane's build finds it).
fn go_binary() -> PathBuf {
    if let Some(go) = std::env::var_os("GO") {
        return PathBuf::from(go);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("go"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/local/go/bin/go"))
}

/// The environment every `go` step runs with: static binaries (no C toolchain), the machine's
/// toolchain even though MetalLB's go.mod suggests a newer one, and a go.sum that is
/// authoritative (the committed one is complete, so nothing may change it).
fn go_env(command: &mut Command) -> &mut Command {
    command
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .stdin(Stdio::null())
}

/// FNV-1a, 64 bit: the stamp only has to change when the inputs change (no security boundary).
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for byte in bytes {
        *hash ^= u64::from(*byte);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// The stamp of the current inputs: the committed module files, the patch, the pins, the Go
/// version and the build flags.
fn current_stamp(go: &Path) -> anyhow::Result<String> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let dir = module_dir();
    for name in MODULE_FILES.iter().chain([&COMPAT_FILE]) {
        let path = dir.join(name);
        fnv1a(&mut hash, name.as_bytes());
        fnv1a(
            &mut hash,
            &fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        );
    }
    for text in [ADVERTISE_FIELD, FRR_K8S_VERSION, METALLB_VERSION] {
        fnv1a(&mut hash, text.as_bytes());
    }
    fnv1a(&mut hash, PACKAGES.join(" ").as_bytes());
    fnv1a(&mut hash, BUILD_FLAGS.join(" ").as_bytes());
    let version = Command::new(go)
        .arg("version")
        .output()
        .with_context(|| format!("running `{} version`: is Go installed?", go.display()))?;
    fnv1a(&mut hash, &version.stdout);
    Ok(format!(
        "{hash:016x} {}",
        String::from_utf8_lossy(&version.stdout).trim()
    ))
}

/// The binaries' paths, whether or not they exist.
fn binary_paths() -> MetallbBinaries {
    let out = output_dir();
    MetallbBinaries {
        controller: out.join("controller"),
        speaker: out.join("speaker"),
    }
}

/// Builds MetalLB's controller and speaker from the Go module in benches/peers/metallb
/// (stamped: no rebuild when nothing changed) into <target>/peers/metallb/. Prints progress.
pub fn build() -> anyhow::Result<MetallbBinaries> {
    let go = go_binary();
    let out = output_dir();
    let binaries = binary_paths();
    let stamp = current_stamp(&go)?;
    let stamp_path = out.join(STAMP_FILE);
    let built =
        || binaries.controller.is_file() && binaries.speaker.is_file() && crd_dir().is_dir();
    if fs::read_to_string(&stamp_path).is_ok_and(|old| old.trim() == stamp) && built() {
        println!(
            "[metallb] MetalLB {METALLB_VERSION} is up to date in {}",
            out.display()
        );
        return Ok(binaries);
    }
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // A stale stamp must not survive a failed build.
    let _ = fs::remove_file(&stamp_path);
    let started = Instant::now();
    println!(
        "[metallb] building MetalLB {METALLB_VERSION} with {} into {} (a first build downloads \
         ~100 Go modules and compiles ~850 packages: about 2 minutes on 2 cores after the control \
         plane's build, which shares many of them)",
        stamp.split_once(' ').map_or("go", |(_, version)| version),
        out.display()
    );
    prepare_frr_k8s(&go)?;
    prepare_build_module()?;
    copy_crds(&go)?;
    go_build(&go, &out, started)?;
    let missing: Vec<String> = [&binaries.controller, &binaries.speaker]
        .into_iter()
        .filter(|binary| !binary.is_file())
        .map(|binary| binary.display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!("go build left no {}", missing.join(", "));
    }
    fs::write(&stamp_path, format!("{stamp}\n"))
        .with_context(|| format!("writing {}", stamp_path.display()))?;
    println!(
        "[metallb] built in {:.0?}: {}",
        started.elapsed(),
        out.display()
    );
    Ok(binaries)
}

/// The module cache directory of `module@version` (`go mod download -json`), downloading it if
/// needed.
fn module_cache_dir(go: &Path, module: &str, version: &str) -> anyhow::Result<PathBuf> {
    let peers = peers_dir();
    fs::create_dir_all(&peers).with_context(|| format!("creating {}", peers.display()))?;
    let output = go_env(&mut Command::new(go))
        // Outside any module: the download must not depend on a go.mod.
        .current_dir(&peers)
        .args(["mod", "download", "-json"])
        .arg(format!("{module}@{version}"))
        .output()
        .with_context(|| format!("running go mod download {module}@{version}"))?;
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "go mod download -json {module}@{version} ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;
    if let Some(error) = info["Error"].as_str() {
        bail!("go mod download {module}@{version}: {error}");
    }
    info["Dir"]
        .as_str()
        .map(PathBuf::from)
        .with_context(|| format!("go mod download {module}@{version} names no Dir: {info}"))
}

/// Copies `from` into `to` (created), writable: the module cache is read-only, and the copy is
/// patched and later removed.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o644))
                .with_context(|| format!("chmod {}", target.display()))?;
        }
    }
    Ok(())
}

/// Makes everything under `dir` writable so that it can be removed (a copy from the read-only
/// module cache that failed half-way).
fn make_writable(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            make_writable(&path);
        } else {
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o644));
        }
    }
}

/// `source` with [`ADVERTISE_FIELD`] after the `PrefixesWithCommunity` field of `Advertise`.
fn insert_advertise_field(source: &str) -> anyhow::Result<String> {
    if source.contains("PrefixesWithAsPathPrepend") {
        bail!("frr-k8s already has PrefixesWithAsPathPrepend: not v0.0.26 any more?");
    }
    let start = source
        .find("type Advertise struct {")
        .context("no `type Advertise struct` in frr-k8s")?;
    let field = source[start..]
        .find("PrefixesWithCommunity []CommunityPrefixes")
        .map(|at| start + at)
        .context("no PrefixesWithCommunity field in frr-k8s's Advertise")?;
    let line_end = source[field..]
        .find('\n')
        .map(|at| field + at + 1)
        .context("PrefixesWithCommunity is on the last line")?;
    let struct_end = source[start..].find("\n}").map(|at| start + at);
    if struct_end.is_some_and(|end| end < field) {
        bail!("PrefixesWithCommunity is not a field of frr-k8s's Advertise");
    }
    Ok(format!(
        "{}{ADVERTISE_FIELD}{}",
        &source[..line_end],
        &source[line_end..]
    ))
}

/// The patched copy of frr-k8s [`FRR_K8S_VERSION`], fresh from the module cache.
fn prepare_frr_k8s(go: &Path) -> anyhow::Result<()> {
    let cached = module_cache_dir(go, "github.com/metallb/frr-k8s", FRR_K8S_VERSION)?;
    let patched = patched_frr_k8s_dir();
    if patched.exists() {
        make_writable(&patched);
        fs::remove_dir_all(&patched).with_context(|| format!("removing {}", patched.display()))?;
    }
    copy_tree(&cached, &patched)?;
    let compat = module_dir().join(COMPAT_FILE);
    let compat_target = patched.join(COMPAT_TARGET);
    fs::copy(&compat, &compat_target).with_context(|| {
        format!(
            "copying {} to {}",
            compat.display(),
            compat_target.display()
        )
    })?;
    let types = patched.join(ADVERTISE_FILE);
    let source =
        fs::read_to_string(&types).with_context(|| format!("reading {}", types.display()))?;
    fs::write(&types, insert_advertise_field(&source)?)
        .with_context(|| format!("writing {}", types.display()))?;
    println!(
        "[metallb] frr-k8s {FRR_K8S_VERSION} patched for MetalLB {METALLB_VERSION} in {}",
        patched.display()
    );
    Ok(())
}

/// The build module: the committed files, next to the patched frr-k8s.
fn prepare_build_module() -> anyhow::Result<()> {
    let dir = build_module_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in MODULE_FILES {
        let from = module_dir().join(name);
        let to = dir.join(name);
        fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// MetalLB's CRDs from the module cache into [`crd_dir`] (without the kustomize patch that adds
/// a conversion webhook: the lab runs MetalLB without webhooks).
fn copy_crds(go: &Path) -> anyhow::Result<()> {
    let module = module_cache_dir(go, "go.universe.tf/metallb", METALLB_VERSION)?;
    let bases = module.join("config").join("crd").join("bases");
    let target = crd_dir();
    if target.exists() {
        fs::remove_dir_all(&target).with_context(|| format!("removing {}", target.display()))?;
    }
    copy_tree(&bases, &target)
}

/// `go build` of [`PACKAGES`] in the build module into `out`, at nice 10, with progress.
fn go_build(go: &Path, out: &Path, started: Instant) -> anyhow::Result<()> {
    let log_path = out.join(LOG_FILE);
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    println!("[metallb] go build log: {}", log_path.display());
    let mut out_arg = out.as_os_str().to_os_string();
    // A trailing slash makes `go build -o` treat it as a directory for several main packages.
    out_arg.push("/");
    // Niced: the build shares the machine with whatever else runs.
    let mut command = Command::new("nice");
    command.args(["-n", "10"]).arg(go);
    let mut child = go_env(&mut command)
        .current_dir(build_module_dir())
        .args(BUILD_FLAGS)
        .arg("-o")
        .arg(&out_arg)
        .args(PACKAGES)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{} build`", go.display()))?;
    // `go build -v` prints one line per compiled package on stderr.
    let mut tail: Vec<String> = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        let mut packages = 0usize;
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading go build output")?;
            writeln!(log, "{line}").context("writing build log")?;
            if line.starts_with("go: downloading ") {
                // Counted in the log only.
            } else if !line.contains(' ') && !line.starts_with('#') {
                packages += 1;
                if packages.is_multiple_of(100) {
                    println!(
                        "[metallb] {packages} packages compiled ({:.0?}), now {line}",
                        started.elapsed()
                    );
                }
            } else {
                println!("[metallb] {line}");
            }
            tail.push(line);
            if tail.len() > 40 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().context("waiting for go build")?;
    if !status.success() {
        bail!(
            "go build of MetalLB failed ({status}) after {:.0?}; last output:\n{}\n(full log: {})",
            started.elapsed(),
            tail.join("\n"),
            log_path.display()
        );
    }
    Ok(())
}

/// Which memberlist timers the speakers run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memberlist {
    /// memberlist's LAN defaults, as MetalLB ships: probe every 1 s (500 ms timeout), suspicion
    /// 4 probe intervals at 3 nodes.
    Defaults,
    /// As fast as stays stable in the lab (see [`Memberlist::config`]), through the file MetalLB
    /// reads at `/etc/metallb/memberlist/config.json`.
    Tuned,
}

impl Memberlist {
    /// The name of this variant in benchmark results.
    pub fn label(&self) -> &'static str {
        match self {
            Memberlist::Defaults => "metallb-defaults",
            Memberlist::Tuned => "metallb-tuned",
        }
    }

    /// The memberlist configuration file of this variant; `None` for the defaults (no file).
    ///
    /// MetalLB requires every field (`memberlistFileConfig` in `internal/speakerlist`; durations
    /// as Go duration strings). Only the failure detector differs from memberlist's LAN
    /// defaults: a node is probed every `ProbeInterval` (round-robin, so each of 2 peers every
    /// 200 ms); a missed ack within `ProbeTimeout` (then indirect and TCP probes until the end of
    /// the interval) makes it suspect, and a suspect is declared dead after
    /// `SuspicionMult * max(1, log10 N) * ProbeInterval` = 200 ms at 3 nodes (at N = 3
    /// Lifeguard's suspicion confirmations do not apply: memberlist waits the minimum). Gossip
    /// spreads the verdict every 50 ms. The rest stays at the defaults, including Lifeguard's
    /// `AwarenessMaxMultiplier`, which stretches a node's own timeouts when it is the slow one:
    /// that is what keeps a busy 2-core machine from false suspicions.
    pub fn config(&self) -> Option<serde_json::Value> {
        match self {
            Memberlist::Defaults => None,
            Memberlist::Tuned => Some(serde_json::json!({
                "TCPTimeout": "10s",
                "IndirectChecks": 3,
                "RetransmitMult": 4,
                "SuspicionMult": 2,
                "SuspicionMaxTimeoutMult": 6,
                "PushPullInterval": "30s",
                "ProbeTimeout": "50ms",
                "ProbeInterval": "100ms",
                "DisableTcpPings": false,
                "AwarenessMaxMultiplier": 8,
                "GossipNodes": 3,
                "GossipInterval": "50ms",
                "GossipToTheDeadTime": "30s",
                "GossipVerifyIncoming": true,
                "GossipVerifyOutgoing": true,
                "EnableCompression": true,
                "HandoffQueueDepth": 1024,
                "UDPBufferSize": 1400,
                "QueueCheckInterval": "30s",
            })),
        }
    }
}

/// MetalLB running in a lab: what [`Metallb::install`] set up and started. Its processes are
/// stopped on drop; the lab's teardown would find them too (their pid files are in the run
/// directory and they live in the lab's namespaces).
pub struct Metallb<'a> {
    lab: &'a TestLab,
    binaries: MetallbBinaries,
    memberlist: Memberlist,
    /// The directory holding the memberlist key file (`METALLB_ML_SECRET_KEY_PATH`).
    secret_dir: PathBuf,
}

impl std::fmt::Debug for Metallb<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metallb")
            .field("lab", &self.lab.prefix())
            .field("binaries", &self.binaries)
            .field("memberlist", &self.memberlist)
            .finish()
    }
}

/// The name of the stand-in Pod of the speaker on `node`.
pub fn speaker_pod_name(node: &str) -> String {
    format!("metallb-speaker-{node}")
}

/// The process (log and pid file) name of the speaker on `node`.
pub fn speaker_process_name(node: &str) -> String {
    format!("metallb-speaker-{node}")
}

impl<'a> Metallb<'a> {
    /// Into a started TestLab whose FerroLB processes are NOT running (the caller starts it with
    /// binaries that do not exist, so lab.up() runs no FerroLB process): MetalLB CRDs
    /// (server-side apply), namespace, default ServiceAccount, memberlist Secret, stand-in
    /// controller Pod and one stand-in speaker Pod per node (labels app=metallb,component=speaker,
    /// nodeName, status Running with podIP = node IPv4), the memberlist config file for Tuned;
    /// then starts the controller (in the control-plane namespace, like FerroLB's controller) and
    /// one speaker per node namespace. Waits until the controller runs and every speaker's
    /// memberlist has joined all nodes.
    pub fn install(
        lab: &'a TestLab,
        binaries: &MetallbBinaries,
        memberlist: Memberlist,
    ) -> anyhow::Result<Metallb<'a>> {
        let control_plane = lab.control_plane();
        let crds = crd_dir();
        if !crds.is_dir() {
            bail!(
                "no MetalLB CRDs in {}: run peers::metallb::build() first",
                crds.display()
            );
        }
        control_plane
            .install_crds(&crds)
            .context("applying MetalLB's CRDs")?;
        control_plane.create_namespace(METALLB_NAMESPACE)?;
        // As MetalLB's manifests label it: the speakers' pods use the host network.
        control_plane.kubectl_output([
            "label",
            "--overwrite",
            "namespace",
            METALLB_NAMESPACE,
            "pod-security.kubernetes.io/enforce=privileged",
        ])?;
        let metallb = Metallb {
            lab,
            binaries: binaries.clone(),
            memberlist,
            secret_dir: lab.run_dir().join("metallb").join("memberlist"),
        };
        metallb.create_objects()?;
        metallb.write_memberlist_config()?;

        let mut marks = BTreeMap::new();
        for node in lab.netlab().topology.nodes() {
            marks.insert(node.name.clone(), log_len(&metallb.speaker_log(&node.name)));
        }
        let controller_mark = log_len(&metallb.controller_log());
        let started = Instant::now();
        let controller = metallb.start_controller()?;
        println!("[metallb] controller: {controller}");
        let mut speakers = BTreeMap::new();
        for node in lab.netlab().topology.nodes() {
            let started = metallb.start_speaker(node)?;
            println!("[metallb] speaker on {}: {started}", node.name);
            speakers.insert(node.name.clone(), started.pid);
        }
        metallb.wait_controller_started(controller_mark, controller.pid)?;
        for (node, mark) in &marks {
            let pid = speakers.get(node).copied().unwrap_or(0);
            metallb.wait_speaker_joined(node, *mark, pid)?;
        }
        println!(
            "[metallb] MetalLB {METALLB_VERSION} ({}) running in lab {:?} after {:.1?}",
            memberlist.label(),
            lab.prefix(),
            started.elapsed()
        );
        Ok(metallb)
    }

    /// The memberlist variant the speakers run with.
    pub fn memberlist(&self) -> Memberlist {
        self.memberlist
    }

    /// The controller's log (`metallb-controller.log` in the run directory).
    pub fn controller_log(&self) -> PathBuf {
        self.lab.run_dir().join(format!("{CONTROLLER_PROCESS}.log"))
    }

    /// The log of the speaker on `node` (`metallb-speaker-<node>.log` in the run directory).
    pub fn speaker_log(&self, node: &str) -> PathBuf {
        self.lab
            .run_dir()
            .join(format!("{}.log", speaker_process_name(node)))
    }

    /// IPAddressPool `name` with these addresses + an L2Advertisement for it, in metallb-system
    /// (kubectl apply).
    pub fn apply_layer2_pool(&self, name: &str, addresses: &[&str]) -> anyhow::Result<()> {
        let addresses = serde_json::to_string(addresses)?;
        let yaml = format!(
            "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: {name}, namespace: {METALLB_NAMESPACE}}}
spec:
  addresses: {addresses}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: {name}, namespace: {METALLB_NAMESPACE}}}
spec:
  ipAddressPools: [{name}]
"
        );
        let path = self.lab.run_dir().join(format!("metallb-pool-{name}.yaml"));
        fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        self.lab
            .control_plane()
            .kubectl_output(["apply", "-f", &path.display().to_string()])
            .with_context(|| format!("applying MetalLB pool {name}"))?;
        Ok(())
    }

    /// The controller's pid, if it runs.
    pub fn controller_pid(&self) -> Option<i32> {
        let ns = self.lab.netlab().topology.control_plane_ns();
        self.live_pid(CONTROLLER_PROCESS, &ns)
    }

    /// The pid of the speaker on `node`, if it runs.
    pub fn speaker_pid(&self, node: &str) -> Option<i32> {
        let ns = self.lab.netlab().topology.ns(node);
        self.live_pid(&speaker_process_name(node), &ns)
    }

    /// Starts the speaker on `node` again (after it was killed), same env; returns once its
    /// memberlist has joined all nodes. A speaker that still runs is left alone.
    pub fn restart_speaker(&self, node: &str) -> anyhow::Result<()> {
        let host = self.node(node)?;
        let mark = log_len(&self.speaker_log(node));
        let started = self.start_speaker(host)?;
        if started.already_running {
            return Ok(());
        }
        self.wait_speaker_joined(node, mark, started.pid)
    }

    /// Kills all MetalLB processes (also on drop) and removes the memberlist config files.
    pub fn stop(&self) {
        let mut pids: Vec<i32> = self.controller_pid().into_iter().collect();
        for node in self.lab.netlab().topology.nodes() {
            pids.extend(self.speaker_pid(&node.name));
        }
        let left = process::stop(&pids, STOP_GRACE);
        if !left.is_empty() {
            eprintln!("[metallb] still alive after SIGKILL: {left:?}");
        }
        self.remove_memberlist_config();
    }

    fn node(&self, node: &str) -> anyhow::Result<&'a LanHost> {
        self.lab
            .netlab()
            .topology
            .nodes()
            .find(|host| host.name == node)
            .with_context(|| format!("no node {node:?} in lab {:?}", self.lab.prefix()))
    }

    /// The pid in `<name>.pid` if that process lives, in `ns` (a stale pid may be reused).
    fn live_pid(&self, name: &str, ns: &str) -> Option<i32> {
        process::read_pid(&self.lab.run_dir().join(format!("{name}.pid")))
            .filter(|pid| process::is_alive(*pid) && process::in_netns(*pid, ns))
    }

    /// The namespace's objects MetalLB expects its Deployment, DaemonSet and the
    /// controller-manager to have made: ServiceAccount, memberlist Secret, Pods with status.
    fn create_objects(&self) -> anyhow::Result<()> {
        let control_plane = self.lab.control_plane();
        let key = self.memberlist_key()?;
        let mut yaml = format!(
            "apiVersion: v1
kind: ServiceAccount
metadata: {{name: default, namespace: {METALLB_NAMESPACE}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {MEMBERLIST_SECRET}, namespace: {METALLB_NAMESPACE}}}
type: Opaque
stringData: {{{SECRET_KEY_FILE}: \"{key}\"}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {CONTROLLER_POD}
  namespace: {METALLB_NAMESPACE}
  labels: {{app: metallb, component: controller}}
spec:
  nodeName: cp
  automountServiceAccountToken: false
  containers: [{{name: controller, image: \"quay.io/metallb/controller:{METALLB_VERSION}\"}}]
"
        );
        for node in self.lab.netlab().topology.nodes() {
            yaml.push_str(&format!(
                "---
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: {METALLB_NAMESPACE}
  labels: {{app: metallb, component: speaker}}
spec:
  nodeName: {node}
  hostNetwork: true
  automountServiceAccountToken: false
  containers: [{{name: speaker, image: \"quay.io/metallb/speaker:{METALLB_VERSION}\"}}]
",
                pod = speaker_pod_name(&node.name),
                node = node.name,
            ));
        }
        let path = self.lab.run_dir().join("metallb-objects.yaml");
        fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        control_plane
            .kubectl_output([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=ferrolb-lab",
                "-f",
                &path.display().to_string(),
            ])
            .context("creating MetalLB's ServiceAccount, Secret and stand-in Pods")?;
        // What a kubelet would report for a running hostNetwork pod: the speakers read podIP.
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        for node in self.lab.netlab().topology.nodes() {
            let ip = node.ipv4.to_string();
            let status = serde_json::json!({ "status": {
                "phase": "Running",
                "hostIP": ip, "hostIPs": [{ "ip": ip }],
                "podIP": ip, "podIPs": [{ "ip": ip }],
                "startTime": now,
                "conditions": [
                    { "type": "Ready", "status": "True", "lastTransitionTime": now },
                    { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
                ],
            }});
            control_plane
                .kubectl_output([
                    "patch",
                    "pod",
                    &speaker_pod_name(&node.name),
                    "-n",
                    METALLB_NAMESPACE,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &status.to_string(),
                ])
                .with_context(|| {
                    format!("setting the status of the speaker pod on {}", node.name)
                })?;
        }
        Ok(())
    }

    /// The memberlist key: made once per lab (kept in the run directory, so that a second
    /// install agrees with speakers still running), written where `METALLB_ML_SECRET_KEY_PATH`
    /// points.
    fn memberlist_key(&self) -> anyhow::Result<String> {
        let path = self.secret_dir.join(SECRET_KEY_FILE);
        if let Ok(key) = fs::read_to_string(&path)
            && !key.is_empty()
        {
            return Ok(key);
        }
        let mut bytes = [0u8; 16];
        fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut bytes))
            .context("reading /dev/urandom")?;
        let key: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        fs::create_dir_all(&self.secret_dir)
            .with_context(|| format!("creating {}", self.secret_dir.display()))?;
        // No newline: MetalLB hashes the file's whole content.
        fs::write(&path, &key).with_context(|| format!("writing {}", path.display()))?;
        Ok(key)
    }

    /// `/etc/netns/<node ns>/metallb/memberlist/config.json` of every node for
    /// [`Memberlist::Tuned`]. MetalLB's path is fixed (`/etc/metallb/memberlist/config.json`);
    /// `ip netns exec` bind-mounts each entry of `/etc/netns/<ns>/` over `/etc/<entry>` for the
    /// process it starts, so each lab's speakers see their own file and other labs (and the
    /// host) none. The mount point `/etc/metallb` must exist: an empty directory, created here
    /// and removed by [`Self::stop`] once no lab uses it. A test process killed before `stop`
    /// leaves these files behind (harmless: only `ip netns exec` into a namespace of that name
    /// would see them).
    fn write_memberlist_config(&self) -> anyhow::Result<()> {
        let root_config = Path::new(MEMBERLIST_CONFIG_DIR).join("memberlist/config.json");
        if root_config.exists() {
            bail!(
                "{} exists on this machine: every speaker without a config of its own would \
                 read it; remove it",
                root_config.display()
            );
        }
        self.remove_memberlist_config();
        let Some(config) = self.memberlist.config() else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(&config)?;
        for node in self.lab.netlab().topology.nodes() {
            let dir = self
                .netns_etc(&node.name)
                .join("metallb")
                .join("memberlist");
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join("config.json");
            fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// `/etc/netns/<node's namespace>`.
    fn netns_etc(&self, node: &str) -> PathBuf {
        Path::new("/etc/netns").join(self.lab.netlab().topology.ns(node))
    }

    /// Undoes [`Self::write_memberlist_config`] (idempotent).
    fn remove_memberlist_config(&self) {
        for node in self.lab.netlab().topology.nodes() {
            let etc = self.netns_etc(&node.name);
            let _ = fs::remove_dir_all(etc.join("metallb"));
            // Only if empty: whatever else someone put there stays.
            let _ = fs::remove_dir(&etc);
        }
        let _ = fs::remove_dir("/etc/netns");
        let in_use = fs::read_dir("/etc/netns").is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| entry.path().join("metallb").exists())
        });
        if !in_use {
            // Only if empty (never a real MetalLB installation's files).
            let _ = fs::remove_dir(MEMBERLIST_CONFIG_DIR);
        }
    }

    fn start_controller(&self) -> anyhow::Result<process::Started> {
        let mut env = BTreeMap::new();
        env.insert(
            "KUBECONFIG".to_string(),
            self.lab.lab().admin_kubeconfig().display().to_string(),
        );
        env.insert(
            "METALLB_NAMESPACE".to_string(),
            METALLB_NAMESPACE.to_string(),
        );
        env.insert("METALLB_POD_NAME".to_string(), CONTROLLER_POD.to_string());
        let ns = self.lab.netlab().topology.control_plane_ns();
        Ok(Background {
            name: CONTROLLER_PROCESS,
            ns: &ns,
            program: &self.binaries.controller,
            // No webhooks: nothing in the lab would call them, and their certificates need a
            // Service and a ValidatingWebhookConfiguration.
            args: vec![
                "--webhook-mode=disabled".to_string(),
                "--disable-cert-rotation".to_string(),
                "--log-level=info".to_string(),
            ],
            env,
            dir: self.lab.run_dir(),
        }
        .start()?)
    }

    /// Starts the speaker on `node` with the environment of MetalLB's DaemonSet.
    fn start_speaker(&self, node: &LanHost) -> anyhow::Result<process::Started> {
        if self.memberlist.config().is_some() {
            // The mount point of the per-namespace config (see `write_memberlist_config`); a
            // concurrent `stop` of another lab may have removed it.
            fs::create_dir_all(MEMBERLIST_CONFIG_DIR)
                .with_context(|| format!("creating {MEMBERLIST_CONFIG_DIR}"))?;
        }
        let ip = node.ipv4.to_string();
        let mut env = BTreeMap::new();
        for (key, value) in [
            (
                "KUBECONFIG",
                self.lab.lab().admin_kubeconfig().display().to_string(),
            ),
            ("METALLB_NODE_NAME", node.name.clone()),
            ("METALLB_POD_NAME", speaker_pod_name(&node.name)),
            ("METALLB_NAMESPACE", METALLB_NAMESPACE.to_string()),
            ("METALLB_HOST", ip.clone()),
            ("METALLB_ML_BIND_ADDR", ip),
            ("METALLB_ML_LABELS", SPEAKER_LABELS.to_string()),
            (
                "METALLB_ML_SECRET_KEY_PATH",
                self.secret_dir.display().to_string(),
            ),
            ("METALLB_BGP_TYPE", "native".to_string()),
        ] {
            env.insert(key.to_string(), value);
        }
        let ns = self.lab.netlab().topology.ns(&node.name);
        Ok(Background {
            name: &speaker_process_name(&node.name),
            ns: &ns,
            program: &self.binaries.speaker,
            args: vec!["--log-level=info".to_string()],
            env,
            dir: self.lab.run_dir(),
        }
        .start()?)
    }

    /// Waits until the controller `pid`'s log (from byte `mark`) shows its workers started.
    fn wait_controller_started(&self, mark: u64, pid: i32) -> anyhow::Result<()> {
        let log = self.controller_log();
        wait_for_log(
            "the MetalLB controller to start its workers",
            &log,
            mark,
            pid,
            |lines| lines.iter().any(|line| line.contains("Starting workers")),
        )
    }

    /// Waits until the speaker on `node` (`pid`, its log from byte `mark`) has seen every other
    /// node join its memberlist; checks that it loaded the memberlist config file if and only if
    /// it runs Tuned.
    fn wait_speaker_joined(&self, node: &str, mark: u64, pid: i32) -> anyhow::Result<()> {
        let others: BTreeSet<String> = self
            .lab
            .netlab()
            .topology
            .nodes()
            .map(|host| host.name.clone())
            .filter(|name| name != node)
            .collect();
        let tuned = self.memberlist.config().is_some();
        wait_for_log(
            &format!("the MetalLB speaker on {node} to join {others:?}"),
            &self.speaker_log(node),
            mark,
            pid,
            |lines| {
                let loaded = lines
                    .iter()
                    .any(|line| line.contains("loading memberlist config from file"));
                (loaded || !tuned) && joined_members(lines).is_superset(&others)
            },
        )?;
        if !tuned
            && log_lines_since(&self.speaker_log(node), mark)
                .iter()
                .any(|line| line.contains("loading memberlist config from file"))
        {
            bail!("the speaker on {node} loaded a memberlist config file, but runs Defaults");
        }
        Ok(())
    }
}

impl Drop for Metallb<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The names that the memberlist events in these log lines leave joined (NodeJoin adds, NodeLeave
/// removes, in order). MetalLB logs every event as JSON:
/// `{"msg":"node event - forcing sync","node event":"NodeJoin","node name":"node2",...}`.
pub fn joined_members(lines: &[String]) -> BTreeSet<String> {
    let mut members = BTreeSet::new();
    for line in lines {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(event), Some(name)) = (entry["node event"].as_str(), entry["node name"].as_str())
        else {
            continue;
        };
        match event {
            "NodeJoin" => {
                members.insert(name.to_string());
            }
            "NodeLeave" => {
                members.remove(name);
            }
            _ => {}
        }
    }
    members
}

/// The length of a log file (0 if missing): where the lines of a new start begin.
fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |meta| meta.len())
}

/// The lines of `path` from byte `mark` on.
pub fn log_lines_since(path: &Path, mark: u64) -> Vec<String> {
    let Ok(mut file) = fs::File::open(path) else {
        return Vec::new();
    };
    if file.seek(SeekFrom::Start(mark)).is_err() {
        return Vec::new();
    }
    BufReader::new(file).lines().map_while(Result::ok).collect()
}

/// Polls the log at `path` (from byte `mark`) until `done` holds for its lines; fails early
/// when process `pid` died, and after [`START_TIMEOUT`], with the log's last lines. (By pid
/// alone, not also by namespace: right after the start `ip netns exec` may not have entered it
/// yet.)
fn wait_for_log(
    what: &str,
    path: &Path,
    mark: u64,
    pid: i32,
    done: impl Fn(&[String]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let lines = log_lines_since(path, mark);
        if done(&lines) {
            return Ok(());
        }
        let died = !process::is_alive(pid);
        if died || Instant::now() >= deadline {
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            let why = if died {
                "the process exited".to_string()
            } else {
                format!("not within {START_TIMEOUT:?}")
            };
            bail!(
                "waiting for {what}: {why}; last lines of {}:\n{tail}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_pins_the_metallb_version_and_the_patched_frr_k8s() {
        let go_mod = fs::read_to_string(module_dir().join("go.mod")).unwrap();
        assert!(go_mod.contains(&format!("require go.universe.tf/metallb {METALLB_VERSION}")));
        assert!(go_mod.contains(&format!(
            "replace github.com/metallb/frr-k8s => ../frr-k8s-{FRR_K8S_VERSION}-patched"
        )));
        let go_sum = fs::read_to_string(module_dir().join("go.sum")).unwrap();
        assert!(go_sum.contains(&format!("go.universe.tf/metallb {METALLB_VERSION} h1:")));
    }

    #[test]
    fn advertise_field_goes_into_the_advertise_struct() {
        let source = "type Other struct {\n\tX int\n}\n\ntype Advertise struct {\n\tAllowed A `json:\"allowed\"`\n\tPrefixesWithCommunity []CommunityPrefixes `json:\"withCommunity,omitempty\"`\n}\n";
        let patched = insert_advertise_field(source).unwrap();
        assert!(patched.contains(
            "`json:\"withCommunity,omitempty\"`\n\n\t// PrefixesWithAsPathPrepend: added"
        ));
        assert!(patched.ends_with(
            "PrefixesWithAsPathPrepend []AsPathPrependPrefixes `json:\"withAsPathPrepend,omitempty\"`\n}\n"
        ));
        assert!(insert_advertise_field(&patched).is_err(), "patched twice");
        assert!(insert_advertise_field("type Advertise struct {\n}\n").is_err());
    }

    #[test]
    fn tuned_config_sets_every_field_metallb_requires() {
        // memberlistFileConfig in MetalLB v0.16.2's internal/speakerlist: all fields required.
        let fields = [
            "TCPTimeout",
            "IndirectChecks",
            "RetransmitMult",
            "SuspicionMult",
            "SuspicionMaxTimeoutMult",
            "PushPullInterval",
            "ProbeTimeout",
            "ProbeInterval",
            "DisableTcpPings",
            "AwarenessMaxMultiplier",
            "GossipNodes",
            "GossipInterval",
            "GossipToTheDeadTime",
            "GossipVerifyIncoming",
            "GossipVerifyOutgoing",
            "EnableCompression",
            "HandoffQueueDepth",
            "UDPBufferSize",
            "QueueCheckInterval",
        ];
        let config = Memberlist::Tuned.config().unwrap();
        let object = config.as_object().unwrap();
        assert_eq!(object.len(), fields.len());
        for field in fields {
            assert!(object.contains_key(field), "{field} missing");
        }
        assert_eq!(Memberlist::Defaults.config(), None);
        assert_eq!(Memberlist::Tuned.label(), "metallb-tuned");
        assert_eq!(Memberlist::Defaults.label(), "metallb-defaults");
    }

    #[test]
    fn joined_members_follow_join_and_leave_events() {
        let event = |event: &str, name: &str| {
            format!(
                "{{\"level\":\"info\",\"msg\":\"node event - forcing sync\",\"node event\":\"{event}\",\"node name\":\"{name}\"}}"
            )
        };
        let lines = vec![
            event("NodeJoin", "node1"),
            "not json".to_string(),
            event("NodeJoin", "node2"),
            event("NodeJoin", "node3"),
            event("NodeLeave", "node2"),
            event("NodeUpdate", "node3"),
        ];
        let joined: Vec<String> = joined_members(&lines).into_iter().collect();
        assert_eq!(joined, ["node1", "node3"]);
    }
}
