//! Other BGP implementations as the lab's router, for interoperability tests: BIRD 2 and GoBGP,
//! started in the router namespace in place of FRR (whose daemons are stopped first: bgpd holds
//! port 179). Like the lab's bgpd they are passive (the speakers dial) with router ID 192.0.2.1,
//! but their neighbours are fixed addresses with a given AS (iBGP or eBGP, as a test needs).
//! Config, log and pid file are in `<run dir>/bird/` or `<run dir>/gobgp/`; the daemon is killed
//! when its handle is dropped (and by the lab's teardown, which stops every process in the
//! namespace, if the handle leaked).
//!
//! - **BIRD** (`bird -f -c bird.conf -s bird.ctl`): one `protocol bgp` per neighbour; the kernel
//!   protocols export the best routes to the namespace's main table (`proto bird`).
//! - **GoBGP** (`gobgpd -f gobgpd.toml --api-hosts 127.0.0.1:50051`): its gRPC API listens on the
//!   namespace's own loopback only. There is no zebra here, so GoBGP installs nothing in the
//!   kernel: its RIB is all there is to check.
//!
//! [`BgpRouter`] reads what a router holds for a prefix as [`RibRoute`]s; it is implemented for
//! these two and for the lab's FRR ([`Router`]), so one test body can run against each.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::{self, CmdError};
use crate::netlab::router::{Router, RouterError};
use crate::netlab::topology::{ROUTER_LAN_V4, ROUTER_LAN_V6};
use crate::netlab::{Netlab, netns};
use crate::process::{self, Background, ProcessError};

/// Where GoBGP's gRPC API listens, inside the router namespace (its loopback is its own).
pub const GOBGP_API_HOST: &str = "127.0.0.1";
pub const GOBGP_API_PORT: u16 = 50051;
/// How long a router may take to listen on port 179 after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// BIRD's control socket must fit a unix socket path (108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 100;

/// Starting or asking a router failed.
#[derive(Debug, thiserror::Error)]
pub enum RoutersError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Frr(#[from] RouterError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{router} did not listen on port 179 within {START_TIMEOUT:?}; its log:\n{log}")]
    NotListening { router: &'static str, log: String },
}

/// A neighbour of the router: a speaker that dials it from `address` with AS `asn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub address: IpAddr,
    pub asn: u32,
}

impl Neighbor {
    pub fn new(address: IpAddr, asn: u32) -> Neighbor {
        Neighbor { address, asn }
    }
}

/// One path a router holds for a prefix, as its own tools show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RibRoute {
    pub prefix: String,
    pub next_hop: Option<IpAddr>,
    /// The AS numbers of the AS_PATH, in order.
    pub as_path: Vec<u32>,
    /// COMMUNITIES as (AS, value).
    pub communities: Vec<(u16, u16)>,
    pub large_communities: Vec<(u32, u32, u32)>,
    /// LOCAL_PREF, if the router keeps one for the path.
    pub local_pref: Option<u32>,
}

/// A BGP router of the lab, asked through its own tools.
pub trait BgpRouter {
    /// "BIRD", "GoBGP", "FRR".
    fn name(&self) -> &'static str;
    /// `Ok` once the session with `neighbor` is Established, else what the router says.
    fn established(&self, neighbor: IpAddr) -> Result<(), String>;
    /// The paths the router holds for exactly `prefix` (`203.0.113.0/24`); none is `Ok(vec![])`.
    fn routes(&self, prefix: &str) -> Result<Vec<RibRoute>, String>;
    /// Whether the router writes its routes into the namespace's kernel table.
    fn installs_kernel_routes(&self) -> bool;
}

/// A router daemon started by this module; killed on drop.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    pid: i32,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let left = process::stop(&[self.pid], Duration::from_secs(2));
        if !left.is_empty() {
            tracing::warn!(
                router = self.name,
                pid = self.pid,
                "still alive after SIGKILL"
            );
        }
    }
}

/// Writes `file` in `dir` (created), returning its path.
fn write_file(dir: &Path, file: &str, text: &str) -> Result<PathBuf, RoutersError> {
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RoutersError::File { path, source }
    };
    fs::create_dir_all(dir).map_err(file_error(dir))?;
    let path = dir.join(file);
    fs::write(&path, text).map_err(file_error(&path))?;
    Ok(path)
}

