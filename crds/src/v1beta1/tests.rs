//! Serde behaviour of the CRD types: MetalLB-style manifests parse, round trip, get the MetalLB
//! defaults, and typos are rejected.

use std::collections::BTreeSet;

use kube::CustomResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;

fn parse<T: DeserializeOwned>(yaml: &str) -> T {
    match serde_saphyr::from_str(yaml) {
        Ok(value) => value,
        Err(err) => panic!("cannot parse {yaml}: {err}"),
    }
}

/// YAML -> T -> YAML -> T gives the same value.
fn assert_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let yaml = serde_saphyr::to_string(value).expect("serialise");
    let again: T = parse(&yaml);
    assert_eq!(
        &again, value,
        "round trip changed the value; YAML was:\n{yaml}"
    );
}

/// Top-level keys of a value serialised to JSON.
fn keys<T: Serialize>(value: &T) -> BTreeSet<String> {
    match serde_json::to_value(value).expect("to json") {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

const POOL: &str = r#"
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata:
  name: production
  namespace: ferrolb-system
  labels: {zone: east}
spec:
  addresses:
  - 192.0.2.0/24
  - 198.51.100.10-198.51.100.20
  - 2001:db8::/120
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 50
    namespaces: [web, api]
    namespaceSelectors:
    - matchLabels: {tier: frontend}
    serviceSelectors:
    - matchExpressions:
      - {key: app, operator: In, values: [nginx, envoy]}
status:
  assignedIPv4: 3
  assignedIPv6: 1
  availableIPv4: 264
  availableIPv6: 255
"#;

#[test]
fn ip_address_pool_full_manifest() {
    let pool: IPAddressPool = parse(POOL);
    assert_eq!(pool.metadata.name.as_deref(), Some("production"));
    assert_eq!(pool.spec.addresses.len(), 3);
    assert_eq!(pool.spec.addresses[1], "198.51.100.10-198.51.100.20");
    assert!(!pool.spec.auto_assign);
    assert!(pool.spec.avoid_buggy_ips);
    let alloc = pool
        .spec
        .service_allocation
        .as_ref()
        .expect("serviceAllocation");
    assert_eq!(alloc.priority, Some(50));
    assert_eq!(alloc.namespaces, ["web", "api"]);
    assert_eq!(alloc.namespace_selectors.len(), 1);
    let expr = &alloc.service_selectors[0]
        .match_expressions
        .as_ref()
        .expect("exprs")[0];
    assert_eq!(
        expr.values.as_deref(),
        Some(&["nginx".to_owned(), "envoy".to_owned()][..])
    );
    let status = pool.status.as_ref().expect("status");
    assert_eq!(
        (
            status.assigned_ipv4,
            status.assigned_ipv6,
            status.available_ipv4,
            status.available_ipv6
        ),
        (3, 1, 264, 255)
    );
    assert_round_trip(&pool);
    assert_eq!(
        keys(&pool.spec),
        set(&[
            "addresses",
            "autoAssign",
            "avoidBuggyIPs",
            "serviceAllocation"
        ])
    );
    assert_eq!(
        keys(status),
        set(&[
            "assignedIPv4",
            "assignedIPv6",
            "availableIPv4",
            "availableIPv6"
        ])
    );
}

#[test]
fn ip_address_pool_defaults() {
    let spec: IPAddressPoolSpec = parse("addresses: [192.0.2.0/28]");
    assert!(spec.auto_assign, "autoAssign defaults to true");
    assert!(!spec.avoid_buggy_ips, "avoidBuggyIPs defaults to false");
    assert_eq!(spec.service_allocation, None);
}

#[test]
fn ip_address_pool_requires_addresses() {
    let err = serde_saphyr::from_str::<IPAddressPoolSpec>("autoAssign: true").unwrap_err();
    assert!(err.to_string().contains("addresses"), "{err}");
}

const L2: &str = r#"
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: ferrolb-system}
spec:
  ipAddressPools: [production]
  ipAddressPoolSelectors:
  - matchLabels: {zone: east}
  nodeSelectors:
  - matchLabels: {kubernetes.io/hostname: node-a}
  interfaces: [eth0, eth1]
  serviceSelectors:
  - matchLabels: {expose: lan}
  preferredNodeSelectors:
  - weight: 80
    preference:
      matchLabels: {rack: a}
"#;

#[test]
fn l2_advertisement_full_manifest() {
    let ad: L2Advertisement = parse(L2);
    assert_eq!(ad.spec.ip_address_pools, ["production"]);
    assert_eq!(ad.spec.interfaces, ["eth0", "eth1"]);
    assert_eq!(ad.spec.preferred_node_selectors[0].weight, 80);
    let labels = ad.spec.preferred_node_selectors[0]
        .preference
        .match_labels
        .as_ref()
        .expect("labels");
    assert_eq!(labels.get("rack").map(String::as_str), Some("a"));
    assert_round_trip(&ad);
    assert_eq!(
        keys(&ad.spec),
        set(&[
            "ipAddressPools",
            "ipAddressPoolSelectors",
            "nodeSelectors",
            "interfaces",
            "serviceSelectors",
            "preferredNodeSelectors",
        ])
    );
}

#[test]
fn l2_advertisement_empty_spec_means_all() {
    let spec: L2AdvertisementSpec = parse("{}");
    assert_eq!(spec, L2AdvertisementSpec::default());
    assert!(spec.ip_address_pools.is_empty() && spec.ip_address_pool_selectors.is_empty());
}

const BGP_AD: &str = r#"
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: external, namespace: ferrolb-system}
spec:
  aggregationLength: 24
  aggregationLengthV6: 64
  localPref: 100
  communities: ["65535:65282", "large:64500:1:2", no-export]
  ipAddressPools: [production]
  ipAddressPoolSelectors:
  - matchLabels: {zone: east}
  nodeSelectors:
  - matchLabels: {rack: a}
  peers: [tor-a, tor-b]
