//! Property tests: random sequences of requests, releases, restores and configuration changes
//! against small pools (so that addresses run out and sharing is exercised), checking the
//! allocator's invariants after every step.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const SERVICES: usize = 5;
const POOL_NAMES: [&str; 5] = ["a", "b", "b2", "m", "zz"];

fn entry(s: &str, from_range: bool) -> PoolEntry {
    PoolEntry {
        cidr: s.parse().unwrap(),
        from_range,
    }
}

/// Two configurations: the second shrinks `a`, moves part of `b` to `b2` and drops the rest.
fn config(variant: usize) -> Vec<PoolDef> {
    let a = |v4: &str| PoolDef {
        name: "a".into(),
        entries: vec![entry(v4, false), entry("2001:db8::/126", false)],
        auto_assign: true,
        avoid_buggy_ips: false,
        priority: 0,
    };
    let m = PoolDef {
        name: "m".into(),
        entries: vec![
            entry("203.0.113.0/30", false),
            entry("2001:db8:1::/127", false),
        ],
        auto_assign: false,
        avoid_buggy_ips: false,
        priority: 0,
    };
    if variant == 0 {
        vec![
            a("192.0.2.0/29"),
            PoolDef {
                name: "b".into(),
                entries: vec![
                    entry("198.51.100.254/31", true),
                    entry("198.51.100.0/30", true),
                ],
                auto_assign: true,
                avoid_buggy_ips: true,
                priority: 1,
            },
            m,
        ]
    } else {
        vec![
            a("192.0.2.0/30"),
            PoolDef {
                name: "b2".into(),
                entries: vec![entry("198.51.100.0/30", true)],
                auto_assign: true,
                avoid_buggy_ips: false,
                priority: 2,
            },
            m,
        ]
    }
}

const CANDIDATES: [&str; 10] = [
    "192.0.2.1",
    "192.0.2.2",
    "192.0.2.0",
    "198.51.100.255",
    "198.51.100.1",
    "203.0.113.1",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8:1::1",
    "10.0.0.1",
];

fn service(index: usize) -> ServiceKey {
    ServiceKey::new("ns", format!("s{index}"))
}

fn family_policy() -> impl Strategy<Value = FamilyPolicy> {
    let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
    (family, 0..3usize).prop_map(|(primary, kind)| match kind {
        0 => FamilyPolicy::SingleStack(primary),
        1 => FamilyPolicy::PreferDualStack { primary },
        _ => FamilyPolicy::RequireDualStack { primary },
    })
}

fn sharing() -> impl Strategy<Value = Option<Sharing>> {
    let some = (
        prop::sample::select(vec!["k", "j", ""]),
        prop::sample::select(vec!["", "app=x"]),
        prop::sample::subsequence(vec![53u16, 80, 443], 0..=3),
    )
        .prop_map(|(key, backend, ports)| {
            Some(Sharing {
                key: key.into(),
                backend_key: backend.into(),
                ports: ports
                    .into_iter()
                    .map(|port| ServicePort {
                        protocol: Protocol::Tcp,
                        port,
                    })
                    .collect(),
            })
        });
    prop_oneof![1 => Just(None), 3 => some]
}

fn addresses(max: usize) -> impl Strategy<Value = Vec<IpAddr>> {
    prop::collection::vec(prop::sample::select(CANDIDATES.to_vec()), 0..=max)
        .prop_map(|list| list.iter().map(|s| s.parse().unwrap()).collect())
}

fn request() -> impl Strategy<Value = AllocRequest> {
    (
        0..SERVICES,
        family_policy(),
        prop_oneof![3 => Just(Vec::new()), 1 => addresses(2)],
        prop_oneof![3 => Just(None), 1 => prop::sample::select(POOL_NAMES.to_vec()).prop_map(Some)],
        prop::collection::vec((any::<bool>(), any::<bool>()), POOL_NAMES.len()),
        sharing(),
    )
        .prop_map(
            |(index, families, requested, pool, allowed, sharing)| AllocRequest {
                service: service(index),
                families,
                requested,
                pool: pool.map(String::from),
                allowed_pools: POOL_NAMES
                    .iter()
                    .zip(allowed)
                    .filter(|(_, (allowed, _))| *allowed)
                    .map(|(name, (_, pinned))| AllowedPool {
                        name: name.to_string(),
                        pinned,
                    })
                    .collect(),
                sharing,
            },
        )
}

#[derive(Clone, Debug)]
enum Op {
    Assign(AllocRequest),
    Release(usize),
    Restore(AllocRequest, Vec<IpAddr>),
    SetPools(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => request().prop_map(Op::Assign),
        2 => (0..SERVICES).prop_map(Op::Release),
        2 => (request(), addresses(2)).prop_map(|(r, ips)| Op::Restore(r, ips)),
        1 => (0..2usize).prop_map(Op::SetPools),
    ]
}

