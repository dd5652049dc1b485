//! The network lab: Linux network namespaces joined by veth pairs and a bridge.
//!
//! ```text
//!   ns <P>sw: bridge br0 (STP off, forward delay 0, no multicast snooping)
//!     |-- port "router" <-> <P>router eth0 192.0.2.1    2001:db8:2::1    (FRR, AS 64512)
//!     |-- port "cp"     <-> <P>cp     eth0 192.0.2.2    2001:db8:2::2    (kube-apiserver, etcd)
//!     |-- port "nodeN"  <-> <P>nodeN  eth0 192.0.2.1N   2001:db8:2::1N   (speakers)
//!     `-- port "client" <-> <P>client eth0 192.0.2.200  2001:db8:2::200
//!   <P>router ext0 198.51.100.1 2001:db8:51::1 <-> <P>ext eth0 198.51.100.2 2001:db8:51::2
//! ```
//!
//! Every step is idempotent: `up` repairs a half-built or half-deleted lab, `down` cleans up
//! whatever exists. Veth pairs are always created inside lab namespaces, so the root namespace
//! is never touched.

pub mod netns;
pub mod router;
pub mod routers;
pub mod topology;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::{self, CmdError};
use crate::process;
pub use router::Router;
use topology::{
    EXT_V4, EXT_V6, LAN_V4_PREFIX_LEN, LAN_V6_PREFIX_LEN, OUTSIDE_V4_NET, OUTSIDE_V6_NET,
    ROUTER_LAN_V4, ROUTER_LAN_V6, ROUTER_OUTSIDE_V4, ROUTER_OUTSIDE_V6,
};
pub use topology::{LanHost, Role, Topology, TopologyError};

/// Building or tearing down the network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlabError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Router(#[from] router::RouterError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("processes still alive after teardown: {0:?}")]
    Survivors(Vec<i32>),
    #[error("namespaces still present after teardown: {0:?}")]
    LeftoverNamespaces(Vec<String>),
}

/// The network part of a lab: namespaces, links, addresses and the FRR router.
#[derive(Debug, Clone)]
pub struct Netlab {
    pub topology: Topology,
    /// Run directory (pids, logs, FRR configs): `<workspace>/target/lab/<prefix>/`.
    pub run_dir: PathBuf,
}

impl Netlab {
    pub fn new(prefix: &str, nodes: usize, run_dir: &Path) -> Result<Netlab, NetlabError> {
        Ok(Netlab {
            topology: Topology::new(prefix, nodes)?,
            run_dir: run_dir.to_path_buf(),
        })
    }

    pub fn router(&self) -> Router {
        Router::new(&self.topology.router_ns(), &self.run_dir)
    }

    /// Builds (or repairs) the topology and starts the router. Idempotent.
    pub fn up(&self) -> Result<(), NetlabError> {
        std::fs::create_dir_all(&self.run_dir).map_err(|source| NetlabError::File {
            path: self.run_dir.clone(),
            source,
        })?;
        self.remove_stale_nodes()?;
        self.switch_up()?;
        for host in &self.topology.hosts {
            self.host_up(host)?;
        }
        self.outside_up()?;
        self.router().start()?;
        Ok(())
    }

    /// Node namespaces from an earlier `up` with more nodes: their processes are stopped and
    /// the namespaces deleted (their bridge ports go with them).
    fn remove_stale_nodes(&self) -> Result<(), NetlabError> {
        let wanted = self.topology.namespaces();
        for ns in self.existing_namespaces() {
            if wanted.contains(&ns) {
                continue;
            }
            let survivors = process::stop(&netns::pids(&ns), Duration::from_secs(3));
            if !survivors.is_empty() {
                return Err(NetlabError::Survivors(survivors));
            }
            netns::delete(&ns)?;
        }
        Ok(())
    }

