//! Interoperability: the BGP announcer against BIRD 2, GoBGP and FRR as the lab's router (root;
//! skipped with a printed reason otherwise, FAILS when `CI` is set). No speaker process and no
//! control plane: the test builds a `Config` from BGPPeer / BGPAdvertisement YAML and runs the
//! real `bgp::Announcer` (peer settings, next hops and route attributes from the
//! advertisements, `bgp::announcer::routes_for`, one `bgp::session` task per peer) on a thread
//! moved into node1's network namespace, as `e2e_bgp_session` does. Two BGPPeers, as on a
//! dual-stack node without `dualStackAddressFamily`: 192.0.2.11 → 192.0.2.1 (IPv4 routes) and
//! 2001:db8:2::11 → 2001:db8:2::1 (IPv6 routes). BIRD and GoBGP replace FRR in the router
//! namespace (`ferrolb_tests::netlab::routers`, which stops FRR first).
//!
//! What each router's own RIB must show (`birdc show route all`, `gobgp global rib -j`,
//! `vtysh show bgp ... json`): our routes with node1's next hop and our AS path (empty on iBGP);
//! the communities and large communities of their advertisement; LOCAL_PREF on iBGP (router AS
//! = node AS) and not ours on eBGP; with `aggregationLength: 24` / `aggregationLengthV6: 120`
//! the aggregate prefix, carrying only that advertisement's attributes; and, where the router
//! writes the kernel table (BIRD's kernel protocol, FRR's zebra; not GoBGP, which has no zebra
//! here), the route in `ip -n <router ns> route`; withdrawn after our Cease. Then the 4-octet
//! AS 4200000001 (FRR, BIRD, GoBGP), a 2-octet-only peer (FRR `dont-capability-negotiate`, the
//! BGP messages captured with tcpdump), and the reason a session with a wrong TCP-MD5 key
//! reports.
//!
//! Run: `cargo test -p ferrolb-speaker --test e2e_bgp_routers -- --nocapture`

mod bgp_lab;

