//! What the speaker tells the cluster, off the failover path:
//!
//! - one `ServiceL2Status` per Service this node announces over layer2 (its interfaces kept
//!   current), and one `ServiceBGPStatus` per Service it advertises over BGP (the peers kept
//!   current); both created on announce and deleted on withdraw and on shutdown;
//! - one `BGPSessionState` per BGP session of this node (state, uptime, prefixes, last error);
//! - Events: on the Service when this node takes one of its IPs over, on the BGPPeer when a
//!   session comes up or goes down.
//!
//! The decision loop never waits for the API server. It hands the latest desired status to the
//! status task through a `watch` channel ([`StatusHandle::publish_services`],
//! [`StatusHandle::publish_session`]): the newest state replaces any older one not yet written,
//! so the "queue" is one entry deep however long the API server is away. Events go through a
//! bounded channel and are dropped (and counted) when it is full. Every API call has a deadline
//! ([`API_CALL_TIMEOUT`]), and the client has connect and read timeouts
//! ([`ferrolb_crds::runtime`]): an API server that refuses connections, hangs, or answers slowly
//! only delays the status.
//!
//! Status objects carry an ownerReference to the speaker's Pod (`POD_NAME`/`POD_UID`), so the
//! garbage collector removes a dead speaker's objects with its Pod. The three kinds share one
//! implementation ([`Objects`]), parameterised by a [`Kind`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use ferrolb_crds::events::{Event, EventRecorder, EventType, Reporter};
use ferrolb_crds::v1beta1::{
    API_VERSION, BGP_SESSION_STATE_GENERATE_NAME, BGPPeer, BGPSessionState, BGPSessionStateSpec,
    InterfaceInfo, LABEL_NODE, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE,
    SERVICE_BGP_STATUS_GENERATE_NAME, SERVICE_L2_STATUS_GENERATE_NAME, ServiceBGPStatus,
    ServiceBGPStatusSpec, ServiceL2Status, ServiceL2StatusSpec,
};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics::Metrics;
use crate::view::ServiceKey;

/// Event reason on a Service when a node starts announcing one of its IPs.
pub const EVENT_REASON_ANNOUNCING: &str = "AnnouncingNode";
/// Warning Event reason on a Service when the node elected for one of its IPs has none of the
/// L2Advertisement's interfaces (MetalLB's reason).
pub const EVENT_REASON_ANNOUNCE_FAILED: &str = "announceFailed";
/// Event reason on a BGPPeer when one node's session with it becomes Established.
pub const EVENT_REASON_SESSION_UP: &str = "SessionEstablished";
/// Event reason on a BGPPeer when one node's session with it goes down.
pub const EVENT_REASON_SESSION_DOWN: &str = "SessionDown";
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

/// What the status objects should say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredStatus {
    /// Layer2: Service → this host's interfaces it is announced on.
    pub layer2: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// BGP: Service → the BGPPeers it is advertised to.
    pub bgp: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// BGP sessions: BGPPeer name → the state of this node's session with it.
    pub sessions: BTreeMap<String, SessionReport>,
    /// Which session task (its generation) each entry of `sessions` comes from; not written.
    pub session_generations: BTreeMap<String, u64>,
}

/// What a `BGPSessionState` says about one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionReport {
    /// `ip:port` of the peer.
    pub address: String,
    /// The FSM state's name.
    pub state: String,
    /// RFC 3339, seconds precision; `None` while not Established.
    pub established_time: Option<String>,
    pub prefixes_sent: u64,
    pub last_error: Option<String>,
    pub flaps: u64,
    /// The bound BFD session's state, if the peer has a `bfdProfile`.
    pub bfd_state: Option<String>,
}

/// What an Event is about.
#[derive(Debug, Clone)]
pub enum Regarding {
    /// These Services (references from the watch cache).
    Services(Vec<ObjectReference>),
    /// The BGPPeer of this name, in the speaker's namespace (looked up when the Event is
    /// written, for its uid).
    Peer(String),
}

