//! False-positive soak: 5 members on 127.0.0.1, each on its own OS thread with its own
//! single-threaded runtime (as separate speaker processes are scheduled), left alone for a
//! while; every member that drops out of another member's live set is a spurious down event.
//! Run it while the CPUs are saturated to see whether a starved speaker gets declared dead:
//!
//! ```text
//! for i in 1 2; do timeout 70 sh -c 'while :; do :; done' & done
//! FLB_SOAK_SECS=60 FLB_SOAK_SUSPECT_MS=100 cargo test -p ferrolb-speaker --lib \
//!   membership::false_positives -- --ignored --nocapture
//! ```
//!
//! Timers come from [`Timers::default`], overridable with `FLB_SOAK_PROBE_MS`,
//! `FLB_SOAK_RTT_MS`, `FLB_SOAK_SUSPECT_MS`, `FLB_SOAK_GOSSIP_MS` (to compare settings in one
//! build). Results are recorded in docs/speaker.md `## membership`.

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use super::{LiveSet, Membership, MembershipConfig, Timers};

const MEMBERS: usize = 5;

fn env_ms(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(default)
}

fn soak_timers() -> Timers {
    let d = Timers::default();
    Timers {
        probe_period: env_ms("FLB_SOAK_PROBE_MS", d.probe_period),
        probe_rtt: env_ms("FLB_SOAK_RTT_MS", d.probe_rtt),
        suspect_to_down: env_ms("FLB_SOAK_SUSPECT_MS", d.suspect_to_down),
        gossip_period: env_ms("FLB_SOAK_GOSSIP_MS", d.gossip_period),
        ..d
    }
}

/// What one member thread reports at the end.
struct Report {
    name: String,
    /// Times another member disappeared from our live set after the full set was reached.
    downs: Vec<(Duration, Vec<String>)>,
    converged: bool,
}

#[test]
#[ignore = "soak: runs for FLB_SOAK_SECS (default 60 s); meant to run under CPU load"]
fn spurious_downs_under_load() {
    let secs = std::env::var("FLB_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    let observe = Duration::from_secs(secs);
    let timers = soak_timers();
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("soak{i}")).collect();
    let full: LiveSet = names.iter().cloned().collect();
    let (addr_tx, addr_rx) = std_mpsc::channel::<SocketAddr>();
    let mut seed_txs = Vec::new();
    let mut threads = Vec::new();
    for name in &names {
        let (seed_tx, seed_rx) = std_mpsc::channel::<Vec<SocketAddr>>();
        seed_txs.push(seed_tx);
        let (name, timers, full, addr_tx) =
            (name.clone(), timers.clone(), full.clone(), addr_tx.clone());
        threads.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(member(name, timers, full, observe, addr_tx, seed_rx))
        }));
    }
    drop(addr_tx);
    let seeds: Vec<SocketAddr> = addr_rx.iter().take(MEMBERS).collect();
    assert_eq!(seeds.len(), MEMBERS, "every member started");
    for tx in &seed_txs {
        tx.send(seeds.clone()).expect("member waits for seeds");
    }
    let reports: Vec<Report> = threads
        .into_iter()
        .map(|t| t.join().expect("member thread"))
        .collect();
    let total: usize = reports.iter().map(|r| r.downs.len()).sum();
    for r in &reports {
        for (at, gone) in &r.downs {
            println!("  {} lost {:?} at {:.1} s", r.name, gone, at.as_secs_f64());
        }
    }
    println!(
        "false-positive soak: {MEMBERS} members, {secs} s, timers probe {:?} rtt {:?} \
         suspect->down {:?} gossip {:?}, load1 {}: {total} spurious down events",
        timers.probe_period,
        timers.probe_rtt,
        timers.suspect_to_down,
        timers.gossip_period,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?"),
    );
    assert!(reports.iter().all(|r| r.converged), "cluster converged");
    assert_eq!(
        total, 0,
        "no member may be declared down while all are alive"
    );
}

async fn member(
    name: String,
    timers: Timers,
    full: LiveSet,
    observe: Duration,
    addr_tx: std_mpsc::Sender<SocketAddr>,
    seed_rx: std_mpsc::Receiver<Vec<SocketAddr>>,
) -> Report {
    let (handle, mut live) = Membership::start(MembershipConfig {
        node: name.clone(),
        bind: "127.0.0.1:0".parse().expect("address"),
        advertise: "127.0.0.1:0".parse().expect("address"),
        secret: b"false-positive soak".to_vec(),
        timers,
        probe_rtt: None,
    })
    .await
    .expect("membership starts");
    addr_tx.send(handle.advertise_addr()).expect("main waits");
    let seeds = tokio::task::spawn_blocking(move || seed_rx.recv())
        .await
        .expect("join")
        .expect("seeds");
    handle.set_seeds(seeds);
    let converged = tokio::time::timeout(Duration::from_secs(10), live.wait_for(|s| *s == full))
        .await
        .is_ok_and(|r| r.is_ok());
    let mut downs = Vec::new();
    if converged {
        let began = tokio::time::Instant::now();
        let mut last = full.clone();
        let deadline = began + observe;
        while let Ok(Ok(())) = tokio::time::timeout_at(deadline, live.changed()).await {
            let now = live.borrow_and_update().clone();
            let gone: Vec<String> = last.difference(&now).cloned().collect();
            if !gone.is_empty() {
                downs.push((began.elapsed(), gone));
            }
            last = now;
        }
    }
    // The others are still observing (they converged at slightly different times): a silent
    // stop now would count as a down event on their side.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(handle);
    Report {
        name,
        downs,
        converged,
    }
}
