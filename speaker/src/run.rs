//! The speaker's main loop: watch the cluster, rebuild the [`SpeakerView`], elect, diff, apply.
//!
//! Every watched change (and a periodic tick that also rescans the host's interfaces) wakes one
//! reconcile pass; passes are cheap and idempotent, so coalescing wake-ups is safe.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrolb_crds::config::{ClusterResources, Config};
use ferrolb_crds::v1beta1;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::announce::{self, Announced, Change};
use crate::election::{AllLive, NodeName};
use crate::interfaces;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::status::StatusWriter;
use crate::tasks::Layer2;
use crate::view::{
    EligibilityOptions, EndpointConditions, NodeInfo, PlanOptions, ServiceInfo, ServiceKey,
    SpeakerView, plan,
};

/// How often the host's interfaces are rescanned (and the plan recomputed) without any event.
pub const RESCAN_PERIOD: Duration = Duration::from_secs(5);
/// How long leaving the membership may take on shutdown.
const LEAVE_DEADLINE: Duration = Duration::from_secs(1);
/// Wake-ups closer together than this are coalesced into one pass.
const COALESCE: Duration = Duration::from_millis(50);
/// The legacy MetalLB ConfigMap's name.
pub const LEGACY_CONFIG_MAP: &str = "config";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What `run` needs to know.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub node_name: String,
    pub namespace: String,
    pub lb_class: Option<String>,
    pub ignore_exclude_lb: bool,
    pub spread: bool,
}

/// Set once the first reconcile pass is done (for `/readyz`).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

struct Stores {
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
}

fn watch_into<K>(api: Api<K>, config: watcher::Config, wake: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(err) => warn!(%kind, error = %err, "watch error (retrying)"),
            }
        }
    });
    store
}

impl Stores {
    fn start(client: &Client, namespace: &str, wake: &Arc<Notify>) -> Stores {
        let all = watcher::Config::default();
        let ns = |_: ()| watcher::Config::default();
        Stores {
            services: watch_into(Api::all(client.clone()), all.clone(), wake.clone()),
            slices: watch_into(Api::all(client.clone()), all.clone(), wake.clone()),
            nodes: watch_into(Api::all(client.clone()), all.clone(), wake.clone()),
            pools: watch_into(
                Api::namespaced(client.clone(), namespace),
                ns(()),
                wake.clone(),
            ),
            l2_ads: watch_into(
                Api::namespaced(client.clone(), namespace),
                ns(()),
                wake.clone(),
            ),
            bgp_ads: watch_into(
                Api::namespaced(client.clone(), namespace),
                ns(()),
                wake.clone(),
            ),
            peers: watch_into(
                Api::namespaced(client.clone(), namespace),
                ns(()),
                wake.clone(),
            ),
            bfd: watch_into(
                Api::namespaced(client.clone(), namespace),
                ns(()),
                wake.clone(),
            ),
            communities: watch_into(
                Api::namespaced(client.clone(), namespace),
                ns(()),
                wake.clone(),
            ),
            config_maps: watch_into(
                Api::namespaced(client.clone(), namespace),
                watcher::Config::default().fields(&format!("metadata.name={LEGACY_CONFIG_MAP}")),
                wake.clone(),
            ),
        }
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
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
        Ok(())
    }

    fn cluster_resources(&self) -> Result<ClusterResources, String> {
        let legacy = match self.config_maps.state().into_iter().next() {
            None => None,
            Some(map) => Some(legacy_config(&map)?),
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
            secrets: None,
        })
    }
}

/// Runs until `shutdown` turns true; then stops answering and removes this node's status objects.
pub async fn run(
    client: Client,
    options: RunOptions,
    metrics: Metrics,
    readiness: Readiness,
    liveness: Liveness,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let stores = Stores::start(&client, &options.namespace, &wake);
    tokio::select! {
        ready = stores.wait_ready() => ready?,
        _ = crate::shutdown::stopped(&mut shutdown) => return Ok(()),
    }
    info!(node = %options.node_name, "caches synced");

    let mut speaker = Speaker {
        options: options.clone(),
        config: None,
        announced: Announced::new(),
        layer2: Layer2::new(metrics.clone()),
        metrics,
        status: StatusWriter::new(client.clone(), &options.namespace, &options.node_name),
        owners: BTreeMap::new(),
        liveness: liveness.clone(),
        last_live: None,
        announced_before: BTreeSet::new(),
    };
    let mut live_changes = liveness.live.clone();
    speaker.announced_before = speaker.status.adopt().await;
    let mut tick = tokio::time::interval(RESCAN_PERIOD);
    loop {
        speaker.reconcile(&stores).await;
        readiness.set();
        tokio::select! {
            _ = wake.notified() => tokio::time::sleep(COALESCE).await,
            _ = tick.tick() => {}
            _ = live_changes.changed() => {}
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        }
    }
    // Leave first: the others drop this node at once and the new owners start announcing
    // while this one still answers, so there is no gap.
    info!("stopping: leaving the membership, then withdrawing every announcement");
    liveness.leave(LEAVE_DEADLINE).await;
    speaker.layer2.stop();
    speaker.status.remove_all().await;
    Ok(())
}

