//! The configuration: watches the config CRs, the legacy ConfigMap and Namespaces, builds the
//! validated [`Config`] through the crds crate and puts it in force. An invalid configuration
//! leaves the last valid one in force; each offending object gets a `ConfigValid=False`
//! condition (if its kind has `status.conditions`) and a Warning Event, and
//! `ferrolb_config_stale` is 1.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use ferrolb_crds::config::{
    AddressEntry, ClusterResources, Config, ConfigError, FieldPath, ObjectId, Reason,
};
use ferrolb_crds::v1beta1::{
    BFDProfile, BGPAdvertisement, BGPPeer, CONDITION_CONFIG_VALID, Community, IPAddressPool,
    L2Advertisement,
};
use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::{Context, config_object_reference, lock};
use crate::allocator::{Displacement, PoolDef, PoolEntry};
use crate::options::Options;

/// Caches of everything the configuration is built from.
pub struct ConfigStores {
    pub pools: Store<IPAddressPool>,
    pub l2_advertisements: Store<L2Advertisement>,
    pub bgp_advertisements: Store<BGPAdvertisement>,
    pub bgp_peers: Store<BGPPeer>,
    pub bfd_profiles: Store<BFDProfile>,
    pub communities: Store<Community>,
    pub config_maps: Store<ConfigMap>,
    pub namespaces: Store<Namespace>,
}

fn watch_kind<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, BoxStream<'static, ()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let changes = reflector::reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .modify(ferrolb_crds::runtime::slim),
    )
    .filter_map(|event| {
        futures::future::ready(match event {
            Ok(_) => Some(()),
            Err(error) => {
                warn!(%error, kind = %K::kind(&()), "configuration watch failed; retrying");
                None
            }
        })
    })
    .boxed();
    (reader, changes)
}

async fn check_crd<K>(client: &Client, namespace: &str) -> anyhow::Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
            "the {} CRD ({}.{}) is not installed: kubectl apply -k config/crd",
            K::kind(&()),
            K::plural(&()),
            K::group(&())
        ),
        // Other errors (RBAC, network) show up in the watches, which retry.
        _ => Ok(()),
    }
}

/// Fails with an install hint when a FerroLB configuration CRD is missing (the watches would
/// otherwise retry forever and the controller would never become ready).
pub async fn check_crds(client: &Client, namespace: &str) -> anyhow::Result<()> {
    check_crd::<IPAddressPool>(client, namespace).await?;
    check_crd::<L2Advertisement>(client, namespace).await?;
    check_crd::<BGPAdvertisement>(client, namespace).await?;
    check_crd::<BGPPeer>(client, namespace).await?;
    check_crd::<BFDProfile>(client, namespace).await?;
    check_crd::<Community>(client, namespace).await
}

/// Starts the caches; the stream yields on every change of any of them.
pub fn watch(client: &Client, options: &Options) -> (ConfigStores, impl Stream<Item = ()> + use<>) {
    let ns = options.namespace.as_str();
    let all = watcher::Config::default();
    let mut changes = SelectAll::new();
    macro_rules! cache {
        ($api:expr, $config:expr) => {{
            let (store, stream) = watch_kind($api, $config);
            changes.push(stream);
            store
        }};
    }
    let stores = ConfigStores {
        pools: cache!(Api::namespaced(client.clone(), ns), all.clone()),
        l2_advertisements: cache!(Api::namespaced(client.clone(), ns), all.clone()),
        bgp_advertisements: cache!(Api::namespaced(client.clone(), ns), all.clone()),
        bgp_peers: cache!(Api::namespaced(client.clone(), ns), all.clone()),
        bfd_profiles: cache!(Api::namespaced(client.clone(), ns), all.clone()),
        communities: cache!(Api::namespaced(client.clone(), ns), all.clone()),
        config_maps: cache!(
            Api::namespaced(client.clone(), ns),
            watcher::Config::default().fields(&format!("metadata.name={}", options.config_map))
        ),
        namespaces: cache!(Api::all(client.clone()), all.clone()),
    };
    (stores, changes)
}

