//! BGP mode end to end in the lab (root; skipped with a printed reason otherwise, FAILS when `CI`
//! is set): a real kube-apiserver, the real controller and 3 `ferrolb-speaker` processes, one
//! per node namespace, peering with the lab's FRR router (AS 64512, dynamic neighbours from the
//! node LAN, `maximum-paths 8`). FRR's view is read with vtysh: the paths of its BGP table for
//! the Service's prefix (`show bgp ipv4|ipv6 unicast <prefix> json`) and the route it selected
//! (`show ip route <prefix> json`, one next hop per node: ECMP).
//!
//! - an IPv4 and an IPv6 BGPPeer (myASN 64513, the router's two addresses), a dual-stack pool,
//!   a BGPAdvertisement with community 64513:100, a dual-stack Service with endpoints on every
//!   node: each family's /32 or /128 reaches FRR from all 3 nodes, with the community;
//! - node3's speaker stopped with SIGTERM: FRR logs its Cease (Administrative Shutdown) and
//!   drops its paths;
//! - `externalTrafficPolicy: Local` with the endpoint on node2 only: only node2's path remains;
//! - the Service deleted: the routes are withdrawn;
//! - the router ID FRR sees (`remoteRouterId`): each node's IPv4 address, since the BGPPeers
//!   leave `routerID` unset, on the IPv6 sessions too.
//!
//! `e2e_bgp_legacy_configmap`: the same from MetalLB's legacy ConfigMap (`peers:`, a `protocol:
//! bgp` pool with `bgp-advertisements` and a `bgp-communities` alias), as tutorials write it;
//! its peer sets `router-id`, which FRR sees from both nodes.
//!
//! A second test, `e2e_bgp_status_secret_and_ext`, checks what a user reads and the
//! `passwordSecret` path: the BGPPeer's TCP-MD5 key comes from a Secret, first a wrong one (the
//! session stays down, its BGPSessionState shows why), then the right one (the session is
//! re-keyed and comes up, with an Event on the BGPPeer, ServiceBGPStatus objects and metrics);
//! `ext`, outside the router, reaches the Service IP through it; a deleted Service's route
//! leaves the router (the time is printed: 127 ms when it was written, target < 1 s).
//!
//! `e2e_bgp_bfd_with_frr`: BFD with the lab router's bfdd on both BGPPeers (up, hostile
//! datagrams dropped and counted, a cut-off node's path gone long before a 90 s hold timer).
//! `e2e_bgp_bfd_multihop_with_frr`: the same over a multihop session (RFC 5883) to the
//! router's outside address.
//! `e2e_bgp_graceful_restart_keeps_traffic`: a speaker restarted with graceful restart loses
//! no ping reply; without it, the loss is printed.
//!
//! Run: `cargo build -p ferrolb-speaker -p ferrolb-controller && cargo test -p ferrolb-speaker
//! --test e2e_bgp -- --nocapture`

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrolb_tests::harness::TestLab;
use ferrolb_tests::l2probe::{ASSIGN_TIMEOUT, L2Probe};
use ferrolb_tests::netlab::topology::node_addresses;
use ferrolb_tests::netlab::{Router, netns};
use ferrolb_tests::process::Background;
use serde_json::Value;

/// Hang guard for every wait; nothing here measures speed.
const DEADLINE: Duration = Duration::from_secs(30);
const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// The dual-stack pool and its BGPAdvertisement (community 64513:100), as YAML documents.
const POOL_AND_ADVERTISEMENT: &str = "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: e2e-bgp, namespace: ferrolb-system}
spec:
  addresses: [\"203.0.113.128/25\", \"2001:db8:ee::/64\"]
---
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: e2e-bgp, namespace: ferrolb-system}
spec:
  ipAddressPools: [e2e-bgp]
  communities: [\"64513:100\"]
---
";

fn config() -> String {
    POOL_AND_ADVERTISEMENT.to_string()
        + "apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: router-v4, namespace: ferrolb-system}
spec: {myASN: 64513, peerASN: 64512, peerAddress: 192.0.2.1}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: router-v6, namespace: ferrolb-system}
spec: {myASN: 64513, peerASN: 64512, peerAddress: \"2001:db8:2::1\"}
"
}

/// A dual-stack LoadBalancer Service `default/web` and an EndpointSlice with one ready endpoint
/// on each of `nodes`.
fn service(etp_local: bool, nodes: &[&str]) -> String {
    let policy = if etp_local { "Local" } else { "Cluster" };
    let mut yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-e2e
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
"
    );
    for node in nodes {
        let index: usize = node.trim_start_matches("node").parse().unwrap();
        yaml.push_str(&format!(
            "- addresses: [\"{}\"]\n  nodeName: {node}\n  conditions: {{ready: true, serving: true}}\n",
            node_addresses(index).0
        ));
    }
    yaml
}

fn eventually<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    ferrolb_tests::harness::eventually_ok(what, DEADLINE, check)
}

fn vtysh_json(router: &Router, command: &str) -> Result<Value, String> {
    router.vtysh_json(command)
}