use bgp_lab::init_tracing;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrolb_crds::config::{ClusterResources, Config};
use ferrolb_speaker::announcer::Announcer as _;
use ferrolb_speaker::bgp::codec::AS_TRANS;
use ferrolb_speaker::bgp::fsm::State;
use ferrolb_speaker::bgp::session::SessionStatus;
use ferrolb_speaker::bgp::{Announcement, Announcer, Context};
use ferrolb_speaker::layer2::interfaces;
use ferrolb_tests::controlplane::netns::enter_netns;
use ferrolb_tests::harness::TestLab;
use ferrolb_tests::netlab::netns;
use ferrolb_tests::netlab::routers::{BgpRouter, Bird, Gobgp, Neighbor, RibRoute};
use ferrolb_tests::netlab::topology::{
    NODE_ASN, ROUTER_ASN, ROUTER_LAN_V4, ROUTER_LAN_V6, node_addresses,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Hang guard for every wait; nothing here measures speed.
const DEADLINE: Duration = Duration::from_secs(30);
/// A 4-octet AS (RFC 6793): above 65535, so a 2-octet field can only carry AS_TRANS.
const NODE_ASN_4: u32 = 4_200_000_001;
/// The Service IPs node1 announces, from the pool of [`config`].
const V4_IPS: [&str; 2] = ["203.0.113.200", "203.0.113.201"];
const V6_IPS: [&str; 2] = ["2001:db8:ee::200", "2001:db8:ee::201"];
/// What advertisement "host" gives every IP's own prefix, and "agg" the aggregate.
const HOST_COMMUNITY: (u16, u16) = (64513, 200);
const HOST_LARGE: (u32, u32, u32) = (64513, 1, 2);
const HOST_LOCAL_PREF: u32 = 250;
const AGG_COMMUNITY: (u16, u16) = (64513, 300);
const AGG_LARGE: (u32, u32, u32) = (64513, 3, 4);
const AGG_LOCAL_PREF: u32 = 150;
const AGG_V4: &str = "203.0.113.0/24";
const AGG_V6: &str = "2001:db8:ee::200/120";
/// The BGPPeers' names.
const PEER_V4: &str = "router-v4";
const PEER_V6: &str = "router-v6";

/// One pool and two BGPAdvertisements of it: "host" (the IPs' /32 and /128) and "agg"
/// (aggregated to /24 and /120), each with its own communities and LOCAL_PREF; the two BGPPeers
/// (node AS `my_asn`, router AS `peer_asn`), with `extra` added to both specs.
fn config(my_asn: u32, peer_asn: u32, extra: &str) -> Config {
    let ad = |name: &str, spec: String| {
        format!(
            "---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: {name}, namespace: ferrolb-system}}\nspec: {spec}\n"
        )
    };
    let peer = |name: &str, address: IpAddr| {
        format!(
            "---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: {name}, namespace: ferrolb-system}}\nspec: {{myASN: {my_asn}, peerASN: {peer_asn}, peerAddress: \"{address}\"{extra}}}\n"
        )
    };
    let (c, l) = (HOST_COMMUNITY, HOST_LARGE);
    let (ac, al) = (AGG_COMMUNITY, AGG_LARGE);
    let yaml = [
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lb, namespace: ferrolb-system}\nspec: {addresses: [\"203.0.113.0/24\", \"2001:db8:ee::/64\"]}\n".to_string(),
        ad(
            "host",
            format!(
                "{{ipAddressPools: [lb], localPref: {HOST_LOCAL_PREF}, communities: [\"{}:{}\", \"large:{}:{}:{}\"]}}",
                c.0, c.1, l.0, l.1, l.2
            ),
        ),
        ad(
            "agg",
            format!(
                "{{ipAddressPools: [lb], aggregationLength: 24, aggregationLengthV6: 120, localPref: {AGG_LOCAL_PREF}, communities: [\"{}:{}\", \"large:{}:{}:{}\"]}}",
                ac.0, ac.1, al.0, al.1, al.2
            ),
        ),
        peer(PEER_V4, IpAddr::V4(ROUTER_LAN_V4)),
        peer(PEER_V6, IpAddr::V6(ROUTER_LAN_V6)),
    ]
    .concat();
    let (resources, errors) = ClusterResources::from_yaml(&yaml, "e2e_bgp_routers").unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    Config::build(&resources).unwrap_or_else(|e| panic!("{:?}\n{yaml}", e.lines()))
}

/// What `bgp::plan` gives node1 when it is eligible for a Service with these IPs: every IP
/// under both advertisements (both select the pool).
fn desired() -> BTreeMap<IpAddr, Announcement> {
    V4_IPS
        .iter()
        .chain(V6_IPS.iter())
        .map(|ip| {
            (
                ip.parse().unwrap(),
                Announcement {
                    services: BTreeSet::new(),
                    advertisements: BTreeSet::from(["host".to_string(), "agg".to_string()]),
                },
            )
        })
        .collect()
}

fn node1() -> (IpAddr, IpAddr) {
    let (v4, v6) = node_addresses(1);
    (IpAddr::V4(v4), IpAddr::V6(v6))
}

/// The router's neighbours: node1's two addresses, AS `asn`.
fn neighbors(asn: u32) -> Vec<Neighbor> {
    let (v4, v6) = node1();
    vec![Neighbor::new(v4, asn), Neighbor::new(v6, asn)]
}

fn eventually<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    ferrolb_tests::harness::eventually_ok(what, DEADLINE, check)
}

/// The BGP announcer of node1, on a thread in its namespace with a current-thread runtime; its
/// sessions' statuses copied out every 100 ms. Dropped: the sessions are stopped (Cease).
struct Speaker {
    statuses: Arc<Mutex<BTreeMap<String, SessionStatus>>>,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Speaker {
    fn start(ns: &str, config: Config, desired: BTreeMap<IpAddr, Announcement>) -> Speaker {
        let statuses = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = CancellationToken::new();
        let ns = ns.to_string();
        let (out, stopped) = (statuses.clone(), stop.clone());
        let host_ip = node1().0;
        let thread = std::thread::spawn(move || {
            enter_netns(&ns).expect("enter the node's netns");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                // The interfaces of node1: the thread is in its namespace now.
                let host = interfaces::scan().expect("node1's interfaces");
                let tracker = TaskTracker::new();
                let mut announcer = Announcer::new(
                    "node1".into(),
                    Some(host_ip),
                    tracker.clone(),
                    CancellationToken::new(),
                );
                announcer.set_context(Context::new(&config, BTreeMap::new(), &host));
                let changes = announcer.converge(&desired);
                eprintln!("announcer: {changes:?}");
                loop {
                    *out.lock().unwrap() = announcer.statuses();
                    tokio::select! {
                        () = stopped.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                announcer.withdraw_all();
                tracker.close();
                tracker.wait().await;
            });
        });
        Speaker {
            statuses,
            stop,
            thread: Some(thread),
        }
    }

    fn status(&self, peer: &str) -> Option<SessionStatus> {
        self.statuses.lock().unwrap().get(peer).cloned()
    }

    /// Waits until our session to `peer` is Established with `prefixes` sent.
    fn wait_established(&self, peer: &str, prefixes: usize) -> SessionStatus {
        eventually(&format!("our session {peer} Established"), || {
            let s = self.status(peer).ok_or("no session yet")?;
            (s.state == State::Established && s.prefixes_sent == prefixes)
                .then(|| s.clone())
                .ok_or_else(|| format!("{s:?}"))
        })
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop.cancel();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let start = Instant::now();
        while !thread.is_finished() && start.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(50));
        }
        if thread.is_finished() {
            let joined = thread.join();
            if joined.is_err() && !std::thread::panicking() {
                panic!("the speaker thread panicked");
            }
        } else if !std::thread::panicking() {
            panic!("the sessions did not stop within {DEADLINE:?}");
        }
    }
}

