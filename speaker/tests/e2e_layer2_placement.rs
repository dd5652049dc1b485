//! End to end in the lab (root; skipped with a printed reason otherwise, FAILS when `CI` is set):
//! where an IP is announced and who owns what the speaker writes.
//!
//! - `preferredNodeSelectors`: the preferred node answers even though the hash picks another;
//!   when it is cut off another node takes over, and when it comes back it takes the IP back.
//! - Status objects are owned by the speaker's Pod (ownerReference with the Pod's UID).
//!
//! Run: `cargo build -p ferrolb-speaker -p ferrolb-controller && cargo test -p ferrolb-speaker
//! --test e2e_layer2_placement -- --nocapture`

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ferrolb_tests::harness::TestLab;
use ferrolb_tests::l2probe::{ASSIGN_TIMEOUT, L2Probe, eventually, manifest};
use ferrolb_tests::lab::speaker_pod_name;

const NODES: [&str; 3] = ["node1", "node2", "node3"];
const PREFERRED_LABEL: &str = "ferrolb.io/e2e-preferred";

fn preferring_advertisement() -> String {
    format!(
        "apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {{name: e2e, namespace: ferrolb-system}}
spec:
  ipAddressPools: [e2e]
  preferredNodeSelectors:
  - weight: 50
    preference: {{matchLabels: {{{PREFERRED_LABEL}: \"yes\"}}}}
"
    )
}

#[test]
fn e2e_layer2_preferred_node_and_owned_status() {
    let test = "e2e_layer2_preferred_node_and_owned_status";
    let Some(lab) = TestLab::start(test, 3).unwrap() else {
        return;
    };
    let probe = L2Probe::new(&lab);
    probe.wait_for_membership_secret();
    probe.wait_for_members(3, Duration::from_secs(30));
    probe.apply("svc", &manifest("web", false, &NODES));
    let (v4, v6) = probe.service_ips("web", ASSIGN_TIMEOUT);
    let client = probe.client_ns();

    // Without preferences the rendezvous hash picks a node; prefer another one.
    let hashed = probe.node_of_mac(&probe.wait_single_answerer_from(
        &client,
        IpAddr::V4(v4),
        Duration::from_secs(30),
    ));
    let preferred = NODES.into_iter().find(|n| *n != hashed).unwrap();
    eprintln!("the hash picks {hashed} for {v4}; preferring {preferred}");
    probe.kubectl(&[
        "label",
        "node",
        preferred,
        &format!("{PREFERRED_LABEL}=yes"),
    ]);
    probe.apply("preferring-ad", &preferring_advertisement());
    let preferred_mac = probe.mac_of(preferred);
    eventually(
        "the preferred node answers ARP and NDP, alone",
        Duration::from_secs(20),
        || {
            probe.arp_macs(v4, 2) == BTreeSet::from([preferred_mac.clone()])
                && probe.ndp_macs(v6, 2) == BTreeSet::from([preferred_mac.clone()])
        },
    );

    // Cut off, another node takes over; back, it takes the IP back.
    lab.netlab().set_port(preferred, false).unwrap();
    let interim = probe.node_of_mac(&probe.wait_single_answerer_from(
        &client,
        IpAddr::V4(v4),
        Duration::from_secs(10),
    ));
    assert_ne!(interim, preferred);
    eprintln!("{preferred} cut off: {interim} answers");
    lab.netlab().set_port(preferred, true).unwrap();
    eventually(
        "the preferred node reclaims the IP when it is back",
        Duration::from_secs(20),
        || probe.arp_macs(v4, 2) == BTreeSet::from([preferred_mac.clone()]),
    );

    // Without the label the preference is gone: the hash's choice answers again.
    probe.kubectl(&["label", "node", preferred, &format!("{PREFERRED_LABEL}-")]);
    let hashed_mac = probe.mac_of(&hashed);
    eventually(
        "without the preferred label the hashed node answers again",
        Duration::from_secs(20),
        || probe.arp_macs(v4, 2) == BTreeSet::from([hashed_mac.clone()]),
    );

    // Every ServiceL2Status is owned by the Pod of the speaker that wrote it.
    eventually(
        "ServiceL2Status objects owned by their speaker's Pod",
        Duration::from_secs(20),
        || {
            let out = probe.kubectl(&[
                "get",
                "servicel2statuses",
                "-n",
                "ferrolb-system",
                "-o",
                "jsonpath={range .items[*]}{.status.node} {.metadata.ownerReferences[0].kind} \
                 {.metadata.ownerReferences[0].name} {.metadata.ownerReferences[0].uid}\n{end}",
            ]);
            let rows: Vec<Vec<String>> = out
                .lines()
                .map(|l| l.split_whitespace().map(String::from).collect())
                .collect();
            !rows.is_empty()
                && rows.iter().all(|row| {
                    let [node, kind, name, uid] = row.as_slice() else {
                        return false;
                    };
                    let pod_uid = probe.kubectl(&[
                        "get",
                        "pod",
                        "-n",
                        "ferrolb-system",
                        &speaker_pod_name(node),
                        "-o",
                        "jsonpath={.metadata.uid}",
                    ]);
                    kind == "Pod" && *name == speaker_pod_name(node) && *uid == pod_uid.trim()
                })
        },
    );
}
