//! Distribution of the failure-detection time: 20 silent deaths in a 4-member cluster on
//! 127.0.0.1, each followed by a restart of the dead member. Prints median / p90 / max (recorded
//! in docs/benchmarks.md) and asserts the median stays inside the 500 ms failover budget.
//!
//! Run: `cargo test -p ferrolb-speaker --test membership_detection -- --nocapture`

use std::net::SocketAddr;
use std::time::Duration;

use ferrolb_speaker::membership::{LiveSet, Membership, MembershipConfig, Timers};
use tokio::sync::watch;
use tokio::time::Instant;

const SECRET: &[u8] = b"detection benchmark secret";
const ROUNDS: usize = 20;

async fn start(name: &str) -> (Membership, watch::Receiver<LiveSet>) {
    Membership::start(MembershipConfig {
        node: name.to_string(),
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise: "127.0.0.1:0".parse().unwrap(),
        secret: SECRET.to_vec(),
        timers: Timers::default(),
    })
    .await
    .expect("membership starts")
}

async fn all_see(
    watchers: &[watch::Receiver<LiveSet>],
    expected: &LiveSet,
    timeout: Duration,
) -> Duration {
    let began = Instant::now();
    for live in watchers {
        let mut live = live.clone();
        let left = timeout.saturating_sub(began.elapsed());
        let reached = tokio::time::timeout(left, live.wait_for(|s| s == expected))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(reached, "saw {:?}, expected {expected:?}", *live.borrow());
    }
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_time_distribution() {
    let names = ["n0", "n1", "n2", "n3"];
    let mut members = Vec::new();
    for name in names {
        members.push(start(name).await);
    }
    let seeds: Vec<SocketAddr> = members.iter().map(|(m, _)| m.advertise_addr()).collect();
    for (m, _) in &members {
        m.set_seeds(seeds.clone());
    }
    let full: LiveSet = names.iter().map(|n| n.to_string()).collect();
    let watchers: Vec<_> = members.iter().map(|(_, w)| w.clone()).collect();
    all_see(&watchers, &full, Duration::from_secs(3)).await;

    let mut samples = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        // Steady state first: a fresh member must be fully known before it dies.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let victim = round % names.len();
        let (dead, _) = members.remove(victim);
        drop(dead);
        let survivors: Vec<_> = members.iter().map(|(_, w)| w.clone()).collect();
        let mut expected = full.clone();
        expected.remove(names[victim]);
        let took = all_see(&survivors, &expected, Duration::from_secs(3)).await;
        samples.push(took);

        let restarted = start(names[victim]).await;
        let seeds: Vec<SocketAddr> = members.iter().map(|(m, _)| m.advertise_addr()).collect();
        restarted.0.set_seeds(seeds);
        members.insert(victim, restarted);
        let seeds: Vec<SocketAddr> = members.iter().map(|(m, _)| m.advertise_addr()).collect();
        for (m, _) in &members {
            m.set_seeds(seeds.clone());
        }
        let watchers: Vec<_> = members.iter().map(|(_, w)| w.clone()).collect();
        all_see(&watchers, &full, Duration::from_secs(3)).await;
    }

    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples[samples.len() / 2];
    let p90 = samples[(samples.len() * 9).div_ceil(10) - 1];
    let max = samples[samples.len() - 1];
    println!(
        "membership detection ({ROUNDS} silent deaths, 4 members, default timers): \
         min {:.0} ms, median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(samples[0]),
        ms(median),
        ms(p90),
        ms(max)
    );
    assert!(median < Duration::from_millis(500), "median {median:?}");
    assert!(max < Duration::from_millis(1500), "max {max:?}");
}
