//! `ferrolb-speaker`: announces the IPs of LoadBalancer Services from this node (layer2: ARP/NDP).
//! Wiring only: flags, logging, clients, the stop signal; [`ferrolb_speaker::daemon`] does the
//! rest.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ferrolb_crds::config::parse_go_duration;
use ferrolb_speaker::daemon::{self, Settings};
use ferrolb_speaker::liveness::MembershipSettings;
use ferrolb_speaker::membership::Timers;
use ferrolb_speaker::status::PodOwner;
use tracing::{error, info, warn};

/// How long the graceful stop may take before the process exits anyway.
const STOP_DEADLINE: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MembershipMode {
    /// SWIM membership among the speakers (until its key is found, every node counts as live).
    On,
    /// Every Node counts as live, whatever its Ready condition (MetalLB without memberlist).
    Off,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_go_duration(text).map_err(|e| e.to_string())
}

#[derive(Debug, Parser)]
#[command(name = "ferrolb-speaker", version, about)]
struct Cli {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Namespace of the configuration and status objects.
    #[arg(long, env = "POD_NAMESPACE", default_value = ferrolb_crds::v1beta1::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Name of MetalLB's legacy ConfigMap in `--namespace`.
    #[arg(long, default_value = ferrolb_crds::cluster::LEGACY_CONFIG_MAP_NAME)]
    config_map: String,
    /// Only announce Services with this loadBalancerClass (unset: only Services without one).
    #[arg(long, env = "FERROLB_LB_CLASS")]
    lb_class: Option<String>,
    /// Announce from nodes labelled node.kubernetes.io/exclude-from-external-load-balancers too.
    #[arg(long)]
    ignore_exclude_lb: bool,
    /// Balance IPs across nodes instead of per-IP rendezvous hashing.
    #[arg(long)]
    spread: bool,
    /// Membership protocol (liveness of the other speakers).
    #[arg(long, env = "FERROLB_MEMBERSHIP", value_enum, default_value = "on")]
    membership: MembershipMode,
    /// Membership listen address.
    #[arg(long, default_value = "0.0.0.0:7946")]
    membership_bind: SocketAddr,
    /// Membership key file (else Secret ferrolb-memberlist, key secretkey).
    #[arg(long, default_value = "/etc/ferrolb/memberlist/secretkey")]
    membership_secret_file: PathBuf,
    /// How often each speaker probes another (Go duration). The probe's ack timeout is 40 % of
    /// it. Measured default: docs/benchmarks.md, speaker membership.
    #[arg(long, default_value = "100ms", value_parser = duration)]
    membership_probe_interval: Duration,
    /// How long a suspected speaker whose host still answers has to refute before it is
    /// declared down (Go duration): the longest stall that moves nothing. A dead speaker is
    /// declared down sooner, once its host check confirms it (docs/speaker.md, membership).
    /// A stall of this speaker longer than this makes it announce its IPs again.
    #[arg(long, default_value = "400ms", value_parser = duration)]
    membership_suspicion_timeout: Duration,
    /// This node's address, advertised to the other speakers.
    #[arg(long, env = "HOST_IP")]
    host_ip: Option<IpAddr>,
    /// The speaker's Pod (downward API), owner of its status objects.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// The speaker Pod's UID (downward API `metadata.uid`).
    #[arg(long, env = "POD_UID")]
    pod_uid: Option<String>,
    /// Metrics and health endpoint.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7473")]
    metrics_addr: SocketAddr,
    #[arg(long, env = "FERROLB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

impl Cli {
    fn timers(&self) -> Result<Timers, String> {
        let timers = Timers {
            probe_period: self.membership_probe_interval,
            probe_rtt: self.membership_probe_interval * 2 / 5,
            suspect_to_down: self.membership_suspicion_timeout,
            gossip_period: self.membership_probe_interval,
            ..Timers::default()
        };
        timers.validate().map_err(|e| e.to_string())?;
        Ok(timers)
    }

    fn settings(self) -> Result<Settings, String> {
        let timers = self.timers()?;
        let membership = match self.membership {
            MembershipMode::Off => None,
            MembershipMode::On => Some(MembershipSettings {
                node: self.node_name.clone(),
                bind: self.membership_bind,
                host_ip: self.host_ip,
                secret_file: self.membership_secret_file.clone(),
                namespace: self.namespace.clone(),
                timers: timers.clone(),
            }),
        };
        let pod = match (self.pod_name, self.pod_uid) {
            (Some(name), Some(uid)) if !name.is_empty() && !uid.is_empty() => {
                Some(PodOwner { name, uid })
            }
            _ => {
                warn!(
                    "POD_NAME or POD_UID not set: status objects get no owner (a dead speaker's \
                     objects stay until its node's speaker restarts)"
                );
                None
            }
        };
        Ok(Settings {
            node_name: self.node_name,
            namespace: self.namespace,
            config_map: self.config_map,
            lb_class: self.lb_class,
            ignore_exclude_lb: self.ignore_exclude_lb,
            spread: self.spread,
            membership,
            stall_threshold: timers.suspect_to_down,
            metrics_addr: self.metrics_addr,
            pod,
        })
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run_speaker(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %format!("{err:#}"), "speaker failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_speaker(cli: Cli) -> anyhow::Result<()> {
    info!(node = %cli.node_name, namespace = %cli.namespace, membership = ?cli.membership, version = env!("CARGO_PKG_VERSION"), "starting");
    let settings = cli.settings().map_err(anyhow::Error::msg)?;
    let cancel = ferrolb_crds::runtime::cancel_on_signal()?;
    let clients = ferrolb_crds::runtime::api_clients().await?;
    let mut daemon = tokio::spawn(daemon::run(settings, clients, cancel.clone()));
    tokio::select! {
        result = &mut daemon => result?,
        _ = cancel.cancelled() => {
            match tokio::time::timeout(STOP_DEADLINE, &mut daemon).await {
                Ok(result) => result?,
                Err(_) => {
                    warn!("graceful stop took too long: exiting");
                    daemon.abort();
                    Ok(())
                }
            }
        }
    }
}
