//! `cargo xtask image`: the FerroLB image as an OCI archive, assembled with buildah `from scratch`
//! (no container engine, no registry, no base image).
//!
//! The image holds the release binaries at the paths the manifests' `command:` names, the shared
//! libraries `ldd` lists for them (the dynamic loader, libc, libm, libgcc_s), `/etc/passwd` and
//! `/etc/group` with root and nobody/nogroup (65534, the controller's `runAsUser`), an
//! nsswitch.conf and an empty `/tmp`. No CA certificates: both binaries reach the API server with
//! the CA of the in-cluster configuration (the ServiceAccount's `ca.crt`), never the system's
//! trust store, and nothing else they talk to uses TLS as a client. No shell.
//!
//! The [`Dockerfile`](../../Dockerfile) builds the same image for Docker users on a distroless base;
//! the tests below keep both in step.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use ferrolb_tests::paths;

/// A binary of the image: the cargo package and binary target, and where it goes.
pub struct Binary {
    pub package: &'static str,
    pub name: &'static str,
    pub path: &'static str,
}

/// The binaries, in the order the Dockerfile copies them.
pub const BINARIES: &[Binary] = &[
    Binary {
        package: "ferrolb-controller",
        name: "ferrolb-controller",
        path: "/usr/local/bin/ferrolb-controller",
    },
    Binary {
        package: "ferrolb-speaker",
        name: "ferrolb-speaker",
        path: "/usr/local/bin/ferrolb-speaker",
    },
    Binary {
        package: "ferrolb-crds",
        name: "ferrolbctl",
        path: "/usr/local/bin/ferrolbctl",
    },
];

/// The image's default user: nobody/nogroup, as the controller Deployment runs it (the speaker's
/// DaemonSet sets UID 0 itself).
pub const USER: &str = "65534:65534";
/// The default entrypoint; the manifests choose the binary with `command:` anyway.
pub const ENTRYPOINT: &str = "/usr/local/bin/ferrolb-controller";
/// PATH, so that `kubectl exec ... -- ferrolbctl` finds the tool.
pub const PATH_ENV: &str = "PATH=/usr/local/bin:/usr/bin:/bin";
/// The image's name in the archive (`org.opencontainers.image.ref.name`) without the tag.
pub const NAME: &str = "ferrolb";

const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
/// glibc's lookups without a dlopen: `files` and `dns` are built into libc since glibc 2.34.
const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files dns\n";

/// The version of the workspace, the image's tag.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `<target>/image`.
pub fn image_dir() -> PathBuf {
    paths::target_dir().join("image")
}

/// `<target>/image/ferrolb-<version>.oci.tar`.
pub fn archive_path() -> PathBuf {
    image_dir().join(format!("{NAME}-{}.oci.tar", version()))
}

fn stamp_path() -> PathBuf {
    let mut path = archive_path().into_os_string();
    path.push(".stamp");
    PathBuf::from(path)
}

/// The reference the archive carries: `ferrolb:<version>`.
pub fn reference() -> String {
    format!("{NAME}:{}", version())
}

/// The OCI labels: title, version, source, licenses, description, and the git revision (with
/// `-dirty` when tracked files differ from it) when the workspace is a git checkout.
pub fn labels() -> Vec<(String, String)> {
    let mut labels = vec![
        ("org.opencontainers.image.title", NAME.to_string()),
        ("org.opencontainers.image.version", version().to_string()),
        (
            "org.opencontainers.image.source",
            env!("CARGO_PKG_REPOSITORY").to_string(),
        ),
        (
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE").to_string(),
        ),
        (
            "org.opencontainers.image.description",
            "FerroLB: LoadBalancer Services on bare metal (ferrolb-controller, ferrolb-speaker, ferrolbctl)"
                .to_string(),
        ),
    ];
    if let Some(revision) = git_revision() {
        labels.push(("org.opencontainers.image.revision", revision));
    }
    labels
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(paths::workspace_root())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn git_revision() -> Option<String> {
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])?;
    Some(if dirty.is_empty() {
        head
    } else {
        format!("{head}-dirty")
    })
}

