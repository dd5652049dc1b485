//! `cargo xtask lab chaos`: a fault-injection soak with invariants checked the whole time
//! (issue #14).
//!
//! * [`schedule`]: the seeded fault schedule (pure; one seed replays one run).
//! * [`faults`]: injecting a fault into the lab and undoing it.
//! * [`invariants`]: what must never happen, checked between faults.
//! * [`bgp`]: the BGP Services, the faults aimed at the router and its sessions, and the
//!   invariant "the router has exactly the eligible next hops".
//!
//! The run: a lab of `nodes` nodes with the real controller and speakers, `services` layer2
//! Services (dual-stack; some ETP Local with endpoints on a subset of nodes; two sharing one
//! address). Then, until the time is up, one fault after the other: inject, measure on the wire
//! how long until an address of the faulted node answers again (the recovery time), hold, heal,
//! wait for the lab to settle, check the invariants. A violation prints the seed, the schedule so
//! far, the logs and the command line that replays it; the run goes on, and the report lists
//! them all. A new family of faults is a module like [`bgp`]: its Services, its
//! [`schedule::FaultKind`]s, their injection, and its invariant, called from the loop below.

pub mod bgp;
pub mod faults;
pub mod invariants;
pub mod schedule;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::harness::{TestLab, tail};
use crate::l2probe::{self, L2Probe};
use crate::netlab::netns;
use crate::paths;
use invariants::{ServiceUnderTest, Violation};
use schedule::{FaultKind, Step, Target};

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub minutes: f64,
    pub seed: u64,
    /// Empty: every kind.
    pub faults: Vec<FaultKind>,
    pub services: usize,
    pub nodes: usize,
    /// Controller replicas (they compete for the Lease; `controller-kill` kills the leader).
    pub controllers: usize,
    /// Invariant 3's bound: how soon the client's neighbour entry must point at the answering
    /// node. The soak uses the 1 s; the smoke run in the test suite a hang guard (the
    /// default test run asserts no wall-clock bound).
    pub client_follows_within: Duration,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            minutes: 30.0,
            seed: 1,
            faults: Vec::new(),
            services: 6,
            nodes: 3,
            controllers: 2,
            client_follows_within: Duration::from_secs(1),
        }
    }
}

impl ChaosOptions {
    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let mut command = format!(
            "cargo xtask lab chaos --seed {} --minutes {} --services {} --nodes {} --controllers {}",
            self.seed, self.minutes, self.services, self.nodes, self.controllers
        );
        if !self.faults.is_empty() {
            let names: Vec<_> = self.faults.iter().map(|f| f.name()).collect();
            command.push_str(&format!(" --faults {}", names.join(",")));
        }
        command
    }
}

/// How long the lab may take to settle after a fault is healed: membership detection and
/// rejoin, a restarted speaker's start, the controller's Lease.
const SETTLE: Duration = Duration::from_secs(30);
/// How long after healing an address of the faulted node must answer again at the latest.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// How long a configuration change may take to show: the controller's and the speakers'
/// reaction, and a round of ARP/NDP asks (2 s).
const CHANGE_TAKES_EFFECT: Duration = Duration::from_secs(10);
/// How long BGP may take to converge after a heal: a node whose sessions keep failing backs
/// off its reconnects up to 60 s (1 s, doubling, until a session stays up for 60 s).
const BGP_SETTLE: Duration = Duration::from_secs(75);
/// How often the recovery probe asks.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// One injected fault, as the report shows it.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub step: Step,
    pub nodes: Vec<String>,
    /// For a layer2 fault, from the injection until an address the faulted node answered for
    /// answered again (from any node), on the wire; `None` when the fault hit no node that
    /// answered. For a BGP fault, at the router: see [`bgp::while_in_force`] and
    /// [`RECOVERY_MEANS`].
    pub recovery: Option<Duration>,
    /// During a partition: how long two MACs were seen answering for one address (first to
    /// last sighting). By design today, without fencing; reported, not a violation.
    pub dual_answerers: Option<Duration>,
    pub violations: Vec<Violation>,
}