    fn switch_up(&self) -> Result<(), NetlabError> {
        let sw = self.topology.switch_ns();
        netns::ensure(&sw)?;
        // The switch has no addresses of its own; without IPv6 it sends nothing by itself.
        netns::sysctl(
            &sw,
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        if !netns::link_exists(&sw, "br0") {
            netns::ip(
                &sw,
                &[
                    "link",
                    "add",
                    "br0",
                    "type",
                    "bridge",
                    "stp_state",
                    "0",
                    "forward_delay",
                    "0",
                    "mcast_snooping",
                    "0",
                    "ageing_time",
                    "30000",
                ],
            )?;
        }
        netns::ip(&sw, &["link", "set", "br0", "up"])?;
        Ok(())
    }

    fn host_up(&self, host: &LanHost) -> Result<(), NetlabError> {
        let sw = self.topology.switch_ns();
        let ns = self.topology.ns(&host.name);
        netns::ensure(&ns)?;
        common_sysctls(&ns)?;
        // The bridge port carries the host's name so a test can cut it off:
        // `ip -n <P>sw link set node1 down`.
        ensure_veth(&sw, &host.name, &ns, "eth0")?;
        netns::ip(&sw, &["link", "set", &host.name, "master", "br0", "up"])?;
        netns::ip(&ns, &["link", "set", "eth0", "address", &host.mac])?;
        netns::sysctl(&ns, &["net.ipv6.conf.eth0.accept_dad=0"])?;
        netns::ip(&ns, &["link", "set", "eth0", "up"])?;
        let v4 = format!("{}/{LAN_V4_PREFIX_LEN}", host.ipv4);
        let v6 = format!("{}/{LAN_V6_PREFIX_LEN}", host.ipv6);
        netns::ip(&ns, &["addr", "replace", &v4, "dev", "eth0"])?;
        netns::ip(&ns, &["-6", "addr", "replace", &v6, "dev", "eth0", "nodad"])?;
        if host.role != Role::Router {
            // Everything else reaches the outside host through the router.
            let (r4, r6) = (ROUTER_LAN_V4.to_string(), ROUTER_LAN_V6.to_string());
            netns::ip(&ns, &["route", "replace", OUTSIDE_V4_NET, "via", &r4])?;
            netns::ip(&ns, &["-6", "route", "replace", OUTSIDE_V6_NET, "via", &r6])?;
        }
        Ok(())
    }

    fn outside_up(&self) -> Result<(), NetlabError> {
        let router = self.topology.router_ns();
        let ext = self.topology.ext_ns();
        netns::ensure(&ext)?;
        common_sysctls(&ext)?;
        ensure_veth(&router, "ext0", &ext, "eth0")?;
        netns::sysctl(&router, &["net.ipv6.conf.ext0.accept_dad=0"])?;
        netns::sysctl(&ext, &["net.ipv6.conf.eth0.accept_dad=0"])?;
        netns::ip(&router, &["link", "set", "ext0", "up"])?;
        netns::ip(&ext, &["link", "set", "eth0", "up"])?;
        let addrs = [
            (
                &router,
                "ext0",
                ROUTER_OUTSIDE_V4.to_string(),
                ROUTER_OUTSIDE_V6.to_string(),
            ),
            (&ext, "eth0", EXT_V4.to_string(), EXT_V6.to_string()),
        ];
        for (ns, dev, v4, v6) in addrs {
            netns::ip(ns, &["addr", "replace", &format!("{v4}/24"), "dev", dev])?;
            let v6 = format!("{v6}/64");
            netns::ip(ns, &["-6", "addr", "replace", &v6, "dev", dev, "nodad"])?;
        }
        let (r4, r6) = (ROUTER_OUTSIDE_V4.to_string(), ROUTER_OUTSIDE_V6.to_string());
        netns::ip(&ext, &["route", "replace", "default", "via", &r4])?;
        netns::ip(&ext, &["-6", "route", "replace", "default", "via", &r6])?;
        netns::sysctl(
            &router,
            &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
        )?;
        Ok(())
    }

    /// Stops every process in the lab's namespaces (by pid) and deletes the namespaces, then
    /// checks that nothing is left. Idempotent; also cleans up after a half-finished `up`.
    pub fn down(&self) -> Result<(), NetlabError> {
        // Pid files may be stale and their pids reused: only trust those that still live in a
        // namespace other than ours (everything the lab starts runs in a lab namespace).
        let mut pids: Vec<i32> = process::pids_in(&self.run_dir)
            .into_iter()
            .filter(|pid| process::in_foreign_netns(*pid))
            .collect();
        let namespaces = self.existing_namespaces();
        for ns in &namespaces {
            pids.extend(netns::pids(ns));
        }
        pids.sort_unstable();
        pids.dedup();
        // Long enough for a graceful speaker shutdown (leave membership, BGP Cease).
        let survivors = process::stop(&pids, Duration::from_secs(5));
        for ns in &namespaces {
            netns::delete(ns)?;
        }
        if survivors.is_empty() {
            process::remove_pid_files(&self.run_dir);
        }
        self.router().remove_state_dir();
        if !survivors.is_empty() {
            return Err(NetlabError::Survivors(survivors));
        }
        let left = self.existing_namespaces();
        if !left.is_empty() {
            return Err(NetlabError::LeftoverNamespaces(left));
        }
        Ok(())
    }

    /// The lab's namespaces that exist now: the ones the topology names, plus any other with
    /// the prefix and a topology-like name (e.g. `node7` from an earlier `up --nodes 7`).
    pub fn existing_namespaces(&self) -> Vec<String> {
        let prefix = &self.topology.prefix;
        let mut names: Vec<String> = self
            .topology
            .namespaces()
            .into_iter()
            .filter(|ns| netns::exists(ns))
            .collect();
        for ns in netns::list_with_prefix(prefix) {
            let short = &ns[prefix.len()..];
            let is_node = short
                .strip_prefix("node")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if is_node && !names.contains(&ns) {
                // Before the switch, which stays last.
                names.insert(0, ns);
            }
        }
        names
    }

    /// A human-readable description of the lab: namespaces, addresses, bridge ports.
    pub fn status(&self) -> String {
        let mut out = String::new();
        for ns in self.topology.namespaces() {
            out.push_str(&format!("== {ns}\n"));
            if !netns::exists(&ns) {
                out.push_str("  (missing)\n");
                continue;
            }
            match netns::ip(&ns, &["-br", "addr"]) {
                Ok(addrs) => out.push_str(&indent(&addrs)),
                Err(err) => out.push_str(&format!("  {err}\n")),
            }
            let pids = netns::pids(&ns);
            if !pids.is_empty() {
                out.push_str(&format!("  processes: {}\n", describe_pids(&pids)));
            }
        }
        let sw = self.topology.switch_ns();
        if netns::exists(&sw) {
            let mut bridge = cmd::command("bridge", ["-n", &sw, "link"]);
            bridge.env("LC_ALL", "C");
            out.push_str("== bridge ports\n");
            match cmd::stdout(bridge) {
                Ok(ports) => out.push_str(&indent(&ports)),
                Err(err) => out.push_str(&format!("  {err}\n")),
            }
        }
        out
    }

    /// Pings `target` from inside `ns` (one echo, 1 s timeout): whether it answered.
    pub fn ping(&self, ns: &str, target: std::net::IpAddr) -> bool {
        let mut ping = netns::exec(ns, "ping");
        ping.args(["-c", "1", "-W", "1", "-n"])
            .arg(target.to_string());
        cmd::run(ping).is_ok()
    }

    /// Who answers ARP for `ip` on the LAN, asked from `ns` (`arping -c 1 -w 1`): the MAC of the
    /// first reply (lower case), or `None` without an answer.
    pub fn arping(&self, ns: &str, ip: std::net::Ipv4Addr) -> Option<String> {
        let mut arping = netns::exec(ns, "arping");
        arping
            .args(["-c", "1", "-w", "1", "-I", "eth0"])
            .arg(ip.to_string());
        let out = cmd::stdout(arping).ok()?;
        // "Unicast reply from 192.0.2.11 [02:00:00:00:00:0B]  0.6ms"
        let mac = out.split_once('[')?.1.split_once(']')?.0;
        Some(mac.to_ascii_lowercase())
    }

    /// Who answers neighbour solicitation for `ip` on the LAN, asked from `ns` (`ndisc6 -1 -q`):
    /// the MAC (lower case), or `None`.
    pub fn ndisc(&self, ns: &str, ip: std::net::Ipv6Addr) -> Option<String> {
        let mut ndisc = netns::exec(ns, "ndisc6");
        ndisc
            .args(["-1", "-q", "-r", "2", "-w", "500"])
            .arg(ip.to_string())
            .arg("eth0");
        let out = cmd::stdout(ndisc).ok()?;
        let mac = out.trim();
        (!mac.is_empty()).then(|| mac.to_ascii_lowercase())
    }

    /// Cuts a host off the switch (`up = false`) or reconnects it, by its bridge port.
    pub fn set_port(&self, host: &str, up: bool) -> Result<(), NetlabError> {
        let state = if up { "up" } else { "down" };
        netns::ip(&self.topology.switch_ns(), &["link", "set", host, state])?;
        Ok(())
    }
}

/// Sysctls every host namespace gets: no DAD (addresses usable at once), no forwarding
/// (the router turns it on), gratuitous ARP when a link comes up.
fn common_sysctls(ns: &str) -> Result<(), CmdError> {
    netns::sysctl(
        ns,
        &[
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.forwarding=0",
            "net.ipv4.conf.all.arp_notify=1",
        ],
    )
}

/// Ensures a veth pair `a_ns/a_name` <-> `b_ns/b_name` exists, created inside `a_ns`. A half
/// pair (left over when one namespace was deleted; deletion is asynchronous) is removed first.
fn ensure_veth(a_ns: &str, a_name: &str, b_ns: &str, b_name: &str) -> Result<(), CmdError> {
    if netns::link_exists(a_ns, a_name) && netns::link_exists(b_ns, b_name) {
        return Ok(());
    }
    if netns::link_exists(a_ns, a_name) {
        netns::ip(a_ns, &["link", "del", a_name])?;
    }
    if netns::link_exists(b_ns, b_name) {
        netns::ip(b_ns, &["link", "del", b_name])?;
    }
    netns::ip(
        a_ns,
        &[
            "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b_ns,
        ],
    )?;
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

/// `pid (comm)` for each pid, from /proc.
pub fn describe_pids(pids: &[i32]) -> String {
    pids.iter()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} ({})", comm.trim())
        })
        .collect::<Vec<_>>()
        .join(", ")
}
