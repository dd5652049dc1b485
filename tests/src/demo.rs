//! `lab up --demo` (the controller is required; without a real speaker the demo stops after
//! showing the assigned IPs):
//!
//! - layer2: an IPAddressPool + L2Advertisement and a dual-stack LoadBalancer Service
//!   `default/demo` whose EndpointSlices point at an HTTP responder on every node; `curl` from
//!   `client`, on the node LAN, to the IPs FerroLB assigned and announces;
//! - BGP: a second pool (`autoAssign: false`, from 203.0.113.128/25 and 2001:db8:ee::/64), a
//!   BGPAdvertisement with community 64513:100, two BGPPeers (the lab router's IPv4 and IPv6
//!   addresses) with a BFDProfile (100 ms × 3, as the router's) and a second Service `default/demo-bgp` that asks for that pool; the router's
//!   kernel route with one next hop per node, and `curl` from `ext`, beyond the router.
//!
//! There is no kube-proxy in the lab, so the demo does its job on each node: the Service IPs go
//! on `lo` (as IPVS mode binds them, with `strictARP`'s `arp_ignore`/`arp_announce`, so the
//! kernel never answers ARP/NDP for them) and an nftables rule redirects port 80 to the local
//! responder on 8080. Only the speakers' ARP/NDP answers make the IPs reachable from `client`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cmd;
use crate::controlplane::{ControlPlane, FERROLB_NAMESPACE};
use crate::lab::{Lab, real_binary};
use crate::netlab::netns;
use crate::netlab::topology::{NODE_ASN, ROUTER_ASN, ROUTER_LAN_V4, ROUTER_LAN_V6};
use crate::process::Background;

/// The demo pool, inside the node LAN so that layer2 announcements reach the client.
pub const DEMO_POOL: [&str; 2] = ["192.0.2.100-192.0.2.109", "2001:db8:2::100-2001:db8:2::109"];
/// Port of the HTTP responders on the nodes (the Service's targetPort).
pub const RESPONDER_PORT: u16 = 8080;
const SERVICE: &str = "demo";
/// The BGP half's pool (not auto-assigned: only Services that ask for it get its addresses).
pub const DEMO_BGP_POOL: [&str; 2] = ["203.0.113.128/25", "2001:db8:ee::/64"];
const BGP_SERVICE: &str = "demo-bgp";
/// The community the demo's BGPAdvertisement attaches.
pub const DEMO_COMMUNITY: &str = "64513:100";
const NFT_TABLE: &str = "ferrolb-demo";
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);
const REACH_TIMEOUT: Duration = Duration::from_secs(30);