"#;

#[test]
fn bgp_advertisement_full_manifest() {
    let ad: BGPAdvertisement = parse(BGP_AD);
    assert_eq!(ad.spec.aggregation_length, 24);
    assert_eq!(ad.spec.aggregation_length_v6, 64);
    assert_eq!(ad.spec.local_pref, 100);
    assert_eq!(
        ad.spec.communities,
        ["65535:65282", "large:64500:1:2", "no-export"]
    );
    assert_eq!(ad.spec.peers, ["tor-a", "tor-b"]);
    assert_round_trip(&ad);
    let mut with_selectors = ad.spec.clone();
    with_selectors.service_selectors = vec![Default::default()];
    assert_eq!(
        keys(&with_selectors),
        set(&[
            "aggregationLength",
            "aggregationLengthV6",
            "localPref",
            "communities",
            "ipAddressPools",
            "ipAddressPoolSelectors",
            "nodeSelectors",
            "peers",
            "serviceSelectors",
        ])
    );
}

#[test]
fn bgp_advertisement_defaults() {
    let spec: BGPAdvertisementSpec = parse("{}");
    assert_eq!(spec.aggregation_length, 32);
    assert_eq!(spec.aggregation_length_v6, 128);
    assert_eq!(spec.local_pref, 0);
    assert_eq!(spec, BGPAdvertisementSpec::default());
}

const PEER: &str = r#"
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: tor-a, namespace: ferrolb-system}
spec:
  myASN: 64500
  peerASN: 64501
  localASN: 64999
  peerAddress: 192.0.2.1
  sourceAddress: 192.0.2.10
  peerPort: 1179
  holdTime: 1m30s
  keepaliveTime: 30s
  connectTime: 10s
  routerID: 192.0.2.10
  nodeSelectors:
  - matchLabels: {rack: a}
  passwordSecret: {name: tor-a-password, namespace: ferrolb-system}
  bfdProfile: fast
  enableGracefulRestart: true
  ebgpMultiHop: true
  vrf: red
  disableMP: false
  dualStackAddressFamily: true
"#;

#[test]
fn bgp_peer_full_manifest() {
    let peer: BGPPeer = parse(PEER);
    let spec = &peer.spec;
    assert_eq!(
        (spec.my_asn, spec.peer_asn, spec.local_asn),
        (64500, Some(64501), Some(64999))
    );
    assert_eq!(spec.peer_address.as_deref(), Some("192.0.2.1"));
    assert_eq!(spec.peer_port, 1179);
    assert_eq!(spec.hold_time.as_deref(), Some("1m30s"));
    assert_eq!(spec.keepalive_time.as_deref(), Some("30s"));
    assert_eq!(spec.connect_time.as_deref(), Some("10s"));
    assert_eq!(spec.router_id.as_deref(), Some("192.0.2.10"));
    let secret = spec.password_secret.as_ref().expect("passwordSecret");
    assert_eq!(secret.name.as_deref(), Some("tor-a-password"));
    assert_eq!(secret.namespace.as_deref(), Some("ferrolb-system"));
    assert_eq!(spec.bfd_profile.as_deref(), Some("fast"));
    assert!(spec.enable_graceful_restart && spec.ebgp_multi_hop && spec.dual_stack_address_family);
    assert!(!spec.disable_mp);
    assert_eq!(spec.vrf.as_deref(), Some("red"));
    assert_round_trip(&peer);

    let mut every_field = spec.clone();
    every_field.dynamic_asn = Some(DynamicASNMode::External);
    every_field.password = Some("secret".to_owned());
    every_field.interface = Some("eth0".to_owned());
    assert_eq!(
        keys(&every_field),
        set(&[
            "myASN",
            "peerASN",
            "dynamicASN",
            "localASN",
            "peerAddress",
            "sourceAddress",
            "peerPort",
            "holdTime",
            "keepaliveTime",
            "connectTime",
            "routerID",
            "nodeSelectors",
            "password",
            "passwordSecret",
            "bfdProfile",
            "enableGracefulRestart",
            "ebgpMultiHop",
            "vrf",
            "disableMP",
            "dualStackAddressFamily",
            "interface",
        ])
    );
}

