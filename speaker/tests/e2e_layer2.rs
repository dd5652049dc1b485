//! End to end in the lab (root; skipped with a printed reason otherwise, FAILS when `CI` is set):
//! a real kube-apiserver, 3 node namespaces running `ferrolb-speaker`, the real controller (it
//! must assign the Service's IPs: nothing else writes `status.loadBalancer.ingress`), and a
//! client that asks ARP/NDP for the Service IPs. The probes are `ferrolb_tests::l2probe`.
//!
//! Run: `cargo build -p ferrolb-speaker -p ferrolb-controller && cargo test -p ferrolb-speaker --test e2e_layer2 -- --nocapture`

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrolb_tests::harness::TestLab;
use ferrolb_tests::l2probe::{self, L2Probe, eventually, manifest};

const PROBES: usize = 4;

/// The value of `series` (a metric name with its labels, as exported) in a `/metrics` text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn e2e_layer2_one_owner_answers_and_fails_over() {
    let test = "e2e_layer2_one_owner_answers_and_fails_over";
    let Some(lab) = TestLab::start(test, 3).unwrap() else {
        return;
    };
    let ctx = L2Probe::new(&lab);
    ctx.wait_for_membership_secret();
    let nodes = ["node1", "node2", "node3"];
    ctx.wait_for_members(3, Duration::from_secs(30));

    ctx.apply("svc", &manifest("web", false, &nodes));
    // Assigned by the controller the lab started, or the test fails.
    let (v4, v6) = ctx.service_ips("web", l2probe::ASSIGN_TIMEOUT);
    eprintln!("service IPs {v4} {v6}");

    let owner_mac = ctx
        .wait_arp_owner(v4, None, Duration::from_secs(30))
        .expect("nobody answers ARP for the service IP");
    let owner = ctx.node_of_mac(&owner_mac);
    eprintln!("owner of {v4}: {owner} ({owner_mac})");

    // Exactly one node answers, every time (broadcast probes reach every node).
    let macs = ctx.arp_macs(v4, PROBES);
    assert_eq!(
        macs,
        BTreeSet::from([owner_mac.clone()]),
        "ARP answers for {v4}"
    );
    let v6_macs = ctx.ndp_macs(v6, PROBES);
    assert_eq!(v6_macs.len(), 1, "NDP answers for {v6}: {v6_macs:?}");
    let v6_owner = ctx.node_of_mac(v6_macs.iter().next().unwrap());
    eprintln!("owner of {v6}: {v6_owner}");

    // The client's kernel learns the owner's MAC.
    assert_eq!(ctx.prime_neighbour(v4), Some(owner_mac.clone()));

    // One status object per announcing node for this Service.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    expected.insert(owner.clone(), "web".into());
    expected.insert(v6_owner.clone(), "web".into());
    eventually("ServiceL2Status objects", Duration::from_secs(15), || {
        let statuses: BTreeMap<String, String> = ctx.l2_statuses().into_iter().collect();
        statuses == expected
    });
    let metrics = ctx.metrics(&owner);
    assert!(
        metrics.contains("ferrolb_speaker_layer2_responses_sent_total{interface=\"eth0\"}"),
        "owner metrics:\n{metrics}"
    );
    assert!(metrics.contains("ferrolb_speaker_layer2_gratuitous_sent_total"));
    let announced = format!(
        "ferrolb_speaker_announced{{service=\"default/web\",ip=\"{v4}\",protocol=\"layer2\",node=\"{owner}\"}} 1"
    );
    assert!(
        metrics.lines().any(|l| l == announced),
        "{announced}:\n{metrics}"
    );
    let other = nodes.iter().find(|n| **n != owner).unwrap();
    assert!(
        !ctx.metrics(other)
            .contains(&format!("ip=\"{v4}\",protocol=\"layer2\"")),
        "{other} exports no announcement of {v4}"
    );

    // Per-IP layer2 counters: the owner's grow with the client's requests; the others have no
    // series for the IP (they count those requests per interface only).
    let per_ip = |family: &str, ip: &dyn std::fmt::Display| {
        format!("ferrolb_speaker_layer2_ip_{family}_total{{ip=\"{ip}\"}}")
    };
    let counted = |node: &str, family: &str| sample(&ctx.metrics(node), &per_ip(family, &v4));
    let requests_before = counted(&owner, "requests_received").expect("owner's request series");
    let responses_before = counted(&owner, "responses_sent").expect("owner's response series");
    assert_eq!(
        ctx.arp_macs(v4, PROBES),
        BTreeSet::from([owner_mac.clone()])
    );
    let asked = PROBES as f64;
    let requests = counted(&owner, "requests_received").unwrap_or_default();
    let responses = counted(&owner, "responses_sent").unwrap_or_default();
    eprintln!(
        "{owner}: {v4} requests {requests_before} -> {requests}, responses {responses_before} -> {responses}"
    );
    assert!(
        requests >= requests_before + asked,
        "{PROBES} requests for {v4}"
    );
    assert!(
        responses >= responses_before + asked,
        "{PROBES} responses for {v4}"
    );
    assert!(
        counted(&owner, "gratuitous_sent").is_some_and(|sent| sent > 0.0),
        "the owner's takeover burst for {v4} is counted"
    );
    for node in nodes.iter().filter(|n| **n != owner) {
        let metrics = ctx.metrics(node);
        assert!(
            !metrics.contains(&format!("{{ip=\"{v4}\"}}")),
            "{node} has no per-IP series for {v4}:\n{metrics}"
        );
    }

    // Every speaker expects the Service's two layer2 IPs to be announced, sees the three
    // speakers alive, and has timed its membership probes.
    for node in nodes {
        let mut metrics = String::new();
        eventually(
            &format!("{node}: 2 layer2 IPs expected, 3 members alive, probes timed"),
            Duration::from_secs(15),
            || {
                metrics = ctx.metrics(node);
                sample(&metrics, "ferrolb_speaker_layer2_ips_expected") == Some(2.0)
                    && sample(
                        &metrics,
                        "ferrolb_speaker_membership_members{state=\"alive\"}",
                    ) == Some(3.0)
                    && sample(
                        &metrics,
                        "ferrolb_speaker_membership_probe_rtt_seconds_count",
                    )
                    .is_some_and(|n| n > 0.0)
            },
        );
        eprintln!(
            "{node}: probe RTT count {:?}, sum {:?} s",
            sample(
                &metrics,
                "ferrolb_speaker_membership_probe_rtt_seconds_count"
            ),
            sample(&metrics, "ferrolb_speaker_membership_probe_rtt_seconds_sum")
        );
    }

    // The owner told the Service, once per IP it took over.
    eventually(
        "AnnouncingNode events on the Service",
        Duration::from_secs(10),
        || {
            let events = ctx.kubectl(&[
                "get",
                "events.events.k8s.io",
                "-n",
                "default",
                "-o",
                "jsonpath={range .items[*]}{.reason}{\" \"}{.regarding.name}{\"\\n\"}{end}",
            ]);
            events
                .lines()
                .filter(|l| *l == "AnnouncingNode web")
                .count()
                >= 2
        },
    );

    // An invalid configuration is ignored: the last valid one stays in force.
    ctx.apply(
        "broken",
        // Overlaps the pool in use: the whole configuration is invalid.
        "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: broken, namespace: ferrolb-system}
spec: {addresses: [192.0.2.240/29]}
",
    );
    eventually(
        "the owner counts the invalid configuration",
        Duration::from_secs(10),
        || {
            ctx.metrics(&owner)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("ferrolb_speaker_config_invalid_total ")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|n| n > 0)
        },
    );
    assert_eq!(ctx.arp_macs(v4, 2), BTreeSet::from([owner_mac.clone()]));
    ctx.kubectl(&["delete", "ipaddresspool", "-n", "ferrolb-system", "broken"]);

    // ETP Local: the answering node follows the endpoints.
    let target = nodes.into_iter().find(|n| *n != owner).unwrap();
    ctx.apply("svc-local", &manifest("web", true, &[target]));
    let started = Instant::now();
    eventually(
        "ETP Local: the endpoint's node answers",
        Duration::from_secs(20),
        || {
            ctx.lab()
                .netlab()
                .arping(&ctx.client_ns(), v4)
                .is_some_and(|mac| ctx.node_of_mac(&mac) == target)
        },
    );
    eprintln!("ETP Local: {target} answers after {:?}", started.elapsed());
    assert_eq!(
        ctx.arp_macs(v4, PROBES),
        BTreeSet::from([ctx.mac_of(target)])
    );
    // The per-IP series move with the IP: the new owner counts its answers, the old one has
    // dropped them (they start again from 0 if it takes the IP back).
    assert!(
        counted(target, "responses_sent").is_some_and(|n| n >= asked),
        "{target} counts its answers for {v4}"
    );
    eventually(
        &format!("{owner} drops its per-IP series for {v4}"),
        Duration::from_secs(10),
        || counted(&owner, "responses_sent").is_none(),
    );
    ctx.apply("svc-cluster", &manifest("web", false, &nodes));
    eventually("back to the elected owner", Duration::from_secs(20), || {
        ctx.lab().netlab().arping(&ctx.client_ns(), v4) == Some(owner_mac.clone())
    });
    assert!(
        counted(&owner, "responses_sent").is_some_and(|n| n >= 1.0),
        "{owner} counts {v4} again"
    );

    // 1. The owner's link goes down.
    ctx.prime_neighbour(v4);
    let failed_at = Instant::now();
    lab.netlab().set_port(&owner, false).unwrap();
    let (second, _) = ctx.failover("link down", v4, &owner, failed_at);
    assert_ne!(second, owner);
    lab.netlab().set_port(&owner, true).unwrap();
    // The returning owner kept the IP while cut off; when the membership merges it announces
    // again, so the client's cache (pointing at the interim owner) moves back unasked.
    let reconnected = Instant::now();
    eventually(
        "the client's neighbour entry moves back to the reconnected owner",
        Duration::from_secs(20),
        || ctx.neighbour_mac(IpAddr::V4(v4)).as_deref() == Some(owner_mac.as_str()),
    );
    eprintln!(
        "link up: client neighbour entry back on {owner} after {:?}",
        reconnected.elapsed()
    );
    eventually(
        "the reconnected owner answers again",
        Duration::from_secs(30),
        || ctx.arp_macs(v4, 1) == BTreeSet::from([owner_mac.clone()]),
    );
    eprintln!("link up: {owner} owns {v4} again (its rendezvous score is the highest)");

    // 2. The owner's speaker is killed (no goodbye).
    ctx.prime_neighbour(v4);
    let failed_at = Instant::now();
    ctx.signal_speaker(&owner, "-KILL");
    let (next, after_kill) = ctx.failover("SIGKILL", v4, &owner, failed_at);

    // 3. The next owner stops gracefully: it leaves first, so the last node takes over faster.
    ctx.prime_neighbour(v4);
    let failed_at = Instant::now();
    ctx.signal_speaker(&next, "-TERM");
    let (last, after_term) = ctx.failover("SIGTERM", v4, &next, failed_at);
    // Leaving tells the others at once; a crash must wait for failure detection.
    assert!(
        after_term < after_kill,
        "SIGTERM failover ({after_term:?}) not faster than SIGKILL failover ({after_kill:?})"
    );
    // The last speaker standing owns the IPv6 address too.
    eventually("the last node answers NDP", Duration::from_secs(10), || {
        ctx.ndp_macs(v6, 2) == BTreeSet::from([ctx.mac_of(&last)])
    });
    assert!(last != owner && last != next);
    eventually(
        "the stopped speaker's status objects are gone",
        Duration::from_secs(10),
        || {
            ctx.l2_statuses()
                .iter()
                .all(|(node, _)| node != next.as_str())
        },
    );
}