/// The demo's Kubernetes objects for a lab with these nodes (`(name, ipv4, ipv6)`), as YAML.
pub fn manifest(nodes: &[(String, String, String)]) -> String {
    let mut yaml = format!(
        "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {{name: demo, namespace: {FERROLB_NAMESPACE}}}
spec:
  addresses: [\"{}\", \"{}\"]
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {{name: demo, namespace: {FERROLB_NAMESPACE}}}
spec:
  ipAddressPools: [demo]
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {{name: demo-bgp, namespace: {FERROLB_NAMESPACE}}}
spec:
  addresses: [\"{}\", \"{}\"]
  autoAssign: false
---
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: demo-bgp, namespace: {FERROLB_NAMESPACE}}}
spec:
  ipAddressPools: [demo-bgp]
  communities: [\"{DEMO_COMMUNITY}\"]
---
apiVersion: ferrolb.io/v1beta1
kind: BFDProfile
metadata: {{name: demo-bfd, namespace: {FERROLB_NAMESPACE}}}
spec: {{receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3}}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {{name: router-v4, namespace: {FERROLB_NAMESPACE}}}
spec: {{myASN: {NODE_ASN}, peerASN: {ROUTER_ASN}, peerAddress: \"{ROUTER_LAN_V4}\", bfdProfile: demo-bfd}}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {{name: router-v6, namespace: {FERROLB_NAMESPACE}}}
spec: {{myASN: {NODE_ASN}, peerASN: {ROUTER_ASN}, peerAddress: \"{ROUTER_LAN_V6}\", bfdProfile: demo-bfd}}
",
        DEMO_POOL[0], DEMO_POOL[1], DEMO_BGP_POOL[0], DEMO_BGP_POOL[1]
    );
    yaml.push_str(&service_manifest(SERVICE, None, nodes));
    yaml.push_str(&service_manifest(BGP_SERVICE, Some("demo-bgp"), nodes));
    yaml
}

/// A dual-stack LoadBalancer Service (from `pool` if given) and its two EndpointSlices, one
/// ready endpoint per node.
fn service_manifest(name: &str, pool: Option<&str>, nodes: &[(String, String, String)]) -> String {
    let annotations = pool.map_or(String::new(), |pool| {
        format!(", annotations: {{ferrolb.io/address-pool: {pool}}}")
    });
    let mut yaml = format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default{annotations}}}
spec:
  type: LoadBalancer
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv4, IPv6]
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: {RESPONDER_PORT}, protocol: TCP}}]
"
    );
    // No kubelet and no endpoint controller pods: the EndpointSlices are written by hand.
    for (family, pick) in [("IPv4", 1), ("IPv6", 2)] {
        let _ = write!(
            yaml,
            "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{lower}
  namespace: default
  labels: {{kubernetes.io/service-name: {name}, endpointslice.kubernetes.io/managed-by: ferrolb-lab}}
addressType: {family}
ports: [{{name: http, port: {RESPONDER_PORT}, protocol: TCP}}]
endpoints:
",
            lower = family.to_ascii_lowercase()
        );
        for node in nodes {
            let address = if pick == 1 { &node.1 } else { &node.2 };
            let _ = writeln!(
                yaml,
                "- addresses: [\"{address}\"]\n  nodeName: {}\n  conditions: {{ready: true, serving: true, terminating: false}}",
                node.0
            );
        }
    }
    yaml
}

