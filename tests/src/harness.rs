//! What end-to-end tests use: a lab per test with its own short prefix, torn down on drop (also
//! when the test panics), with the tails of its logs printed when the test failed.
//!
//! ```no_run
//! let Some(lab) = ferrolb_tests::harness::TestLab::network("my_test", 2).unwrap() else {
//!     return; // not root, and not in CI: skipped with a printed reason
//! };
//! assert!(lab.netlab().ping(&lab.netlab().topology.client_ns(), "192.0.2.1".parse().unwrap()));
//! ```

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::controlplane::ControlPlane;
use crate::lab::{FerrolbBinaries, Install, Lab};
use crate::netlab::Netlab;

/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// In the run directory of a lab kept with `FERROLB_KEEP_LAB`.
const KEEP_MARKER: &str = "kept";

/// Polls `check` every 200 ms until it returns `Ok`; prints how long that took. Panics with
/// `what` and the last error after `timeout` (a hang guard, not a speed assertion).
pub fn eventually_ok<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match check() {
            Ok(value) => {
                eprintln!("{what}: after {:?}", start.elapsed());
                return value;
            }
            Err(why) => last = why,
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("{what}: not within {timeout:?}; last: {last}");
}

/// Whether this process can build labs (root). When it cannot: in CI (env `CI` set) this panics,
/// because a skipped end-to-end test there would hide a broken setup; elsewhere it prints why the
/// test is skipped and returns false.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: needs root (network namespaces) and CI is set: failing instead of skipping"
        );
    }
    eprintln!("SKIPPED {test}: needs root for network namespaces (run the tests as root)");
    false
}

/// `true` to run; `false` (with the reason printed) to skip; panics instead under CI, where a
/// missing prerequisite is a failure.
pub fn require(available: Result<(), String>) -> bool {
    match available {
        Ok(()) => true,
        Err(reason) => {
            assert!(std::env::var_os("CI").is_none(), "CI is set and {reason}");
            eprintln!("SKIP: {reason}");
            false
        }
    }
}

/// The built `ferrolbctl`; `None` (the test skips, or fails under CI) when it is not built.
pub fn built_ferrolbctl() -> Option<PathBuf> {
    let ferrolbctl = crate::paths::target_dir().join("debug").join("ferrolbctl");
    let built = if ferrolbctl.exists() {
        Ok(())
    } else {
        Err(format!(
            "{} is not built (cargo build -p ferrolb-crds; `cargo test --workspace` builds it)",
            ferrolbctl.display()
        ))
    };
    require(built).then_some(ferrolbctl)
}

/// Stops the control plane in this run directory when dropped, even when an assertion fails
/// half-way (the run directory, with the logs, stays).
pub struct StopControlPlane(pub PathBuf);

impl Drop for StopControlPlane {
    fn drop(&mut self) {
        let _ = crate::controlplane::stop(&self.0);
    }
}

/// A short prefix unique to this process and call: `ft<pid>x<n>-` (namespace names only; the
/// interface names inside never carry the prefix, so the 15-character limit is not at stake).
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("ft{}x{n}-", std::process::id())
}

/// A lab owned by one test. Dropping it tears the lab down; if the test is panicking the log
/// tails are printed first.
#[derive(Debug)]
pub struct TestLab {
    lab: Lab,
    test: String,
    control_plane: Option<ControlPlane>,
}

impl TestLab {
    /// A lab with only the network (namespaces, links, FRR), or `None` when skipped (not root).
    pub fn network(test: &str, nodes: usize) -> anyhow::Result<Option<TestLab>> {
        if !require_root(test) {
            return Ok(None);
        }
        let test_lab = TestLab::unstarted(test, nodes)?;
        test_lab.lab.network_up()?;
        Ok(Some(test_lab))
    }

    /// A lab described but not started (the caller drives `up`); still torn down on drop.
    pub fn unstarted(test: &str, nodes: usize) -> anyhow::Result<TestLab> {
        static STALE_LABS_REMOVED: std::sync::Once = std::sync::Once::new();
        STALE_LABS_REMOVED.call_once(remove_stale_test_labs);
        let lab = Lab::new(&unique_prefix(), nodes)?;
        eprintln!(
            "{test}: lab prefix {:?}, run directory {}",
            lab.prefix(),
            lab.run_dir().display()
        );
        Ok(TestLab {
            lab,
            test: test.to_string(),
            control_plane: None,
        })
    }