/// The run's outcome.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub faults: Vec<FaultRecord>,
    pub checks: u64,
    pub samples: Vec<(f64, invariants::ProcessSample)>,
    /// What the checks at the end of the run found (status objects against the wire).
    pub at_end: Vec<Violation>,
    pub path: PathBuf,
}

impl Report {
    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.faults
            .iter()
            .flat_map(|f| f.violations.iter())
            .chain(&self.at_end)
    }
}

/// One of the run's Services as the lab is told it: what [`services_manifest`] applies, and
/// what a fault changes and puts back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceShape {
    pub name: String,
    pub port: usize,
    /// `externalTrafficPolicy: Local` (else Cluster).
    pub local: bool,
    /// The nodes with a ready endpoint.
    pub endpoints: Vec<String>,
    /// Shares one IPv4 and one IPv6 address with the other shared ones.
    pub shared: bool,
    /// Asks for this pool (the `ferrolb.io/address-pool` annotation).
    pub pool: Option<&'static str>,
}

impl ServiceShape {
    /// The `index`-th of `count` Services: every third is ETP Local with endpoints on the first
    /// two nodes; the last two share one address.
    fn nth(index: usize, count: usize, nodes: &[String]) -> ServiceShape {
        let shared_from = count.saturating_sub(2).max(1);
        let local = index % 3 == 2 && index < shared_from;
        let endpoints = if local {
            nodes.iter().take(2).cloned().collect()
        } else {
            nodes.to_vec()
        };
        ServiceShape {
            name: format!("chaos-{index}"),
            port: 80 + index,
            local,
            endpoints,
            shared: count >= 3 && index >= shared_from,
            pool: None,
        }
    }

    /// The Service and its EndpointSlice, as YAML.
    pub fn yaml(&self) -> String {
        let name = &self.name;
        let port = self.port;
        let mut annotations = Vec::new();
        if self.shared {
            annotations.push("ferrolb.io/allow-shared-ip: chaos-shared".to_string());
            annotations.push("ferrolb.io/loadBalancerIPs: 192.0.2.254,2001:db8:2::24e".to_string());
        }
        if let Some(pool) = self.pool {
            annotations.push(format!(
                "{}: {pool}",
                ferrolb_crds::annotations::ADDRESS_POOL
            ));
        }
        let sharing = if annotations.is_empty() {
            String::new()
        } else {
            format!("  annotations:\n    {}\n", annotations.join("\n    "))
        };
        let policy = if self.local { "Local" } else { "Cluster" };
        let mut yaml = format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n\
             {sharing}spec:\n  type: LoadBalancer\n  externalTrafficPolicy: {policy}\n  \
             ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  ports: [{{name: http, \
             port: {port}, targetPort: 8080, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\n\
             kind: EndpointSlice\nmetadata:\n  name: {name}-chaos\n  namespace: default\n  labels: \
             {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: \
             8080, protocol: TCP}}]\nendpoints:\n"
        );
        for node in &self.endpoints {
            let host: u8 = node.trim_start_matches("node").parse().unwrap_or(1);
            write!(
                yaml,
                "- addresses: [\"192.0.2.{}\"]\n  nodeName: {node}\n  conditions: {{ready: true, \
                 serving: true}}\n",
                10 + host
            )
            .ok();
        }
        yaml
    }
}

/// The Services of a run, as YAML: a pool and an L2Advertisement, then `count` dual-stack
/// Services with EndpointSlices ([`ServiceShape::nth`]).
fn services_manifest(count: usize, nodes: &[String]) -> (String, Vec<ServiceUnderTest>) {
    let mut yaml = run_pool(&[l2probe::POOL_V4, l2probe::POOL_V6]);
    yaml.push_str(
        "---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: chaos, \
         namespace: ferrolb-system}\nspec:\n  ipAddressPools: [chaos]\n",
    );
    let mut services = Vec::new();
    for index in 0..count {
        let shape = ServiceShape::nth(index, count, nodes);
        yaml.push_str(&shape.yaml());
        services.push(ServiceUnderTest {
            name: shape.name.clone(),
            endpoint_nodes: shape
                .local
                .then(|| shape.endpoints.iter().cloned().collect()),
            ips: Vec::new(),
            shape,
        });
    }
    (yaml, services)
}