/// The image's creation time and the files' modification time: `$SOURCE_DATE_EPOCH`, else the
/// commit time of HEAD, else 0. A fixed time makes two builds of the same binaries the same image.
fn timestamp() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .or_else(|| git(&["log", "-1", "--format=%ct"]).and_then(|value| value.parse().ok()))
        .unwrap_or(0)
}

/// The shared objects `ldd` lists for `binary` (absolute paths, the dynamic loader included; the
/// vDSO has no file and is left out). Fails on "not found".
pub fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (Debian package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed ({}): {}{}",
            binary.display(),
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", binary.display()))
}

/// Parses `ldd` output: `name => /path (0x...)`, `/path (0x...)` (the loader), `linux-vdso.so.1
/// (0x...)` (no file), `name => not found`.
pub fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("{} not found", name.trim());
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        } else if !path.starts_with("linux-vdso") && !path.starts_with("linux-gate") {
            bail!("unexpected ldd line: {line}");
        }
    }
    Ok(libraries)
}

/// One file of the root filesystem: its path in the image, where its content comes from, its mode.
struct Entry {
    path: String,
    content: Content,
    mode: u32,
}

enum Content {
    File(PathBuf),
    Text(&'static str),
    Dir,
}

/// Everything that goes into the layer, in order (directories are created as needed, 0755).
fn entries(binaries: &[(&Binary, PathBuf)]) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut libraries = BTreeSet::new();
    for (binary, built) in binaries {
        entries.push(Entry {
            path: binary.path.to_string(),
            content: Content::File(built.clone()),
            mode: 0o755,
        });
        libraries.extend(shared_libraries(built)?);
    }
    for library in libraries {
        let mode = fs::metadata(&library)
            .with_context(|| format!("reading {}", library.display()))?
            .permissions()
            .mode()
            & 0o755;
        entries.push(Entry {
            path: library.to_string_lossy().into_owned(),
            content: Content::File(library),
            mode,
        });
    }
    for (path, text) in [
        ("/etc/passwd", PASSWD),
        ("/etc/group", GROUP),
        ("/etc/nsswitch.conf", NSSWITCH),
    ] {
        entries.push(Entry {
            path: path.to_string(),
            content: Content::Text(text),
            mode: 0o644,
        });
    }
    entries.push(Entry {
        path: "/tmp".to_string(),
        content: Content::Dir,
        mode: 0o1777,
    });
    Ok(entries)
}

/// `buildah config` for the image (the container's name goes last).
fn config_args(labels: &[(String, String)]) -> Vec<String> {
    let mut config: Vec<String> = vec![
        "config".into(),
        "--user".into(),
        USER.into(),
        "--entrypoint".into(),
        serde_json::json!([ENTRYPOINT]).to_string(),
        "--env".into(),
        PATH_ENV.into(),
        "--workingdir".into(),
        "/".into(),
        "--created-by".into(),
        "cargo xtask image".into(),
    ];
    for (key, value) in labels {
        config.push("--label".into());
        config.push(format!("{key}={value}"));
    }
    config
}

/// FNV-1a, 64 bit, over everything that decides the image (files by their sha256): a change of a
/// binary, a library, the image's configuration, labels or time builds a new archive, and nothing
/// else does.
fn stamp(entries: &[Entry], labels: &[(String, String)], time: u64) -> anyhow::Result<String> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for entry in entries {
        feed(entry.path.as_bytes());
        feed(&entry.mode.to_le_bytes());
        match &entry.content {
            Content::File(source) => feed(crate::oci::sha256_file(source)?.as_bytes()),
            Content::Text(text) => feed(text.as_bytes()),
            Content::Dir => feed(b"dir"),
        }
    }
    for arg in config_args(labels) {
        feed(arg.as_bytes());
    }
    feed(reference().as_bytes());
    feed(&time.to_le_bytes());
    Ok(format!("{hash:016x}"))
}