#[test]
fn bgp_peer_unnumbered_with_dynamic_asn() {
    let spec: BGPPeerSpec = parse("{myASN: 64500, dynamicASN: internal, interface: eth1}");
    assert_eq!(spec.dynamic_asn, Some(DynamicASNMode::Internal));
    assert_eq!(spec.interface.as_deref(), Some("eth1"));
    assert_eq!(spec.peer_address, None);
    let spec: BGPPeerSpec = parse("{myASN: 64500, dynamicASN: external, peerAddress: 192.0.2.1}");
    assert_eq!(spec.dynamic_asn, Some(DynamicASNMode::External));
    assert!(serde_saphyr::from_str::<BGPPeerSpec>("{myASN: 1, dynamicASN: both}").is_err());
}

#[test]
fn bgp_peer_defaults_and_required_my_asn() {
    let spec: BGPPeerSpec = parse("{myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.1}");
    assert_eq!(spec.peer_port, 179);
    assert!(!spec.enable_graceful_restart && !spec.ebgp_multi_hop && !spec.disable_mp);
    assert_eq!(spec.hold_time, None);
    assert_eq!(
        BGPPeerSpec {
            my_asn: 64500,
            peer_asn: Some(64501),
            peer_address: Some("192.0.2.1".to_owned()),
            ..BGPPeerSpec::default()
        },
        spec
    );
    let err =
        serde_saphyr::from_str::<BGPPeerSpec>("{peerASN: 1, peerAddress: 192.0.2.1}").unwrap_err();
    assert!(err.to_string().contains("myASN"), "{err}");
}

const BFD: &str = r#"
apiVersion: ferrolb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: ferrolb-system}
spec:
  receiveInterval: 100
  transmitInterval: 120
  detectMultiplier: 5
  echoInterval: 60
  echoMode: true
  passiveMode: true
  minimumTtl: 10
"#;

#[test]
fn bfd_profile_full_manifest() {
    let profile: BFDProfile = parse(BFD);
    let spec = &profile.spec;
    assert_eq!(
        (
            spec.receive_interval,
            spec.transmit_interval,
            spec.detect_multiplier
        ),
        (Some(100), Some(120), Some(5))
    );
    assert_eq!((spec.echo_interval, spec.minimum_ttl), (Some(60), Some(10)));
    assert!(spec.echo_mode && spec.passive_mode);
    assert_round_trip(&profile);
    assert_eq!(
        keys(spec),
        set(&[
            "receiveInterval",
            "transmitInterval",
            "detectMultiplier",
            "echoInterval",
            "echoMode",
            "passiveMode",
            "minimumTtl",
        ])
    );
    let empty: BFDProfileSpec = parse("{}");
    assert_eq!(empty, BFDProfileSpec::default());
}

const COMMUNITY: &str = r#"
apiVersion: ferrolb.io/v1beta1
kind: Community
metadata: {name: communities, namespace: ferrolb-system}
spec:
  communities:
  - name: no-export
    value: "65535:65281"
  - name: big
    value: large:64500:1:2
"#;

#[test]
fn community_full_manifest() {
    let community: Community = parse(COMMUNITY);
    assert_eq!(
        community.spec.communities,
        [
            CommunityAlias {
                name: "no-export".to_owned(),
                value: "65535:65281".to_owned()
            },
            CommunityAlias {
                name: "big".to_owned(),
                value: "large:64500:1:2".to_owned()
            },
        ]
    );
    assert_round_trip(&community);
}

const L2_STATUS: &str = r#"
apiVersion: ferrolb.io/v1beta1
kind: ServiceL2Status
metadata: {generateName: l2-, name: l2-abcde, namespace: ferrolb-system}
spec: {}
status:
  node: node-a
  serviceName: web
  serviceNamespace: default
  interfaces:
  - name: eth0
