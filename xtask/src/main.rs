//! `cargo xtask ...`: developer commands. The work is done by the `ferrolb-tests` library so that
//! the end-to-end tests and these commands share one implementation.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrolb_tests::lab;

mod image;
mod oci;
mod setup;

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
    /// Build the release binaries and the image, written as an OCI archive to
    /// target/image/ferrolb-<version>.oci.tar (needs root and buildah).
    Image,
    /// Set up what the tests need and run them all: install the missing Debian packages (as root
    /// on Debian/Ubuntu), build the control plane, then `cargo test --workspace --no-fail-fast`.
    /// Arguments after `--` go to `cargo test` (with a package selection of their own, instead of
    /// `--workspace`): `cargo xtask test -- -p ferrolb-crds`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks that need the lab (root).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Issue #15's side-by-side run: FerroLB (release) and MetalLB v0.16.2 (built from its Go
    /// module, memberlist defaults and tuned), each in a fresh lab, one after the other. Writes
    /// results.jsonl, table.md and PNG plots to target/peers/run-<time>/.
    Peers {
        /// Comma-separated subjects, in order: ferrolb, metallb-defaults, metallb-tuned.
        #[arg(long, default_value = "ferrolb,metallb-defaults,metallb-tuned")]
        subjects: String,
        /// Failover trials with the owner's switch port down.
        #[arg(long, default_value_t = 20)]
        link_down_trials: usize,
        /// Failover trials with the owner's speaker SIGKILLed.
        #[arg(long, default_value_t = 10)]
        kill_trials: usize,
        /// Services in the Pending burst, announced for the speaker rows, and per churn round.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        #[arg(long, default_value_t = 10)]
        churn_rounds: usize,
        /// Seconds of idle CPU sampling.
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
        /// Also write the table and plots into docs/benchmarks.md and docs/benchmarks/peers/.
        #[arg(long)]
        docs: bool,
        /// Do not build first (the release binaries and MetalLB must exist).
        #[arg(long)]
        no_build: bool,
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
        /// speaker-freeze, apiserver-freeze, controller-kill, membership-partition, packet-loss,
        /// apiserver-blackhole.
        #[arg(long, value_delimiter = ',')]
        faults: Vec<ferrolb_tests::chaos::schedule::FaultKind>,
        /// Layer2 Services to keep (at most 12: the pool has 14 addresses of each family).
        #[arg(long, default_value_t = 6)]
        services: usize,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Controller replicas competing for the Lease (`controller-kill` kills the leader).
        #[arg(long, default_value_t = 2)]
        controllers: usize,
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

/// Variables cargo sets for the binary it runs (`cargo run`, `cargo test`), which describe the
/// xtask package. A nested cargo must not see them: build scripts track some of them (ring's
/// `CARGO_MANIFEST_DIR`), so they would make it rebuild what a plain `cargo build` built, and back.
const CARGO_RUN_VARS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// A `cargo` command for the workspace, run from its root without the variables above (and
/// `CARGO_PKG_*`).
pub fn cargo() -> std::process::Command {
    let program = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(String::from))
        .unwrap_or_else(|| "cargo".to_string());
    let mut cmd = std::process::Command::new(program);
    cmd.current_dir(ferrolb_tests::paths::workspace_root());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if CARGO_RUN_VARS.contains(&key.as_ref()) || key.starts_with("CARGO_PKG_") {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

/// Runs a command with its output on ours (apt-get's progress is the user's to see).
pub fn run_inherited(mut cmd: std::process::Command) -> anyhow::Result<()> {
    let line = ferrolb_tests::cmd::display(&cmd);
    let status = cmd.status().with_context(|| format!("starting `{line}`"))?;
    if !status.success() {
        anyhow::bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// `cargo xtask controlplane build`: what the tests run against, built only when missing or stale.
fn build_controlplane() -> anyhow::Result<()> {
    ferrolb_tests::controlplane::build()
}

/// Builds what `lab up` runs: the control plane (only when missing or stale) and the FerroLB
/// binaries (cargo's own incremental build).
fn build_for_lab() -> anyhow::Result<()> {
    build_controlplane()?;
    let mut build = cargo();
    build.args(["build", "-p", "ferrolb-controller", "-p", "ferrolb-speaker"]);
    ferrolb_tests::cmd::run(build)?;
    Ok(())
}

/// The `cargo test` arguments of `cargo xtask test ARGS`: `--no-fail-fast` (cargo otherwise stops
/// at the first failing test binary and hides the others), `--workspace` unless ARGS choose
/// packages themselves, then ARGS.
fn test_args(args: &[String]) -> Vec<String> {
    let selects = args.iter().take_while(|arg| *arg != "--").any(|arg| {
        matches!(
            arg.as_str(),
            "-p" | "--package" | "--workspace" | "--all" | "--exclude"
        ) || arg.starts_with("--package=")
            || arg.starts_with("--exclude=")
            || (arg.starts_with("-p") && arg.len() > 2)
    });
    let mut out = vec!["test".to_string(), "--no-fail-fast".to_string()];
    if !selects {
        out.push("--workspace".to_string());
    }
    out.extend(args.iter().cloned());
    out
}

/// `cargo xtask test`: packages, control plane, then the suite; the exit code is cargo's.
fn test(args: &[String]) -> anyhow::Result<i32> {
    println!("[test] Debian packages");
    setup::ensure_packages(setup::Needs::Tests)?;
    println!("[test] the control plane (cargo xtask controlplane build)");
    build_controlplane()?;
    let mut run = cargo();
    run.args(test_args(args));
    println!("[test] {}", ferrolb_tests::cmd::display(&run));
    let status = run.status()?;
    if !status.success() {
        eprintln!("[test] cargo test failed ({status})");
    }
    Ok(status.code().unwrap_or(1))
}

/// `cargo xtask bench peers`: builds (release FerroLB, MetalLB), runs, reports.
#[allow(clippy::too_many_arguments)]
fn bench_peers(
    subjects: &str,
    link_down_trials: usize,
    kill_trials: usize,
    services: usize,
    churn_rounds: usize,
    idle_seconds: u64,
    docs: bool,
    no_build: bool,
) -> anyhow::Result<()> {
    use ferrolb_tests::peers::{self, PeersOptions, SubjectKind, metallb, report};
    let subjects = report::parse_subjects(subjects)?;
    setup::ensure_packages(setup::Needs::Lab)?;
    let wants_metallb = subjects
        .iter()
        .any(|s| matches!(s, SubjectKind::Metallb(_)));
    if !no_build {
        build_controlplane()?;
        let mut build = cargo();
        build.args([
            "build",
            "--release",
            "-p",
            "ferrolb-controller",
            "-p",
            "ferrolb-speaker",
        ]);
        ferrolb_tests::cmd::run(build)?;
    }
    let metallb = if wants_metallb {
        Some(if no_build {
            let dir = metallb::output_dir();
            let built = metallb::MetallbBinaries {
                controller: dir.join("controller"),
                speaker: dir.join("speaker"),
            };
            anyhow::ensure!(
                built.controller.is_file() && built.speaker.is_file(),
                "--no-build, but MetalLB is not built in {}",
                dir.display()
            );
            built
        } else {
            metallb::build()?
        })
    } else {
        None
    };
    let release = ferrolb_tests::paths::target_dir().join("release");
    let options = PeersOptions {
        subjects,
        link_down_trials,
        kill_trials,
        services,
        churn_rounds,
        idle_window: std::time::Duration::from_secs(idle_seconds),
        // $FERROLB_CONTROLLER_BIN / $FERROLB_SPEAKER_BIN override them, as for `lab up`.
        ferrolb: lab::FerrolbBinaries {
            controller: std::env::var_os("FERROLB_CONTROLLER_BIN")
                .map_or_else(|| release.join("ferrolb-controller"), Into::into),
            speaker: std::env::var_os("FERROLB_SPEAKER_BIN")
                .map_or_else(|| release.join("ferrolb-speaker"), Into::into),
        },
        metallb,
        out: peers::default_out_dir(),
    };
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let Some(results) = peers::run(&options)? else {
        anyhow::bail!("the peers benchmark needs root (it builds labs)");
    };
    println!("{}", report::table(&results));
    println!("results in {}", options.out.display());
    if docs {
        let when =
            ferrolb_tests::cmd::stdout(ferrolb_tests::cmd::command("date", ["-u", "+%Y-%m-%d"]))
                .unwrap_or_default();
        report::write_docs(
            &options.out,
            &results,
            &format!("cargo xtask {}", command.replace(" --docs", "")),
            when.trim(),
        )?;
        println!("docs/benchmarks.md and docs/benchmarks/peers/ updated");
    }
    Ok(())
}

/// `cargo xtask image`: builds, then prints what the archive holds.
fn image() -> anyhow::Result<()> {
    let archive = image::build()?;
    let unpacked = oci::unpack(&archive, &image::image_dir())?;
    let size = std::fs::metadata(&archive)?.len();
    println!(
        "[image] {} ({:.1} MiB), {} {}, {} layer(s), user {}, entrypoint {}",
        archive.display(),
        size as f64 / (1024.0 * 1024.0),
        image::reference(),
        unpacked.manifest_digest,
        unpacked.layers.len(),
        unpacked.image_config("User"),
        unpacked.image_config("Entrypoint"),
    );
    println!(
        "[image] revision {}; files:",
        unpacked
            .label("org.opencontainers.image.revision")
            .unwrap_or("unknown")
    );
    for (path, size) in oci::files(&unpacked.rootfs)? {
        println!("[image]   {size:>10}  {path}");
    }
    println!(
        "[image] push it: skopeo copy oci-archive:{} docker://REGISTRY/ferrolb:{}",
        archive.display(),
        image::version()
    );
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
        } => build_controlplane(),
        Command::Image => image(),
        Command::Test { args } => {
            let code = test(&args)?;
            std::process::exit(code);
        }
        Command::Bench {
            command:
                BenchCommand::Peers {
                    subjects,
                    link_down_trials,
                    kill_trials,
                    services,
                    churn_rounds,
                    idle_seconds,
                    docs,
                    no_build,
                },
        } => bench_peers(
            &subjects,
            link_down_trials,
            kill_trials,
            services,
            churn_rounds,
            idle_seconds,
            docs,
            no_build,
        ),
        Command::Lab { command } => match command {
            LabCommand::Up {
                nodes,
                demo,
                no_build,
            } => {
                setup::ensure_packages(setup::Needs::Lab)?;
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
                controllers,
                no_build,
            } => {
                setup::ensure_packages(setup::Needs::Lab)?;
                if !no_build {
                    build_for_lab()?;
                }
                let options = ferrolb_tests::chaos::ChaosOptions {
                    minutes,
                    seed,
                    faults,
                    services: services.clamp(1, 12),
                    nodes: nodes.max(2),
                    controllers: controllers.max(1),
                    ..ferrolb_tests::chaos::ChaosOptions::default()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn test_runs_the_workspace_without_failing_fast() {
        assert_eq!(
            test_args(&[]),
            args(&["test", "--no-fail-fast", "--workspace"])
        );
        assert_eq!(
            test_args(&args(&["manifests", "--", "--nocapture"])),
            args(&[
                "test",
                "--no-fail-fast",
                "--workspace",
                "manifests",
                "--",
                "--nocapture"
            ])
        );
    }

    #[test]
    fn test_arguments_choosing_packages_replace_the_workspace() {
        for given in [
            &["-p", "ferrolb-crds"][..],
            &["-pferrolb-crds"],
            &["--package=ferrolb-crds"],
            &["--workspace", "--exclude", "xtask"],
        ] {
            let given = args(given);
            let mut expected = args(&["test", "--no-fail-fast"]);
            expected.extend(given.clone());
            assert_eq!(test_args(&given), expected);
        }
        // After `--` the words are the test binaries' own.
        assert_eq!(
            test_args(&args(&["--", "-p"])),
            args(&["test", "--no-fail-fast", "--workspace", "--", "-p"])
        );
    }
}
