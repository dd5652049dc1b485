//! What must never happen, checked against the lab between faults: the invariants of issue #14,
//! each as a function that returns the violations it found (empty: it held).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::harness::TestLab;
use crate::l2probe::L2Probe;
use crate::process;

/// One Service the run keeps, with the nodes allowed to answer for it.
#[derive(Debug, Clone)]
pub struct ServiceUnderTest {
    pub name: String,
    /// Set for `externalTrafficPolicy: Local`: only these nodes may answer.
    pub endpoint_nodes: Option<BTreeSet<String>>,
    /// Its IPv4 and IPv6 address, as first assigned.
    pub ips: Vec<IpAddr>,
    /// How the lab was told it (a fault that changes it puts this back).
    pub shape: super::ServiceShape,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// 1..=5, as numbered in the issue.
    pub invariant: u8,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant {}: {}", self.invariant, self.what)
    }
}

/// Invariant 1: every Service keeps the addresses it was first given.
pub fn addresses_kept(probe: &L2Probe<'_>, services: &[ServiceUnderTest]) -> Vec<Violation> {
    services
        .iter()
        .filter_map(|service| {
            let now = probe.ingress_ips(&service.name);
            (now != service.ips).then(|| Violation {
                invariant: 1,
                what: format!(
                    "default/{} holds {now:?}, was given {:?}",
                    service.name, service.ips
                ),
            })
        })
        .collect()
}

/// The MACs answering for each address right now, asked in parallel (each ask takes 2 s: two
/// probes that wait a second for every answer).
fn answers(probe: &L2Probe<'_>, ips: &[IpAddr]) -> BTreeMap<IpAddr, BTreeSet<String>> {
    let client = probe.client_ns();
    std::thread::scope(|scope| {
        let asks: Vec<_> = ips
            .iter()
            .map(|ip| {
                let client = &client;
                scope.spawn(move || (*ip, probe.answering_macs_from(client, *ip, 2)))
            })
            .collect();
        asks.into_iter().filter_map(|ask| ask.join().ok()).collect()
    })
}

