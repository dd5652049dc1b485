//! Injecting a fault into a running lab, and undoing it. Each fault is one [`Injected`] value
//! that knows its own undo, so a run that stops half-way (a panic, ^C) can still heal the lab.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::ServiceShape;
use super::invariants::ServiceUnderTest;
use super::schedule::FaultKind;
use crate::controlplane::FERROLB_NAMESPACE;
use crate::harness::TestLab;
use crate::netlab::netns;
use crate::process;

/// The nftables table a partition adds in each node namespace.
const PARTITION_TABLE: &str = "ferrolb_chaos_partition";
/// The nftables table packet loss adds in the node's namespace.
const LOSS_TABLE: &str = "ferrolb_chaos_loss";
/// The nftables table the API server blackhole adds in every node namespace.
const BLACKHOLE_TABLE: &str = "ferrolb_chaos_blackhole";
/// The speakers' membership port.
const MEMBERSHIP_PORT: u16 = 7946;
/// The share of frames [`FaultKind::PacketLoss`] drops, each way.
pub const LOSS_PERCENT: u32 = 30;

/// How to undo an injected fault.
#[derive(Debug)]
pub enum Injected {
    /// Bring the node's switch port up.
    LinkDown { node: String },
    /// Start what was killed or stopped again (the lab's `up` starts what is not running).
    Stopped { what: String },
    /// The controller leader, killed and kept down until `expect` (the standby leads) held;
    /// started again like [`Injected::Stopped`].
    LeaderStopped { what: String, expect: Expectation },
    /// Start the lab router's FRR daemons again.
    RouterStopped,
    /// Nothing to undo (a BGP session reset).
    Nothing,
    /// SIGCONT the frozen process.
    Frozen { pid: i32, what: String },
    /// Configuration changed: apply `restore` (YAML), then delete `created` (kubectl
    /// `kind/name` in `namespace`).
    Changed {
        restore: String,
        created: Vec<(String, &'static str)>,
        /// What the lab must show while the change is in force.
        expect: Expectation,
    },
    /// Delete the nftables table `family table` in these namespaces (a partition, packet
    /// loss, a blackhole).
    Filtered {
        family: &'static str,
        table: &'static str,
        namespaces: Vec<String>,
    },
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

/// Frames dropped at random on `device`, both ways. The `netdev` hooks sit below the speaker's
/// packet sockets, so ARP and NDP are lost too, not only IP.
fn loss_rules(device: &str, percent: u32) -> String {
    format!(
        "table netdev {LOSS_TABLE} {{\n  chain ingress {{\n    type filter hook ingress device \
         \"{device}\" priority -10; policy accept;\n    numgen random mod 100 < {percent} drop\n  \
         }}\n  chain egress {{\n    type filter hook egress device \"{device}\" priority -10; \
         policy accept;\n    numgen random mod 100 < {percent} drop\n  }}\n}}\n"
    )
}

/// Everything to and from the API server dropped, without a reset: connections hang.
fn blackhole_rules() -> String {
    use crate::controlplane::{
        LAB_APISERVER_PORT as port, LAB_APISERVER_V4 as v4, LAB_APISERVER_V6 as v6,
    };
    format!(
        "table inet {BLACKHOLE_TABLE} {{\n  chain output {{\n    type filter hook output priority \
         filter - 10; policy accept;\n    ip daddr {v4} tcp dport {port} drop\n    ip6 daddr {v6} \
         tcp dport {port} drop\n  }}\n  chain input {{\n    type filter hook input priority \
         filter - 10; policy accept;\n    ip saddr {v4} tcp sport {port} drop\n    ip6 saddr {v6} \
         tcp sport {port} drop\n  }}\n}}\n"
    )
}

/// Loads `rules` into each of `namespaces`. The namespaces are recorded in `applied` before
/// each load, so a half-applied fault is removed too.
pub(super) fn load_rules(
    lab: &TestLab,
    rules: &str,
    namespaces: &[String],
    applied: &mut Vec<String>,
) -> anyhow::Result<()> {
    let file = lab.run_dir().join("chaos-rules.nft");
    std::fs::write(&file, rules)?;
    for ns in namespaces {
        applied.push(ns.clone());
        let out = netns::exec(ns, "nft").arg("-f").arg(&file).output()?;
        if !out.status.success() {
            anyhow::bail!(
                "nft -f in {ns}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// What a configuration fault must have made happen before it is undone (checked by
/// [`super::invariants::changed_as_told`]).
#[derive(Debug, Clone)]
pub enum Expectation {
    /// The pool is refused: its `ConfigValid` condition is `False` (or the webhook refused it).
    Refused { pool: String },
    /// The Service gets both its addresses from the pool's ranges, and they are answered.
    AssignedFrom {
        service: ServiceUnderTest,
        ranges: [&'static str; 2],
    },
    /// The Service, as changed, is answered by a node allowed to.
    Answered(ServiceUnderTest),
    /// The Service, its pool narrowed under it, holds new addresses from `ranges` (none of
    /// `from`), answered, and an `IPAllocated` Event on it names the ones it lost (the
    /// exception to invariant 1 the issue allows).
    Reassigned {
        service: ServiceUnderTest,
        uid: String,
        ranges: Vec<String>,
    },
    /// The pool's status shows at least `available_ipv4` free IPv4 addresses (the controller
    /// took the wider pool in), and then every one of `services` holds its addresses.
    Widened {
        pool: String,
        available_ipv4: i64,
        services: Vec<ServiceUnderTest>,
    },
    /// The Lease is held by another replica than `from` within `within` (the standby took
    /// over from the killed leader).
    LeaseTakenOver { from: String, within: Duration },
    /// Nothing to check.
    Nothing,
}

impl Injected {
    /// What the lab must show while the fault is in force, if anything.
    pub fn expectation(&self) -> Option<&Expectation> {
        match self {
            Injected::Changed { expect, .. } | Injected::LeaderStopped { expect, .. } => {
                Some(expect)
            }
            _ => None,
        }
    }
}

/// The second pool of [`FaultKind::PoolAdded`] (beside l2probe's 192.0.2.240/28) and the
/// overlapping one of [`FaultKind::ConfigInvalid`].
const EXTRA_POOL: [&str; 2] = ["192.0.2.224/29", "2001:db8:2::220/125"];
const OVERLAPPING_POOL: &str = "192.0.2.248/29";
/// The ranges [`FaultKind::PoolWidened`] adds to the run's pool.
const WIDENED_BY: [&str; 2] = ["192.0.2.216/29", "2001:db8:2::230/125"];
/// The pool [`FaultKind::PoolNarrowed`] creates and then narrows.
const NARROWED_POOL: [&str; 2] = ["192.0.2.208/29", "2001:db8:2::208/125"];
/// How long a standby may take to take an expired Lease: the lab's Lease (15 s, the
/// manifest's default), the Lease manager's grace (5 s) and a margin.
const STANDBY_TAKES_OVER: Duration = Duration::from_secs(25);

/// `kubectl apply` of `yaml`, through a file in the run directory.
fn apply(lab: &TestLab, name: &str, yaml: &str) -> anyhow::Result<()> {
    let path = lab.run_dir().join(format!("chaos-{name}.yaml"));
    std::fs::write(&path, yaml)?;
    lab.control_plane()
        .kubectl_output(["apply".as_ref(), "-f".as_ref(), path.as_os_str()])
        .with_context(|| format!("kubectl apply -f {}", path.display()))?;
    Ok(())
}

/// A pool's `status.availableIPv4` (0 when it has no status yet).
pub fn available_ipv4(lab: &TestLab, pool: &str) -> anyhow::Result<i64> {
    let text = lab.control_plane().kubectl_output([
        "get",
        "ipaddresspool",
        pool,
        "-n",
        FERROLB_NAMESPACE,
        "-o",
        "jsonpath={.status.availableIPv4}",
    ])?;
    Ok(text.trim().parse().unwrap_or(0))
}

/// The controller's Lease holder identity (empty when none).
pub fn lease_holder(lab: &TestLab) -> anyhow::Result<String> {
    let holder = lab.control_plane().kubectl_output([
        "get",
        "lease",
        "ferrolb-controller",
        "-n",
        FERROLB_NAMESPACE,
        "--ignore-not-found",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])?;
    Ok(holder.trim().to_string())
}

/// The process name and pod name of the controller replica that holds the Lease (the first
/// replica when none does, e.g. with one replica before it took the Lease).
fn leader(lab: &TestLab) -> anyhow::Result<(String, String)> {
    let holder = lease_holder(lab)?;
    let replicas = lab.lab().controller_replicas.max(1);
    let replica = (0..replicas)
        .find(|r| crate::lab::controller_pod_name(*r) == holder)
        .unwrap_or(0);
    Ok((
        crate::lab::controller_process_name(replica),
        crate::lab::controller_pod_name(replica),
    ))
}

/// Every address of `range` but `taken`, as one-address CIDRs (a range is at most a few
/// dozen addresses here).
fn all_but(range: &str, taken: &[std::net::IpAddr]) -> anyhow::Result<Vec<String>> {
    let net: ipnet::IpNet = range.parse()?;
    Ok(net
        .hosts()
        .chain([net.network(), net.broadcast()])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|ip| !taken.contains(ip))
        .map(|ip| ipnet::IpNet::from(ip).to_string())
        .collect())
}

/// The Service's two addresses, once it has them (waits up to `within`).
fn service_ips_after(
    lab: &TestLab,
    service: &str,
    within: Duration,
) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let probe = crate::l2probe::L2Probe::new(lab);
    let deadline = Instant::now() + within;
    loop {
        let ips = probe.ingress_ips(service);
        if ips.len() == 2 {
            return Ok(ips);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "default/{service} holds {ips:?} after {within:?}, not two addresses"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A churn fault's own ETP Cluster Service, with endpoints on every node, asking for `pool`.
fn pooled_service(lab: &TestLab, name: &str, port: usize, pool: &'static str) -> ServiceShape {
    ServiceShape {
        name: name.to_string(),
        port,
        local: false,
        endpoints: lab
            .netlab()
            .topology
            .nodes()
            .map(|n| n.name.clone())
            .collect(),
        shared: false,
        pool: Some(pool),
    }
}

/// What a churn fault with its own pool (and L2Advertisement of that name) created, in the
/// order the heal deletes it: the Service first, so no Service is left without a pool.
fn created_with_pool(service: &ServiceShape, pool: &str) -> Vec<(String, &'static str)> {
    vec![
        (format!("service/{}", service.name), "default"),
        (format!("endpointslice/{}-chaos", service.name), "default"),
        (format!("l2advertisement/{pool}"), FERROLB_NAMESPACE),
        (format!("ipaddresspool/{pool}"), FERROLB_NAMESPACE),
    ]
}

/// The first ETP Local Service of the run (the one a churn fault changes).
fn local_service(services: &[ServiceUnderTest]) -> anyhow::Result<&ServiceUnderTest> {
    services
        .iter()
        .find(|s| s.shape.local)
        .context("the run has no ETP Local Service (it needs at least 3 Services)")
}

/// Injects `kind` aimed at `nodes` (the nodes of one side for a partition); configuration
/// faults change `services` or add their own objects.
pub fn inject(
    lab: &TestLab,
    kind: FaultKind,
    nodes: &[String],
    services: &[ServiceUnderTest],
) -> anyhow::Result<Injected> {
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
            let (what, _) = leader(lab)?;
            let pid = pid_of(lab, &what)?;
            signal(pid, libc::SIGKILL)?;
            wait_gone(pid, Duration::from_secs(5))?;
            Injected::Stopped { what }
        }
        FaultKind::ControllerFailover => {
            let (what, pod) = leader(lab)?;
            let pid = pid_of(lab, &what)?;
            signal(pid, libc::SIGKILL)?;
            wait_gone(pid, Duration::from_secs(5))?;
            let expect = if lab.lab().controller_replicas >= 2 {
                Expectation::LeaseTakenOver {
                    from: pod,
                    within: STANDBY_TAKES_OVER,
                }
            } else {
                Expectation::Nothing
            };
            Injected::LeaderStopped { what, expect }
        }
        FaultKind::RouterRestart | FaultKind::BgpSessionReset | FaultKind::BfdLoss => {
            super::bgp::inject(lab, kind, nodes)?
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
                let member_namespaces: Vec<String> =
                    members.iter().map(|m| topology.ns(&m.name)).collect();
                let loaded = load_rules(
                    lab,
                    &partition_rules(&addresses),
                    &member_namespaces,
                    &mut namespaces,
                );
                if let Err(error) = loaded {
                    heal_filter(INET, PARTITION_TABLE, &namespaces);
                    return Err(error);
                }
            }
            Injected::Filtered {
                family: INET,
                table: PARTITION_TABLE,
                namespaces,
            }
        }
        FaultKind::ConfigInvalid => {
            let yaml = format!(
                "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: \
                 chaos-overlap, namespace: {FERROLB_NAMESPACE}}}\nspec:\n  addresses: \
                 [\"{OVERLAPPING_POOL}\"]\n"
            );
            let created = vec![("ipaddresspool/chaos-overlap".to_string(), FERROLB_NAMESPACE)];
            let expect = match apply(lab, "overlap", &yaml) {
                Ok(()) => Expectation::Refused {
                    pool: "chaos-overlap".to_string(),
                },
                // The admission webhook refused it at the door: as good an outcome.
                Err(error) if format!("{error:#}").contains("denied the request") => {
                    Expectation::Nothing
                }
                Err(error) => return Err(error),
            };
            Injected::Changed {
                restore: String::new(),
                created,
                expect,
            }
        }
        FaultKind::PoolAdded => {
            let shape = pooled_service(lab, "chaos-churn", 79, "chaos-extra");
            let service = shape.yaml();
            let yaml = format!(
                "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: chaos-extra, \
                 namespace: {FERROLB_NAMESPACE}}}\nspec:\n  addresses: [\"{}\", \"{}\"]\n---\n\
                 apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: \
                 chaos-extra, namespace: {FERROLB_NAMESPACE}}}\nspec:\n  ipAddressPools: \
                 [chaos-extra]\n{service}",
                EXTRA_POOL[0], EXTRA_POOL[1]
            );
            let created = created_with_pool(&shape, "chaos-extra");
            apply(lab, "pool-added", &yaml)?;
            Injected::Changed {
                restore: String::new(),
                created,
                expect: Expectation::AssignedFrom {
                    service: ServiceUnderTest {
                        name: shape.name.clone(),
                        endpoint_nodes: None,
                        ips: Vec::new(),
                        shape,
                    },
                    ranges: EXTRA_POOL,
                },
            }
        }
        FaultKind::PoolWidened => {
            use crate::l2probe::{POOL_V4, POOL_V6};
            let before = available_ipv4(lab, super::RUN_POOL)?;
            // The allocator skips a CIDR's network and broadcast addresses: its hosts.
            let added = WIDENED_BY[0].parse::<ipnet::Ipv4Net>()?.hosts().count() as i64;
            let widened = [POOL_V4, POOL_V6, WIDENED_BY[0], WIDENED_BY[1]];
            apply(lab, "pool-widened", &super::run_pool(&widened))?;
            Injected::Changed {
                restore: super::run_pool(&[POOL_V4, POOL_V6]),
                created: Vec::new(),
                expect: Expectation::Widened {
                    pool: super::RUN_POOL.to_string(),
                    available_ipv4: before + added,
                    services: services.to_vec(),
                },
            }
        }
        FaultKind::PoolNarrowed => {
            let shape = pooled_service(lab, "chaos-narrow", 78, "chaos-narrow");
            let pool = |addresses: &[String]| {
                format!(
                    "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: \
                     chaos-narrow, namespace: {FERROLB_NAMESPACE}}}\nspec:\n  addresses: [{}]\n",
                    addresses
                        .iter()
                        .map(|a| format!("\"{a}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let yaml = format!(
                "{}---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: \
                 chaos-narrow, namespace: {FERROLB_NAMESPACE}}}\nspec:\n  ipAddressPools: \
                 [chaos-narrow]\n{}",
                pool(&NARROWED_POOL.map(String::from)),
                shape.yaml()
            );
            let created = created_with_pool(&shape, "chaos-narrow");
            apply(lab, "pool-narrowed", &yaml)?;
            let before = service_ips_after(lab, &shape.name, Duration::from_secs(10))?;
            let uid = lab.control_plane().kubectl_output([
                "get",
                "service",
                "-n",
                "default",
                &shape.name,
                "-o",
                "jsonpath={.metadata.uid}",
            ])?;
            let mut narrowed = Vec::new();
            for range in NARROWED_POOL {
                narrowed.extend(all_but(range, &before)?);
            }
            apply(lab, "pool-narrowed-to", &pool(&narrowed))?;
            Injected::Changed {
                restore: String::new(),
                created,
                expect: Expectation::Reassigned {
                    service: ServiceUnderTest {
                        name: shape.name.clone(),
                        endpoint_nodes: None,
                        ips: before,
                        shape,
                    },
                    uid: uid.trim().to_string(),
                    ranges: narrowed,
                },
            }
        }
        FaultKind::EtpSwitch => {
            let service = local_service(services)?;
            let switched = ServiceShape {
                local: false,
                ..service.shape.clone()
            };
            apply(lab, "etp-switch", &switched.yaml())?;
            Injected::Changed {
                restore: service.shape.yaml(),
                created: Vec::new(),
                expect: Expectation::Answered(ServiceUnderTest {
                    endpoint_nodes: None,
                    shape: switched,
                    ..service.clone()
                }),
            }
        }
        FaultKind::EndpointsMove => {
            let service = local_service(services)?;
            let all: Vec<String> = lab
                .netlab()
                .topology
                .nodes()
                .map(|n| n.name.clone())
                .collect();
            // To the nodes that had none, plus one that had (never to an empty set).
            let mut moved: Vec<String> = all
                .iter()
                .filter(|n| !service.shape.endpoints.contains(n))
                .cloned()
                .collect();
            moved.extend(service.shape.endpoints.last().cloned());
            let moved_shape = ServiceShape {
                endpoints: moved,
                ..service.shape.clone()
            };
            apply(lab, "endpoints-move", &moved_shape.yaml())?;
            Injected::Changed {
                restore: service.shape.yaml(),
                created: Vec::new(),
                expect: Expectation::Answered(ServiceUnderTest {
                    endpoint_nodes: Some(moved_shape.endpoints.iter().cloned().collect()),
                    shape: moved_shape,
                    ..service.clone()
                }),
            }
        }
        FaultKind::PacketLoss => {
            let ns = lab.netlab().topology.ns(&node()?);
            let mut namespaces = Vec::new();
            if let Err(error) = load_rules(
                lab,
                &loss_rules("eth0", LOSS_PERCENT),
                std::slice::from_ref(&ns),
                &mut namespaces,
            ) {
                heal_filter(NETDEV, LOSS_TABLE, &namespaces);
                return Err(error);
            }
            Injected::Filtered {
                family: NETDEV,
                table: LOSS_TABLE,
                namespaces,
            }
        }
        FaultKind::ApiServerBlackhole => {
            let topology = &lab.netlab().topology;
            let all: Vec<String> = topology.nodes().map(|n| topology.ns(&n.name)).collect();
            let mut namespaces = Vec::new();
            let loaded = load_rules(lab, &blackhole_rules(), &all, &mut namespaces)
                .and_then(|()| blackholed_from(&all));
            if let Err(error) = loaded {
                heal_filter(INET, BLACKHOLE_TABLE, &namespaces);
                return Err(error);
            }
            Injected::Filtered {
                family: INET,
                table: BLACKHOLE_TABLE,
                namespaces,
            }
        }
    })
}

/// Proves the blackhole holds: from the first of `namespaces`, a request to the API server must
/// time out (curl's exit code 28), neither succeed nor be refused.
fn blackholed_from(namespaces: &[String]) -> anyhow::Result<()> {
    use crate::controlplane::{LAB_APISERVER_PORT, LAB_APISERVER_V4};
    let Some(ns) = namespaces.first() else {
        return Ok(());
    };
    let url = format!("https://{LAB_APISERVER_V4}:{LAB_APISERVER_PORT}/healthz");
    let status = netns::exec(ns, "curl")
        .args(["-sk", "-o", "/dev/null", "-m", "1", &url])
        .status()?;
    anyhow::ensure!(
        status.code() == Some(28),
        "the API server blackhole does not hold: curl {url} in {ns} ended with {status}"
    );
    Ok(())
}

pub(super) const INET: &str = "inet";
const NETDEV: &str = "netdev";

/// Deletes the table from each namespace; a table that is not there is not an error.
pub(super) fn heal_filter(family: &str, table: &str, namespaces: &[String]) {
    for ns in namespaces {
        let _ = netns::exec(ns, "nft")
            .args(["delete", "table", family, table])
            .output();
    }
}

/// Undoes a fault.
pub fn heal(lab: &mut TestLab, injected: &Injected) -> anyhow::Result<()> {
    match injected {
        Injected::LinkDown { node } => lab.netlab().set_port(node, true)?,
        Injected::Stopped { what } | Injected::LeaderStopped { what, .. } => lab
            .up_again()
            .with_context(|| format!("starting {what} again"))?,
        Injected::RouterStopped => lab.netlab().router().start()?,
        Injected::Nothing => {}
        Injected::Frozen { pid, .. } => signal(*pid, libc::SIGCONT)?,
        Injected::Filtered {
            family,
            table,
            namespaces,
        } => heal_filter(family, table, namespaces),
        Injected::Changed {
            restore, created, ..
        } => {
            if !restore.is_empty() {
                apply(lab, "restore", restore)?;
            }
            for (object, namespace) in created {
                lab.control_plane()
                    .kubectl_output([
                        "delete",
                        object,
                        "-n",
                        namespace,
                        "--ignore-not-found",
                        "--wait=false",
                    ])
                    .with_context(|| format!("kubectl delete {object}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrowed_range_is_every_other_address() {
        let taken: Vec<std::net::IpAddr> = vec!["192.0.2.209".parse().unwrap()];
        let rest = all_but("192.0.2.208/29", &taken).unwrap();
        assert_eq!(rest.len(), 7, "{rest:?}");
        assert!(rest.contains(&"192.0.2.208/32".to_string()), "{rest:?}");
        assert!(rest.contains(&"192.0.2.215/32".to_string()), "{rest:?}");
        assert!(!rest.contains(&"192.0.2.209/32".to_string()), "{rest:?}");
        let v6 = all_but("2001:db8:2::208/125", &[]).unwrap();
        assert_eq!(v6.len(), 8, "{v6:?}");
        assert!(v6.contains(&"2001:db8:2::20f/128".to_string()), "{v6:?}");
    }

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

    #[test]
    fn loss_drops_a_share_both_ways_below_the_packet_sockets() {
        let rules = loss_rules("eth0", 30);
        assert!(rules.starts_with("table netdev "), "{rules}");
        assert!(
            rules.contains("hook ingress device \"eth0\"")
                && rules.contains("hook egress device \"eth0\""),
            "{rules}"
        );
        assert_eq!(
            rules.matches("numgen random mod 100 < 30 drop").count(),
            2,
            "{rules}"
        );
    }

    #[test]
    fn the_blackhole_drops_only_the_api_server_both_ways() {
        let rules = blackhole_rules();
        for rule in [
            "ip daddr 192.0.2.2 tcp dport 6443 drop",
            "ip saddr 192.0.2.2 tcp sport 6443 drop",
            "ip6 daddr 2001:db8:2::2 tcp dport 6443 drop",
            "ip6 saddr 2001:db8:2::2 tcp sport 6443 drop",
        ] {
            assert!(rules.contains(rule), "{rule} missing: {rules}");
        }
    }
}
