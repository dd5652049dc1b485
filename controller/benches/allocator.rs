//! Allocator benchmark: assign and release at 10k and 1M Services in an IPv6 /64 pool, and the
//! memory the allocator state costs per Service.
//!
//! A small std-only harness (criterion would cost more build time than it saves here): one
//! warm-up round, then several timed rounds; prints ns/op (min and median over rounds).
//! Memory is the growth of the process's resident set (VmRSS) while the first round fills a
//! fresh allocator, divided by the number of Services; requests are built before measuring.
//!
//! Run: `cargo bench -p ferrolb-controller --bench allocator`.

use std::hint::black_box;
use std::time::Instant;

use ferrolb_controller::allocator::{
    AllocRequest, Allocator, AllowedPool, Family, FamilyPolicy, PoolDef, PoolEntry, ServiceKey,
};

const POOL: &str = "bench-v6";

fn pools() -> Vec<PoolDef> {
    vec![PoolDef {
        name: POOL.into(),
        entries: vec![PoolEntry::cidr(
            "2001:db8:ffff::/64".parse().expect("valid CIDR"),
        )],
        auto_assign: true,
        avoid_buggy_ips: false,
        priority: 0,
    }]
}

fn requests(count: usize) -> Vec<AllocRequest> {
    (0..count)
        .map(|i| AllocRequest {
            service: ServiceKey::new("bench", format!("svc-{i:07}")),
            families: FamilyPolicy::SingleStack(Family::V6),
            requested: Vec::new(),
            pool: None,
            allowed_pools: vec![AllowedPool {
                name: POOL.into(),
                pinned: false,
            }],
            sharing: None,
        })
        .collect()
}

/// Resident set size in bytes, from /proc/self/status (None off Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn ns_per_op(start: Instant, ops: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / ops as f64
}

struct Timings {
    assign: Vec<f64>,
    reassign: Vec<f64>,
    release: Vec<f64>,
}

fn one_round(alloc: &mut Allocator, requests: &[AllocRequest], timings: Option<&mut Timings>) {
    let start = Instant::now();
    for request in requests {
        black_box(alloc.assign(request).expect("the /64 does not run out"));
    }
    let assign = ns_per_op(start, requests.len());

    let start = Instant::now();
    for request in requests {
        black_box(alloc.assign(request).expect("idempotent"));
    }
    let reassign = ns_per_op(start, requests.len());

    let start = Instant::now();
    for request in requests {
        black_box(alloc.release(&request.service));
    }
    let release = ns_per_op(start, requests.len());
    assert_eq!(alloc.service_count(), 0);

    if let Some(timings) = timings {
        timings.assign.push(assign);
        timings.reassign.push(reassign);
        timings.release.push(release);
    }
}

fn min_median(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[0], values[values.len() / 2])
}

fn bench(count: usize, rounds: usize) {
    let requests = requests(count);
    let before = rss_bytes();
    let mut alloc = Allocator::new();
    alloc.set_pools(pools()).expect("valid pools");
    for request in &requests {
        alloc.assign(request).expect("the /64 does not run out");
    }
    let after = rss_bytes();
    let stats = alloc.stats()[POOL].v6;
    assert_eq!(stats.in_use, count as u128);
    for request in &requests {
        alloc.release(&request.service);
    }

    // Warm-up round, then timed rounds.
    one_round(&mut alloc, &requests, None);
    let mut timings = Timings {
        assign: Vec::new(),
        reassign: Vec::new(),
        release: Vec::new(),
    };
    for _ in 0..rounds {
        one_round(&mut alloc, &requests, Some(&mut timings));
    }
    for (name, values) in [
        ("assign (new service)", &mut timings.assign),
        ("assign (already held)", &mut timings.reassign),
        ("release", &mut timings.release),
    ] {
        let (min, median) = min_median(values);
        println!("{name:<24} {count:>9} {min:>12.0} {median:>14.0} {rounds:>7}");
    }
    match (before, after) {
        (Some(before), Some(after)) => println!(
            "{:<24} {count:>9} {:>12.0} bytes/service (RSS {} -> {} MiB)",
            "memory (RSS delta)",
            after.saturating_sub(before) as f64 / count as f64,
            before / (1 << 20),
            after / (1 << 20),
        ),
        _ => println!("memory: /proc/self/status not readable"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore arguments like libtest would.
    println!(
        "FerroLB allocator benchmark: single-stack IPv6 Services, one 2001:db8:ffff::/64 pool"
    );
    println!(
        "{:<24} {:>9} {:>12} {:>14} {:>7}",
        "case", "services", "ns/op min", "ns/op median", "rounds"
    );
    bench(10_000, 5);
    bench(1_000_000, 3);
}
