//! The controller in-process against a real kube-apiserver v1.36 + etcd (loopback, no root).
//!
//! One control plane and one controller for the whole file; every scenario uses its own
//! Namespace and its own pools (`ferrolb.io/address-pool`), so they do not interfere.

mod common;

use std::time::Duration;

use common::*;
use ferrolb_controller::{Options, run};
use ferrolb_crds::v1beta1::IPAddressPool;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn options(metrics: std::net::SocketAddr, identity: &str) -> Options {
    let mut options = Options::defaults();
    options.metrics_addr = metrics;
    options.webhook_addr = "127.0.0.1:0".to_string();
    options.identity = Some(identity.to_string());
    options.lease_duration = 4;
    options
}

/// The Service's `ferrolb.io/AddressAssigned` condition.
fn address_assigned(
    service: &Service,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ferrolb_controller::status::address_condition(service).cloned()
}

fn pool_annotation(pool: &str) -> serde_json::Value {
    json!({"metadata": {"annotations": {"ferrolb.io/address-pool": pool}}})
}

#[test]
fn controller_end_to_end() {
    if !prerequisites() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,ferrolb_controller=debug")
        .try_init();
    let (control_plane, _stop) = start_control_plane("e2e");
    runtime().block_on(async {
        let client = control_plane.client().await.expect("client");
        apply_pool(&client, "default", json!({"addresses": ["192.0.2.0/27"]})).await;
        let metrics = free_port();
        let shutdown = CancellationToken::new();
        let controller = tokio::spawn(run(
            clients(&client),
            options(metrics, "e2e-a"),
            shutdown.clone(),
        ));

        single_ip(&client).await;
        requested_ip(&client).await;
        pool_by_annotation(&client).await;
        dual_stack(&client).await;
        sharing(&client).await;
        exhaustion_and_pool_change(&client, metrics, &control_plane).await;
        invalid_config_keeps_addresses(&client, metrics).await;
        stops_being_a_load_balancer(&client).await;
        pool_status_and_metrics(&client, metrics).await;
        namespace_selector(&client).await;
        legacy_config_map(&client).await;
        pool_deleted(&client).await;
        other_load_balancer_class(&client).await;
        membership_secret_created(&client).await;

        shutdown.cancel();
        controller
            .await
            .expect("join")
            .expect("controller ran cleanly");
    });
}

async fn single_ip(client: &Client) {
    create_namespace(client, "single").await;
    create_service(client, "single", "web", json!({})).await;
    let ips = wait_for_ips(client, "single", "web", 1).await;
    // .0 is the network address of a CIDR entry: never handed out.
    assert_eq!(ips, ["192.0.2.1"]);
    let service = get_service(client, "single", "web").await;
    let annotations = service.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("ferrolb.io/ip-allocated-from-pool")
            .map(String::as_str),
        Some("default")
    );
    // One write per assignment: the annotation came with the status (its field is owned through
    // the status subresource), not in a patch of its own.
    let annotation_owners: Vec<Option<String>> = service
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0.to_string().contains("ip-allocated-from-pool"))
        })
        .map(|entry| entry.subresource.clone())
        .collect();
    assert_eq!(annotation_owners, [Some("status".to_string())]);
    let ingress = &service
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap()[0];
    assert_eq!(ingress.ip_mode.as_deref(), Some("VIP"));
    let notes = wait_for_event(client, "single", "web", "IPAllocated").await;
    assert!(
        notes[0].contains("192.0.2.1") && notes[0].contains("default"),
        "{notes:?}"
    );
    // Events only on change: a no-op update does not emit another one.
    let api: Api<Service> = Api::namespaced(client.clone(), "single");
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await
    .expect("label");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        events(client, "single", "web", "IPAllocated").await.len(),
        1
    );
}