    /// The whole lab (network, control plane, Nodes, manifests, FerroLB processes when their
    /// binaries are real), or `None` when skipped (not root).
    pub fn start(test: &str, nodes: usize) -> anyhow::Result<Option<TestLab>> {
        TestLab::start_with(test, nodes, FerrolbBinaries::default())
    }

    /// [`Self::start`] with the FerroLB binaries given explicitly.
    pub fn start_with(
        test: &str,
        nodes: usize,
        binaries: FerrolbBinaries,
    ) -> anyhow::Result<Option<TestLab>> {
        TestLab::start_installed(test, nodes, binaries, Install::default())
    }

    /// [`Self::start_with`], FerroLB installed as `install` says (e.g. with the Helm chart).
    pub fn start_installed(
        test: &str,
        nodes: usize,
        binaries: FerrolbBinaries,
        install: Install,
    ) -> anyhow::Result<Option<TestLab>> {
        TestLab::start_lab(test, nodes, |lab| {
            lab.binaries = binaries;
            lab.install = install;
        })
    }

    /// [`Self::start`] with `controllers` controller replicas competing for the Lease.
    pub fn start_replicated(
        test: &str,
        nodes: usize,
        controllers: usize,
    ) -> anyhow::Result<Option<TestLab>> {
        TestLab::start_lab(test, nodes, |lab| lab.controller_replicas = controllers)
    }

    /// The lab, as `configure` sets it up, started.
    fn start_lab(
        test: &str,
        nodes: usize,
        configure: impl FnOnce(&mut Lab),
    ) -> anyhow::Result<Option<TestLab>> {
        if !require_root(test) {
            return Ok(None);
        }
        let mut test_lab = TestLab::unstarted(test, nodes)?;
        configure(&mut test_lab.lab);
        // On failure `test_lab` is dropped here, which tears down what was built.
        match test_lab.lab.up() {
            Ok(control_plane) => test_lab.control_plane = Some(control_plane),
            Err(err) => {
                test_lab.dump_logs();
                return Err(err);
            }
        }
        Ok(Some(test_lab))
    }

    /// `up` again (must be harmless); refreshes the control plane handle.
    pub fn up_again(&mut self) -> anyhow::Result<()> {
        self.control_plane = Some(self.lab.up()?);
        Ok(())
    }

    /// Marks a Node Ready or not (see [`Lab::set_node_ready`]); with [`Netlab::set_port`] this
    /// is what a node failure looks like to the speakers.
    pub fn set_node_ready(&self, node: &str, ready: bool) -> anyhow::Result<()> {
        self.lab.set_node_ready(self.control_plane(), node, ready)
    }

    /// The running control plane (after [`Self::start`]).
    pub fn control_plane(&self) -> &ControlPlane {
        match &self.control_plane {
            Some(control_plane) => control_plane,
            None => panic!("TestLab::control_plane: the lab was started without a control plane"),
        }
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    pub fn netlab(&self) -> &Netlab {
        &self.lab.netlab
    }

    pub fn prefix(&self) -> &str {
        self.lab.prefix()
    }

    pub fn run_dir(&self) -> &Path {
        self.lab.run_dir()
    }

    /// Prints the last lines of every log in the run directory to stderr.
    pub fn dump_logs(&self) {
        eprintln!("===== {}: logs of lab {:?}", self.test, self.prefix());
        for path in log_files(self.run_dir()) {
            eprintln!("----- {}", path.display());
            for line in tail(&path, LOG_TAIL_LINES) {
                eprintln!("  {line}");
            }
        }
        eprintln!("===== end of logs");
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        if std::env::var_os("FERROLB_KEEP_LAB").is_some() {
            // The marker keeps `remove_stale_test_labs` of later test runs away from it.
            let _ = fs::write(self.run_dir().join(KEEP_MARKER), "");
            eprintln!(
                "{}: FERROLB_KEEP_LAB is set: lab {:?} left running; remove it with \
                 `FERROLB_LAB_PREFIX={} cargo xtask lab down`",
                self.test,
                self.prefix(),
                self.prefix()
            );
            return;
        }
        let panicking = std::thread::panicking();
        match self.lab.down() {
            // Logs of a passing test are of no interest; those of a failing one are kept.
            Ok(()) if !panicking => {
                let _ = fs::remove_dir_all(self.run_dir());
            }
            Ok(()) => {}
            Err(err) => eprintln!(
                "{}: tearing down lab {:?}: {err:#}",
                self.test,
                self.prefix()
            ),
        }
    }
}

/// Tears down test labs (`ft<pid>x<n>-`) whose test process no longer exists: a test killed
/// before its `Drop` ran leaves its namespaces and processes behind.
pub fn remove_stale_test_labs() {
    let mut prefixes: Vec<String> = crate::netlab::netns::list_with_prefix("ft")
        .into_iter()
        .filter_map(|ns| {
            let (prefix, _) = ns.split_once('-')?;
            let (pid, n) = prefix.strip_prefix("ft")?.split_once('x')?;
            let pid: i32 = pid.parse().ok()?;
            n.parse::<u32>().ok()?;
            let prefix = format!("{prefix}-");
            let kept = crate::paths::run_dir(&prefix).join(KEEP_MARKER).exists();
            (!crate::process::is_alive(pid) && !kept).then_some(prefix)
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    for prefix in prefixes {
        eprintln!("removing lab {prefix:?} left by a test process that no longer exists");
        let result = Lab::existing(&prefix).and_then(|lab| lab.down());
        if let Err(err) = result {
            eprintln!("removing stale lab {prefix:?}: {err:#}");
        }
    }
}

/// `*.log` files in `dir` and its direct subdirectories (e.g. `frr/`), sorted.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let entries = |dir: &Path| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut logs = Vec::new();
    for path in entries(dir) {
        if path.is_dir() {
            logs.extend(entries(&path).into_iter().filter(|p| is_log(p)));
        } else if is_log(&path) {
            logs.push(path);
        }
    }
    logs.sort();
    logs
}

fn is_log(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|ext| ext == "log")
}

/// The last `lines` lines of a text file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(file) = fs::File::open(path) else {
        return Vec::new();
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].to_vec()
}