fn owned<K>(store: &Store<K>) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut objects: Vec<K> = store.state().iter().map(|o| K::clone(o)).collect();
    objects.sort_by_key(|o| o.meta().name.clone());
    objects
}

impl ConfigStores {
    async fn wait_until_ready(&self) {
        let _ = futures::join!(
            self.pools.wait_until_ready(),
            self.l2_advertisements.wait_until_ready(),
            self.bgp_advertisements.wait_until_ready(),
            self.bgp_peers.wait_until_ready(),
            self.bfd_profiles.wait_until_ready(),
            self.communities.wait_until_ready(),
            self.config_maps.wait_until_ready(),
            self.namespaces.wait_until_ready(),
        );
    }

    /// The inputs of [`Config::build`]; a legacy ConfigMap that does not parse is an error on it.
    pub fn resources(&self) -> (ClusterResources, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let legacy = self.config_maps.state().first().and_then(|config_map| {
            match ferrolb_crds::cluster::legacy_config_map(config_map) {
                Ok(parsed) => Some(parsed),
                Err(error) => {
                    errors.push(ConfigError {
                        object: ObjectId::new("ConfigMap", config_map.name_any()),
                        field: FieldPath::new("data.config"),
                        reason: Reason::Other(error.to_string()),
                    });
                    None
                }
            }
        });
        let resources = ClusterResources {
            ip_address_pools: owned(&self.pools),
            l2_advertisements: owned(&self.l2_advertisements),
            bgp_advertisements: owned(&self.bgp_advertisements),
            bgp_peers: owned(&self.bgp_peers),
            bfd_profiles: owned(&self.bfd_profiles),
            communities: owned(&self.communities),
            legacy,
            // The controller needs no BGP passwords: Secrets are the speaker's business.
            secrets: None,
        };
        (resources, errors)
    }
}

/// The allocator's view of the pools.
pub fn pool_defs(config: &Config) -> Vec<PoolDef> {
    config
        .pools
        .values()
        .map(|pool| PoolDef {
            name: pool.name.clone(),
            entries: pool
                .addresses
                .iter()
                .flat_map(|address| {
                    let from_range = matches!(address.entry, AddressEntry::Range { .. });
                    address.cidrs.iter().map(move |cidr| PoolEntry {
                        cidr: *cidr,
                        from_range,
                    })
                })
                .collect(),
            auto_assign: pool.auto_assign,
            avoid_buggy_ips: pool.avoid_buggy_ips,
            priority: pool.allocation.as_ref().map_or(0, |a| a.priority),
        })
        .collect()
}

