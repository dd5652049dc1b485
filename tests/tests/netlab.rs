//! The network lab on its own (no control plane): topology up, idempotent, reachability, a node
//! cut off at its switch port, the FRR router running, and a teardown that leaves nothing behind.
//! Needs root; skipped with a printed reason otherwise (fails instead when `CI` is set).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ferrolb_tests::harness::TestLab;
use ferrolb_tests::lab::Lab;
use ferrolb_tests::netlab::netns;
use ferrolb_tests::netlab::topology::{CLIENT_V4, EXT_V4, EXT_V6, ROUTER_LAN_V4, ROUTER_LAN_V6};
use ferrolb_tests::process::{self, Background};

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

    // ARP and NDP probes from the client see node1's fixed MAC; nobody answers for a free IP.
    let node1_mac = Some("02:00:00:00:00:0b".to_string());
    assert_eq!(
        net.arping(&client, "192.0.2.11".parse().unwrap()),
        node1_mac
    );
    assert_eq!(
        net.ndisc(&client, "2001:db8:2::11".parse().unwrap()),
        node1_mac
    );
    assert_eq!(net.arping(&client, "192.0.2.99".parse().unwrap()), None);

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

    // `up` with fewer nodes removes the extra node namespace (and its bridge port).
    let smaller = Lab::new(lab.prefix(), 1).expect("lab with one node");
    smaller.network_up().expect("up with fewer nodes");
    assert!(!netns::exists(&topo.ns("node2")), "node2 namespace left");
    assert!(
        !netns::link_exists(&topo.switch_ns(), "node2"),
        "node2 port left"
    );
    assert!(net.ping(&client, ip("192.0.2.11")));

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
        !run_dir.exists(),
        "run directory of a passing test is removed"
    );
}

/// A BIRD 2 speaker (AS 64513) in `ns` announcing the service /32 and /128 to the lab router
/// with BFD, as the FerroLB speaker will.
fn start_bird(lab: &TestLab, node: &str, v4: &str, v6: &str) -> i32 {
    let dir = lab.run_dir().join(format!("bird-{node}"));
    std::fs::create_dir_all(&dir).expect("bird dir");
    let conf = format!(
        r#"log "{log}" all;
router id {v4};
protocol device {{ }}
protocol bfd {{ interface "eth0" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }}; }}
protocol static svc4 {{ ipv4; route 192.0.2.10/32 blackhole; }}
protocol static svc6 {{ ipv6; route 2001:db8:2::10/128 blackhole; }}
template bgp rtr {{
  local as 64513; hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 5;
  bfd on;
}}
protocol bgp r4 from rtr {{
  local {v4}; neighbor 192.0.2.1 as 64512;
  ipv4 {{ import none; export where proto = "svc4"; }};
}}
protocol bgp r6 from rtr {{
  local {v6}; neighbor 2001:db8:2::1 as 64512;
  ipv6 {{ import none; export where proto = "svc6"; }};
}}
"#,
        log = dir.join("bird.log").display()
    );
    let conf_path = dir.join("bird.conf");
    std::fs::write(&conf_path, conf).expect("bird.conf");
    let ns = lab.netlab().topology.ns(node);
    Background {
        name: &format!("bird-{node}"),
        ns: &ns,
        program: Path::new("/usr/sbin/bird"),
        args: vec![
            "-f".into(),
            "-c".into(),
            conf_path.display().to_string(),
            "-s".into(),
            dir.join("bird.ctl").display().to_string(),
        ],
        env: BTreeMap::new(),
        dir: lab.run_dir(),
    }
    .start()
    .expect("start bird")
    .pid
}

/// `ip -n <router> [-6] route show <prefix>` until `accept` returns true, up to `timeout`.
fn wait_route(
    ns: &str,
    v6: bool,
    prefix: &str,
    timeout: Duration,
    accept: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let args: Vec<&str> = if v6 {
            vec!["-6", "route", "show", prefix]
        } else {
            vec!["route", "show", prefix]
        };
        let routes = netns::ip(ns, &args).unwrap_or_default();
        if accept(&routes) || Instant::now() >= deadline {
            return routes;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn router_accepts_dynamic_bgp_peers_with_bfd_and_installs_multipath_routes() {
    let Some(lab) = TestLab::network("netlab_bgp", 2).expect("network lab comes up") else {
        return;
    };
    let net = lab.netlab();
    let router_ns = net.topology.router_ns();
    start_bird(&lab, "node1", "192.0.2.11", "2001:db8:2::11");
    start_bird(&lab, "node2", "192.0.2.12", "2001:db8:2::12");
    // Both nodes also own the service address, so ext's pings are answered whichever path the
    // router's ECMP hash picks (kube-proxy's job in a real cluster).
    for node in ["node1", "node2"] {
        let ns = net.topology.ns(node);
        netns::ip(&ns, &["addr", "add", "192.0.2.10/32", "dev", "lo"]).expect("vip on lo");
    }

    // Neither peer is configured on the router: they are accepted from the listen ranges, and
    // both paths are installed (multipath) in the router's kernel table by zebra.
    let both = |routes: &str| routes.contains("192.0.2.11") && routes.contains("192.0.2.12");
    let routes = wait_route(
        &router_ns,
        false,
        "192.0.2.10",
        Duration::from_secs(30),
        both,
    );
    assert!(
        both(&routes),
        "no multipath route via both nodes:\n{routes}\n{}",
        net.router().vtysh("show bgp summary").unwrap_or_default()
    );
    assert!(routes.contains("proto bgp"), "{routes}");
    let routes6 = wait_route(
        &router_ns,
        true,
        "2001:db8:2::10",
        Duration::from_secs(15),
        |r| r.contains("proto bgp"),
    );
    assert!(routes6.contains("proto bgp"), "no v6 route:\n{routes6}");
    assert!(
        net.ping(&net.topology.ext_ns(), ip("192.0.2.10")),
        "ext cannot reach the service"
    );

    // BFD sessions come up with the nodes (BFD starts slow: 1 s packets until Up).
    let deadline = Instant::now() + Duration::from_secs(15);
    let bfd_up = |text: &str| {
        text.lines()
            .any(|line| line.contains(" 192.0.2.11 ") && line.trim_end().ends_with("up"))
    };
    let mut bfd = String::new();
    while Instant::now() < deadline && !bfd_up(&bfd) {
        std::thread::sleep(Duration::from_millis(200));
        bfd = net
            .router()
            .vtysh("show bfd peers brief")
            .expect("vtysh bfd");
    }
    assert!(bfd_up(&bfd), "no BFD session up with node1:\n{bfd}");

    // Cut node1 off: its path is withdrawn (BFD detects it in ~0.3 s, the hold timer in 3 s).
    let cut = Instant::now();
    net.set_port("node1", false).expect("port down");
    let only_node2 = |r: &str| !r.contains("192.0.2.11") && r.contains("192.0.2.12");
    let routes = wait_route(
        &router_ns,
        false,
        "192.0.2.10",
        Duration::from_secs(10),
        only_node2,
    );
    assert!(only_node2(&routes), "node1's path not withdrawn:\n{routes}");
    println!(
        "node1's path withdrawn {:?} after its port went down",
        cut.elapsed()
    );
}
