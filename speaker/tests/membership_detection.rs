//! Failure detection round after round on 127.0.0.1: a member dies (silently: handle dropped,
//! no leave; or gracefully: `Membership::leave`), the survivors must drop exactly that member,
//! then it restarts (new boot id) and rejoins before the next round.
//!
//! * `each_member_death_is_detected_and_it_rejoins` (default test run) asserts behaviour only;
//!   its deadlines are hang guards.
//! * The `bench_*` tests are benchmarks, `#[ignore]`d: they time the same rounds (and leave and
//!   convergence), print min / median / p90 / max over the trials and never fail on a number.
//!   The speed target (the membership's share of the 500 ms failover budget) is judged from
//!   these numbers in docs/benchmarks.md `## speaker membership`, not by an assertion. Run them
//!   one at a time, so that they do not share the 2 cores:
//!
//! ```text
//! cargo test -p ferrolb-speaker --test membership_detection -- --ignored --nocapture --test-threads=1
//! ```
//!
//! (add `--release` for a release build). `FLB_BENCH_ROUNDS` overrides the 20 trials per
//! benchmark.

use std::net::SocketAddr;
use std::time::Duration;

use ferrolb_speaker::membership::{LiveSet, Membership, MembershipConfig, Timers};
use tokio::sync::watch;
use tokio::time::Instant;

const SECRET: &[u8] = b"detection benchmark secret";

/// Hang guard for every wait: detection, leave and rejoin normally take well under a second.
const DEADLINE: Duration = Duration::from_secs(30);

type Member = (Membership, watch::Receiver<LiveSet>);

async fn start(name: &str) -> Member {
    Membership::start(MembershipConfig {
        node: name.to_string(),
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise: "127.0.0.1:0".parse().unwrap(),
        secret: SECRET.to_vec(),
        timers: Timers::default(),
        probe_rtt: None,
    })
    .await
    .expect("membership starts")
}

fn seed_everyone(members: &[Member]) {
    let seeds: Vec<SocketAddr> = members.iter().map(|(m, _)| m.advertise_addr()).collect();
    for (m, _) in members {
        m.set_seeds(seeds.clone());
    }
}

fn watchers(members: &[Member]) -> Vec<watch::Receiver<LiveSet>> {
    members.iter().map(|(_, w)| w.clone()).collect()
}

/// Waits until every watcher holds `expected`; returns the time until the last one did.
/// Panics after [`DEADLINE`] (a hang, not a slow run).
async fn all_see(watchers: &[watch::Receiver<LiveSet>], expected: &LiveSet) -> Duration {
    let began = Instant::now();
    for live in watchers {
        let mut live = live.clone();
        let left = DEADLINE.saturating_sub(began.elapsed());
        let reached = tokio::time::timeout(left, live.wait_for(|s| s == expected))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            reached,
            "saw {:?}, expected {expected:?} (waited {DEADLINE:?})",
            *live.borrow()
        );
    }
    began.elapsed()
}

async fn cluster(names: &[String]) -> Vec<Member> {
    let mut members = Vec::new();
    for name in names {
        members.push(start(name).await);
    }
    seed_everyone(&members);
    let full: LiveSet = names.iter().cloned().collect();
    all_see(&watchers(&members), &full).await;
    members
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    /// The handle is dropped: the others must find out by probing.
    Silent,
    /// `Membership::leave`: the others are told.
    Leave,
}

/// Times of one death-and-restart round.
struct Round {
    /// From the death (drop, or the call to `leave`) until every survivor dropped the victim.
    gone: Duration,
    /// From the restarted member's seeding until every member (itself included) sees all.
    rejoined: Duration,
}

/// `rounds` deaths in a cluster of `size`, victims in turn; each victim restarts and rejoins.
/// Asserts that exactly the victim goes and that everyone is back before the next round.
async fn death_rounds(size: usize, rounds: usize, death: Death) -> Vec<Round> {
    let names: Vec<String> = (0..size).map(|i| format!("n{i}")).collect();
    let full: LiveSet = names.iter().cloned().collect();
    let mut members = cluster(&names).await;
    let mut results = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Steady state first: a fresh member must be fully known before it dies.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let victim = round % size;
        let (dead, _) = members.remove(victim);
        let old_boot = dead.identity().boot;
        let mut expected = full.clone();
        expected.remove(&names[victim]);

        let began = Instant::now();
        match death {
            Death::Silent => drop(dead),
            Death::Leave => dead.leave(DEADLINE).await.expect("leave finishes"),
        }
        all_see(&watchers(&members), &expected).await;
        let gone = began.elapsed();

        let restarted = start(&names[victim]).await;
        assert!(
            restarted.0.identity().boot > old_boot,
            "a restart has a newer boot id"
        );
        members.insert(victim, restarted);
        let began = Instant::now();
        seed_everyone(&members);
        all_see(&watchers(&members), &full).await;
        results.push(Round {
            gone,
            rejoined: began.elapsed(),
        });
    }
    results
}

