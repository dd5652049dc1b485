//! Layer2 probes for end-to-end tests of a lab started with [`TestLab::start`]: who answers
//! ARP/NDP for a Service IP, what the client's kernel has in its neighbour cache, how long a
//! failover takes, and the small cluster chores around them (kubectl apply, the Service's IPs,
//! the membership Secret, a speaker's `/metrics`).
//!
//! ```no_run
//! use std::time::Duration;
//! use ferrolb_tests::harness::TestLab;
//! use ferrolb_tests::l2probe::{self, L2Probe};
//!
//! let Some(lab) = TestLab::start("my_test", 3).unwrap() else { return };
//! let probe = L2Probe::new(&lab);
//! probe.wait_for_membership_secret();
//! probe.wait_for_members(3, Duration::from_secs(30));
//! probe.apply("svc", &l2probe::manifest("web", false, &["node1", "node2", "node3"]));
//! let (v4, _v6) = probe.service_ips("web", l2probe::ASSIGN_TIMEOUT);
//! let owner = probe.wait_arp_owner(v4, None, Duration::from_secs(30)).unwrap();
//! assert_eq!(probe.arp_macs(v4, 2).len(), 1, "one node answers for {v4} ({owner})");
//! ```
//!
//! Kernel behaviour the probes rely on (see also `docs/lab.md`): `arping`/`ndisc6` send from raw
//! sockets and never *create* neighbour entries, but the replies they get are processed by the
//! asking host's kernel too and may *update* an existing entry. A test that watches the client's
//! neighbour cache must therefore not probe from the client while it watches (probe from
//! another namespace, e.g. the router's, with the `*_from` variants).

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::TestLab;
use crate::lab::real_binary;
use crate::netlab::netns;

/// The address pool of [`manifest`] (inside the node LAN, so layer2 answers reach the client).
pub const POOL_V4: &str = "192.0.2.240/28";
/// The IPv6 half of the pool of [`manifest`].
pub const POOL_V6: &str = "2001:db8:2::240/124";
/// How long the controller may take to assign a Service its IPs.
pub const ASSIGN_TIMEOUT: Duration = Duration::from_secs(30);
/// The speaker's metrics port (`/metrics`, served on every address of its node).
pub const SPEAKER_METRICS_PORT: u16 = 7473;
/// [`L2Probe::measure_failover`] sends a broadcast ARP request this often.
pub const ARP_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// An IPAddressPool `ferrolb-system/e2e` ([`POOL_V4`], [`POOL_V6`]), an L2Advertisement for it,
/// a dual-stack (RequireDualStack) LoadBalancer Service `default/<service>` and an IPv4
/// EndpointSlice with one ready endpoint on each of `endpoint_nodes` (there is no kubelet or
/// endpoint controller in the lab), as YAML for `kubectl apply`.
pub fn manifest(service: &str, etp_local: bool, endpoint_nodes: &[&str]) -> String {
    let policy = if etp_local { "Local" } else { "Cluster" };
    let mut yaml = format!(
        "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {{name: e2e, namespace: ferrolb-system}}
spec:
  addresses: [\"{POOL_V4}\", \"{POOL_V6}\"]
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {{name: e2e, namespace: ferrolb-system}}
spec:
  ipAddressPools: [e2e]
---
apiVersion: v1
kind: Service
metadata: {{name: {service}, namespace: default}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-e2e
  namespace: default
  labels: {{kubernetes.io/service-name: {service}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
"
    );
    if endpoint_nodes.is_empty() {
        yaml.push_str("[]\n");
    }
    for node in endpoint_nodes {
        let index: u8 = node.trim_start_matches("node").parse().unwrap_or(1);
        yaml.push_str(&format!(
            "- addresses: [\"192.0.2.{}\"]\n  nodeName: {node}\n  conditions: {{ready: true, serving: true}}\n",
            10 + index
        ));
    }
    yaml
}

/// Polls `check` every 250 ms until it holds; panics with `what` after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out after {timeout:?}: {what}");
}

/// The MAC in the first `[..]` of an `arping` reply line, lower case.
pub(crate) fn bracketed_mac(line: &str) -> Option<String> {
    Some(
        line.split_once('[')?
            .1
            .split_once(']')?
            .0
            .to_ascii_lowercase(),
    )
}

/// A neighbour cache entry, from `ip neigh show <ip>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourEntry {
    /// The link-layer address (lower case); `None` for INCOMPLETE/FAILED entries.
    pub mac: Option<String>,
    /// The NUD state (`REACHABLE`, `STALE`, `DELAY`, `PROBE`, `FAILED`, ...).
    pub state: String,
}

impl NeighbourEntry {
    /// Parses one line of `ip neigh show`:
    /// `192.0.2.241 dev eth0 lladdr 02:00:00:00:00:0c STALE`.
    pub fn parse(line: &str) -> Option<NeighbourEntry> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let state = words.last()?.to_string();
        let mac = words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|i| words.get(i + 1))
            .map(|mac| mac.to_ascii_lowercase());
        Some(NeighbourEntry { mac, state })
    }
}

