//! Building kube-apiserver, kubectl and etcd from the Go module in `tests/controlplane/`, and Helm
//! from the one in `tests/helm/`.
//!
//! The binaries land in `target/controlplane/` with a stamp file per module next to them. A stamp
//! is a hash of everything that decides what gets built (go.mod, go.sum, every `.go` file of the
//! module, the Go version and the build and link flags), so a change of pins triggers a rebuild of
//! that module and nothing else does. Helm has a module of its own because it pins other
//! `k8s.io/*` versions than the control plane, and one module would force one set on both.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use super::{Binaries, BinariesMissing};

/// The Kubernetes release the module pins (`k8s.io/kubernetes` in go.mod); stamped into the
/// binaries so that `kubectl version` and `/version` report it.
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// The tag date of [`KUBERNETES_VERSION`] on the Go module proxy: a fixed build date keeps the
/// binaries reproducible.
const BUILD_DATE: &str = "2026-07-22T18:07:38Z";
/// Go packages to build, relative to the module; `go build -o DIR/` names each binary after the
/// last element of its import path.
const PACKAGES: [&str; 3] = [
    "./etcd",
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kubectl",
];
/// `go build` flags besides `-ldflags` and `-o`. `-buildvcs=false`: etcd's main package is in this
/// module, and stamping the FerroLB commit into it would make every commit a different binary.
const BUILD_FLAGS: [&str; 6] = ["build", "-p", "2", "-v", "-trimpath", "-buildvcs=false"];
const STAMP_FILE: &str = "build.stamp";
const LOG_FILE: &str = "build.log";

/// The Helm release the module in `tests/helm/` pins (`helm.sh/helm/v3` in its go.mod); stamped
/// into the binary so that `helm version` reports it.
pub const HELM_VERSION: &str = "v3.22.0";
const HELM_PACKAGES: [&str; 1] = ["helm.sh/helm/v3/cmd/helm"];
const HELM_STAMP_FILE: &str = "helm.stamp";
const HELM_LOG_FILE: &str = "helm-build.log";

/// Directory of the control plane's Go module (go.mod, go.sum, etcd/main.go).
pub fn go_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane")
}

/// Directory of Helm's Go module (go.mod, go.sum; `tool helm.sh/helm/v3/cmd/helm`).
pub fn helm_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm")
}

/// `target/controlplane`, honouring `CARGO_TARGET_DIR`.
pub fn output_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    target.join("controlplane")
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The Go toolchain: `$GO`, else `go` on `PATH`, else `/usr/local/go/bin/go`.
fn go_binary() -> PathBuf {
    if let Some(go) = std::env::var_os("GO") {
        return PathBuf::from(go);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("go"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/local/go/bin/go"))
}

/// `-ldflags` of the control plane: strip symbols and debug info (the binaries shrink by about a
/// third) and set the version variables that the Kubernetes build scripts (hack/lib/version.sh)
/// would set.
fn ldflags() -> String {
    let minor = KUBERNETES_VERSION
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("0");
    let mut flags = String::from("-s -w");
    for package in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (var, value) in [
            ("gitVersion", KUBERNETES_VERSION),
            ("gitMajor", "1"),
            ("gitMinor", minor),
            // The module zip carries no git metadata; an empty commit beats "$Format:%H$".
            ("gitCommit", ""),
            ("gitTreeState", "clean"),
            ("buildDate", BUILD_DATE),
        ] {
            flags.push_str(&format!(" -X {package}.{var}={value}"));
        }
    }
    flags
}

/// The `(major, minor)` Kubernetes version of the `k8s.io/client-go` that a go.mod requires
/// (`v0.37.0` is Kubernetes 1.37), as Helm's Makefile derives it.
fn client_go_kubernetes_version(go_mod: &str) -> Option<(u32, u32)> {
    let version = go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("k8s.io/client-go")).then(|| words.next())?
    })?;
    let mut parts = version.trim_start_matches('v').split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major + 1, minor))
}

/// `-ldflags` of Helm, as Helm's Makefile sets them: the version `helm version` prints, and the
/// Kubernetes version of its client libraries, which is what `helm template` and `helm lint`
/// assume for `.Capabilities.KubeVersion` when they talk to no cluster.
fn helm_ldflags() -> anyhow::Result<String> {
    let go_mod_path = helm_module_dir().join("go.mod");
    let go_mod = fs::read_to_string(&go_mod_path)
        .with_context(|| format!("reading {}", go_mod_path.display()))?;
    let (major, minor) = client_go_kubernetes_version(&go_mod).with_context(|| {
        format!(
            "no k8s.io/client-go requirement in {}",
            go_mod_path.display()
        )
    })?;
    let mut flags = String::from("-s -w");
    for (var, value) in [
        ("internal/version.version", HELM_VERSION),
        ("internal/version.gitTreeState", "clean"),
    ] {
        flags.push_str(&format!(" -X helm.sh/helm/v3/{var}={value}"));
    }
    for package in ["pkg/lint/rules", "pkg/chartutil"] {
        flags.push_str(&format!(
            " -X helm.sh/helm/v3/{package}.k8sVersionMajor={major} -X helm.sh/helm/v3/{package}.k8sVersionMinor={minor}"
        ));
    }
    Ok(flags)
}

