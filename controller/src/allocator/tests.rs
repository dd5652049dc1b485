//! Behaviour tests, after MetalLB's `internal/allocator/allocator_test.go` (facts, not code).

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn cidr(s: &str) -> PoolEntry {
    PoolEntry::cidr(s.parse().unwrap())
}

fn range(s: &str) -> PoolEntry {
    PoolEntry::from_range(s.parse().unwrap())
}

fn pool(name: &str, entries: Vec<PoolEntry>) -> PoolDef {
    PoolDef {
        name: name.into(),
        entries,
        auto_assign: true,
        avoid_buggy_ips: false,
        priority: 0,
    }
}

fn manual(mut def: PoolDef) -> PoolDef {
    def.auto_assign = false;
    def
}

fn svc(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

/// A v4 single-stack request that may use every pool of `alloc`, none pinned.
fn req(alloc: &Allocator, name: &str) -> AllocRequest {
    AllocRequest {
        service: svc(name),
        families: FamilyPolicy::SingleStack(Family::V4),
        requested: Vec::new(),
        pool: None,
        allowed_pools: alloc
            .pools
            .keys()
            .map(|name| AllowedPool {
                name: name.clone(),
                pinned: false,
            })
            .collect(),
        sharing: None,
    }
}

fn shared(key: &str, backend: &str, ports: &[u16]) -> Option<Sharing> {
    Some(Sharing {
        key: key.into(),
        backend_key: backend.into(),
        ports: ports
            .iter()
            .map(|port| ServicePort {
                protocol: Protocol::Tcp,
                port: *port,
            })
            .collect(),
    })
}

fn allocator(pools: Vec<PoolDef>) -> Allocator {
    let mut alloc = Allocator::with_release_quarantine(0);
    assert_eq!(alloc.set_pools(pools).unwrap(), vec![]);
    alloc
}

fn assigned(alloc: &mut Allocator, request: &AllocRequest) -> Vec<IpAddr> {
    alloc.assign(request).unwrap().ips
}

#[test]
fn lowest_free_address_in_entry_order() {
    let mut alloc = allocator(vec![pool(
        "p",
        vec![cidr("192.0.2.0/30"), cidr("198.51.100.10/32")],
    )]);
    let got: Vec<IpAddr> = ["a", "b", "c"]
        .iter()
        .map(|name| assign_new(&mut alloc, name)[0])
        .collect();
    // .0 and .3 of the /30 are network and broadcast.
    assert_eq!(got, ips(&["192.0.2.1", "192.0.2.2", "198.51.100.10"]));
    assert_eq!(
        alloc.assign(&req(&alloc, "d")),
        Err(AllocError::NoIpAvailable {
            tried: Attempts(vec![PoolAttempt {
                pool: "p".into(),
                why: PoolRejection::Exhausted { family: Family::V4 },
            }])
        })
    );
}

#[test]
fn ranges_hand_out_every_address_and_buggy_ips_are_skipped() {
    let mut def = pool("p", vec![range("192.0.2.254/31"), range("192.0.3.0/30")]);
    let mut alloc = allocator(vec![def.clone()]);
    let got: Vec<IpAddr> = (0..6)
        .map(|i| assign_new(&mut alloc, &format!("s{i}"))[0])
        .collect();
    assert_eq!(
        got,
        ips(&[
            "192.0.2.254",
            "192.0.2.255",
            "192.0.3.0",
            "192.0.3.1",
            "192.0.3.2",
            "192.0.3.3"
        ])
    );

    def.avoid_buggy_ips = true;
    let mut alloc = allocator(vec![def]);
    let got: Vec<IpAddr> = (0..4)
        .map(|i| assign_new(&mut alloc, &format!("s{i}"))[0])
        .collect();
    assert_eq!(
        got,
        ips(&["192.0.2.254", "192.0.3.1", "192.0.3.2", "192.0.3.3"])
    );
    assert!(alloc.assign(&req(&alloc, "s9")).is_err());
}

#[test]
fn requested_addresses() {
    let mut buggy = pool("buggy", vec![range("198.51.100.0/24")]);
    buggy.avoid_buggy_ips = true;
    let pools = vec![
        pool("a", vec![cidr("192.0.2.0/24"), cidr("2001:db8::/64")]),
        manual(pool("manual", vec![cidr("192.0.3.0/24")])),
        buggy,
        pool("other", vec![cidr("203.0.113.0/24")]),
    ];
    let alloc = allocator(pools.clone());
    let base = req(&alloc, "s");
    let dual = FamilyPolicy::RequireDualStack {
        primary: Family::V4,
    };
    type Case = (
        &'static str,
        Vec<&'static str>,
        FamilyPolicy,
        Option<&'static str>,
        Result<&'static str, AllocError>,
    );
    let cases: Vec<Case> = vec![
        ("in pool", vec!["192.0.2.5"], base.families, None, Ok("a")),
        (
            "autoAssign false pool",
            vec!["192.0.3.5"],
            base.families,
            None,
            Ok("manual"),
        ),
        (
            "named pool matches",
            vec!["192.0.2.5"],
            base.families,
            Some("a"),
            Ok("a"),
        ),
        (
            "dual, one pool",
            vec!["2001:db8::5", "192.0.2.5"],
            dual,
            None,
            Ok("a"),
        ),
        (
            "not in any pool",
            vec!["10.0.0.1"],
            base.families,
            None,
            Err(AllocError::RequestedIpNotInPool { ip: ip("10.0.0.1") }),
        ),
        (
            "network address",
            vec!["192.0.2.0"],
            base.families,
            None,
            Err(AllocError::RequestedIpNotAllowed {
                ip: ip("192.0.2.0"),
                why: IpRejection::NetworkOrBroadcast { pool: "a".into() },
            }),
        ),
        (
            "buggy address",
            vec!["198.51.100.255"],
            base.families,
            None,
            Err(AllocError::RequestedIpNotAllowed {
                ip: ip("198.51.100.255"),
                why: IpRejection::BuggyAddress {
                    pool: "buggy".into(),
                },
            }),
        ),
        (
            "not compatible with requested address pool",
            vec!["192.0.2.5"],
            base.families,
            Some("other"),
            Err(AllocError::RequestedIpNotAllowed {
                ip: ip("192.0.2.5"),
                why: IpRejection::NotInRequestedPool {
                    requested: "other".into(),
                    actual: "a".into(),
                },
            }),
        ),
        (
            "two families, single stack",
            vec!["192.0.2.5", "2001:db8::5"],
            base.families,
            None,
            Err(AllocError::InvalidRequest(
                RequestProblem::FamiliesDoNotMatch,
            )),
        ),
        (
            "two of a family",
            vec!["192.0.2.5", "192.0.2.6"],
            dual,
            None,
            Err(AllocError::InvalidRequest(RequestProblem::TwoOfFamily {
                family: Family::V4,
            })),
        ),
        (
            "three",
            vec!["192.0.2.5", "192.0.2.6", "2001:db8::1"],
            dual,
            None,
            Err(AllocError::InvalidRequest(
                RequestProblem::TooManyAddresses { count: 3 },
            )),
        ),
        (
            "wrong family",
            vec!["2001:db8::5"],
            base.families,
            None,
            Err(AllocError::InvalidRequest(
                RequestProblem::FamiliesDoNotMatch,
            )),
        ),
        (
            "dual needs both",
            vec!["192.0.2.5"],
            dual,
            None,
            Err(AllocError::InvalidRequest(
                RequestProblem::FamiliesDoNotMatch,
            )),
        ),
    ];
    for (name, requested, families, named, want) in cases {
        let mut alloc = allocator(pools.clone());
        let mut request = base.clone();
        request.requested = ips(&requested);
        request.families = families;
        request.pool = named.map(String::from);
        let got = alloc.assign(&request);
        match want {
            Ok(pool) => {
                let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(got.pool, pool, "{name}");
                assert!(same_set(&got.ips, &request.requested), "{name}");
                assert_eq!(Family::of(&got.ips[0]), Family::V4, "{name}: primary first");
            }
            Err(want) => {
                assert_eq!(got, Err(want), "{name}");
                assert_eq!(alloc.assignment(&request.service), None, "{name}");
            }
        }
    }

    // Requested addresses in different pools, of different families.
    let mut alloc = allocator(vec![
        pool("v4", vec![cidr("192.0.2.0/24")]),
        pool("v6", vec![cidr("2001:db8::/64")]),
    ]);
    let mut request = req(&alloc, "s");
    request.families = dual;
    request.requested = ips(&["192.0.2.5", "2001:db8::5"]);
    assert_eq!(
        alloc.assign(&request),
        Err(AllocError::RequestedIpNotAllowed {
            ip: ip("2001:db8::5"),
            why: IpRejection::DifferentPools {
                first: "v4".into(),
                second: "v6".into()
            },
        })
    );
}

#[test]
fn requested_address_must_be_in_an_admitted_pool() {
    let mut alloc = allocator(vec![
        pool("open", vec![cidr("192.0.2.0/24")]),
        pool("team", vec![cidr("198.51.100.0/24")]),
    ]);
    let mut request = req(&alloc, "s");
    request.allowed_pools.retain(|p| p.name == "open");
    request.requested = ips(&["198.51.100.7"]);
    assert_eq!(
        alloc.assign(&request),
        Err(AllocError::RequestedIpNotAllowed {
            ip: ip("198.51.100.7"),
            why: IpRejection::PoolNotAdmitted {
                pool: "team".into()
            },
        })
    );
    request.requested.clear();
    request.pool = Some("team".into());
    assert_eq!(
        alloc.assign(&request),
        Err(AllocError::PoolNotAdmitted {
            pool: "team".into()
        })
    );
    request.pool = Some("nope".into());
    assert_eq!(
        alloc.assign(&request),
        Err(AllocError::UnknownPool {
            pool: "nope".into()
        })
    );
    request.pool = None;
    request.allowed_pools.clear();
    assert_eq!(alloc.assign(&request), Err(AllocError::NoPoolAvailable));
}

#[test]
fn auto_assign_false_pools_only_by_name_or_address() {
    let mut alloc = allocator(vec![manual(pool("manual", vec![cidr("192.0.2.0/24")]))]);
    let mut request = req(&alloc, "s");
    assert_eq!(alloc.assign(&request), Err(AllocError::NoPoolAvailable));
    request.pool = Some("manual".into());
    assert_eq!(assigned(&mut alloc, &request), ips(&["192.0.2.1"]));
    // Keeps it when the annotation goes away.
    request.pool = None;
    assert_eq!(assigned(&mut alloc, &request), ips(&["192.0.2.1"]));
}

#[test]
fn pool_order_pinned_by_priority_then_open_by_name() {
    let mut defs = Vec::new();
    for (name, priority) in [
        ("z-open", 0),
        ("a-open", 0),
        ("p-low", 2),
        ("p-high", 1),
        ("p-unset", 0),
        ("p-tie", 1),
    ] {
        let mut def = pool(name, vec![]);
        def.priority = priority;
        defs.push(def);
    }
    for (i, def) in defs.iter_mut().enumerate() {
        def.entries = vec![cidr(&format!("192.0.2.{}/32", 10 + i))];
    }
    let mut alloc = allocator(defs);
    let mut order = Vec::new();
    for i in 0..6 {
        let mut request = req(&alloc, &format!("s{i}"));
        for allowed in &mut request.allowed_pools {
            allowed.pinned = allowed.name.starts_with("p-");
        }
        order.push(alloc.assign(&request).unwrap().pool);
    }
    assert_eq!(
        order,
        ["p-high", "p-tie", "p-low", "p-unset", "a-open", "z-open"]
    );
}

#[test]
fn address_families() {
    let pools = vec![
        pool("a-v4", vec![cidr("192.0.2.0/24")]),
        pool(
            "b-dual",
            vec![cidr("198.51.100.0/24"), cidr("2001:db8:1::/64")],
        ),
        pool("c-v6", vec![cidr("2001:db8:2::/64")]),
    ];
    let prefer_v6 = FamilyPolicy::PreferDualStack {
        primary: Family::V6,
    };
    let cases = [
        (
            FamilyPolicy::SingleStack(Family::V4),
            "a-v4",
            vec!["192.0.2.1"],
        ),
        (
            FamilyPolicy::SingleStack(Family::V6),
            "b-dual",
            vec!["2001:db8:1::"],
        ),
        (
            FamilyPolicy::RequireDualStack {
                primary: Family::V4,
            },
            "b-dual",
            vec!["198.51.100.1", "2001:db8:1::"],
        ),
        (prefer_v6, "b-dual", vec!["2001:db8:1::", "198.51.100.1"]),
    ];
    for (families, want_pool, want) in cases {
        let mut alloc = allocator(pools.clone());
        let mut request = req(&alloc, "s");
        request.families = families;
        let got = alloc.assign(&request).unwrap();
        assert_eq!(
            (got.pool.as_str(), got.ips),
            (want_pool, ips(&want)),
            "{families:?}"
        );
    }

    // No dual-stack pool: RequireDualStack fails and says why per pool, PreferDualStack falls
    // back to the primary family.
    let single = vec![pools[0].clone(), pools[2].clone()];
    let mut alloc = allocator(single);
    let mut request = req(&alloc, "s");
    request.families = FamilyPolicy::RequireDualStack {
        primary: Family::V4,
    };
    assert_eq!(
        alloc.assign(&request),
        Err(AllocError::NoIpAvailable {
            tried: Attempts(vec![
                PoolAttempt {
                    pool: "a-v4".into(),
                    why: PoolRejection::NoAddressesOfFamily { family: Family::V6 },
                },
                PoolAttempt {
                    pool: "c-v6".into(),
                    why: PoolRejection::NoAddressesOfFamily { family: Family::V4 },
                },
            ])
        })
    );
    request.families = prefer_v6;
    assert_eq!(alloc.assign(&request).unwrap().ips, ips(&["2001:db8:2::"]));
}

#[test]
fn prefer_dual_stack_gains_the_missing_family_from_its_own_pool() {
    let mut alloc = allocator(vec![pool("p", vec![cidr("192.0.2.0/24")])]);
    let mut request = req(&alloc, "s");
    request.families = FamilyPolicy::PreferDualStack {
        primary: Family::V4,
    };
    assert_eq!(assigned(&mut alloc, &request), ips(&["192.0.2.1"]));
    let displaced = alloc
        .set_pools(vec![
            pool("p", vec![cidr("192.0.2.0/24"), cidr("2001:db8::/64")]),
            pool(
                "a-dual",
                vec![cidr("198.51.100.0/24"), cidr("2001:db8:1::/64")],
            ),
        ])
        .unwrap();
    assert_eq!(displaced, vec![]);
    request.allowed_pools = req(&alloc, "s").allowed_pools;
    let got = alloc.assign(&request).unwrap();
    assert_eq!(
        (got.pool.as_str(), got.ips),
        ("p", ips(&["192.0.2.1", "2001:db8::"]))
    );
}

#[test]
fn sharing_rules_decide_who_gets_the_same_address() {
    // (second service's sharing, shares with first?)
    let first = shared("k", "", &[80]);
    let cases = [
        ("same key, other port", shared("k", "", &[443]), true),
        ("same key, same port", shared("k", "", &[80]), false),
        ("other key", shared("j", "", &[443]), false),
        ("other backend", shared("k", "app=web", &[443]), false),
        ("no key", None, false),
        ("empty key", shared("", "", &[443]), false),
    ];
    for (name, second, shares) in cases {
        let mut alloc = allocator(vec![pool("p", vec![cidr("192.0.2.0/24")])]);
        let mut a = req(&alloc, "a");
        a.sharing = first.clone();
        assert_eq!(assigned(&mut alloc, &a), ips(&["192.0.2.1"]));
        let mut b = req(&alloc, "b");
        b.sharing = second.clone();
        let got = assigned(&mut alloc, &b);
        assert_eq!(got == ips(&["192.0.2.1"]), shares, "{name}: {got:?}");
        // Asking for the first one's address explicitly fails when sharing is not allowed.
        b.requested = ips(&["192.0.2.1"]);
        let explicit = alloc.assign(&b);
        assert_eq!(explicit.is_ok(), shares, "{name}: {explicit:?}");
        if let Err(err) = explicit {
            assert!(
                matches!(err, AllocError::SharingConflict { ref with, .. } if *with == svc("a")),
                "{name}: {err}"
            );
        }
    }
}

#[test]
fn sharing_prefers_joining_an_address_of_the_same_key() {
    let mut alloc = allocator(vec![pool("p", vec![cidr("192.0.2.0/24")])]);
    let mut plain = req(&alloc, "plain");
    assert_eq!(assigned(&mut alloc, &plain), ips(&["192.0.2.1"]));
    let mut a = req(&alloc, "a");
    a.sharing = shared("k", "", &[80]);
    assert_eq!(assigned(&mut alloc, &a), ips(&["192.0.2.2"]));
    alloc.release(&plain.service);
    // .1 is free and lower, but b joins a (MetalLB would take .1).
    let mut b = req(&alloc, "b");
    b.sharing = shared("k", "", &[443]);
    assert_eq!(assigned(&mut alloc, &b), ips(&["192.0.2.2"]));
    plain.service = svc("plain2");
    assert_eq!(assigned(&mut alloc, &plain), ips(&["192.0.2.1"]));
    assert_eq!(alloc.holders(&ip("192.0.2.2")), vec![svc("a"), svc("b")]);
    assert_eq!(alloc.stats()["p"].v4.in_use, 2);
}

#[test]
fn sole_user_may_change_its_sharing_key_in_place() {
    let mut alloc = allocator(vec![pool("p", vec![cidr("192.0.2.0/24")])]);
    let mut a = req(&alloc, "a");
    a.sharing = shared("k", "", &[80]);
    assert_eq!(assigned(&mut alloc, &a), ips(&["192.0.2.1"]));
    a.sharing = shared("other", "", &[80]);
    assert_eq!(assigned(&mut alloc, &a), ips(&["192.0.2.1"]));
    // b joins under the new key; the old key has no address left.
    let mut b = req(&alloc, "b");
    b.sharing = shared("other", "", &[81]);
    assert_eq!(assigned(&mut alloc, &b), ips(&["192.0.2.1"]));
    let mut c = req(&alloc, "c");
    c.sharing = shared("k", "", &[82]);
    assert_eq!(assigned(&mut alloc, &c), ips(&["192.0.2.2"]));
    // Now shared: a changing its key no longer fits and a moves.
    a.sharing = shared("third", "", &[80]);
    assert_eq!(assigned(&mut alloc, &a), ips(&["192.0.2.3"]));
    assert_eq!(alloc.holders(&ip("192.0.2.1")), vec![svc("b")]);
    // A port clash with a co-holder also moves the service.
    b.sharing = shared("k", "", &[82]);
    assert_eq!(
        assigned(&mut alloc, &b),
        ips(&["192.0.2.1"]),
        "sole user again"
    );
    let mut d = req(&alloc, "d");
    d.sharing = shared("k", "", &[90]);
    assert_eq!(
        assigned(&mut alloc, &d),
        ips(&["192.0.2.1"]),
        "lowest joinable"
    );
    d.sharing = shared("k", "", &[82]);
    assert_eq!(assigned(&mut alloc, &d), ips(&["192.0.2.4"]));
}

#[test]
fn assign_is_idempotent_and_release_returns_what_was_held() {
    let mut alloc = allocator(vec![pool(
        "p",
        vec![cidr("192.0.2.0/24"), cidr("2001:db8::/64")],
    )]);
    let mut request = req(&alloc, "s");
    request.families = FamilyPolicy::RequireDualStack {
        primary: Family::V6,
    };
    let first = alloc.assign(&request).unwrap();
    let stats = alloc.stats();
    assert_eq!(alloc.assign(&request).unwrap(), first);
    assert_eq!(alloc.stats(), stats);
    assert_eq!(alloc.assignment(&request.service), Some(first.clone()));
    assert_eq!(alloc.release(&request.service), first.ips);
    assert_eq!(alloc.release(&request.service), Vec::<IpAddr>::new());
    assert_eq!(alloc.assignment(&request.service), None);
    assert_eq!(
        alloc.stats()["p"],
        PoolStats {
            v4: FamilyStats {
                total: 254,
                in_use: 0
            },
            v6: FamilyStats {
                total: 1 << 64,
                in_use: 0
            },
        }
    );
}

#[test]
fn changed_request_moves_the_service() {
    let mut alloc = allocator(vec![
        pool("a", vec![cidr("192.0.2.0/24")]),
        pool("b", vec![cidr("198.51.100.0/24")]),
    ]);
    let mut request = req(&alloc, "s");
    assert_eq!(alloc.assign(&request).unwrap().pool, "a");
    request.pool = Some("b".into());
    assert_eq!(assigned(&mut alloc, &request), ips(&["198.51.100.1"]));
    request.requested = ips(&["198.51.100.9"]);
    assert_eq!(assigned(&mut alloc, &request), ips(&["198.51.100.9"]));
    // The pool no longer admits the service.
    request.requested.clear();
    request.pool = None;
    request.allowed_pools.retain(|p| p.name == "a");
    assert_eq!(alloc.assign(&request).unwrap().pool, "a");
    assert_eq!(alloc.stats()["b"].v4.in_use, 0);
}

#[test]
fn failed_reallocation_leaves_the_service_without_addresses() {
    let mut alloc = allocator(vec![pool("a", vec![cidr("192.0.2.1/32")])]);
    let mut request = req(&alloc, "s");
    assigned(&mut alloc, &request);
    request.pool = Some("missing".into());
    assert_eq!(
        alloc.assign(&request),
        Err(AllocError::UnknownPool {
            pool: "missing".into()
        })
    );
    assert_eq!(alloc.assignment(&request.service), None);
    assert_eq!(alloc.stats()["a"].v4.in_use, 0);
}

#[test]
fn released_addresses_are_quarantined() {
    let mut alloc = Allocator::with_release_quarantine(2);
    alloc
        .set_pools(vec![pool(
            "p",
            vec![range("192.0.2.1/32"), range("192.0.2.2/31")],
        )])
        .unwrap();
    let a = req(&alloc, "a");
    assert_eq!(assigned(&mut alloc, &a), ips(&["192.0.2.1"]));
    alloc.release(&a.service);
    // Another service does not get the address just released...
    assert_eq!(assign_new(&mut alloc, "b"), ips(&["192.0.2.2"]));
    // ...but the same service gets it back.
    assert_eq!(assigned(&mut alloc, &a), ips(&["192.0.2.1"]));
    alloc.release(&a.service);
    // When nothing else is free the oldest quarantined address is used.
    assert_eq!(assign_new(&mut alloc, "c"), ips(&["192.0.2.3"]));
    assert_eq!(assign_new(&mut alloc, "d"), ips(&["192.0.2.1"]));
    assert!(alloc.assign(&req(&alloc, "e")).is_err());
    // Explicit requests may take a quarantined address at once.
    alloc.release(&svc("d"));
    let mut e = req(&alloc, "e");
    e.requested = ips(&["192.0.2.1"]);
    assert_eq!(assigned(&mut alloc, &e), ips(&["192.0.2.1"]));

    // Capacity 0 is MetalLB's behaviour: the released address goes to the next service.
    let mut alloc = allocator(vec![pool("p", vec![cidr("192.0.2.0/24")])]);
    let a = req(&alloc, "a");
    assigned(&mut alloc, &a);
    alloc.release(&a.service);
    assert_eq!(assign_new(&mut alloc, "b"), ips(&["192.0.2.1"]));
}

#[test]
fn quarantine_overflow_frees_the_oldest() {
    let mut alloc = Allocator::with_release_quarantine(1);
    alloc
        .set_pools(vec![pool("p", vec![cidr("192.0.2.0/24")])])
        .unwrap();
    for name in ["a", "b"] {
        assign_new(&mut alloc, name);
    }
    alloc.release(&svc("a")); // .1 quarantined
    alloc.release(&svc("b")); // .2 quarantined, .1 freed
    assert_eq!(assign_new(&mut alloc, "c"), ips(&["192.0.2.1"]));
    assert_eq!(assign_new(&mut alloc, "d"), ips(&["192.0.2.3"]));
}

#[test]
fn config_changes_unassign_or_rehome() {
    let mut alloc = allocator(vec![
        pool("a", vec![cidr("192.0.2.0/24")]),
        pool("b", vec![cidr("198.51.100.0/24")]),
        pool("c", vec![cidr("203.0.113.0/24")]),
    ]);
    for name in ["sa", "sb", "sc"] {
        let mut request = req(&alloc, name);
        request.pool = Some(name[1..].to_string());
        assigned(&mut alloc, &request);
    }
    let before = alloc.clone();
    // Overlap: refused, nothing changes.
    let overlapping = vec![
        pool("a", vec![cidr("192.0.2.0/24")]),
        pool("x", vec![cidr("192.0.2.128/25")]),
    ];
    assert_eq!(
        alloc.set_pools(overlapping),
        Err(PoolConfigError::Overlap {
            pool: "x".into(),
            cidr: "192.0.2.128/25".parse().unwrap(),
            other_pool: "a".into(),
            other: "192.0.2.0/24".parse().unwrap(),
        })
    );
    assert_eq!(
        alloc.set_pools(vec![pool("a", vec![]), pool("a", vec![])]),
        Err(PoolConfigError::DuplicatePool { pool: "a".into() })
    );
    assert_eq!(alloc.stats(), before.stats());

    // a keeps its CIDR, b's CIDR moves to pool "moved", c disappears.
    let displaced = alloc
        .set_pools(vec![
            pool("a", vec![cidr("192.0.2.0/24")]),
            pool("moved", vec![cidr("198.51.100.0/25")]),
        ])
        .unwrap();
    assert_eq!(
        displaced,
        vec![
            Displaced {
                service: svc("sb"),
                ips: ips(&["198.51.100.1"]),
                change: Displacement::Rehomed {
                    from: "b".into(),
                    to: "moved".into()
                },
            },
            Displaced {
                service: svc("sc"),
                ips: ips(&["203.0.113.1"]),
                change: Displacement::Unassigned,
            },
        ]
    );
    assert_eq!(alloc.assignment(&svc("sb")).unwrap().pool, "moved");
    assert_eq!(alloc.assignment(&svc("sc")), None);
    assert_eq!(alloc.stats()["moved"].v4.in_use, 1);
    assert_eq!(alloc.stats()["a"].v4.in_use, 1);
    // The re-homed address stays taken in its new pool.
    let mut request = req(&alloc, "new");
    request.pool = Some("moved".into());
    assert_eq!(assigned(&mut alloc, &request), ips(&["198.51.100.2"]));

    // Turning on avoidBuggyIPs displaces a service holding .255 of a range.
    let mut alloc = allocator(vec![pool("r", vec![range("192.0.2.255/32")])]);
    assign_new(&mut alloc, "s");
    let mut def = pool("r", vec![range("192.0.2.255/32")]);
    def.avoid_buggy_ips = true;
    assert_eq!(
        alloc.set_pools(vec![def]).unwrap()[0].change,
        Displacement::Unassigned
    );
    assert_eq!(alloc.stats()["r"], PoolStats::default());
}

#[test]
fn restore_reclaims_status_addresses_and_reports_conflicts() {
    let pools = vec![
        pool("a", vec![cidr("192.0.2.0/24")]),
        manual(pool("m", vec![cidr("198.51.100.0/24")])),
    ];
    let mut alloc = allocator(pools);
    let one = req(&alloc, "one");
    assert_eq!(
        alloc.restore(&one, &ips(&["192.0.2.7"])).unwrap().ips,
        ips(&["192.0.2.7"])
    );
    // Idempotent.
    assert_eq!(
        alloc.restore(&one, &ips(&["192.0.2.7"])).unwrap().ips,
        ips(&["192.0.2.7"])
    );
    // autoAssign: false pools are fine.
    assert!(
        alloc
            .restore(&req(&alloc, "m"), &ips(&["198.51.100.7"]))
            .is_ok()
    );
    // The second claimant of an address loses, whatever its name.
    let zero = req(&alloc, "zero");
    assert!(matches!(
        alloc.restore(&zero, &ips(&["192.0.2.7"])),
        Err(AllocError::SharingConflict { with, why: SharingRejection::NotShared, .. }) if with == svc("one")
    ));
    // Then assign gives the loser a new address and never moves the winner.
    assert_eq!(assigned(&mut alloc, &zero), ips(&["192.0.2.1"]));
    assert_eq!(assigned(&mut alloc, &one), ips(&["192.0.2.7"]));
    // A status address that no longer matches the request is refused.
    let mut named = req(&alloc, "named");
    named.requested = ips(&["192.0.2.9"]);
    assert!(matches!(
        alloc.restore(&named, &ips(&["192.0.2.8"])),
        Err(AllocError::InvalidRequest(
            RequestProblem::NotTheRequestedAddresses { .. }
        ))
    ));
    named.requested.clear();
    named.pool = Some("m".into());
    assert!(matches!(
        alloc.restore(&named, &ips(&["192.0.2.8"])),
        Err(AllocError::RequestedIpNotAllowed {
            why: IpRejection::NotInRequestedPool { .. },
            ..
        })
    ));
}

#[test]
fn stats_count_distinct_addresses_and_saturate() {
    let alloc = allocator(vec![pool("v6", vec![cidr("2001:db8::/48")])]);
    let stats = alloc.stats();
    assert_eq!(stats["v6"].v6.total, 1 << 80);
    assert_eq!(stats["v6"].v4, FamilyStats::default());
    let mut alloc = allocator(vec![pool("all", vec![cidr("::/0")])]);
    assert_eq!(alloc.stats()["all"].v6.total, u128::MAX);
    let mut request = req(&alloc, "s");
    request.families = FamilyPolicy::SingleStack(Family::V6);
    assigned(&mut alloc, &request);
    assert_eq!(alloc.stats()["all"].v6.available(), u128::MAX - 1);
}

#[test]
fn overlapping_pools_are_refused() {
    let mut alloc = Allocator::new();
    assert!(matches!(
        alloc.set_pools(vec![
            pool("v6", vec![cidr("2001:db8::/48")]),
            pool("all", vec![cidr("::/0")]),
        ]),
        Err(PoolConfigError::Overlap { .. })
    ));
    assert_eq!(
        alloc.set_pools(vec![pool("", vec![])]),
        Err(PoolConfigError::EmptyName)
    );
}

#[test]
fn huge_pools_cost_memory_per_address_in_use() {
    let mut alloc = allocator(vec![pool("v6", vec![cidr("2001:db8::/48")])]);
    for i in 0..1000 {
        let mut request = req(&alloc, &format!("s{i}"));
        request.families = FamilyPolicy::SingleStack(Family::V6);
        assert_eq!(
            assigned(&mut alloc, &request),
            vec![IpAddr::from(
                (u128::from(ip_v6("2001:db8::")) + i).to_be_bytes()
            )]
        );
    }
    let pool = &alloc.pools["v6"];
    assert_eq!(pool.entries[0].taken_runs().len(), 1);
    assert_eq!(alloc.stats()["v6"].v6.in_use, 1000);
}

fn ip_v6(s: &str) -> std::net::Ipv6Addr {
    s.parse().unwrap()
}

/// Assigns a default request for a new service named `name`.
fn assign_new(alloc: &mut Allocator, name: &str) -> Vec<IpAddr> {
    let request = req(alloc, name);
    assigned(alloc, &request)
}

/// A request that names one address twice is not a request for that address and another (found
/// by the allocator proptest): `[x, x]` and `[x, y]` are different sets.
#[test]
fn restore_refuses_addresses_other_than_a_repeated_request() {
    let mut alloc = allocator(vec![pool(
        "d",
        vec![cidr("192.0.2.0/24"), cidr("2001:db8::/64")],
    )]);
    let mut dual = req(&alloc, "dual");
    dual.families = FamilyPolicy::PreferDualStack {
        primary: Family::V4,
    };
    dual.requested = ips(&["2001:db8::1", "2001:db8::1"]);
    assert!(matches!(
        alloc.restore(&dual, &ips(&["2001:db8::1", "192.0.2.1"])),
        Err(AllocError::InvalidRequest(
            RequestProblem::NotTheRequestedAddresses { .. }
        ))
    ));
}