/// The nftables ruleset that stands in for kube-proxy on a node.
pub fn nft_ruleset(service_ips: &[String]) -> String {
    let mut rules = String::new();
    for ip in service_ips {
        let family = if ip.contains(':') { "ip6" } else { "ip" };
        let _ = writeln!(
            rules,
            "    {family} daddr {ip} tcp dport 80 redirect to :{RESPONDER_PORT}"
        );
    }
    format!(
        "table inet {NFT_TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// Runs the layer2 demo in a lab that is up.
pub fn run(lab: &Lab, control_plane: &ControlPlane) -> anyhow::Result<()> {
    if let Err(why) = real_binary(&lab.binaries.controller) {
        println!("demo: skipped: the FerroLB controller is needed ({why})");
        return Ok(());
    }
    // Without a speaker the demo still shows the assignment, but nobody announces the IPs.
    let speaker = real_binary(&lab.binaries.speaker);
    let topology = &lab.netlab.topology;
    let dir = lab.run_dir().join("demo");
    let nodes: Vec<(String, String, String)> = topology
        .nodes()
        .map(|node| {
            (
                node.name.clone(),
                node.ipv4.to_string(),
                node.ipv6.to_string(),
            )
        })
        .collect();

    // HTTP responders, one per node, each saying which node answered.
    for (name, _, _) in &nodes {
        let root = dir.join(name);
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        fs::write(root.join("index.html"), format!("hello from {name}\n"))?;
        let started = Background {
            name: &format!("demo-http-{name}"),
            ns: &topology.ns(name),
            program: Path::new("python3"),
            args: vec![
                "-m".into(),
                "http.server".into(),
                RESPONDER_PORT.to_string(),
                "--bind".into(),
                "::".into(),
                "--directory".into(),
                root.display().to_string(),
            ],
            env: BTreeMap::new(),
            dir: lab.run_dir(),
        }
        .start()?;
        println!("demo: HTTP responder on {name}:{RESPONDER_PORT} ({started})");
    }

    let manifest_path = dir.join("demo.yaml");
    fs::write(&manifest_path, manifest(&nodes))?;
    control_plane.kubectl_output([
        "apply".as_ref(),
        "--server-side".as_ref(),
        "-f".as_ref(),
        manifest_path.as_os_str(),
    ])?;
    println!("demo: applied {}", manifest_path.display());

    let service_ips = wait_for_ingress(control_plane, SERVICE)?;
    let bgp_ips = wait_for_ingress(control_plane, BGP_SERVICE)?;
    // `lab fail` reads them from here, so that it works while the API server is away too.
    fs::write(dir.join(SERVICE_IPS_FILE), service_ips.join("\n") + "\n")?;
    fs::write(dir.join(BGP_SERVICE_IPS_FILE), bgp_ips.join("\n") + "\n")?;
    println!(
        "demo: Service default/{SERVICE} got {} (layer2)",
        service_ips.join(", ")
    );
    println!(
        "demo: Service default/{BGP_SERVICE} got {} (BGP)",
        bgp_ips.join(", ")
    );
    println!(
        "demo: kubectl get svc {SERVICE} {BGP_SERVICE}\n{}",
        control_plane.kubectl_output([
            "get",
            "svc",
            SERVICE,
            BGP_SERVICE,
            "-n",
            "default",
            "-o",
            "wide"
        ])?
    );

    if let Err(why) = speaker {
        println!("demo: speakers {why}: nobody announces these IPs yet, so no curl from client");
        return Ok(());
    }

    let all_ips: Vec<String> = service_ips.iter().chain(&bgp_ips).cloned().collect();
    let ruleset = dir.join("kube-proxy.nft");
    fs::write(&ruleset, nft_ruleset(&all_ips))?;
    for (name, _, _) in &nodes {
        let ns = topology.ns(name);
        let mut delete = netns::exec(&ns, "nft");
        delete.args(["delete", "table", "inet", NFT_TABLE]);
        // Absent on the first run.
        let _ = cmd::run(delete);
        let mut apply = netns::exec(&ns, "nft");
        apply.arg("-f").arg(&ruleset);
        cmd::run(apply)?;
        bind_service_ips_on_lo(&ns, &all_ips)?;
    }

    let client = topology.client_ns();
    for ip in &service_ips {
        let url = service_url(ip);
        let answer = curl_until_answered(&client, &url)?;
        let neighbour = netns::ip(&client, &["neigh", "show", ip]).unwrap_or_default();
        println!(
            "demo: curl {url} from client -> {} (client's neighbour entry: {})",
            answer.trim(),
            neighbour.trim()
        );
    }

    // The BGP half: the router learns the IPs from every node and spreads over them (ECMP).
    let router = topology.router_ns();
    let node_count = nodes.len();
    for ip in &bgp_ips {
        let route = wait_for_router_route(&router, ip, node_count)?;
        println!(
            "demo: router's route to {ip} (ip -n {router} route show {ip}):\n{}",
            route.trim_end()
        );
    }
    let ext = topology.ext_ns();
    for ip in &bgp_ips {
        let url = service_url(ip);
        let answer = curl_until_answered(&ext, &url)?;
        println!(
            "demo: curl {url} from ext (through the router) -> {}",
            answer.trim()
        );
    }
    println!(
        "demo: try `ip netns exec {client} curl http://{}/` and `ip netns exec {ext} curl http://{}/`, \
         then `cargo xtask lab fail <node>` to cut a node off: another node answers the layer2 IP \
         and the router drops that node's next hop",
        service_ips.first().map_or("<ip>", String::as_str),
        bgp_ips.first().map_or("<ip>", String::as_str),
    );
    Ok(())
}

/// `ip route show` of `ip` in the router namespace (multi-line with ECMP).
fn router_route(router_ns: &str, ip: &str) -> String {
    let family = if ip.contains(':') { "-6" } else { "-4" };
    netns::ip(router_ns, &[family, "route", "show", ip]).unwrap_or_default()
}

/// The next hops of the router's kernel route to `ip` (`nexthop via X` lines, or one `via X`).
pub fn router_next_hops(router_ns: &str, ip: &str) -> Vec<String> {
    let route = router_route(router_ns, ip);
    let words: Vec<&str> = route.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect()
}

/// Waits until the router's kernel route to `ip` has `count` next hops; returns the route.
fn wait_for_router_route(router_ns: &str, ip: &str, count: usize) -> anyhow::Result<String> {
    let deadline = Instant::now() + REACH_TIMEOUT;
    loop {
        if router_next_hops(router_ns, ip).len() == count {
            return Ok(router_route(router_ns, ip));
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "demo: the router has no route to {ip} via {count} nodes within {REACH_TIMEOUT:?} \
                 (now: {:?}); see speaker-*.log and router/bgpd.log in the run directory",
                router_route(router_ns, ip)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Where `run` records the demo Service's IPs (one per line) in the demo directory.
const SERVICE_IPS_FILE: &str = "service-ips";
/// The same for the BGP Service.
const BGP_SERVICE_IPS_FILE: &str = "bgp-service-ips";

/// `lab fail NODE`: cuts NODE off the LAN (its switch port goes down, as when a server dies) and
/// curls the demo Service from `client` until another node answers, printing how long it took.
/// It needs nothing from the API server (the Service's IPs were recorded by the demo), so it
/// also shows a failover while the API server is stopped.
pub fn fail(lab: &Lab, node: &str) -> anyhow::Result<()> {
    let topology = &lab.netlab.topology;
    if !topology.nodes().any(|n| n.name == node) {
        anyhow::bail!("no node {node:?} in lab {:?}", lab.prefix());
    }
    let client = topology.client_ns();
    let recorded = lab.run_dir().join("demo").join(SERVICE_IPS_FILE);
    let urls: Vec<String> = fs::read_to_string(&recorded)
        .with_context(|| {
            format!(
                "reading {}: has the demo run? (cargo xtask lab up --demo)",
                recorded.display()
            )
        })?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|ip| service_url(ip.trim()))
        .collect();
    for url in &urls {
        let before = curl_until_answered(&client, url)?;
        println!("fail: before: curl {url} -> {}", before.trim());
    }
    let router = topology.router_ns();
    let node_hops: Vec<String> = topology
        .nodes()
        .filter(|n| n.name == node)
        .flat_map(|n| [n.ipv4.to_string(), n.ipv6.to_string()])
        .collect();
    // Absent when the demo ran before it had a BGP half.
    let bgp_ips: Vec<String> =
        fs::read_to_string(lab.run_dir().join("demo").join(BGP_SERVICE_IPS_FILE))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect();
    for ip in &bgp_ips {
        println!(
            "fail: before: router's next hops for {ip}: {}",
            router_next_hops(&router, ip).join(", ")
        );
    }
    lab.netlab.set_port(node, false)?;
    let cut = Instant::now();
    println!(
        "fail: {node} cut off (ip -n {} link set {node} down)",
        topology.switch_ns()
    );
    for url in &urls {
        let deadline = Instant::now() + REACH_TIMEOUT;
        loop {
            let mut curl = netns::exec(&client, "curl");
            curl.args(["-sS", "-m", "0.2", url]);
            match cmd::stdout(curl) {
                Ok(body) if !body.contains(&format!("from {node}\n")) => {
                    println!(
                        "fail: after {:>5} ms: curl {url} -> {}",
                        cut.elapsed().as_millis(),
                        body.trim()
                    );
                    break;
                }
                _ if Instant::now() >= deadline => anyhow::bail!(
                    "fail: no other node answered {url} within {REACH_TIMEOUT:?}; see speaker-*.log in {}",
                    lab.run_dir().display()
                ),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    // BGP: the router drops the node's next hop when its session goes down (the lab router's
    // hold time is 3 s; BFD would be faster).
    for ip in &bgp_ips {
        let deadline = Instant::now() + REACH_TIMEOUT;
        loop {
            let hops = router_next_hops(&router, ip);
            if !hops.is_empty() && !hops.iter().any(|h| node_hops.contains(h)) {
                println!(
                    "fail: after {:>5} ms: router's next hops for {ip}: {}",
                    cut.elapsed().as_millis(),
                    hops.join(", ")
                );
                break;
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "fail: the router still routes {ip} via {node} (or nowhere) after {REACH_TIMEOUT:?}: {hops:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!("fail: bring {node} back with `cargo xtask lab heal {node}`");
    Ok(())
}

/// `lab heal NODE`: reconnects NODE's switch port.
pub fn heal(lab: &Lab, node: &str) -> anyhow::Result<()> {
    if !lab.netlab.topology.nodes().any(|n| n.name == node) {
        anyhow::bail!("no node {node:?} in lab {:?}", lab.prefix());
    }
    lab.netlab.set_port(node, true)?;
    println!("heal: {node} reconnected");
    Ok(())
}

fn service_url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]/")
    } else {
        format!("http://{ip}/")
    }
}

/// Puts the Service IPs on the node's `lo`, as kube-proxy's IPVS mode puts them on `kube-ipvs0`,
/// so the node's kernel accepts (and answers ping on) traffic for them; with `arp_ignore=1` and
/// `arp_announce=2` (kube-proxy's `strictARP`) the kernel never answers ARP for them on `eth0`,
/// and IPv6 neighbour discovery only answers for addresses of the receiving interface, so only
/// the speakers' ARP/NDP answers decide which node the client reaches. `ns` is a node's
/// namespace; also used by end-to-end tests that need the nodes to accept traffic for the IPs.
pub fn bind_service_ips_on_lo(ns: &str, service_ips: &[String]) -> anyhow::Result<()> {
    netns::sysctl(
        ns,
        &[
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.eth0.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
            "net.ipv4.conf.eth0.arp_announce=2",
        ],
    )?;
    for ip in service_ips {
        let prefix = if ip.contains(':') { "128" } else { "32" };
        netns::ip(
            ns,
            &["addr", "replace", &format!("{ip}/{prefix}"), "dev", "lo"],
        )?;
    }
    Ok(())
}

fn wait_for_ingress(control_plane: &ControlPlane, service: &str) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + ASSIGN_TIMEOUT;
    loop {
        let ips = control_plane.kubectl_output([
            "get",
            "service",
            service,
            "-n",
            "default",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ])?;
        let ips: Vec<String> = ips.split_whitespace().map(str::to_string).collect();
        if !ips.is_empty() {
            return Ok(ips);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "demo: Service default/{service} got no IP within {ASSIGN_TIMEOUT:?}; see controller.log in the run directory"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn curl_until_answered(client_ns: &str, url: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + REACH_TIMEOUT;
    loop {
        let mut curl = netns::exec(client_ns, "curl");
        curl.args(["-sS", "-m", "3", url]);
        match cmd::stdout(curl) {
            Ok(body) => return Ok(body),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| {
                    format!("demo: {url} not reachable from client; see speaker-*.log in the run directory")
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_has_pool_advertisement_service_and_both_slices() {
        let nodes = vec![(
            "node1".to_string(),
            "192.0.2.11".to_string(),
            "2001:db8:2::11".to_string(),
        )];
        let yaml = manifest(&nodes);
        assert_eq!(yaml.matches("\n---\n").count(), 12, "{yaml}");
        assert!(yaml.contains("kind: BFDProfile"));
        assert_eq!(yaml.matches("bfdProfile: demo-bfd").count(), 2, "{yaml}");
        assert!(yaml.contains(
            "addresses: [\"192.0.2.100-192.0.2.109\", \"2001:db8:2::100-2001:db8:2::109\"]"
        ));
        assert!(yaml.contains("ipAddressPools: [demo]"));
        assert!(yaml.contains("ipAddressPools: [demo-bgp]"));
        assert!(yaml.contains("annotations: {ferrolb.io/address-pool: demo-bgp}"));
        assert!(yaml.contains("kubernetes.io/service-name: demo-bgp"));
        assert!(yaml.contains("peerAddress: \"2001:db8:2::1\""));
        assert!(yaml.contains("addressType: IPv6"));
        assert!(yaml.contains("- addresses: [\"2001:db8:2::11\"]\n  nodeName: node1"));
    }

    #[test]
    fn nft_ruleset_redirects_each_family() {
        let rules = nft_ruleset(&["192.0.2.100".into(), "2001:db8:2::100".into()]);
        assert!(rules.contains("ip daddr 192.0.2.100 tcp dport 80 redirect to :8080"));
        assert!(rules.contains("ip6 daddr 2001:db8:2::100 tcp dport 80 redirect to :8080"));
    }
}
