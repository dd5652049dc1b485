//! Table-driven tests of `AllocRequest::from_service`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_crds::config::{ClusterResources, Config};
use ferrolb_crds::v1beta1::IPAddressPool;
use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::*;

fn pool(name: &str, spec: serde_json::Value) -> IPAddressPool {
    serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": "ferrolb-system"},
        "spec": spec,
    }))
    .expect("pool")
}

fn config() -> Config {
    Config::build(&ClusterResources {
        ip_address_pools: vec![
            pool("open", json!({"addresses": ["192.0.2.0/24", "2001:db8::/64"]})),
            pool(
                "team-a",
                json!({"addresses": ["198.51.100.0/26"], "serviceAllocation": {"priority": 1, "namespaces": ["a"]}}),
            ),
            pool(
                "by-label",
                json!({"addresses": ["198.51.100.64/26"], "serviceAllocation": {
                    "namespaceSelectors": [{"matchLabels": {"tier": "gold"}}],
                    "serviceSelectors": [{"matchLabels": {"app": "web"}}]}}),
            ),
        ],
        ..ClusterResources::default()
    })
    .expect("valid config")
}

fn service(namespace: &str, extra: serde_json::Value) -> Service {
    let mut base = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": namespace},
        "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "ports": [{"port": 80, "protocol": "TCP"}]},
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("service")
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().expect("ip")).collect()
}

#[test]
fn requests_from_services() {
    let config = config();
    let gold: BTreeMap<String, String> = [("tier".to_string(), "gold".to_string())].into();
    let none = BTreeMap::new();
    type Check = fn(&AllocRequest);
    let cases: Vec<(&str, Service, &BTreeMap<String, String>, Check)> = vec![
        ("automatic v4", service("x", json!({})), &none, |r| {
            assert_eq!(r.families, FamilyPolicy::SingleStack(Family::V4));
            assert!(r.requested.is_empty());
            assert_eq!(r.pool, None);
            assert_eq!(r.sharing, None);
            let names: Vec<_> = r.allowed_pools.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["open"]);
        }),
        (
            "spec.loadBalancerIP",
            service("x", json!({"spec": {"loadBalancerIP": "192.0.2.7"}})),
            &none,
            |r| {
                assert_eq!(r.requested, ips(&["192.0.2.7"]));
            },
        ),
        (
            "annotation dual",
            service(
                "x",
                json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "192.0.2.7, 2001:db8::7"}}}),
            ),
            &none,
            |r| {
                assert_eq!(r.requested, ips(&["192.0.2.7", "2001:db8::7"]));
            },
        ),
        (
            "metallb alias",
            service(
                "x",
                json!({"metadata": {"annotations": {"metallb.universe.tf/loadBalancerIPs": "192.0.2.8", "metallb.io/address-pool": "open"}}}),
            ),
            &none,
            |r| {
                assert_eq!(r.requested, ips(&["192.0.2.8"]));
                assert_eq!(r.pool.as_deref(), Some("open"));
            },
        ),
        ("namespace list pins", service("a", json!({})), &none, |r| {
            assert!(r.allowed_pools.contains(&AllowedPool {
                name: "team-a".into(),
                pinned: true
            }));
            assert!(r.allowed_pools.contains(&AllowedPool {
                name: "open".into(),
                pinned: false
            }));
        }),
        (
            "namespace selector without service label",
            service("x", json!({})),
            &gold,
            |r| {
                assert!(!r.allowed_pools.iter().any(|p| p.name == "by-label"));
            },
        ),
        (
            "namespace selector and service selector",
            service("x", json!({"metadata": {"labels": {"app": "web"}}})),
            &gold,
            |r| {
                assert!(r.allowed_pools.contains(&AllowedPool {
                    name: "by-label".into(),
                    pinned: true
                }));
            },
        ),
        (
            "require dual",
            service(
                "x",
                json!({"spec": {"ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack"}}),
            ),
            &none,
            |r| {
                assert_eq!(
                    r.families,
                    FamilyPolicy::RequireDualStack {
                        primary: Family::V6
                    }
                );
            },
        ),
        (
            "prefer dual",
            service(
                "x",
                json!({"spec": {"ipFamilies": ["IPv4"], "ipFamilyPolicy": "PreferDualStack"}}),
            ),
            &none,
            |r| {
                assert_eq!(
                    r.families,
                    FamilyPolicy::PreferDualStack {
                        primary: Family::V4
                    }
                );
            },
        ),
        (
            "families from clusterIPs",
            service(
                "x",
                json!({"spec": {"ipFamilies": null, "ipFamilyPolicy": null, "clusterIPs": ["2001:db8:100::5"]}}),
            ),
            &none,
            |r| {
                assert_eq!(r.families, FamilyPolicy::SingleStack(Family::V6));
            },
        ),
        (
            "sharing cluster",
            service(
                "x",
                json!({"metadata": {"annotations": {"ferrolb.io/allow-shared-ip": "k"}}, "spec": {"selector": {"app": "x"}}}),
            ),
            &none,
            |r| {
                let sharing = r.sharing.as_ref().expect("sharing");
                assert_eq!(sharing.key, "k");
                assert_eq!(sharing.backend_key, "");
                assert_eq!(
                    sharing.ports,
                    vec![ServicePort {
                        protocol: Protocol::Tcp,
                        port: 80
                    }]
                );
            },
        ),
        (
            "sharing local",
            service(
                "x",
                json!({"metadata": {"annotations": {"ferrolb.io/allow-shared-ip": "k"}}, "spec": {"externalTrafficPolicy": "Local", "selector": {"b": "2", "a": "1"}, "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}]}}),
            ),
            &none,
            |r| {
                let sharing = r.sharing.as_ref().expect("sharing");
                assert_eq!(sharing.backend_key, "a=1,b=2");
                assert_eq!(
                    sharing.ports,
                    vec![
                        ServicePort {
                            protocol: Protocol::Udp,
                            port: 53
                        },
                        ServicePort {
                            protocol: Protocol::Tcp,
                            port: 53
                        },
                    ]
                );
            },
        ),
        (
            "empty sharing key",
            service(
                "x",
                json!({"metadata": {"annotations": {"ferrolb.io/allow-shared-ip": ""}}}),
            ),
            &none,
            |r| {
                assert_eq!(r.sharing, None);
            },
        ),
    ];
    for (name, svc, labels, check) in cases {
        let request = AllocRequest::from_service(&svc, &config, labels)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            request.service,
            ServiceKey::new(svc.metadata.namespace.clone().unwrap_or_default(), "s"),
            "{name}"
        );
        check(&request);
    }
}

