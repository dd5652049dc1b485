//! What the speaker tells the cluster: one `ServiceL2Status` per Service this node announces
//! (created on announce, interfaces kept current, deleted on withdraw and on shutdown) and an
//! Event on the Service when this node takes one of its IPs over.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::v1beta1::{
    InterfaceInfo, LABEL_NODE, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE,
    SERVICE_L2_STATUS_GENERATE_NAME, ServiceL2Status, ServiceL2StatusSpec, ServiceL2StatusStatus,
};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::view::ServiceKey;

/// Event reason on a Service when a node starts announcing one of its IPs.
pub const EVENT_REASON_ANNOUNCING: &str = "AnnouncingNode";
/// The field manager / event reporter name.
pub const MANAGER: &str = "ferrolb-speaker";

/// Writes this node's status objects and events.
pub struct StatusWriter {
    api: Api<ServiceL2Status>,
    node: String,
    recorder: Recorder,
    /// Status objects this writer created (or found): Service → (object name, interfaces).
    known: BTreeMap<ServiceKey, (String, BTreeSet<String>)>,
    /// Passes since the last comparison with the API (see [`RESYNC_PASSES`]).
    passes: u32,
}

/// Every this many passes (~1 min at one pass per 5 s) the objects are listed again, so that
/// ones deleted by someone else are recreated and orphans are removed.
pub const RESYNC_PASSES: u32 = 12;