/// An Event to record.
#[derive(Debug, Clone)]
pub struct StatusEvent {
    pub regarding: Regarding,
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl StatusEvent {
    /// `node` started announcing `ip` for `services`.
    pub fn takeover(
        node: &str,
        ip: IpAddr,
        mode: &'static str,
        services: Vec<ObjectReference>,
    ) -> Self {
        StatusEvent {
            regarding: Regarding::Services(services),
            warning: false,
            reason: EVENT_REASON_ANNOUNCING,
            action: "Announce",
            note: format!("node {node} announces {ip} ({mode})"),
        }
    }

    /// `node` was elected for `ip` but has none of the advertisements' interfaces.
    pub fn announce_failed(node: &str, ip: IpAddr, services: Vec<ObjectReference>) -> Self {
        StatusEvent {
            regarding: Regarding::Services(services),
            warning: true,
            reason: EVENT_REASON_ANNOUNCE_FAILED,
            action: "Announce",
            note: format!(
                "node {node} is elected for {ip} but has none of the L2Advertisement's interfaces: {ip} is not announced"
            ),
        }
    }
}

/// The decision loop's side of the status task: never blocks.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    desired: watch::Sender<DesiredStatus>,
    events: mpsc::Sender<StatusEvent>,
    metrics: Metrics,
}

impl StatusHandle {
    /// Replaces the per-Service part of the desired status (a newer one supersedes any not yet
    /// written).
    pub fn publish_services(
        &self,
        layer2: BTreeMap<ServiceKey, BTreeSet<String>>,
        bgp: BTreeMap<ServiceKey, BTreeSet<String>>,
    ) {
        self.desired.send_if_modified(|current| {
            if current.layer2 == layer2 && current.bgp == bgp {
                false
            } else {
                current.layer2 = layer2;
                current.bgp = bgp;
                true
            }
        });
    }

    /// Sets (`Some`) or removes (`None`) the state of this node's session with `peer`, as
    /// reported by the session task of `generation`. A report from an older generation than
    /// the entry's is ignored, and a removal applies only to the entry of the same generation
    /// (a session restarted under the same name keeps its state). Returns whether it applied.
    pub fn publish_session(
        &self,
        peer: &str,
        generation: u64,
        report: Option<SessionReport>,
    ) -> bool {
        let mut applied = false;
        self.desired.send_if_modified(|current| {
            let entry_generation = current.session_generations.get(peer).copied();
            match report {
                Some(report) => {
                    if entry_generation.is_some_and(|g| g > generation) {
                        return false;
                    }
                    applied = true;
                    current
                        .session_generations
                        .insert(peer.to_string(), generation);
                    if current.sessions.get(peer) == Some(&report) {
                        false
                    } else {
                        current.sessions.insert(peer.to_string(), report);
                        true
                    }
                }
                None => {
                    if entry_generation != Some(generation) {
                        return false;
                    }
                    applied = true;
                    current.session_generations.remove(peer);
                    current.sessions.remove(peer).is_some()
                }
            }
        });
        applied
    }

    /// Queues an Event; dropped (and counted) if the queue is full.
    pub fn event(&self, event: StatusEvent) {
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
/// over layer2 before (from the adopted objects), once the adoption finished or timed out.
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
    mut events: mpsc::Receiver<StatusEvent>,
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
        warn!("stopping: could not remove every status object in time (their Pod's deletion will)");
    }
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

/// One kind of per-node status object: how it is named, keyed and written.
pub trait Kind {
    type Object: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned;
    /// What one object is about (a Service, a peer).
    type Key: Ord + Clone + Display;
    /// What it says about it.
    type Detail: PartialEq + Clone + Default;
    /// For the logs.
    const KIND: &'static str;
    const GENERATE_NAME: &'static str;

    /// Labels besides the node label (what `kubectl get -l` selects on).
    fn labels(key: &Self::Key) -> BTreeMap<String, String>;
    /// The key of an existing object, `None` for a stray one (deleted on adoption).
    fn key(object: &Self::Object) -> Option<Self::Key>;
    /// What an existing object says.
    fn detail(object: &Self::Object) -> Self::Detail;
    /// A new object with `metadata` and an empty spec.
    fn object(metadata: ObjectMeta) -> Self::Object;
    /// The whole status, as a merge patch (absent values as `null`, so they are removed).
    fn status(node: &str, key: &Self::Key, detail: &Self::Detail) -> Value;
}

/// `ServiceL2Status`: Service → interfaces.
pub struct Layer2Kind;
/// `ServiceBGPStatus`: Service → peers.
pub struct BgpKind;
/// `BGPSessionState`: peer name → session report.
pub struct SessionKind;

fn service_labels(key: &ServiceKey) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_SERVICE_NAME.to_string(), key.name.clone()),
        (LABEL_SERVICE_NAMESPACE.to_string(), key.namespace.clone()),
    ])
}

