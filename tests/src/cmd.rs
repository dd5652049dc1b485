//! A small command runner: every external command the harness runs (`ip`, `sysctl`, FRR, kubectl)
//! goes through [`run`], which logs the command line and turns a failure into a [`CmdError`] that
//! says which command failed, how, and what it printed on stderr ("ip exited 2" alone is useless in
//! CI).

use std::fmt;
use std::process::{Command, Output, Stdio};

/// A command that could not be started or exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
#[error("`{cmd}` {status}: {stderr}")]
pub struct CmdError {
    /// The command line, as logged.
    pub cmd: String,
    /// How it ended.
    pub status: CmdStatus,
    /// Its stderr (trimmed), or the spawn error.
    pub stderr: String,
}

/// How a failed command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdStatus {
    /// It could not be started at all (missing binary, permissions).
    NotStarted,
    /// It exited with this non-zero code.
    Exited(i32),
    /// It was killed by a signal.
    Signaled,
}

impl fmt::Display for CmdStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdStatus::NotStarted => write!(f, "could not be started"),
            CmdStatus::Exited(code) => write!(f, "exited with {code}"),
            CmdStatus::Signaled => write!(f, "was killed by a signal"),
        }
    }
}

/// The command line of `cmd` as a shell-like string, for logs and errors.
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        line.push(' ');
        if arg.is_empty() || arg.contains([' ', '\'', '"', '\n']) {
            line.push('\'');
            line.push_str(&arg.replace('\'', "'\\''"));
            line.push('\'');
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// Runs `cmd` to completion with stdout and stderr captured; `Err` unless it exited with 0.
pub fn run(mut cmd: Command) -> Result<Output, CmdError> {
    let line = display(&cmd);
    tracing::debug!(target: "ferrolb_tests::cmd", "$ {line}");
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| CmdError {
            cmd: line.clone(),
            status: CmdStatus::NotStarted,
            stderr: err.to_string(),
        })?;
    if output.status.success() {
        return Ok(output);
    }
    let status = match output.status.code() {
        Some(code) => CmdStatus::Exited(code),
        None => CmdStatus::Signaled,
    };
    Err(CmdError {
        cmd: line,
        status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// Runs `cmd` and returns its stdout as text.
pub fn stdout(cmd: Command) -> Result<String, CmdError> {
    run(cmd).map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds a [`Command`] from a program and arguments.
pub fn command<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_returns_stdout() {
        let out = stdout(command("sh", ["-c", "echo hello"])).expect("sh runs");
        assert_eq!(out, "hello\n");
    }

    #[test]
    fn failure_reports_command_status_and_stderr() {
        let err = run(command("sh", ["-c", "echo broken >&2; exit 3"])).unwrap_err();
        assert_eq!(err.status, CmdStatus::Exited(3));
        assert_eq!(err.stderr, "broken");
        assert_eq!(err.cmd, "sh -c 'echo broken >&2; exit 3'");
        assert!(err.to_string().contains("exited with 3"), "{err}");
    }

    #[test]
    fn missing_program_is_not_started() {
        let err = run(command("/nonexistent/ferrolb-no-such-binary", ["x"])).unwrap_err();
        assert_eq!(err.status, CmdStatus::NotStarted);
    }
}