async fn requested_ip(client: &Client) {
    create_namespace(client, "requested").await;
    create_service(
        client,
        "requested",
        "spec-ip",
        json!({"spec": {"loadBalancerIP": "192.0.2.10"}}),
    )
    .await;
    create_service(
        client,
        "requested",
        "legacy-annotation",
        json!({"metadata": {"annotations": {"metallb.universe.tf/loadBalancerIPs": "192.0.2.11"}}}),
    )
    .await;
    create_service(
        client,
        "requested",
        "both",
        json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "192.0.2.12"}},
               "spec": {"loadBalancerIP": "192.0.2.13"}}),
    )
    .await;
    assert_eq!(
        wait_for_ips(client, "requested", "spec-ip", 1).await,
        ["192.0.2.10"]
    );
    assert_eq!(
        wait_for_ips(client, "requested", "legacy-annotation", 1).await,
        ["192.0.2.11"]
    );
    let deprecated = wait_for_event(
        client,
        "requested",
        "legacy-annotation",
        "DeprecatedAnnotation",
    )
    .await;
    assert!(
        deprecated[0].contains("metallb.universe.tf/loadBalancerIPs"),
        "{deprecated:?}"
    );
    let failed = wait_for_event(client, "requested", "both", "AllocationFailed").await;
    assert!(failed[0].contains("spec.loadBalancerIP"), "{failed:?}");
    assert!(ingress(&get_service(client, "requested", "both").await).is_empty());
}

async fn pool_by_annotation(client: &Client) {
    apply_pool(
        client,
        "manual",
        json!({"addresses": ["198.51.100.0/29"], "autoAssign": false}),
    )
    .await;
    create_namespace(client, "pooled").await;
    create_service(client, "pooled", "named", pool_annotation("manual")).await;
    create_service(
        client,
        "pooled",
        "alias",
        json!({"metadata": {"annotations": {"metallb.io/address-pool": "manual"}}}),
    )
    .await;
    let named = wait_for_ips(client, "pooled", "named", 1).await;
    let alias = wait_for_ips(client, "pooled", "alias", 1).await;
    let mut both = [named[0].clone(), alias[0].clone()];
    both.sort();
    assert_eq!(both, ["198.51.100.1", "198.51.100.2"]);
    create_service(client, "pooled", "unknown", pool_annotation("nope")).await;
    let failed = wait_for_event(client, "pooled", "unknown", "AllocationFailed").await;
    assert!(failed[0].contains("nope"), "{failed:?}");
}

