//! MetalLB v0.16.2 in the lab, as the side-by-side benchmark (issue #15) runs it
//! (`ferrolb_tests::peers::metallb`). Benchmark-only, so `#[ignore]`d: the first run builds
//! MetalLB from its Go module (minutes), and every run needs root.
//!
//! * [`metallb_builds`]: the build alone, stamped (a second call builds nothing).
//! * [`metallb_layer2_answers_in_the_lab`]: for memberlist's defaults and for the tuned timers,
//!   each in a fresh 3-node lab without FerroLB, MetalLB assigns a LoadBalancer Service an
//!   address from its pool and exactly one node answers ARP for it from the client.
//! * [`metallb_tuned_memberlist_stays_stable`]: with the tuned timers, 3 idle speakers keep
//!   their membership for 2 minutes (no suspicion, no member failed or left).
//!
//! Run (as root): `cargo test -p ferrolb-tests --test peers_metallb -- --ignored --nocapture`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferrolb_tests::harness::{TestLab, eventually_ok};
use ferrolb_tests::l2probe::L2Probe;
use ferrolb_tests::lab::FerrolbBinaries;
use ferrolb_tests::peers::metallb::{self, Memberlist, Metallb};

const POOL: &str = "192.0.2.240/28";
const NODES: usize = 3;
const SERVICE: &str = "web";
/// How long the idle speakers are watched for a false suspicion.
const STABILITY_WINDOW: Duration = Duration::from_secs(120);
/// What memberlist logs (at info and above) when a member is suspected, refutes a suspicion, or
/// is declared failed; and MetalLB's event for a member that left.
const INSTABILITY_MARKERS: [&str; 4] = ["Suspect ", "as failed", "Refuting", "NodeLeave"];

/// One lab at a time: two labs on a 2-core machine would distort the timers under test.
static ONE_LAB: Mutex<()> = Mutex::new(());

/// Paths that do not exist: the lab then starts no FerroLB process.
fn no_ferrolb() -> FerrolbBinaries {
    FerrolbBinaries {
        controller: PathBuf::from("/nonexistent/ferrolb-controller"),
        speaker: PathBuf::from("/nonexistent/ferrolb-speaker"),
    }
}

/// An IPv4 LoadBalancer Service and an EndpointSlice with one ready endpoint on each node
/// (there is no endpoint controller in the lab).
fn service_manifest() -> String {
    let mut yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {SERVICE}, namespace: default}}
spec:
  type: LoadBalancer
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv4]
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {SERVICE}-bench
  namespace: default
  labels: {{kubernetes.io/service-name: {SERVICE}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
"
    );
    for index in 1..=NODES {
        yaml.push_str(&format!(
            "- addresses: [\"192.0.2.{}\"]\n  nodeName: node{index}\n  conditions: {{ready: true, serving: true}}\n",
            10 + index
        ));
    }
    yaml
}

fn log_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |meta| meta.len())
}

/// Whether `ip` is in [`POOL`] (192.0.2.240/28).
fn in_pool(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    (a, b, c) == (192, 0, 2) && d >= 240
}

