//! What the speaker tells the cluster, off the failover path: one `ServiceL2Status` per Service
//! this node announces (created on announce, interfaces kept current, deleted on withdraw and on
//! shutdown) and an Event on the Service when this node takes one of its IPs over.
//!
//! The decision loop never waits for the API server. It hands the latest desired status to the
//! status task through a `watch` channel ([`StatusHandle::publish`]): the newest state replaces
//! any older one not yet written, so the "queue" is one entry deep however long the API server
//! is away. Events go through a bounded channel and are dropped (and counted) when it is full.
//! Every API call has a deadline ([`API_CALL_TIMEOUT`]), and the client has connect and read
//! timeouts ([`ferrolb_crds::cluster::write_client`]): an API server that refuses connections,
//! hangs, or answers slowly only delays the status.
//!
//! Status objects carry an ownerReference to the speaker's Pod (`POD_NAME`/`POD_UID`), so the
//! garbage collector removes a dead speaker's objects with its Pod.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use ferrolb_crds::v1beta1::{
    InterfaceInfo, LABEL_NODE, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE,
    SERVICE_L2_STATUS_GENERATE_NAME, ServiceL2Status, ServiceL2StatusSpec, ServiceL2StatusStatus,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics::Metrics;
use crate::view::ServiceKey;

/// Event reason on a Service when a node starts announcing one of its IPs.
pub const EVENT_REASON_ANNOUNCING: &str = "AnnouncingNode";
/// The field manager / event reporter name.
pub const MANAGER: &str = "ferrolb-speaker";
/// The longest one API call may take before it counts as failed.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often this node's objects are compared with the API (recreate deleted ones, remove
/// orphans).
pub const RESYNC_PERIOD: Duration = Duration::from_secs(60);
/// After a failed write, the next attempt waits this long at first, doubling up to
/// [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Events waiting to be written; more are dropped (and counted) while the API server is away.
pub const EVENT_QUEUE: usize = 256;

/// What the status objects should say: layer2 Service → this host's interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredStatus {
    pub layer2: BTreeMap<ServiceKey, BTreeSet<String>>,
}

/// This node started announcing `ip` for the Services of `services`.
#[derive(Debug, Clone)]
pub struct TakeoverEvent {
    pub ip: IpAddr,
    pub mode: &'static str,
    pub services: Vec<ObjectReference>,
}

/// The decision loop's side of the status task: never blocks.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    desired: watch::Sender<DesiredStatus>,
    events: mpsc::Sender<TakeoverEvent>,
    metrics: Metrics,
}

impl StatusHandle {
    /// Replaces the desired status (a newer one supersedes any not yet written).
    pub fn publish(&self, desired: DesiredStatus) {
        self.desired.send_if_modified(|current| {
            if *current == desired {
                false
            } else {
                *current = desired;
                true
            }
        });
    }

    /// Queues an Event; dropped (and counted) if the queue is full.
    pub fn event(&self, event: TakeoverEvent) {
        if let Err(err) = self.events.try_send(event) {
            self.metrics.status_events_dropped.inc();
            debug!(error = %err, "event queue full: event dropped");
        }
    }
}

/// Who owns this node's status objects: the speaker's Pod, from the downward API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOwner {
    pub name: String,
    pub uid: String,
}

impl PodOwner {
    fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(false),
            block_owner_deletion: None,
        }
    }
}

/// Starts the status task on `tracker`. It adopts what an earlier run of this node left, then
/// writes every desired status it is handed, until `cancel`; then it removes this node's
/// objects (bounded by `stop_deadline`). Returns the handle and the Services this node announced
/// before (from the adopted objects), once the adoption finished or timed out.
pub fn spawn(
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
    writer: StatusWriter,
    metrics: Metrics,
    stop_deadline: Duration,
) -> (
    StatusHandle,
    tokio::sync::oneshot::Receiver<BTreeSet<ServiceKey>>,
) {
    let (desired_tx, desired_rx) = watch::channel(DesiredStatus::default());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (adopted_tx, adopted_rx) = tokio::sync::oneshot::channel();
    let span = info_span!("status", node = %writer.node);
    tracker.spawn(
        run(
            writer,
            desired_rx,
            events_rx,
            adopted_tx,
            cancel,
            metrics.clone(),
            stop_deadline,
        )
        .instrument(span),
    );
    (
        StatusHandle {
            desired: desired_tx,
            events: events_tx,
            metrics,
        },
        adopted_rx,
    )
}