async fn dual_stack(client: &Client) {
    apply_pool(
        client,
        "dual",
        json!({"addresses": ["198.51.100.64/28", "2001:db8:1::/120"], "autoAssign": false}),
    )
    .await;
    create_namespace(client, "dual").await;
    let policy = |policy: &str, families: serde_json::Value| {
        json!({"metadata": {"annotations": {"ferrolb.io/address-pool": "dual"}},
               "spec": {"ipFamilyPolicy": policy, "ipFamilies": families}})
    };
    create_service(
        client,
        "dual",
        "require",
        policy("RequireDualStack", json!(["IPv6", "IPv4"])),
    )
    .await;
    create_service(
        client,
        "dual",
        "prefer",
        policy("PreferDualStack", json!(["IPv4", "IPv6"])),
    )
    .await;
    create_service(
        client,
        "dual",
        "single-v6",
        policy("SingleStack", json!(["IPv6"])),
    )
    .await;
    let require = wait_for_ips(client, "dual", "require", 2).await;
    assert!(
        require[0].starts_with("2001:db8:1::") && require[1].starts_with("198.51.100."),
        "{require:?}"
    );
    let prefer = wait_for_ips(client, "dual", "prefer", 2).await;
    assert!(
        prefer[0].starts_with("198.51.100.") && prefer[1].starts_with("2001:db8:1::"),
        "{prefer:?}"
    );
    let single = wait_for_ips(client, "dual", "single-v6", 1).await;
    assert!(single[0].starts_with("2001:db8:1::"), "{single:?}");
    // RequireDualStack from a v4-only pool cannot be served.
    create_service(
        client,
        "dual",
        "require-v4-pool",
        json!({"metadata": {"annotations": {"ferrolb.io/address-pool": "default"}},
               "spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}}),
    )
    .await;
    wait_for_event(client, "dual", "require-v4-pool", "AllocationFailed").await;
}

async fn sharing(client: &Client) {
    create_namespace(client, "sharing").await;
    let shared = |key: &str, port: u16| {
        json!({"metadata": {"annotations": {"ferrolb.io/allow-shared-ip": key, "ferrolb.io/loadBalancerIPs": "192.0.2.20"}},
               "spec": {"ports": [{"port": port, "protocol": "TCP"}]}})
    };
    create_service(client, "sharing", "http", shared("k", 80)).await;
    create_service(client, "sharing", "https", shared("k", 443)).await;
    create_service(client, "sharing", "other-key", shared("j", 8080)).await;
    create_service(client, "sharing", "same-port", shared("k", 80)).await;
    assert_eq!(
        wait_for_ips(client, "sharing", "http", 1).await,
        ["192.0.2.20"]
    );
    assert_eq!(
        wait_for_ips(client, "sharing", "https", 1).await,
        ["192.0.2.20"]
    );
    let refused = wait_for_event(client, "sharing", "other-key", "AllocationFailed").await;
    assert!(refused[0].contains("192.0.2.20"), "{refused:?}");
    wait_for_event(client, "sharing", "same-port", "AllocationFailed").await;
    assert!(ingress(&get_service(client, "sharing", "other-key").await).is_empty());
}

async fn exhaustion_and_pool_change(
    client: &Client,
    metrics: std::net::SocketAddr,
    control_plane: &ferrolb_tests::controlplane::ControlPlane,
) {
    apply_pool(
        client,
        "tiny",
        json!({"addresses": ["198.51.100.16/31"], "autoAssign": false}),
    )
    .await;
    create_namespace(client, "tiny").await;
    for name in ["a", "b"] {
        create_service(client, "tiny", name, pool_annotation("tiny")).await;
        wait_for_ips(client, "tiny", name, 1).await;
    }
    create_service(client, "tiny", "c", pool_annotation("tiny")).await;
    let failed = wait_for_event(client, "tiny", "c", "AllocationFailed").await;
    assert!(failed[0].contains("tiny"), "{failed:?}");
    let api: Api<Service> = Api::namespaced(client.clone(), "tiny");
    let list = api.list(&Default::default()).await.expect("list");
    let c = list
        .items
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("c"))
        .unwrap();
    assert!(ingress(c).is_empty(), "c must stay Pending");
    // The reason stays on the Service itself, after the Event has expired.
    let pending = eventually(
        "tiny/c's AddressAssigned=False",
        Duration::from_secs(30),
        || async {
            let service = get_service(client, "tiny", "c").await;
            let condition = address_assigned(&service)?;
            (condition.status == "False").then_some(condition)
        },
    )
    .await;
    assert_eq!(pending.reason, "NoIPAvailable", "{pending:?}");
    eventually("services_pending 1", Duration::from_secs(10), || async {
        let (_, text) = http_get(metrics, "/metrics").await?;
        text.contains("ferrolb_services_pending{reason=\"no_ip_available\"} 1")
            .then_some(())
    })
    .await;
    assert!(pending.message.contains("tiny"), "{pending:?}");
    assert_eq!(
        address_assigned(&get_service(client, "tiny", "a").await).map(|c| c.status),
        Some("True".to_string())
    );
    // The recipes docs/operations.md gives for reading it.
    let columns = control_plane
        .kubectl_output([
            "get",
            "svc",
            "-n",
            "tiny",
            "-o",
            "custom-columns=NAME:.metadata.name,EXTERNAL-IP:.status.loadBalancer.ingress[*].ip,\
             ASSIGNED:.status.conditions[?(@.type==\"ferrolb.io/AddressAssigned\")].status,\
             REASON:.status.conditions[?(@.type==\"ferrolb.io/AddressAssigned\")].reason",
        ])
        .expect("kubectl get svc -o custom-columns");
    let row_c: Vec<&str> = columns
        .lines()
        .find(|line| line.starts_with("c "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row_c,
        ["c", "<none>", "False", "NoIPAvailable"],
        "{columns}"
    );
    let wait = |name: &str, timeout: &str| {
        control_plane
            .kubectl([
                "wait",
                "-n",
                "tiny",
                &format!("svc/{name}"),
                "--for=condition=ferrolb.io/AddressAssigned",
                &format!("--timeout={timeout}"),
            ])
            .output()
            .expect("kubectl wait runs")
            .status
            .success()
    };
    assert!(
        wait("a", "10s"),
        "kubectl wait returns for an assigned Service"
    );
    assert!(!wait("c", "1s"), "kubectl wait times out on a Pending one");
    // Set on a change of state, not on every reconcile: a label change reconciles c again, and
    // nothing is written after it.
    api.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await
    .expect("label c");
    let labelled = get_service(client, "tiny", "c").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = get_service(client, "tiny", "c").await;
    assert_eq!(
        labelled.metadata.resource_version,
        later.metadata.resource_version,
        "the controller rewrote c without a change of state: {:?}",
        address_assigned(&later)
    );

    // Another controller's condition on c must survive ours changing.
    api.patch_status(
        "c",
        &PatchParams::default(),
        &Patch::Strategic(json!({"status": {"conditions": [{
            "type": "example.com/Audited", "status": "True", "reason": "Checked",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]}})),
    )
    .await
    .expect("foreign condition");
    // Deleting a holder frees its address for the waiting Service.
    let a_ip = ingress(&get_service(client, "tiny", "a").await);
    delete_service(client, "tiny", "a").await;
    assert_eq!(wait_for_ips(client, "tiny", "c", 1).await, a_ip);
    let assigned = eventually(
        "tiny/c's AddressAssigned=True",
        Duration::from_secs(30),
        || async {
            let service = get_service(client, "tiny", "c").await;
            let condition = address_assigned(&service)?;
            (condition.status == "True").then_some(condition)
        },
    )
    .await;
    assert_eq!(assigned.reason, "Assigned");
    let c = get_service(client, "tiny", "c").await;
    let types: Vec<_> = c.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        types.iter().any(|c| c.type_ == "example.com/Audited"),
        "another controller's condition is kept: {types:?}"
    );
    assert!(assigned.message.contains(&a_ip[0]), "{assigned:?}");
    assert!(
        assigned.last_transition_time.0 >= pending.last_transition_time.0,
        "{assigned:?}"
    );

    // The pool moves: every Service gets an address from the new range.
    apply_pool(
        client,
        "tiny",
        json!({"addresses": ["198.51.100.24/31"], "autoAssign": false}),
    )
    .await;
    for name in ["b", "c"] {
        eventually(
            &format!("tiny/{name} to move"),
            Duration::from_secs(30),
            || async {
                let ips = ingress(&get_service(client, "tiny", name).await);
                (ips.len() == 1 && ips[0].starts_with("198.51.100.2")).then_some(())
            },
        )
        .await;
    }
    // The address change is told on the Service, naming the address it lost.
    eventually(
        "an IPAllocated Event on tiny/b naming the address it lost",
        Duration::from_secs(30),
        || async {
            let notes = events(client, "tiny", "b", "IPAllocated").await;
            notes
                .iter()
                .any(|n| n.contains("replacing [198.51.100.1"))
                .then_some(())
        },
    )
    .await;
}

async fn invalid_config_keeps_addresses(client: &Client, metrics: std::net::SocketAddr) {
    let before = ingress(&get_service(client, "tiny", "b").await);
    // Overlaps the default pool: the whole configuration is invalid, the last valid one stays.
    apply_pool(
        client,
        "tiny",
        json!({"addresses": ["192.0.2.16/28"], "autoAssign": false}),
    )
    .await;
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), CONFIG_NAMESPACE);
    let condition = eventually(
        "ConfigValid=False on tiny",
        Duration::from_secs(30),
        || async {
            let pool = pools.get("tiny").await.ok()?;
            let conditions = pool.status?.conditions;
            conditions
                .into_iter()
                .find(|c| c.type_ == "ConfigValid" && c.status == "False")
        },
    )
    .await;
    assert!(
        condition.message.contains("spec.addresses") && condition.message.contains("overlaps"),
        "{condition:?}"
    );
    let notes = wait_for_event(client, CONFIG_NAMESPACE, "tiny", "InvalidConfiguration").await;
    assert!(notes[0].contains("overlaps"), "{notes:?}");
    let (_, text) = http_get(metrics, "/metrics").await.expect("metrics");
    assert!(text.contains("ferrolb_config_stale 1"), "{text}");
    // The process metrics dashboards expect, unprefixed.
    assert!(
        text.lines()
            .any(|l| l.starts_with("process_resident_memory_bytes ")),
        "{text}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ingress(&get_service(client, "tiny", "b").await),
        before,
        "addresses kept"
    );

    // Fixed again: the condition turns True, the metric 0.
    apply_pool(
        client,
        "tiny",
        json!({"addresses": ["198.51.100.24/31"], "autoAssign": false}),
    )
    .await;
    eventually(
        "ConfigValid=True on tiny",
        Duration::from_secs(30),
        || async {
            let pool = pools.get("tiny").await.ok()?;
            pool.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "ConfigValid" && c.status == "True")
        },
    )
    .await;
    eventually("config_stale 0", Duration::from_secs(10), || async {
        let (_, text) = http_get(metrics, "/metrics").await?;
        text.contains("ferrolb_config_stale 0").then_some(())
    })
    .await;
    assert_eq!(
        ingress(&get_service(client, "tiny", "b").await),
        before,
        "addresses kept"
    );
}

