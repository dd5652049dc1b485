//! What the MetalLB compatibility tests share: the edit a migrating user makes, running the
//! built `ferrolbctl`, and reading its output back as objects.

// Each test file is its own crate and uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrolb_crds::config::{ClusterResources, InputObject, parse_documents};
use serde_json::Value;

/// `tests/data/<name>` of the workspace (shared with the API-server tests of `ferrolb-tests`).
pub fn data_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(name)
}

pub fn read_data(dir: &str, file: &str) -> String {
    let path = data_dir(dir).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The edit docs/configuration.md ("Migrating from MetalLB") tells a migrating user to make:
/// the `metallb.io` API versions become `ferrolb.io/v1beta1`, `metallb-system` becomes
/// `ferrolb-system`. Nothing else.
pub fn user_edit(metallb: &str) -> String {
    let mut out = String::new();
    for line in metallb.split_inclusive('\n') {
        let edited = if line.starts_with("apiVersion: metallb.io/v1beta1")
            || line.starts_with("apiVersion: metallb.io/v1beta2")
        {
            line.replacen("metallb.io/v1beta2", "ferrolb.io/v1beta1", 1)
                .replacen("metallb.io/v1beta1", "ferrolb.io/v1beta1", 1)
        } else {
            line.replacen("namespace: metallb-system", "namespace: ferrolb-system", 1)
        };
        out.push_str(&edited);
    }
    out
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the built `ferrolbctl` with `args` and `text` saved as `name` (the last argument, given
/// relative to the working directory, so that messages name the file as `name`).
pub fn ferrolbctl(args: &[&str], name: &str, text: &str) -> Run {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ferrolb-metallb-compat-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing the input");
    let output = Command::new(env!("CARGO_BIN_EXE_ferrolbctl"))
        .current_dir(&dir)
        .args(args)
        .arg(name)
        .output()
        .expect("running ferrolbctl");
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        code: output.status.code().expect("ferrolbctl exited with a code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A YAML text as `ferrolbctl` reads it: the configuration objects, the objects that are not
/// configuration, and the resources the objects make.
pub struct Read {
    pub objects: Vec<InputObject>,
    pub others: Vec<Value>,
    pub resources: ClusterResources,
}

pub fn read(text: &str, what: &str) -> Read {
    let parsed = parse_documents(text, what).expect("YAML");
    assert_eq!(parsed.errors, Vec::<String>::new(), "{what}");
    let objects: Vec<InputObject> = parsed.documents.into_iter().map(|d| d.object).collect();
    let mut resources = ClusterResources::default();
    for object in &objects {
        resources
            .add(object.clone())
            .expect("one legacy ConfigMap at most");
    }
    Read {
        objects,
        others: parsed.others.into_iter().map(|o| o.value).collect(),
        resources,
    }
}
