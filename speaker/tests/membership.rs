//! Membership on 127.0.0.1 (no root needed): convergence, silent death, graceful leave, wrong
//! Secret, restart, any start order, partition. These tests assert behaviour only (who is in
//! which live set, and why); every wait is bounded by [`DEADLINE`], a hang guard, not a speed
//! target. How fast it all happens (detection, leave, rejoin, convergence) is measured by the
//! benchmarks in `membership_detection.rs` (`-- --ignored`), recorded in docs/benchmarks.md.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use ferrolb_speaker::membership::{LiveSet, Membership, MembershipConfig, MembershipStats, Timers};
use ferrolb_speaker::metrics::Metrics;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

const SECRET: &[u8] = b"shared secret from the memberlist Secret";

/// Upper bound on any wait for the membership to reach a state. It only turns a hang into a
/// failure: with the default timers each of these waits normally ends within a second or two.
const DEADLINE: Duration = Duration::from_secs(30);

struct Node {
    name: String,
    handle: Membership,
    live: watch::Receiver<LiveSet>,
}

async fn start_with(name: &str, secret: &[u8], timers: &Timers) -> Node {
    let (handle, live) = Membership::start(MembershipConfig {
        node: name.to_string(),
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise: "127.0.0.1:0".parse().unwrap(),
        secret: secret.to_vec(),
        timers: timers.clone(),
        probe_rtt: None,
    })
    .await
    .expect("membership starts");
    Node {
        name: name.to_string(),
        handle,
        live,
    }
}

async fn start(name: &str, secret: &[u8]) -> Node {
    start_with(name, secret, &Timers::default()).await
}

async fn cluster_with(names: &[&str], timers: &Timers) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(start_with(name, SECRET, timers).await);
    }
    let seeds: Vec<SocketAddr> = nodes.iter().map(|n| n.handle.advertise_addr()).collect();
    for node in &nodes {
        node.handle.set_seeds(seeds.clone());
    }
    nodes
}

async fn cluster(names: &[&str]) -> Vec<Node> {
    cluster_with(names, &Timers::default()).await
}

fn names(nodes: &[Node]) -> LiveSet {
    nodes.iter().map(|n| n.name.clone()).collect()
}

fn seeds(nodes: &[Node]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.handle.advertise_addr()).collect()
}

/// Waits until every node's live set equals `expected` (at most [`DEADLINE`]).
async fn all_see(nodes: &[Node], expected: &LiveSet) {
    for node in nodes {
        let mut live = node.live.clone();
        let reached = tokio::time::timeout(DEADLINE, live.wait_for(|set| set == expected)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "{} sees {:?}, expected {:?} (waited {DEADLINE:?})",
            node.name,
            *node.live.borrow(),
            expected
        );
    }
}

/// Default timers but a suspect stays suspect (hence live) for an hour: within a test, a member
/// can only disappear from a live set because it said it leaves.
/// Watches every node's live set for `window`: none may change meanwhile.
async fn assert_no_live_set_moves(nodes: &[Node], window: Duration) {
    let mut watchers: Vec<_> = nodes.iter().map(|n| n.live.clone()).collect();
    for w in &mut watchers {
        w.mark_unchanged();
    }
    tokio::time::sleep(window).await;
    for (node, w) in nodes.iter().zip(&watchers) {
        assert!(
            !w.has_changed().unwrap(),
            "{}'s live set moved: {:?}",
            node.name,
            *w.borrow()
        );
    }
}

fn without_failure_detection() -> Timers {
    Timers {
        suspect_to_down: Duration::from_secs(3600),
        host_check_timeout: None,
        ..Timers::default()
    }
}

/// A suspect stays suspect for an hour unless its host check confirms it dead: within a test,
/// only a host check can declare a member down early.
fn only_host_checks_detect() -> Timers {
    Timers {
        suspect_to_down: Duration::from_secs(3600),
        ..Timers::default()
    }
}