/// One `go build` of main packages of one module into `target/controlplane/`.
struct GoBuild {
    /// For messages: `[<tag>] ...`.
    tag: &'static str,
    /// What is built, for messages.
    what: String,
    module: PathBuf,
    packages: &'static [&'static str],
    ldflags: String,
    stamp_file: &'static str,
    log_file: &'static str,
    /// The binaries the build must leave behind.
    binaries: Vec<PathBuf>,
    /// Printed before a build starts: what it downloads and how long it takes.
    first_build_note: &'static str,
}

impl GoBuild {
    fn control_plane() -> GoBuild {
        let binaries = binary_paths();
        GoBuild {
            tag: "controlplane",
            what: format!("kube-apiserver, etcd and kubectl {KUBERNETES_VERSION}"),
            module: go_module_dir(),
            packages: &PACKAGES,
            ldflags: ldflags(),
            stamp_file: STAMP_FILE,
            log_file: LOG_FILE,
            binaries: vec![binaries.kube_apiserver, binaries.etcd, binaries.kubectl],
            first_build_note: "a first build downloads ~150 Go modules (600 MB) and compiles ~2,300 packages: 6-15 minutes on 2 cores",
        }
    }

    fn helm() -> anyhow::Result<GoBuild> {
        Ok(GoBuild {
            tag: "helm",
            what: format!("helm {HELM_VERSION}"),
            module: helm_module_dir(),
            packages: &HELM_PACKAGES,
            ldflags: helm_ldflags()?,
            stamp_file: HELM_STAMP_FILE,
            log_file: HELM_LOG_FILE,
            binaries: vec![helm_path()],
            first_build_note: "a first build downloads ~120 Go modules and compiles ~650 packages: about 2 minutes on 2 cores after the control plane's build (which shares many of them)",
        })
    }
}

/// FNV-1a, 64 bit: a stable, dependency-free content hash (the stamp only has to change when the
/// inputs change; it is no security boundary).
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for byte in bytes {
        *hash ^= u64::from(*byte);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

fn go_sources(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            go_sources(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "go")
            || path
                .file_name()
                .is_some_and(|name| name == "go.mod" || name == "go.sum")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// The stamp for the current inputs of `build`.
fn current_stamp(go: &Path, build: &GoBuild) -> anyhow::Result<String> {
    let module = &build.module;
    let mut files = Vec::new();
    go_sources(module, &mut files)?;
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        let relative = file.strip_prefix(module).unwrap_or(file);
        fnv1a(&mut hash, relative.to_string_lossy().as_bytes());
        fnv1a(
            &mut hash,
            &fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        );
    }
    let version = Command::new(go)
        .arg("version")
        .output()
        .with_context(|| format!("running `{} version`: is Go installed?", go.display()))?;
    fnv1a(&mut hash, &version.stdout);
    fnv1a(&mut hash, BUILD_FLAGS.join(" ").as_bytes());
    fnv1a(&mut hash, build.ldflags.as_bytes());
    Ok(format!(
        "{hash:016x} {}",
        String::from_utf8_lossy(&version.stdout).trim()
    ))
}

/// Paths of the built binaries, whether or not they exist.
pub(super) fn binary_paths() -> Binaries {
    let dir = output_dir();
    Binaries {
        kube_apiserver: dir.join("kube-apiserver"),
        etcd: dir.join("etcd"),
        kubectl: dir.join("kubectl"),
    }
}

pub(super) fn existing_binaries() -> Result<Binaries, BinariesMissing> {
    let binaries = binary_paths();
    let missing: Vec<PathBuf> = [&binaries.kube_apiserver, &binaries.etcd, &binaries.kubectl]
        .into_iter()
        .filter(|path| !path.is_file())
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(binaries)
    } else {
        Err(BinariesMissing { missing })
    }
}

/// The built Helm: `target/controlplane/helm`, whether or not it exists.
pub(super) fn helm_path() -> PathBuf {
    output_dir().join("helm")
}

/// See [`super::build`].
pub(super) fn build() -> anyhow::Result<()> {
    go_build(&GoBuild::control_plane())?;
    go_build(&GoBuild::helm()?)
}