async fn run(
    mut writer: StatusWriter,
    mut desired: watch::Receiver<DesiredStatus>,
    mut events: mpsc::Receiver<TakeoverEvent>,
    adopted: tokio::sync::oneshot::Sender<BTreeSet<ServiceKey>>,
    cancel: CancellationToken,
    metrics: Metrics,
    stop_deadline: Duration,
) {
    let before = tokio::select! {
        _ = cancel.cancelled() => BTreeSet::new(),
        before = writer.adopt() => before,
    };
    let _ = adopted.send(before);
    let mut resync = tokio::time::interval(RESYNC_PERIOD);
    resync.tick().await;
    let mut retry = RETRY_MIN;
    let mut dirty = true;
    loop {
        let wait_retry = tokio::time::sleep(retry);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            changed = desired.changed() => {
                if changed.is_err() {
                    break;
                }
                dirty = true;
            }
            Some(event) = events.recv() => {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = writer.record(&event) => {}
                }
                continue;
            }
            _ = resync.tick() => {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = writer.resync() => {}
                }
                dirty = true;
            }
            _ = wait_retry, if dirty => {}
        }
        if !dirty {
            continue;
        }
        let target = desired.borrow_and_update().clone();
        let ok = tokio::select! {
            _ = cancel.cancelled() => break,
            ok = writer.sync(&target) => ok,
        };
        if ok {
            dirty = false;
            retry = RETRY_MIN;
        } else {
            metrics.status_write_failures.inc();
            retry = (retry * 2).min(RETRY_MAX);
        }
    }
    if tokio::time::timeout(stop_deadline, writer.remove_all())
        .await
        .is_err()
    {
        warn!(
            "stopping: could not remove every ServiceL2Status in time (their Pod's deletion will)"
        );
    }
}

/// The API side: this node's status objects and events. Every call is bounded by
/// [`API_CALL_TIMEOUT`].
pub struct StatusWriter {
    api: Api<ServiceL2Status>,
    node: String,
    owner: Option<PodOwner>,
    recorder: Recorder,
    /// Status objects this writer created (or found): Service → (object name, interfaces).
    known: BTreeMap<ServiceKey, (String, BTreeSet<String>)>,
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

async fn bounded<T>(call: impl Future<Output = kube::Result<T>>) -> Result<T, CallError> {
    match tokio::time::timeout(API_CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(CallError::Timeout(API_CALL_TIMEOUT)),
    }
}

fn is_not_found(err: &CallError) -> bool {
    matches!(err, CallError::Api(kube::Error::Api(status)) if status.code == 404)
}

impl StatusWriter {
    pub fn new(
        client: Client,
        namespace: &str,
        node: &str,
        owner: Option<PodOwner>,
    ) -> StatusWriter {
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
            owner,
            recorder,
            known: BTreeMap::new(),
        }
    }

    fn node_selector(&self) -> ListParams {
        ListParams::default().labels(&format!("{LABEL_NODE}={}", self.node))
    }