impl std::fmt::Display for NeighbourEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mac {
            Some(mac) => write!(f, "{mac} {}", self.state),
            None => write!(f, "(no lladdr) {}", self.state),
        }
    }
}

/// The result of [`L2Probe::measure_failover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    /// The node that answers now.
    pub new_owner: String,
    pub new_mac: String,
    /// When the client's neighbour entry moved to another MAC (the new owner's gratuitous ARP,
    /// or a reply), after the failure.
    pub neighbour_moved: Option<Duration>,
    /// When the first ARP answer from another MAC arrived, after the failure.
    pub answered: Option<Duration>,
}

impl Failover {
    /// When the client could reach the new owner: the earlier of the two observations.
    pub fn reachable_after(&self) -> Duration {
        match (self.neighbour_moved, self.answered) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => Duration::MAX,
        }
    }
}

/// Probes of one running lab (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct L2Probe<'a> {
    lab: &'a TestLab,
}

impl<'a> L2Probe<'a> {
    pub fn new(lab: &'a TestLab) -> L2Probe<'a> {
        L2Probe { lab }
    }

    pub fn lab(&self) -> &'a TestLab {
        self.lab
    }

    /// The client's namespace (where the probes run unless told otherwise).
    pub fn client_ns(&self) -> String {
        self.lab.netlab().topology.client_ns()
    }

