//! The side-by-side benchmark of issue #15: FerroLB (release build) and MetalLB v0.16.2 (built
//! from its Go module, with memberlist's defaults and tuned), each in a fresh lab of its own, one
//! after the other, never at the same time. `cargo xtask bench peers` runs it.
//!
//! Every subject gets the same lab (3 nodes), the same pools, Services and EndpointSlices, and
//! the same measurements ([`rows`]):
//! * layer2 failover when the owner's switch port goes down, and when its speaker is SIGKILLed,
//!   timed on the wire from the client (a broadcast ARP request every 50 ms, the first answer from
//!   another MAC);
//! * N Pending Services, then their pool is created: the time until all have an address, beside
//!   the API server's own rate for status patches from a plain client (the floor);
//! * controller and speaker RSS at N, speaker idle CPU, and RSS over rounds of create/delete
//!   churn.
//!
//! [`report`] writes the raw samples (JSONL), the table and the plots.

pub mod metallb;
pub mod report;
pub mod rows;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::harness::TestLab;
use crate::lab::FerrolbBinaries;
use crate::process::read_pid;

/// What one run measures, and how much of it.
#[derive(Debug, Clone)]
pub struct PeersOptions {
    /// Which implementations, in this order.
    pub subjects: Vec<SubjectKind>,
    /// Failover trials with the owner's switch port down.
    pub link_down_trials: usize,
    /// Failover trials with the owner's speaker SIGKILLed.
    pub kill_trials: usize,
    /// Services in the Pending burst (and announced for the speaker rows).
    pub services: usize,
    /// Rounds of create-N/delete-N churn.
    pub churn_rounds: usize,
    /// How long speaker idle CPU is sampled.
    pub idle_window: Duration,
    /// FerroLB's binaries (release builds).
    pub ferrolb: FerrolbBinaries,
    /// MetalLB's binaries (built by [`metallb::build`]).
    pub metallb: Option<metallb::MetallbBinaries>,
    /// Where the results go.
    pub out: PathBuf,
}

/// An implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Ferrolb,
    Metallb(metallb::Memberlist),
}

impl SubjectKind {
    pub const ALL: [SubjectKind; 3] = [
        SubjectKind::Ferrolb,
        SubjectKind::Metallb(metallb::Memberlist::Defaults),
        SubjectKind::Metallb(metallb::Memberlist::Tuned),
    ];

    /// The column name in the table and the `subject` of every JSONL line.
    pub fn label(&self) -> &'static str {
        match self {
            SubjectKind::Ferrolb => "ferrolb-release",
            SubjectKind::Metallb(memberlist) => memberlist.label(),
        }
    }

    pub fn parse(label: &str) -> Option<SubjectKind> {
        SubjectKind::ALL
            .into_iter()
            .find(|kind| kind.label() == label || (label == "ferrolb" && kind == &Self::Ferrolb))
    }
}

/// What the measurements need from an implementation running in a lab.
pub trait Subject: Sync {
    fn kind(&self) -> SubjectKind;
    fn lab(&self) -> &TestLab;
    /// A layer2 pool `name` with `addresses` and an L2Advertisement for it, in the
    /// implementation's own API group and namespace.
    fn apply_layer2_pool(&self, name: &str, addresses: &[&str]) -> anyhow::Result<()>;
    fn controller_pid(&self) -> Option<i32>;
    fn speaker_pid(&self, node: &str) -> Option<i32>;
    /// Starts `node`'s speaker again after it was killed.
    fn restart_speaker(&self, node: &str) -> anyhow::Result<()>;
    /// How long the cluster needs after a healed fault before the next trial: until a rejoined
    /// member is a member again everywhere (memberlist's push-pull and rejoin are slower than
    /// FerroLB's).
    fn settle(&self) -> Duration;
}

/// FerroLB as the lab runs it: its controller in `cp`, a speaker per node.
pub struct Ferrolb<'a> {
    lab: &'a TestLab,
}

impl Subject for Ferrolb<'_> {
    fn kind(&self) -> SubjectKind {
        SubjectKind::Ferrolb
    }

    fn lab(&self) -> &TestLab {
        self.lab
    }

    fn apply_layer2_pool(&self, name: &str, addresses: &[&str]) -> anyhow::Result<()> {
        let list = addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let yaml = format!(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}, namespace: ferrolb-system}}\nspec:\n  addresses: [{list}]\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: {name}, namespace: ferrolb-system}}\nspec:\n  ipAddressPools: [{name}]\n"
        );
        apply_yaml(self.lab, &format!("pool-{name}"), &yaml)
    }

    fn controller_pid(&self) -> Option<i32> {
        read_pid(&self.lab.run_dir().join("controller.pid"))
    }

    fn speaker_pid(&self, node: &str) -> Option<i32> {
        read_pid(&self.lab.run_dir().join(format!("speaker-{node}.pid")))
    }

    fn restart_speaker(&self, _node: &str) -> anyhow::Result<()> {
        // `up` is idempotent: it starts only what is not running.
        self.lab.lab().up().map(|_| ())
    }

    fn settle(&self) -> Duration {
        Duration::from_secs(3)
    }
}

