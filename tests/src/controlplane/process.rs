//! Detached child processes with pid files: the control plane outlives the CLI that started it
//! (`cargo xtask lab up` returns while etcd and kube-apiserver keep running), and whoever stops it
//! later (`lab down`, a test's cleanup) finds it by pid.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Starts `program args...` in a new session (so a Ctrl-C or hang-up of the starting terminal does
/// not reach it), optionally inside network namespace `netns` via `ip netns exec` (which execs the
/// program in place, so the recorded pid is the program's). stdout and stderr go to `log`; the pid
/// is written to `pid_file`.
pub fn spawn_detached(
    netns: Option<&str>,
    program: &Path,
    args: &[String],
    log: &Path,
    pid_file: &Path,
) -> anyhow::Result<u32> {
    let mut command = match netns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(program);
            command
        }
        None => Command::new(program),
    };
    let stdout = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let stderr = stdout.try_clone()?;
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id();
    // The Child handle is dropped on purpose: the process is not ours to wait for. `stop` reaps
    // it if it is still our child.
    drop(child);
    fs::write(pid_file, format!("{pid}\n"))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    Ok(pid)
}

pub fn read_pid(pid_file: &Path) -> Option<i32> {
    fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live process (not gone, not a zombie). Reaps it first if it is our child.
pub fn is_alive(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG only inspects/reaps `pid`; ECHILD (not our child) is fine.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3, after the parenthesised command name, is the state.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill only sends a signal; a stale pid yields ESRCH, which we ignore.
    unsafe { libc::kill(pid, signal) };
}

/// Stops the process recorded in `pid_file`: SIGTERM, then SIGKILL after `grace`. Removes the
/// pid file. Returns whether a live process was found.
pub fn stop_pid_file(pid_file: &Path, grace: Duration) -> bool {
    let Some(pid) = read_pid(pid_file) else {
        return false;
    };
    let was_alive = pid > 1 && is_alive(pid);
    if was_alive {
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while is_alive(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        if is_alive(pid) {
            signal(pid, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_alive(pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let _ = fs::remove_file(pid_file);
    was_alive
}

/// The last `max_bytes` of a log file, for error messages.
pub fn log_tail(log: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(log) else {
        return format!("(no log at {})", log.display());
    };
    let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn pid_file(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.pid"))
}

pub fn log_file(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.log"))
}
