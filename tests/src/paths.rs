//! Where the lab keeps its state: `<workspace>/target/lab/<prefix>/`.

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding `Cargo.lock`), found from this package's manifest
/// directory at compile time.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The shared cargo target directory (`$CARGO_TARGET_DIR` if set, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

/// The run directory of the lab with this prefix: pids, logs, FRR configs, kubeconfigs.
pub fn run_dir(prefix: &str) -> PathBuf {
    target_dir().join("lab").join(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_lock_file() {
        assert!(workspace_root().join("Cargo.lock").exists());
        assert!(run_dir("ft1-").ends_with("lab/ft1-"));
    }
}