#[test]
fn invalid_requests() {
    let config = config();
    let none = BTreeMap::new();
    let cases: Vec<(&str, serde_json::Value, RequestError)> = vec![
        (
            "spec and annotation",
            json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.1"}}, "spec": {"loadBalancerIP": "192.0.2.2"}}),
            RequestError::BothIpFields {
                annotation: "metallb.io/loadBalancerIPs",
            },
        ),
        (
            "unparsable",
            json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "192.0.2.300"}}}),
            RequestError::BadIp {
                field: "ferrolb.io/loadBalancerIPs".into(),
                value: "192.0.2.300".into(),
            },
        ),
        (
            "unparsable spec",
            json!({"spec": {"loadBalancerIP": "nope"}}),
            RequestError::BadIp {
                field: "spec.loadBalancerIP".into(),
                value: "nope".into(),
            },
        ),
        (
            "three",
            json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "192.0.2.1,2001:db8::1,192.0.2.2"}}}),
            RequestError::TooManyIps {
                field: "ferrolb.io/loadBalancerIPs".into(),
                count: 3,
            },
        ),
        (
            "two v4",
            json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "192.0.2.1,192.0.2.2"}}}),
            RequestError::TwoOfFamily {
                field: "ferrolb.io/loadBalancerIPs".into(),
                family: Family::V4,
            },
        ),
        (
            "bad policy",
            json!({"spec": {"ipFamilyPolicy": "Maybe"}}),
            RequestError::BadFamilyPolicy("Maybe".into()),
        ),
        (
            "bad family",
            json!({"spec": {"ipFamilies": ["IPv5"]}}),
            RequestError::BadFamily("IPv5".into()),
        ),
        (
            "bad protocol",
            json!({"metadata": {"annotations": {"ferrolb.io/allow-shared-ip": "k"}}, "spec": {"ports": [{"port": 80, "protocol": "QUIC"}]}}),
            RequestError::BadProtocol {
                port: 80,
                protocol: "QUIC".into(),
            },
        ),
    ];
    for (name, extra, want) in cases {
        let got = AllocRequest::from_service(&service("x", extra), &config, &none);
        assert_eq!(got, Err(want), "{name}");
    }
}

#[test]
fn handled_services_and_deprecated_names() {
    let plain = service("x", json!({}));
    assert!(is_handled(&plain, None));
    assert!(!is_handled(&plain, Some("ferrolb.io/lb")));
    let classed = service("x", json!({"spec": {"loadBalancerClass": "ferrolb.io/lb"}}));
    assert!(is_handled(&classed, Some("ferrolb.io/lb")));
    assert!(!is_handled(&classed, None));
    let cluster_ip = service("x", json!({"spec": {"type": "ClusterIP"}}));
    assert!(!is_handled(&cluster_ip, None));

    let old = service(
        "x",
        json!({"metadata": {"annotations": {
        "metallb.universe.tf/address-pool": "p",
        "metallb.universe.tf/allow-shared-ip": "k",
        "ferrolb.io/allow-shared-ip": "k",
        "metallb.io/loadBalancerIPs": "192.0.2.1"}}}),
    );
    assert_eq!(
        deprecated_annotations(&old),
        vec!["metallb.universe.tf/address-pool"]
    );
    assert!(deprecated_annotations(&plain).is_empty());
}