    /// Takes over what an earlier run of this node left behind (a crash or an upgrade skips the
    /// cleanup): one object per Service is kept, given this Pod as owner, and updated by the
    /// next [`Self::sync`] (or deleted if the Service is no longer announced); duplicates are
    /// deleted. Returns the Services this node announced before, so that announcing them again
    /// after a restart is not reported as an owner change.
    pub async fn adopt(&mut self) -> BTreeSet<ServiceKey> {
        self.known.clear();
        let list = match bounded(self.api.list(&self.node_selector())).await {
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
                (Some(namespace), Some(service)) => ServiceKey::new(namespace, service),
                _ => {
                    self.delete(&name).await;
                    continue;
                }
            };
            if self.known.contains_key(&key) {
                self.delete(&name).await;
                continue;
            }
            if let Some(owner) = &self.owner {
                let wanted = vec![owner.reference()];
                if object.metadata.owner_references.as_ref() != Some(&wanted) {
                    let patch = serde_json::json!({"metadata": {"ownerReferences": wanted}});
                    if let Err(err) = bounded(self.api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    ))
                    .await
                    {
                        warn!(status = %name, error = %err, "cannot adopt ServiceL2Status");
                    }
                }
            }
            let interfaces = object
                .status
                .map(|s| s.interfaces.into_iter().map(|i| i.name).collect())
                .unwrap_or_default();
            self.known.insert(key, (name, interfaces));
        }
        self.known.keys().cloned().collect()
    }

    /// Removes every status object of this node, known or not (graceful stop).
    pub async fn remove_all(&mut self) {
        let names: Vec<String> = self.known.values().map(|(n, _)| n.clone()).collect();
        for name in names {
            self.delete(&name).await;
        }
        self.known.clear();
        // Anything created by a request whose answer was lost.
        match bounded(self.api.list(&self.node_selector())).await {
            Ok(list) => {
                for object in list {
                    if let Some(name) = object.metadata.name {
                        self.delete(&name).await;
                    }
                }
            }
            Err(err) => warn!(error = %err, "cannot list ServiceL2Statuses"),
        }
    }

    async fn delete(&self, name: &str) -> bool {
        match bounded(self.api.delete(name, &DeleteParams::default())).await {
            Ok(_) => {
                info!(status = name, "ServiceL2Status deleted");
                true
            }
            Err(err) if is_not_found(&err) => true,
            Err(err) => {
                warn!(status = name, error = %err, "cannot delete ServiceL2Status");
                false
            }
        }
    }

    /// Makes the status objects match `desired`. Returns whether every write succeeded.
    pub async fn sync(&mut self, desired: &DesiredStatus) -> bool {
        let mut ok = true;
        let gone: Vec<ServiceKey> = self
            .known
            .keys()
            .filter(|k| !desired.layer2.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some((name, interfaces)) = self.known.remove(&key)
                && !self.delete(&name).await
            {
                self.known.insert(key, (name, interfaces));
                ok = false;
            }
        }
        for (key, interfaces) in &desired.layer2 {
            match self.known.get(key) {
                Some((_, current)) if current == interfaces => {}
                Some((name, _)) => {
                    let name = name.clone();
                    if self.patch_interfaces(&name, interfaces).await {
                        self.known.insert(key.clone(), (name, interfaces.clone()));
                    } else {
                        ok = false;
                    }
                }
                None => match self.create(key, interfaces).await {
                    Some((name, written)) => {
                        ok &= &written == interfaces;
                        self.known.insert(key.clone(), (name, written));
                    }
                    None => ok = false,
                },
            }
        }
        ok
    }

    /// Records an AnnouncingNode Event on each Service of `event`.
    async fn record(&self, event: &TakeoverEvent) {
        for reference in &event.services {
            let note = format!("node {} announces {} ({})", self.node, event.ip, event.mode);
            let published = bounded(async {
                self.recorder
                    .publish(
                        &Event {
                            type_: EventType::Normal,
                            reason: EVENT_REASON_ANNOUNCING.to_string(),
                            note: Some(note.clone()),
                            action: "Announce".to_string(),
                            secondary: None,
                        },
                        reference,
                    )
                    .await
            })
            .await;
            if let Err(err) = published {
                warn!(ip = %event.ip, error = %err, "cannot record event");
            }
        }
    }

    /// Forgets objects that no longer exist (so they are recreated) and deletes this node's
    /// objects that nothing here knows of.
    async fn resync(&mut self) {
        let listed = match bounded(self.api.list(&self.node_selector())).await {
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

    /// Creates the object and writes its status; returns its name and the interfaces written
    /// (none if the status write failed: the next sync writes them).
    async fn create(
        &self,
        key: &ServiceKey,
        interfaces: &BTreeSet<String>,
    ) -> Option<(String, BTreeSet<String>)> {
        let labels = BTreeMap::from([
            (LABEL_NODE.to_string(), self.node.clone()),
            (LABEL_SERVICE_NAME.to_string(), key.name.clone()),
            (LABEL_SERVICE_NAMESPACE.to_string(), key.namespace.clone()),
        ]);
        let object = ServiceL2Status {
            metadata: ObjectMeta {
                generate_name: Some(SERVICE_L2_STATUS_GENERATE_NAME.to_string()),
                labels: Some(labels),
                owner_references: self.owner.as_ref().map(|o| vec![o.reference()]),
                ..ObjectMeta::default()
            },
            spec: ServiceL2StatusSpec {},
            status: None,
        };
        let created = match bounded(self.api.create(&PostParams::default(), &object)).await {
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
        if let Err(err) = bounded(self.api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ))
        .await
        {
            warn!(service = %key, status = %name, error = %err, "cannot write ServiceL2Status status");
            return Some((name, BTreeSet::new()));
        }
        info!(service = %key, status = %name, "ServiceL2Status created");
        Some((name, interfaces.clone()))
    }

    async fn patch_interfaces(&self, name: &str, interfaces: &BTreeSet<String>) -> bool {
        let interfaces: Vec<InterfaceInfo> = interfaces
            .iter()
            .map(|n| InterfaceInfo { name: n.clone() })
            .collect();
        let patch = serde_json::json!({ "status": { "interfaces": interfaces } });
        match bounded(
            self.api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publish_keeps_only_the_newest_state_and_events_never_block() {
        let (desired, mut rx) = watch::channel(DesiredStatus::default());
        let (events, _events_rx) = mpsc::channel(2);
        let metrics = Metrics::default();
        let handle = StatusHandle {
            desired,
            events,
            metrics: metrics.clone(),
        };
        for n in 0..100 {
            let mut state = DesiredStatus::default();
            state.layer2.insert(
                ServiceKey::new("default", format!("svc{n}")),
                BTreeSet::from(["eth0".to_string()]),
            );
            handle.publish(state);
        }
        let latest = rx.borrow_and_update().clone();
        assert_eq!(
            latest.layer2.keys().next().map(|k| k.name.as_str()),
            Some("svc99")
        );
        // Publishing the same state again wakes nobody.
        handle.publish(latest);
        assert!(!rx.has_changed().unwrap());
        for _ in 0..5 {
            handle.event(TakeoverEvent {
                ip: "192.0.2.1".parse().unwrap(),
                mode: "layer2",
                services: Vec::new(),
            });
        }
        assert_eq!(metrics.status_events_dropped.get(), 3);
    }

    #[test]
    fn the_owner_reference_names_the_pod() {
        let owner = PodOwner {
            name: "ferrolb-speaker-x".into(),
            uid: "0f0e".into(),
        };
        let reference = owner.reference();
        assert_eq!(
            (reference.kind.as_str(), reference.api_version.as_str()),
            ("Pod", "v1")
        );
        assert_eq!(reference.uid, "0f0e");
        assert_eq!(reference.controller, Some(false));
    }
}