fn service_key(metadata: &ObjectMeta) -> Option<ServiceKey> {
    let labels = metadata.labels.as_ref()?;
    Some(ServiceKey::new(
        labels.get(LABEL_SERVICE_NAMESPACE)?,
        labels.get(LABEL_SERVICE_NAME)?,
    ))
}

impl Kind for Layer2Kind {
    type Object = ServiceL2Status;
    type Key = ServiceKey;
    type Detail = BTreeSet<String>;
    const KIND: &'static str = "ServiceL2Status";
    const GENERATE_NAME: &'static str = SERVICE_L2_STATUS_GENERATE_NAME;

    fn labels(key: &ServiceKey) -> BTreeMap<String, String> {
        service_labels(key)
    }
    fn key(object: &ServiceL2Status) -> Option<ServiceKey> {
        service_key(&object.metadata)
    }
    fn detail(object: &ServiceL2Status) -> BTreeSet<String> {
        object
            .status
            .as_ref()
            .map(|s| s.interfaces.iter().map(|i| i.name.clone()).collect())
            .unwrap_or_default()
    }
    fn object(metadata: ObjectMeta) -> ServiceL2Status {
        ServiceL2Status {
            metadata,
            spec: ServiceL2StatusSpec {},
            status: None,
        }
    }
    fn status(node: &str, key: &ServiceKey, interfaces: &BTreeSet<String>) -> Value {
        let interfaces: Vec<InterfaceInfo> = interfaces
            .iter()
            .map(|n| InterfaceInfo { name: n.clone() })
            .collect();
        json!({
            "node": node,
            "serviceName": key.name,
            "serviceNamespace": key.namespace,
            "interfaces": interfaces,
        })
    }
}

impl Kind for BgpKind {
    type Object = ServiceBGPStatus;
    type Key = ServiceKey;
    type Detail = BTreeSet<String>;
    const KIND: &'static str = "ServiceBGPStatus";
    const GENERATE_NAME: &'static str = SERVICE_BGP_STATUS_GENERATE_NAME;

    fn labels(key: &ServiceKey) -> BTreeMap<String, String> {
        service_labels(key)
    }
    fn key(object: &ServiceBGPStatus) -> Option<ServiceKey> {
        service_key(&object.metadata)
    }
    fn detail(object: &ServiceBGPStatus) -> BTreeSet<String> {
        object
            .status
            .as_ref()
            .map(|s| s.peers.iter().cloned().collect())
            .unwrap_or_default()
    }
    fn object(metadata: ObjectMeta) -> ServiceBGPStatus {
        ServiceBGPStatus {
            metadata,
            spec: ServiceBGPStatusSpec {},
            status: None,
        }
    }
    fn status(node: &str, key: &ServiceKey, peers: &BTreeSet<String>) -> Value {
        json!({
            "node": node,
            "serviceName": key.name,
            "serviceNamespace": key.namespace,
            "peers": peers,
        })
    }
}

impl Kind for SessionKind {
    type Object = BGPSessionState;
    type Key = String;
    type Detail = SessionReport;
    const KIND: &'static str = "BGPSessionState";
    const GENERATE_NAME: &'static str = BGP_SESSION_STATE_GENERATE_NAME;

