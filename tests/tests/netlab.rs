//! The network lab on its own (no control plane): topology up, idempotent, reachability, a node
//! cut off at its switch port, the FRR router running, and a teardown that leaves nothing behind.
//! Needs root; skipped with a printed reason otherwise (fails instead when `CI` is set).

use std::net::IpAddr;
use std::path::Path;

use ferrolb_tests::harness::TestLab;
use ferrolb_tests::netlab::netns;
use ferrolb_tests::netlab::topology::{CLIENT_V4, EXT_V4, EXT_V6, ROUTER_LAN_V4, ROUTER_LAN_V6};
use ferrolb_tests::process;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address literal")
}

#[test]
fn network_lab_builds_connects_cuts_off_and_tears_down() {
    let Some(lab) = TestLab::network("netlab", 2).expect("network lab comes up") else {
        return;
    };
    let net = lab.netlab();
    let topo = &net.topology;
    let client = topo.client_ns();

    // Every namespace exists, each host's bridge port carries its name.
    for ns in topo.namespaces() {
        assert!(netns::exists(&ns), "namespace {ns} missing");
    }
    for host in &topo.hosts {
        assert!(
            netns::link_exists(&topo.switch_ns(), &host.name),
            "no bridge port {} in {}",
            host.name,
            topo.switch_ns()
        );
    }

    // `up` twice is harmless: same namespaces, still reachable.
    lab.lab().network_up().expect("second up is a no-op");
    assert_eq!(net.existing_namespaces(), topo.namespaces());

    // LAN reachability, v4 and v6, and the outside host through the router.
    for target in [
        IpAddr::V4(ROUTER_LAN_V4),
        IpAddr::V6(ROUTER_LAN_V6),
        ip("192.0.2.11"),
        ip("2001:db8:2::12"),
        ip("192.0.2.2"),
        IpAddr::V4(EXT_V4),
        IpAddr::V6(EXT_V6),
    ] {
        assert!(net.ping(&client, target), "client cannot reach {target}");
    }
    assert!(net.ping(&topo.ext_ns(), IpAddr::V4(CLIENT_V4)));

    // Cut node1 off at the switch: the client loses it, node2 stays reachable; then repair.
    net.set_port("node1", false).expect("port down");
    assert!(
        !net.ping(&client, ip("192.0.2.11")),
        "node1 still reachable while cut off"
    );
    assert!(!net.ping(&client, ip("2001:db8:2::11")));
    assert!(net.ping(&client, ip("192.0.2.12")));
    net.set_port("node1", true).expect("port up");
    assert!(
        net.ping(&client, ip("192.0.2.11")),
        "node1 unreachable after reconnecting"
    );

    // A half-deleted lab is repaired by `up`: drop ext (router keeps half of the veth pair).
    netns::delete(&topo.ext_ns()).expect("delete ext");
    lab.lab().network_up().expect("up repairs the lab");
    assert!(net.ping(&client, IpAddr::V4(EXT_V4)), "ext not repaired");

    // FRR runs in the router: bgpd has our configuration (AS, dynamic neighbours, BFD profile)
    // and answers; zebra, bfdd and bgpd are alive in the router namespace.
    let router = net.router();
    let config = router
        .vtysh("show running-config")
        .expect("vtysh talks to FRR");
    for line in [
        "router bgp 64512",
        "bgp listen range 192.0.2.0/24 peer-group nodes4",
        "bgp listen range 2001:db8:2::/64 peer-group nodes6",
        "neighbor nodes4 bfd profile lab",
        " profile lab",
    ] {
        assert!(
            config.contains(line),
            "router config lacks {line:?}:\n{config}"
        );
    }
    let running = netns::pids(&topo.router_ns());
    let names: Vec<String> = running
        .iter()
        .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default())
        .map(|comm| comm.trim().to_string())
        .collect();
    for daemon in ["zebra", "bfdd", "bgpd"] {
        assert!(
            names.iter().any(|n| n == daemon),
            "{daemon} not running: {names:?}"
        );
    }

    // Teardown leaves no namespace and no process behind.
    let prefix = lab.prefix().to_string();
    let run_dir = lab.run_dir().to_path_buf();
    let mut pids = running;
    for ns in topo.namespaces() {
        pids.extend(netns::pids(&ns));
    }
    drop(lab);
    assert_nothing_left(&prefix, &run_dir, &pids);
}

fn assert_nothing_left(prefix: &str, run_dir: &Path, pids: &[i32]) {
    let left = netns::list_with_prefix(prefix);
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let alive: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|pid| process::is_alive(*pid))
        .collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
    let frr_state = Path::new("/var/run/frr").join(format!("{prefix}router"));
    assert!(!frr_state.exists(), "{} left", frr_state.display());
    assert!(
        run_dir.exists(),
        "run directory (logs) is kept for inspection"
    );
}
