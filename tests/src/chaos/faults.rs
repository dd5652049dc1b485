//! Injecting a fault into a running lab, and undoing it. Each fault is one [`Injected`] value
//! that knows its own undo, so a run that stops half-way (a panic, ^C) can still heal the lab.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::schedule::FaultKind;
use crate::harness::TestLab;
use crate::netlab::netns;
use crate::process;

/// The nftables table a partition adds in each node namespace.
const PARTITION_TABLE: &str = "ferrolb_chaos_partition";
/// The speakers' membership port.
const MEMBERSHIP_PORT: u16 = 7946;

/// How to undo an injected fault.
#[derive(Debug)]
pub enum Injected {
    /// Bring the node's switch port up.
    LinkDown { node: String },
    /// Start what was killed or stopped again (the lab's `up` starts what is not running).
    Stopped { what: String },
    /// SIGCONT the frozen process.
    Frozen { pid: i32, what: String },
    /// Delete the partition tables in these namespaces.
    Partitioned { namespaces: Vec<String> },
}

fn signal(pid: i32, signal: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        anyhow::bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn pid_of(lab: &TestLab, name: &str) -> anyhow::Result<i32> {
    let path = lab.run_dir().join(format!("{name}.pid"));
    process::read_pid(&path)
        .filter(|pid| process::is_alive(*pid))
        .with_context(|| format!("{name} is not running ({})", path.display()))
}

fn wait_gone(pid: i32, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while process::is_alive(pid) {
        if Instant::now() >= deadline {
            anyhow::bail!("pid {pid} still runs {within:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn partition_rules(others: &[(std::net::Ipv4Addr, std::net::Ipv6Addr)]) -> String {
    let v4: Vec<String> = others.iter().map(|(v4, _)| v4.to_string()).collect();
    let v6: Vec<String> = others.iter().map(|(_, v6)| v6.to_string()).collect();
    format!(
        "table inet {PARTITION_TABLE} {{\n  chain input {{\n    type filter hook input priority \
         filter - 10; policy accept;\n    ip saddr {{ {} }} udp dport {MEMBERSHIP_PORT} drop\n    \
         ip6 saddr {{ {} }} udp dport {MEMBERSHIP_PORT} drop\n  }}\n}}\n",
        v4.join(", "),
        v6.join(", ")
    )
}

/// Injects `kind` aimed at `nodes` (the nodes of one side for a partition).
pub fn inject(lab: &TestLab, kind: FaultKind, nodes: &[String]) -> anyhow::Result<Injected> {
    let node = || nodes.first().cloned().context("the fault needs a node");
    Ok(match kind {
        FaultKind::LinkDown => {
            let node = node()?;
            lab.netlab().set_port(&node, false)?;
            Injected::LinkDown { node }
        }
        FaultKind::SpeakerKill | FaultKind::SpeakerTerm => {
            let what = format!("speaker-{}", node()?);
            let pid = pid_of(lab, &what)?;
            let sig = if kind == FaultKind::SpeakerKill {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            signal(pid, sig)?;
            wait_gone(pid, Duration::from_secs(15))?;
            Injected::Stopped { what }
        }
        FaultKind::SpeakerFreeze => {
            let what = format!("speaker-{}", node()?);
            let pid = pid_of(lab, &what)?;
            signal(pid, libc::SIGSTOP)?;
            Injected::Frozen { pid, what }
        }
        FaultKind::ApiServerFreeze => {
            let (_, apiserver) = lab.control_plane().pids();
            let pid = apiserver.context("no kube-apiserver pid")?;
            signal(pid, libc::SIGSTOP)?;
            Injected::Frozen {
                pid,
                what: "kube-apiserver".to_string(),
            }
        }
        FaultKind::ControllerKill => {
            let pid = pid_of(lab, "controller")?;
            signal(pid, libc::SIGKILL)?;
            wait_gone(pid, Duration::from_secs(5))?;
            Injected::Stopped {
                what: "controller".to_string(),
            }
        }
        FaultKind::MembershipPartition => {
            let topology = &lab.netlab().topology;
            let all: Vec<_> = topology.nodes().cloned().collect();
            let (side, other): (Vec<_>, Vec<_>) = all.iter().partition(|n| nodes.contains(&n.name));
            let mut namespaces = Vec::new();
            for (members, strangers) in [(&side, &other), (&other, &side)] {
                let addresses: Vec<_> = strangers.iter().map(|n| (n.ipv4, n.ipv6)).collect();
                if addresses.is_empty() {
                    continue;
                }
                let rules = lab.run_dir().join("chaos-partition.nft");
                std::fs::write(&rules, partition_rules(&addresses))?;
                for member in members.iter() {
                    let ns = topology.ns(&member.name);
                    // Recorded first: a half-applied partition is removed too.
                    namespaces.push(ns.clone());
                    let out = netns::exec(&ns, "nft").arg("-f").arg(&rules).output()?;
                    if !out.status.success() {
                        anyhow::bail!(
                            "nft -f in {ns}: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                }
            }
            Injected::Partitioned { namespaces }
        }
    })
}

/// Undoes a fault.
pub fn heal(lab: &mut TestLab, injected: &Injected) -> anyhow::Result<()> {
    match injected {
        Injected::LinkDown { node } => lab.netlab().set_port(node, true)?,
        Injected::Stopped { what } => lab
            .up_again()
            .with_context(|| format!("starting {what} again"))?,
        Injected::Frozen { pid, .. } => signal(*pid, libc::SIGCONT)?,
        Injected::Partitioned { namespaces } => {
            for ns in namespaces {
                let _ = netns::exec(ns, "nft")
                    .args(["delete", "table", "inet", PARTITION_TABLE])
                    .output();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_rules_drop_only_the_membership_port_from_the_others() {
        let rules = partition_rules(&[(
            "192.0.2.13".parse().unwrap(),
            "2001:db8:2::13".parse().unwrap(),
        )]);
        assert!(
            rules.contains("ip saddr { 192.0.2.13 } udp dport 7946 drop"),
            "{rules}"
        );
        assert!(
            rules.contains("ip6 saddr { 2001:db8:2::13 } udp dport 7946 drop"),
            "{rules}"
        );
        assert!(rules.contains("policy accept"), "{rules}");
    }
}