async fn stops_being_a_load_balancer(client: &Client) {
    let api: Api<Service> = Api::namespaced(client.clone(), "single");
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "ClusterIP"}})),
    )
    .await
    .expect("type change");
    eventually(
        "single/web to be cleared",
        Duration::from_secs(30),
        || async {
            let service = get_service(client, "single", "web").await;
            let annotated = service
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("ferrolb.io/ip-allocated-from-pool"))
                || address_assigned(&service).is_some();
            (ingress(&service).is_empty() && !annotated).then_some(())
        },
    )
    .await;
    let cleared = wait_for_event(client, "single", "web", "ClearAssignment").await;
    assert!(cleared[0].contains("192.0.2.1"), "{cleared:?}");
    // The freed address goes to the next Service (quarantine: only once nothing else is free,
    // so just check that another Service can get an address).
    create_service(client, "single", "next", json!({})).await;
    wait_for_ips(client, "single", "next", 1).await;
}

async fn pool_status_and_metrics(client: &Client, metrics: std::net::SocketAddr) {
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), CONFIG_NAMESPACE);
    let status = eventually("dual pool counts", Duration::from_secs(30), || async {
        let status = pools.get("dual").await.ok()?.status?;
        (status.assigned_ipv4 == 2 && status.assigned_ipv6 == 3).then_some(status)
    })
    .await;
    // 198.51.100.64/28: 14 usable; 2001:db8:1::/120: 256.
    assert_eq!(status.available_ipv4, 12);
    assert_eq!(status.available_ipv6, 253);
    let (code, text) = http_get(metrics, "/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    assert!(
        text.contains("ferrolb_addresses_in_use{pool=\"dual\",family=\"IPv6\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("ferrolb_addresses_total{pool=\"dual\",family=\"IPv4\"} 14"),
        "{text}"
    );
    assert!(text.contains("ferrolb_leader 1"), "{text}");
    assert!(
        text.contains("ferrolb_allocations_total{pool=\"dual\"}"),
        "{text}"
    );
    assert!(
        text.contains("ferrolb_reconcile_duration_seconds_count"),
        "{text}"
    );
    assert!(
        text.contains("ferrolb_allocation_failures_total{reason=\"pool_unusable\"}"),
        "{text}"
    );
    assert_eq!(http_get(metrics, "/readyz").await.map(|r| r.0), Some(200));
    assert_eq!(http_get(metrics, "/healthz").await.map(|r| r.0), Some(200));
}

