//! Two speaker faults reproduced end to end in the lab (root; skipped with a printed reason
//! otherwise, FAILS when `CI` is set). Only the binaries run (`TestLab::start`, so
//! `$FERROLB_SPEAKER_BIN` / `$FERROLB_CONTROLLER_BIN` or `target/debug/ferrolb-{speaker,controller}`),
//! with the real controller assigning the Service's IPs.
//!
//! 1. **A hung API server must not stop failover.** The speakers learn about a dead node from
//!    each other (the membership), so failover must not wait for the API server. Three cases in
//!    one lab ([`e2e_failover_while_the_apiserver_hangs`]; each also runs alone as an ignored
//!    test, `..._case_a` etc.): kube-apiserver SIGSTOPped for 2 s (A) or 90 s (B) before the
//!    owner's link goes down, or its port blackholed with nftables in the control plane's
//!    namespace so that established connections hang too (C). Each time two owners fail one
//!    after the other, and each failover must take less than a second.
//! 2. **A resumed speaker must not leave clients on the wrong node.** The owner's speaker is
//!    frozen (SIGSTOP) until another node has taken over and the client follows it, then
//!    resumed (SIGCONT) while the client keeps sending to the Service IP: within a second the
//!    client's neighbour entry must point at the one node that answers ARP/NDP
//!    ([`e2e_resumed_speaker_moves_clients_to_the_answering_node`], 3 rounds for IPv4, 3 for
//!    IPv6).
//! 3. **A short stall must move nothing.** The owner's speaker is stopped (SIGSTOP) for 250 ms,
//!    [`STALL_ROUNDS`] times, a second apart: a speaker that does not run for that long
//!    (a VM pause, CPU starvation) is suspected, but its host check finds its socket, so it
//!    must refute in time: no speaker may declare it down, it must not have to rejoin, and it
//!    must still be the one node answering ([`e2e_short_stalls_move_nothing`]).
//!
//! Every fault is undone by a guard on drop (SIGCONT, nft table deleted, background ping
//! killed), also when an assertion panics; the lab is torn down by `TestLab`. The two tests
//! take turns (a lock), so that two labs on a small machine do not distort the timings.
//!
//! Run (as root): `cargo test -p ferrolb-tests --test e2e_speaker_faults -- --nocapture --test-threads=1`;
//! one case alone: `... -- --ignored --nocapture e2e_failover_while_the_apiserver_hangs_case_c`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ferrolb_tests::demo::bind_service_ips_on_lo;
use ferrolb_tests::harness::TestLab;
use ferrolb_tests::l2probe::{self, L2Probe, NeighbourEntry, manifest};
use ferrolb_tests::netlab::netns;

const SERVICE: &str = "web";
/// A failover must make the Service IP reachable again within this.
const FAILOVER_LIMIT: Duration = Duration::from_secs(1);
/// How long a failover is looked for (API server still hung) before it counts as missing.
const FAILOVER_WATCH: Duration = Duration::from_secs(5);
/// How long the lab may take to settle after a fault is undone (membership, one answerer).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// Fault 2: how long the frozen owner's node may take to be replaced.
const TAKEOVER_WAIT: Duration = Duration::from_secs(3);
/// Fault 2: the client must be on the answering node this long after SIGCONT.
const RESUME_WINDOW: Duration = Duration::from_secs(1);
/// Fault 2: and stay there for this long.
const STAYS_FOR: Duration = Duration::from_secs(2);
/// Fault 2: rounds per address family.
const ROUNDS: usize = 3;
/// Fault 3: how long the owner's speaker is stopped each time, and how often.
const SHORT_STALL: Duration = Duration::from_millis(250);
const STALL_ROUNDS: usize = 20;
/// The API server's port (in the control plane's namespace).
const APISERVER_PORT: u16 = 6443;
/// The nftables table that blackholes it.
const BLACKHOLE_TABLE: &str = "ferrolb-e2e-blackhole";

/// One lab at a time: the failover timings are only meaningful on an otherwise idle machine.
fn one_lab_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `signal` to `pid`; panics if it cannot be delivered.
fn send_signal(pid: i32, signal: libc::c_int, what: &str) {
    assert!(pid > 1, "{what}: bad pid {pid}");
    // SAFETY: kill(2) has no memory-safety preconditions; pid > 1 targets one process.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}) ({what}): {}",
        std::io::Error::last_os_error()
    );
}