/// MetalLB's quick start: an L2Advertisement with only `metadata` (no `spec`) is accepted by the
/// API server (the CRD defaults `spec: {}`) and makes the speakers announce every pool.
#[test]
fn e2e_layer2_specless_advertisement_announces_every_pool() {
    let test = "e2e_layer2_specless_advertisement_announces_every_pool";
    let Some(lab) = TestLab::start(test, 2).unwrap() else {
        return;
    };
    let ctx = L2Probe::new(&lab);
    let nodes = ["node1", "node2"];
    let specless = "apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {name: e2e, namespace: ferrolb-system}
";
    let yaml = manifest("web", false, &nodes).replace(
        "kind: L2Advertisement\nmetadata: {name: e2e, namespace: ferrolb-system}\nspec:\n  ipAddressPools: [e2e]\n",
        "kind: IPAddressPool\nmetadata: {name: e2e-second, namespace: ferrolb-system}\nspec:\n  addresses: [192.0.2.168/29]\n",
    );
    assert!(yaml.contains("e2e-second"), "the manifest changed: {yaml}");
    ctx.apply("svc", &yaml);
    ctx.apply("specless", specless);
    let stored = ctx.kubectl(&[
        "get",
        "l2advertisement",
        "-n",
        "ferrolb-system",
        "e2e",
        "-o",
        "jsonpath={.spec}",
    ]);
    assert_eq!(stored.trim(), "{}", "the API server defaults spec");
    ctx.apply(
        "svc-second",
        "apiVersion: v1
kind: Service
metadata:
  name: second
  namespace: default
  annotations: {ferrolb.io/address-pool: e2e-second}
spec:
  type: LoadBalancer
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: second-e2e
  namespace: default
  labels: {kubernetes.io/service-name: second}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- addresses: [\"192.0.2.11\"]
  nodeName: node1
  conditions: {ready: true, serving: true}
",
    );
    let (v4, _) = ctx.service_ips("web", l2probe::ASSIGN_TIMEOUT);
    let second: std::net::Ipv4Addr = {
        let mut ip = String::new();
        eventually("Service second gets an IP", l2probe::ASSIGN_TIMEOUT, || {
            ip = ctx.kubectl(&[
                "get",
                "svc",
                "-n",
                "default",
                "second",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ]);
            ip.trim().parse::<std::net::Ipv4Addr>().is_ok()
        });
        ip.trim().parse().unwrap()
    };
    eprintln!("web {v4}, second {second}");
    for ip in [v4, second] {
        let owner = ctx.wait_arp_owner(ip, None, Duration::from_secs(30));
        assert!(owner.is_some(), "nobody answers ARP for {ip}");
        eprintln!("{ip} answered by {:?}", owner.map(|m| ctx.node_of_mac(&m)));
    }
}

/// The interfaces of an L2Advertisement do not take part in the election (MetalLB): when the
/// elected node has none of them, nobody answers, and the Service gets a Warning Event
/// `announceFailed` that says so (as documented in docs/configuration.md and the CRD).
#[test]
fn e2e_layer2_missing_interface_is_reported() {
    let test = "e2e_layer2_missing_interface_is_reported";
    let Some(lab) = TestLab::start(test, 2).unwrap() else {
        return;
    };
    let ctx = L2Probe::new(&lab);
    let yaml = manifest("web", false, &["node1", "node2"]).replace(
        "  ipAddressPools: [e2e]\n",
        "  ipAddressPools: [e2e]\n  interfaces: [eth9]\n",
    );
    assert!(yaml.contains("eth9"), "the manifest changed: {yaml}");
    ctx.apply("svc", &yaml);
    let (v4, _) = ctx.service_ips("web", l2probe::ASSIGN_TIMEOUT);
    let mut notes = String::new();
    eventually(
        "a Warning announceFailed Event on the Service",
        Duration::from_secs(30),
        || {
            notes = ctx.kubectl(&[
                "get",
                "events.events.k8s.io",
                "-n",
                "default",
                "-o",
                "jsonpath={range .items[?(@.reason==\"announceFailed\")]}{.type}{\" \"}{.regarding.name}{\" \"}{.note}{\"\\n\"}{end}",
            ]);
            notes
                .lines()
                .any(|l| l.starts_with("Warning web ") && l.contains(&v4.to_string()))
        },
    );
    eprintln!("events: {notes}");
    assert!(
        ctx.arp_macs(v4, PROBES).is_empty(),
        "{v4} is answered although no node has eth9"
    );
}

/// UDP datagrams the kernel of namespace `ns` dropped because a socket's receive buffer was
/// full (`RcvbufErrors` in `/proc/net/snmp`).
fn udp_receive_buffer_errors(ns: &str) -> u64 {
    let mut cat = ferrolb_tests::netlab::netns::exec(ns, "cat");
    cat.arg("/proc/net/snmp");
    let snmp = ferrolb_tests::cmd::stdout(cat).expect("/proc/net/snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (
        udp.next().unwrap_or_default(),
        udp.next().unwrap_or_default(),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .expect("RcvbufErrors in /proc/net/snmp")
}

/// Datagrams that fail the membership's authentication are dropped and counted, by reason, in
/// the speaker's metrics (they used to be dropped silently).
#[test]
fn e2e_layer2_membership_rejections_are_counted() {
    let test = "e2e_layer2_membership_rejections_are_counted";
    let Some(lab) = TestLab::start(test, 2).unwrap() else {
        return;
    };
    let ctx = L2Probe::new(&lab);
    ctx.wait_for_membership_secret();
    ctx.wait_for_members(2, Duration::from_secs(30));
    let client = ctx.client_ns();
    // Resolve node1's MAC first: while a neighbour entry is incomplete the kernel queues only a
    // few packets and drops the rest, so a burst would not all arrive.
    assert!(
        lab.netlab().ping(&client, "192.0.2.11".parse().unwrap()),
        "the client reaches node1"
    );
    // The kernel may drop some on a loaded machine (a full socket buffer, counted as UDP
    // RcvbufErrors in node1's namespace): every datagram it delivered must be counted.
    let node1_ns = lab.netlab().topology.ns("node1");
    let dropped_before = udp_receive_buffer_errors(&node1_ns);
    std::thread::spawn(move || {
        ferrolb_tests::controlplane::netns::enter_netns(&client).expect("enter the client");
        let socket = std::net::UdpSocket::bind("192.0.2.200:0").expect("bind");
        for n in 0..200u8 {
            // Not a membership datagram at all (no magic): "malformed". Paced, so that a busy
            // receiver's socket buffer does not overflow.
            socket.send_to(&[n; 64], "192.0.2.11:7946").expect("send");
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join()
    .expect("sender");
    let dropped = udp_receive_buffer_errors(&node1_ns) - dropped_before;
    eprintln!("the kernel dropped {dropped} of the 200 (full receive buffer)");
    assert!(dropped < 200, "none of the junk reached the speaker");
    let expected = 200 - dropped;
    let mut line = String::new();
    eventually(
        &format!("node1 counts the {expected} junk datagrams that reached it"),
        Duration::from_secs(20),
        || {
            line = ctx
                .metrics("node1")
                .lines()
                .find(|l| {
                    l.starts_with(
                        "ferrolb_speaker_membership_datagrams_rejected_total{reason=\"malformed\"}",
                    )
                })
                .unwrap_or_default()
                .to_string();
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| v >= expected)
        },
    );
    eprintln!("{line}");
    // The members are still there.
    assert_eq!(ctx.membership_size("node1"), Some(2));
}