"#;

#[test]
fn service_l2_status_manifest() {
    let s: ServiceL2Status = parse(L2_STATUS);
    let status = s.status.as_ref().expect("status");
    assert_eq!(status.node.as_deref(), Some("node-a"));
    assert_eq!(status.service_name.as_deref(), Some("web"));
    assert_eq!(status.service_namespace.as_deref(), Some("default"));
    assert_eq!(
        status.interfaces,
        [InterfaceInfo {
            name: "eth0".to_owned()
        }]
    );
    assert_round_trip(&s);
    assert_eq!(
        keys(status),
        set(&["node", "serviceName", "serviceNamespace", "interfaces"])
    );
}

const BGP_STATUS: &str = r#"
apiVersion: ferrolb.io/v1beta1
kind: ServiceBGPStatus
metadata: {name: bgp-abcde, namespace: ferrolb-system}
spec: {}
status:
  node: node-a
  serviceName: web
  serviceNamespace: default
  peers: [tor-a, tor-b]
"#;

#[test]
fn service_bgp_status_manifest() {
    let s: ServiceBGPStatus = parse(BGP_STATUS);
    let status = s.status.as_ref().expect("status");
    assert_eq!(status.node.as_deref(), Some("node-a"));
    assert_eq!(status.peers, ["tor-a", "tor-b"]);
    assert_round_trip(&s);
    assert_eq!(
        keys(status),
        set(&["node", "serviceName", "serviceNamespace", "peers"])
    );
}

#[test]
fn unknown_spec_fields_are_rejected() {
    // Typos must fail loudly: the config model turns these errors into clear messages.
    type Parse = fn(&str) -> Result<(), serde_saphyr::Error>;
    let cases: [(&str, Parse); 8] = [
        ("{addresses: [192.0.2.0/24], autoassign: false}", |y| {
            serde_saphyr::from_str::<IPAddressPoolSpec>(y).map(drop)
        }),
        (
            "{addresses: [192.0.2.0/24], serviceAllocation: {priorty: 1}}",
            |y| serde_saphyr::from_str::<IPAddressPoolSpec>(y).map(drop),
        ),
        ("{ipAddressPool: [a]}", |y| {
            serde_saphyr::from_str::<L2AdvertisementSpec>(y).map(drop)
        }),
        (
            "{preferredNodeSelectors: [{weight: 1, preference: {}, extra: 1}]}",
            |y| serde_saphyr::from_str::<L2AdvertisementSpec>(y).map(drop),
        ),
        ("{aggregationLenght: 24}", |y| {
            serde_saphyr::from_str::<BGPAdvertisementSpec>(y).map(drop)
        }),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, myAsn: 3}",
            |y| serde_saphyr::from_str::<BGPPeerSpec>(y).map(drop),
        ),
        ("{receiveInterval: 100, echo: true}", |y| {
            serde_saphyr::from_str::<BFDProfileSpec>(y).map(drop)
        }),
        (
            "{communities: [{name: a, value: '1:1', comment: x}]}",
            |y| serde_saphyr::from_str::<CommunitySpec>(y).map(drop),
        ),
    ];
    for (yaml, parse) in cases {
        let err = parse(yaml).expect_err(yaml);
        assert!(err.to_string().contains("unknown field"), "{yaml}: {err}");
    }
}

#[test]
fn metallb_manifest_needs_only_the_api_version_changed() {
    // A MetalLB BGPPeer (metallb.io/v1beta2) body parses unchanged into the FerroLB type.
    let metallb = PEER.replace("ferrolb.io/v1beta1", "metallb.io/v1beta2");
    let peer: BGPPeer = parse(&metallb);
    assert_eq!(peer.spec, parse::<BGPPeer>(PEER).spec);
}

#[test]
fn every_kind_is_namespaced_in_the_ferrolb_group() {
    let crds = crate::crdgen::all();
    assert_eq!(crds.len(), 9);
    for crd in &crds {
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, VERSION);
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["ferrolb".to_owned()][..])
        );
        let has_status = crd.spec.versions[0]
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some();
        assert!(
            has_status,
            "{} has no status subresource",
            crd.spec.names.kind
        );
    }
    assert_eq!(IPAddressPool::crd_name(), "ipaddresspools.ferrolb.io");
    assert_eq!(Community::crd_name(), "communities.ferrolb.io");
    assert_eq!(ServiceL2Status::crd_name(), "servicel2statuses.ferrolb.io");
    assert_eq!(
        ServiceBGPStatus::crd_name(),
        "servicebgpstatuses.ferrolb.io"
    );
}