async fn namespace_selector(client: &Client) {
    apply_pool(
        client,
        "gold",
        json!({"addresses": ["198.51.100.32/29"], "serviceAllocation": {
            "priority": 1, "namespaceSelectors": [{"matchLabels": {"tier": "gold"}}]}}),
    )
    .await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let gold =
        serde_json::from_value(json!({"metadata": {"name": "gold", "labels": {"tier": "gold"}}}))
            .expect("namespace");
    namespaces
        .create(&Default::default(), &gold)
        .await
        .expect("create gold namespace");
    create_namespace(client, "plain").await;
    // Let the configuration with the new pool be in force before the Services appear.
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), CONFIG_NAMESPACE);
    eventually("gold pool in force", Duration::from_secs(30), || async {
        pools
            .get("gold")
            .await
            .ok()?
            .status
            .filter(|s| s.available_ipv4 == 6)
    })
    .await;
    create_service(client, "gold", "pinned", json!({})).await;
    create_service(client, "plain", "unpinned", json!({})).await;
    let pinned = wait_for_ips(client, "gold", "pinned", 1).await;
    assert!(pinned[0].starts_with("198.51.100.3"), "{pinned:?}");
    let unpinned = wait_for_ips(client, "plain", "unpinned", 1).await;
    assert!(unpinned[0].starts_with("192.0.2."), "{unpinned:?}");
}

