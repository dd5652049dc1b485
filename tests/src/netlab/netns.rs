//! Network namespace operations through `ip`. Every function names the namespace it acts in;
//! nothing here touches the root namespace's interfaces or routes.

use std::path::Path;
use std::process::Command;

use crate::cmd::{self, CmdError};

/// Where `ip netns add` creates its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// Whether the named namespace exists.
pub fn exists(ns: &str) -> bool {
    Path::new(NETNS_DIR).join(ns).exists()
}

/// Names of existing namespaces that start with `prefix`, sorted.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Creates the namespace unless it exists, and brings its `lo` up.
pub fn ensure(ns: &str) -> Result<(), CmdError> {
    if !exists(ns) {
        cmd::run(cmd::command("ip", ["netns", "add", ns]))?;
    }
    ip(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// `ip -n <ns> <args>`.
pub fn ip(ns: &str, args: &[&str]) -> Result<String, CmdError> {
    let mut cmd = cmd::command("ip", ["-n", ns]);
    cmd.args(args);
    cmd::stdout(cmd)
}

/// A command that runs `program` inside the namespace (`ip netns exec` keeps the pid: it execs).
pub fn exec(ns: &str, program: &str) -> Command {
    cmd::command("ip", ["netns", "exec", ns, program])
}

/// Sets sysctls (`key=value`) inside the namespace.
pub fn sysctl(ns: &str, settings: &[&str]) -> Result<(), CmdError> {
    let mut cmd = exec(ns, "sysctl");
    cmd.arg("-qw").args(settings);
    cmd::run(cmd).map(drop)
}

/// Whether the namespace has an interface with this name.
pub fn link_exists(ns: &str, ifname: &str) -> bool {
    exists(ns) && ip(ns, &["link", "show", "dev", ifname]).is_ok()
}

/// Pids of the processes whose network namespace is `ns`.
pub fn pids(ns: &str) -> Vec<i32> {
    if !exists(ns) {
        return Vec::new();
    }
    cmd::stdout(cmd::command("ip", ["netns", "pids", ns]))
        .map(|out| {
            out.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes the namespace if it exists.
pub fn delete(ns: &str) -> Result<(), CmdError> {
    if exists(ns) {
        cmd::run(cmd::command("ip", ["netns", "del", ns]))?;
    }
    Ok(())
}