/// Invariant 5, the status part: the ServiceL2Status objects say what the wire says. For each
/// Service, the nodes with a status object are the nodes that answer for its addresses
/// (`owners`, from invariant 2), and no status object names a Service the run does not have
/// (an orphan). The speakers write them shortly after they start answering: waits up to
/// `settle`.
pub fn statuses_match_the_wire(
    probe: &L2Probe<'_>,
    services: &[ServiceUnderTest],
    owners: &BTreeMap<IpAddr, String>,
    settle: Duration,
) -> Vec<Violation> {
    let expected: BTreeSet<(String, String)> = services
        .iter()
        .flat_map(|service| {
            service
                .ips
                .iter()
                .filter_map(|ip| owners.get(ip))
                .map(|node| (service.name.clone(), node.clone()))
        })
        .collect();
    let deadline = Instant::now() + settle;
    loop {
        let listed = probe.kubectl(&[
            "get",
            "servicel2statuses",
            "-n",
            crate::controlplane::FERROLB_NAMESPACE,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.serviceNamespace} \
             {.status.serviceName} {.status.node}{\"\\n\"}{end}",
        ]);
        let violations = status_mismatches(&listed, &expected);
        if violations.is_empty() || Instant::now() >= deadline {
            return violations;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The mismatches between `listed` (lines of `name namespace service node`) and `expected`
/// (Service name, node), all in namespace `default`.
fn status_mismatches(listed: &str, expected: &BTreeSet<(String, String)>) -> Vec<Violation> {
    let mut found = BTreeSet::new();
    let mut violations = Vec::new();
    for line in listed.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, namespace, service, node] = fields[..] else {
            violations.push(Violation {
                invariant: 5,
                what: format!("ServiceL2Status {line:?} lacks its Service or node"),
            });
            continue;
        };
        let key = (service.to_string(), node.to_string());
        if namespace != "default" || !expected.contains(&key) {
            violations.push(Violation {
                invariant: 5,
                what: format!(
                    "ServiceL2Status {name} says {node} announces {namespace}/{service}, which \
                     the wire does not show (an orphan)"
                ),
            });
        }
        found.insert(key);
    }
    for (service, node) in expected.difference(&found) {
        violations.push(Violation {
            invariant: 5,
            what: format!("{node} answers for default/{service}, but has no ServiceL2Status"),
        });
    }
    violations
}

/// During a configuration fault: the lab did what the change told it to, within `settle`.
/// Counted under invariant 2 (who answers) or 1 (addresses from the right pool); a refused pool
/// under 5 (bad input reported where the user looks).
pub fn changed_as_told(
    probe: &L2Probe<'_>,
    expect: &super::faults::Expectation,
    settle: Duration,
) -> Vec<Violation> {
    use super::faults::Expectation;
    let deadline = Instant::now() + settle;
    match expect {
        Expectation::Nothing => Vec::new(),
        Expectation::Answered(service) => {
            single_eligible_answerer(probe, std::slice::from_ref(service), settle).1
        }
        Expectation::Refused { pool } => loop {
            let condition = probe.kubectl(&[
                "get",
                "ipaddresspool",
                pool,
                "-n",
                crate::controlplane::FERROLB_NAMESPACE,
                "--ignore-not-found",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"ConfigValid\")].status}",
            ]);
            if condition.trim() == "False" {
                return Vec::new();
            }
            if Instant::now() >= deadline {
                return vec![Violation {
                    invariant: 5,
                    what: format!(
                        "IPAddressPool {pool} overlaps the run's pool, but its ConfigValid \
                         condition is {condition:?} after {settle:?}, not False"
                    ),
                }];
            }
            std::thread::sleep(Duration::from_millis(250));
        },
        Expectation::Widened {
            pool,
            available_ipv4,
            services,
        } => loop {
            let now = super::faults::available_ipv4(probe.lab(), pool).unwrap_or(0);
            if now >= *available_ipv4 {
                return addresses_kept(probe, services);
            }
            if Instant::now() >= deadline {
                return vec![Violation {
                    invariant: 5,
                    what: format!(
                        "IPAddressPool {pool} was widened, and {settle:?} later its status shows \
                         availableIPv4 {now}, not at least {available_ipv4}"
                    ),
                }];
            }
            std::thread::sleep(Duration::from_millis(250));
        },
        Expectation::LeaseTakenOver { from, within } => {
            let deadline = Instant::now() + *within;
            loop {
                let holder = super::faults::lease_holder(probe.lab()).unwrap_or_default();
                if !holder.is_empty() && holder != *from {
                    return Vec::new();
                }
                if Instant::now() >= deadline {
                    return vec![Violation {
                        invariant: 5,
                        what: format!(
                            "the controller leader {from} was killed, and {within:?} later the \
                             Lease is held by {holder:?}: the standby did not take over"
                        ),
                    }];
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Expectation::Reassigned {
            service,
            uid,
            ranges,
        } => {
            let nets: Vec<ipnet::IpNet> = ranges.iter().filter_map(|r| r.parse().ok()).collect();
            let fits = |ips: &[IpAddr]| {
                ips.len() == 2
                    && ips
                        .iter()
                        .all(|ip| nets.iter().any(|n| n.contains(ip)) && !service.ips.contains(ip))
            };
            let ips = loop {
                let ips = probe.ingress_ips(&service.name);
                if fits(&ips) || Instant::now() >= deadline {
                    break ips;
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            if !fits(&ips) {
                return vec![Violation {
                    invariant: 1,
                    what: format!(
                        "default/{}'s pool was narrowed to leave out {:?}, and it holds {ips:?} \
                         after {settle:?}, not two addresses of the narrowed pool",
                        service.name, service.ips
                    ),
                }];
            }
            // The Event that tells the user, naming what was lost.
            let lost = service.ips[0].to_string();
            let told = loop {
                let messages = probe.kubectl(&[
                    "get",
                    "events",
                    "-n",
                    "default",
                    "--field-selector",
                    &format!("involvedObject.uid={uid},reason=IPAllocated"),
                    "-o",
                    "jsonpath={.items[*].message}",
                ]);
                if messages.contains(&format!("replacing [{lost}")) {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            if !told {
                return vec![Violation {
                    invariant: 1,
                    what: format!(
                        "default/{} moved from {:?} to {ips:?} without an IPAllocated Event \
                         naming {lost}",
                        service.name, service.ips
                    ),
                }];
            }
            let reassigned = ServiceUnderTest {
                ips,
                ..service.clone()
            };
            let left = deadline.saturating_duration_since(Instant::now());
            single_eligible_answerer(probe, std::slice::from_ref(&reassigned), left).1
        }
        Expectation::AssignedFrom { service, ranges } => {
            let ranges: Vec<ipnet::IpNet> = ranges.iter().filter_map(|r| r.parse().ok()).collect();
            let ips = loop {
                let ips = probe.ingress_ips(&service.name);
                if ips.len() == 2 || Instant::now() >= deadline {
                    break ips;
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            let outside: Vec<&IpAddr> = ips
                .iter()
                .filter(|ip| !ranges.iter().any(|r| r.contains(*ip)))
                .collect();
            if ips.len() != 2 || !outside.is_empty() {
                return vec![Violation {
                    invariant: 1,
                    what: format!(
                        "default/{} asked for pool {ranges:?} and holds {ips:?} after {settle:?}",
                        service.name
                    ),
                }];
            }
            let assigned = ServiceUnderTest {
                ips,
                ..service.clone()
            };
            let left = deadline.saturating_duration_since(Instant::now());
            single_eligible_answerer(probe, std::slice::from_ref(&assigned), left).1
        }
    }
}

/// Invariant 2: once the lab is steady, exactly one MAC answers for each address, and it is a
/// node allowed to (for ETP Local, one with an endpoint). Waits up to `settle` for the lab to
/// become steady; returns the owners and the violations left at the end.
pub fn single_eligible_answerer(
    probe: &L2Probe<'_>,
    services: &[ServiceUnderTest],
    settle: Duration,
) -> (BTreeMap<IpAddr, String>, Vec<Violation>) {
    let deadline = Instant::now() + settle;
    let ips: Vec<IpAddr> = services.iter().flat_map(|s| s.ips.clone()).collect();
    loop {
        let seen = answers(probe, &ips);
        let mut owners = BTreeMap::new();
        let mut violations = Vec::new();
        for service in services {
            for ip in &service.ips {
                let macs = seen.get(ip).cloned().unwrap_or_default();
                if macs.len() != 1 {
                    violations.push(Violation {
                        invariant: 2,
                        what: format!(
                            "{ip} (default/{}) answered by {} MACs: {macs:?}",
                            service.name,
                            macs.len()
                        ),
                    });
                    continue;
                }
                let mac = macs.first().cloned().unwrap_or_default();
                let known = probe
                    .lab()
                    .netlab()
                    .topology
                    .nodes()
                    .any(|n| n.mac.eq_ignore_ascii_case(&mac));
                if !known {
                    violations.push(Violation {
                        invariant: 2,
                        what: format!("{ip} answered by {mac}, not a node's MAC"),
                    });
                    continue;
                }
                let node = probe.node_of_mac(&mac);
                if let Some(allowed) = &service.endpoint_nodes
                    && !allowed.contains(&node)
                {
                    violations.push(Violation {
                        invariant: 2,
                        what: format!(
                            "{ip} (default/{}, ETP Local, endpoints on {allowed:?}) answered by \
                             {node}",
                            service.name
                        ),
                    });
                }
                owners.insert(*ip, node);
            }
        }
        if violations.is_empty() || Instant::now() >= deadline {
            return (owners, violations);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Invariant 3: a client that asks (here: the client's kernel, primed with one ping) ends up
/// with a neighbour entry pointing at the answering node `within` that time.
pub fn clients_follow(
    probe: &L2Probe<'_>,
    owners: &BTreeMap<IpAddr, String>,
    within: Duration,
) -> Vec<Violation> {
    owners
        .iter()
        .filter_map(|(ip, node)| {
            let IpAddr::V4(v4) = ip else { return None };
            let want = probe.mac_of(node);
            let deadline = Instant::now() + within;
            let mut got = probe.prime_neighbour(*v4);
            while got.as_deref() != Some(want.as_str()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                got = probe.neighbour_mac(*ip);
            }
            (got.as_deref() != Some(want.as_str())).then(|| Violation {
                invariant: 3,
                what: format!(
                    "the client's entry for {ip} is {got:?} after {within:?}, {node} ({want}) \
                     answers"
                ),
            })
        })
        .collect()
}

/// One process of the lab, by its pid file name (`controller`, `speaker-node1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessSample {
    pub name: String,
    pub pid: i32,
    pub rss_kib: u64,
    pub fds: u64,
}

/// The FerroLB processes' memory and open files right now.
pub fn sample_processes(lab: &TestLab, names: &[String]) -> Vec<ProcessSample> {
    names
        .iter()
        .filter_map(|name| {
            let pid = process::read_pid(&lab.run_dir().join(format!("{name}.pid")))?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let rss_kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
            Some(ProcessSample {
                name: name.clone(),
                pid,
                rss_kib,
                fds,
            })
        })
        .collect()
}

/// Invariant 5: every FerroLB process runs (none exited on its own: the faults restart what
/// they stop before this is checked), and no log line says a thread panicked.
pub fn nothing_crashed(lab: &TestLab, names: &[String]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for name in names {
        let pid = process::read_pid(&lab.run_dir().join(format!("{name}.pid")));
        if !pid.is_some_and(process::is_alive) {
            violations.push(Violation {
                invariant: 5,
                what: format!("{name} is not running (pid {pid:?})"),
            });
        }
        let log = lab.run_dir().join(format!("{name}.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("panicked at")) {
            violations.push(Violation {
                invariant: 5,
                what: format!("{name} panicked: {line}"),
            });
        }
    }
    violations
}

/// The least-squares slope of `points` (x, y), `None` with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let var: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if points.len() < 2 || var == 0.0 {
        return None;
    }
    let cov: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    Some(cov / var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), Some(2.0));
        assert_eq!(slope(&[(0.0, 7.0), (5.0, 7.0)]), Some(0.0));
        assert_eq!(slope(&[(1.0, 7.0)]), None);
    }

    #[test]
    fn status_objects_are_compared_with_the_wire() {
        let expected: BTreeSet<(String, String)> = [("a", "node1"), ("a", "node2"), ("b", "node3")]
            .map(|(s, n)| (s.to_string(), n.to_string()))
            .into();
        let exact = "l2-1 default a node1\nl2-2 default a node2\nl2-3 default b node3\n";
        assert_eq!(status_mismatches(exact, &expected), vec![]);
        let wrong = "l2-1 default a node1\nl2-3 default b node2\nl2-9 default gone node1\n";
        let found = status_mismatches(wrong, &expected);
        let what: Vec<&str> = found.iter().map(|v| v.what.as_str()).collect();
        assert_eq!(found.len(), 4, "{what:?}");
        assert!(
            what.iter()
                .any(|w| w.contains("default/gone") && w.contains("orphan"))
        );
        assert!(
            what.iter()
                .any(|w| w.contains("node2 answers for default/a"))
        );
        assert!(
            what.iter()
                .any(|w| w.contains("node3 answers for default/b"))
        );
        assert!(found.iter().all(|v| v.invariant == 5));
    }
}