async fn legacy_config_map(client: &Client) {
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), CONFIG_NAMESPACE);
    let config_map = serde_json::from_value(json!({
        "metadata": {"name": "config"},
        "data": {"config": "address-pools:\n- name: legacy\n  protocol: layer2\n  auto-assign: false\n  addresses:\n  - 198.51.100.48/29\n"},
    }))
    .expect("config map");
    config_maps
        .create(&Default::default(), &config_map)
        .await
        .expect("create legacy ConfigMap");
    create_namespace(client, "legacy").await;
    create_service(
        client,
        "legacy",
        "old-style",
        json!({"metadata": {"annotations": {"metallb.universe.tf/address-pool": "legacy"}}}),
    )
    .await;
    assert_eq!(
        wait_for_ips(client, "legacy", "old-style", 1).await,
        ["198.51.100.49"]
    );

    // A ConfigMap that does not parse: Event on it, addresses kept, config stale.
    config_maps
        .patch(
            "config",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"data": {"config": "address-pools:\n- name: legacy\n  protcol: layer2\n"}}),
            ),
        )
        .await
        .expect("break the ConfigMap");
    let notes = wait_for_event(client, CONFIG_NAMESPACE, "config", "InvalidConfiguration").await;
    assert!(notes[0].contains("protcol"), "{notes:?}");
    assert_eq!(
        ingress(&get_service(client, "legacy", "old-style").await),
        ["198.51.100.49"]
    );
    // Leave a valid configuration behind (while it is invalid nothing else can change).
    config_maps
        .delete("config", &Default::default())
        .await
        .expect("delete legacy ConfigMap");
}

async fn pool_deleted(client: &Client) {
    let before = ingress(&get_service(client, "pooled", "named").await);
    assert_eq!(before.len(), 1);
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), CONFIG_NAMESPACE);
    pools
        .delete("manual", &Default::default())
        .await
        .expect("delete pool");
    for name in ["named", "alias"] {
        eventually(
            &format!("pooled/{name} to lose its address"),
            Duration::from_secs(30),
            || async {
                ingress(&get_service(client, "pooled", name).await)
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
        let notes = wait_for_event(client, "pooled", name, "AllocationFailed").await;
        assert!(
            notes
                .iter()
                .any(|n| n.contains("unknown address pool manual")),
            "{notes:?}"
        );
    }
}

async fn other_load_balancer_class(client: &Client) {
    create_namespace(client, "classes").await;
    create_service(
        client,
        "classes",
        "theirs",
        json!({"spec": {"loadBalancerClass": "example.com/other"}}),
    )
    .await;
    create_service(client, "classes", "ours", json!({})).await;
    wait_for_ips(client, "classes", "ours", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let theirs = get_service(client, "classes", "theirs").await;
    assert!(
        ingress(&theirs).is_empty(),
        "a Service of another class was served"
    );
    assert!(
        events(client, "classes", "theirs", "AllocationFailed")
            .await
            .is_empty()
    );
}

/// The leader creates the speakers' membership Secret with a random key, and leaves an existing
/// one alone (checked by reading it twice: the key does not change).
async fn membership_secret_created(client: &Client) {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), "ferrolb-system");
    let key = |secret: Secret| {
        secret
            .data
            .and_then(|data| data.get("secretkey").cloned())
            .map(|bytes| bytes.0)
            .unwrap_or_default()
    };
    let first = eventually(
        "membership Secret ferrolb-memberlist",
        std::time::Duration::from_secs(10),
        || async { secrets.get_opt("ferrolb-memberlist").await.ok().flatten() },
    )
    .await;
    let first = key(first);
    assert_eq!(first.len(), 64, "a 256-bit key as hex");
    let created_again = ferrolb_controller::membership_secret::ensure(client, "ferrolb-system")
        .await
        .expect("ensure");
    assert!(!created_again, "an existing Secret is kept");
    let second = key(secrets.get("ferrolb-memberlist").await.expect("secret"));
    assert_eq!(first, second);
}