    /// Runs kubectl (admin) and returns its stdout; panics with its stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.lab
            .control_plane()
            .kubectl_output(args)
            .unwrap_or_else(|err| panic!("kubectl {args:?}: {err:#}"))
    }

    /// Writes `yaml` to `<run dir>/<name>.yaml` and `kubectl apply`s it.
    pub fn apply(&self, name: &str, yaml: &str) {
        let path = self.lab.run_dir().join(format!("{name}.yaml"));
        fs::write(&path, yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.kubectl(&["apply", "-f", &path.display().to_string()]);
    }

    /// The IPs in `default/<service>`'s `status.loadBalancer.ingress`, in its order; none while
    /// the Service does not exist or has no address yet.
    pub fn ingress_ips(&self, service: &str) -> Vec<IpAddr> {
        self.kubectl(&[
            "get",
            "service",
            "-n",
            "default",
            service,
            "--ignore-not-found",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ])
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
    }

    /// The IPv4 and IPv6 ingress IPs that the controller (the real one the lab started) wrote
    /// into `default/<service>`'s `status.loadBalancer.ingress`. Panics if it has not assigned
    /// both within `timeout`: nothing else writes the status, so a controller that does not
    /// assign fails the test.
    pub fn service_ips(&self, service: &str, timeout: Duration) -> (Ipv4Addr, Ipv6Addr) {
        let deadline = Instant::now() + timeout;
        let last = loop {
            let ips = self.ingress_ips(service);
            let v4 = ips.iter().find_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            });
            let v6 = ips.iter().find_map(|ip| match ip {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            });
            if let (Some(v4), Some(v6)) = (v4, v6) {
                return (v4, v6);
            }
            if Instant::now() >= deadline {
                break ips;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let controller = &self.lab.lab().binaries.controller;
        let started = match real_binary(controller) {
            Ok(path) => format!("{} was started", path.display()),
            Err(why) => format!("the controller was {why}"),
        };
        panic!(
            "the controller did not assign Service default/{service} an IPv4 and an IPv6 address \
             within {timeout:?} (status.loadBalancer.ingress IPs: {last:?}; {started}; see \
             controller.log in {})",
            self.lab.run_dir().display()
        );
    }

    /// Every MAC that replied to `count` broadcast ARP requests for `ip` asked from the client.
    pub fn arp_macs(&self, ip: Ipv4Addr, count: usize) -> BTreeSet<String> {
        self.arp_macs_from(&self.client_ns(), ip, count)
    }

    /// Every MAC that replied to `count` broadcast ARP requests for `ip` asked from namespace
    /// `ns` (all replies, not only the first: each request waits the whole second).
    pub fn arp_macs_from(&self, ns: &str, ip: Ipv4Addr, count: usize) -> BTreeSet<String> {
        let mut macs = BTreeSet::new();
        for _ in 0..count {
            // Broadcast only (`-b`) and wait the whole second: every node that answers shows up.
            let out = netns::exec(ns, "arping")
                .args(["-b", "-w", "1", "-I", "eth0", &ip.to_string()])
                .output()
                .unwrap_or_else(|e| panic!("arping in {ns}: {e}"));
            macs.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(bracketed_mac),
            );
        }
        macs
    }

    /// Every MAC that answered `count` neighbour solicitations for `ip` asked from the client.
    pub fn ndp_macs(&self, ip: Ipv6Addr, count: usize) -> BTreeSet<String> {
        self.ndp_macs_from(&self.client_ns(), ip, count)
    }

    /// Every MAC that answered `count` neighbour solicitations for `ip` asked from namespace
    /// `ns` (`ndisc6 -m`: all answers to each solicitation, waiting a second for them).
    pub fn ndp_macs_from(&self, ns: &str, ip: Ipv6Addr, count: usize) -> BTreeSet<String> {
        let mut macs = BTreeSet::new();
        for _ in 0..count {
            let out = netns::exec(ns, "ndisc6")
                .args(["-m", "-q", "-n", "-r", "1", "-w", "1000"])
                .arg(ip.to_string())
                .arg("eth0")
                .output()
                .unwrap_or_else(|e| panic!("ndisc6 in {ns}: {e}"));
            macs.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter(|w| w.len() == 17 && w.matches(':').count() == 5)
                    .map(str::to_ascii_lowercase),
            );
        }
        macs
    }

    /// Every MAC that answers for `ip` (ARP or NDP), asked `count` times from namespace `ns`.
    pub fn answering_macs_from(&self, ns: &str, ip: IpAddr, count: usize) -> BTreeSet<String> {
        match ip {
            IpAddr::V4(v4) => self.arp_macs_from(ns, v4, count),
            IpAddr::V6(v6) => self.ndp_macs_from(ns, v6, count),
        }
    }

    /// Waits until exactly one MAC answers for `ip` (2 probes from namespace `ns` agree on a
    /// single MAC); returns it. Panics after `timeout` with the answers last seen.
    pub fn wait_single_answerer_from(&self, ns: &str, ip: IpAddr, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let last = loop {
            let macs = self.answering_macs_from(ns, ip, 2);
            if macs.len() == 1
                && let Some(mac) = macs.first()
            {
                return mac.clone();
            }
            if Instant::now() >= deadline {
                break macs;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        panic!(
            "timed out after {timeout:?}: exactly one node answers for {ip} (asked from {ns}; \
             answers last seen: {last:?})"
        );
    }

    /// Waits until a MAC other than `not` answers ARP for `ip` from the client; returns it.
    pub fn wait_arp_owner(
        &self,
        ip: Ipv4Addr,
        not: Option<&str>,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(mac) = self.lab.netlab().arping(&self.client_ns(), ip)
                && Some(mac.as_str()) != not
            {
                return Some(mac);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The node whose `eth0` has this MAC; panics for any other MAC.
    pub fn node_of_mac(&self, mac: &str) -> String {
        self.lab
            .netlab()
            .topology
            .nodes()
            .find(|n| n.mac.eq_ignore_ascii_case(mac))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| panic!("{mac} is not a node's MAC"))
    }

    /// The MAC of a node's `eth0`, lower case.
    pub fn mac_of(&self, node: &str) -> String {
        self.lab
            .netlab()
            .topology
            .nodes()
            .find(|n| n.name == node)
            .map(|n| n.mac.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("no node {node:?} in the lab"))
    }

    /// The client's neighbour cache line for `ip` (`ip [-6] neigh show <ip>`), or empty.
    pub fn neighbour(&self, ip: IpAddr) -> String {
        let family = if ip.is_ipv6() { "-6" } else { "-4" };
        netns::ip(
            &self.client_ns(),
            &[family, "neigh", "show", &ip.to_string()],
        )
        .unwrap_or_default()
    }

    /// The client's neighbour entry for `ip`, if it has one.
    pub fn neighbour_entry(&self, ip: IpAddr) -> Option<NeighbourEntry> {
        NeighbourEntry::parse(self.neighbour(ip).lines().next()?)
    }

    /// The MAC in the client's neighbour entry for `ip`, lower case.
    pub fn neighbour_mac(&self, ip: IpAddr) -> Option<String> {
        self.neighbour_entry(ip)?.mac
    }

    /// Deletes the client's neighbour entry for `ip` (absent is fine): the next packet to `ip`
    /// resolves it afresh.
    pub fn forget_neighbour(&self, ip: IpAddr) {
        let _ = netns::ip(
            &self.client_ns(),
            &["neigh", "del", &ip.to_string(), "dev", "eth0"],
        );
    }

    /// Gives the client a fresh neighbour entry for `ip` to watch (forgets the old one, then
    /// pings once so that its kernel resolves the address); returns its MAC.
    pub fn prime_neighbour(&self, ip: Ipv4Addr) -> Option<String> {
        self.forget_neighbour(IpAddr::V4(ip));
        let _ = self.lab.netlab().ping(&self.client_ns(), IpAddr::V4(ip));
        self.neighbour_mac(IpAddr::V4(ip))
    }

    /// The speaker's pid on `node` (from `speaker-<node>.pid` in the run directory).
    pub fn speaker_pid(&self, node: &str) -> i32 {
        let path = self.lab.run_dir().join(format!("speaker-{node}.pid"));
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `kill <signal> <pid of node's speaker>`, e.g. `signal_speaker("node1", "-KILL")`.
    pub fn signal_speaker(&self, node: &str, signal: &str) {
        let pid = self.speaker_pid(node);
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill {signal} {pid}: {e}"));
        assert!(status.success(), "kill {signal} {pid} ({node}'s speaker)");
    }

    /// The current length of `node`'s speaker log (`speaker-<node>.log`), to read what it logs
    /// from now on with [`Self::speaker_log_since`].
    pub fn speaker_log_mark(&self, node: &str) -> u64 {
        let path = self.lab.run_dir().join(format!("speaker-{node}.log"));
        fs::metadata(path).map_or(0, |m| m.len())
    }

    /// The lines `node`'s speaker logged after `mark` (from [`Self::speaker_log_mark`]).
    pub fn speaker_log_since(&self, node: &str, mark: u64) -> Vec<String> {
        let path = self.lab.run_dir().join(format!("speaker-{node}.log"));
        let text = fs::read(&path).unwrap_or_default();
        let start = usize::try_from(mark).unwrap_or(usize::MAX);
        let new = text.get(start..).unwrap_or(&text[..]);
        String::from_utf8_lossy(new)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The `ServiceL2Status` objects as (node, service) pairs.
    pub fn l2_statuses(&self) -> Vec<(String, String)> {
        let out = self.kubectl(&[
            "get",
            "servicel2statuses",
            "-n",
            "ferrolb-system",
            "-o",
            "jsonpath={range .items[*]}{.status.node}{\" \"}{.status.serviceName}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter_map(|l| {
                let (node, svc) = l.split_once(' ')?;
                Some((node.to_string(), svc.to_string()))
            })
            .collect()
    }

    /// Waits for the membership key the speakers poll for: the leading controller creates it
    /// (running with the RBAC of `config/rbac/controller.yaml`), as on a real cluster.
    pub fn wait_for_membership_secret(&self) {
        eventually(
            "the controller creates Secret ferrolb-system/ferrolb-memberlist",
            Duration::from_secs(30),
            || {
                self.lab
                    .control_plane()
                    .kubectl_output([
                        "get",
                        "secret",
                        "ferrolb-memberlist",
                        "-n",
                        "ferrolb-system",
                        "--ignore-not-found",
                        "-o",
                        "name",
                    ])
                    .is_ok_and(|out| out.trim() == "secret/ferrolb-memberlist")
            },
        );
    }

    /// A speaker's `/metrics`, fetched inside its node namespace (empty if unreachable).
    pub fn metrics(&self, node: &str) -> String {
        let ns = self.lab.netlab().topology.ns(node);
        netns::exec(&ns, "curl")
            .args([
                "-s",
                "--max-time",
                "2",
                &format!("http://127.0.0.1:{SPEAKER_METRICS_PORT}/metrics"),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `ferrolb_speaker_membership_size` of the speaker on `node`.
    pub fn membership_size(&self, node: &str) -> Option<u64> {
        self.metrics(node).lines().find_map(|l| {
            l.strip_prefix("ferrolb_speaker_membership_size ")?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Waits until the speaker on every node of the lab reports `members` members.
    pub fn wait_for_members(&self, members: u64, timeout: Duration) {
        let nodes: Vec<String> = self
            .lab
            .netlab()
            .topology
            .nodes()
            .map(|n| n.name.clone())
            .collect();
        let deadline = Instant::now() + timeout;
        let last = loop {
            let sizes: Vec<(String, Option<u64>)> = nodes
                .iter()
                .map(|n| (n.clone(), self.membership_size(n)))
                .collect();
            if sizes.iter().all(|(_, size)| *size == Some(members)) {
                return;
            }
            if Instant::now() >= deadline {
                break sizes;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        panic!(
            "timed out after {timeout:?}: every speaker sees {members} members (membership \
             sizes: {last:?})"
        );
    }

    /// After `old_owner` failed at `failed_at`: watches, for at most `window` after the
    /// failure, both the client's neighbour entry for `ip` (every 10 ms; it moves when the new
    /// owner sends gratuitous ARP) and who answers ARP for `ip` (a one-shot broadcast `arping`
    /// from the client every [`ARP_PROBE_INTERVAL`], each waiting up to a second for its reply:
    /// `arping -i` takes whole seconds only). Once one of the two sees another MAC, the other
    /// gets up to a second more. `Err` if neither saw another MAC within `window`. The client
    /// should have an entry pointing at `old_owner` ([`Self::prime_neighbour`]) before the
    /// failure.
    pub fn measure_failover(
        &self,
        ip: Ipv4Addr,
        old_owner: &str,
        failed_at: Instant,
        window: Duration,
    ) -> Result<Failover, String> {
        let old_mac = self.mac_of(old_owner);
        let deadline = failed_at + window;
        let mut neighbour_moved: Option<(Duration, String)> = None;
        let mut answered: Option<(Duration, String)> = None;
        // Running probes, each sent (and spawned) at the given time.
        let mut probes: Vec<(Instant, Child)> = Vec::new();
        let mut next_probe = Instant::now();
        let client = self.client_ns();
        loop {
            let now = Instant::now();
            if neighbour_moved.is_none()
                && let Some(mac) = self.neighbour_mac(IpAddr::V4(ip))
                && mac != old_mac
            {
                neighbour_moved = Some((failed_at.elapsed(), mac));
            }
            if answered.is_none() {
                if now >= next_probe && now < deadline {
                    let child = netns::exec(&client, "arping")
                        .args(["-f", "-b", "-c", "1", "-w", "1", "-I", "eth0"])
                        .arg(ip.to_string())
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap_or_else(|e| panic!("arping in {client}: {e}"));
                    probes.push((now, child));
                    next_probe = now + ARP_PROBE_INTERVAL;
                }
                let mut running = Vec::new();
                for (sent, mut child) in probes.drain(..) {
                    if matches!(child.try_wait(), Ok(None)) {
                        running.push((sent, child));
                        continue;
                    }
                    let at = failed_at.elapsed();
                    let out = child
                        .wait_with_output()
                        .map(|o| o.stdout)
                        .unwrap_or_default();
                    let mac = String::from_utf8_lossy(&out)
                        .lines()
                        .filter_map(bracketed_mac)
                        .find(|mac| *mac != old_mac);
                    if answered.is_none()
                        && let Some(mac) = mac
                    {
                        answered = Some((at, mac));
                    }
                }
                probes = running;
            }
            let first_seen = match (&neighbour_moved, &answered) {
                (Some(_), Some(_)) => break,
                (Some((at, _)), None) | (None, Some((at, _))) => Some(*at),
                (None, None) => None,
            };
            // The other observation gets a second to follow the first.
            let grace_over =
                first_seen.is_some_and(|at| now >= failed_at + at + Duration::from_secs(1));
            if grace_over || now >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for (_, mut child) in probes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let new_mac = match (&answered, &neighbour_moved) {
            (Some((_, mac)), _) | (None, Some((_, mac))) => mac.clone(),
            (None, None) => {
                return Err(format!(
                    "no node other than {old_owner} answered ARP for {ip}, and the client's \
                     neighbour entry did not move, within {window:?} of the failure (entry now: \
                     {:?})",
                    self.neighbour(IpAddr::V4(ip)).trim()
                ));
            }
        };
        let known = self
            .lab
            .netlab()
            .topology
            .nodes()
            .any(|n| n.mac.eq_ignore_ascii_case(&new_mac));
        if !known {
            return Err(format!("{new_mac} answered for {ip}: not a node's MAC"));
        }
        Ok(Failover {
            new_owner: self.node_of_mac(&new_mac),
            new_mac,
            neighbour_moved: neighbour_moved.map(|(at, _)| at),
            answered: answered.map(|(at, _)| at),
        })
    }

    /// [`Self::measure_failover`] with a 20 s window that panics when nobody takes over, and
    /// checks that the new owner is then the only node answering. Prints the timings; returns
    /// the new owner and when the client could reach it (neighbour entry moved, or else the
    /// first answer).
    pub fn failover(
        &self,
        what: &str,
        ip: Ipv4Addr,
        old_owner: &str,
        failed_at: Instant,
    ) -> (String, Duration) {
        let failover = self
            .measure_failover(ip, old_owner, failed_at, Duration::from_secs(20))
            .unwrap_or_else(|why| panic!("{what}: {why}"));
        eprintln!(
            "{what}: client neighbour entry for {ip} moved to {} {:?} after the failure of \
             {old_owner}; first ARP answer from it at {:?}",
            failover.new_owner, failover.neighbour_moved, failover.answered
        );
        let macs = self.arp_macs(ip, 2);
        assert_eq!(
            macs,
            BTreeSet::from([failover.new_mac.clone()]),
            "{what}: answers after failover"
        );
        (failover.new_owner.clone(), failover.reachable_after())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_entries_parse() {
        let entry =
            NeighbourEntry::parse("192.0.2.241 dev eth0 lladdr 02:00:00:00:00:0C REACHABLE")
                .unwrap();
        assert_eq!(entry.mac.as_deref(), Some("02:00:00:00:00:0c"));
        assert_eq!(entry.state, "REACHABLE");
        let failed = NeighbourEntry::parse("192.0.2.241 dev eth0 FAILED").unwrap();
        assert_eq!(failed.mac, None);
        assert_eq!(failed.state, "FAILED");
        assert_eq!(NeighbourEntry::parse(""), None);
    }

    #[test]
    fn arping_reply_macs_parse() {
        assert_eq!(
            bracketed_mac("Unicast reply from 192.0.2.241 [02:00:00:00:00:0B]  0.6ms").as_deref(),
            Some("02:00:00:00:00:0b")
        );
        assert_eq!(
            bracketed_mac("ARPING 192.0.2.241 from 192.0.2.200 eth0"),
            None
        );
    }

    #[test]
    fn failover_takes_the_earlier_observation() {
        let failover = Failover {
            new_owner: "node2".into(),
            new_mac: "02:00:00:00:00:0c".into(),
            neighbour_moved: Some(Duration::from_millis(300)),
            answered: Some(Duration::from_millis(250)),
        };
        assert_eq!(failover.reachable_after(), Duration::from_millis(250));
    }

    #[test]
    fn manifest_places_one_endpoint_per_node() {
        let yaml = manifest("web", true, &["node2", "node3"]);
        assert!(yaml.contains("externalTrafficPolicy: Local"));
        assert!(yaml.contains("- addresses: [\"192.0.2.12\"]\n  nodeName: node2"));
        assert!(yaml.contains("- addresses: [\"192.0.2.13\"]\n  nodeName: node3"));
        assert!(manifest("web", false, &[]).ends_with("endpoints:\n[]\n"));
    }
}