    /// None: a BGPPeer's name may be longer than a label value may be; the peer is in the
    /// status (and a column).
    fn labels(_: &String) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    fn key(object: &BGPSessionState) -> Option<String> {
        object.status.as_ref()?.peer.clone()
    }
    fn detail(object: &BGPSessionState) -> SessionReport {
        let Some(status) = object.status.as_ref() else {
            return SessionReport::default();
        };
        SessionReport {
            address: status.peer_address.clone().unwrap_or_default(),
            state: status.bgp_state.clone().unwrap_or_default(),
            established_time: status.established_time.clone(),
            prefixes_sent: status.prefixes_sent,
            last_error: status.last_error.clone(),
            flaps: status.flaps,
            bfd_state: status.bfd_state.clone(),
        }
    }
    fn object(metadata: ObjectMeta) -> BGPSessionState {
        BGPSessionState {
            metadata,
            spec: BGPSessionStateSpec {},
            status: None,
        }
    }
    fn status(node: &str, peer: &String, report: &SessionReport) -> Value {
        json!({
            "node": node,
            "peer": peer,
            "peerAddress": report.address,
            "bgpState": report.state,
            "establishedTime": report.established_time,
            "prefixesSent": report.prefixes_sent,
            "lastError": report.last_error,
            "flaps": report.flaps,
            "bfdState": report.bfd_state,
        })
    }
}

/// This node's objects of one kind. Every call is bounded by [`API_CALL_TIMEOUT`].
pub struct Objects<K: Kind> {
    api: Api<K::Object>,
    node: String,
    owner: Option<PodOwner>,
    /// Objects this node created (or found): key → (object name, what it says).
    known: BTreeMap<K::Key, (String, K::Detail)>,
}

impl<K: Kind> Objects<K> {
    fn new(client: Client, namespace: &str, node: &str, owner: Option<PodOwner>) -> Self {
        Objects {
            api: Api::namespaced(client, namespace),
            node: node.to_string(),
            owner,
            known: BTreeMap::new(),
        }
    }

    fn node_selector(&self) -> ListParams {
        ListParams::default().labels(&format!("{LABEL_NODE}={}", self.node))
    }

