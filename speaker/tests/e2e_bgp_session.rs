//! The BGP session task against the lab's FRR (root; skipped with a printed reason otherwise,
//! FAILS when `CI` is set). No speaker process and no control plane: the test runs
//! `bgp::session::run` itself, on a thread moved into node1's network namespace (a socket is
//! created in the namespace of the thread that creates it), two sessions as MetalLB runs them
//! on a dual-stack node: 192.0.2.11 → 192.0.2.1 (IPv4 unicast) and 2001:db8:2::11 →
//! 2001:db8:2::1 (IPv6 unicast; FRR negotiates IPv4 unicast there too, but each session is
//! given only its own family's route, as MetalLB does without `dualStackAddressFamily`).
//! FRR's view is read with vtysh, the kernel's with `ip route` in the router namespace.
//!
//! Run: `cargo test -p ferrolb-speaker --test e2e_bgp_session -- --nocapture`

mod bgp_lab;

use bgp_lab::{init_tracing, start_sessions};

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrolb_crds::config::PeerAsn;
use ferrolb_speaker::bgp::codec::{Family, RouteAttributes};
use ferrolb_speaker::bgp::fsm::{Backoff, SessionConfig, State};
use ferrolb_speaker::bgp::session::{self, PeerConfig, Route, RouteSet};
use ferrolb_tests::harness::TestLab;
use ferrolb_tests::netlab::Router;
use ferrolb_tests::netlab::netns;
use ferrolb_tests::netlab::topology::{NODE_ASN, ROUTER_ASN, ROUTER_LAN_V4, ROUTER_LAN_V6};
use ipnet::IpNet;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Hang guard for every wait; nothing here measures speed.
const DEADLINE: Duration = Duration::from_secs(30);
const V4_PREFIX: &str = "203.0.113.200/32";
const V6_PREFIX: &str = "2001:db8:ee::200/128";

fn session_config(families: &[Family]) -> SessionConfig {
    SessionConfig {
        local_asn: NODE_ASN,
        peer_asn: PeerAsn::Fixed(ROUTER_ASN),
        router_id: ferrolb_tests::netlab::topology::node_addresses(1).0,
        hold_time: Duration::from_secs(90),
        keepalive_time: Duration::from_secs(30),
        passive: false,
        connect_retry_time: Duration::from_secs(5),
        families: families.iter().copied().collect::<BTreeSet<_>>(),
        extended_next_hop_ipv4: false,
        graceful_restart: None,
        backoff: Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
            stable_after: Duration::from_secs(60),
        },
    }
}

fn eventually<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    ferrolb_tests::harness::eventually_ok(what, DEADLINE, check)
}

fn vtysh_json(router: &Router, command: &str) -> Result<Value, String> {
    router.vtysh_json(command)
}

/// FRR's state for neighbour `peer` in family `af` ("ipv4Unicast") of `show bgp summary json`.
fn summary_peer(router: &Router, af: &str, peer: IpAddr) -> Result<Value, String> {
    let summary = vtysh_json(router, "show bgp summary json")?;
    summary
        .get(af)
        .and_then(|af| af.get("peers"))
        .and_then(|peers| peers.get(peer.to_string()))
        .cloned()
        .ok_or_else(|| format!("no {af} peer {peer} in {summary}"))
}

/// The route FRR selected for `prefix` (`show ip[v6] route <prefix> json`) via `next_hop`.
fn rib_route(router: &Router, prefix: &str, next_hop: IpAddr) -> Result<Value, String> {
    let ip = if next_hop.is_ipv4() { "ip" } else { "ipv6" };
    let rib = vtysh_json(router, &format!("show {ip} route {prefix} json"))?;
    let entries = rib
        .get(prefix)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{prefix} not in the RIB: {rib}"))?;
    entries
        .iter()
        .find(|entry| {
            entry["protocol"] == "bgp"
                && entry["selected"] == true
                && entry["nexthops"]
                    .as_array()
                    .is_some_and(|hops| hops.iter().any(|h| h["ip"] == next_hop.to_string()))
        })
        .cloned()
        .ok_or_else(|| format!("no selected BGP route via {next_hop}: {rib}"))
}

fn kernel_route(router_ns: &str, prefix: &str) -> String {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    netns::ip(router_ns, &[family, "route", "show", prefix]).unwrap_or_else(|e| e.to_string())
}

