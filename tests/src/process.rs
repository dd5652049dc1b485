//! Long-running processes of the lab (FRR daemons, controller, speakers): started in a namespace
//! with their output in a log file and their pid in a pid file, stopped by pid.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd;

/// Starting or stopping a process failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A process to start in the background.
#[derive(Debug)]
pub struct Background<'a> {
    /// Names the log (`<name>.log`) and pid (`<name>.pid`) files in `dir`.
    pub name: &'a str,
    /// Namespace to run in.
    pub ns: &'a str,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Run directory for the log and pid files.
    pub dir: &'a Path,
}

impl Background<'_> {
    /// The pid file of this process.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.name))
    }

    /// Starts the process unless its pid file names a live one.
    pub fn start(&self) -> Result<Started, ProcessError> {
        // A stale pid file's pid may belong to another process by now: only one living in our
        // namespace counts as ours.
        let ours = |pid: &i32| is_alive(*pid) && in_netns(*pid, self.ns);
        if let Some(pid) = read_pid(&self.pid_file()).filter(ours) {
            tracing::debug!(name = self.name, pid, "already running");
            return Ok(Started {
                pid,
                already_running: true,
            });
        }
        let log_path = self.dir.join(format!("{}.log", self.name));
        let file_error = |source| ProcessError::File {
            path: log_path.clone(),
            source,
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(file_error)?;
        let log_err = log.try_clone().map_err(file_error)?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.ns])
            .arg(self.program)
            .args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C on `cargo xtask` must not take the lab down with it.
            .process_group(0);
        let line = cmd::display(&command);
        tracing::info!(target: "ferrolb_tests::cmd", "$ {line} &  # log: {}", log_path.display());
        // The child is not waited for: it outlives `cargo xtask lab up`. In a long-lived test
        // process it becomes a zombie once stopped, which `is_alive` counts as dead.
        let child = command
            .spawn()
            .map_err(|source| ProcessError::Spawn { cmd: line, source })?;
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let pid_file = self.pid_file();
        fs::write(&pid_file, format!("{pid}\n")).map_err(|source| ProcessError::File {
            path: pid_file.clone(),
            source,
        })?;
        Ok(Started {
            pid,
            already_running: false,
        })
    }
}

/// The outcome of [`Background::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub pid: i32,
    /// It was running already (a second `up`); nothing was started.
    pub already_running: bool,
}

impl std::fmt::Display for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.already_running {
            write!(f, "already running, pid {}", self.pid)
        } else {
            write!(f, "pid {}", self.pid)
        }
    }
}

/// The pid in a pid file, if it holds one.
pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a running process (zombies count as dead: nobody may reap them here).
pub fn is_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether `pid` lives in the named network namespace (`/run/netns/<ns>`).
pub fn in_netns(pid: i32, ns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let theirs = fs::metadata(format!("/proc/{pid}/ns/net"));
    let named = fs::metadata(Path::new("/run/netns").join(ns));
    matches!((theirs, named), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
}

/// Removes every `*.pid` file in `dir` and its direct subdirectories (after a teardown).
pub fn remove_pid_files(dir: &Path) {
    for path in pid_files(dir) {
        let _ = fs::remove_file(path);
    }
}

/// Whether `pid` lives in a network namespace other than this process's own.
pub fn in_foreign_netns(pid: i32) -> bool {
    let theirs = fs::read_link(format!("/proc/{pid}/ns/net"));
    let ours = fs::read_link("/proc/self/ns/net");
    matches!((theirs, ours), (Ok(theirs), Ok(ours)) if theirs != ours)
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, signal: libc::c_int) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; pid > 1 never targets a group or init.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Stops the processes: SIGTERM, then SIGKILL for those still alive after `grace`. Returns the
/// pids that were still alive at the end (should be empty).
pub fn stop(pids: &[i32], grace: Duration) -> Vec<i32> {
    let alive: Vec<i32> = pids.iter().copied().filter(|pid| is_alive(*pid)).collect();
    if alive.is_empty() {
        return alive;
    }
    tracing::debug!(?alive, "stopping");
    for pid in &alive {
        signal(*pid, libc::SIGTERM);
    }
    if !wait_dead(&alive, grace) {
        for pid in alive.iter().filter(|pid| is_alive(**pid)) {
            tracing::warn!(pid, "did not stop on SIGTERM, sending SIGKILL");
            signal(*pid, libc::SIGKILL);
        }
        wait_dead(&alive, Duration::from_secs(2));
    }
    alive.into_iter().filter(|pid| is_alive(*pid)).collect()
}

/// Waits until none of `pids` is alive; false on timeout.
pub fn wait_dead(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|pid| !is_alive(*pid)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pids from every `*.pid` file directly in `dir` and in its direct subdirectories.
pub fn pids_in(dir: &Path) -> Vec<i32> {
    pid_files(dir)
        .iter()
        .filter_map(|path| read_pid(path))
        .collect()
}

fn pid_files(dir: &Path) -> Vec<PathBuf> {
    let entries = |dir: &Path| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let is_pid_file =
        |path: &PathBuf| path.is_file() && path.extension().is_some_and(|e| e == "pid");
    let mut files = Vec::new();
    for path in entries(dir) {
        if path.is_dir() {
            files.extend(entries(&path).into_iter().filter(is_pid_file));
        } else if is_pid_file(&path) {
            files.push(path);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_bogus_pid_is_not() {
        assert!(is_alive(std::process::id() as i32));
        assert!(!is_alive(i32::MAX));
    }

    #[test]
    fn stop_terminates_a_process_and_reports_it_dead() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(is_alive(pid));
        let left = stop(&[pid], Duration::from_secs(2));
        assert!(left.is_empty(), "still alive: {left:?}");
        // Reaped here so the zombie does not linger in the test process.
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
}