/// Runs `build` unless its stamp is current and its binaries exist.
fn go_build(build: &GoBuild) -> anyhow::Result<()> {
    let tag = build.tag;
    let what = &build.what;
    let go = go_binary();
    let out = output_dir();
    let stamp = current_stamp(&go, build)?;
    let stamp_path = out.join(build.stamp_file);
    let binaries_exist = || build.binaries.iter().all(|binary| binary.is_file());
    let up_to_date =
        fs::read_to_string(&stamp_path).is_ok_and(|old| old.trim() == stamp) && binaries_exist();
    if up_to_date {
        let verb = if build.binaries.len() > 1 {
            "are"
        } else {
            "is"
        };
        println!("[{tag}] {what} {verb} up to date in {}", out.display());
        return Ok(());
    }

    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // A stale stamp must not survive a failed build.
    let _ = fs::remove_file(&stamp_path);
    let log_path = out.join(build.log_file);
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    println!(
        "[{tag}] building {what} with {} into {}",
        stamp.split_once(' ').map_or("go", |(_, version)| version),
        out.display()
    );
    println!(
        "[{tag}] {} (log: {})",
        build.first_build_note,
        log_path.display()
    );

    let started = Instant::now();
    let mut out_arg = out.clone().into_os_string();
    // A trailing slash makes `go build -o` treat it as a directory for several main packages.
    out_arg.push("/");
    let mut child = Command::new(&go)
        .current_dir(&build.module)
        .args(BUILD_FLAGS)
        .arg("-ldflags")
        .arg(&build.ldflags)
        .arg("-o")
        .arg(&out_arg)
        .args(build.packages)
        // Static binaries, no C toolchain needed; the module's go.sum is authoritative (readonly),
        // and the machine's toolchain is used even if go.mod asks for a newer one.
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=readonly")
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{} build`", go.display()))?;

    // `go build -v` prints one line per compiled package on stderr: count them for progress and
    // keep them all in the log.
    let mut tail: Vec<String> = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        let (mut packages, mut downloads) = (0usize, 0usize);
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading go build output")?;
            writeln!(log, "{line}").context("writing build log")?;
            if line.starts_with("go: downloading ") {
                downloads += 1;
                if downloads.is_multiple_of(50) {
                    println!(
                        "[{tag}] {downloads} modules downloaded ({:.0?})",
                        started.elapsed()
                    );
                }
            } else if !line.contains(' ') && !line.starts_with('#') {
                packages += 1;
                if packages.is_multiple_of(100) {
                    println!(
                        "[{tag}] {packages} packages compiled ({:.0?}), now {line}",
                        started.elapsed()
                    );
                }
            } else {
                println!("[{tag}] {line}");
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
            "go build failed ({status}) after {:.0?}; last output:\n{}\n(full log: {})",
            started.elapsed(),
            tail.join("\n"),
            log_path.display()
        );
    }
    let missing: Vec<PathBuf> = build
        .binaries
        .iter()
        .filter(|binary| !binary.is_file())
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(BinariesMissing { missing }.into());
    }
    fs::write(&stamp_path, format!("{stamp}\n"))
        .with_context(|| format!("writing {}", stamp_path.display()))?;
    println!(
        "[{tag}] built in {:.0?}: {}",
        started.elapsed(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_ldflags_set_the_pinned_version() {
        let flags = ldflags();
        assert!(flags.starts_with("-s -w "));
        assert!(flags.contains("-X k8s.io/component-base/version.gitVersion=v1.36.3"));
        assert!(flags.contains("-X k8s.io/component-base/version.gitMinor=36"));
        assert!(flags.contains("-X k8s.io/client-go/pkg/version.gitMajor=1"));
    }

    #[test]
    fn test_fnv1a_known_value() {
        // Reference value of FNV-1a 64 for "a".
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        fnv1a(&mut hash, b"a");
        assert_eq!(hash, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn test_helm_module_pins_helm_version() {
        let go_mod = fs::read_to_string(helm_module_dir().join("go.mod")).expect("go.mod");
        assert!(go_mod.contains(&format!("helm.sh/helm/v3 {HELM_VERSION}")));
        assert!(go_mod.contains("tool helm.sh/helm/v3/cmd/helm"));
        let flags = helm_ldflags().expect("helm ldflags");
        assert!(flags.contains(&format!(
            "-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
        )));
        assert!(flags.contains("-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"));
    }

    #[test]
    fn test_client_go_version_is_kubernetes_version() {
        let go_mod = "require (\n\tk8s.io/api v0.37.0 // indirect\n\tk8s.io/client-go v0.37.2 // indirect\n)\n";
        assert_eq!(client_go_kubernetes_version(go_mod), Some((1, 37)));
        assert_eq!(client_go_kubernetes_version("module x\n"), None);
    }

    #[test]
    fn test_go_module_pins_kubernetes_version() {
        let go_mod = fs::read_to_string(go_module_dir().join("go.mod")).expect("go.mod");
        assert!(go_mod.contains(&format!("k8s.io/kubernetes {KUBERNETES_VERSION}")));
        let staging = format!("v0.{}", KUBERNETES_VERSION.trim_start_matches("v1."));
        assert!(go_mod.contains(&format!("k8s.io/apiserver => k8s.io/apiserver {staging}")));
    }
}
