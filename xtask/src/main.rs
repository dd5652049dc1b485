//! `cargo xtask ...`: developer commands. The work is done by the `ferrolb-tests` library so that
//! the end-to-end tests and these commands share one implementation.

use clap::{Parser, Subcommand};
use ferrolb_tests::lab;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "FerroLB developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local lab: control plane, node namespaces, client, router, FerroLB.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// The test control plane (kube-apiserver, etcd, kubectl built from Go modules).
    Controlplane {
        #[command(subcommand)]
        command: ControlplaneCommand,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build what is needed and bring the lab up (idempotent).
    Up {
        /// Number of node namespaces.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Also run the layer2 demo.
        #[arg(long)]
        demo: bool,
        /// Do not build the control plane and the FerroLB binaries first.
        #[arg(long)]
        no_build: bool,
    },
    /// Stop everything the lab started and delete its namespaces.
    Down,
    /// Show the lab's namespaces, addresses and processes.
    Status,
    /// Cut a node off the LAN and show the demo Service answered by another node.
    Fail {
        /// Node name, e.g. node2.
        node: String,
    },
    /// Reconnect a node cut off by `lab fail`.
    Heal {
        /// Node name, e.g. node2.
        node: String,
    },
    /// Fault-injection soak: random faults from a seeded schedule, invariants checked between
    /// them; the report goes to target/chaos/<seed>/report.md. Exits 1 on a violation.
    Chaos {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Comma-separated fault kinds (default: all): link-down, speaker-kill, speaker-term,
        /// speaker-freeze, apiserver-freeze, controller-kill, membership-partition.
        #[arg(long, value_delimiter = ',')]
        faults: Vec<ferrolb_tests::chaos::schedule::FaultKind>,
        /// Layer2 Services to keep (at most 12: the pool has 14 addresses of each family).
        #[arg(long, default_value_t = 6)]
        services: usize,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Do not build the control plane and the FerroLB binaries first.
        #[arg(long)]
        no_build: bool,
    },
    /// Print the path of the lab's admin kubeconfig.
    Kubeconfig,
    /// Run kubectl against the lab: `cargo xtask lab kubectl -- get svc`.
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ControlplaneCommand {
    /// Build kube-apiserver, etcd and kubectl into target/controlplane (only when missing or stale).
    Build,
}

fn prefix() -> String {
    std::env::var("FERROLB_LAB_PREFIX").unwrap_or_else(|_| "flb-".to_string())
}

/// Builds what `lab up` runs: the control plane (only when missing or stale) and the FerroLB
/// binaries (cargo's own incremental build).
fn build_for_lab() -> anyhow::Result<()> {
    ferrolb_tests::controlplane::build()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "-p", "ferrolb-controller", "-p", "ferrolb-speaker"]);
    ferrolb_tests::cmd::run(build)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Controlplane {
            command: ControlplaneCommand::Build,
        } => ferrolb_tests::controlplane::build(),
        Command::Lab { command } => match command {
            LabCommand::Up {
                nodes,
                demo,
                no_build,
            } => {
                if !no_build {
                    build_for_lab()?;
                }
                lab::up(&lab::UpOptions {
                    prefix: prefix(),
                    nodes,
                    demo,
                })
            }
            LabCommand::Down => lab::down(&prefix()),
            LabCommand::Status => lab::status(&prefix()),
            LabCommand::Fail { node } => lab::fail(&prefix(), &node),
            LabCommand::Heal { node } => lab::heal(&prefix(), &node),
            LabCommand::Chaos {
                minutes,
                seed,
                faults,
                services,
                nodes,
                no_build,
            } => {
                if !no_build {
                    build_for_lab()?;
                }
                let options = ferrolb_tests::chaos::ChaosOptions {
                    minutes,
                    seed,
                    faults,
                    services: services.clamp(1, 12),
                    nodes: nodes.max(2),
                };
                let Some(report) = ferrolb_tests::chaos::run(&options)? else {
                    anyhow::bail!("the chaos lab needs root");
                };
                println!("{}", ferrolb_tests::chaos::render(&options, &report));
                if report.violations().next().is_some() {
                    std::process::exit(1);
                }
                Ok(())
            }
            LabCommand::Kubeconfig => {
                println!("{}", lab::kubeconfig(&prefix())?.display());
                Ok(())
            }
            LabCommand::Kubectl { args } => {
                let code = lab::kubectl(&prefix(), &args)?;
                std::process::exit(code);
            }
        },
    }
}
