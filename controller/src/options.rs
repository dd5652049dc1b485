//! Command-line flags (also used by in-process callers of [`crate::run`]).

use std::net::SocketAddr;
use std::time::Duration;

use ferrolb_crds::cluster;

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
    /// Address of the admission webhook's HTTPS server (`/validate`); empty: no webhook.
    #[arg(long, default_value_t = format!("0.0.0.0:{}", cluster::WEBHOOK_PORT))]
    pub webhook_addr: String,
    /// Names and addresses the webhook's certificate is valid for (repeat or comma-separate);
    /// default: the webhook Service's DNS names in `--namespace`.
    #[arg(long, value_delimiter = ',')]
    pub webhook_host: Vec<String>,
    /// The Secret holding the webhook's CA and serving certificate (created if missing).
    #[arg(long, default_value = cluster::WEBHOOK_SECRET_NAME)]
    pub webhook_secret: String,
    /// The ValidatingWebhookConfiguration whose caBundle the controller keeps current.
    #[arg(long, default_value = cluster::WEBHOOK_CONFIGURATION_NAME)]
    pub webhook_configuration: String,
    /// Validity of a serving certificate, in hours; it is re-issued with a third left.
    #[arg(long, default_value_t = 24 * 365)]
    pub webhook_cert_validity_hours: i64,
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

    /// The webhook's address, `None` when it is turned off.
    pub fn webhook_addr(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        match self.webhook_addr.trim() {
            "" => Ok(None),
            addr => addr.parse().map(Some),
        }
    }

    /// The names in the webhook's certificate.
    pub fn webhook_hosts(&self) -> std::collections::BTreeSet<String> {
        if self.webhook_host.is_empty() {
            let service = format!("{}.{}", cluster::WEBHOOK_SERVICE_NAME, self.namespace);
            [
                format!("{service}.svc"),
                format!("{service}.svc.cluster.local"),
            ]
            .into()
        } else {
            self.webhook_host
                .iter()
                .map(|h| h.trim().to_string())
                .collect()
        }
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