/// One `router bgp 64512` configuration line for the lab's bgpd, through vtysh (bgpd may still
/// be starting).
fn configure_frr(router: &ferrolb_tests::netlab::Router, line: &str) {
    let context = format!("router bgp {ROUTER_ASN}");
    // Three words at most: "neighbor nodes4 password", never the key.
    let shown: Vec<&str> = line.split_whitespace().take(3).collect();
    eventually(&format!("bgpd: {} ...", shown.join(" ")), || {
        let mut vtysh = ferrolb_tests::cmd::command(
            "vtysh",
            [
                "-N",
                &router.ns,
                "-c",
                "configure terminal",
                "-c",
                &context,
                "-c",
                line,
            ],
        );
        vtysh.env("LC_ALL", "C");
        ferrolb_tests::cmd::run(vtysh)
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

/// The router's path for `prefix` from `next_hop`, once it has one.
fn path_from(router: &dyn BgpRouter, prefix: &str, next_hop: IpAddr) -> RibRoute {
    eventually(
        &format!("{}: {prefix} via {next_hop}", router.name()),
        || {
            let routes = router.routes(prefix)?;
            routes
                .iter()
                .find(|r| r.next_hop == Some(next_hop))
                .cloned()
                .ok_or_else(|| format!("{routes:?}"))
        },
    )
}

/// `ip route show <prefix>` in the router namespace.
fn kernel_route(router_ns: &str, prefix: &str) -> String {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    netns::ip(router_ns, &[family, "route", "show", prefix]).unwrap_or_else(|e| e.to_string())
}

/// Whether the router is expected to keep a LOCAL_PREF of its own on eBGP paths (RFC 4271
/// §5.1.5: one received from an external peer is ignored). BIRD gives every path its
/// `default bgp_local_pref` (100); FRR and GoBGP show none.
fn own_ebgp_local_pref(router: &dyn BgpRouter) -> Option<u32> {
    (router.name() == "BIRD").then_some(100)
}

/// Both sessions up, on both sides; every route of [`desired`] in the router's RIB with the
/// attributes of its advertisement and, where the router does that, in its kernel table.
fn check_routes(
    router: &dyn BgpRouter,
    router_ns: &str,
    speaker: &Speaker,
    my_asn: u32,
    ibgp: bool,
) {
    let (nh4, nh6) = node1();
    // Per family: the IPs' own prefixes and the aggregate.
    let families = [
        (nh4, PEER_V4, &V4_IPS, 32, AGG_V4),
        (nh6, PEER_V6, &V6_IPS, 128, AGG_V6),
    ];
    for (next_hop, peer, ips, host_len, aggregate) in families {
        speaker.wait_established(peer, ips.len() + 1);
        eventually(
            &format!("{}: session with {next_hop} Established", router.name()),
            || router.established(next_hop),
        );
        // RFC 4271 §5.1.2: a route originated towards an internal peer has an empty AS_PATH.
        let as_path = if ibgp { vec![] } else { vec![my_asn] };
        let route = |prefix: String, community, large, local_pref| RibRoute {
            prefix,
            next_hop: Some(next_hop),
            as_path: as_path.clone(),
            // Only this advertisement's attributes: the aggregate is not the host routes'.
            communities: vec![community],
            large_communities: vec![large],
            local_pref: if ibgp {
                Some(local_pref)
            } else {
                // LOCAL_PREF must not come from us.
                own_ebgp_local_pref(router)
            },
        };
        let mut expected: Vec<RibRoute> = ips
            .iter()
            .map(|ip| {
                let prefix = format!("{ip}/{host_len}");
                route(prefix, HOST_COMMUNITY, HOST_LARGE, HOST_LOCAL_PREF)
            })
            .collect();
        expected.push(route(
            aggregate.to_string(),
            AGG_COMMUNITY,
            AGG_LARGE,
            AGG_LOCAL_PREF,
        ));
        for want in expected {
            let prefix = want.prefix.clone();
            let path = path_from(router, &prefix, next_hop);
            eprintln!("{} {prefix}: {path:?}", router.name());
            assert_eq!(path, want, "{} {prefix}", router.name());
            if router.installs_kernel_routes() {
                let kernel = eventually(&format!("kernel: {prefix} via {next_hop}"), || {
                    let out = kernel_route(router_ns, &prefix);
                    out.contains(&format!("via {next_hop}"))
                        .then(|| out.clone())
                        .ok_or(out)
                });
                eprintln!("{} kernel: {}", router.name(), kernel.trim());
            }
        }
        // Aggregation gives the /24 and /120, nothing in between.
        let between = if next_hop.is_ipv4() {
            "203.0.113.128/25"
        } else {
            "2001:db8:ee::200/121"
        };
        assert_eq!(router.routes(between).unwrap(), [], "{between}");
    }
}

/// The attribute matrix against one router: `ibgp` puts the router in node1's AS.
fn attributes_against(test: &str, kind: &str, ibgp: bool) {
    init_tracing("ferrolb_speaker=info");
    let Some(lab) = TestLab::network(test, 1).unwrap() else {
        return;
    };
    let netlab = lab.netlab();
    let router_ns = netlab.topology.router_ns();
    let router_asn = if ibgp { NODE_ASN } else { ROUTER_ASN };
    let router: Box<dyn BgpRouter> = match kind {
        "BIRD" => Box::new(Bird::start(netlab, router_asn, &neighbors(NODE_ASN)).unwrap()),
        "GoBGP" => Box::new(Gobgp::start(netlab, router_asn, &neighbors(NODE_ASN)).unwrap()),
        // The lab's own bgpd: dynamic neighbours, eBGP only.
        _ => Box::new(netlab.router()),
    };
    let speaker = Speaker::start(
        &netlab.topology.ns("node1"),
        config(NODE_ASN, router_asn, ""),
        desired(),
    );
    check_routes(router.as_ref(), &router_ns, &speaker, NODE_ASN, ibgp);
    drop(speaker);
    // Our Cease: the router drops the routes (and, from the kernel, what it installed).
    let (nh4, _) = node1();
    let prefix = format!("{}/32", V4_IPS[0]);
    eventually(&format!("{kind}: {prefix} withdrawn"), || {
        let routes = router.routes(&prefix)?;
        routes
            .iter()
            .all(|r| r.next_hop != Some(nh4))
            .then_some(())
            .ok_or_else(|| format!("{routes:?}"))
    });
    if router.installs_kernel_routes() {
        eventually(&format!("kernel: {prefix} gone"), || {
            let out = kernel_route(&router_ns, &prefix);
            (!out.contains("via")).then_some(()).ok_or(out)
        });
    }
}

#[test]
fn e2e_bgp_bird_ebgp() {
    attributes_against("e2e_bgp_bird_ebgp", "BIRD", false);
}

#[test]
fn e2e_bgp_bird_ibgp() {
    attributes_against("e2e_bgp_bird_ibgp", "BIRD", true);
}

#[test]
fn e2e_bgp_gobgp_ebgp() {
    attributes_against("e2e_bgp_gobgp_ebgp", "GoBGP", false);
}

#[test]
fn e2e_bgp_gobgp_ibgp() {
    attributes_against("e2e_bgp_gobgp_ibgp", "GoBGP", true);
}

#[test]
fn e2e_bgp_frr_ebgp() {
    attributes_against("e2e_bgp_frr_ebgp", "FRR", false);
}

/// The IPv4 session with node AS 4200000001 against FRR, BIRD and GoBGP in turn (one lab): it
/// comes up and the router's AS_PATH is 4200000001, not AS_TRANS.
#[test]
fn e2e_bgp_four_octet_asn() {
    let test = "e2e_bgp_four_octet_asn";
    init_tracing("ferrolb_speaker=info");
    let Some(lab) = TestLab::network(test, 1).unwrap() else {
        return;
    };
    let netlab = lab.netlab();
    let node_ns = netlab.topology.ns("node1");
    let (nh4, _) = node1();
    let prefix = format!("{}/32", V4_IPS[0]);
    for kind in ["FRR", "BIRD", "GoBGP"] {
        let v4_only = vec![Neighbor::new(nh4, NODE_ASN_4)];
        let router: Box<dyn BgpRouter> = match kind {
            "BIRD" => Box::new(Bird::start(netlab, ROUTER_ASN, &v4_only).unwrap()),
            "GoBGP" => Box::new(Gobgp::start(netlab, ROUTER_ASN, &v4_only).unwrap()),
            _ => Box::new(netlab.router()),
        };
        let speaker = Speaker::start(&node_ns, config(NODE_ASN_4, ROUTER_ASN, ""), desired());
        let status = speaker.wait_established(PEER_V4, V4_IPS.len() + 1);
        assert!(
            status.negotiated.as_ref().is_some_and(|n| n.four_octet_as),
            "{status:?}"
        );
        eventually(&format!("{kind}: Established"), || router.established(nh4));
        let path = path_from(router.as_ref(), &prefix, nh4);
        eprintln!("{kind} {prefix} from AS {NODE_ASN_4}: {path:?}");
        assert_eq!(path.as_path, [NODE_ASN_4], "{kind}: {path:?}");
        drop(speaker);
        // The next router takes port 179 over (FRR is stopped by the first of them).
        drop(router);
    }
}

/// A peer that does not offer the 4-octet AS capability (RFC 6793) sees AS_TRANS. FRR with
/// `dont-capability-negotiate` offers no capability at all, so the session is a 2-octet one
/// (and IPv4 unicast without MP-BGP, RFC 4760 §7), and FRR then acts as an OLD speaker: its
/// AS_PATH is 23456. On the wire, captured in the router namespace: our OPEN's My AS is 23456
/// and the UPDATE's AS_PATH is 23456, with the real AS in AS4_PATH (§4.2.2), which an OLD
/// speaker passes on without reading; and no LOCAL_PREF (eBGP). BIRD cannot play the 2-octet
/// peer:
/// with `enable as4 off` it still reads our AS4 capability, so it refuses 23456 as our AS
/// ("Bad peer AS") and 4200000001 as a configuration error; GoBGP has no such switch.
#[test]
fn e2e_bgp_two_octet_peer_sees_as_trans() {
    let test = "e2e_bgp_two_octet_peer_sees_as_trans";
    init_tracing("ferrolb_speaker=info");
    let Some(lab) = TestLab::network(test, 1).unwrap() else {
        return;
    };
    let netlab = lab.netlab();
    let router = netlab.router();
    let (nh4, _) = node1();
    configure_frr(&router, "neighbor nodes4 dont-capability-negotiate");
    let capture = Capture::start(&netlab.topology.router_ns(), lab.run_dir());
    let speaker = Speaker::start(
        &netlab.topology.ns("node1"),
        config(NODE_ASN_4, ROUTER_ASN, ""),
        desired(),
    );
    let status = speaker.wait_established(PEER_V4, V4_IPS.len() + 1);
    let negotiated = status.negotiated.clone().unwrap();
    assert!(!negotiated.four_octet_as, "{status:?}");
    eventually("FRR: Established", || router.established(nh4));
    let prefix = format!("{}/32", V4_IPS[0]);
    let path = path_from(&router, &prefix, nh4);
    eprintln!("FRR (2-octet session) {prefix}: {path:?}");

    let wire = capture.decoded();
    let summary: Vec<&str> = wire
        .lines()
        .filter(|l| {
            ["my AS", "4 Byte AS", "AS Path", "AS4 Path"]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect();
    eprintln!(
        "BGP over IPv4 on the wire (tcpdump -vvv):\n{}",
        summary.join("\n")
    );
    assert!(
        wire.contains(&format!("my AS {AS_TRANS}")),
        "no OPEN with My AS {AS_TRANS}"
    );
    let attribute = |name: &str| -> String {
        // tcpdump: "AS Path (2), length: 4, Flags [T]: 23456" (the value may be on the next line).
        let mut lines = wire.lines().skip_while(|l| !l.contains(name));
        lines.by_ref().take(2).collect::<Vec<_>>().join(" ")
    };
    let (as_path, as4_path) = (attribute("AS Path (2)"), attribute("AS4 Path (17)"));
    eprintln!("AS_PATH: {as_path}\nAS4_PATH: {as4_path}");
    assert!(as_path.contains(&AS_TRANS.to_string()), "{as_path}");
    assert!(!as_path.contains(&NODE_ASN_4.to_string()), "{as_path}");
    assert!(as4_path.contains(&NODE_ASN_4.to_string()), "{as4_path}");
    assert_eq!(path.as_path, [u32::from(AS_TRANS)], "{path:?}");
    // An eBGP session: the advertisements' localPref is not sent at all (RFC 4271 §5.1.5), which
    // the routers' RIBs cannot show (they ignore one from an external peer, or put their own).
    assert!(wire.contains("Community (8)"), "no UPDATE captured");
    assert!(
        !wire.contains("Local Preference"),
        "LOCAL_PREF sent over eBGP"
    );
}

/// tcpdump on the router's eth0 (BGP over IPv4 only), into a file in the run directory.
struct Capture {
    file: std::path::PathBuf,
    pid: i32,
}

impl Capture {
    fn start(ns: &str, run_dir: &std::path::Path) -> Capture {
        let file = run_dir.join("bgp.pcap");
        let started = ferrolb_tests::process::Background {
            name: "tcpdump-bgp",
            ns,
            program: std::path::Path::new("tcpdump"),
            args: vec![
                "-i".into(),
                "eth0".into(),
                // Each packet read and written at once (libpcap otherwise hands packets over in
                // blocks, after up to a second), so stopping it loses nothing.
                "--immediate-mode".into(),
                "-U".into(),
                "-w".into(),
                file.display().to_string(),
                // The IPv4 session only: the IPv6 one is a 4-octet session.
                "ip and tcp port 179".into(),
            ],
            env: BTreeMap::new(),
            dir: run_dir,
        }
        .start()
        .unwrap();
        let log = run_dir.join("tcpdump-bgp.log");
        eventually("tcpdump listening", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("listening on").then_some(()).ok_or(text)
        });
        Capture {
            file,
            pid: started.pid,
        }
    }

    /// Stops the capture and returns it decoded (`tcpdump -r -nn -vvv`).
    fn decoded(&self) -> String {
        ferrolb_tests::process::stop(&[self.pid], Duration::from_secs(2));
        let mut read = ferrolb_tests::cmd::command("tcpdump", ["-nn", "-vvv", "-r"]);
        read.arg(&self.file);
        ferrolb_tests::cmd::stdout(read).unwrap()
    }
}

impl Drop for Capture {
    /// A failing test's capture stops too (the lab's teardown would also get it).
    fn drop(&mut self) {
        ferrolb_tests::process::stop(&[self.pid], Duration::from_secs(2));
    }
}

/// TCP-MD5 with a key the router does not have: no session, and the status says why.
#[test]
fn e2e_bgp_md5_wrong_key_reason() {
    let test = "e2e_bgp_md5_wrong_key_reason";
    init_tracing("ferrolb_speaker=info");
    let Some(lab) = TestLab::network(test, 1).unwrap() else {
        return;
    };
    let router = lab.netlab().router();
    configure_frr(&router, "neighbor nodes4 password lab-md5-key");
    // connectTime 2 s: the router's kernel drops every SYN with the wrong signature, so each
    // attempt hangs until the connect retry timer ends it.
    let speaker = Speaker::start(
        &lab.netlab().topology.ns("node1"),
        config(
            NODE_ASN,
            ROUTER_ASN,
            ", password: not-the-key, connectTime: 2s",
        ),
        desired(),
    );
    let status = eventually("a reason in last_error", || {
        let s = speaker.status(PEER_V4).ok_or("no session yet")?;
        assert_eq!(s.sessions_established, 0, "{s:?}");
        s.last_error
            .clone()
            .map(|_| s.clone())
            .ok_or_else(|| format!("{s:?}"))
    });
    eprintln!("with the wrong key: {status:?}");
    assert_ne!(status.state, State::Established);
}

/// `dualStackAddressFamily` (MetalLB's field): each session carries both families, each route
/// with node1's address of its own family as next hop. With FRR taking both families on both
/// sessions, every IPv4 prefix arrives twice (over the IPv4 and the IPv6 session), each time
/// via 192.0.2.11, and every IPv6 prefix twice via 2001:db8:2::11.
#[test]
fn e2e_bgp_dual_stack_address_family() {
    let test = "e2e_bgp_dual_stack_address_family";
    init_tracing("ferrolb_speaker=info");
    let Some(lab) = TestLab::network(test, 1).unwrap() else {
        return;
    };
    let netlab = lab.netlab();
    let router = netlab.router();
    let context = format!("router bgp {ROUTER_ASN}");
    for (family, group) in [("ipv4 unicast", "nodes6"), ("ipv6 unicast", "nodes4")] {
        eventually(&format!("bgpd: {group} activated for {family}"), || {
            let address_family = format!("address-family {family}");
            let activate = format!("neighbor {group} activate");
            let mut vtysh = ferrolb_tests::cmd::command(
                "vtysh",
                [
                    "-N",
                    &router.ns,
                    "-c",
                    "configure terminal",
                    "-c",
                    &context,
                    "-c",
                    &address_family,
                    "-c",
                    &activate,
                ],
            );
            vtysh.env("LC_ALL", "C");
            ferrolb_tests::cmd::run(vtysh)
                .map(drop)
                .map_err(|e| e.to_string())
        });
    }
    let (nh4, nh6) = node1();
    let speaker = Speaker::start(
        &netlab.topology.ns("node1"),
        config(NODE_ASN, ROUTER_ASN, ", dualStackAddressFamily: true"),
        desired(),
    );
    let all = V4_IPS.len() + V6_IPS.len() + 2;
    speaker.wait_established(PEER_V4, all);
    speaker.wait_established(PEER_V6, all);
    for (prefix, next_hop) in [
        (format!("{}/32", V4_IPS[0]), nh4),
        (format!("{}/128", V6_IPS[0]), nh6),
    ] {
        let family = if next_hop.is_ipv4() { "ipv4" } else { "ipv6" };
        let paths = eventually(&format!("FRR: {prefix} over both sessions"), || {
            let table = router.vtysh_json(&format!("show bgp {family} unicast {prefix} json"))?;
            let paths: Vec<(String, String)> = table["paths"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    (
                        p["peer"]["peerId"].as_str().unwrap_or_default().to_string(),
                        p["nexthops"][0]["ip"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect();
            (paths.len() == 2)
                .then(|| paths.clone())
                .ok_or_else(|| table.to_string())
        });
        eprintln!("FRR {prefix}: (peer, next hop) {paths:?}");
        let peers: BTreeSet<&str> = paths.iter().map(|(peer, _)| peer.as_str()).collect();
        assert_eq!(
            peers,
            BTreeSet::from([nh4.to_string().as_str(), nh6.to_string().as_str()]),
            "{prefix} from both sessions"
        );
        assert!(
            paths.iter().all(|(_, hop)| *hop == next_hop.to_string()),
            "{prefix}: next hop of its own family on both sessions: {paths:?}"
        );
    }
}
