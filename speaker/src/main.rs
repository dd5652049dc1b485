//! `ferrolb-speaker`: announces the IPs of LoadBalancer Services from this node (layer2: ARP/NDP).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ferrolb_speaker::liveness::{Liveness, MembershipSettings};
use ferrolb_speaker::metrics::Metrics;
use ferrolb_speaker::run::{Readiness, RunOptions};
use ferrolb_speaker::{http, run, shutdown};
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

#[derive(Debug, Parser)]
#[command(name = "ferrolb-speaker", version, about)]
struct Cli {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Namespace of the configuration and status objects.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferrolb-system")]
    namespace: String,
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
    /// This node's address, advertised to the other speakers.
    #[arg(long, env = "HOST_IP")]
    host_ip: Option<IpAddr>,
    /// Metrics and health endpoint.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7473")]
    metrics_addr: SocketAddr,
    #[arg(long, env = "FERROLB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
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
    let (_stop, stopped) = shutdown::on_signal()?;
    let client = kube::Client::try_default().await?;
    let (metrics, registry) = Metrics::new();
    let readiness = Readiness::default();
    let metrics_addr = cli.metrics_addr;
    let serve = http::serve(metrics_addr, registry, readiness.clone(), stopped.clone());
    let http_task = tokio::spawn(async move {
        if let Err(err) = serve.await {
            error!(addr = %metrics_addr, error = %err, "metrics/health server failed");
        }
    });
    let liveness = match cli.membership {
        MembershipMode::Off => Liveness::off(),
        MembershipMode::On => Liveness::start(
            client.clone(),
            MembershipSettings {
                node: cli.node_name.clone(),
                bind: cli.membership_bind,
                host_ip: cli.host_ip,
                secret_file: cli.membership_secret_file.clone(),
                namespace: cli.namespace.clone(),
            },
        ),
    };
    let options = RunOptions {
        node_name: cli.node_name,
        namespace: cli.namespace,
        lb_class: cli.lb_class,
        ignore_exclude_lb: cli.ignore_exclude_lb,
        spread: cli.spread,
    };
    let mut main_loop = tokio::spawn(run::run(
        client,
        options,
        metrics,
        readiness,
        liveness,
        stopped.clone(),
    ));
    let mut stopping = stopped.clone();
    let result = tokio::select! {
        result = &mut main_loop => result,
        _ = shutdown::stopped(&mut stopping) => {
            match tokio::time::timeout(STOP_DEADLINE, &mut main_loop).await {
                Ok(result) => result,
                Err(_) => {
                    warn!("graceful stop took too long: exiting");
                    main_loop.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    http_task.abort();
    result?
}