/// FRR's BGP paths for `prefix`: (next hop, community string) per path.
fn bgp_paths(router: &Router, prefix: &str) -> Result<(BTreeSet<IpAddr>, Value), String> {
    let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
    let table = vtysh_json(router, &format!("show bgp {family} unicast {prefix} json"))?;
    let paths = table["paths"].as_array().cloned().unwrap_or_default();
    let hops = paths
        .iter()
        .filter_map(|p| p["nexthops"][0]["ip"].as_str())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    Ok((hops, table))
}

fn node_hops(nodes: &[&str], v4: bool) -> BTreeSet<IpAddr> {
    nodes
        .iter()
        .map(|n| {
            let (a4, a6) = node_addresses(n.trim_start_matches("node").parse().unwrap());
            if v4 { IpAddr::V4(a4) } else { IpAddr::V6(a6) }
        })
        .collect()
}

/// Waits until FRR has exactly `nodes`' paths for `prefix`, each with the community.
fn wait_paths(router: &Router, prefix: &str, nodes: &[&str]) {
    let want = node_hops(nodes, !prefix.contains(':'));
    let table = eventually(&format!("FRR: {prefix} from {nodes:?}"), || {
        let (hops, table) = bgp_paths(router, prefix)?;
        (hops == want)
            .then(|| table.clone())
            .ok_or_else(|| format!("next hops {hops:?}: {table}"))
    });
    for path in table["paths"].as_array().unwrap() {
        assert_eq!(path["community"]["string"], "64513:100", "{path}");
        assert_eq!(path["aspath"]["string"], "64513", "{path}");
    }
    eprintln!("FRR BGP table for {prefix}: {table}");
}

/// The BGP identifier FRR received from each of `nodes` on its session of one family, as
/// `show bgp neighbors <address> json` reports it (`remoteRouterId`); an error until every one
/// of them is Established.
fn remote_router_ids(router: &Router, nodes: &[&str], v4: bool) -> Result<Vec<String>, String> {
    node_hops(nodes, v4)
        .iter()
        .map(|hop| {
            let reply = vtysh_json(router, &format!("show bgp neighbors {hop} json"))?;
            let neighbor = &reply[hop.to_string()];
            match (
                neighbor["bgpState"].as_str(),
                neighbor["remoteRouterId"].as_str(),
            ) {
                (Some("Established"), Some(id)) => Ok(id.to_string()),
                _ => Err(format!("{hop}: {reply}")),
            }
        })
        .collect()
}

/// docs/configuration.md: `routerID` unset means the node's IPv4 address (the lab nodes' only
/// one, also for their IPv6 sessions); FRR sees it on every session of `nodes`.
fn assert_default_router_ids(router: &Router, nodes: &[&str], v4: bool) {
    let expected: Vec<String> = node_hops(nodes, true)
        .iter()
        .map(ToString::to_string)
        .collect();
    let family = if v4 { "IPv4" } else { "IPv6" };
    let ids = eventually(&format!("FRR: {family} sessions of {nodes:?}"), || {
        remote_router_ids(router, nodes, v4)
    });
    assert_eq!(
        ids, expected,
        "router IDs FRR sees on the {family} sessions"
    );
}

/// `router bgp` configuration lines (retried while bgpd starts; the lines are not printed:
/// one may carry a password).
fn configure_router(router: &Router, lines: &[&str]) {
    eventually(
        &format!("bgpd: {} configuration line(s)", lines.len()),
        || router.configure_bgp(lines).map_err(|e| e.to_string()),
    );
}