/// `router bgp` configuration lines (retried while bgpd starts; the lines are not printed:
/// one may carry a password).
fn configure_router(router: &Router, lines: &[&str]) {
    eventually(
        &format!("bgpd: {} configuration line(s)", lines.len()),
        || router.configure_bgp(lines).map_err(|e| e.to_string()),
    );
}

fn wait_thread(thread: JoinHandle<()>) {
    let start = Instant::now();
    while !thread.is_finished() {
        assert!(start.elapsed() < DEADLINE, "the session tasks did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    thread.join().expect("session thread");
}

#[test]
fn e2e_bgp_session_with_frr() {
    let test = "e2e_bgp_session_with_frr";
    init_tracing("ferrolb_speaker=debug");
    let Some(lab) = TestLab::network(test, 1).unwrap() else {
        return;
    };
    let topology = &lab.netlab().topology;
    let router = lab.netlab().router();
    let router_ns = topology.router_ns();
    let (node_v4, node_v6) = ferrolb_tests::netlab::topology::node_addresses(1);
    let (nh4, nh6) = (IpAddr::V4(node_v4), IpAddr::V6(node_v6));
    // So that bgpd logs the NOTIFICATIONs it receives (the dynamic neighbour is deleted with
    // its session: its counters are gone by the time we could read them).
    configure_router(&router, &["bgp log-neighbor-changes"]);

    let v4_peer = PeerConfig {
        session: session_config(&[Family::Ipv4Unicast, Family::Ipv6Unicast]),
        address: SocketAddr::new(IpAddr::V4(ROUTER_LAN_V4), 179),
        source: Some(nh4),
        ttl: Some(255),
        md5_key: None,
    };
    let v6_peer = PeerConfig {
        session: session_config(&[Family::Ipv4Unicast, Family::Ipv6Unicast]),
        address: SocketAddr::new(IpAddr::V6(ROUTER_LAN_V6), 179),
        source: Some(nh6),
        ttl: None,
        md5_key: None,
    };
    let community = RouteAttributes {
        communities: vec![(64513 << 16) | 200],
        ..RouteAttributes::default()
    };
    let one_route = |prefix: &str, next_hop: IpAddr| {
        RouteSet::new().with(
            prefix.parse::<IpNet>().unwrap(),
            Route {
                next_hop,
                attributes: community.clone(),
            },
        )
    };
    // Each session gets its own family's route (MetalLB without dualStackAddressFamily).
    let (v4_tx, v4_rx) = watch::channel(one_route(V4_PREFIX, nh4));
    let (v6_tx, v6_rx) = watch::channel(one_route(V6_PREFIX, nh6));
    let cancel = CancellationToken::new();
    let (statuses, thread) = start_sessions(
        &topology.ns("node1"),
        vec![(v4_peer, v4_rx), (v6_peer, v6_rx)],
        cancel.clone(),
    );

    // Both sessions up, on both sides.
    for status in &statuses {
        let peer = status.borrow().peer;
        eventually(&format!("our session to {peer} Established"), || {
            let s = status.borrow().clone();
            (s.state == State::Established && s.prefixes_sent == 1)
                .then_some(())
                .ok_or_else(|| format!("{s:?}"))
        });
    }
    for (af, peer) in [("ipv4Unicast", nh4), ("ipv6Unicast", nh6)] {
        let frr = eventually(&format!("FRR: {peer} Established, 1 prefix"), || {
            let p = summary_peer(&router, af, peer)?;
            (p["state"] == "Established" && p["pfxRcd"] == 1)
                .then_some(p.clone())
                .ok_or_else(|| p.to_string())
        });
        eprintln!("FRR summary for {peer} ({af}): {frr}");
        assert_eq!(frr["remoteAs"], NODE_ASN);
    }
    for status in &statuses {
        let s = status.borrow().clone();
        let negotiated = s.negotiated.expect("negotiated");
        eprintln!(
            "our status {}: {:?}, hold {:?}, keepalive {:?}, families {:?}",
            s.peer, s.state, negotiated.hold_time, negotiated.keepalive_time, negotiated.families
        );
        // The lab router's `timers 1 3`.
        assert_eq!(negotiated.hold_time, Duration::from_secs(3));
    }

    // The routes in FRR's RIB, then in the router's kernel table.
    for (prefix, next_hop) in [(V4_PREFIX, nh4), (V6_PREFIX, nh6)] {
        let route = eventually(&format!("FRR RIB: {prefix} via {next_hop}"), || {
            rib_route(&router, prefix, next_hop)
        });
        eprintln!("FRR route {prefix}: {route}");
        let kernel = eventually(&format!("kernel: {prefix} via {next_hop}"), || {
            let out = kernel_route(&router_ns, prefix);
            (out.contains(&format!("via {next_hop}")) && out.contains("proto bgp"))
                .then(|| out.clone())
                .ok_or(out)
        });
        eprintln!("router kernel: {}", kernel.trim());
    }
    let bgp = vtysh_json(&router, &format!("show bgp ipv4 unicast {V4_PREFIX} json")).unwrap();
    eprintln!("FRR BGP path {V4_PREFIX}: {bgp}");
    let path = &bgp["paths"][0];
    assert_eq!(path["aspath"]["string"], NODE_ASN.to_string());
    assert_eq!(path["community"]["string"], "64513:200");

    // Hold time 3 s: the sessions live on keepalives.
    std::thread::sleep(Duration::from_secs(5));
    for (af, peer) in [("ipv4Unicast", nh4), ("ipv6Unicast", nh6)] {
        let p = summary_peer(&router, af, peer).unwrap();
        assert_eq!(p["state"], "Established", "{peer} after 5 s: {p}");
    }

    // node1 cut off the LAN: both sides' hold timers expire; back on, the sessions come back
    // after the back-off and the routes with them.
    lab.netlab().set_port("node1", false).unwrap();
    for status in &statuses {
        let peer = status.borrow().peer;
        eventually(
            &format!("our session to {peer}: hold timer expired"),
            || {
                let s = status.borrow().clone();
                (s.state != State::Established
                    && s.last_error.as_deref() == Some("hold timer expired"))
                .then_some(())
                .ok_or_else(|| format!("{s:?}"))
            },
        );
    }
    lab.netlab().set_port("node1", true).unwrap();
    for status in &statuses {
        let peer = status.borrow().peer;
        eventually(&format!("our session to {peer} Established again"), || {
            let s = status.borrow().clone();
            (s.state == State::Established && s.sessions_established == 2)
                .then_some(())
                .ok_or_else(|| format!("{s:?}"))
        });
    }
    for (prefix, next_hop) in [(V4_PREFIX, nh4), (V6_PREFIX, nh6)] {
        eventually(&format!("FRR RIB again: {prefix} via {next_hop}"), || {
            rib_route(&router, prefix, next_hop)
        });
    }

    // Nothing to announce: both routes withdrawn, the sessions stay.
    v4_tx.send_replace(RouteSet::new());
    v6_tx.send_replace(RouteSet::new());
    for (prefix, next_hop) in [(V4_PREFIX, nh4), (V6_PREFIX, nh6)] {
        eventually(&format!("FRR RIB: {prefix} withdrawn"), || match rib_route(
            &router, prefix, next_hop,
        ) {
            Ok(route) => Err(format!("still there: {route}")),
            Err(_) => Ok(()),
        });
        eventually(&format!("kernel: {prefix} withdrawn"), || {
            let out = kernel_route(&router_ns, prefix);
            (!out.contains("proto bgp")).then_some(()).ok_or(out)
        });
    }
    for (af, peer) in [("ipv4Unicast", nh4), ("ipv6Unicast", nh6)] {
        let p = summary_peer(&router, af, peer).unwrap();
        assert_eq!(p["state"], "Established", "{peer}: {p}");
        assert_eq!(p["pfxRcd"], 0, "{peer}: {p}");
    }
    for status in &statuses {
        assert_eq!(status.borrow().prefixes_sent, 0);
    }

    // Cancel: Cease, and FRR sees the sessions go (dynamic neighbours are deleted).
    cancel.cancel();
    for (af, peer) in [("ipv4Unicast", nh4), ("ipv6Unicast", nh6)] {
        eventually(
            &format!("FRR: {peer} gone or down"),
            || match summary_peer(&router, af, peer) {
                Ok(p) if p["state"] == "Established" => Err(p.to_string()),
                _ => Ok(()),
            },
        );
    }
    wait_thread(thread);
    for status in &statuses {
        let s = status.borrow().clone();
        assert_eq!(s.state, State::Idle, "{s:?}");
        assert_eq!(s.sessions_established, 2, "{s:?}");
    }
    let log = std::fs::read_to_string(router.dir.join("bgpd.log")).unwrap_or_default();
    let notifications: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("NOTIFICATION") || line.contains("ADJCHANGE"))
        .collect();
    eprintln!("bgpd.log, notifications:\n{}", notifications.join("\n"));
    assert!(
        notifications
            .iter()
            .any(|line| line.contains("Administrative Shutdown")),
        "FRR did not log our Cease"
    );
}

/// TCP-MD5 (RFC 2385): with the router's key the session comes up; with another key the
/// router's kernel drops our segments and it never does.
#[test]
fn e2e_bgp_session_md5() {
    let test = "e2e_bgp_session_md5";
    init_tracing("ferrolb_speaker=debug");
    let Some(lab) = TestLab::network(test, 1).unwrap() else {
        return;
    };
    let router = lab.netlab().router();
    let node_ns = lab.netlab().topology.ns("node1");
    let nh4 = IpAddr::V4(ferrolb_tests::netlab::topology::node_addresses(1).0);
    configure_router(
        &router,
        &[
            "bgp log-neighbor-changes",
            "neighbor nodes4 password lab-md5-key",
        ],
    );
    let peer = |key: &str| PeerConfig {
        session: session_config(&[Family::Ipv4Unicast]),
        address: SocketAddr::new(IpAddr::V4(ROUTER_LAN_V4), 179),
        source: Some(nh4),
        ttl: None,
        md5_key: Some(session::Md5Key::new(key).unwrap()),
    };
    let routes = || {
        watch::channel(RouteSet::new().with(
            V4_PREFIX.parse::<IpNet>().unwrap(),
            Route {
                next_hop: nh4,
                attributes: RouteAttributes::default(),
            },
        ))
    };

    // The wrong key: no session (a few seconds; the lab router retries every second).
    let (_wrong_tx, wrong_rx) = routes();
    let cancel = CancellationToken::new();
    let (statuses, thread) = start_sessions(
        &node_ns,
        vec![(peer("not-the-key"), wrong_rx)],
        cancel.clone(),
    );
    std::thread::sleep(Duration::from_secs(6));
    let s = statuses[0].borrow().clone();
    eprintln!("with the wrong key after 6 s: {s:?}");
    assert_eq!(s.sessions_established, 0, "{s:?}");
    assert!(summary_peer(&router, "ipv4Unicast", nh4).is_err_or_not_established());
    cancel.cancel();
    wait_thread(thread);

    // The right key.
    let (_right_tx, right_rx) = routes();
    let cancel = CancellationToken::new();
    let (statuses, thread) = start_sessions(
        &node_ns,
        vec![(peer("lab-md5-key"), right_rx)],
        cancel.clone(),
    );
    eventually("with the key: Established", || {
        let s = statuses[0].borrow().clone();
        (s.state == State::Established)
            .then_some(())
            .ok_or_else(|| format!("{s:?}"))
    });
    let frr = eventually("FRR: Established with MD5, 1 prefix", || {
        let p = summary_peer(&router, "ipv4Unicast", nh4)?;
        (p["state"] == "Established" && p["pfxRcd"] == 1)
            .then_some(p.clone())
            .ok_or_else(|| p.to_string())
    });
    eprintln!("FRR summary with MD5: {frr}");
    let route = eventually(&format!("FRR RIB: {V4_PREFIX}"), || {
        rib_route(&router, V4_PREFIX, nh4)
    });
    eprintln!("FRR route with MD5: {route}");
    // The socket in node1 carries a key for the router (`ss -e` shows "md5keys:<peer>/32=<key>";
    // only whether it is there is printed).
    let mut ss = netns::exec(&node_ns, "ss");
    ss.args(["-tnie", "dst", "192.0.2.1"]);
    let sockets = ferrolb_tests::cmd::stdout(ss).unwrap_or_default();
    let keyed = sockets.contains("md5keys:192.0.2.1/32");
    eprintln!("node1's socket to 192.0.2.1 has an MD5 key: {keyed}");
    assert!(keyed, "no TCP-MD5 key on node1's socket to the router");
    cancel.cancel();
    wait_thread(thread);
}

trait NotEstablished {
    fn is_err_or_not_established(&self) -> bool;
}

impl NotEstablished for Result<Value, String> {
    fn is_err_or_not_established(&self) -> bool {
        match self {
            Ok(peer) => peer["state"] != "Established",
            Err(_) => true,
        }
    }
}