/// Every member of a 4-member cluster dies silently once; each time the survivors drop that
/// member and only it, and the restarted member is taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_death_is_detected_and_it_rejoins() {
    let rounds = death_rounds(4, 4, Death::Silent).await;
    assert_eq!(rounds.len(), 4);
}

fn bench_rounds() -> usize {
    std::env::var("FLB_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(20)
}

/// One line: `BENCH <what>: n=… min … median … p90 … max …` (median: upper median; p90:
/// nearest rank).
fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "BENCH {what}: n={n} min {:.2} ms, median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        ms(samples[0]),
        ms(samples[n / 2]),
        ms(samples[(n * 9).div_ceil(10) - 1]),
        ms(samples[n - 1])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture --test-threads=1"]
async fn bench_silent_death_detection() {
    let n = bench_rounds();
    let rounds = death_rounds(4, n, Death::Silent).await;
    report(
        "membership silent death detected by all 3 survivors (4 members, default timers)",
        rounds.iter().map(|r| r.gone).collect(),
    );
    report(
        "membership restarted member rejoined, all 4 see all (after a silent death)",
        rounds.iter().map(|r| r.rejoined).collect(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture --test-threads=1"]
async fn bench_graceful_leave() {
    let n = bench_rounds();
    let rounds = death_rounds(5, n, Death::Leave).await;
    report(
        "membership graceful leave (call to leave() included) seen by all 4 others (5 members)",
        rounds.iter().map(|r| r.gone).collect(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture --test-threads=1"]
async fn bench_convergence() {
    let n = bench_rounds();
    for size in [3, 5] {
        let names: Vec<String> = (0..size).map(|i| format!("c{i}")).collect();
        let full: LiveSet = names.iter().cloned().collect();
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let mut members = Vec::new();
            for name in &names {
                members.push(start(name).await);
            }
            let began = Instant::now();
            seed_everyone(&members);
            all_see(&watchers(&members), &full).await;
            samples.push(began.elapsed());
        }
        report(
            &format!("membership {size} fresh members converged (from seeding until all see all)"),
            samples,
        );
    }
}

/// A list of numbers from the environment (`FLB_BENCH_SIZES=10,50`), else `default`.
fn bench_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// Issue #15's membership scale row: clusters of 10 to 200 members (`FLB_BENCH_SIZES`), all on
/// 127.0.0.1 in this one process, default timers. Per size: the time until all see all after
/// seeding; then the steady-state traffic over 10 s (bytes each member sends per second:
/// UDP payloads with the authentication overhead, not UDP/IP headers; and datagrams); then
/// silent deaths (`FLB_BENCH_ROUNDS`, at most 5 by default here, victims not restarted), each
/// timed until every survivor dropped the victim. 200 members share the 2 cores with their
/// own observers, so the large sizes measure this machine as much as the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture --test-threads=1"]
async fn bench_membership_scale() {
    let deaths = std::env::var("FLB_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5usize);
    const WINDOW: Duration = Duration::from_secs(10);
    for size in bench_list("FLB_BENCH_SIZES", &[10, 25, 50, 100, 200]) {
        let names: Vec<String> = (0..size).map(|i| format!("s{i}")).collect();
        let mut members = Vec::new();
        for name in &names {
            members.push(start(name).await);
        }
        let began = Instant::now();
        seed_everyone(&members);
        let mut live: LiveSet = names.iter().cloned().collect();
        all_see(&watchers(&members), &live).await;
        let converged = began.elapsed();
        // Let the join traffic pass before the steady state is measured.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sent = |members: &[Member]| -> (u64, u64) {
            members.iter().fold((0, 0), |(bytes, datagrams), (m, _)| {
                let stats = m.stats();
                (bytes + stats.bytes_out, datagrams + stats.datagrams_out)
            })
        };
        let before = sent(&members);
        tokio::time::sleep(WINDOW).await;
        let after = sent(&members);
        let per_member_second = |n: u64| n as f64 / size as f64 / WINDOW.as_secs_f64();
        println!(
            "BENCH membership scale {size} members: converged in {:.0} ms; steady state {:.0} B/s \
             and {:.1} datagrams/s sent per member",
            converged.as_secs_f64() * 1000.0,
            per_member_second(after.0 - before.0),
            per_member_second(after.1 - before.1),
        );
        let mut times = Vec::new();
        for _ in 0..deaths.min(size.saturating_sub(2)) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (dead, _) = members.remove(0);
            live.remove(&dead.identity().name);
            let began = Instant::now();
            drop(dead);
            all_see(&watchers(&members), &live).await;
            times.push(began.elapsed());
        }
        if !times.is_empty() {
            report(
                &format!("membership scale {size} members: silent death seen by all survivors"),
                times,
            );
        }
    }
}