    /// Takes over what an earlier run of this node left behind (a crash or an upgrade skips the
    /// cleanup): one object per key is kept, given this Pod as owner, and updated by the next
    /// [`Self::sync`] (or deleted if no longer wanted); duplicates and strays are deleted.
    /// Returns the keys found.
    async fn adopt(&mut self) -> BTreeSet<K::Key> {
        self.known.clear();
        let list = match bounded(self.api.list(&self.node_selector())).await {
            Ok(list) => list,
            Err(err) => {
                warn!(kind = K::KIND, error = %err, "cannot list status objects");
                return BTreeSet::new();
            }
        };
        for object in list {
            let Some(name) = object.meta().name.clone() else {
                continue;
            };
            let Some(key) = K::key(&object).filter(|k| !self.known.contains_key(k)) else {
                self.delete(&name).await;
                continue;
            };
            if let Some(owner) = &self.owner {
                let wanted = vec![owner.reference()];
                if object.meta().owner_references.as_ref() != Some(&wanted) {
                    let patch = json!({"metadata": {"ownerReferences": wanted}});
                    if let Err(err) = bounded(self.api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    ))
                    .await
                    {
                        warn!(kind = K::KIND, status = %name, error = %err, "cannot adopt status object");
                    }
                }
            }
            self.known.insert(key, (name, K::detail(&object)));
        }
        self.known.keys().cloned().collect()
    }

    /// Removes every object of this node, known or not (graceful stop).
    async fn remove_all(&mut self) {
        let names: Vec<String> = self.known.values().map(|(n, _)| n.clone()).collect();
        for name in names {
            self.delete(&name).await;
        }
        self.known.clear();
        // Anything created by a request whose answer was lost.
        match bounded(self.api.list(&self.node_selector())).await {
            Ok(list) => {
                for object in list {
                    if let Some(name) = object.meta().name.clone() {
                        self.delete(&name).await;
                    }
                }
            }
            Err(err) => warn!(kind = K::KIND, error = %err, "cannot list status objects"),
        }
    }

    async fn delete(&self, name: &str) -> bool {
        match bounded(self.api.delete(name, &DeleteParams::default())).await {
            Ok(_) => {
                info!(kind = K::KIND, status = name, "status object deleted");
                true
            }
            Err(err) if is_not_found(&err) => true,
            Err(err) => {
                warn!(kind = K::KIND, status = name, error = %err, "cannot delete status object");
                false
            }
        }
    }

    /// Makes the objects match `desired`. Returns whether every write succeeded.
    async fn sync(&mut self, desired: &BTreeMap<K::Key, K::Detail>) -> bool {
        let mut ok = true;
        let gone: Vec<K::Key> = self
            .known
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some((name, detail)) = self.known.remove(&key)
                && !self.delete(&name).await
            {
                self.known.insert(key, (name, detail));
                ok = false;
            }
        }
        for (key, detail) in desired {
            match self.known.get(key) {
                Some((_, current)) if current == detail => {}
                Some((name, _)) => {
                    let name = name.clone();
                    if self.write_status(&name, key, detail).await {
                        self.known.insert(key.clone(), (name, detail.clone()));
                    } else {
                        ok = false;
                    }
                }
                None => match self.create(key, detail).await {
                    Some((name, written)) => {
                        ok &= &written == detail;
                        self.known.insert(key.clone(), (name, written));
                    }
                    None => ok = false,
                },
            }
        }
        ok
    }

    /// Forgets objects that no longer exist (so they are recreated) and deletes this node's
    /// objects that nothing here knows of.
    async fn resync(&mut self) {
        let listed = match bounded(self.api.list(&self.node_selector())).await {
            Ok(list) => list,
            Err(err) => {
                warn!(kind = K::KIND, error = %err, "cannot list status objects");
                return;
            }
        };
        let names: BTreeSet<String> = listed.items.iter().map(|o| o.name_any()).collect();
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

    /// Creates the object and writes its status; returns its name and what was written (the
    /// default if the status write failed: the next sync writes it).
    async fn create(&self, key: &K::Key, detail: &K::Detail) -> Option<(String, K::Detail)> {
        let mut labels = K::labels(key);
        labels.insert(LABEL_NODE.to_string(), self.node.clone());
        let object = K::object(ObjectMeta {
            generate_name: Some(K::GENERATE_NAME.to_string()),
            labels: Some(labels),
            owner_references: self.owner.as_ref().map(|o| vec![o.reference()]),
            ..ObjectMeta::default()
        });
        let created = match bounded(self.api.create(&PostParams::default(), &object)).await {
            Ok(created) => created,
            Err(err) => {
                warn!(kind = K::KIND, key = %key, error = %err, "cannot create status object");
                return None;
            }
        };
        let name = created.meta().name.clone()?;
        if !self.write_status(&name, key, detail).await {
            return Some((name, K::Detail::default()));
        }
        info!(kind = K::KIND, key = %key, status = %name, "status object created");
        Some((name, detail.clone()))
    }

    async fn write_status(&self, name: &str, key: &K::Key, detail: &K::Detail) -> bool {
        let patch = json!({ "status": K::status(&self.node, key, detail) });
        match bounded(
            self.api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(_) => true,
            Err(err) => {
                warn!(kind = K::KIND, key = %key, status = name, error = %err, "cannot write status");
                false
            }
        }
    }
}

/// The API side: this node's status objects and Events.
pub struct StatusWriter {
    node: String,
    recorder: EventRecorder,
    peers: Api<BGPPeer>,
    namespace: String,
    layer2: Objects<Layer2Kind>,
    bgp: Objects<BgpKind>,
    sessions: Objects<SessionKind>,
}