impl StatusWriter {
    pub fn new(client: Client, namespace: &str, node: &str) -> StatusWriter {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_string(),
                instance: Some(node.to_string()),
            },
        );
        StatusWriter {
            api: Api::namespaced(client, namespace),
            node: node.to_string(),
            recorder,
            known: BTreeMap::new(),
            passes: 0,
        }
    }

    fn node_selector(&self) -> ListParams {
        ListParams::default().labels(&format!("{LABEL_NODE}={}", self.node))
    }

    /// Takes over what an earlier run of this node left behind (a crash or an upgrade skips the
    /// cleanup): one object per Service is kept and updated by the next [`Self::sync`] (or
    /// deleted if the Service is no longer announced), duplicates are deleted. Returns the
    /// Services this node announced before, so that re-announcing them is not reported as an
    /// owner change.
    pub async fn adopt(&mut self) -> BTreeSet<ServiceKey> {
        self.known.clear();
        let list = match self.api.list(&self.node_selector()).await {
            Ok(list) => list,
            Err(err) => {
                warn!(error = %err, "cannot list ServiceL2Statuses");
                return BTreeSet::new();
            }
        };
        for object in list {
            let Some(name) = object.metadata.name.clone() else {
                continue;
            };
            let labels = object.metadata.labels.clone().unwrap_or_default();
            let key = match (
                labels.get(LABEL_SERVICE_NAMESPACE),
                labels.get(LABEL_SERVICE_NAME),
            ) {
                (Some(namespace), Some(service)) => ServiceKey {
                    namespace: namespace.clone(),
                    name: service.clone(),
                },
                _ => {
                    self.delete(&name).await;
                    continue;
                }
            };
            if self.known.contains_key(&key) {
                self.delete(&name).await;
                continue;
            }
            let interfaces = object
                .status
                .map(|s| s.interfaces.into_iter().map(|i| i.name).collect())
                .unwrap_or_default();
            self.known.insert(key, (name, interfaces));
        }
        self.known.keys().cloned().collect()
    }

    /// Deletes every status object of this node, known or not.
    async fn remove_listed(&mut self) {
        match self.api.list(&self.node_selector()).await {
            Ok(list) => {
                for object in list {
                    if let Some(name) = object.metadata.name {
                        self.delete(&name).await;
                    }
                }
            }
            Err(err) => warn!(error = %err, "cannot list ServiceL2Statuses"),
        }
        self.known.clear();
    }

    /// Removes every status object of this node (graceful stop).
    pub async fn remove_all(&mut self) {
        let names: Vec<String> = self.known.values().map(|(n, _)| n.clone()).collect();
        for name in names {
            self.delete(&name).await;
        }
        self.known.clear();
        // Anything created by a request whose answer was lost.
        self.remove_listed().await;
    }

    async fn delete(&self, name: &str) {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => info!(status = name, "ServiceL2Status deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => warn!(status = name, error = %err, "cannot delete ServiceL2Status"),
        }
    }

    /// Makes the status objects match `announced` (Service → interfaces) and records an event
    /// on each Service of `took_over` (IPs this node just became the owner of).
    pub async fn sync(
        &mut self,
        announced: &BTreeMap<ServiceKey, BTreeSet<String>>,
        took_over: &[(IpAddr, Vec<ObjectReference>)],
    ) {
        self.passes += 1;
        if self.passes >= RESYNC_PASSES {
            self.passes = 0;
            self.resync().await;
        }
        let gone: Vec<ServiceKey> = self
            .known
            .keys()
            .filter(|k| !announced.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some((name, _)) = self.known.remove(&key) {
                self.delete(&name).await;
            }
        }
        for (key, interfaces) in announced {
            match self.known.get(key) {
                Some((_, current)) if current == interfaces => {}
                Some((name, _)) => {
                    let name = name.clone();
                    if self.patch_interfaces(&name, interfaces).await {
                        self.known.insert(key.clone(), (name, interfaces.clone()));
                    }
                }
                None => {
                    if let Some(name) = self.create(key, interfaces).await {
                        self.known.insert(key.clone(), (name, interfaces.clone()));
                    }
                }
            }
        }
        for (ip, services) in took_over {
            for reference in services {
                let event = Event {
                    type_: EventType::Normal,
                    reason: EVENT_REASON_ANNOUNCING.to_string(),
                    note: Some(format!("node {} announces {ip} (layer2)", self.node)),
                    action: "Announce".to_string(),
                    secondary: None,
                };
                if let Err(err) = self.recorder.publish(&event, reference).await {
                    warn!(%ip, error = %err, "cannot record event");
                }
            }
        }
    }

    /// Forgets objects that no longer exist (so they are recreated) and deletes this node's
    /// objects that nothing here knows of.
    async fn resync(&mut self) {
        let listed = match self.api.list(&self.node_selector()).await {
            Ok(list) => list,
            Err(err) => {
                warn!(error = %err, "cannot list ServiceL2Statuses");
                return;
            }
        };
        let names: BTreeSet<String> = listed
            .items
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        self.known.retain(|_, (name, _)| names.contains(name));
        let known: BTreeSet<&String> = self.known.values().map(|(n, _)| n).collect();
        let orphans: Vec<String> = names
            .iter()
            .filter(|n| !known.contains(n))
            .cloned()
            .collect();
        for name in orphans {
            self.delete(&name).await;
        }
    }

    async fn create(&self, key: &ServiceKey, interfaces: &BTreeSet<String>) -> Option<String> {
        let labels = BTreeMap::from([
            (LABEL_NODE.to_string(), self.node.clone()),
            (LABEL_SERVICE_NAME.to_string(), key.name.clone()),
            (LABEL_SERVICE_NAMESPACE.to_string(), key.namespace.clone()),
        ]);
        let object = ServiceL2Status {
            metadata: ObjectMeta {
                generate_name: Some(SERVICE_L2_STATUS_GENERATE_NAME.to_string()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: ServiceL2StatusSpec {},
            status: None,
        };
        let created = match self.api.create(&PostParams::default(), &object).await {
            Ok(created) => created,
            Err(err) => {
                warn!(service = %key, error = %err, "cannot create ServiceL2Status");
                return None;
            }
        };
        let name = created.metadata.name?;
        let status = ServiceL2StatusStatus {
            node: Some(self.node.clone()),
            service_name: Some(key.name.clone()),
            service_namespace: Some(key.namespace.clone()),
            interfaces: interfaces
                .iter()
                .map(|n| InterfaceInfo { name: n.clone() })
                .collect(),
        };
        let patch = serde_json::json!({ "status": status });
        if let Err(err) = self
            .api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            warn!(service = %key, status = %name, error = %err, "cannot write ServiceL2Status status");
        }
        info!(service = %key, status = %name, "ServiceL2Status created");
        Some(name)
    }

    async fn patch_interfaces(&self, name: &str, interfaces: &BTreeSet<String>) -> bool {
        let interfaces: Vec<InterfaceInfo> = interfaces
            .iter()
            .map(|n| InterfaceInfo { name: n.clone() })
            .collect();
        let patch = serde_json::json!({ "status": { "interfaces": interfaces } });
        match self
            .api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => true,
            Err(err) => {
                warn!(status = name, error = %err, "cannot update ServiceL2Status");
                false
            }
        }
    }
}
