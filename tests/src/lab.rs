//! The whole lab: network namespaces + control plane + FerroLB processes, under one name prefix.

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

pub fn up(_opts: &UpOptions) -> anyhow::Result<()> {
    anyhow::bail!("lab up not implemented yet")
}

pub fn down(_prefix: &str) -> anyhow::Result<()> {
    anyhow::bail!("lab down not implemented yet")
}

pub fn status(_prefix: &str) -> anyhow::Result<()> {
    anyhow::bail!("lab status not implemented yet")
}

/// Path of the lab's admin kubeconfig.
pub fn kubeconfig(_prefix: &str) -> anyhow::Result<std::path::PathBuf> {
    anyhow::bail!("lab kubeconfig not implemented yet")
}

/// Runs the machine's `kubectl` against the lab; returns its exit code.
pub fn kubectl(_prefix: &str, _args: &[String]) -> anyhow::Result<i32> {
    anyhow::bail!("lab kubectl not implemented yet")
}
