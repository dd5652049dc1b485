//! Building kube-apiserver, kubectl and etcd from the Go module in `tests/controlplane/`.
//!
//! The binaries land in `target/controlplane/` with a stamp file next to them. The stamp is a hash
//! of everything that decides what gets built (go.mod, go.sum, every `.go` file of the module, the
//! Go version and the link flags), so a change of pins triggers a rebuild and nothing else does.

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

/// Directory of the Go module (go.mod, go.sum, etcd/main.go).
pub fn go_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane")
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

/// `-ldflags`: strip symbols and debug info (the binaries shrink by about a third) and set the
/// version variables that the Kubernetes build scripts (hack/lib/version.sh) would set.
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

/// The stamp for the current inputs.
fn current_stamp(go: &Path) -> anyhow::Result<String> {
    let module = go_module_dir();
    let mut files = Vec::new();
    go_sources(&module, &mut files)?;
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        let relative = file.strip_prefix(&module).unwrap_or(file);
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
    fnv1a(&mut hash, ldflags().as_bytes());
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

/// See [`super::build`].
pub(super) fn build() -> anyhow::Result<()> {
    let go = go_binary();
    let out = output_dir();
    let stamp = current_stamp(&go)?;
    let stamp_path = out.join(STAMP_FILE);
    let up_to_date = fs::read_to_string(&stamp_path).is_ok_and(|old| old.trim() == stamp)
        && existing_binaries().is_ok();
    if up_to_date {
        println!(
            "[controlplane] kube-apiserver, etcd and kubectl {KUBERNETES_VERSION} are up to date in {}",
            out.display()
        );
        return Ok(());
    }

    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // A stale stamp must not survive a failed build.
    let _ = fs::remove_file(&stamp_path);
    let log_path = out.join(LOG_FILE);
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    println!(
        "[controlplane] building kube-apiserver, kubectl ({KUBERNETES_VERSION}) and etcd with {} into {}",
        stamp.split_once(' ').map_or("go", |(_, version)| version),
        out.display()
    );
    println!(
        "[controlplane] a first build downloads ~150 Go modules (600 MB) and compiles ~2,300 packages: 6-15 minutes on 2 cores (log: {})",
        log_path.display()
    );

    let started = Instant::now();
    let mut out_arg = out.clone().into_os_string();
    // A trailing slash makes `go build -o` treat it as a directory for several main packages.
    out_arg.push("/");
    let mut child = Command::new(&go)
        .current_dir(go_module_dir())
        .args(BUILD_FLAGS)
        .arg("-ldflags")
        .arg(ldflags())
        .arg("-o")
        .arg(&out_arg)
        .args(PACKAGES)
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
                        "[controlplane] {downloads} modules downloaded ({:.0?})",
                        started.elapsed()
                    );
                }
            } else if !line.contains(' ') && !line.starts_with('#') {
                packages += 1;
                if packages.is_multiple_of(100) {
                    println!(
                        "[controlplane] {packages} packages compiled ({:.0?}), now {line}",
                        started.elapsed()
                    );
                }
            } else {
                println!("[controlplane] {line}");
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
    existing_binaries()?;
    fs::write(&stamp_path, format!("{stamp}\n"))
        .with_context(|| format!("writing {}", stamp_path.display()))?;
    println!(
        "[controlplane] built in {:.0?}: {}",
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
    fn test_go_module_pins_kubernetes_version() {
        let go_mod = fs::read_to_string(go_module_dir().join("go.mod")).expect("go.mod");
        assert!(go_mod.contains(&format!("k8s.io/kubernetes {KUBERNETES_VERSION}")));
        let staging = format!("v0.{}", KUBERNETES_VERSION.trim_start_matches("v1."));
        assert!(go_mod.contains(&format!("k8s.io/apiserver => k8s.io/apiserver {staging}")));
    }
}
