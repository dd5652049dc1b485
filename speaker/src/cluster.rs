//! The Kubernetes side of the speaker: the watched objects (reflector stores that wake the
//! decision loop) and their conversion into the plain [`SpeakerView`] the decision step reads.
//!
//! The stores are in memory: reading them never waits on the API server, so the decision loop
//! keeps deciding, on the last state it saw, while the API server is away.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::annotations;
use ferrolb_crds::cluster::{self as shared, ENDPOINT_SLICE_SERVICE_LABEL};
use ferrolb_crds::config::{ClusterResources, Config, ConfigErrors};
use ferrolb_crds::v1beta1;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Secret, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::view::{EndpointConditions, NodeInfo, ServiceInfo, ServiceKey, SpeakerView};

/// The watched objects, each kept current by its own watch task.
pub struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    pools: Store<v1beta1::IPAddressPool>,
    l2_ads: Store<v1beta1::L2Advertisement>,
    bgp_ads: Store<v1beta1::BGPAdvertisement>,
    peers: Store<v1beta1::BGPPeer>,
    bfd: Store<v1beta1::BFDProfile>,
    communities: Store<v1beta1::Community>,
    config_maps: Store<ConfigMap>,
    /// The namespace's Secrets, for BGPPeer `passwordSecret` (a changed Secret re-keys the
    /// session: the peer's configuration changes with it).
    secrets: Store<Secret>,
}

/// Where the watch tasks run and what they wake.
struct Watching<'a> {
    tracker: &'a TaskTracker,
    cancel: &'a CancellationToken,
    wake: &'a Arc<Notify>,
}

impl Watching<'_> {
    fn store<K>(&self, api: Api<K>, config: watcher::Config) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    {
        self.trimmed_store(api, config, ferrolb_crds::runtime::slim)
    }

    /// [`Self::store`], each object cut down by `trim` before it is stored.
    fn trimmed_store<K>(&self, api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let (store, writer) = reflector::store();
        let kind = K::kind(&K::DynamicType::default()).to_string();
        let stream =
            reflector::reflector(writer, watcher(api, config).default_backoff().modify(trim));
        let cancel = self.cancel.clone();
        let wake = Arc::clone(self.wake);
        self.tracker.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled() => return,
                    event = stream.next() => event,
                };
                match event {
                    Some(Ok(_)) => wake.notify_one(),
                    Some(Err(err)) => warn!(%kind, error = %err, "watch error (retrying)"),
                    None => return,
                }
            }
        });
        store
    }
}

impl Stores {
    /// Starts one watch per kind on `tracker`; every event wakes `wake`. `config_map` is the
    /// legacy MetalLB ConfigMap's name in `namespace`.
    pub fn start(
        tracker: &TaskTracker,
        cancel: &CancellationToken,
        client: &Client,
        namespace: &str,
        config_map: &str,
        wake: &Arc<Notify>,
    ) -> Stores {
        let w = Watching {
            tracker,
            cancel,
            wake,
        };
        let all = watcher::Config::default;
        let ns = namespace;
        Stores {
            services: w.trimmed_store(Api::all(client.clone()), all(), trim_service),
            slices: w.trimmed_store(Api::all(client.clone()), all(), trim_endpoint_slice),
            nodes: w.store(Api::all(client.clone()), all()),
            pools: w.store(Api::namespaced(client.clone(), ns), all()),
            l2_ads: w.store(Api::namespaced(client.clone(), ns), all()),
            bgp_ads: w.store(Api::namespaced(client.clone(), ns), all()),
            peers: w.store(Api::namespaced(client.clone(), ns), all()),
            bfd: w.store(Api::namespaced(client.clone(), ns), all()),
            communities: w.store(Api::namespaced(client.clone(), ns), all()),
            config_maps: w.store(
                Api::namespaced(client.clone(), ns),
                all().fields(&format!("metadata.name={config_map}")),
            ),
            secrets: w.store(Api::namespaced(client.clone(), ns), all()),
        }
    }