#[test]
fn ip_address_pool_printer_columns() {
    let crd = IPAddressPool::crd();
    let columns: Vec<(String, String)> = crd.spec.versions[0]
        .additional_printer_columns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| (c.name.clone(), c.json_path.clone()))
        .collect();
    let expected = [
        ("Addresses", ".spec.addresses"),
        ("Auto Assign", ".spec.autoAssign"),
        ("Assigned IPv4", ".status.assignedIPv4"),
        ("Assigned IPv6", ".status.assignedIPv6"),
        ("Available IPv4", ".status.availableIPv4"),
        ("Available IPv6", ".status.availableIPv6"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    .map(|(n, p)| (n.to_owned(), p.to_owned()));
    assert_eq!(columns, expected);
}

/// The `openAPIV3Schema` of a CRD as JSON, for looking rules up by path.
fn schema(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> serde_json::Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(schema).expect("json")
}

fn rules(value: &serde_json::Value) -> Vec<String> {
    value["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn openapi_bounds_and_cel_rules_are_in_the_schema() {
    let peer = schema(&BGPPeer::crd());
    let spec = &peer["properties"]["spec"];
    let props = &spec["properties"];
    assert_eq!(spec["required"], serde_json::json!(["myASN"]));
    assert_eq!(props["peerPort"]["minimum"], 1.0);
    assert_eq!(props["peerPort"]["maximum"], 16384.0);
    assert_eq!(props["peerPort"]["default"], 179);
    assert_eq!(props["myASN"]["maximum"], 4_294_967_295.0);
    assert_eq!(props["holdTime"]["pattern"], DURATION_PATTERN);
    assert_eq!(rules(&props["enableGracefulRestart"]), ["self == oldSelf"]);
    assert_eq!(rules(&props["connectTime"]).len(), 1);
    let spec_rules = rules(spec).join("\n");
    for needle in [
        "self.dynamicASN",
        "self.interface",
        "self.passwordSecret",
        "self.ebgpMultiHop",
    ] {
        assert!(
            spec_rules.contains(needle),
            "no rule mentions {needle}: {spec_rules}"
        );
    }

    let ad = schema(&BGPAdvertisement::crd());
    let props = &ad["properties"]["spec"]["properties"];
    assert_eq!(
        (
            props["aggregationLength"]["minimum"].clone(),
            props["aggregationLength"]["maximum"].clone()
        ),
        (1.0.into(), 32.0.into())
    );
    assert_eq!(props["aggregationLengthV6"]["maximum"], 128.0);
    assert!(rules(&ad["properties"]["spec"])[0].contains("serviceSelectors"));

    let bfd = schema(&BFDProfile::crd());
    let props = &bfd["properties"]["spec"]["properties"];
    for (field, min, max) in [
        ("receiveInterval", 10.0, 60000.0),
        ("transmitInterval", 10.0, 60000.0),
        ("echoInterval", 10.0, 60000.0),
        ("detectMultiplier", 2.0, 255.0),
        ("minimumTtl", 1.0, 254.0),
    ] {
        assert_eq!(props[field]["minimum"], min, "{field}");
        assert_eq!(props[field]["maximum"], max, "{field}");
    }

    let pool = schema(&IPAddressPool::crd());
    assert_eq!(
        pool["properties"]["spec"]["properties"]["addresses"]["minItems"],
        1
    );
    let conditions = &pool["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );

    let l2 = schema(&L2Advertisement::crd());
    let weight = &l2["properties"]["spec"]["properties"]["preferredNodeSelectors"]["items"]["properties"]
        ["weight"];
    assert_eq!(
        (weight["minimum"].clone(), weight["maximum"].clone()),
        (1.0.into(), 100.0.into())
    );
}

#[test]
fn duration_pattern_accepts_go_durations_only() {
    // Forms Go's time.ParseDuration accepts for non-negative values must match (MetalLB
    // manifests use them); anything else must not, so the apiserver rejects it early.
    let pattern = regex::Regex::new(DURATION_PATTERN).expect("valid regex");
    let accepted = [
        "0",
        "90s",
        "1m30s",
        "1.5h",
        "500ms",
        "3s",
        "100us",
        "100µs",
        "10ns",
        "2h45m0.5s",
    ];
    let rejected = [
        "", "90", "-1s", "1d", "s", "1m 30s", "1.s", ".5s", "1S", " 1s",
    ];
    for d in accepted {
        assert!(pattern.is_match(d), "{d:?} should match");
    }
    for d in rejected {
        assert!(!pattern.is_match(d), "{d:?} should not match");
    }
}
