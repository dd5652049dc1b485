//! Detached child processes with pid files: the control plane outlives the CLI that started it
//! (`cargo xtask lab up` returns while etcd and kube-apiserver keep running), and whoever stops it
//! later (`lab down`, a test's cleanup) finds it by pid.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
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

/// Whether `pid` runs a program named `program` (argv[0]'s file name): a pid file may be stale,
/// and its pid reused by an unrelated process that must not be signalled. Right after
/// [`spawn_detached`] with a netns the process may still be `ip netns exec NS .../program`, which
/// counts too.
pub fn runs_program(pid: i32, program: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let file_names: Vec<&std::ffi::OsStr> = cmdline
        .split(|byte| *byte == 0)
        .filter_map(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)).file_name())
        .collect();
    match file_names.first() {
        Some(argv0) if *argv0 == program => true,
        Some(argv0) if *argv0 == "ip" => file_names.get(4).is_some_and(|arg| *arg == program),
        _ => false,
    }
}

/// Stops the process recorded in `pid_file` if it still runs `program`: SIGTERM, then SIGKILL
/// after `grace`. Removes the pid file. Returns whether a live process was found.
pub fn stop_pid_file(pid_file: &Path, program: &str, grace: Duration) -> bool {
    let Some(pid) = read_pid(pid_file) else {
        return false;
    };
    let was_alive = pid > 1 && is_alive(pid) && runs_program(pid, program);
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

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_stop_pid_file_only_signals_the_named_program() {
        let dir = std::env::temp_dir().join(format!("ferrolb-process-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (log, pid_path) = (log_file(&dir, "sleep"), pid_file(&dir, "sleep"));
        let pid = spawn_detached(
            None,
            Path::new("/bin/sleep"),
            &["30".into()],
            &log,
            &pid_path,
        )
        .unwrap() as i32;
        assert_eq!(read_pid(&pid_path), Some(pid));
        assert!(is_alive(pid));
        assert!(runs_program(pid, "sleep"));
        assert!(!runs_program(pid, "etcd"));

        // A pid file whose process runs something else is treated as stale: nothing is signalled.
        assert!(!stop_pid_file(&pid_path, "etcd", Duration::from_secs(1)));
        assert!(is_alive(pid));

        fs::write(&pid_path, format!("{pid}\n")).unwrap();
        assert!(stop_pid_file(&pid_path, "sleep", Duration::from_secs(5)));
        assert!(!is_alive(pid));
        assert!(!pid_path.exists());
        // Stopping again finds nothing.
        assert!(!stop_pid_file(&pid_path, "sleep", Duration::from_secs(1)));
        fs::remove_dir_all(&dir).unwrap();
    }
}