    /// Resolves once every store holds its first list.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        self.services.wait_until_ready().await?;
        self.slices.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.pools.wait_until_ready().await?;
        self.l2_ads.wait_until_ready().await?;
        self.bgp_ads.wait_until_ready().await?;
        self.peers.wait_until_ready().await?;
        self.bfd.wait_until_ready().await?;
        self.communities.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        Ok(())
    }

    /// The inputs of [`Config::build`]; an error if the legacy ConfigMap does not parse.
    fn cluster_resources(&self) -> Result<ClusterResources, String> {
        let legacy = match self.config_maps.state().into_iter().next() {
            None => None,
            Some(map) => Some(shared::legacy_config_map(&map).map_err(|e| e.to_string())?),
        };
        fn owned<K: Clone>(items: Vec<Arc<K>>) -> Vec<K> {
            items.into_iter().map(|o| (*o).clone()).collect()
        }
        Ok(ClusterResources {
            ip_address_pools: owned(self.pools.state()),
            l2_advertisements: owned(self.l2_ads.state()),
            bgp_advertisements: owned(self.bgp_ads.state()),
            bgp_peers: owned(self.peers.state()),
            bfd_profiles: owned(self.bfd.state()),
            communities: owned(self.communities.state()),
            legacy,
            secrets: Some(owned(self.secrets.state())),
        })
    }

    /// The configuration in the stores: `Ok(Ok)` valid, `Ok(Err)` invalid objects, `Err` a
    /// legacy ConfigMap that does not parse.
    pub fn config(&self) -> Result<Result<Config, ConfigErrors>, String> {
        self.cluster_resources().map(|r| Config::build(&r))
    }

    /// The view the decision step reads, with `config` (the last valid configuration).
    pub fn view(&self, config: Config, lb_class: Option<&str>) -> SpeakerView {
        SpeakerView {
            config,
            nodes: node_infos(&self.nodes.state()),
            services: service_infos(&self.services.state(), &self.slices.state(), lb_class),
        }
    }

    /// Every node's InternalIPs (the membership's seeds; speakers run on the host network).
    pub fn node_ips(&self) -> BTreeSet<IpAddr> {
        node_ips(&self.nodes.state())
    }

    /// References to the Services of `keys` (for Events).
    pub fn service_refs(&self, keys: &BTreeSet<ServiceKey>) -> Vec<ObjectReference> {
        self.services
            .state()
            .iter()
            .filter(|s| ServiceKey::of(s).is_some_and(|k| keys.contains(&k)))
            .map(|s| s.object_ref(&()))
            .collect()
    }
}

/// Keeps of a Service only what [`service_infos`] and [`Stores::service_refs`] read: its
/// identity, labels and annotations, the type, class and traffic policy, and the ingress
/// addresses. Every node caches every Service, so the rest (ports, selectors, cluster IPs,
/// conditions) is dropped as it arrives.
fn trim_service(service: &mut Service) {
    ferrolb_crds::runtime::slim(service);
    let meta = &mut service.metadata;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(spec) = service.spec.take() {
        service.spec = Some(ServiceSpec {
            type_: spec.type_,
            load_balancer_class: spec.load_balancer_class,
            external_traffic_policy: spec.external_traffic_policy,
            ..ServiceSpec::default()
        });
    }
    if let Some(status) = service.status.as_mut() {
        status.conditions = None;
    }
}

/// Keeps of an EndpointSlice only what [`service_infos`] reads: its namespace and Service
/// label, and per endpoint its conditions and node.
fn trim_endpoint_slice(slice: &mut EndpointSlice) {
    ferrolb_crds::runtime::slim(slice);
    slice.metadata.owner_references = None;
    slice.ports = None;
    for endpoint in slice.endpoints.iter_mut().flatten() {
        *endpoint = Endpoint {
            conditions: endpoint.conditions.take(),
            node_name: endpoint.node_name.take(),
            ..Endpoint::default()
        };
    }
}

/// Every node's InternalIPs (the membership's seeds; speakers run on the host network).
fn node_ips(nodes: &[Arc<Node>]) -> BTreeSet<IpAddr> {
    nodes
        .iter()
        .filter_map(|node| node.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

fn node_infos(nodes: &[Arc<Node>]) -> BTreeMap<String, NodeInfo> {
    nodes
        .iter()
        .filter_map(|node| {
            let name = node.metadata.name.clone()?;
            let network_unavailable = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
                });
            Some((
                name,
                NodeInfo {
                    labels: node.metadata.labels.clone().unwrap_or_default(),
                    network_unavailable,
                },
            ))
        })
        .collect()
}