/// The run's pool, `chaos`, with these address ranges, as YAML.
pub(crate) fn run_pool(ranges: &[&str]) -> String {
    let ranges: Vec<String> = ranges.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {RUN_POOL}, \
         namespace: ferrolb-system}}\nspec:\n  addresses: [{}]\n",
        ranges.join(", ")
    )
}

/// The name of the run's pool.
pub(crate) const RUN_POOL: &str = "chaos";

/// The first ARP answer for `ip` from any node: the time since `since`, or `None` by `until`.
/// A broadcast request goes out from the client every [`PROBE_EVERY`], each waiting up to a
/// second for its reply, so the resolution is the interval, not the reply timeout.
fn first_answer(
    probe: &L2Probe<'_>,
    ip: Ipv4Addr,
    since: Instant,
    until: Instant,
) -> Option<Duration> {
    let client = probe.client_ns();
    let mut running: Vec<std::process::Child> = Vec::new();
    let mut next = Instant::now();
    let mut answered = None;
    while answered.is_none() && (Instant::now() < until || !running.is_empty()) {
        if Instant::now() >= next && Instant::now() < until {
            let spawned = netns::exec(&client, "arping")
                .args(["-f", "-b", "-c", "1", "-w", "1", "-I", "eth0"])
                .arg(ip.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            if let Ok(child) = spawned {
                running.push(child);
            }
            next += PROBE_EVERY;
        }
        running.retain_mut(|child| match child.try_wait() {
            Ok(Some(status)) => {
                // arping exits 0 when it got a reply.
                if status.success() && answered.is_none() {
                    answered = Some(since.elapsed());
                }
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    for mut child in running {
        let _ = child.kill();
        let _ = child.wait();
    }
    answered
}

/// Watches `ips` until `until`: from the first to the last moment any of them was answered by
/// two MACs at once (one probe per address per round, in parallel), or `None` if never.
fn dual_answer_window(probe: &L2Probe<'_>, ips: &[IpAddr], until: Instant) -> Option<Duration> {
    let client = probe.client_ns();
    let (mut first, mut last) = (None, None);
    while Instant::now() < until {
        let round = Instant::now();
        let dual = std::thread::scope(|scope| {
            let asks: Vec<_> = ips
                .iter()
                .map(|ip| scope.spawn(|| probe.answering_macs_from(&client, *ip, 1).len() > 1))
                .collect();
            asks.into_iter().any(|ask| ask.join().unwrap_or(false))
        });
        if dual {
            first.get_or_insert(round);
            last = Some(Instant::now());
        }
    }
    Some(last? - first?)
}

/// A wall-clock time as the logs write it, to the second (UTC).
fn log_time(at: std::time::SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(at)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Prints what a violation needs to be understood and replayed: the logs from `since` (the
/// fault's injection, less a second) to now.
fn print_violation(
    options: &ChaosOptions,
    lab: &TestLab,
    done: &[FaultRecord],
    found: &[Violation],
    since: std::time::SystemTime,
) {
    eprintln!("== chaos: invariant violated (seed {})", options.seed);
    for violation in found {
        eprintln!("   {violation}");
    }
    eprintln!("== schedule up to here:");
    for record in done {
        eprintln!(
            "   #{} {} {:?} hold {:?} recovery {:?}",
            record.step.index, record.step.kind, record.nodes, record.step.hold, record.recovery
        );
    }
    let from = log_time(since - Duration::from_secs(1));
    let to = log_time(std::time::SystemTime::now());
    eprintln!("== logs from {from} to {to} (the last 20 lines of logs without our timestamps):");
    for log in crate::harness::log_files(lab.run_dir()) {
        eprintln!("-- {}", log.display());
        let lines =
            crate::harness::lines_between(&log, &from, &to).unwrap_or_else(|| tail(&log, 20));
        for line in lines {
            eprintln!("   {line}");
        }
    }
    eprintln!("== replay: {}", options.replay_command());
}

/// Proves, on the live lab, that the checks can fail: a Service said to hold other addresses,
/// and one allowed on no node, must both be reported. A check that cannot fail would make a
/// clean report worthless.
fn canaries(
    probe: &L2Probe<'_>,
    services: &[ServiceUnderTest],
    bgp_services: &[ServiceUnderTest],
) -> anyhow::Result<()> {
    let Some(first) = services.first() else {
        return Ok(());
    };
    let mut moved = first.clone();
    moved.ips.reverse();
    anyhow::ensure!(
        invariants::addresses_kept(probe, &[moved]).len() == 1,
        "canary: invariant 1 missed a Service whose addresses changed"
    );
    let mut nowhere = first.clone();
    nowhere.endpoint_nodes = Some(Default::default());
    let (_, found) = invariants::single_eligible_answerer(probe, &[nowhere], Duration::ZERO);
    anyhow::ensure!(
        found.len() == 2,
        "canary: invariant 2 missed an answer from a node without an endpoint: {found:?}"
    );
    if let Some(first) = bgp_services.first() {
        let mut fewer = first.clone();
        fewer.endpoint_nodes = Some(fewer.shape.endpoints.iter().take(1).cloned().collect());
        let (_, found) =
            bgp::router_has_the_eligible_next_hops(probe.lab(), &[fewer], Duration::ZERO);
        anyhow::ensure!(
            !found.is_empty(),
            "canary: invariant {} missed next hops the router must not have",
            bgp::INVARIANT
        );
    }
    Ok(())
}

/// Runs the soak. Needs root (the lab); `Ok(None)` when not root.
pub fn run(options: &ChaosOptions) -> anyhow::Result<Option<Report>> {
    let Some(mut lab) = TestLab::start_replicated("chaos", options.nodes, options.controllers)?
    else {
        return Ok(None);
    };
    let nodes: Vec<String> = lab
        .netlab()
        .topology
        .nodes()
        .map(|n| n.name.clone())
        .collect();
    let processes: Vec<String> = (0..options.controllers.max(1))
        .map(crate::lab::controller_process_name)
        .chain(nodes.iter().map(|n| format!("speaker-{n}")))
        .collect();
    let (yaml, mut services) = services_manifest(options.services, &nodes);
    let (bgp_yaml, mut bgp_services) = bgp::manifest(&nodes);
    {
        let probe = L2Probe::new(&lab);
        probe.wait_for_membership_secret();
        probe.wait_for_members(options.nodes as u64, Duration::from_secs(60));
        probe.apply("chaos-services", &yaml);
        probe.apply("chaos-bgp", &bgp_yaml);
        for service in services.iter_mut().chain(&mut bgp_services) {
            let (v4, v6) = probe.service_ips(&service.name, l2probe::ASSIGN_TIMEOUT);
            service.ips = vec![IpAddr::V4(v4), IpAddr::V6(v6)];
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.minutes * 60.0);
    let mut report = Report::default();
    let mut owners = {
        let probe = L2Probe::new(&lab);
        let (owners, violations) = invariants::single_eligible_answerer(&probe, &services, SETTLE);
        anyhow::ensure!(
            violations.is_empty(),
            "the lab never settled before the first fault: {violations:?}"
        );
        let (_, bgp_violations) =
            bgp::router_has_the_eligible_next_hops(&lab, &bgp_services, BGP_SETTLE);
        anyhow::ensure!(
            bgp_violations.is_empty(),
            "BGP never converged before the first fault: {bgp_violations:?}"
        );
        owners
    };
    canaries(&L2Probe::new(&lab), &services, &bgp_services)?;
    report.samples.extend(
        invariants::sample_processes(&lab, &processes)
            .into_iter()
            .map(|s| (0.0, s)),
    );
    // Far more steps than a run uses; the time limit ends it.
    let steps = schedule::schedule(
        options.seed,
        100_000,
        &options.faults,
        options.nodes,
        options.services,
    );
    for step in steps {
        if Instant::now() >= deadline {
            break;
        }
        let faulted: Vec<String> = match step.target {
            Target::OwnerOf(index) => services
                .get(index)
                .and_then(|s| owners.get(&s.ips[0]))
                .cloned()
                .into_iter()
                .collect(),
            Target::Node(index) => nodes.get(index).cloned().into_iter().collect(),
            Target::Split(size) => nodes.iter().take(size).cloned().collect(),
            Target::Cluster => Vec::new(),
        };
        // An address the faulted node answered for: its recovery is the failover.
        let watched: Option<Ipv4Addr> = step
            .kind
            .silences_a_speaker()
            .then(|| {
                owners.iter().find_map(|(ip, node)| match ip {
                    IpAddr::V4(v4) if faulted.contains(node) => Some(*v4),
                    _ => None,
                })
            })
            .flatten();
        eprintln!(
            "chaos #{} {:>6.1}s: {} on {faulted:?} for {:?}",
            step.index,
            started.elapsed().as_secs_f64(),
            step.kind,
            step.hold
        );
        let injected_at = Instant::now();
        let injected_wall = std::time::SystemTime::now();
        let injected = faults::inject(&lab, step.kind, &faulted, &services)
            .with_context(|| format!("injecting {} on {faulted:?}", step.kind))?;
        let mut recovery = watched.and_then(|ip| {
            first_answer(
                &L2Probe::new(&lab),
                ip,
                injected_at,
                injected_at + step.hold,
            )
        });
        let dual_answerers = (step.kind == FaultKind::MembershipPartition).then(|| {
            let v4: Vec<IpAddr> = owners.keys().filter(|ip| ip.is_ipv4()).copied().collect();
            dual_answer_window(&L2Probe::new(&lab), &v4, injected_at + step.hold)
        });
        let dual_answerers = dual_answerers.flatten();
        // A configuration change must have taken effect before it is undone.
        let mut violations = match injected.expectation() {
            Some(expect) => {
                report.checks += 1;
                let found =
                    invariants::changed_as_told(&L2Probe::new(&lab), expect, CHANGE_TAKES_EFFECT);
                // The check returns as soon as the standby holds the Lease.
                if step.kind == FaultKind::ControllerFailover && found.is_empty() {
                    recovery = Some(injected_at.elapsed());
                }
                found
            }
            None => Vec::new(),
        };
        if step.kind.is_bgp() {
            let (at_router, found) = bgp::while_in_force(
                &lab,
                step.kind,
                &faulted,
                &bgp_services,
                injected_at,
                injected_at + step.hold,
            );
            recovery = recovery.or(at_router);
            violations.extend(found);
            report.checks += 1;
        }
        let held = injected_at.elapsed();
        if held < step.hold {
            std::thread::sleep(step.hold - held);
        }
        faults::heal(&mut lab, &injected)
            .with_context(|| format!("healing {} on {faulted:?}", step.kind))?;
        // A restarted router's recovery is measured from its restart, before the other checks.
        let mut bgp_checked = false;
        if step.kind == FaultKind::RouterRestart {
            let (converged, found) =
                bgp::router_has_the_eligible_next_hops(&lab, &bgp_services, BGP_SETTLE);
            recovery = converged;
            violations.extend(found);
            violations.extend(bgp::bfd_back_up(&lab, BGP_SETTLE));
            bgp_checked = true;
        }
        if let (None, Some(ip)) = (recovery, watched) {
            recovery = first_answer(
                &L2Probe::new(&lab),
                ip,
                injected_at,
                Instant::now() + RECOVERY_LIMIT,
            );
        }
        let probe = L2Probe::new(&lab);
        if let (None, Some(ip)) = (recovery, watched) {
            violations.push(Violation {
                invariant: 4,
                what: format!("{ip} did not answer within {RECOVERY_LIMIT:?} of the heal"),
            });
        }
        let (now_owners, found) = invariants::single_eligible_answerer(&probe, &services, SETTLE);
        violations.extend(found);
        violations.extend(invariants::clients_follow(
            &probe,
            &now_owners,
            options.client_follows_within,
        ));
        violations.extend(invariants::addresses_kept(&probe, &services));
        violations.extend(invariants::addresses_kept(&probe, &bgp_services));
        violations.extend(invariants::nothing_crashed(&lab, &processes));
        if !bgp_checked {
            violations
                .extend(bgp::router_has_the_eligible_next_hops(&lab, &bgp_services, BGP_SETTLE).1);
        }
        report.checks += 5;
        owners = now_owners;
        let at = started.elapsed().as_secs_f64();
        report.samples.extend(
            invariants::sample_processes(&lab, &processes)
                .into_iter()
                .map(|s| (at, s)),
        );
        let record = FaultRecord {
            step,
            nodes: faulted,
            recovery,
            dual_answerers,
            violations,
        };
        if !record.violations.is_empty() {
            print_violation(
                options,
                &lab,
                &report.faults,
                &record.violations,
                injected_wall,
            );
        }
        report.faults.push(record);
    }
    // At the end: the status objects say what the wire says (no orphan ServiceL2Status).
    report.at_end =
        invariants::statuses_match_the_wire(&L2Probe::new(&lab), &services, &owners, SETTLE);
    report.checks += 1;
    if !report.at_end.is_empty() {
        print_violation(
            options,
            &lab,
            &report.faults,
            &report.at_end,
            std::time::SystemTime::now() - SETTLE,
        );
    }
    report.path = write_report(options, &report)?;
    eprintln!("chaos: report in {}", report.path.display());
    // The lab (and any partition table, with its namespaces) goes on drop.
    Ok(Some(report))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The report as Markdown.
pub fn render(options: &ChaosOptions, report: &Report) -> String {
    let mut text = format!(
        "# Chaos run, seed {}\n\n`{}`\n\n{} faults, {} invariant checks, {} violations.\n\n",
        options.seed,
        options.replay_command(),
        report.faults.len(),
        report.checks,
        report.violations().count()
    );
    text.push_str(
        "| fault | injected | with a recovery time | recovery p50 | p99 | max |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    let mut by_kind: BTreeMap<FaultKind, (usize, Vec<Duration>)> = BTreeMap::new();
    for record in &report.faults {
        let entry = by_kind.entry(record.step.kind).or_default();
        entry.0 += 1;
        entry.1.extend(record.recovery);
    }
    for (kind, (count, mut times)) in by_kind {
        times.sort();
        let cell =
            |d: Option<Duration>| d.map_or("—".to_string(), |d| format!("{} ms", d.as_millis()));
        let has = !times.is_empty();
        writeln!(
            text,
            "| {kind} | {count} | {} | {} | {} | {} |",
            times.len(),
            cell(has.then(|| percentile(&times, 0.5))),
            cell(has.then(|| percentile(&times, 0.99))),
            cell(times.last().copied()),
        )
        .ok();
    }
    text.push_str(RECOVERY_MEANS);
    let windows: Vec<String> = report
        .faults
        .iter()
        .filter(|f| f.step.kind == FaultKind::MembershipPartition)
        .map(|f| match f.dual_answerers {
            Some(window) => format!("{} ms", window.as_millis()),
            None => "none seen".to_string(),
        })
        .collect();
    if !windows.is_empty() {
        writeln!(
            text,
            "\nTwo MACs answering for one address during a membership partition (by design \
             until fencing exists; first to last sighting, 1 s probes): {}.",
            windows.join(", ")
        )
        .ok();
    }
    text.push_str("\n## Violations\n\n");
    let mut any = false;
    for record in &report.faults {
        for violation in &record.violations {
            any = true;
            writeln!(
                text,
                "- after #{} ({} on {:?}): {violation}",
                record.step.index, record.step.kind, record.nodes
            )
            .ok();
        }
    }
    for violation in &report.at_end {
        any = true;
        writeln!(text, "- at the end of the run: {violation}").ok();
    }
    if !any {
        text.push_str("None.\n");
    }
    text.push_str(
        "\n## Resources\n\nSlope over the run, per process (one pid: a restarted process starts a new series).\n\n| process | pid | samples | RSS first → last | RSS slope | fds first → last | fd slope |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut series: BTreeMap<(&str, i32), Vec<(f64, &invariants::ProcessSample)>> = BTreeMap::new();
    for (at, sample) in &report.samples {
        series
            .entry((sample.name.as_str(), sample.pid))
            .or_default()
            .push((*at, sample));
    }
    for ((name, pid), points) in series {
        let minutes = |p: &(f64, &invariants::ProcessSample)| p.0 / 60.0;
        let rss: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (minutes(p), p.1.rss_kib as f64))
            .collect();
        let fds: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (minutes(p), p.1.fds as f64))
            .collect();
        let (first, last) = (
            (points[0].1.rss_kib, points[0].1.fds),
            (
                points[points.len() - 1].1.rss_kib,
                points[points.len() - 1].1.fds,
            ),
        );
        let per_minute = |s: Option<f64>, unit: &str| {
            s.map_or("—".to_string(), |s| format!("{s:+.1} {unit}/min"))
        };
        writeln!(
            text,
            "| {name} | {pid} | {} | {} → {} KiB | {} | {} → {} | {} |",
            points.len(),
            first.0,
            last.0,
            per_minute(invariants::slope(&rss), "KiB"),
            first.1,
            last.1,
            per_minute(invariants::slope(&fds), "fds"),
        )
        .ok();
    }
    text
}

fn write_report(options: &ChaosOptions, report: &Report) -> anyhow::Result<PathBuf> {
    let dir = paths::target_dir()
        .join("chaos")
        .join(options.seed.to_string());
    std::fs::create_dir_all(&dir)?;
    let mut text = render(options, report);
    match plot_recovery(&dir.join(RECOVERY_PLOT), options, report) {
        Ok(()) => writeln!(
            text,
            "\n## Recovery times\n\n![Recovery time per fault kind]({RECOVERY_PLOT})"
        )
        .ok(),
        Err(crate::plot::PlotError::Empty) => None,
        Err(error) => return Err(error.into()),
    };
    let path = dir.join("report.md");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// What the recovery column measures, per kind of fault (in the report, after the table).
pub const RECOVERY_MEANS: &str = "\nRecovery, for a layer2 fault: from the injection until an \
     address the faulted node answered for answers again, on the wire (ARP from the client every \
     50 ms). For BGP faults, at the router (its RIB read every 100 ms): `bfd-loss`, from the \
     injection until the node's next hops are gone; `bgp-session-reset`, from the reset until \
     they are back; `router-restart`, from the restart until every eligible next hop is back. \
     `controller-failover`: from the leader's kill until the standby holds the Lease (read every \
     250 ms).\n";

/// The report's plot, beside `report.md`.
pub const RECOVERY_PLOT: &str = "recovery.png";

/// Recovery time per fault kind, as box plots with every measurement beside its box.
fn plot_recovery(
    path: &std::path::Path,
    options: &ChaosOptions,
    report: &Report,
) -> Result<(), crate::plot::PlotError> {
    let mut by_kind: BTreeMap<FaultKind, Vec<f64>> = BTreeMap::new();
    for record in &report.faults {
        if let Some(recovery) = record.recovery {
            by_kind
                .entry(record.step.kind)
                .or_default()
                .push(recovery.as_secs_f64() * 1000.0);
        }
    }
    let groups: Vec<(String, Vec<f64>)> = by_kind
        .into_iter()
        .map(|(kind, times)| (format!("{kind} ({})", times.len()), times))
        .collect();
    crate::plot::box_plot_ms(
        path,
        &format!(
            "Recovery after a fault, on the wire (seed {}, {} min)",
            options.seed, options.minutes
        ),
        "recovery (ms; layer2: to the first ARP answer)",
        &groups,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_manifest_has_local_and_shared_services() {
        let nodes: Vec<String> = ["node1", "node2", "node3"].map(String::from).to_vec();
        let (yaml, services) = services_manifest(6, &nodes);
        assert_eq!(services.len(), 6);
        assert_eq!(
            services[2].endpoint_nodes,
            Some(BTreeSet::from(["node1".to_string(), "node2".to_string()]))
        );
        assert!(services[0].endpoint_nodes.is_none());
        assert_eq!(yaml.matches("chaos-shared").count(), 2, "{yaml}");
        assert_eq!(yaml.matches("kind: Service\n").count(), 6);
    }

    #[test]
    fn percentiles_of_recovery_times() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&times, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&times, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&times[..1], 0.99), Duration::from_millis(1));
    }

    #[test]
    fn the_replay_command_names_every_option() {
        let options = ChaosOptions {
            minutes: 3.0,
            seed: 9,
            faults: vec![FaultKind::LinkDown],
            services: 4,
            nodes: 3,
            ..ChaosOptions::default()
        };
        assert_eq!(
            options.replay_command(),
            "cargo xtask lab chaos --seed 9 --minutes 3 --services 4 --nodes 3 --controllers 2 \
             --faults link-down"
        );
    }
}