impl StatusWriter {
    pub fn new(
        client: Client,
        namespace: &str,
        node: &str,
        owner: Option<PodOwner>,
    ) -> StatusWriter {
        let recorder = EventRecorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_string(),
                instance: Some(node.to_string()),
            },
        );
        StatusWriter {
            node: node.to_string(),
            recorder,
            peers: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_string(),
            layer2: Objects::new(client.clone(), namespace, node, owner.clone()),
            bgp: Objects::new(client.clone(), namespace, node, owner.clone()),
            sessions: Objects::new(client, namespace, node, owner),
        }
    }

    /// Adopts every kind's objects (see [`Objects::adopt`]); returns the Services this node
    /// announced over layer2 before, so that announcing them again after a restart is not
    /// reported as an owner change.
    pub async fn adopt(&mut self) -> BTreeSet<ServiceKey> {
        self.bgp.adopt().await;
        self.sessions.adopt().await;
        self.layer2.adopt().await
    }

    /// Removes every status object of this node (graceful stop).
    pub async fn remove_all(&mut self) {
        self.layer2.remove_all().await;
        self.bgp.remove_all().await;
        self.sessions.remove_all().await;
    }

    /// Makes the status objects match `desired`. Returns whether every write succeeded.
    pub async fn sync(&mut self, desired: &DesiredStatus) -> bool {
        let layer2 = self.layer2.sync(&desired.layer2).await;
        let bgp = self.bgp.sync(&desired.bgp).await;
        let sessions = self.sessions.sync(&desired.sessions).await;
        layer2 && bgp && sessions
    }

    async fn resync(&mut self) {
        self.layer2.resync().await;
        self.bgp.resync().await;
        self.sessions.resync().await;
    }

    /// Records `event` on each object it is about.
    async fn record(&self, event: &StatusEvent) {
        let references = match &event.regarding {
            Regarding::Services(references) => references.clone(),
            Regarding::Peer(name) => vec![self.peer_reference(name).await],
        };
        for reference in &references {
            let published = bounded(async {
                self.recorder
                    .publish(
                        &Event {
                            type_: if event.warning {
                                EventType::Warning
                            } else {
                                EventType::Normal
                            },
                            reason: event.reason.to_string(),
                            note: Some(event.note.clone()),
                            action: event.action.to_string(),
                            secondary: None,
                        },
                        reference,
                    )
                    .await
            })
            .await;
            if let Err(err) = published {
                warn!(reason = event.reason, error = %err, "cannot record event");
            }
        }
    }

    /// The BGPPeer's reference with its uid (so `kubectl describe bgppeer` lists the Event);
    /// without the uid if it cannot be read.
    async fn peer_reference(&self, name: &str) -> ObjectReference {
        match bounded(self.peers.get(name)).await {
            Ok(peer) => peer.object_ref(&()),
            Err(err) => {
                debug!(peer = name, error = %err, "cannot read the BGPPeer for an Event");
                ObjectReference {
                    api_version: Some(API_VERSION.to_string()),
                    kind: Some("BGPPeer".to_string()),
                    name: Some(name.to_string()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectReference::default()
                }
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
            handle.publish_services(state.layer2, state.bgp);
        }
        let latest = rx.borrow_and_update().clone();
        assert_eq!(
            latest.layer2.keys().next().map(|k| k.name.as_str()),
            Some("svc99")
        );
        // Publishing the same state again wakes nobody.
        handle.publish_services(latest.layer2, latest.bgp);
        assert!(!rx.has_changed().unwrap());
        for _ in 0..5 {
            handle.event(StatusEvent::takeover(
                "node1",
                "192.0.2.1".parse().unwrap(),
                "layer2",
                Vec::new(),
            ));
        }
        assert_eq!(metrics.status_events_dropped.get(), 3);
    }

    #[test]
    fn a_restarted_session_keeps_its_state_when_the_old_one_ends() {
        let (desired, rx) = watch::channel(DesiredStatus::default());
        let (events, _events_rx) = mpsc::channel(2);
        let handle = StatusHandle {
            desired,
            events,
            metrics: Metrics::default(),
        };
        let report = |state: &str| SessionReport {
            state: state.into(),
            ..SessionReport::default()
        };
        assert!(handle.publish_session("r1", 1, Some(report("Established"))));
        assert!(handle.publish_session("r1", 2, Some(report("Connect"))));
        // The first session's task ends after the second started: late reports and the
        // removal of generation 1 leave generation 2's state alone.
        assert!(!handle.publish_session("r1", 1, Some(report("Idle"))));
        assert!(!handle.publish_session("r1", 1, None));
        assert_eq!(rx.borrow().sessions["r1"].state, "Connect");
        assert!(handle.publish_session("r1", 2, None));
        assert!(rx.borrow().sessions.is_empty());
    }

    #[test]
    fn a_session_state_patch_removes_what_is_no_longer_true() {
        let report = SessionReport {
            address: "192.0.2.1:179".into(),
            state: "Active".into(),
            ..SessionReport::default()
        };
        let status = SessionKind::status("node1", &"r1".to_string(), &report);
        // Merge patch: null removes the field (an earlier establishedTime, a cleared error).
        assert_eq!(status["establishedTime"], Value::Null);
        assert_eq!(status["lastError"], Value::Null);
        assert_eq!(status["bgpState"], "Active");
        assert_eq!(status["peer"], "r1");
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