/// The Services this speaker handles ([`shared::is_handled`]: type LoadBalancer, our class, not
/// being deleted) that have ingress IPs, with their endpoints' placement.
pub fn service_infos(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    lb_class: Option<&str>,
) -> Vec<ServiceInfo> {
    let mut endpoints: BTreeMap<ServiceKey, (bool, BTreeSet<String>)> = BTreeMap::new();
    for slice in slices {
        let (Some(namespace), Some(service)) = (
            slice.metadata.namespace.as_deref(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ENDPOINT_SLICE_SERVICE_LABEL)),
        ) else {
            continue;
        };
        let entry = endpoints
            .entry(ServiceKey::new(namespace, service))
            .or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint
                .conditions
                .as_ref()
                .map(|c| EndpointConditions {
                    ready: c.ready,
                    serving: c.serving,
                })
                .unwrap_or_default();
            if conditions.is_serving() {
                entry.0 = true;
                if let Some(node) = &endpoint.node_name {
                    entry.1.insert(node.clone());
                }
            }
        }
    }
    services
        .iter()
        .filter(|service| shared::is_handled(service, lb_class))
        .filter_map(|service| {
            let ips = shared::ingress_ips(service);
            if ips.is_empty() {
                return None;
            }
            let key = ServiceKey::of(service)?;
            let (has_serving_endpoint, serving_nodes) =
                endpoints.get(&key).cloned().unwrap_or_default();
            Some(ServiceInfo {
                labels: service.metadata.labels.clone().unwrap_or_default(),
                ips,
                local_traffic_policy: service
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.external_traffic_policy.as_deref())
                    == Some("Local"),
                has_serving_endpoint,
                serving_nodes,
                shares_ip: service.metadata.annotations.as_ref().is_some_and(|a| {
                    annotations::annotation(a, annotations::Key::AllowSharedIp)
                        .is_some_and(|(key, _)| !key.is_empty())
                }),
                key,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, extra_spec: serde_json::Value, ips: &[&str]) -> Arc<Service> {
        let mut spec = json!({"type": "LoadBalancer"});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            spec.extend(extra.clone());
        }
        let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
                "spec": spec,
                "status": {"loadBalancer": {"ingress": ingress}},
            }))
            .unwrap(),
        )
    }

    fn slice(service: &str, endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {
                    "name": format!("{service}-x"),
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn services_are_filtered_and_endpoints_placed() {
        let services = vec![
            service(
                "web",
                json!({"externalTrafficPolicy": "Local"}),
                &["192.0.2.241", "2001:db8:2::241"],
            ),
            service(
                "classed",
                json!({"loadBalancerClass": "other.io/lb"}),
                &["192.0.2.242"],
            ),
            service("pending", json!({}), &[]),
            service("cluster-ip", json!({"type": "ClusterIP"}), &["192.0.2.243"]),
            service("idle", json!({}), &["192.0.2.244"]),
        ];
        let slices = vec![
            slice(
                "web",
                json!([
                    {"addresses": ["10.0.0.1"], "nodeName": "node1", "conditions": {}},
                    {"addresses": ["10.0.0.2"], "nodeName": "node2", "conditions": {"ready": false}},
                    {"addresses": ["10.0.0.3"], "nodeName": "node3", "conditions": {"ready": false, "serving": true}},
                ]),
            ),
            slice(
                "idle",
                json!([{"addresses": ["10.0.0.4"], "nodeName": "node1", "conditions": {"ready": false}}]),
            ),
        ];
        let infos = service_infos(&services, &slices, None);
        let names: Vec<&str> = infos.iter().map(|s| s.key.name.as_str()).collect();
        assert_eq!(names, vec!["web", "idle"]);
        let web = &infos[0];
        assert!(web.local_traffic_policy);
        assert_eq!(web.ips.len(), 2);
        assert!(web.has_serving_endpoint);
        assert_eq!(
            web.serving_nodes,
            BTreeSet::from(["node1".to_string(), "node3".to_string()])
        );
        assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
        let idle = &infos[1];
        assert!(!idle.has_serving_endpoint && idle.serving_nodes.is_empty());

        let classed = service_infos(&services, &slices, Some("other.io/lb"));
        assert_eq!(classed.len(), 1);
        assert_eq!(classed[0].key.name, "classed");

        // What the watches store (trimmed) decides exactly as the whole objects do.
        let trimmed = |services: &[Arc<Service>]| -> Vec<Arc<Service>> {
            services
                .iter()
                .map(|s| {
                    let mut s = (**s).clone();
                    trim_service(&mut s);
                    Arc::new(s)
                })
                .collect()
        };
        let trimmed_slices: Vec<Arc<EndpointSlice>> = slices
            .iter()
            .map(|s| {
                let mut s = (**s).clone();
                trim_endpoint_slice(&mut s);
                Arc::new(s)
            })
            .collect();
        for class in [None, Some("other.io/lb")] {
            assert_eq!(
                format!(
                    "{:?}",
                    service_infos(&trimmed(&services), &trimmed_slices, class)
                ),
                format!("{:?}", service_infos(&services, &slices, class))
            );
        }
        assert!(
            trimmed_slices[0].endpoints.as_ref().unwrap()[0]
                .addresses
                .is_empty()
        );
    }

    #[test]
    fn trimming_drops_what_the_speaker_never_reads() {
        let mut web: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                         "annotations": {"metallb.io/allow-shared-ip": "k"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"app": "web"},
                     "clusterIPs": ["203.0.113.9"], "externalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.241"}]},
                       "conditions": [{"type": "ferrolb.io/AddressAssigned", "status": "True",
                                       "reason": "Assigned", "message": "m",
                                       "lastTransitionTime": "2026-12-03T00:00:00Z"}]},
        }))
        .unwrap();
        trim_service(&mut web);
        let spec = web.spec.as_ref().unwrap();
        assert!(spec.ports.is_none() && spec.selector.is_none() && spec.cluster_ips.is_none());
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert!(web.status.as_ref().unwrap().conditions.is_none());
        assert_eq!(shared::ingress_ips(&web).len(), 1);
        assert_eq!(web.metadata.uid.as_deref(), Some("u1"));
        assert!(web.metadata.annotations.is_some());
    }

    #[test]
    fn legacy_config_map_feeds_the_configuration() {
        let map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "config", "namespace": "ferrolb-system"},
            "data": {"config": "address-pools:\n- name: lan\n  protocol: layer2\n  addresses: [192.0.2.240/28]\n"},
        }))
        .unwrap();
        let legacy = shared::legacy_config_map(&map).unwrap();
        let config = Config::build(&ClusterResources {
            legacy: Some(legacy),
            ..ClusterResources::default()
        })
        .unwrap();
        assert!(config.pools.contains_key("lan"));
        let ip: IpAddr = "192.0.2.241".parse().unwrap();
        assert!(
            config
                .l2_advertisements
                .iter()
                .any(|ad| ad.pools.iter().any(|p| p == "lan")),
            "a layer2 legacy pool is advertised: {:?}",
            config.l2_advertisements
        );
        assert!(config.pool_containing(&ip).is_some());
    }

    #[test]
    fn a_sharing_key_in_any_spelling_marks_the_service() {
        let mut shared: Vec<Arc<Service>> = Vec::new();
        for (name, key) in [
            ("a", "ferrolb.io/allow-shared-ip"),
            ("b", "metallb.io/allow-shared-ip"),
            ("c", "metallb.universe.tf/allow-shared-ip"),
        ] {
            let mut s = (*service(name, json!({}), &["192.0.2.241"])).clone();
            s.metadata.annotations = Some(BTreeMap::from([(key.to_string(), "web".to_string())]));
            shared.push(Arc::new(s));
        }
        shared.push(service("alone", json!({}), &["192.0.2.242"]));
        let infos = service_infos(&shared, &[], None);
        let sharing: Vec<(&str, bool)> = infos
            .iter()
            .map(|s| (s.key.name.as_str(), s.shares_ip))
            .collect();
        assert_eq!(
            sharing,
            [("a", true), ("b", true), ("c", true), ("alone", false)]
        );
    }

    #[test]
    fn services_being_deleted_are_not_announced() {
        let mut deleting = (*service("web", json!({}), &["192.0.2.241"])).clone();
        deleting.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
        let slices = vec![slice(
            "web",
            json!([{"addresses": ["10.0.0.1"], "conditions": {}}]),
        )];
        assert!(service_infos(&[Arc::new(deleting)], &slices, None).is_empty());
    }

    #[test]
    fn node_conditions_and_addresses() {
        let node: Arc<Node> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "node1", "labels": {"zone": "a"}},
                "status": {
                    "conditions": [{"type": "NetworkUnavailable", "status": "True"}],
                    "addresses": [
                        {"type": "InternalIP", "address": "192.0.2.11"},
                        {"type": "InternalIP", "address": "2001:db8:2::11"},
                        {"type": "Hostname", "address": "node1"},
                    ],
                },
            }))
            .unwrap(),
        );
        let infos = node_infos(std::slice::from_ref(&node));
        assert!(infos["node1"].network_unavailable);
        assert_eq!(
            infos["node1"].labels.get("zone").map(String::as_str),
            Some("a")
        );
        let ips = node_ips(&[node]);
        assert_eq!(ips.len(), 2);
    }
}