/// `cargo build --release --locked` of the image's binaries; their paths.
fn build_binaries() -> anyhow::Result<Vec<(&'static Binary, PathBuf)>> {
    let mut build = crate::cargo();
    build.args(["build", "--release", "--locked"]);
    for binary in BINARIES {
        build.args(["-p", binary.package]);
    }
    for binary in BINARIES {
        build.args(["--bin", binary.name]);
    }
    let started = Instant::now();
    println!(
        "[image] {} (a first release build takes 5-15 minutes on 2 cores)",
        ferrolb_tests::cmd::display(&build)
    );
    crate::run_inherited(build)?;
    println!(
        "[image] release binaries ready after {:.0?}",
        started.elapsed()
    );
    let release = paths::target_dir().join("release");
    Ok(BINARIES
        .iter()
        .map(|binary| (binary, release.join(binary.name)))
        .collect())
}

/// buildah with the image's own storage under `<target>/image/` (vfs: works wherever buildah
/// does, and one small layer costs nothing to copy), so that nothing of the machine's container
/// storage is used or left behind.
fn buildah() -> Command {
    let dir = image_dir();
    let mut cmd = Command::new("buildah");
    cmd.arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .args(["--storage-driver", "vfs"]);
    cmd
}

fn buildah_out<I, S>(args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = buildah();
    cmd.args(args);
    Ok(ferrolb_tests::cmd::stdout(cmd)?.trim().to_string())
}

/// Removes the working container however the build ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = buildah_out(["rm", self.0.as_str()]);
    }
}

/// Whether this process runs as root (buildah `from scratch` with its own storage needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether buildah is on PATH.
pub fn have_buildah() -> bool {
    Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Builds the release binaries (cargo's incremental build) and, unless the archive already holds
/// exactly these files and settings, assembles the image and writes the archive. Returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    if !is_root() {
        bail!("cargo xtask image needs root (buildah from scratch with its own storage)");
    }
    if !have_buildah() {
        bail!("buildah is not installed (apt-get install buildah)");
    }
    let binaries = build_binaries()?;
    let entries = entries(&binaries)?;
    let labels = labels();
    let time = timestamp();
    let stamp = stamp(&entries, &labels, time)?;
    let archive = archive_path();
    if archive.is_file() && fs::read_to_string(stamp_path()).is_ok_and(|old| old.trim() == stamp) {
        println!(
            "[image] {} is up to date (same binaries, libraries and settings)",
            archive.display()
        );
        return Ok(archive);
    }
    let started = Instant::now();
    fs::create_dir_all(image_dir())
        .with_context(|| format!("creating {}", image_dir().display()))?;
    let _ = fs::remove_file(stamp_path());

    let container = Container(buildah_out([
        "from",
        "--name",
        &format!("ferrolb-image-{}", std::process::id()),
        "scratch",
    ])?);
    let root = PathBuf::from(buildah_out(["mount", container.0.as_str()])?);
    populate(&root, &entries)?;
    set_times(&root, time)?;
    buildah_out(["umount", container.0.as_str()])?;

    let mut config = config_args(&labels);
    config.push(container.0.clone());
    buildah_out(&config)?;

    let image = buildah_out([
        "commit",
        "--quiet",
        "--format",
        "oci",
        "--timestamp",
        &time.to_string(),
        container.0.as_str(),
        &reference(),
    ])?;
    let partial = image_dir().join(format!("{NAME}-{}.oci.tar.partial", version()));
    let _ = fs::remove_file(&partial);
    let destination = format!("oci-archive:{}:{}", partial.display(), reference());
    let pushed = buildah_out([
        "push",
        "--quiet",
        "--format",
        "oci",
        image.as_str(),
        destination.as_str(),
    ]);
    let _ = buildah_out(["rmi", image.as_str()]);
    pushed?;
    fs::rename(&partial, &archive)
        .with_context(|| format!("renaming {} to {}", partial.display(), archive.display()))?;
    fs::write(stamp_path(), format!("{stamp}\n"))
        .with_context(|| format!("writing {}", stamp_path().display()))?;
    println!(
        "[image] assembled in {:.0?}: {}",
        started.elapsed(),
        archive.display()
    );
    Ok(archive)
}

