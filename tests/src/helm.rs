//! The Helm chart `charts/ferrolb` as a release in a test control plane: `helm upgrade
//! --install` and `helm uninstall` with the Helm that [`crate::controlplane::build`] builds, run
//! like kubectl (inside the control plane's namespace, with the admin kubeconfig).
//!
//! The release goes into [`FERROLB_NAMESPACE`], where the lab runs FerroLB's processes (it has
//! no kubelet: the chart's Deployment and DaemonSet are stored, and the lab runs the binaries as
//! their ServiceAccounts, see [`crate::lab::Install::Helm`]).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::controlplane::{ControlPlane, FERROLB_NAMESPACE};
use crate::paths;

/// The chart, in the workspace.
pub fn chart_dir() -> PathBuf {
    paths::workspace_root().join("charts").join("ferrolb")
}

/// The release name the docs use (`helm install ferrolb ...`).
pub const RELEASE: &str = "ferrolb";

/// A release of the chart: its name and the values files (`-f`, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmRelease {
    pub name: String,
    pub chart: PathBuf,
    pub values: Vec<PathBuf>,
}

impl HelmRelease {
    /// Release [`RELEASE`] of `charts/ferrolb` with these values files.
    pub fn ferrolb(values: impl IntoIterator<Item = PathBuf>) -> HelmRelease {
        HelmRelease {
            name: RELEASE.to_string(),
            chart: chart_dir(),
            values: values.into_iter().collect(),
        }
    }

    /// This release with other values files (what `helm upgrade -f other.yaml` applies).
    pub fn with_values(&self, values: impl IntoIterator<Item = PathBuf>) -> HelmRelease {
        HelmRelease {
            values: values.into_iter().collect(),
            ..self.clone()
        }
    }

    /// `helm upgrade --install NAME CHART --namespace ferrolb-system --create-namespace -f ...`,
    /// the docs' command: installs, or upgrades an installed release. Returns Helm's output
    /// (with the chart's NOTES).
    pub fn upgrade_install(&self, control_plane: &ControlPlane) -> anyhow::Result<String> {
        let mut args: Vec<OsString> = vec![
            "upgrade".into(),
            "--install".into(),
            self.name.clone().into(),
            self.chart.clone().into(),
            "--namespace".into(),
            FERROLB_NAMESPACE.into(),
            "--create-namespace".into(),
        ];
        for values in &self.values {
            args.push("-f".into());
            args.push(values.into());
        }
        control_plane.helm_output(args)
    }

    /// `helm uninstall NAME --namespace ferrolb-system --wait`: returns once every object of the
    /// release is gone.
    pub fn uninstall(&self, control_plane: &ControlPlane) -> anyhow::Result<String> {
        control_plane.helm_output([
            "uninstall",
            &self.name,
            "--namespace",
            FERROLB_NAMESPACE,
            "--wait",
        ])
    }

    /// `helm get manifest`: what the release's current revision installed (without the CRDs).
    pub fn manifest(&self, control_plane: &ControlPlane) -> anyhow::Result<String> {
        control_plane.helm_output([
            "get",
            "manifest",
            &self.name,
            "--namespace",
            FERROLB_NAMESPACE,
        ])
    }
}
