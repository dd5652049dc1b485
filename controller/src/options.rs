//! Command-line flags (also used by in-process callers of [`crate::run`]).

use std::net::SocketAddr;
use std::time::Duration;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The controller's settings.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "ferrolb-controller",
    version,
    about = "FerroLB controller: assigns LoadBalancer IPs to Services"
)]
pub struct Options {
    /// Namespace of the configuration objects (IPAddressPools, ..., the legacy ConfigMap).
    #[arg(long, env = "POD_NAMESPACE", default_value = ferrolb_crds::v1beta1::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Name of MetalLB's legacy ConfigMap in `--namespace`.
    #[arg(long, default_value = ferrolb_crds::cluster::LEGACY_CONFIG_MAP_NAME)]
    pub config_map: String,
    /// Only handle Services with this `spec.loadBalancerClass`; unset: only Services without one.
    #[arg(long)]
    pub lb_class: Option<String>,
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:7472")]
    pub metrics_addr: SocketAddr,
    /// Leader election Lease duration, in seconds: a standby takes over within this time.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "ferrolb-controller")]
    pub lease_name: String,
    /// Namespace of the leader election Lease (default: `--namespace`).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Holder identity in the Lease (default: `$POD_NAME`, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Options {
    /// Defaults for everything, as the binary would run without flags.
    pub fn defaults() -> Options {
        <Options as clap::Parser>::parse_from(["ferrolb-controller"])
    }

    pub fn lease_namespace(&self) -> &str {
        self.lease_namespace.as_deref().unwrap_or(&self.namespace)
    }

    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration.max(2))
    }

    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .unwrap_or_else(|_| "ferrolb-controller".to_string());
            format!("{host}-{}", std::process::id())
        })
    }
}