/// Starts `program` in the router namespace (FRR stopped first) and waits until it listens on
/// port 179 for every family of `neighbors`.
fn start_daemon(
    netlab: &Netlab,
    name: &'static str,
    dir: &Path,
    program: &Path,
    args: Vec<String>,
    neighbors: &[Neighbor],
) -> Result<Daemon, RoutersError> {
    netlab.router().stop()?;
    let ns = netlab.topology.router_ns();
    let started = Background {
        name,
        ns: &ns,
        program,
        args,
        env: BTreeMap::new(),
        dir,
    }
    .start()?;
    let daemon = Daemon {
        name,
        pid: started.pid,
    };
    let wants_v4 = neighbors.iter().any(|n| n.address.is_ipv4());
    let wants_v6 = neighbors.iter().any(|n| n.address.is_ipv6());
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let listening = netns::exec(&ns, "ss")
            .args(["-Hltn", "sport = :179"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        // A wildcard socket shows as 0.0.0.0, [::] or * (both families), one bound to the
        // router's address as that address.
        let v4 = [
            "0.0.0.0:179".into(),
            "*:179".into(),
            format!("{ROUTER_LAN_V4}:179"),
        ];
        let v6 = [
            "[::]:179".into(),
            "*:179".into(),
            format!("[{ROUTER_LAN_V6}]:179"),
        ];
        let has = |any: &[String]| any.iter().any(|a| listening.contains(a.as_str()));
        if (!wants_v4 || has(&v4)) && (!wants_v6 || has(&v6)) {
            return Ok(daemon);
        }
        if Instant::now() >= deadline || !process::is_alive(daemon.pid) {
            let log = crate::harness::tail(&dir.join(format!("{name}.log")), 30).join("\n");
            return Err(RoutersError::NotListening { router: name, log });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The router's own address of `neighbor`'s family (the session's local address).
fn local_address(neighbor: &Neighbor) -> IpAddr {
    if neighbor.address.is_ipv4() {
        IpAddr::V4(ROUTER_LAN_V4)
    } else {
        IpAddr::V6(ROUTER_LAN_V6)
    }
}

// ---------------------------------------------------------------------------------------------
// BIRD

/// BIRD 2 as the lab's router.
#[derive(Debug)]
pub struct Bird {
    pub ns: String,
    /// `<run dir>/bird`: bird.conf, bird.log, the pid file.
    pub dir: PathBuf,
    /// The control socket `birdc -s` talks to.
    pub socket: PathBuf,
    neighbors: Vec<Neighbor>,
    _daemon: Daemon,
}

/// bird.conf for a router in AS `asn` with these neighbours: passive sessions, every route
/// imported, nothing exported to the speakers, the best routes exported to the kernel.
pub fn bird_conf(log: &Path, asn: u32, neighbors: &[Neighbor]) -> String {
    let mut conf = format!(
        "# generated by ferrolb-tests\nlog \"{log}\" all;\nrouter id {ROUTER_LAN_V4};\n\
         protocol device {{}}\n\
         protocol kernel kernel4 {{ ipv4 {{ import none; export all; }}; }}\n\
         protocol kernel kernel6 {{ ipv6 {{ import none; export all; }}; }}\n",
        log = log.display()
    );
    for (index, neighbor) in neighbors.iter().enumerate() {
        let family = if neighbor.address.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        };
        // `direct`: iBGP sessions default to multihop with recursive next hops, which would need
        // an IGP route to the node; the nodes are on the router's LAN. The short error wait lets
        // a test's next session in at once after one was closed (BIRD's default is 60 s).
        conf.push_str(&format!(
            "protocol bgp {name} {{\n  local {local} as {asn};\n  neighbor {address} as {peer_asn};\n  \
             passive on;\n  direct;\n  error wait time 1, 2;\n  {family} {{ import all; export none; }};\n}}\n",
            name = bird_protocol(index),
            local = local_address(neighbor),
            address = neighbor.address,
            peer_asn = neighbor.asn,
        ));
    }
    conf
}

/// The name of the `protocol bgp` of the neighbour at `index`.
fn bird_protocol(index: usize) -> String {
    format!("peer{index}")
}

impl Bird {
    /// Stops FRR and starts BIRD in AS `asn` with these neighbours.
    pub fn start(netlab: &Netlab, asn: u32, neighbors: &[Neighbor]) -> Result<Bird, RoutersError> {
        let dir = netlab.run_dir.join("bird");
        let conf = write_file(
            &dir,
            "bird.conf",
            &bird_conf(&dir.join("bird.log"), asn, neighbors),
        )?;
        let mut socket = dir.join("bird.ctl");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            // A deep run directory: the socket goes to a short path of its own.
            socket = std::env::temp_dir().join(format!("{}-bird.ctl", netlab.topology.router_ns()));
        }
        let args = vec![
            // In the foreground, so that the pid we keep is BIRD's.
            "-f".to_string(),
            "-c".to_string(),
            conf.display().to_string(),
            "-s".to_string(),
            socket.display().to_string(),
        ];
        let daemon = start_daemon(netlab, "bird", &dir, Path::new("bird"), args, neighbors)?;
        Ok(Bird {
            ns: netlab.topology.router_ns(),
            dir,
            socket,
            neighbors: neighbors.to_vec(),
            _daemon: daemon,
        })
    }

    /// `birdc -s <socket> <args>` in the router namespace: BIRD's answer.
    pub fn birdc(&self, args: &[&str]) -> Result<String, CmdError> {
        let mut birdc = netns::exec(&self.ns, "birdc");
        birdc.arg("-s").arg(&self.socket).args(args);
        cmd::stdout(birdc)
    }

    fn protocol_of(&self, neighbor: IpAddr) -> Result<String, String> {
        self.neighbors
            .iter()
            .position(|n| n.address == neighbor)
            .map(bird_protocol)
            .ok_or_else(|| format!("{neighbor} is not a neighbour of this BIRD"))
    }

    /// `show protocols all <neighbour's protocol>`.
    pub fn protocol_details(&self, neighbor: IpAddr) -> Result<String, String> {
        let protocol = self.protocol_of(neighbor)?;
        self.birdc(&["show", "protocols", "all", &protocol])
            .map_err(|e| e.to_string())
    }
}

impl BgpRouter for Bird {
    fn name(&self) -> &'static str {
        "BIRD"
    }

    fn established(&self, neighbor: IpAddr) -> Result<(), String> {
        let details = self.protocol_details(neighbor)?;
        if details
            .lines()
            .any(|line| line.trim() == "BGP state:          Established")
        {
            Ok(())
        } else {
            Err(details)
        }
    }

    fn routes(&self, prefix: &str) -> Result<Vec<RibRoute>, String> {
        let mut birdc = netns::exec(&self.ns, "birdc");
        birdc
            .arg("-s")
            .arg(&self.socket)
            .args(["show", "route", "all", prefix]);
        let line = cmd::display(&birdc);
        let out = birdc.output().map_err(|e| format!("{line}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            parse_bird_routes(&text)
        } else if text.contains("Network not found") {
            // birdc exits non-zero for this answer, and prints it on stdout.
            Ok(Vec::new())
        } else {
            Err(format!(
                "{line}: {}: {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn installs_kernel_routes(&self) -> bool {
        true
    }
}

/// Parses `birdc show route all ...`: a route starts with its prefix at the start of a line (a
/// second path of the same prefix with blanks instead), its attributes follow, indented.
pub fn parse_bird_routes(text: &str) -> Result<Vec<RibRoute>, String> {
    let mut routes: Vec<RibRoute> = Vec::new();
    let mut prefix = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || line.starts_with("BIRD ") || line.starts_with("Table ") {
            continue;
        }
        let first = trimmed.split_whitespace().next().unwrap_or_default();
        if first == "unicast" || (!line.starts_with(char::is_whitespace) && first.contains('/')) {
            if !line.starts_with(char::is_whitespace) {
                prefix = first.to_string();
            }
            routes.push(RibRoute {
                prefix: prefix.clone(),
                ..RibRoute::default()
            });
            continue;
        }
        let Some(route) = routes.last_mut() else {
            continue;
        };
        let bad = |what: &str| format!("BIRD: cannot read {what} in {line:?}");
        if let Some(rest) = trimmed.strip_prefix("via ") {
            let hop = rest.split_whitespace().next().unwrap_or_default();
            route.next_hop = Some(hop.parse().map_err(|_| bad("the next hop"))?);
        } else if let Some(rest) = trimmed.strip_prefix("BGP.as_path:") {
            route.as_path = rest
                .split_whitespace()
                .map(|asn| asn.parse().map_err(|_| bad("the AS path")))
                .collect::<Result<_, _>>()?;
        } else if let Some(rest) = trimmed.strip_prefix("BGP.local_pref:") {
            route.local_pref = Some(rest.trim().parse().map_err(|_| bad("LOCAL_PREF"))?);
        } else if let Some(rest) = trimmed.strip_prefix("BGP.community:") {
            route.communities = parenthesised(rest)
                .iter()
                .map(|fields| match fields[..] {
                    [a, b] => Ok((
                        u16::try_from(a).map_err(|_| bad("a community"))?,
                        u16::try_from(b).map_err(|_| bad("a community"))?,
                    )),
                    _ => Err(bad("a community")),
                })
                .collect::<Result<_, _>>()?;
        } else if let Some(rest) = trimmed.strip_prefix("BGP.large_community:") {
            route.large_communities = parenthesised(rest)
                .iter()
                .map(|fields| match fields[..] {
                    [a, b, c] => Ok((a, b, c)),
                    _ => Err(bad("a large community")),
                })
                .collect::<Result<_, _>>()?;
        }
    }
    Ok(routes)
}

/// `(64513,200) (1, 2, 3)` -> `[[64513, 200], [1, 2, 3]]` (unparsable numbers dropped, so a
/// wrong arity shows).
fn parenthesised(text: &str) -> Vec<Vec<u32>> {
    text.split('(')
        .filter_map(|group| group.split_once(')'))
        .map(|(inside, _)| {
            inside
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// GoBGP

/// GoBGP as the lab's router.
#[derive(Debug)]
pub struct Gobgp {
    pub ns: String,
    /// `<run dir>/gobgp`: gobgpd.toml, gobgp.log (gobgpd logs to stdout), the pid file.
    pub dir: PathBuf,
    _daemon: Daemon,
}

/// gobgpd.toml for a router in AS `asn` with these neighbours (passive, the neighbour's own
/// family only). GoBGP imports and keeps every path it is sent, without policies.
pub fn gobgp_conf(asn: u32, neighbors: &[Neighbor]) -> String {
    let mut conf = format!(
        "# generated by ferrolb-tests\n[global.config]\n  as = {asn}\n  router-id = \"{ROUTER_LAN_V4}\"\n  \
         port = 179\n  local-address-list = [\"{ROUTER_LAN_V4}\", \"{ROUTER_LAN_V6}\"]\n"
    );
    for neighbor in neighbors {
        let family = if neighbor.address.is_ipv4() {
            "ipv4-unicast"
        } else {
            "ipv6-unicast"
        };
        conf.push_str(&format!(
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{address}\"\n    peer-as = {peer_asn}\n  \
             [neighbors.transport.config]\n    passive-mode = true\n  [[neighbors.afi-safis]]\n    \
             [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n",
            address = neighbor.address,
            peer_asn = neighbor.asn,
        ));
    }
    conf
}

impl Gobgp {
    /// Stops FRR and starts gobgpd in AS `asn` with these neighbours.
    pub fn start(netlab: &Netlab, asn: u32, neighbors: &[Neighbor]) -> Result<Gobgp, RoutersError> {
        let dir = netlab.run_dir.join("gobgp");
        let conf = write_file(&dir, "gobgpd.toml", &gobgp_conf(asn, neighbors))?;
        let args = vec![
            "-f".to_string(),
            conf.display().to_string(),
            "-t".to_string(),
            "toml".to_string(),
            "--log-plain".to_string(),
            "--log-level=debug".to_string(),
            format!("--api-hosts={GOBGP_API_HOST}:{GOBGP_API_PORT}"),
            // Its profiling server would be one more listener; nothing here needs it.
            "--pprof-disable".to_string(),
        ];
        let daemon = start_daemon(netlab, "gobgp", &dir, Path::new("gobgpd"), args, neighbors)?;
        Ok(Gobgp {
            ns: netlab.topology.router_ns(),
            dir,
            _daemon: daemon,
        })
    }

    /// `gobgp -u 127.0.0.1 -p 50051 <args>` in the router namespace: GoBGP's answer.
    pub fn gobgp(&self, args: &[&str]) -> Result<String, CmdError> {
        let mut gobgp = netns::exec(&self.ns, "gobgp");
        gobgp
            .args(["-u", GOBGP_API_HOST, "-p"])
            .arg(GOBGP_API_PORT.to_string())
            .args(args);
        cmd::stdout(gobgp)
    }

    /// A `-j` command's answer, parsed.
    pub fn gobgp_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.gobgp(args).map_err(|e| e.to_string())?;
        serde_json::from_str(&out).map_err(|e| format!("gobgp {args:?}: {e}: {out}"))
    }
}

impl BgpRouter for Gobgp {
    fn name(&self) -> &'static str {
        "GoBGP"
    }

    fn established(&self, neighbor: IpAddr) -> Result<(), String> {
        let address = neighbor.to_string();
        let peer = self.gobgp_json(&["neighbor", &address, "-j"])?;
        // apipb.PeerState.SessionState: 6 = ESTABLISHED.
        if peer["state"]["session_state"] == 6 {
            Ok(())
        } else {
            Err(peer["state"].to_string())
        }
    }

    fn routes(&self, prefix: &str) -> Result<Vec<RibRoute>, String> {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let rib = self.gobgp_json(&["global", "rib", "-a", family, prefix, "-j"])?;
        parse_gobgp_routes(&rib, prefix)
    }

    fn installs_kernel_routes(&self) -> bool {
        // No zebra in the lab for GoBGP to talk to.
        false
    }
}

/// The paths of `prefix` in `gobgp global rib -j` (`{"<prefix>": [path, ...]}`), attributes by
/// their type code (RFC 4271 and the IANA registry).
pub fn parse_gobgp_routes(rib: &Value, prefix: &str) -> Result<Vec<RibRoute>, String> {
    let Some(paths) = rib.get(prefix) else {
        return Ok(Vec::new());
    };
    let paths = paths
        .as_array()
        .ok_or_else(|| format!("GoBGP: paths of {prefix} not a list: {rib}"))?;
    let mut routes = Vec::new();
    for path in paths {
        let mut route = RibRoute {
            prefix: prefix.to_string(),
            ..RibRoute::default()
        };
        let attrs = path["attrs"].as_array().cloned().unwrap_or_default();
        for attr in &attrs {
            let bad = || format!("GoBGP: cannot read attribute {attr}");
            let number = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
            match attr["type"].as_u64() {
                // AS_PATH
                Some(2) => {
                    for segment in attr["as_paths"].as_array().cloned().unwrap_or_default() {
                        for asn in segment["asns"].as_array().cloned().unwrap_or_default() {
                            route.as_path.push(number(&asn).ok_or_else(bad)?);
                        }
                    }
                }
                // NEXT_HOP, MP_REACH_NLRI
                Some(3) | Some(14) => {
                    let hop = attr["nexthop"].as_str().ok_or_else(bad)?;
                    route.next_hop = Some(hop.parse().map_err(|_| bad())?);
                }
                // LOCAL_PREF
                Some(5) => route.local_pref = Some(number(&attr["value"]).ok_or_else(bad)?),
                // COMMUNITIES
                Some(8) => {
                    for community in attr["communities"].as_array().cloned().unwrap_or_default() {
                        let value = number(&community).ok_or_else(bad)?;
                        // The halves of a 32-bit value; the casts cannot truncate.
                        route
                            .communities
                            .push(((value >> 16) as u16, (value & 0xffff) as u16));
                    }
                }
                // LARGE_COMMUNITY
                Some(32) => {
                    for large in attr["value"].as_array().cloned().unwrap_or_default() {
                        route.large_communities.push((
                            number(&large["ASN"]).ok_or_else(bad)?,
                            number(&large["LocalData1"]).ok_or_else(bad)?,
                            number(&large["LocalData2"]).ok_or_else(bad)?,
                        ));
                    }
                }
                _ => {}
            }
        }
        routes.push(route);
    }
    Ok(routes)
}

// ---------------------------------------------------------------------------------------------
// FRR (the lab's default router)

impl BgpRouter for Router {
    fn name(&self) -> &'static str {
        "FRR"
    }

    fn established(&self, neighbor: IpAddr) -> Result<(), String> {
        let peer = self.vtysh_json(&format!("show bgp neighbors {neighbor} json"))?;
        let state = &peer[neighbor.to_string()]["bgpState"];
        if state == "Established" {
            Ok(())
        } else {
            Err(peer.to_string())
        }
    }

    fn routes(&self, prefix: &str) -> Result<Vec<RibRoute>, String> {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let table = self.vtysh_json(&format!("show bgp {family} unicast {prefix} json"))?;
        parse_frr_routes(&table, prefix)
    }

    fn installs_kernel_routes(&self) -> bool {
        true
    }
}

/// The paths of `show bgp <family> unicast <prefix> json` (`{"paths": [...]}`; `{}` when FRR
/// has no such prefix).
pub fn parse_frr_routes(table: &Value, prefix: &str) -> Result<Vec<RibRoute>, String> {
    let mut routes = Vec::new();
    for path in table["paths"].as_array().cloned().unwrap_or_default() {
        let bad = |what: &str| format!("FRR: cannot read {what} in {path}");
        let strings = |field: &str| -> Vec<String> {
            path[field]["string"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let numbers = |text: &str| -> Result<Vec<u32>, String> {
            text.split(':')
                .map(|n| n.parse().map_err(|_| bad(text)))
                .collect()
        };
        let mut route = RibRoute {
            prefix: prefix.to_string(),
            next_hop: path["nexthops"][0]["ip"]
                .as_str()
                .map(|ip| ip.parse().map_err(|_| bad("the next hop")))
                .transpose()?,
            local_pref: path["locPrf"]
                .as_u64()
                .map(|n| u32::try_from(n).map_err(|_| bad("LOCAL_PREF")))
                .transpose()?,
            ..RibRoute::default()
        };
        for asn in strings("aspath") {
            route
                .as_path
                .push(asn.parse().map_err(|_| bad("the AS path"))?);
        }
        for community in strings("community") {
            match numbers(&community)?[..] {
                [a, b] => route.communities.push((
                    u16::try_from(a).map_err(|_| bad("a community"))?,
                    u16::try_from(b).map_err(|_| bad("a community"))?,
                )),
                _ => return Err(bad("a community")),
            }
        }
        for large in strings("largeCommunity") {
            match numbers(&large)?[..] {
                [a, b, c] => route.large_communities.push((a, b, c)),
                _ => return Err(bad("a large community")),
            }
        }
        routes.push(route);
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neighbors() -> Vec<Neighbor> {
        vec![
            Neighbor::new("192.0.2.11".parse().unwrap(), 64513),
            Neighbor::new("2001:db8:2::11".parse().unwrap(), 4_200_000_001),
        ]
    }

    #[test]
    fn bird_conf_has_a_passive_direct_session_per_neighbor() {
        let conf = bird_conf(Path::new("/x/bird.log"), 64512, &neighbors());
        for line in [
            "router id 192.0.2.1;",
            "protocol bgp peer0 {",
            "  local 192.0.2.1 as 64512;",
            "  neighbor 192.0.2.11 as 64513;",
            "  ipv4 { import all; export none; };",
            "protocol bgp peer1 {",
            "  local 2001:db8:2::1 as 64512;",
            "  neighbor 2001:db8:2::11 as 4200000001;",
            "  ipv6 { import all; export none; };",
            "  passive on;",
            "  direct;",
            "protocol kernel kernel4 { ipv4 { import none; export all; }; }",
        ] {
            assert!(conf.contains(line), "missing {line:?} in\n{conf}");
        }
    }

    #[test]
    fn gobgp_conf_has_passive_neighbors_of_their_family() {
        let conf = gobgp_conf(64512, &neighbors()[..1]);
        for line in [
            "as = 64512",
            "router-id = \"192.0.2.1\"",
            "neighbor-address = \"192.0.2.11\"",
            "peer-as = 64513",
            "passive-mode = true",
            "afi-safi-name = \"ipv4-unicast\"",
        ] {
            assert!(conf.contains(line), "missing {line:?} in\n{conf}");
        }
    }

    #[test]
    fn bird_routes_are_parsed() {
        let text = [
            "BIRD 2.0.12 ready.",
            "Table master4:",
            "203.0.113.0/24       unicast [peer0 21:40:17.813] * (100) [AS4200000001i]",
            "\tvia 192.0.2.11 on eth0",
            "\tType: BGP univ",
            "\tBGP.origin: IGP",
            "\tBGP.as_path: 4200000001",
            "\tBGP.next_hop: 192.0.2.11",
            "\tBGP.local_pref: 150",
            "\tBGP.community: (64513,300) (64513,301)",
            "\tBGP.large_community: (64513, 3, 4)",
            "                     unicast [peer1 21:40:18.000] (100) [AS64514i]",
            "\tvia 192.0.2.12 on eth0",
            "\tBGP.as_path: 64514 64515",
        ]
        .join("\n");
        let routes = parse_bird_routes(&text).unwrap();
        assert_eq!(
            routes,
            [
                RibRoute {
                    prefix: "203.0.113.0/24".into(),
                    next_hop: Some("192.0.2.11".parse().unwrap()),
                    as_path: vec![4_200_000_001],
                    communities: vec![(64513, 300), (64513, 301)],
                    large_communities: vec![(64513, 3, 4)],
                    local_pref: Some(150),
                },
                RibRoute {
                    prefix: "203.0.113.0/24".into(),
                    next_hop: Some("192.0.2.12".parse().unwrap()),
                    as_path: vec![64514, 64515],
                    ..RibRoute::default()
                },
            ]
        );
        assert!(
            parse_bird_routes("BIRD 2.0.12 ready.\n")
                .unwrap()
                .is_empty()
        );
        assert!(parse_bird_routes("x/1 unicast\n\tBGP.community: (1,2,3)\n").is_err());
    }

    #[test]
    fn gobgp_routes_are_parsed() {
        let rib: Value = serde_json::from_str(
            r#"{"2001:db8:ee::200/128":[{"nlri":{"prefix":"2001:db8:ee::200/128"},"attrs":[
                {"type":1,"value":0},
                {"type":2,"as_paths":[{"segment_type":2,"num":1,"asns":[4200000001]}]},
                {"type":5,"value":250},
                {"type":8,"communities":[4227924168]},
                {"type":14,"nexthop":"2001:db8:2::11","afi":2,"safi":1},
                {"type":32,"value":[{"ASN":64513,"LocalData1":1,"LocalData2":2}]}]}]}"#,
        )
        .unwrap();
        let routes = parse_gobgp_routes(&rib, "2001:db8:ee::200/128").unwrap();
        assert_eq!(
            routes,
            [RibRoute {
                prefix: "2001:db8:ee::200/128".into(),
                next_hop: Some("2001:db8:2::11".parse().unwrap()),
                as_path: vec![4_200_000_001],
                communities: vec![(64513, 200)],
                large_communities: vec![(64513, 1, 2)],
                local_pref: Some(250),
            }]
        );
        assert!(
            parse_gobgp_routes(&rib, "203.0.113.0/24")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn frr_routes_are_parsed() {
        let table: Value = serde_json::from_str(
            r#"{"prefix":"203.0.113.200/32","paths":[{"aspath":{"string":"4200000001"},
                "community":{"string":"64513:200"},"largeCommunity":{"string":"64513:1:2"},
                "locPrf":250,"nexthops":[{"ip":"192.0.2.11"}]}]}"#,
        )
        .unwrap();
        let routes = parse_frr_routes(&table, "203.0.113.200/32").unwrap();
        assert_eq!(
            routes,
            [RibRoute {
                prefix: "203.0.113.200/32".into(),
                next_hop: Some("192.0.2.11".parse().unwrap()),
                as_path: vec![4_200_000_001],
                communities: vec![(64513, 200)],
                large_communities: vec![(64513, 1, 2)],
                local_pref: Some(250),
            }]
        );
        assert!(
            parse_frr_routes(&serde_json::json!({}), "x")
                .unwrap()
                .is_empty()
        );
    }
}