fn populate(root: &Path, entries: &[Entry]) -> anyhow::Result<()> {
    for entry in entries {
        let path = root.join(entry.path.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            create_dirs(root, parent)?;
        }
        match &entry.content {
            Content::File(source) => {
                fs::copy(source, &path).with_context(|| {
                    format!("copying {} to {}", source.display(), path.display())
                })?;
            }
            Content::Text(text) => {
                fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?
            }
            Content::Dir => {
                fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}

/// Creates `dir` and its parents below `root`, each 0755 whatever the umask.
fn create_dirs(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut current = root.to_path_buf();
    for component in dir.strip_prefix(root).unwrap_or(dir).components() {
        current.push(component);
        if !current.is_dir() {
            fs::create_dir(&current).with_context(|| format!("creating {}", current.display()))?;
            fs::set_permissions(&current, fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// Every file and directory of the root filesystem gets the image's time.
fn set_times(root: &Path, time: u64) -> anyhow::Result<()> {
    let mut touch = Command::new("find");
    touch
        .arg(root)
        .args(["-exec", "touch", "-h", "-d"])
        .arg(format!("@{time}"))
        .args(["{}", "+"]);
    ferrolb_tests::cmd::run(touch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn read(path: &str) -> String {
        let path = paths::workspace_root().join(path);
        fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    /// The Dockerfile's instructions with `\` continuations joined: (instruction, arguments).
    fn instructions(text: &str) -> Vec<(String, String)> {
        let mut joined = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            if let Some(head) = trimmed.strip_suffix('\\') {
                current.push_str(head);
                current.push(' ');
            } else {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
        joined
            .into_iter()
            .map(|line| match line.split_once(char::is_whitespace) {
                Some((op, rest)) => (op.to_uppercase(), rest.trim().to_string()),
                None => (line.to_uppercase(), String::new()),
            })
            .collect()
    }

    /// The host's chroot, found on the host's PATH (the commands below run with the image's).
    fn chroot() -> PathBuf {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("chroot"))
            .find(|path| path.is_file())
            .expect("chroot (coreutils) on PATH")
    }

    #[test]
    fn parse_ldd_lists_the_loader_and_the_libraries() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc1d7f5000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so.1 not found"), "{err}");
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    /// The Dockerfile builds the same image for Docker users: the same binaries from the same
    /// packages at the same paths, the same user and entrypoint.
    #[test]
    fn the_dockerfile_builds_the_same_binaries_user_and_entrypoint() {
        let steps = instructions(&read("Dockerfile"));
        let last_from = steps
            .iter()
            .rposition(|(op, _)| op == "FROM")
            .expect("a FROM");
        let (builder, runtime) = steps.split_at(last_from);

        let cargo_build = builder
            .iter()
            .find(|(op, args)| op == "RUN" && args.contains("cargo build"))
            .map(|(_, args)| args.clone())
            .expect("the builder stage runs cargo build");
        let words: Vec<&str> = cargo_build.split_whitespace().collect();
        for flag in ["--release", "--locked"] {
            assert!(
                words.contains(&flag),
                "cargo build without {flag}: {cargo_build}"
            );
        }
        let flag_values = |flag: &str| -> BTreeSet<String> {
            words
                .windows(2)
                .filter(|pair| pair[0] == flag)
                .map(|pair| pair[1].to_string())
                .collect()
        };
        let packages: BTreeSet<String> = BINARIES.iter().map(|b| b.package.to_string()).collect();
        let names: BTreeSet<String> = BINARIES.iter().map(|b| b.name.to_string()).collect();
        assert_eq!(flag_values("-p"), packages, "{cargo_build}");
        assert_eq!(flag_values("--bin"), names, "{cargo_build}");

        let mut copied = BTreeSet::new();
        for (op, args) in runtime {
            if op != "COPY" {
                continue;
            }
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|word| !word.starts_with("--"))
                .collect();
            let (destination, sources) = words.split_last().expect("COPY arguments");
            assert!(destination.ends_with('/'), "COPY into a directory: {args}");
            for source in sources {
                let name = source.rsplit('/').next().unwrap();
                copied.insert(format!("{destination}{name}"));
            }
        }
        let expected: BTreeSet<String> = BINARIES.iter().map(|b| b.path.to_string()).collect();
        assert_eq!(copied, expected, "the runtime stage's COPY lines");

        let last = |wanted: &str| {
            runtime
                .iter()
                .rev()
                .find(|(op, _)| op == wanted)
                .map(|(_, args)| args.clone())
                .unwrap_or_else(|| panic!("the runtime stage has no {wanted}"))
        };
        assert_eq!(last("USER"), USER);
        let entrypoint: Vec<String> =
            serde_json::from_str(&last("ENTRYPOINT")).expect("ENTRYPOINT in JSON form");
        assert_eq!(entrypoint, [ENTRYPOINT]);
        // The builder installs every binary where COPY takes it from.
        for binary in BINARIES {
            assert!(
                cargo_build.contains(&format!("/out/{}", binary.name)),
                "the builder does not put {} into /out: {cargo_build}",
                binary.name
            );
        }
    }

    /// The values of `key: [a, b]` (flow list) lines of a manifest.
    fn flow_lists(text: &str, key: &str) -> Vec<Vec<String>> {
        text.lines()
            .filter_map(|line| line.trim().strip_prefix(&format!("{key}:")))
            .filter_map(|rest| {
                let rest = rest.trim();
                rest.strip_prefix('[')?.strip_suffix(']').map(|inner| {
                    inner
                        .split(',')
                        .map(|word| word.trim().trim_matches('"').to_string())
                        .collect()
                })
            })
            .collect()
    }

    /// What the manifests run is in the image, and the controller's user is the image's.
    #[test]
    fn the_manifests_run_binaries_of_the_image_as_its_user() {
        let paths: BTreeSet<&str> = BINARIES.iter().map(|b| b.path).collect();
        for (file, binary) in [
            ("config/controller/deployment.yaml", "ferrolb-controller"),
            ("config/speaker/daemonset.yaml", "ferrolb-speaker"),
        ] {
            let commands = flow_lists(&read(file), "command");
            assert_eq!(commands.len(), 1, "{file}: one container command");
            let command = &commands[0];
            assert!(
                paths.contains(command[0].as_str()),
                "{file} runs {}, not in the image ({paths:?})",
                command[0]
            );
            assert!(
                command[0].ends_with(&format!("/{binary}")),
                "{file}: {command:?}"
            );
        }
        let deployment = read("config/controller/deployment.yaml");
        let value = |key: &str| {
            deployment
                .lines()
                .find_map(|line| line.trim().strip_prefix(&format!("{key}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("the Deployment sets no {key}"))
        };
        assert_eq!(
            format!("{}:{}", value("runAsUser"), value("runAsGroup")),
            USER
        );
        assert!(
            PASSWD
                .lines()
                .any(|line| line.starts_with("nobody:x:65534:65534:"))
        );
        assert!(
            GROUP
                .lines()
                .any(|line| line.starts_with("nogroup:x:65534:"))
        );
        // The speaker runs as root: the image names root too.
        assert!(PASSWD.lines().any(|line| line.starts_with("root:x:0:0:")));
    }

    /// The archive itself, built (or reused when up to date) as `cargo xtask image` does: labels,
    /// user, entrypoint, one layer holding the binaries (root-owned, executable, not writable by
    /// others), every shared library they need, and the binaries run from the unpacked root
    /// filesystem (chroot, as nobody) with `--help`.
    #[test]
    fn the_image_archive() {
        let test = "the_image_archive";
        let ci = std::env::var_os("CI").is_some();
        let why = if !is_root() {
            Some("needs root (buildah from scratch, chroot)")
        } else if !have_buildah() {
            Some("needs buildah (apt-get install buildah)")
        } else {
            None
        };
        if let Some(why) = why {
            assert!(
                !ci,
                "{test}: {why}, and CI is set: failing instead of skipping"
            );
            eprintln!("SKIPPED {test}: {why}");
            return;
        }
        let archive = build().expect("cargo xtask image");
        assert_eq!(archive, archive_path());
        let unpacked = crate::oci::unpack(&archive, &image_dir()).expect("a valid OCI archive");

        assert_eq!(
            unpacked.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            reference()
        );
        for (key, value) in labels() {
            assert_eq!(unpacked.label(&key), Some(value.as_str()), "label {key}");
        }
        assert_eq!(
            unpacked.label("org.opencontainers.image.version"),
            Some(version())
        );
        assert_eq!(unpacked.image_config("User"), USER);
        assert_eq!(
            unpacked.image_config("Entrypoint"),
            &serde_json::json!([ENTRYPOINT])
        );
        let env = unpacked.image_config("Env").as_array().expect("Env");
        assert!(env.iter().any(|e| e == PATH_ENV), "{env:?}");
        assert_eq!(unpacked.config["os"], "linux");
        assert_eq!(unpacked.layers.len(), 1, "one layer: {:?}", unpacked.layers);

        let root = &unpacked.rootfs;
        for binary in BINARIES {
            let path = root.join(binary.path.trim_start_matches('/'));
            let meta = fs::symlink_metadata(&path)
                .unwrap_or_else(|err| panic!("{} missing: {err}", binary.path));
            assert!(meta.is_file(), "{} is not a regular file", binary.path);
            assert_eq!(meta.mode() & 0o7777, 0o755, "{} mode", binary.path);
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{} owner", binary.path);
        }
        // Every needed library resolves inside the image: the image's own loader lists them.
        for binary in BINARIES {
            let mut list = Command::new(chroot());
            list.arg(root)
                .arg("/lib64/ld-linux-x86-64.so.2")
                .arg("--list")
                .arg(binary.path);
            let listing = ferrolb_tests::cmd::stdout(list)
                .unwrap_or_else(|err| panic!("the image's loader on {}: {err}", binary.path));
            let libraries = parse_ldd(&listing)
                .unwrap_or_else(|err| panic!("{}: {err}\n{listing}", binary.path));
            assert!(
                libraries.iter().any(|lib| lib.ends_with("libc.so.6")),
                "{}: {listing}",
                binary.path
            );
            for library in libraries {
                assert!(
                    root.join(library.strip_prefix("/").unwrap()).is_file(),
                    "{} needs {}, not in the image",
                    binary.path,
                    library.display()
                );
            }
        }
        let passwd = fs::read_to_string(root.join("etc/passwd")).expect("/etc/passwd");
        let group = fs::read_to_string(root.join("etc/group")).expect("/etc/group");
        let (uid, gid) = USER.split_once(':').unwrap();
        assert!(
            passwd
                .lines()
                .any(|l| l.split(':').nth(2) == Some(uid) && l.split(':').nth(3) == Some(gid)),
            "{passwd}"
        );
        assert!(
            group.lines().any(|l| l.split(':').nth(2) == Some(gid)),
            "{group}"
        );
        assert!(!root.join("bin/sh").exists(), "the image has no shell");
        let tmp = fs::metadata(root.join("tmp")).expect("/tmp");
        assert_eq!(tmp.mode() & 0o7777, 0o1777);

        // They load and run, as the image's user, with nothing but the image around them.
        for binary in BINARIES {
            let mut help = Command::new(chroot());
            help.arg(format!("--userspec={USER}"))
                .arg(root)
                .arg(binary.path)
                .arg("--help")
                .env_clear()
                .env("PATH", PATH_ENV.trim_start_matches("PATH="));
            let out = ferrolb_tests::cmd::stdout(help)
                .unwrap_or_else(|err| panic!("{} --help in the image: {err}", binary.path));
            assert!(
                out.contains("Usage:"),
                "{} --help printed no usage:\n{out}",
                binary.path
            );
        }
        // The same archive again: the build is reused, not redone.
        let before = fs::metadata(&archive).unwrap().modified().unwrap();
        build().expect("second build");
        assert_eq!(fs::metadata(&archive).unwrap().modified().unwrap(), before);
    }
}
