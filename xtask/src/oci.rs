//! Reading an OCI archive (a tar of an OCI image layout: `oci-layout`, `index.json`,
//! `blobs/sha256/...`) with nothing but tar, gzip and sha256sum: the index, the one image manifest,
//! its config, and the layers unpacked into one root filesystem. Every blob is checked against its
//! digest and size, and every layer against the config's `diff_ids`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use serde_json::Value;

/// An archive unpacked into a directory that is removed on drop.
pub struct Unpacked {
    dir: PathBuf,
    pub index: Value,
    pub manifest: Value,
    pub manifest_digest: String,
    pub config: Value,
    /// The layers' media types and (compressed) sizes, in order.
    pub layers: Vec<(String, u64)>,
    /// The layers applied in order (no whiteouts: the image is built from scratch in one layer, and
    /// a whiteout is refused).
    pub rootfs: PathBuf,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Unpacked {
    /// A field of the config's `config` object (`User`, `Entrypoint`, `Labels`, ...).
    pub fn image_config(&self, field: &str) -> &Value {
        &self.config["config"][field]
    }

    /// A label's value, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.image_config("Labels")[key].as_str()
    }
}

pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut cmd = Command::new("sha256sum");
    cmd.arg(path);
    let out = ferrolb_tests::cmd::stdout(cmd)?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// sha256 of a gzip stream's content (`gzip -dc FILE | sha256sum`).
fn sha256_gunzipped(path: &Path) -> anyhow::Result<String> {
    let mut gunzip = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting gzip")?;
    let stdout = gunzip.stdout.take().context("gzip stdout")?;
    let out = Command::new("sha256sum")
        .stdin(stdout)
        .output()
        .context("running sha256sum")?;
    if !gunzip.wait()?.success() || !out.status.success() {
        bail!("gzip -dc {} | sha256sum failed", path.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The blob a descriptor points to, checked against its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> anyhow::Result<PathBuf> {
    let digest = descriptor["digest"]
        .as_str()
        .context("descriptor without digest")?;
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("digest {digest} is not sha256");
    };
    let path = layout.join("blobs/sha256").join(hex);
    let size = fs::metadata(&path)
        .with_context(|| format!("blob {digest} missing from the archive"))?
        .len();
    if descriptor["size"].as_u64() != Some(size) {
        bail!(
            "blob {digest}: descriptor size {} but the file has {size} bytes",
            descriptor["size"]
        );
    }
    let actual = sha256_file(&path)?;
    if actual != hex {
        bail!("blob {digest} has sha256 {actual}");
    }
    Ok(path)
}

fn json(path: &Path) -> anyhow::Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Unpacks `archive` below `work` (a fresh directory inside it) and checks its structure.
pub fn unpack(archive: &Path, work: &Path) -> anyhow::Result<Unpacked> {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = work.join(format!(
        "unpack-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    let layout = dir.join("layout");
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&layout).with_context(|| format!("creating {}", layout.display()))?;
    fs::create_dir_all(&rootfs)?;
    // From here the directory goes with the value, on error too.
    let mut unpacked = Unpacked {
        dir,
        index: Value::Null,
        manifest: Value::Null,
        manifest_digest: String::new(),
        config: Value::Null,
        layers: Vec::new(),
        rootfs: rootfs.clone(),
    };
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(archive).arg("-C").arg(&layout);
    ferrolb_tests::cmd::run(tar)?;

    let oci_layout = json(&layout.join("oci-layout"))?;
    if oci_layout["imageLayoutVersion"] != "1.0.0" {
        bail!("oci-layout: {oci_layout}");
    }
    unpacked.index = json(&layout.join("index.json"))?;
    let manifests = unpacked.index["manifests"]
        .as_array()
        .context("index.json without manifests")?;
    if manifests.len() != 1 {
        bail!(
            "index.json lists {} manifests, expected one",
            manifests.len()
        );
    }
    let descriptor = &manifests[0];
    if descriptor["mediaType"] != "application/vnd.oci.image.manifest.v1+json" {
        bail!(
            "index.json: manifest media type {}",
            descriptor["mediaType"]
        );
    }
    unpacked.manifest_digest = descriptor["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    unpacked.manifest = json(&blob(&layout, descriptor)?)?;
    let config_descriptor = &unpacked.manifest["config"];
    if config_descriptor["mediaType"] != "application/vnd.oci.image.config.v1+json" {
        bail!("config media type {}", config_descriptor["mediaType"]);
    }
    unpacked.config = json(&blob(&layout, config_descriptor)?)?;
    let diff_ids: Vec<String> = unpacked.config["rootfs"]["diff_ids"]
        .as_array()
        .context("config without rootfs.diff_ids")?
        .iter()
        .map(|id| id.as_str().unwrap_or_default().to_string())
        .collect();
    let layers = unpacked.manifest["layers"]
        .as_array()
        .context("manifest without layers")?
        .clone();
    if layers.len() != diff_ids.len() {
        bail!("{} layers but {} diff_ids", layers.len(), diff_ids.len());
    }
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let path = blob(&layout, layer)?;
        let media_type = layer["mediaType"].as_str().unwrap_or_default().to_string();
        let (uncompressed, flag) = match media_type.as_str() {
            "application/vnd.oci.image.layer.v1.tar" => (sha256_file(&path)?, "-xf"),
            "application/vnd.oci.image.layer.v1.tar+gzip" => (sha256_gunzipped(&path)?, "-xzf"),
            other => bail!("layer media type {other} (expected tar or tar+gzip)"),
        };
        if format!("sha256:{uncompressed}") != *diff_id {
            bail!(
                "layer {} unpacks to sha256:{uncompressed}, diff_id {diff_id}",
                layer["digest"]
            );
        }
        let mut list = Command::new("tar");
        list.arg(flag.replace('x', "t")).arg(&path);
        let names = ferrolb_tests::cmd::stdout(list)?;
        if let Some(whiteout) = names.lines().find(|name| name.contains(".wh.")) {
            bail!("layer {} has a whiteout: {whiteout}", layer["digest"]);
        }
        // As root, tar keeps the owners and modes of the layer.
        let mut extract = Command::new("tar");
        extract
            .arg(flag)
            .arg(&path)
            .arg("-C")
            .arg(&rootfs)
            .arg("--same-owner")
            .arg("--same-permissions");
        ferrolb_tests::cmd::run(extract)?;
        unpacked
            .layers
            .push((media_type, layer["size"].as_u64().unwrap_or_default()));
    }
    Ok(unpacked)
}

/// The regular files below `root`, as image paths with their sizes, sorted.
pub fn files(root: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> anyhow::Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let path = entry.path();
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                out.push((format!("/{}", relative.display()), meta.len()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}