/// Invariants that hold after every operation.
fn check_invariants(alloc: &Allocator) {
    let mut distinct = BTreeMap::new();
    for (key, held) in &alloc.services {
        for ip in &held.ips {
            // Every address lies in the Service's pool and may be handed out by it (so it is not
            // a network/broadcast/buggy address where those are excluded).
            assert_eq!(alloc.pool_of(ip), Some(&*held.pool), "{key} holds {ip}");
            distinct
                .entry(*ip)
                .or_insert_with(Vec::new)
                .push((key, held.sharing.as_deref()));
        }
        let families: Vec<Family> = held.ips.iter().map(Family::of).collect();
        assert!(
            check_families(
                FamilyPolicy::PreferDualStack {
                    primary: Family::V4
                },
                &held.ips
            )
            .is_ok()
        );
        assert!(!families.is_empty());
    }
    // No address is held by two Services that may not share it.
    for (ip, holders) in &distinct {
        for (i, (a, ours)) in holders.iter().enumerate() {
            for (b, theirs) in &holders[i + 1..] {
                assert_eq!(
                    sharing::check(*ours, *theirs),
                    Ok(()),
                    "{a} and {b} share {ip}"
                );
            }
        }
        assert_eq!(alloc.holders(ip).len(), holders.len());
    }
    assert_eq!(alloc.addresses.len(), distinct.len());
    // Stats count distinct addresses in use.
    let in_use: u128 = alloc
        .stats()
        .values()
        .map(|stats| stats.v4.in_use + stats.v6.in_use)
        .sum();
    assert_eq!(in_use, distinct.len() as u128);
    // A fresh free address is never one in use.
    for pool in alloc.pools.values() {
        for family in [Family::V4, Family::V6] {
            if let Some(free) = pool.first_free(family) {
                assert!(!distinct.contains_key(&free), "{free} handed out twice");
            }
        }
    }
}

/// What a successful assignment must satisfy for the request that produced it.
fn check_assignment(alloc: &Allocator, request: &AllocRequest, got: &Assignment, fresh: bool) {
    assert!(request.admits(&got.pool), "{got:?} from a pool not allowed");
    if let Some(named) = &request.pool {
        assert_eq!(&got.pool, named);
    }
    if !request.requested.is_empty() {
        assert!(same_set(&got.ips, &request.requested));
    } else if request.pool.is_none() && fresh {
        assert!(alloc.pools[&got.pool].auto_assign, "{got:?}");
    }
    let families: Vec<Family> = got.ips.iter().map(Family::of).collect();
    assert!(
        request.families.accepts(&families),
        "{got:?} for {:?}",
        request.families
    );
    if families.contains(&request.families.primary()) {
        assert_eq!(
            families[0],
            request.families.primary(),
            "primary family first"
        );
    }
    assert_eq!(alloc.assignment(&request.service).as_ref(), Some(got));
}

fn run(alloc: &mut Allocator, op: &Op) {
    match op {
        Op::Assign(request) => {
            let before = alloc.assignment(&request.service);
            match alloc.assign(request) {
                Ok(got) => {
                    check_assignment(alloc, request, &got, before.is_none());
                    // Idempotent.
                    assert_eq!(alloc.assign(request).as_ref(), Ok(&got));
                }
                Err(AllocError::InvalidRequest(_)) => {
                    assert_eq!(alloc.assignment(&request.service), before);
                }
                Err(_) => assert_eq!(alloc.assignment(&request.service), None),
            }
        }
        Op::Release(index) => {
            let before = alloc.assignment(&service(*index));
            let released = alloc.release(&service(*index));
            assert_eq!(released, before.map(|a| a.ips).unwrap_or_default());
            assert_eq!(alloc.assignment(&service(*index)), None);
        }
        Op::Restore(request, ips) => {
            if let Ok(got) = alloc.restore(request, ips) {
                assert!(same_set(&got.ips, ips));
                check_assignment(alloc, request, &got, false);
            }
        }
        Op::SetPools(variant) => {
            let before: Vec<Option<Assignment>> = (0..SERVICES)
                .map(|i| alloc.assignment(&service(i)))
                .collect();
            let displaced = alloc.set_pools(config(*variant)).unwrap();
            for (i, was) in before.into_iter().enumerate() {
                let now = alloc.assignment(&service(i));
                let report = displaced.iter().find(|d| d.service == service(i));
                match (was, now, report) {
                    (None, None, None) => {}
                    (Some(was), Some(now), None) => assert_eq!(was, now),
                    (Some(was), Some(now), Some(d)) => {
                        assert_eq!(was.ips, now.ips);
                        assert_eq!(
                            d.change,
                            Displacement::Rehomed {
                                from: was.pool,
                                to: now.pool
                            }
                        );
                    }
                    (Some(was), None, Some(d)) => {
                        assert_eq!(d.change, Displacement::Unassigned);
                        assert_eq!(d.ips, was.ips);
                    }
                    other => panic!("unexpected config change outcome {other:?}"),
                }
            }
        }
    }
    check_invariants(alloc);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_for_any_sequence(
        quarantine in 0..3usize,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut alloc = Allocator::with_release_quarantine(quarantine);
        alloc.set_pools(config(0)).unwrap();
        for op in &ops {
            run(&mut alloc, op);
        }
    }

    #[test]
    fn restore_then_assign_never_moves_an_address(
        requests in prop::collection::vec(request(), 1..40),
    ) {
        let mut original = Allocator::new();
        original.set_pools(config(0)).unwrap();
        let mut last_request = BTreeMap::new();
        for request in &requests {
            if original.assign(request).is_ok() {
                last_request.insert(request.service.clone(), request.clone());
            } else {
                last_request.remove(&request.service);
            }
        }
        let mut restarted = Allocator::new();
        restarted.set_pools(config(0)).unwrap();
        for (key, request) in &last_request {
            let held = original.assignment(key).unwrap();
            let restored = restarted.restore(request, &held.ips);
            prop_assert_eq!(restored.as_ref().map(|a| &a.ips), Ok(&held.ips));
        }
        for (key, request) in &last_request {
            let held = original.assignment(key).unwrap();
            let again = restarted.assign(request).unwrap();
            prop_assert!(held.ips.iter().all(|ip| again.ips.contains(ip)), "{:?} -> {:?}", held, again);
            prop_assert_eq!(again.pool, held.pool);
        }
        check_invariants(&restarted);
    }
}