#[test]
fn e2e_bgp_every_node_advertises_to_frr() {
    let test = "e2e_bgp_every_node_advertises_to_frr";
    let Some(lab) = TestLab::start(test, 3).unwrap() else {
        return;
    };
    let probe = L2Probe::new(&lab);
    let router = lab.netlab().router();
    // So that bgpd logs the NOTIFICATIONs it receives.
    configure_router(&router, &["bgp log-neighbor-changes"]);
    probe.apply("bgp-config", &config());
    probe.apply("svc", &service(false, &NODES));
    let (v4, v6) = probe.service_ips("web", ASSIGN_TIMEOUT);
    eprintln!("service IPs {v4} {v6}");
    assert!(
        "203.0.113.128/25"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&v4)
    );
    let p4 = format!("{v4}/32");
    let p6 = format!("{v6}/128");

    // Every node advertises both IPs; FRR spreads over the three (ECMP).
    wait_paths(&router, &p4, &NODES);
    wait_paths(&router, &p6, &NODES);
    let rib = eventually(&format!("FRR RIB: {p4} via 3 next hops"), || {
        let hops = router.rib_next_hops(&p4)?;
        (hops == node_hops(&NODES, true))
            .then_some(hops.clone())
            .ok_or_else(|| format!("{hops:?}"))
    });
    eprintln!("FRR RIB {p4}: {rib:?}");
    let summary = vtysh_json(&router, "show bgp summary json").unwrap();
    eprintln!("FRR summary: {summary}");
    // Neither BGPPeer sets routerID: each node presents its IPv4 address, on both sessions.
    assert_default_router_ids(&router, &NODES, true);
    assert_default_router_ids(&router, &NODES, false);

    // node3's speaker stopped gracefully (SIGTERM): it sends a Cease on its sessions and FRR
    // drops its paths at once.
    probe.signal_speaker("node3", "-TERM");
    wait_paths(&router, &p4, &NODES[..2]);
    wait_paths(&router, &p6, &NODES[..2]);
    let cease = eventually("bgpd.log: node3's Cease", || {
        let log = std::fs::read_to_string(router.dir.join("bgpd.log")).unwrap_or_default();
        log.lines()
            .find(|l| {
                l.contains("192.0.2.13")
                    && l.contains("NOTIFICATION")
                    && l.contains("Administrative Shutdown")
            })
            .map(str::to_string)
            .ok_or_else(|| "no NOTIFICATION from 192.0.2.13".to_string())
    });
    eprintln!("bgpd.log: {cease}");

    // externalTrafficPolicy Local with the endpoint on node2 only: only node2 advertises.
    probe.apply("svc-local", &service(true, &["node2"]));
    wait_paths(&router, &p4, &["node2"]);
    wait_paths(&router, &p6, &["node2"]);

    // The Service gone: withdrawn from every node.
    probe.kubectl(&["delete", "service", "-n", "default", "web"]);
    for prefix in [&p4, &p6] {
        eventually(&format!("FRR: {prefix} withdrawn"), || {
            let (hops, table) = bgp_paths(&router, prefix)?;
            hops.is_empty()
                .then_some(())
                .ok_or_else(|| table.to_string())
        });
    }
    // The sessions stay up without routes.
    let summary = vtysh_json(&router, "show bgp summary json").unwrap();
    for (af, v4) in [("ipv4Unicast", true), ("ipv6Unicast", false)] {
        for hop in node_hops(&NODES[..2], v4) {
            let peer = &summary[af]["peers"][hop.to_string()];
            assert_eq!(peer["state"], "Established", "{hop}: {peer}");
            assert_eq!(peer["pfxRcd"], 0, "{hop}: {peer}");
        }
    }
}

/// FRR's password for the node LAN's IPv4 neighbours (the peer group of its listen range).
const MD5_KEY: &str = "lab-md5-key";

fn secret(password: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: router-md5, namespace: ferrolb-system}}
type: kubernetes.io/basic-auth
stringData: {{password: {password}}}
"
    )
}

fn secret_config() -> String {
    POOL_AND_ADVERTISEMENT.to_string()
        + "apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: router-v4, namespace: ferrolb-system}
spec:
  myASN: 64513
  peerASN: 64512
  peerAddress: 192.0.2.1
  connectTime: 2s
  passwordSecret: {name: router-md5, namespace: ferrolb-system}
"
}