/// MetalLB in the lab, as [`metallb::Metallb`] runs it.
struct Metallb<'a> {
    memberlist: metallb::Memberlist,
    lab: &'a TestLab,
    running: metallb::Metallb<'a>,
}

impl Subject for Metallb<'_> {
    fn kind(&self) -> SubjectKind {
        SubjectKind::Metallb(self.memberlist)
    }

    fn lab(&self) -> &TestLab {
        self.lab
    }

    fn apply_layer2_pool(&self, name: &str, addresses: &[&str]) -> anyhow::Result<()> {
        self.running.apply_layer2_pool(name, addresses)
    }

    fn controller_pid(&self) -> Option<i32> {
        self.running.controller_pid()
    }

    fn speaker_pid(&self, node: &str) -> Option<i32> {
        self.running.speaker_pid(node)
    }

    fn restart_speaker(&self, node: &str) -> anyhow::Result<()> {
        self.running.restart_speaker(node)
    }

    fn settle(&self) -> Duration {
        match self.memberlist {
            metallb::Memberlist::Defaults => Duration::from_secs(12),
            metallb::Memberlist::Tuned => Duration::from_secs(6),
        }
    }
}

/// Writes `yaml` into the lab's run directory and `kubectl apply`s it.
pub(crate) fn apply_yaml(lab: &TestLab, name: &str, yaml: &str) -> anyhow::Result<()> {
    let path = lab.run_dir().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    lab.control_plane()
        .kubectl_output(["apply", "-f", &path.display().to_string()])
        .map(|_| ())
}

/// Runs every subject of `options` in a lab of its own, one after the other, and writes the
/// report into `options.out`. `None` when not root.
pub fn run(options: &PeersOptions) -> anyhow::Result<Option<report::Results>> {
    let mut results = report::Results::default();
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    for kind in &options.subjects {
        println!("== {}: a fresh lab", kind.label());
        match kind {
            SubjectKind::Ferrolb => {
                let Some(lab) = TestLab::start_with("peers-ferrolb", 3, options.ferrolb.clone())?
                else {
                    return Ok(None);
                };
                let subject = Ferrolb { lab: &lab };
                rows::measure_all(&subject, options, &mut results)?;
            }
            SubjectKind::Metallb(memberlist) => {
                let binaries = options
                    .metallb
                    .as_ref()
                    .context("MetalLB's binaries were not built")?;
                // No FerroLB process in this lab: the lab runs only binaries that exist.
                let absent = FerrolbBinaries {
                    controller: PathBuf::from("/nonexistent/ferrolb-controller"),
                    speaker: PathBuf::from("/nonexistent/ferrolb-speaker"),
                };
                let Some(lab) = TestLab::start_with("peers-metallb", 3, absent)? else {
                    return Ok(None);
                };
                let running = metallb::Metallb::install(&lab, binaries, *memberlist)?;
                let subject = Metallb {
                    memberlist: *memberlist,
                    lab: &lab,
                    running,
                };
                rows::measure_all(&subject, options, &mut results)?;
                subject.running.stop();
            }
        }
        // After each subject, so an interrupted run keeps what it measured.
        report::write(&options.out, &results)?;
    }
    Ok(Some(results))
}

/// `target/peers/<unix seconds>`: one run's results.
pub fn default_out_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::paths::target_dir()
        .join("peers")
        .join(format!("run-{secs}"))
}

/// Resident memory of `pid` in KiB (`VmRSS`, or `VmHWM` for the peak).
pub fn memory_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// User + system CPU time of `pid` in seconds (clock ticks at 100 Hz, as on Linux x86-64 and
/// arm64).
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The docs page the report's section goes into.
pub fn benchmarks_doc() -> PathBuf {
    crate::paths::workspace_root()
        .join("docs")
        .join("benchmarks.md")
}

/// Where `--docs` copies the plots and the raw samples.
pub fn docs_assets_dir() -> PathBuf {
    crate::paths::workspace_root()
        .join("docs")
        .join("benchmarks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_by_label() {
        for kind in SubjectKind::ALL {
            assert_eq!(SubjectKind::parse(kind.label()), Some(kind));
        }
        assert_eq!(SubjectKind::parse("ferrolb"), Some(SubjectKind::Ferrolb));
        assert_eq!(SubjectKind::parse("keepalived"), None);
    }

    #[test]
    fn memory_of_this_process_is_read() {
        let pid = std::process::id() as i32;
        assert!(memory_kib(pid, "VmRSS").is_some_and(|kib| kib > 0));
        assert!(memory_kib(pid, "VmHWM").is_some());
        assert!(cpu_seconds(pid).is_some());
        assert_eq!(memory_kib(pid, "NoSuchField"), None);
    }

    #[test]
    fn the_docs_page_exists() {
        assert!(benchmarks_doc().is_file());
    }
}