/// The lines of a log written with FerroLB's timestamps (`2026-12-02T19:09:38.987491Z ...`, UTC,
/// as tracing writes them) from `from` to `to`, both as `YYYY-MM-DDTHH:MM:SS`: the lines
/// around an event, rather than the end of the log. A line without a timestamp (a
/// continuation) goes with the line before it. `None` when the log has no such timestamps
/// (kube-apiserver, etcd): the caller falls back to [`tail`].
pub fn lines_between(path: &Path, from: &str, to: &str) -> Option<Vec<String>> {
    let file = fs::File::open(path).ok()?;
    let stamp = |line: &str| -> Option<String> {
        let head = line.get(..19)?;
        let bytes = head.as_bytes();
        let shaped = bytes[4] == b'-' && bytes[10] == b'T' && bytes[13] == b':';
        shaped.then(|| head.to_string())
    };
    let mut any_stamp = false;
    let mut inside = false;
    let mut lines = Vec::new();
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if let Some(at) = stamp(&line) {
            any_stamp = true;
            inside = at.as_str() >= from && at.as_str() <= to;
        }
        if inside {
            lines.push(line);
        }
    }
    any_stamp.then_some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_between_two_times() {
        let dir = std::env::temp_dir().join(format!("ferrolb-lines-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("speaker.log");
        fs::write(
            &log,
            "2026-12-02T19:09:38.1Z  INFO a\n2026-12-02T19:09:40.2Z  WARN b\n  continued\n\
             2026-12-02T19:09:41.9Z  INFO c\n2026-12-02T19:09:43.0Z  INFO d\n",
        )
        .unwrap();
        assert_eq!(
            lines_between(&log, "2026-12-02T19:09:40", "2026-12-02T19:09:41"),
            Some(vec![
                "2026-12-02T19:09:40.2Z  WARN b".to_string(),
                "  continued".to_string(),
                "2026-12-02T19:09:41.9Z  INFO c".to_string(),
            ])
        );
        let klog = dir.join("kube-apiserver.log");
        fs::write(&klog, "I1202 19:09:40.123 1 server.go:1] started\n").unwrap();
        assert_eq!(lines_between(&klog, "2026", "2027"), None);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn prefixes_are_unique_and_short() {
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        assert!(a.starts_with("ft") && a.ends_with('-'));
        assert!(a.len() <= 24, "{a}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("ferrolb-tail-{}", std::process::id()));
        fs::create_dir_all(dir.join("frr")).unwrap();
        fs::write(dir.join("a.log"), "1\n2\n3\n").unwrap();
        fs::write(dir.join("frr/bgpd.log"), "x\n").unwrap();
        fs::write(dir.join("a.pid"), "1\n").unwrap();
        assert_eq!(tail(&dir.join("a.log"), 2), ["2", "3"]);
        assert_eq!(
            log_files(&dir),
            [dir.join("a.log"), dir.join("frr/bgpd.log")]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