/// `kubectl get <kind> -n ferrolb-system -o json`'s items.
fn items(probe: &L2Probe, kind: &str) -> Vec<Value> {
    let text = probe.kubectl(&["get", kind, "-n", "ferrolb-system", "-o", "json"]);
    let list: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The status of `node`'s BGPSessionState for `peer`.
fn session_state(probe: &L2Probe, node: &str, peer: &str) -> Result<Value, String> {
    items(probe, "bgpsessionstates")
        .into_iter()
        .map(|o| o["status"].clone())
        .find(|s| s["node"] == node && s["peer"] == peer)
        .ok_or_else(|| format!("no BGPSessionState for {node}/{peer}"))
}

#[test]
fn e2e_bgp_status_secret_and_ext() {
    let test = "e2e_bgp_status_secret_and_ext";
    let Some(lab) = TestLab::start(test, 2).unwrap() else {
        return;
    };
    let nodes = ["node1", "node2"];
    let probe = L2Probe::new(&lab);
    let router = lab.netlab().router();
    configure_router(
        &router,
        &[
            "bgp log-neighbor-changes",
            &format!("neighbor nodes4 password {MD5_KEY}"),
        ],
    );

    // A wrong key first: no session, and the reason is visible with kubectl.
    probe.apply("secret", &secret("not-the-key"));
    probe.apply("bgp-config", &secret_config());
    probe.apply("svc", &service(false, &nodes));
    let (v4, _) = probe.service_ips("web", ASSIGN_TIMEOUT);
    let p4 = format!("{v4}/32");
    let down = eventually(
        "BGPSessionState with the wrong key: down, with a reason",
        || {
            let state = session_state(&probe, "node1", "router-v4")?;
            (state["bgpState"] != "Established" && state["lastError"].is_string())
                .then(|| state.clone())
                .ok_or_else(|| state.to_string())
        },
    );
    eprintln!("with the wrong key: {down}");
    eprintln!(
        "{}",
        probe.kubectl(&["get", "bgpsessionstates", "-n", "ferrolb-system"])
    );
    assert!(bgp_paths(&router, &p4).unwrap().0.is_empty());

    // The right key: the session is re-keyed and comes up.
    probe.apply("secret", &secret(MD5_KEY));
    wait_paths(&router, &p4, &nodes);
    for node in nodes {
        let state = eventually(&format!("{node}: BGPSessionState Established"), || {
            let state = session_state(&probe, node, "router-v4")?;
            (state["bgpState"] == "Established" && state["prefixesSent"] == 1)
                .then(|| state.clone())
                .ok_or_else(|| state.to_string())
        });
        assert_eq!(state["peerAddress"], "192.0.2.1:179", "{state}");
        assert!(state["establishedTime"].is_string(), "{state}");
    }
    eprintln!(
        "{}",
        probe.kubectl(&["get", "bgpsessionstates", "-n", "ferrolb-system"])
    );

    // An Event on the BGPPeer per node.
    let events = eventually("SessionEstablished Events on BGPPeer router-v4", || {
        let events: Vec<Value> = items(&probe, "events.events.k8s.io")
            .into_iter()
            .filter(|e| e["reason"] == "SessionEstablished")
            .filter(|e| {
                e["regarding"]["kind"] == "BGPPeer" && e["regarding"]["name"] == "router-v4"
            })
            .collect();
        (events.len() >= 2)
            .then(|| events.clone())
            .ok_or_else(|| format!("{events:?}"))
    });
    for event in &events {
        assert!(event["regarding"]["uid"].is_string(), "{event}");
        eprintln!("event: {}", event["note"]);
    }

    // ServiceBGPStatus: one per node, listing the peer.
    eventually("ServiceBGPStatus per node", || {
        let statuses: BTreeSet<(String, String)> = items(&probe, "servicebgpstatuses")
            .into_iter()
            .map(|o| o["status"].clone())
            .filter(|s| s["serviceName"] == "web" && s["peers"] == serde_json::json!(["router-v4"]))
            .filter_map(|s| {
                Some((
                    s["node"].as_str()?.to_string(),
                    s["serviceNamespace"].as_str()?.to_string(),
                ))
            })
            .collect();
        let want: BTreeSet<(String, String)> = nodes
            .iter()
            .map(|n| (n.to_string(), "default".to_string()))
            .collect();
        (statuses == want)
            .then_some(())
            .ok_or_else(|| format!("{statuses:?}"))
    });
    eprintln!(
        "{}",
        probe.kubectl(&["get", "servicebgpstatuses", "-n", "ferrolb-system"])
    );

    // The session's metrics.
    let metrics = probe.metrics("node1");
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(
        line("ferrolb_speaker_bgp_session_up{peer=\"router-v4\"}").ends_with(" 1"),
        "{metrics}"
    );
    assert!(
        line("ferrolb_speaker_bgp_prefixes_advertised{peer=\"router-v4\"}").ends_with(" 1"),
        "{metrics}"
    );
    let announced = format!(
        "ferrolb_speaker_announced{{service=\"default/web\",ip=\"{v4}\",protocol=\"bgp\",node=\"node1\"}} 1"
    );
    assert!(
        metrics.lines().any(|l| l == announced),
        "{announced}: {metrics}"
    );
    for kind in ["open", "update", "keepalive"] {
        let sent = line(&format!(
            "ferrolb_speaker_bgp_messages_sent_total{{peer=\"router-v4\",type=\"{kind}\"}}"
        ));
        assert!(
            !sent.is_empty() && !sent.ends_with(" 0"),
            "{kind}: {metrics}"
        );
    }

    // ext, beyond the router, reaches the Service IP: the router forwards to a node that
    // advertises it (each node accepts the IP on lo and answers on port 80).
    let dir = lab.run_dir().join("http");
    for node in nodes {
        let ns = lab.netlab().topology.ns(node);
        let root = dir.join(node);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("hello from {node}\n")).unwrap();
        Background {
            name: &format!("http-{node}"),
            ns: &ns,
            program: std::path::Path::new("python3"),
            args: vec![
                "-m".into(),
                "http.server".into(),
                "80".into(),
                "--bind".into(),
                "0.0.0.0".into(),
                "--directory".into(),
                root.display().to_string(),
            ],
            env: Default::default(),
            dir: lab.run_dir(),
        }
        .start()
        .unwrap();
        ferrolb_tests::demo::bind_service_ips_on_lo(&ns, &[v4.to_string()]).unwrap();
    }
    let ext = lab.netlab().topology.ext_ns();
    let answer = eventually(&format!("curl http://{v4}/ from ext"), || {
        let mut curl = netns::exec(&ext, "curl");
        curl.args(["-sS", "-m", "2", &format!("http://{v4}/")]);
        ferrolb_tests::cmd::stdout(curl).map_err(|e| e.to_string())
    });
    eprintln!("ext: curl http://{v4}/ -> {}", answer.trim());
    assert!(answer.starts_with("hello from node"), "{answer}");

    // The Service deleted: its route leaves the router (the issue asks for < 1 s).
    probe.kubectl(&["delete", "service", "-n", "default", "web", "--wait=false"]);
    let deleted = Instant::now();
    let withdrawn = loop {
        let (hops, _) = bgp_paths(&router, &p4).unwrap_or_default();
        if hops.is_empty() {
            break deleted.elapsed();
        }
        assert!(deleted.elapsed() < DEADLINE, "{p4} never withdrawn");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Measured, not asserted (the project keeps speed targets out of the default run): the
    // issue's target is < 1 s.
    eprintln!("{p4} withdrawn at the router {withdrawn:?} after the Service's deletion");
    eventually("ServiceBGPStatus objects removed", || {
        let left = items(&probe, "servicebgpstatuses");
        left.is_empty()
            .then_some(())
            .ok_or_else(|| format!("{left:?}"))
    });

    // The BGPPeer deleted: the sessions end and so do their BGPSessionStates.
    probe.kubectl(&["delete", "bgppeer", "-n", "ferrolb-system", "router-v4"]);
    eventually("BGPSessionStates removed", || {
        let left = items(&probe, "bgpsessionstates");
        left.is_empty()
            .then_some(())
            .ok_or_else(|| format!("{left:?}"))
    });
}

/// MetalLB's legacy ConfigMap, BGP half: a peer, a `protocol: bgp` pool, an advertisement with
/// a community alias.
const LEGACY_BGP: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: config, namespace: ferrolb-system}
data:
  config: |
    peers:
    - peer-address: 192.0.2.1
      peer-asn: 64512
      my-asn: 64513
      router-id: 198.51.100.7
    bgp-communities:
      lab: 64513:100
    address-pools:
    - name: legacy-bgp
      protocol: bgp
      addresses:
      - 203.0.113.192/27
      bgp-advertisements:
      - aggregation-length: 32
        communities: [lab]