fn layer2_answers(binaries: &metallb::MetallbBinaries, memberlist: Memberlist) {
    let test = format!("peers_metallb_{}", memberlist.label());
    let Some(lab) = TestLab::start_with(&test, NODES, no_ferrolb()).expect("lab") else {
        return;
    };
    let running = Metallb::install(&lab, binaries, memberlist).expect("install MetalLB");
    assert!(running.controller_pid().is_some(), "controller runs");
    for node in ["node1", "node2", "node3"] {
        assert!(
            running.speaker_pid(node).is_some(),
            "speaker on {node} runs"
        );
    }
    running
        .apply_layer2_pool("bench", &[POOL])
        .expect("pool and L2Advertisement");
    let probe = L2Probe::new(&lab);
    probe.apply("metallb-service", &service_manifest());
    let ip = eventually_ok(
        &format!("{}: Service {SERVICE} has an address", memberlist.label()),
        Duration::from_secs(60),
        || {
            let ips = probe.ingress_ips(SERVICE);
            match ips.as_slice() {
                [IpAddr::V4(v4)] => Ok(*v4),
                other => Err(format!("ingress IPs {other:?}")),
            }
        },
    );
    assert!(in_pool(ip), "{ip} is not in {POOL}");
    let mac = probe.wait_single_answerer_from(
        &probe.client_ns(),
        IpAddr::V4(ip),
        Duration::from_secs(30),
    );
    let owner = probe.node_of_mac(&mac);
    let answers = probe.arp_macs(ip, 3);
    assert_eq!(
        answers.len(),
        1,
        "exactly one node answers ARP for {ip}: {answers:?}"
    );
    println!(
        "{}: Service {SERVICE} got {ip}; {owner} ({mac}) answers ARP for it, and no other node",
        memberlist.label()
    );
    // The failure the benchmark times, and the restart it needs after it.
    let marks: Vec<(String, u64)> = ["node1", "node2", "node3"]
        .into_iter()
        .filter(|node| *node != owner)
        .map(|node| (node.to_string(), log_len(&running.speaker_log(node))))
        .collect();
    let pid = running.speaker_pid(&owner).expect("owner's speaker pid");
    let killed = Instant::now();
    ferrolb_tests::process::signal(pid, libc::SIGKILL);
    assert!(
        ferrolb_tests::process::wait_dead(&[pid], Duration::from_secs(5)),
        "speaker on {owner} did not die"
    );
    let new_mac = probe
        .wait_arp_owner(ip, Some(&mac), Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no other node answers for {ip} after {owner}'s speaker died"));
    println!(
        "{}: {owner}'s speaker SIGKILLed: {} answers for {ip} after {:.1?} (arping, 1 s steps)",
        memberlist.label(),
        probe.node_of_mac(&new_mac),
        killed.elapsed()
    );
    // The stability test's markers: the survivors must have logged the failure with them.
    for (node, mark) in &marks {
        let lines = metallb::log_lines_since(&running.speaker_log(node), *mark);
        assert!(
            lines.iter().any(|line| INSTABILITY_MARKERS
                .iter()
                .any(|marker| line.contains(marker))),
            "{node}'s speaker logged none of {INSTABILITY_MARKERS:?} when {owner}'s died"
        );
    }
    running.restart_speaker(&owner).expect("restart speaker");
    let restarted = running.speaker_pid(&owner).expect("restarted speaker pid");
    assert_ne!(restarted, pid);
    let after = probe.wait_single_answerer_from(
        &probe.client_ns(),
        IpAddr::V4(ip),
        Duration::from_secs(30),
    );
    println!(
        "{}: after a SIGKILL of {owner}'s speaker and its restart, {} answers for {ip}",
        memberlist.label(),
        probe.node_of_mac(&after)
    );
    running.stop();
    assert!(
        running.controller_pid().is_none(),
        "stop() stops the controller"
    );
}

/// The build alone (no root needed): run it under whatever lock guards heavy builds, then the
/// lab tests find it up to date.
#[test]
#[ignore = "benchmark-only: builds MetalLB from its Go module (minutes the first time)"]
fn metallb_builds() {
    let binaries = metallb::build().expect("build MetalLB");
    assert!(binaries.controller.is_file() && binaries.speaker.is_file());
    assert!(
        metallb::crd_dir()
            .join("metallb.io_ipaddresspools.yaml")
            .is_file()
    );
    // The stamp makes a second call a no-op.
    let again = metallb::build().expect("build MetalLB again");
    assert_eq!(again.speaker, binaries.speaker);
}

#[test]
#[ignore = "benchmark-only: builds MetalLB from its Go module and needs root"]
fn metallb_layer2_answers_in_the_lab() {
    let _one = ONE_LAB.lock().unwrap_or_else(PoisonError::into_inner);
    let binaries = metallb::build().expect("build MetalLB");
    for memberlist in [Memberlist::Defaults, Memberlist::Tuned] {
        layer2_answers(&binaries, memberlist);
    }
}

#[test]
#[ignore = "benchmark-only: builds MetalLB from its Go module, needs root, takes 2 minutes"]
fn metallb_tuned_memberlist_stays_stable() {
    let _one = ONE_LAB.lock().unwrap_or_else(PoisonError::into_inner);
    let binaries = metallb::build().expect("build MetalLB");
    let Some(lab) = TestLab::start_with("peers_metallb_stable", NODES, no_ferrolb()).expect("lab")
    else {
        return;
    };
    let running = Metallb::install(&lab, &binaries, Memberlist::Tuned).expect("install MetalLB");
    let nodes = ["node1", "node2", "node3"];
    let marks: Vec<u64> = nodes
        .iter()
        .map(|node| std::fs::metadata(running.speaker_log(node)).map_or(0, |meta| meta.len()))
        .collect();
    std::thread::sleep(STABILITY_WINDOW);
    let mut unstable = Vec::new();
    for (node, mark) in nodes.iter().zip(marks) {
        assert!(
            running.speaker_pid(node).is_some(),
            "speaker on {node} runs"
        );
        for line in metallb::log_lines_since(&running.speaker_log(node), mark) {
            if INSTABILITY_MARKERS
                .iter()
                .any(|marker| line.contains(marker))
            {
                unstable.push(format!("{node}: {line}"));
            }
        }
    }
    assert!(
        unstable.is_empty(),
        "tuned memberlist not stable over {STABILITY_WINDOW:?} with idle speakers:\n{}",
        unstable.join("\n")
    );
    println!(
        "metallb-tuned: no suspicion, failure or leave in {STABILITY_WINDOW:?} on {} idle speakers",
        nodes.len()
    );
}