/// The pool, L2Advertisement and dual-stack Service `web` with a ready endpoint on every node,
/// once the speakers have their membership key and see each other; returns the Service's IPs
/// (assigned by the controller).
fn set_up_service(probe: &L2Probe<'_>) -> (Ipv4Addr, Ipv6Addr) {
    probe.wait_for_membership_secret();
    probe.wait_for_members(3, Duration::from_secs(30));
    let nodes: Vec<String> = probe
        .lab()
        .netlab()
        .topology
        .nodes()
        .map(|n| n.name.clone())
        .collect();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    probe.apply("svc", &manifest(SERVICE, false, &nodes));
    let (v4, v6) = probe.service_ips(SERVICE, l2probe::ASSIGN_TIMEOUT);
    eprintln!("Service default/{SERVICE}: {v4}, {v6} (assigned by the controller)");
    (v4, v6)
}

/// Waits until every speaker sees 3 members and exactly one node answers ARP for `v4` and NDP
/// for `v6` (asked from the client); returns the node answering for `v4`.
fn converge(probe: &L2Probe<'_>, v4: Ipv4Addr, v6: Ipv6Addr) -> String {
    let client = probe.client_ns();
    probe.wait_for_members(3, CONVERGE_TIMEOUT);
    let mac = probe.wait_single_answerer_from(&client, IpAddr::V4(v4), CONVERGE_TIMEOUT);
    probe.wait_single_answerer_from(&client, IpAddr::V6(v6), CONVERGE_TIMEOUT);
    probe.node_of_mac(&mac)
}

/// The speaker log marks of every node (see [`L2Probe::speaker_log_mark`]).
fn log_marks(probe: &L2Probe<'_>) -> Vec<(String, u64)> {
    probe
        .lab()
        .netlab()
        .topology
        .nodes()
        .map(|n| (n.name.clone(), probe.speaker_log_mark(&n.name)))
        .collect()
}

/// What the speakers of `nodes` logged since `marks`, one indented line each, for a failure
/// message (the membership logs "member down" by itself; "announcing" comes from the pass).
fn logged_since(probe: &L2Probe<'_>, marks: &[(String, u64)], nodes: &[&str]) -> String {
    let mut out = String::new();
    for (node, mark) in marks.iter().filter(|(n, _)| nodes.contains(&n.as_str())) {
        for line in probe.speaker_log_since(node, *mark) {
            let _ = write!(out, "\n      {node}: {line}");
        }
    }
    if out.is_empty() {
        out.push_str("\n      (nothing)");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Fault 1: a hung API server stops failover.

/// How the API server is made to hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hang {
    /// `kill -STOP` kube-apiserver: connections stay up, nothing is answered.
    Sigstop,
    /// nftables drops every packet to its port in the control plane's namespace (input), so new
    /// connections cannot be made and established ones hang.
    Blackhole,
}

/// One case of fault 1.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    hang: Hang,
    /// How long the API server has hung when the first owner fails.
    hung_before_cut: Duration,
}

const CASE_A: Case = Case {
    name: "case A (kube-apiserver SIGSTOPped 2 s before the first failure)",
    hang: Hang::Sigstop,
    hung_before_cut: Duration::from_secs(2),
};
const CASE_B: Case = Case {
    name: "case B (kube-apiserver SIGSTOPped 90 s before the first failure)",
    hang: Hang::Sigstop,
    hung_before_cut: Duration::from_secs(90),
};
const CASE_C: Case = Case {
    name: "case C (API server port blackholed with nft 5 s before the first failure)",
    hang: Hang::Blackhole,
    hung_before_cut: Duration::from_secs(5),
};

/// What the test did to the API server, undone on drop (also when the test panics): SIGCONT
/// (always: harmless if it was never stopped), and the blackhole table deleted.
struct ApiServerHang {
    pid: i32,
    cp_ns: String,
    ruleset: std::path::PathBuf,
    blackholed: bool,
}

impl ApiServerHang {
    fn new(lab: &TestLab) -> ApiServerHang {
        let (_, apiserver) = lab.control_plane().pids();
        let pid =
            apiserver.expect("no kube-apiserver pid file in the control plane's run directory");
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(
            comm.trim(),
            "kube-apiserver",
            "pid {pid} is not kube-apiserver"
        );
        ApiServerHang {
            pid,
            cp_ns: lab.netlab().topology.control_plane_ns(),
            ruleset: lab.run_dir().join("apiserver-blackhole.nft"),
            blackholed: false,
        }
    }