";

#[test]
fn e2e_bgp_legacy_configmap() {
    let test = "e2e_bgp_legacy_configmap";
    let Some(lab) = TestLab::start(test, 2).unwrap() else {
        return;
    };
    let nodes = ["node1", "node2"];
    let probe = L2Probe::new(&lab);
    let router = lab.netlab().router();
    probe.apply("legacy", LEGACY_BGP);
    // An IPv4-only Service (the legacy pool has no IPv6 range).
    let svc = service(false, &nodes)
        .replace(
            "ipFamilyPolicy: RequireDualStack",
            "ipFamilyPolicy: SingleStack",
        )
        .replace("ipFamilies: [IPv4, IPv6]", "ipFamilies: [IPv4]");
    probe.apply("svc", &svc);
    let v4 = eventually("web gets an IPv4 address from the legacy pool", || {
        let ip = probe.kubectl(&[
            "get",
            "svc",
            "-n",
            "default",
            "web",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        ip.trim()
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| format!("ingress {ip:?}"))
    });
    assert!(
        "203.0.113.192/27"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&v4),
        "{v4}"
    );
    // Both nodes, with the alias's community (wait_paths checks it and the AS path).
    wait_paths(&router, &format!("{v4}/32"), &nodes);
    let sessions = items(&probe, "bgpsessionstates");
    let names: BTreeSet<String> = sessions
        .iter()
        .filter_map(|o| o["status"]["peer"].as_str().map(str::to_string))
        .collect();
    eprintln!("legacy peer's sessions: {names:?}");
    assert_eq!(names.len(), 1, "{sessions:?}");
    // `router-id` set: both nodes present it instead of their own address.
    let ids = eventually("FRR: the legacy peer's sessions", || {
        remote_router_ids(&router, &nodes, true)
    });
    assert_eq!(ids, ["198.51.100.7", "198.51.100.7"], "router IDs FRR sees");
}

/// The BFD test's configuration: the BFDProfile `fast` (the lab router's timers) on both
/// BGPPeers, with a 90 s hold time.
fn bfd_config() -> String {
    ferrolb_tests::netlab::router::bfd_profile_manifest("fast")
        + "apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: router-v4, namespace: ferrolb-system}
spec: {myASN: 64513, peerASN: 64512, peerAddress: 192.0.2.1, holdTime: 90s, bfdProfile: fast}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: router-v6, namespace: ferrolb-system}
spec: {myASN: 64513, peerASN: 64512, peerAddress: \"2001:db8:2::1\", holdTime: 90s, bfdProfile: fast}
"
}

/// Asserts that FRR tore the session with `peer` down because of BFD (its bgpd.log line for
/// the NOTIFICATION it sent: Cease / BFD Down), not because a hold timer expired. The cause,
/// not the time: timings are benchmarks.
fn assert_torn_down_by_bfd(router: &Router, peer: &str) {
    let log = std::fs::read_to_string(router.dir.join("bgpd.log")).unwrap_or_default();
    let wanted = format!("sent to neighbor {peer} 6/10 (Cease/BFD Down)");
    assert!(
        log.lines().any(|l| l.contains(&wanted)),
        "bgpd.log has no {wanted:?}:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("neighbor {peer}")) && l.contains("Hold Timer Expired")),
        "the hold timer took {peer} down:\n{log}"
    );
}

/// Sends `bytes` from the router's LAN address to node1's BFD port with this TTL.
fn send_to_node1_bfd(router_ns: &str, ttl: u32, bytes: &[u8]) {
    let (ns, bytes) = (router_ns.to_string(), bytes.to_vec());
    std::thread::spawn(move || {
        ferrolb_tests::controlplane::netns::enter_netns(&ns).expect("router namespace");
        let socket = std::net::UdpSocket::bind("192.0.2.1:0").expect("bind");
        socket.set_ttl(ttl).expect("ttl");
        let node1 = std::net::SocketAddr::new(IpAddr::V4(node_addresses(1).0), 3784);
        socket.send_to(&bytes, node1).expect("send");
    })
    .join()
    .expect("sender thread");
}