/// Waits until every node holds every other as alive and trusts its host checks (the baseline
/// check after it came up; on loopback it answers at once, so a short wait suffices).
async fn settle_host_checks(nodes: &[Node], everyone: &LiveSet) {
    all_see(nodes, everyone).await;
    for node in nodes {
        stats_until(node, |s| s.members_alive == everyone.len()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_declared_down_by_its_host_check_before_the_suspicion_timeout() {
    let mut nodes = cluster_with(&["a", "b", "c", "d"], &only_host_checks_detect()).await;
    settle_host_checks(&nodes, &names(&nodes)).await;
    // Dropping the handle closes c's sockets, as a killed process's are: c's address now
    // refuses connections, which the host checks of the others find.
    let dead = nodes.remove(2);
    drop(dead.handle);
    all_see(&nodes, &names(&nodes)).await;
    let confirmed: u64 = nodes
        .iter()
        .map(|n| n.handle.stats().members_confirmed_down)
        .sum();
    assert!(confirmed >= 1, "a host check declared c down");
}

/// A member whose process exists but does not run: its runtime lives on its own thread, which
/// stops driving it for `stall` (its sockets stay open, so its kernel queues datagrams and
/// completes TCP handshakes, as for a SIGSTOPped speaker).
struct StallableMember {
    name: String,
    live: watch::Receiver<LiveSet>,
    addr: SocketAddr,
    control: tokio::sync::mpsc::UnboundedSender<Order>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Order {
    Seeds(Vec<SocketAddr>),
    /// Block the member's only thread for this long.
    Stall(Duration),
}

impl StallableMember {
    fn start(name: &str, timers: &Timers) -> StallableMember {
        let (control, mut orders) = tokio::sync::mpsc::unbounded_channel::<Order>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (name_owned, timers) = (name.to_string(), timers.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (handle, live) = Membership::start(MembershipConfig {
                    node: name_owned,
                    bind: "127.0.0.1:0".parse().unwrap(),
                    advertise: "127.0.0.1:0".parse().unwrap(),
                    secret: SECRET.to_vec(),
                    timers,
                    probe_rtt: None,
                })
                .await
                .expect("membership starts");
                ready_tx.send((live, handle.advertise_addr())).unwrap();
                // Until the sender is dropped.
                while let Some(order) = orders.recv().await {
                    match order {
                        Order::Seeds(seeds) => handle.set_seeds(seeds),
                        // Blocking on purpose: nothing of this member runs meanwhile.
                        Order::Stall(stall) => std::thread::sleep(stall),
                    }
                }
            });
        });
        let (live, addr) = ready_rx.recv().unwrap();
        StallableMember {
            name: name.to_string(),
            live,
            addr,
            control,
            thread: Some(thread),
        }
    }

    fn set_seeds(&self, seeds: Vec<SocketAddr>) {
        self.control.send(Order::Seeds(seeds)).unwrap();
    }

    fn stall(&self, stall: Duration) {
        self.control.send(Order::Stall(stall)).unwrap();
    }
}

impl Drop for StallableMember {
    fn drop(&mut self) {
        let (closed, _) = tokio::sync::mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.control, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// With the default timers: a member stalled for 250 ms, five times, is suspected (its probes
/// go unanswered), its host check finds its socket, and it refutes within the suspicion
/// timeout: no live set moves, and nobody tells it that it is down (it would rejoin under a
/// new identity, which the others count as a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_member_whose_host_answers_is_not_declared_down() {
    let timers = Timers::default();
    let nodes = cluster_with(&["a", "b", "c"], &timers).await;
    let stalled = StallableMember::start("s", &timers);
    let mut all = seeds(&nodes);
    all.push(stalled.addr);
    for node in &nodes {
        node.handle.set_seeds(all.clone());
    }
    stalled.set_seeds(all);
    let mut everyone = names(&nodes);
    everyone.insert(stalled.name.clone());
    all_see(&nodes, &everyone).await;
    // (The watch guard must not outlive the check: it would block s's membership task.)
    let mut own = stalled.live.clone();
    let converged = tokio::time::timeout(DEADLINE, own.wait_for(|set| *set == everyone))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(converged, "s converged");
    settle_host_checks(&nodes, &everyone).await;

    let suspected_before: u64 = nodes
        .iter()
        .map(|n| n.handle.stats().members_suspected)
        .sum();
    let mut watchers: Vec<_> = nodes.iter().map(|n| n.live.clone()).collect();
    for w in &mut watchers {
        w.mark_unchanged();
    }
    for _ in 0..5 {
        stalled.stall(Duration::from_millis(250));
        // Past the suspicion timeout of a suspicion raised at the end of the stall.
        tokio::time::sleep(timers.probe_period * 2 + timers.suspect_to_down * 2).await;
    }
    for (node, w) in nodes.iter().zip(&watchers) {
        assert!(
            !w.has_changed().unwrap(),
            "{}'s live set moved: {:?}",
            node.name,
            *w.borrow()
        );
    }
    let suspected: u64 = nodes
        .iter()
        .map(|n| n.handle.stats().members_suspected)
        .sum();
    assert!(
        suspected > suspected_before,
        "the stalls raised a suspicion (else this test proves nothing)"
    );
    for node in &nodes {
        let stats = node.handle.stats();
        assert_eq!(
            (
                stats.members_confirmed_down,
                stats.members_down,
                stats.members_restarted
            ),
            (0, 0, 0),
            "{}: the stalled member was declared down or told so: {stats:?}",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_and_five_members_converge() {
    for size in [3, 5] {
        let all: Vec<String> = (0..size).map(|i| format!("node-{i}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let nodes = cluster(&refs).await;
        all_see(&nodes, &names(&nodes)).await;
        for node in &nodes {
            let stats = node.handle.stats();
            assert_eq!(stats.members, size);
            assert!(
                stats.datagrams_in > 0 && stats.datagrams_out > 0,
                "{stats:?}"
            );
            assert_eq!(stats.auth_failures(), 0, "{stats:?}");
        }
    }
}

/// Polls `node`'s stats until `done` holds (at most [`DEADLINE`]); the last stats otherwise.
async fn stats_until(node: &Node, done: impl Fn(&MembershipStats) -> bool) -> MembershipStats {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let stats = node.handle.stats();
        if done(&stats) || tokio::time::Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The count and sum of `ferrolb_speaker_membership_probe_rtt_seconds` in `registry`.
fn probe_rtts(registry: &Registry) -> (u64, f64) {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let value = |suffix: &str| {
        let name = format!("ferrolb_speaker_membership_probe_rtt_seconds_{suffix} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name}in\n{text}"))
    };
    (value("count") as u64, value("sum"))
}

/// Every member times its direct probes (ping → ack) into its histogram; each time is at most
/// a probe period (a ping waits no longer for its ack). With nobody failing, every live member
/// is alive, none suspect; a member that dies silently is suspect on the others until the
/// suspicion timeout, which these timers make an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_timed_and_members_counted_by_state() {
    let timers = without_failure_detection();
    let mut nodes = Vec::new();
    let mut registries = Vec::new();
    for name in ["a", "b", "c"] {
        let (metrics, registry) = Metrics::new();
        let (handle, live) = Membership::start(MembershipConfig {
            node: name.to_string(),
            bind: "127.0.0.1:0".parse().unwrap(),
            advertise: "127.0.0.1:0".parse().unwrap(),
            secret: SECRET.to_vec(),
            timers: timers.clone(),
            probe_rtt: Some(metrics.membership_probe_rtt.handle()),
        })
        .await
        .expect("membership starts");
        nodes.push(Node {
            name: name.to_string(),
            handle,
            live,
        });
        registries.push(registry);
    }
    let seeds = seeds(&nodes);
    for node in &nodes {
        node.handle.set_seeds(seeds.clone());
    }
    all_see(&nodes, &names(&nodes)).await;
    for (node, registry) in nodes.iter().zip(&registries) {
        let stats = stats_until(node, |s| s.members_alive == 3 && s.members_suspect == 0).await;
        assert_eq!(
            (stats.members_alive, stats.members_suspect),
            (3, 0),
            "{}: {stats:?}",
            node.name
        );
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while probe_rtts(registry).0 == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (count, sum) = probe_rtts(registry);
        assert!(count > 0, "{} timed no probe", node.name);
        eprintln!(
            "{}: {count} probes timed, mean {:.0} µs",
            node.name,
            sum / count as f64 * 1e6
        );
        let longest = timers.probe_period.as_secs_f64() * count as f64;
        assert!(sum <= longest, "{}: {count} probes took {sum} s", node.name);
    }

    let dead = nodes.remove(2);
    drop(dead.handle); // no leave: its pings go unanswered
    for node in &nodes {
        let stats = stats_until(node, |s| s.members_suspect == 1).await;
        assert_eq!(
            (stats.members_alive, stats.members_suspect, stats.members),
            (2, 1, 3),
            "{} suspects c, which stays live until the suspicion timeout: {stats:?}",
            node.name
        );
        assert!(stats.members_suspected >= 1, "{}: {stats:?}", node.name);
        assert_eq!(stats.members_refuted, 0, "c never answered: {stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_death_is_detected() {
    let mut nodes = cluster(&["a", "b", "c", "d", "e"]).await;
    all_see(&nodes, &names(&nodes)).await;
    // Let the cluster settle (probe lists, gossip backlog) as it would be in steady state.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let dead = nodes.remove(2);
    drop(dead.handle); // no leave: the others must find out by probing
    // Exactly the dead member goes: every survivor ends up with all survivors and without c.
    all_see(&nodes, &names(&nodes)).await;
    for node in &nodes {
        assert!(
            !node.live.borrow().contains("c"),
            "{} still sees c",
            node.name
        );
        // Counted for the metrics: the others came up, c went down.
        let stats = node.handle.stats();
        assert!(
            stats.members_up >= 4 && stats.members_down >= 1,
            "{stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_is_seen_as_a_leave_not_a_failure() {
    // Failure detection is off for the length of the test, so only the leave message can
    // remove the member that leaves; a member that dies silently is the control: it stays.
    let mut nodes = cluster_with(&["a", "b", "c", "d", "e"], &without_failure_detection()).await;
    all_see(&nodes, &names(&nodes)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let silent = nodes.pop().expect("e");
    drop(silent.handle); // e: no leave
    let leaving = nodes.remove(0);
    leaving
        .handle
        .leave(DEADLINE)
        .await
        .expect("leave finishes");

    // b, c, d drop a (it left) and keep e (it is at most suspect: never declared down).
    let mut expected = names(&nodes);
    expected.insert("e".to_string());
    all_see(&nodes, &expected).await;
    for node in &nodes {
        let live = node.live.borrow();
        assert!(!live.contains("a"), "{} still sees a: {live:?}", node.name);
        assert!(
            live.contains("e"),
            "{} declared e down: {live:?}",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_cannot_join_nor_disturb() {
    let nodes = cluster(&["a", "b", "c"]).await;
    let expected = names(&nodes);
    all_see(&nodes, &expected).await;

    let intruder = start("intruder", b"not the secret").await;
    let mut seeds = seeds(&nodes);
    intruder.handle.set_seeds(seeds.clone());
    seeds.push(intruder.handle.advertise_addr());
    for node in &nodes {
        node.handle.set_seeds(seeds.clone());
    }
    // Another one claims to be "b" from another address: it must not replace b.
    let impostor = start("b", b"another wrong secret").await;
    impostor.handle.set_seeds(seeds.clone());

    // Watch every change for 2 s (two announce periods): the set must never move.
    assert_no_live_set_moves(&nodes, Duration::from_secs(2)).await;
    for node in &nodes {
        assert_eq!(*node.live.borrow(), expected);
        let stats = node.handle.stats();
        assert!(stats.rejected_bad_tag > 0, "{}: {stats:?}", node.name);
    }
    assert_eq!(
        *intruder.live.borrow(),
        BTreeSet::from(["intruder".to_string()])
    );
    assert!(intruder.handle.stats().rejected_bad_tag > 0);
    assert_eq!(intruder.handle.stats().datagrams_in, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_member_rejoins() {
    let mut nodes = cluster(&["a", "b", "c"]).await;
    let all = names(&nodes);
    all_see(&nodes, &all).await;

    // Silent death, detected, then the same node name comes back with a new boot id (and, as
    // after a Pod restart, possibly another port).
    let old = nodes.remove(2);
    let old_boot = old.handle.identity().boot;
    drop(old.handle);
    all_see(&nodes, &names(&nodes)).await;

    let restarted = start("c", SECRET).await;
    assert!(restarted.handle.identity().boot > old_boot);
    restarted.handle.set_seeds(seeds(&nodes));
    nodes.push(restarted);
    all_see(&nodes, &all).await;

    // A restart faster than detection: the new incarnation replaces the old one in place.
    let old = nodes.remove(2);
    drop(old.handle);
    let again = start("c", SECRET).await;
    again.handle.set_seeds(seeds(&nodes));
    nodes.push(again);
    all_see(&nodes, &all).await;
    // And it stays: the old identity's suspicion must not take the new one down. 2 s is many
    // times probe + suspicion (200 ms with the default timers): no live set may move meanwhile.
    assert_no_live_set_moves(&nodes, Duration::from_secs(2)).await;
    // Counted for the metrics by a and b: c and the other survivor came up, and the two old
    // incarnations of c went (the second replaced before detection: foca reports that as a
    // down and an up, or as a restart).
    for node in &nodes[..2] {
        let stats = node.handle.stats();
        assert!(
            stats.members_up >= 3 && stats.members_down + stats.members_restarted >= 2,
            "{}: {stats:?}",
            node.name
        );
    }
    for node in &nodes {
        assert_eq!(*node.live.borrow(), all, "{}", node.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_start_order_converges() {
    // Seeds point at nodes that do not exist yet; they come up one by one.
    let a = start("a", SECRET).await;
    let b_addr = {
        // Reserve addresses: start b and c later on ports known now.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.local_addr().unwrap()
    };
    a.handle.set_seeds(vec![b_addr]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (b_handle, b_live) = Membership::start(MembershipConfig {
        node: "b".into(),
        bind: b_addr,
        advertise: b_addr,
        secret: SECRET.to_vec(),
        timers: Timers::default(),
        probe_rtt: None,
    })
    .await
    .expect("b starts on the reserved port");
    // b has no seeds at all: only a's periodic announce can bring them together.
    let b = Node {
        name: "b".into(),
        handle: b_handle,
        live: b_live,
    };
    let c = start("c", SECRET).await;
    c.handle.set_seeds(vec![a.handle.advertise_addr()]);
    let nodes = vec![a, b, c];
    all_see(&nodes, &names(&nodes)).await;
}

/// A UDP relay in front of a member: others send to the relay, which forwards to the member
/// unless the sender's address is cut off. Simulates a partition on loopback without root.
struct Relay {
    addr: SocketAddr,
    blocked: std::sync::Arc<std::sync::Mutex<BTreeSet<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn new(target: SocketAddr) -> Relay {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let blocked = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let cut = blocked.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if !cut.lock().unwrap().contains(&from) {
                    let _ = socket.send_to(&buf[..len], target).await;
                }
            }
        });
        Relay {
            addr,
            blocked,
            task,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals() {
    // Each member advertises its relay's address; members send from their own socket, which
    // is what a relay sees as the source.
    let mut nodes = Vec::new();
    let mut relays = Vec::new();
    for name in ["a", "b", "c"] {
        let socket_addr = {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let relay = Relay::new(socket_addr).await;
        let (handle, live) = Membership::start(MembershipConfig {
            node: name.into(),
            bind: socket_addr,
            advertise: relay.addr,
            secret: SECRET.to_vec(),
            timers: Timers::default(),
            probe_rtt: None,
        })
        .await
        .expect("member starts on the reserved port");
        nodes.push(Node {
            name: name.into(),
            handle,
            live,
        });
        relays.push(relay);
    }
    let seeds: Vec<SocketAddr> = relays.iter().map(|r| r.addr).collect();
    for node in &nodes {
        node.handle.set_seeds(seeds.clone());
    }
    let all = names(&nodes);
    all_see(&nodes, &all).await;

    // Cut c off from a and b, both ways.
    let sockets: Vec<SocketAddr> = nodes.iter().map(|n| n.handle.local_addr()).collect();
    relays[2]
        .blocked
        .lock()
        .unwrap()
        .extend([sockets[0], sockets[1]]);
    relays[0].blocked.lock().unwrap().insert(sockets[2]);
    relays[1].blocked.lock().unwrap().insert(sockets[2]);
    let majority = LiveSet::from(["a".to_string(), "b".to_string()]);
    let alone = LiveSet::from(["c".to_string()]);
    all_see(&nodes[..2], &majority).await;
    all_see(&nodes[2..], &alone).await;

    // Heal: the periodic announcements to seeds (and to down members) bring c back.
    for relay in &relays {
        relay.blocked.lock().unwrap().clear();
    }
    all_see(&nodes, &all).await;
}