struct Speaker {
    options: RunOptions,
    /// The last valid configuration.
    config: Option<Config>,
    announced: Announced,
    layer2: Layer2,
    metrics: Metrics,
    status: StatusWriter,
    /// Last known owner per IP, to emit events only on change.
    owners: BTreeMap<IpAddr, Option<NodeName>>,
    liveness: Liveness,
    /// The live set of the previous pass, to notice speakers that join.
    last_live: Option<crate::membership::LiveSet>,
    /// Services an earlier run of this node announced (its status objects): announcing them
    /// again after a restart is not an owner change, so no Event (consumed by the first pass).
    announced_before: BTreeSet<ServiceKey>,
}

impl Speaker {
    async fn reconcile(&mut self, stores: &Stores) {
        match stores.cluster_resources().map(|r| Config::build(&r)) {
            Ok(Ok(config)) => {
                if self.config.as_ref() != Some(&config) {
                    info!(
                        pools = config.pools.len(),
                        l2_advertisements = config.l2_advertisements.len(),
                        "configuration loaded"
                    );
                }
                self.config = Some(config);
            }
            Ok(Err(errors)) => {
                self.metrics.config_invalid.inc();
                warn!(errors = ?errors.lines(), "configuration invalid: keeping the last valid one");
            }
            Err(err) => {
                self.metrics.config_invalid.inc();
                warn!(error = %err, "legacy ConfigMap invalid: keeping the last valid configuration");
            }
        }
        let view = SpeakerView {
            config: self.config.clone().unwrap_or_default(),
            nodes: node_infos(&stores.nodes.state()),
            services: service_infos(
                &stores.services.state(),
                &stores.slices.state(),
                self.options.lb_class.as_deref(),
            ),
        };
        self.liveness.set_seed_ips(node_ips(&stores.nodes.state()));
        let plan_options = PlanOptions {
            eligibility: EligibilityOptions {
                ignore_exclude_lb: self.options.ignore_exclude_lb,
            },
            spread: self.options.spread,
        };
        let live = self.liveness.current();
        let members = live.as_ref().map_or(view.nodes.len(), BTreeSet::len);
        self.metrics
            .membership_size
            .set(i64::try_from(members).unwrap_or(i64::MAX));
        let plan = match &live {
            None => plan(&view, &self.options.node_name, &AllLive, plan_options),
            Some(set) => plan(
                &view,
                &self.options.node_name,
                &|node: &str| set.contains(node),
                plan_options,
            ),
        };
        let host = match interfaces::scan() {
            Ok(host) => host,
            Err(err) => {
                warn!(error = %err, "cannot read interfaces");
                Vec::new()
            }
        };
        let desired: Announced = plan
            .announce
            .iter()
            .map(|(ip, a)| (*ip, interfaces::select_for(*ip, &a.interfaces, &host)))
            .collect();
        let mut changes = announce::diff(&self.announced, &desired);
        // A speaker that (re)joined may have answered for our IPs while cut off from us.
        let joined = match (&self.last_live, &live) {
            (Some(before), Some(now)) => now.iter().any(|n| !before.contains(n)),
            _ => false,
        };
        self.last_live = live.clone();
        if joined {
            let kept: Announced = self
                .announced
                .iter()
                .filter(|(ip, on)| desired.get(*ip) == Some(*on))
                .map(|(ip, on)| (*ip, on.clone()))
                .collect();
            if !kept.is_empty() {
                info!(
                    ips = kept.len(),
                    "a speaker joined: announcing our IPs again"
                );
            }
            changes.extend(announce::refresh(&kept));
        }
        for change in &changes {
            match change {
                Change::Announce {
                    ip,
                    interfaces,
                    gratuitous_on,
                } => {
                    let services = plan
                        .announce
                        .get(ip)
                        .map(|a| {
                            a.services
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default();
                    info_span!("announce", %ip, node = %self.options.node_name).in_scope(|| {
                        info!(?services, ?interfaces, ?gratuitous_on, "announcing");
                    });
                }
                Change::Withdraw { ip } => {
                    let reason = plan.skipped.get(ip).map(|r| r.as_str()).unwrap_or("gone");
                    info_span!("withdraw", %ip, node = %self.options.node_name).in_scope(|| {
                        info!(reason, "withdrawing");
                    });
                }
            }
        }
        for (ip, reason) in &plan.skipped {
            debug!(%ip, %reason, "not announcing");
        }
        announce::apply(&mut self.announced, &changes);
        self.layer2.apply(&self.announced, &changes);

        // Status objects: one per announced Service, with the interfaces of its IPs.
        let mut per_service: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
        for (ip, announcement) in &plan.announce {
            let on = self.announced.get(ip).cloned().unwrap_or_default();
            if on.is_empty() {
                continue;
            }
            for key in &announcement.services {
                per_service
                    .entry(key.clone())
                    .or_default()
                    .extend(on.iter().cloned());
            }
        }
        let services = stores.services.state();
        let took_over: Vec<(IpAddr, Vec<ObjectReference>)> = plan
            .announce
            .iter()
            .filter(|(ip, a)| {
                let was_ours = self
                    .owners
                    .get(*ip)
                    .and_then(|o| o.as_ref())
                    .map(NodeName::as_str)
                    == Some(self.options.node_name.as_str());
                let restarted_owner =
                    !a.services.is_empty() && a.services.is_subset(&self.announced_before);
                !was_ours && !restarted_owner
            })
            .map(|(ip, a)| {
                let references = services
                    .iter()
                    .filter(|s| {
                        a.services.contains(&ServiceKey {
                            namespace: s.metadata.namespace.clone().unwrap_or_default(),
                            name: s.metadata.name.clone().unwrap_or_default(),
                        })
                    })
                    .map(|s| s.object_ref(&()))
                    .collect();
                (*ip, references)
            })
            .collect();
        self.owners = plan.owners.clone();
        self.announced_before.clear();
        self.status
            .sync(&per_service, &took_over)
            .instrument(info_span!("status", node = %self.options.node_name))
            .await;
    }
}

/// The legacy MetalLB configuration in a ConfigMap (`data.config`).
pub fn legacy_config(map: &ConfigMap) -> Result<ferrolb_crds::legacy::LegacyConfigMap, String> {
    let value = serde_json::to_value(map).map_err(|e| e.to_string())?;
    ferrolb_crds::legacy::from_config_map_value(&value).map_err(|e| e.to_string())
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

/// The Services this speaker handles (type LoadBalancer, our class, with ingress IPs) with their
/// endpoints' placement.
pub fn service_infos(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    lb_class: Option<&str>,
) -> Vec<ServiceInfo> {
    let mut endpoints: BTreeMap<ServiceKey, (bool, BTreeSet<String>)> = BTreeMap::new();
    for slice in slices {
        let (Some(namespace), Some(service)) = (
            slice.metadata.namespace.clone(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .cloned(),
        ) else {
            continue;
        };
        let entry = endpoints
            .entry(ServiceKey {
                namespace,
                name: service,
            })
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
        .filter_map(|service| {
            let spec = service.spec.as_ref()?;
            if spec.type_.as_deref() != Some("LoadBalancer") {
                return None;
            }
            if spec.load_balancer_class.as_deref() != lb_class {
                return None;
            }
            let ips: Vec<IpAddr> = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .map(|ingress| {
                    ingress
                        .iter()
                        .filter_map(|i| i.ip.as_deref()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            if ips.is_empty() {
                return None;
            }
            let key = ServiceKey {
                namespace: service.metadata.namespace.clone()?,
                name: service.metadata.name.clone()?,
            };
            let (has_serving_endpoint, serving_nodes) =
                endpoints.get(&key).cloned().unwrap_or_default();
            Some(ServiceInfo {
                labels: service.metadata.labels.clone().unwrap_or_default(),
                ips,
                local_traffic_policy: spec.external_traffic_policy.as_deref() == Some("Local"),
                has_serving_endpoint,
                serving_nodes,
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
    }

    #[test]
    fn legacy_config_map_feeds_the_configuration() {
        let map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "config", "namespace": "ferrolb-system"},
            "data": {"config": "address-pools:\n- name: lan\n  protocol: layer2\n  addresses: [192.0.2.240/28]\n"},
        }))
        .unwrap();
        let legacy = legacy_config(&map).unwrap();
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
        let broken: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "config"},
            "data": {"config": "no-such-key: 1"},
        }))
        .unwrap();
        assert!(legacy_config(&broken).is_err());
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