/// A speaker metric's value (the first sample whose line starts with `prefix`).
fn metric(probe: &L2Probe, node: &str, prefix: &str) -> Option<f64> {
    probe
        .metrics(node)
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// BFD with FRR (the lab router's bfdd, 100 ms × 3 on its peer groups) on both BGPPeers, whose
/// hold time is 90 s on both sides: FRR shows every node's BFD sessions (IPv4 and IPv6) up and
/// the BGPSessionStates show `bfdState: Up`; hostile datagrams to node1's port 3784 (TTL 64, a
/// version-2 packet) are dropped and counted, and node1's sessions stay up; node3 cut off from
/// the LAN: its next hop leaves FRR's RIB long before a 90 s hold timer could (the time is
/// printed; the distribution is a benchmark); node3 back: BFD and BGP come back up and its next
/// hop returns.
#[test]
fn e2e_bgp_bfd_with_frr() {
    let test = "e2e_bgp_bfd_with_frr";
    let Some(lab) = TestLab::start(test, 3).unwrap() else {
        return;
    };
    let probe = L2Probe::new(&lab);
    let router = lab.netlab().router();
    // Long BGP timers on the router too (the lab's are 1/3 s): only BFD can be fast here.
    configure_router(
        &router,
        &[
            "bgp log-neighbor-changes",
            "neighbor nodes4 timers 30 90",
            "neighbor nodes6 timers 30 90",
        ],
    );
    probe.apply(
        "bgp-config",
        &(POOL_AND_ADVERTISEMENT.to_string() + &bfd_config()),
    );
    probe.apply("svc", &service(false, &NODES));
    let (v4, _) = probe.service_ips("web", ASSIGN_TIMEOUT);
    let p4 = format!("{v4}/32");
    wait_paths(&router, &p4, &NODES);

    let all_nodes: BTreeSet<IpAddr> = node_hops(&NODES, true)
        .into_iter()
        .chain(node_hops(&NODES, false))
        .collect();
    let up = eventually("FRR: BFD up with every node, v4 and v6", || {
        let up = router.bfd_peers_up()?;
        (up == all_nodes)
            .then_some(up.clone())
            .ok_or_else(|| format!("up: {up:?}"))
    });
    eprintln!("FRR BFD peers up: {up:?}");
    let summary = vtysh_json(&router, "show bgp summary json").unwrap();
    let hold = &summary["ipv4Unicast"]["peers"]["192.0.2.11"];
    eprintln!("FRR's session with node1: {hold}");
    for peer in ["router-v4", "router-v6"] {
        let state = eventually(&format!("node1/{peer}: bfdState Up"), || {
            let status = session_state(&probe, "node1", peer)?;
            (status["bfdState"] == "Up" && status["bgpState"] == "Established")
                .then_some(status.clone())
                .ok_or_else(|| status.to_string())
        });
        eprintln!("BGPSessionState node1/{peer}: {state}");
    }
    let columns = probe.kubectl(&["get", "bgpsessionstates", "-n", "ferrolb-system"]);
    eprintln!("{columns}");
    assert!(columns.contains("BFD"), "{columns}");

    // Hostile input from the router's own address: dropped, counted, nothing else changes.
    let router_ns = lab.netlab().topology.router_ns();
    let mut valid = [0u8; 24];
    valid[0] = 0x20; // version 1, diag 0
    valid[1] = 0xc0; // Up
    valid[2] = 3;
    valid[3] = 24;
    valid[4..8].copy_from_slice(&7u32.to_be_bytes());
    send_to_node1_bfd(&router_ns, 64, &valid);
    let mut version2 = valid;
    version2[0] = 0x40;
    send_to_node1_bfd(&router_ns, 255, &version2);
    for reason in ["ttl", "unsupported_version"] {
        let prefix = format!("ferrolb_speaker_bfd_packets_dropped_total{{reason=\"{reason}\"}}");
        eventually(&format!("node1 counted a {reason} drop"), || {
            metric(&probe, "node1", &prefix)
                .filter(|n| *n >= 1.0)
                .ok_or_else(|| format!("{prefix} not ≥ 1"))
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        router
            .bfd_peers_up()
            .unwrap()
            .contains(&node_hops(&["node1"], true).into_iter().next().unwrap())
    );
    let node1 = session_state(&probe, "node1", "router-v4").unwrap();
    assert_eq!(node1["bfdState"], "Up", "{node1}");
    assert_eq!(node1["flaps"], 0, "{node1}");

    // node3 cut off: BFD takes its path out of the router's RIB, not the 90 s hold timer.
    let cut = Instant::now();
    lab.netlab().set_port("node3", false).unwrap();
    let gone = eventually("FRR RIB: node3's next hop gone", || {
        let hops = router.rib_next_hops(&p4)?;
        (hops == node_hops(&NODES[..2], true))
            .then(|| cut.elapsed())
            .ok_or_else(|| format!("{hops:?}"))
    });
    eprintln!("node3 cut off: its next hop left FRR's RIB after {gone:?} (hold time 90 s)");
    assert_torn_down_by_bfd(&router, &node_addresses(3).0.to_string());

    // node3 back: BFD Up, BGP re-established, the next hop back.
    lab.netlab().set_port("node3", true).unwrap();
    eventually("FRR: BFD up with node3 again", || {
        let up = router.bfd_peers_up()?;
        (up == all_nodes)
            .then_some(())
            .ok_or_else(|| format!("up: {up:?}"))
    });
    wait_paths(&router, &p4, &NODES);
}

/// The BGPPeer of the graceful-restart test (`enableGracefulRestart` as given; the field is
/// immutable, so each phase has its own name), with the BFDProfile `fast`: a planned stop
/// sends BFD AdminDown, which must not take the session down at the router.
fn gr_config(name: &str, graceful_restart: bool) -> String {
    let profile = ferrolb_tests::netlab::router::bfd_profile_manifest("fast");
    format!(
        "{POOL_AND_ADVERTISEMENT}{profile}apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {{name: {name}, namespace: ferrolb-system}}
spec: {{myASN: 64513, peerASN: 64512, peerAddress: 192.0.2.1, bfdProfile: fast, enableGracefulRestart: {graceful_restart}}}
"
    )
}

/// `ping` from `ext` to `ip` every 10 ms for `seconds` (a count, not `-w`: with a deadline,
/// iputils ping exits at the first ICMP error, such as the router's "net unreachable").
fn ping_from_ext(ext: &str, ip: &str, seconds: u32) -> std::process::Child {
    netns::exec(ext, "ping")
        .args([
            "-q",
            "-i",
            "0.01",
            "-W",
            "1",
            "-c",
            &(seconds * 100).to_string(),
            ip,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ping")
}

/// (sent, received) from ping's summary.
fn ping_result(child: std::process::Child) -> (u64, u64) {
    let out = child.wait_with_output().expect("ping output");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("ping said: {text}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// node1's speaker restarted (SIGTERM, then started again) while `ext` pings the Service IP
/// every 10 ms. The Service has its only endpoint on node1 (ETP Local), so only node1 announces
/// it and the router has no other path. Returns the lost replies and how often the router's
/// kernel table was seen without the route (polled every 20 ms).
fn restart_node1_under_ping(lab: &mut TestLab, probe_ip: &str, p4: &str) -> (u64, u64) {
    let ext = lab.netlab().topology.ext_ns();
    let router_ns = lab.netlab().topology.router_ns();
    let ping = ping_from_ext(&ext, probe_ip, 12);
    std::thread::sleep(Duration::from_secs(1));
    let pid = L2Probe::new(lab).speaker_pid("node1");
    L2Probe::new(lab).signal_speaker("node1", "-TERM");
    let mut missing = 0;
    let stopped = Instant::now();
    while ferrolb_tests::process::is_alive(pid) {
        assert!(stopped.elapsed() < DEADLINE, "node1's speaker did not stop");
        missing += u64::from(
            netns::ip(&router_ns, &["route", "show", p4])
                .unwrap_or_default()
                .trim()
                .is_empty(),
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.up_again().unwrap();
    let restarted = Instant::now();
    // Until the new speaker's session is up and its route replaced the stale one.
    let router = lab.netlab().router();
    loop {
        missing += u64::from(
            netns::ip(&router_ns, &["route", "show", p4])
                .unwrap_or_default()
                .trim()
                .is_empty(),
        );
        let fresh = bgp_paths(&router, p4)
            .is_ok_and(|(hops, table)| !hops.is_empty() && table["paths"][0]["stale"] != true);
        if fresh {
            break;
        }
        assert!(
            restarted.elapsed() < DEADLINE,
            "no fresh route after the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (sent, received) = ping_result(ping);
    eprintln!("ping from ext every 10 ms: {sent} sent, {received} received");
    (sent - received, missing)
}

/// Graceful restart (RFC 4724) with FRR as the helper (`bgp graceful-restart`) and BFD on:
/// node1's speaker restarted with `enableGracefulRestart: true` loses no ping reply from `ext`,
/// and the route never leaves the router's kernel table (the old speaker closes without a
/// NOTIFICATION and lets BFD go silent; FRR keeps the route stale until the new speaker's table
/// and End-of-RIB). Then node1 cut off: BFD, not the 120 s restart time, takes the route out.
/// The same restart without graceful restart (Cease): the loss is printed.
#[test]
fn e2e_bgp_graceful_restart_keeps_traffic() {
    let test = "e2e_bgp_graceful_restart_keeps_traffic";
    let Some(mut lab) = TestLab::start(test, 3).unwrap() else {
        return;
    };
    let probe = L2Probe::new(&lab);
    let router = lab.netlab().router();
    configure_router(
        &router,
        &["bgp log-neighbor-changes", "bgp graceful-restart"],
    );
    probe.apply("bgp-config", &gr_config("router-gr", true));
    probe.apply("svc", &service(true, &["node1"]));
    let (v4, _) = probe.service_ips("web", ASSIGN_TIMEOUT);
    let p4 = format!("{v4}/32");
    wait_paths(&router, &p4, &["node1"]);
    let node1 = lab.netlab().topology.ns("node1");
    ferrolb_tests::demo::bind_service_ips_on_lo(&node1, &[v4.to_string()]).unwrap();
    let neighbor = vtysh_json(&router, "show bgp neighbors 192.0.2.11 json").unwrap();
    eprintln!(
        "FRR's view of node1's graceful restart: {}",
        neighbor["192.0.2.11"]["gracefulRestartInfo"]
    );

    let (lost, missing) = restart_node1_under_ping(&mut lab, &v4.to_string(), &p4);
    eprintln!("with graceful restart: {lost} replies lost, route missing in {missing} polls");
    assert_eq!(lost, 0, "replies lost across a graceful restart");
    assert_eq!(missing, 0, "the route left the router's kernel table");

    // A node death with graceful restart and BFD on: BFD, not the restart time, decides.
    let router_ns = lab.netlab().topology.router_ns();
    let cut = Instant::now();
    lab.netlab().set_port("node1", false).unwrap();
    let gone = eventually(
        "node1 cut off: the route gone from the router's kernel",
        || {
            let route =
                netns::ip(&router_ns, &["route", "show", &p4]).map_err(|e| e.to_string())?;
            route
                .trim()
                .is_empty()
                .then(|| cut.elapsed())
                .ok_or_else(|| format!("still there: {route}"))
        },
    );
    eprintln!("node1 cut off with graceful restart and BFD on: route gone after {gone:?}");
    // A BFD Down is a hard reset at FRR: the route is not kept stale for the restart time
    // (the wait above gives up long before 120 s).
    assert_torn_down_by_bfd(&router, &node_addresses(1).0.to_string());
    lab.netlab().set_port("node1", true).unwrap();
    wait_paths(&router, &p4, &["node1"]);

    // Without graceful restart: the old speaker's Cease withdraws the route.
    let probe = L2Probe::new(&lab);
    probe.kubectl(&["delete", "bgppeer", "-n", "ferrolb-system", "router-gr"]);
    probe.apply("bgp-config-nogr", &gr_config("router-plain", false));
    wait_paths(&router, &p4, &["node1"]);
    let (lost, missing) = restart_node1_under_ping(&mut lab, &v4.to_string(), &p4);
    eprintln!(
        "without graceful restart: {lost} replies lost (10 ms apart), route missing in {missing} polls"
    );
}

/// Multihop BFD (RFC 5883, UDP 4784), in passive mode: one node peers with the router's
/// outside address 198.51.100.1, one hop beyond its LAN, with `ebgpMultiHop` and a 90 s hold
/// time; FRR has it as a static multihop neighbour with BFD (active). FRR shows the multihop BFD session up, the
/// BGPSessionState `bfdState: Up`; the node cut off: its route leaves FRR's RIB long before the
/// hold timer (printed).
#[test]
fn e2e_bgp_bfd_multihop_with_frr() {
    let test = "e2e_bgp_bfd_multihop_with_frr";
    let Some(lab) = TestLab::start(test, 1).unwrap() else {
        return;
    };
    let probe = L2Probe::new(&lab);
    let router = lab.netlab().router();
    let node1 = node_addresses(1).0.to_string();
    let neighbor = |line: &str| format!("neighbor {node1} {line}");
    configure_router(
        &router,
        &[
            "bgp log-neighbor-changes",
            &neighbor("remote-as 64513"),
            &neighbor("ebgp-multihop 255"),
            &neighbor("update-source 198.51.100.1"),
            &neighbor("timers 30 90"),
            &neighbor("bfd"),
            &neighbor("bfd profile lab"),
        ],
    );
    // Passive (waits for the router's first packet), with the router's timers.
    let config = "apiVersion: ferrolb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: ferrolb-system}
spec: {receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3, passiveMode: true}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: router-outside, namespace: ferrolb-system}
spec: {myASN: 64513, peerASN: 64512, peerAddress: 198.51.100.1, ebgpMultiHop: true, holdTime: 90s, bfdProfile: fast}
".to_string();
    probe.apply(
        "bgp-config",
        &(POOL_AND_ADVERTISEMENT.to_string() + &config),
    );
    probe.apply("svc", &service(false, &["node1"]));
    let (v4, _) = probe.service_ips("web", ASSIGN_TIMEOUT);
    let p4 = format!("{v4}/32");
    wait_paths(&router, &p4, &["node1"]);
    let peer = eventually("FRR: multihop BFD with node1 up", || {
        let peers = vtysh_json(&router, "show bfd peers json")?;
        peers
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|p| p["peer"] == node1 && p["multihop"] == true && p["status"] == "up")
            })
            .cloned()
            .ok_or_else(|| peers.to_string())
    });
    eprintln!("FRR's multihop BFD peer: {peer}");
    let state = eventually("node1/router-outside: bfdState Up", || {
        let status = session_state(&probe, "node1", "router-outside")?;
        (status["bfdState"] == "Up")
            .then_some(status.clone())
            .ok_or_else(|| status.to_string())
    });
    eprintln!("BGPSessionState: {state}");

    let cut = Instant::now();
    lab.netlab().set_port("node1", false).unwrap();
    let gone = eventually("FRR RIB: node1's route gone", || {
        let hops = router.rib_next_hops(&p4)?;
        hops.is_empty()
            .then(|| cut.elapsed())
            .ok_or_else(|| format!("{hops:?}"))
    });
    eprintln!(
        "node1 cut off: its route left FRR's RIB after {gone:?} (multihop BFD, hold time 90 s)"
    );
    assert_torn_down_by_bfd(&router, &node1);
}
