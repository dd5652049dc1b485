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
    },
    /// Stop everything the lab started and delete its namespaces.
    Down,
    /// Show the lab's namespaces, addresses and processes.
    Status,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Controlplane {
            command: ControlplaneCommand::Build,
        } => ferrolb_tests::controlplane::build(),
        Command::Lab { command } => match command {
            LabCommand::Up { nodes, demo } => lab::up(&lab::UpOptions {
                prefix: prefix(),
                nodes,
                demo,
            }),
            LabCommand::Down => lab::down(&prefix()),
            LabCommand::Status => lab::status(&prefix()),
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
