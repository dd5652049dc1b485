//! End to end in the lab (root; skipped with a printed reason otherwise, FAILS when `CI` is set):
//! a real kube-apiserver, 3 node namespaces running `ferrolb-speaker`, the controller if it is
//! built (else the test writes `status.loadBalancer.ingress` itself), and a client that asks
//! ARP/NDP for the Service IPs.
//!
//! Run: `cargo build -p ferrolb-speaker && cargo test -p ferrolb-speaker --test e2e_layer2 -- --nocapture`

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_tests::harness::TestLab;
use ferrolb_tests::netlab::netns;

const POOL_V4: &str = "192.0.2.240/28";
const POOL_V6: &str = "2001:db8:2::240/124";
const PROBES: usize = 4;

fn manifest(service: &str, etp_local: bool, endpoint_nodes: &[&str]) -> String {
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

struct Ctx<'a> {
    lab: &'a TestLab,
}

impl Ctx<'_> {
    fn kubectl(&self, args: &[&str]) -> String {
        self.lab
            .control_plane()
            .kubectl_output(args)
            .unwrap_or_else(|err| panic!("kubectl {args:?}: {err:#}"))
    }

    fn apply(&self, name: &str, yaml: &str) {
        let path = self.lab.run_dir().join(format!("{name}.yaml"));
        fs::write(&path, yaml).unwrap();
        self.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// The Service's ingress IPs; written by the test if the controller does not assign them.
    fn service_ips(&self, service: &str, fallback: &[IpAddr]) -> Vec<IpAddr> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.kubectl(&[
                "get",
                "service",
                "-n",
                "default",
                service,
                "-o",
                "jsonpath={.status.loadBalancer.ingress[*].ip}",
            ]);
            let ips: Vec<IpAddr> = out
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            if ips.len() == 2 {
                return ips;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "{service}: no IPs from the controller in 20 s: writing the status myself"
                );
                let ingress: Vec<String> = fallback
                    .iter()
                    .map(|ip| format!("{{\"ip\":\"{ip}\"}}"))
                    .collect();
                let patch = format!(
                    "{{\"status\":{{\"loadBalancer\":{{\"ingress\":[{}]}}}}}}",
                    ingress.join(",")
                );
                self.kubectl(&[
                    "patch",
                    "service",
                    "-n",
                    "default",
                    service,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch,
                ]);
                return fallback.to_vec();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn client(&self) -> String {
        self.lab.netlab().topology.client_ns()
    }

    /// Every MAC that replied to `count` ARP requests for `ip` (all replies, not only the first).
    fn arp_macs(&self, ip: Ipv4Addr, count: usize) -> BTreeSet<String> {
        let mut macs = BTreeSet::new();
        for _ in 0..count {
            // Broadcast only (`-b`) and wait the whole second: every node that answers shows up.
            let out = netns::exec(&self.client(), "arping")
                .args(["-b", "-w", "1", "-I", "eth0", &ip.to_string()])
                .output()
                .unwrap();
            macs.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|line| {
                        Some(
                            line.split_once('[')?
                                .1
                                .split_once(']')?
                                .0
                                .to_ascii_lowercase(),
                        )
                    }),
            );
        }
        macs
    }

    fn ndp_macs(&self, ip: Ipv6Addr, count: usize) -> BTreeSet<String> {
        (0..count)
            .filter_map(|_| self.lab.netlab().ndisc(&self.client(), ip))
            .collect()
    }

    /// Waits until exactly one MAC answers ARP for `ip` (other than `not`); returns it.
    fn wait_arp_owner(&self, ip: Ipv4Addr, not: Option<&str>, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(mac) = self.lab.netlab().arping(&self.client(), ip)
                && Some(mac.as_str()) != not
            {
                return Some(mac);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn node_of_mac(&self, mac: &str) -> String {
        self.lab
            .netlab()
            .topology
            .nodes()
            .find(|n| n.mac.eq_ignore_ascii_case(mac))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| panic!("{mac} is not a node's MAC"))
    }

    fn neighbour(&self, ip: IpAddr) -> String {
        netns::ip(&self.client(), &["neigh", "show", &ip.to_string()]).unwrap_or_default()
    }

    fn speaker_pid(&self, node: &str) -> i32 {
        let path = self.lab.run_dir().join(format!("speaker-{node}.pid"));
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .unwrap()
    }

    fn l2_statuses(&self) -> Vec<(String, String)> {
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
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out after {timeout:?}: {what}");
}

impl Ctx<'_> {
    /// Waits for the membership key the speakers poll for: the leading controller creates it
    /// (running with the RBAC of `config/rbac/controller.yaml`), as on a real cluster.
    fn wait_for_membership_secret(&self) {
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

    /// A speaker's /metrics, fetched inside its node namespace.
    fn metrics(&self, node: &str) -> String {
        let ns = self.lab.netlab().topology.ns(node);
        netns::exec(&ns, "curl")
            .args(["-s", "--max-time", "2", "http://127.0.0.1:7473/metrics"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn membership_size(&self, node: &str) -> Option<u64> {
        self.metrics(node).lines().find_map(|l| {
            l.strip_prefix("ferrolb_speaker_membership_size ")?
                .trim()
                .parse()
                .ok()
        })
    }

    fn neighbour_mac(&self, ip: IpAddr) -> Option<String> {
        // "192.0.2.241 dev eth0 lladdr 02:00:00:00:00:0c STALE"
        let line = self.neighbour(ip);
        let mut words = line.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_ascii_lowercase)
    }

    /// After a failure of `old_owner`: waits until another node answers ARP for `ip`, checks
    /// it is the only one, and measures when the client's neighbour entry (filled before the
    /// failure) moved by itself (gratuitous ARP). Returns the new owner's node name.
    /// Returns the new owner and when the client could reach it (neighbour entry moved, or
    /// else the first answer).
    fn failover(
        &self,
        what: &str,
        ip: Ipv4Addr,
        old_owner: &str,
        failed_at: Instant,
    ) -> (String, Duration) {
        let old_mac = self.mac_of(old_owner);
        // First only watch the neighbour cache (cheap, 10 ms resolution): the new owner's
        // gratuitous ARP moves it without the client asking.
        let mut neighbour_moved = None;
        let watch_until = failed_at + Duration::from_secs(10);
        while Instant::now() < watch_until {
            if self
                .neighbour_mac(IpAddr::V4(ip))
                .is_some_and(|mac| mac != old_mac)
            {
                neighbour_moved = Some(failed_at.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Then ask.
        let mut answered = None;
        let deadline = failed_at + Duration::from_secs(20);
        while Instant::now() < deadline && answered.is_none() {
            if let Some(mac) = self.lab.netlab().arping(&self.client(), ip)
                && mac != old_mac
            {
                answered = Some((failed_at.elapsed(), mac));
            }
        }
        let (answer_time, new_mac) =
            answered.unwrap_or_else(|| panic!("{what}: no other node answers for {ip}"));
        let new_owner = self.node_of_mac(&new_mac);
        eprintln!(
            "{what}: client neighbour entry for {ip} moved to {new_owner} {neighbour_moved:?} after \
             the failure of {old_owner} (gratuitous ARP); ARP answered by it at {answer_time:?}"
        );
        let macs = self.arp_macs(ip, 2);
        assert_eq!(
            macs,
            BTreeSet::from([new_mac]),
            "{what}: answers after failover"
        );
        (new_owner, neighbour_moved.unwrap_or(answer_time))
    }

    fn mac_of(&self, node: &str) -> String {
        self.lab
            .netlab()
            .topology
            .nodes()
            .find(|n| n.name == node)
            .map(|n| n.mac.to_ascii_lowercase())
            .unwrap()
    }

    fn signal(&self, node: &str, signal: &str) {
        let pid = self.speaker_pid(node);
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Pings `ip` so that the client has a neighbour entry to watch; returns its MAC.
    fn prime_neighbour(&self, ip: Ipv4Addr) -> Option<String> {
        let _ = self.lab.netlab().ping(&self.client(), IpAddr::V4(ip));
        self.neighbour_mac(IpAddr::V4(ip))
    }
}

#[test]
fn e2e_layer2_one_owner_answers_and_fails_over() {
    let test = "e2e_layer2_one_owner_answers_and_fails_over";
    let Some(lab) = TestLab::start(test, 3).unwrap() else {
        return;
    };
    let ctx = Ctx { lab: &lab };
    ctx.wait_for_membership_secret();
    let nodes = ["node1", "node2", "node3"];
    eventually(
        "every speaker sees 3 members",
        Duration::from_secs(30),
        || nodes.iter().all(|n| ctx.membership_size(n) == Some(3)),
    );

    ctx.apply("svc", &manifest("web", false, &nodes));
    let ips = ctx.service_ips(
        "web",
        &[
            "192.0.2.241".parse().unwrap(),
            "2001:db8:2::241".parse().unwrap(),
        ],
    );
    let v4 = ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    });
    let v6 = ips.iter().find_map(|ip| match ip {
        IpAddr::V6(v6) => Some(*v6),
        IpAddr::V4(_) => None,
    });
    let (v4, v6) = (v4.unwrap(), v6.unwrap());
    eprintln!("service IPs {v4} {v6}");

    let owner_mac = ctx
        .wait_arp_owner(v4, None, Duration::from_secs(30))
        .expect("nobody answers ARP for the service IP");
    let owner = ctx.node_of_mac(&owner_mac);
    eprintln!("owner of {v4}: {owner} ({owner_mac})");

    // Exactly one node answers, every time (broadcast probes reach every node).
    let macs = ctx.arp_macs(v4, PROBES);
    assert_eq!(
        macs,
        BTreeSet::from([owner_mac.clone()]),
        "ARP answers for {v4}"
    );
    let v6_macs = ctx.ndp_macs(v6, PROBES);
    assert_eq!(v6_macs.len(), 1, "NDP answers for {v6}: {v6_macs:?}");
    let v6_owner = ctx.node_of_mac(v6_macs.iter().next().unwrap());
    eprintln!("owner of {v6}: {v6_owner}");

    // The client's kernel learns the owner's MAC.
    assert_eq!(ctx.prime_neighbour(v4), Some(owner_mac.clone()));

    // One status object per announcing node for this Service.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    expected.insert(owner.clone(), "web".into());
    expected.insert(v6_owner.clone(), "web".into());
    eventually("ServiceL2Status objects", Duration::from_secs(15), || {
        let statuses: BTreeMap<String, String> = ctx.l2_statuses().into_iter().collect();
        statuses == expected
    });
    let metrics = ctx.metrics(&owner);
    assert!(
        metrics.contains("ferrolb_speaker_layer2_responses_sent_total{interface=\"eth0\"}"),
        "owner metrics:\n{metrics}"
    );
    assert!(metrics.contains("ferrolb_speaker_layer2_gratuitous_sent_total"));

    // The owner told the Service, once per IP it took over.
    eventually(
        "AnnouncingNode events on the Service",
        Duration::from_secs(10),
        || {
            let events = ctx.kubectl(&[
                "get",
                "events.events.k8s.io",
                "-n",
                "default",
                "-o",
                "jsonpath={range .items[*]}{.reason}{\" \"}{.regarding.name}{\"\\n\"}{end}",
            ]);
            events
                .lines()
                .filter(|l| *l == "AnnouncingNode web")
                .count()
                >= 2
        },
    );

    // An invalid configuration is ignored: the last valid one stays in force.
    ctx.apply(
        "broken",
        // Overlaps the pool in use: the whole configuration is invalid.
        "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: broken, namespace: ferrolb-system}
spec: {addresses: [192.0.2.240/29]}
",
    );
    eventually(
        "the owner counts the invalid configuration",
        Duration::from_secs(10),
        || {
            ctx.metrics(&owner)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("ferrolb_speaker_config_invalid_total ")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|n| n > 0)
        },
    );
    assert_eq!(ctx.arp_macs(v4, 2), BTreeSet::from([owner_mac.clone()]));
    ctx.kubectl(&["delete", "ipaddresspool", "-n", "ferrolb-system", "broken"]);

    // ETP Local: the answering node follows the endpoints.
    let target = nodes.into_iter().find(|n| *n != owner).unwrap();
    ctx.apply("svc-local", &manifest("web", true, &[target]));
    let started = Instant::now();
    eventually(
        "ETP Local: the endpoint's node answers",
        Duration::from_secs(20),
        || {
            ctx.lab
                .netlab()
                .arping(&ctx.client(), v4)
                .is_some_and(|mac| ctx.node_of_mac(&mac) == target)
        },
    );
    eprintln!("ETP Local: {target} answers after {:?}", started.elapsed());
    assert_eq!(
        ctx.arp_macs(v4, PROBES),
        BTreeSet::from([ctx.mac_of(target)])
    );
    ctx.apply("svc-cluster", &manifest("web", false, &nodes));
    eventually("back to the elected owner", Duration::from_secs(20), || {
        ctx.lab.netlab().arping(&ctx.client(), v4) == Some(owner_mac.clone())
    });

    // 1. The owner's link goes down.
    ctx.prime_neighbour(v4);
    let failed_at = Instant::now();
    lab.netlab().set_port(&owner, false).unwrap();
    let (second, _) = ctx.failover("link down", v4, &owner, failed_at);
    assert_ne!(second, owner);
    lab.netlab().set_port(&owner, true).unwrap();
    // The returning owner kept the IP while cut off; when the membership merges it announces
    // again, so the client's cache (pointing at the interim owner) moves back unasked.
    let reconnected = Instant::now();
    eventually(
        "the client's neighbour entry moves back to the reconnected owner",
        Duration::from_secs(20),
        || ctx.neighbour_mac(IpAddr::V4(v4)).as_deref() == Some(owner_mac.as_str()),
    );
    eprintln!(
        "link up: client neighbour entry back on {owner} after {:?}",
        reconnected.elapsed()
    );
    eventually(
        "the reconnected owner answers again",
        Duration::from_secs(30),
        || ctx.arp_macs(v4, 1) == BTreeSet::from([owner_mac.clone()]),
    );
    eprintln!("link up: {owner} owns {v4} again (its rendezvous score is the highest)");

    // 2. The owner's speaker is killed (no goodbye).
    ctx.prime_neighbour(v4);
    let failed_at = Instant::now();
    ctx.signal(&owner, "-KILL");
    let (next, after_kill) = ctx.failover("SIGKILL", v4, &owner, failed_at);

    // 3. The next owner stops gracefully: it leaves first, so the last node takes over faster.
    ctx.prime_neighbour(v4);
    let failed_at = Instant::now();
    ctx.signal(&next, "-TERM");
    let (last, after_term) = ctx.failover("SIGTERM", v4, &next, failed_at);
    // Leaving tells the others at once; a crash must wait for failure detection.
    assert!(
        after_term < after_kill,
        "SIGTERM failover ({after_term:?}) not faster than SIGKILL failover ({after_kill:?})"
    );
    // The last speaker standing owns the IPv6 address too.
    eventually("the last node answers NDP", Duration::from_secs(10), || {
        ctx.ndp_macs(v6, 2) == BTreeSet::from([ctx.mac_of(&last)])
    });
    assert!(last != owner && last != next);
    eventually(
        "the stopped speaker's status objects are gone",
        Duration::from_secs(10),
        || {
            ctx.l2_statuses()
                .iter()
                .all(|(node, _)| node != next.as_str())
        },
    );
}