/// Keeps the configuration up to date; returns only when the watches end.
pub async fn maintain(ctx: Arc<Context>, changes: impl Stream<Item = ()>) -> anyhow::Result<()> {
    let notify = Notify::new();
    let drive = changes.for_each(|()| {
        notify.notify_one();
        futures::future::ready(())
    });
    let rebuild_loop = async {
        ctx.stores.wait_until_ready().await;
        let mut seen = Seen::default();
        loop {
            rebuild(&ctx, &mut seen).await;
            notify.notified().await;
            // Coalesce bursts (kubectl apply of several objects).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = drive => anyhow::bail!("configuration watches ended"),
        () = rebuild_loop => Ok(()),
    }
}

/// What the Services' requests depend on, as of the last time every Service was reconciled.
#[derive(Default, PartialEq)]
struct Seen {
    config: Option<Arc<Config>>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

async fn rebuild(ctx: &Context, seen: &mut Seen) {
    let (resources, mut errors) = ctx.stores.resources();
    let (result, _warnings) = Config::build_with_warnings(&resources);
    let config = match result {
        Ok(config) if errors.is_empty() => Some(config),
        Ok(_) => None,
        Err(build_errors) => {
            errors.extend(build_errors.0);
            None
        }
    };
    if let Some(config) = config {
        let unchanged = ctx.config().is_some_and(|current| *current == config);
        if !unchanged {
            match lock(&ctx.allocator).set_pools(pool_defs(&config)) {
                Ok(displaced) => {
                    for moved in displaced {
                        match moved.change {
                            Displacement::Unassigned => {
                                info!(service = %moved.service, ips = ?moved.ips, "addresses left every pool: allocating again")
                            }
                            Displacement::Rehomed { from, to } => {
                                info!(service = %moved.service, %from, %to, "addresses moved to another pool")
                            }
                        }
                    }
                    info!(pools = config.pools.len(), "configuration loaded");
                    *ctx.config.write().unwrap_or_else(PoisonError::into_inner) =
                        Some(Arc::new(config));
                }
                Err(error) => {
                    // The crds crate validates the same rules; reaching this is a bug there.
                    errors.push(ConfigError {
                        object: ObjectId::new("IPAddressPool", ""),
                        field: FieldPath::new("spec.addresses"),
                        reason: Reason::Other(error.to_string()),
                    });
                }
            }
        }
    }
    let stale = !errors.is_empty();
    let loaded = ctx.config().is_some();
    ctx.metrics.config_stale.set(i64::from(stale));
    ctx.metrics.config_loaded.set(i64::from(loaded));
    if stale {
        warn!(
            errors = errors.len(),
            "configuration invalid; the last valid one stays in force"
        );
    }
    if loaded {
        ctx.config_ready.send_replace(true);
    }
    ctx.mark_pools_dirty();
    let now = Seen {
        config: ctx.config(),
        namespace_labels: ctx
            .stores
            .namespaces
            .state()
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect(),
    };
    if now != *seen {
        // Pools, selectors or Namespace labels changed: every Service is checked again. (Not
        // on every event: our own status writes on pools come back as events too.)
        ctx.reconcile_all();
        *seen = now;
    }
    report(ctx, &errors).await;
}

/// Error messages by (kind, name).
fn messages(errors: &[ConfigError]) -> BTreeMap<(String, String), String> {
    let mut by_object: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for error in errors {
        let entry = if error.object.entry.is_empty() {
            String::new()
        } else {
            format!("{} ", error.object.entry)
        };
        by_object
            .entry((error.object.kind.clone(), error.object.name.clone()))
            .or_default()
            .push(format!("{entry}{}: {}", error.field, error.reason));
    }
    by_object
        .into_iter()
        .map(|(object, lines)| (object, lines.join("; ")))
        .collect()
}

async fn report(ctx: &Context, errors: &[ConfigError]) {
    let messages = messages(errors);
    let ns = ctx.options.namespace.clone();
    // Events on change only.
    let previous = std::mem::take(&mut *lock(&ctx.config_events));
    for ((kind, name), message) in &messages {
        if previous.get(&(kind.clone(), name.clone())) != Some(message) {
            ctx.publish(
                &config_object_reference(kind, name, &ns),
                EventType::Warning,
                "InvalidConfiguration",
                "Configure",
                message.clone(),
            )
            .await;
        }
    }
    *lock(&ctx.config_events) = messages.clone();

    set_conditions(ctx, &ctx.stores.pools, &messages, |o| {
        o.status.as_ref().map(|s| &s.conditions)
    })
    .await;
    set_conditions(ctx, &ctx.stores.l2_advertisements, &messages, |o| {
        o.status.as_ref().map(|s| &s.conditions)
    })
    .await;
    set_conditions(ctx, &ctx.stores.bgp_advertisements, &messages, |o| {
        o.status.as_ref().map(|s| &s.conditions)
    })
    .await;
    set_conditions(ctx, &ctx.stores.bgp_peers, &messages, |o| {
        o.status.as_ref().map(|s| &s.conditions)
    })
    .await;
    set_conditions(ctx, &ctx.stores.bfd_profiles, &messages, |o| {
        o.status.as_ref().map(|s| &s.conditions)
    })
    .await;
    set_conditions(ctx, &ctx.stores.communities, &messages, |o| {
        o.status.as_ref().map(|s| &s.conditions)
    })
    .await;
}

/// Writes `ConfigValid` on every object of one kind whose condition differs from what it
/// should be.
async fn set_conditions<K>(
    ctx: &Context,
    store: &Store<K>,
    messages: &BTreeMap<(String, String), String>,
    conditions: impl Fn(&K) -> Option<&Vec<Condition>>,
) where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).to_string();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    for object in store.state() {
        let name = object.name_any();
        let (status, reason, message) = match messages.get(&(kind.clone(), name.clone())) {
            Some(message) => ("False", "InvalidConfiguration", message.clone()),
            None => (
                "True",
                "Valid",
                "no configuration errors in this object".to_string(),
            ),
        };
        let existing = conditions(&object)
            .and_then(|list| list.iter().find(|c| c.type_ == CONDITION_CONFIG_VALID));
        if existing
            .is_some_and(|c| c.status == status && c.reason == reason && c.message == message)
        {
            continue;
        }
        if !ctx.is_leader() {
            return;
        }
        let since = existing
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.0.to_string())
            .unwrap_or_else(|| {
                k8s_openapi::jiff::Timestamp::now()
                    .round(k8s_openapi::jiff::Unit::Second)
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            });
        let patch = json!({"status": {"conditions": [{
            "type": CONDITION_CONFIG_VALID,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
            "observedGeneration": object.meta().generation,
        }]}});
        if let Err(error) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            warn!(%error, %kind, %name, "writing the ConfigValid condition failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ferrolb_crds::config::ClusterResources;
    use serde_json::json;

    use super::*;

    fn pool(name: &str, spec: serde_json::Value) -> IPAddressPool {
        serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "ferrolb-system"}, "spec": spec,
        }))
        .expect("pool")
    }

    #[test]
    fn pool_defs_keep_order_ranges_and_priority() {
        let config = Config::build(&ClusterResources {
            ip_address_pools: vec![
                pool(
                    "a",
                    json!({"addresses": ["192.0.2.0/24", "198.51.100.10-198.51.100.13"],
                                  "avoidBuggyIPs": true}),
                ),
                pool(
                    "b",
                    json!({"addresses": ["2001:db8::/64"], "autoAssign": false,
                                  "serviceAllocation": {"priority": 5}}),
                ),
            ],
            ..ClusterResources::default()
        })
        .expect("valid");
        let defs = pool_defs(&config);
        assert_eq!(defs.len(), 2);
        let a = &defs[0];
        assert_eq!(a.name, "a");
        assert!(a.auto_assign && a.avoid_buggy_ips);
        assert_eq!(a.priority, 0);
        assert_eq!(
            a.entries[0],
            PoolEntry::cidr("192.0.2.0/24".parse().unwrap())
        );
        // 198.51.100.10-13 summarises to two /31s, flagged as from a range.
        assert_eq!(
            a.entries[1..],
            [
                PoolEntry::from_range("198.51.100.10/31".parse().unwrap()),
                PoolEntry::from_range("198.51.100.12/31".parse().unwrap()),
            ]
        );
        let b = &defs[1];
        assert!(!b.auto_assign);
        assert_eq!(b.priority, 5);
        let _: IpAddr = b.entries[0].cidr.network();
    }

    #[test]
    fn messages_group_by_object() {
        let errors = vec![
            ConfigError {
                object: ObjectId::new("IPAddressPool", "p"),
                field: FieldPath::new("spec.addresses[0]"),
                reason: Reason::Empty,
            },
            ConfigError {
                object: ObjectId::new("IPAddressPool", "p"),
                field: FieldPath::new("spec.addresses[1]"),
                reason: Reason::Missing,
            },
            ConfigError {
                object: ObjectId::config_map_entry("config", "address-pools[1]"),
                field: FieldPath::new("protocol"),
                reason: Reason::Missing,
            },
        ];
        let messages = messages(&errors);
        assert_eq!(
            messages[&("IPAddressPool".to_string(), "p".to_string())],
            "spec.addresses[0]: must not be empty; spec.addresses[1]: is required"
        );
        assert_eq!(
            messages[&("ConfigMap".to_string(), "config".to_string())],
            "address-pools[1] protocol: is required"
        );
    }
}