    fn start(&mut self, hang: Hang) {
        match hang {
            Hang::Sigstop => send_signal(self.pid, libc::SIGSTOP, "stop kube-apiserver"),
            Hang::Blackhole => {
                let rules = format!(
                    "table inet {BLACKHOLE_TABLE} {{\n  chain input {{\n    type filter hook input priority filter - 10; policy accept;\n    tcp dport {APISERVER_PORT} drop\n  }}\n}}\n"
                );
                fs::write(&self.ruleset, rules).expect("writing the blackhole ruleset");
                // Flagged first: a half-applied ruleset is removed too.
                self.blackholed = true;
                let out = netns::exec(&self.cp_ns, "nft")
                    .arg("-f")
                    .arg(&self.ruleset)
                    .output()
                    .expect("running nft");
                assert!(
                    out.status.success(),
                    "nft -f {} in {}: {}",
                    self.ruleset.display(),
                    self.cp_ns,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Resumes the API server and removes the blackhole.
    fn stop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid was checked in `new`.
        unsafe {
            libc::kill(self.pid, libc::SIGCONT);
        }
        if self.blackholed {
            let out = netns::exec(&self.cp_ns, "nft")
                .args(["delete", "table", "inet", BLACKHOLE_TABLE])
                .output();
            match out {
                Ok(out) if out.status.success() => self.blackholed = false,
                Ok(out) => eprintln!(
                    "removing nft table {BLACKHOLE_TABLE} in {}: {}",
                    self.cp_ns,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(err) => eprintln!("removing nft table {BLACKHOLE_TABLE}: {err}"),
            }
        }
    }
}

impl Drop for ApiServerHang {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cases` one after the other in one lab; fails with every case's failures at the end.
fn failover_while_the_apiserver_hangs(test: &str, cases: &[Case]) {
    let _serial = one_lab_at_a_time();
    let Some(lab) = TestLab::start(test, 3).unwrap() else {
        return;
    };
    let probe = L2Probe::new(&lab);
    let (v4, v6) = set_up_service(&probe);
    let mut failures = Vec::new();
    for case in cases {
        failures.extend(run_case(&probe, case, v4, v6));
    }
    assert!(
        failures.is_empty(),
        "{test}: failover while the API server hangs:\n  {}",
        failures.join("\n  ")
    );
}

/// One case: the API server hangs, the owner of `v4` fails, then the node that took over fails
/// too; each failover must take less than [`FAILOVER_LIMIT`]. Returns the failures.
fn run_case(probe: &L2Probe<'_>, case: &Case, v4: Ipv4Addr, v6: Ipv6Addr) -> Vec<String> {
    let lab = probe.lab();
    let name = case.name;
    let owner = converge(probe, v4, v6);
    eprintln!("{name}: {v4} answered by {owner}; the API server hangs now");
    let mut hang = ApiServerHang::new(lab);
    hang.start(case.hang);
    let hung_at = Instant::now();
    // The scenario: the API server has been unresponsive this long when a node dies (the
    // speakers' requests started meanwhile hang with it).
    std::thread::sleep(case.hung_before_cut);

    let mut failures = Vec::new();
    let mut cut: Vec<String> = Vec::new();
    let mut current = owner;
    for step in ["first", "second"] {
        let primed = probe.prime_neighbour(v4);
        if primed.as_deref() != Some(probe.mac_of(&current).as_str()) {
            failures.push(format!(
                "{name}, {step} failure: the client's neighbour entry for {v4} is {primed:?}, not \
                 {current}'s MAC, before cutting {current} off"
            ));
            break;
        }
        let marks = log_marks(probe);
        let failed_at = Instant::now();
        lab.netlab().set_port(&current, false).unwrap();
        cut.push(current.clone());
        let hung_for = hung_at.elapsed();
        let result = probe.measure_failover(v4, &current, failed_at, FAILOVER_WATCH);
        let survivors: Vec<&str> = marks
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !cut.iter().any(|c| c == n))
            .collect();
        match result {
            Err(why) => {
                let logged = logged_since(probe, &marks, &survivors);
                eprintln!(
                    "{name}, {step} failure: {current} cut off (API server hung for \
                     {hung_for:.1?}): NO failover: {why}; the other speakers logged since the \
                     cut:{logged}"
                );
                failures.push(format!(
                    "{name}, {step} failure ({current} cut off, API server hung for \
                     {hung_for:.1?}): {why}; the other speakers logged since the cut:{logged}"
                ));
                break;
            }
            Ok(failover) => {
                let took = failover.reachable_after();
                eprintln!(
                    "{name}, {step} failure: {current} cut off (API server hung for \
                     {hung_for:.1?}) -> {} after {took:?} (neighbour entry moved {:?}, first ARP \
                     answer {:?})",
                    failover.new_owner, failover.neighbour_moved, failover.answered
                );
                if took >= FAILOVER_LIMIT {
                    failures.push(format!(
                        "{name}, {step} failure ({current} cut off, API server hung for \
                         {hung_for:.1?}): failover to {} took {took:?} (limit \
                         {FAILOVER_LIMIT:?}); the other speakers logged since the cut:{}",
                        failover.new_owner,
                        logged_since(probe, &marks, &survivors)
                    ));
                }
                let answers = probe.arp_macs(v4, 1);
                if answers != BTreeSet::from([failover.new_mac.clone()]) {
                    failures.push(format!(
                        "{name}, {step} failure: after the failover to {} these MACs answer for \
                         {v4}: {answers:?}",
                        failover.new_owner
                    ));
                }
                current = failover.new_owner;
            }
        }
    }
    hang.stop();
    eprintln!(
        "{name}: API server resumed after {:.1?}; reconnecting {}",
        hung_at.elapsed(),
        cut.join(", ")
    );
    drop(hang);
    for node in &cut {
        lab.netlab().set_port(node, true).unwrap();
    }
    let settled = Instant::now();
    let owner = converge(probe, v4, v6);
    eprintln!(
        "{name}: converged {:.1?} after reconnecting (3 members everywhere, {owner} the only \
         node answering for {v4}, one node for {v6})",
        settled.elapsed()
    );
    failures
}

#[test]
fn e2e_failover_while_the_apiserver_hangs() {
    failover_while_the_apiserver_hangs(
        "e2e_failover_while_the_apiserver_hangs",
        &[CASE_A, CASE_B, CASE_C],
    );
}

#[test]
#[ignore = "part of e2e_failover_while_the_apiserver_hangs; run alone with --ignored to iterate"]
fn e2e_failover_while_the_apiserver_hangs_case_a() {
    failover_while_the_apiserver_hangs("e2e_failover_while_the_apiserver_hangs_case_a", &[CASE_A]);
}

#[test]
#[ignore = "part of e2e_failover_while_the_apiserver_hangs; run alone with --ignored to iterate"]
fn e2e_failover_while_the_apiserver_hangs_case_b() {
    failover_while_the_apiserver_hangs("e2e_failover_while_the_apiserver_hangs_case_b", &[CASE_B]);
}

#[test]
#[ignore = "part of e2e_failover_while_the_apiserver_hangs; run alone with --ignored to iterate"]
fn e2e_failover_while_the_apiserver_hangs_case_c() {
    failover_while_the_apiserver_hangs("e2e_failover_while_the_apiserver_hangs_case_c", &[CASE_C]);
}

// ---------------------------------------------------------------------------------------------
// Fault 2: a resumed speaker leaves clients on the wrong node.

/// `ping -i 0.05` from the client to a Service IP for as long as it lives (killed on drop), so
/// that the client keeps sending to whatever its neighbour entry says.
struct BackgroundPing {
    child: Child,
    ip: IpAddr,
}

impl BackgroundPing {
    fn start(client_ns: &str, ip: IpAddr) -> BackgroundPing {
        let family = if ip.is_ipv6() { "-6" } else { "-4" };
        let child = netns::exec(client_ns, "ping")
            .args([family, "-n", "-q", "-i", "0.05"])
            .arg(ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ping in the client");
        BackgroundPing { child, ip }
    }

    fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("waiting for ping");
        assert!(
            status.is_none(),
            "the background ping to {} exited: {status:?}",
            self.ip
        );
    }
}

impl Drop for BackgroundPing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A speaker frozen with SIGSTOP; SIGCONT on drop (always: harmless if already resumed).
struct FrozenSpeaker {
    pid: i32,
}

impl FrozenSpeaker {
    fn freeze(probe: &L2Probe<'_>, node: &str) -> FrozenSpeaker {
        let pid = probe.speaker_pid(node);
        assert!(
            ferrolb_tests::process::is_alive(pid),
            "{node}'s speaker (pid {pid}) is not running"
        );
        send_signal(pid, libc::SIGSTOP, "freeze the speaker");
        FrozenSpeaker { pid }
    }

    fn resume(&self) {
        send_signal(self.pid, libc::SIGCONT, "resume the speaker");
    }
}

impl Drop for FrozenSpeaker {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid was checked in `freeze`.
        unsafe {
            libc::kill(self.pid, libc::SIGCONT);
        }
    }
}

fn describe(entry: &Option<NeighbourEntry>) -> String {
    entry
        .as_ref()
        .map_or_else(|| "(no entry)".to_string(), ToString::to_string)
}

/// One round: freeze the owner of `ip`, let another node take over and the client follow it,
/// resume the owner and check, watching only the client's neighbour cache, that the client is
/// on the one answering node within [`RESUME_WINDOW`] and stays there. Returns the failure.
///
/// Who answers is always asked from the router's namespace, never from the client: replies to
/// the client's own probes (and the frozen speaker's late replies to probes it queued while
/// stopped) would update the client's neighbour entry themselves, so the test could not fail.
/// For the same reason the client's entry is resolved afresh (by its ping) before each freeze:
/// a fresh REACHABLE entry sends no unicast probes to the frozen node.
fn resume_round(probe: &L2Probe<'_>, ip: IpAddr, round: usize) -> Option<String> {
    let tag = format!("{ip} round {round}");
    let asker = probe.lab().netlab().topology.router_ns();
    probe.wait_for_members(3, CONVERGE_TIMEOUT);
    let owner_mac = probe.wait_single_answerer_from(&asker, ip, CONVERGE_TIMEOUT);
    let owner = probe.node_of_mac(&owner_mac);
    probe.forget_neighbour(ip);
    l2probe::eventually(
        &format!("{tag}: the client's ping resolves {ip} to {owner} ({owner_mac})"),
        Duration::from_secs(10),
        || probe.neighbour_mac(ip).as_deref() == Some(owner_mac.as_str()),
    );

    let frozen = FrozenSpeaker::freeze(probe, &owner);
    let frozen_at = Instant::now();
    // Another node takes over: its gratuitous ARP / unsolicited NA moves the client's entry.
    let interim_mac = loop {
        if let Some(mac) = probe.neighbour_mac(ip)
            && mac != owner_mac
        {
            break mac;
        }
        if frozen_at.elapsed() > TAKEOVER_WAIT {
            return Some(format!(
                "{tag}: {owner}'s speaker frozen, but in {TAKEOVER_WAIT:?} no other node took \
                 over (client's entry: {})",
                describe(&probe.neighbour_entry(ip))
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let interim = probe.node_of_mac(&interim_mac);
    let took_over = frozen_at.elapsed();
    let answering = probe.answering_macs_from(&asker, ip, 1);
    if answering != BTreeSet::from([interim_mac.clone()]) {
        return Some(format!(
            "{tag}: with {owner}'s speaker frozen, the client moved to {interim} but these MACs \
             answer for {ip}: {answering:?}"
        ));
    }

    let marks = log_marks(probe);
    frozen.resume();
    let resumed_at = Instant::now();
    let frozen_for = resumed_at - frozen_at;
    // The window: only the client's neighbour cache is read, nothing is sent.
    let mut timeline: Vec<(Duration, Option<NeighbourEntry>)> = Vec::new();
    while resumed_at.elapsed() < RESUME_WINDOW {
        let entry = probe.neighbour_entry(ip);
        if timeline.last().map(|(_, last)| last) != Some(&entry) {
            timeline.push((resumed_at.elapsed(), entry));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let at_end = timeline.last().and_then(|(_, e)| e.clone());
    let mut seen = String::new();
    for (at, entry) in &timeline {
        let _ = write!(seen, " +{}ms {};", at.as_millis(), describe(entry));
    }
    let answering = probe.answering_macs_from(&asker, ip, 3);
    let names: Vec<String> = answering.iter().map(|m| probe.node_of_mac(m)).collect();
    eprintln!(
        "{tag}: {owner} frozen, {interim} took over after {took_over:?}; {owner} resumed after \
         {frozen_for:.1?} frozen; client's entry in the {RESUME_WINDOW:?} after SIGCONT:{seen} \
         answering now: {names:?}"
    );
    let [answerer] = names.as_slice() else {
        return Some(format!(
            "{tag}: after {owner}'s speaker resumed, {} nodes answer for {ip}: {names:?}",
            names.len()
        ));
    };
    let answerer_mac = probe.mac_of(answerer);
    if at_end.as_ref().and_then(|e| e.mac.as_deref()) != Some(answerer_mac.as_str()) {
        return Some(format!(
            "{tag}: {RESUME_WINDOW:?} after {owner}'s speaker resumed, the client's neighbour \
             entry is {} ({}) but only {answerer} ({answerer_mac}) answers for {ip} (interim \
             owner {interim}; entry during the window:{seen}); the two speakers logged since \
             SIGCONT:{}",
            describe(&at_end),
            at_end
                .as_ref()
                .and_then(|e| e.mac.as_deref())
                .map_or_else(|| "no node".to_string(), |m| probe.node_of_mac(m)),
            logged_since(probe, &marks, &[owner.as_str(), interim.as_str()]),
        ));
    }
    // It stays so.
    let watch_from = Instant::now();
    while watch_from.elapsed() < STAYS_FOR {
        let entry = probe.neighbour_entry(ip);
        if entry.as_ref().and_then(|e| e.mac.as_deref()) != Some(answerer_mac.as_str()) {
            return Some(format!(
                "{tag}: the client's entry left {answerer}: {}",
                describe(&entry)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let still = probe.answering_macs_from(&asker, ip, 1);
    if still != BTreeSet::from([answerer_mac.clone()]) {
        return Some(format!(
            "{tag}: {answerer} answered for {ip} right after the resume, then {still:?}"
        ));
    }
    None
}

#[test]
fn e2e_resumed_speaker_moves_clients_to_the_answering_node() {
    let test = "e2e_resumed_speaker_moves_clients_to_the_answering_node";
    let _serial = one_lab_at_a_time();
    let Some(lab) = TestLab::start(test, 3).unwrap() else {
        return;
    };
    let probe = L2Probe::new(&lab);
    let (v4, v6) = set_up_service(&probe);
    // As kube-proxy would: every node accepts traffic for the IPs (so the client's ping gets
    // answers wherever its neighbour entry points) but never answers ARP/NDP for them.
    let ips = [v4.to_string(), v6.to_string()];
    let topology = &lab.netlab().topology;
    for node in topology.nodes() {
        bind_service_ips_on_lo(&topology.ns(&node.name), &ips).unwrap();
    }
    let mut failures = Vec::new();
    for ip in [IpAddr::V4(v4), IpAddr::V6(v6)] {
        let mut ping = BackgroundPing::start(&probe.client_ns(), ip);
        for round in 1..=ROUNDS {
            ping.assert_running();
            failures.extend(resume_round(&probe, ip, round));
        }
    }
    assert!(
        failures.is_empty(),
        "{test}: the client is not on the answering node after a frozen speaker resumed:\n  {}",
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Fault 3: a short stall of the owner's speaker.

#[test]
fn e2e_short_stalls_move_nothing() {
    let test = "e2e_short_stalls_move_nothing";
    let _serial = one_lab_at_a_time();
    let Some(lab) = TestLab::start(test, 3).unwrap() else {
        return;
    };
    let probe = L2Probe::new(&lab);
    let (v4, v6) = set_up_service(&probe);
    let owner = converge(&probe, v4, v6);
    // Each IP has its own owner (the v4 one is stalled); each must keep it.
    let client = probe.client_ns();
    let owners: Vec<(IpAddr, String)> = [IpAddr::V4(v4), IpAddr::V6(v6)]
        .into_iter()
        .map(|ip| {
            (
                ip,
                probe.wait_single_answerer_from(&client, ip, CONVERGE_TIMEOUT),
            )
        })
        .collect();
    // Steady state: the host checks' baselines are done long before this.
    std::thread::sleep(Duration::from_secs(2));
    let marks = log_marks(&probe);
    for _ in 0..STALL_ROUNDS {
        let frozen = FrozenSpeaker::freeze(&probe, &owner);
        std::thread::sleep(SHORT_STALL);
        frozen.resume();
        drop(frozen);
        std::thread::sleep(Duration::from_secs(1));
    }
    let nodes: Vec<String> = lab
        .netlab()
        .topology
        .nodes()
        .map(|n| n.name.clone())
        .collect();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let logged = logged_since(&probe, &marks, &nodes);
    for symptom in [
        "member down",
        "suspicion confirmed",
        "we were declared down",
    ] {
        assert!(
            !logged.contains(symptom),
            "{test}: {owner}'s speaker stopped {STALL_ROUNDS} times for {SHORT_STALL:?}, and a \
             speaker logged \"{symptom}\":{logged}"
        );
    }
    for (ip, owner_mac) in owners {
        let answering = probe.answering_macs_from(&client, ip, 3);
        assert_eq!(
            answering,
            BTreeSet::from([owner_mac.clone()]),
            "{test}: after the stalls only {} ({owner_mac}) may answer for {ip}",
            probe.node_of_mac(&owner_mac)
        );
    }
}
