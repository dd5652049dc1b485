//! The Kubernetes edge: watches, the Service reconciler, configuration, leadership.
//!
//! [`run`] competes for the Lease; while this replica leads, [`lead`] runs one *leadership
//! session*: fresh watches and a fresh allocator, the restore pass (every address already in a
//! Service's status is re-claimed before any new assignment), then the Service controller. Losing
//! the Lease drops the session (every watch, reconcile and write stops), and every write also
//! checks the current leadership first.

pub mod config;
pub mod pool;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use ferrolb_crds::config::Config;
use ferrolb_crds::events::{Event, EventRecorder, EventType, Reporter};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrolb_crds::runtime::ApiClients;
use tracing::{info, warn};

use crate::allocator::{Allocator, ServiceKey};
use crate::http::{self, Health};
use crate::leader;
use crate::metrics::Metrics;
use crate::options::Options;
use crate::request::service_key;

/// Service reconciles in flight at most. Unbounded, a burst of 1 000 Services put 1 000
/// requests in flight at once, and the API server's priority-and-fairness queues made each wait
/// seconds; a bounded number keeps its queues short (docs/benchmarks.md, "Pending burst").
const RECONCILE_CONCURRENCY: u16 = 32;

/// Events waiting to be published at most, and how many are sent at once.
const EVENT_QUEUE: usize = 4096;
const EVENTS_IN_FLIGHT: usize = 8;

/// Sends the queued Events, a few at a time, for as long as the leadership session lasts.
async fn publish_events(
    recorder: EventRecorder,
    mut queue: tokio::sync::mpsc::Receiver<(Event, ObjectReference)>,
) {
    let queued = futures::stream::poll_fn(move |cx| queue.poll_recv(cx));
    queued
        .for_each_concurrent(EVENTS_IN_FLIGHT, |(event, reference)| {
            let recorder = recorder.clone();
            async move {
                if let Err(error) = recorder.publish(&event, &reference).await {
                    warn!(%error, reason = %event.reason, object = ?reference.name, "publishing an Event failed");
                }
            }
        })
        .await;
    // Every sender is gone: the session is ending.
    futures::future::pending().await
}

/// The name in Events' `reportingController`.
pub const CONTROLLER_NAME: &str = "ferrolb.io/controller";

/// Why a reconcile failed (and will be retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("not the leader: write skipped")]
    NotLeader,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::NotLeader => "not_leader",
        }
    }
}

/// Locks a mutex; a poisoned lock still holds consistent data (the allocator never panics
/// half-way through a change), so keep going.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by everything in one leadership session.
pub struct Context {
    pub client: Client,
    pub options: Options,
    pub allocator: Mutex<Allocator>,
    /// The configuration in force (the last valid one); `None` until one was valid.
    pub config: RwLock<Option<Arc<Config>>>,
    pub config_ready: watch::Sender<bool>,
    pub services: Store<Service>,
    pub stores: config::ConfigStores,
    /// Events to publish, in the order they were made (see [`publish_events`]).
    events: tokio::sync::mpsc::Sender<(Event, ObjectReference)>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    leader: watch::Receiver<bool>,
    /// True once every existing assignment has been restored.
    pub restored: watch::Sender<bool>,
    /// Services waiting for an address: retried when addresses are freed.
    pub pending: Mutex<BTreeSet<ServiceKey>>,
    /// The last failure per Service, as (metric reason, `AllocationFailed` message): Events only
    /// on change, and the `ferrolb_services_pending{reason}` counts.
    pub last_failure: Mutex<BTreeMap<ServiceKey, (&'static str, String)>>,
    /// Deprecated annotation names already warned about, per Service.
    pub warned: Mutex<BTreeSet<(ServiceKey, &'static str)>>,
    /// The last `InvalidConfiguration` message per object (Events only on change).
    pub config_events: Mutex<BTreeMap<(String, String), String>>,
    /// The resourceVersion of our last write to each Service: a reconcile of an older version
    /// (the watch has not delivered the write yet) would only write the same again.
    pub written: Mutex<BTreeMap<ServiceKey, u64>>,
    /// Assignments changed since the pool status and metrics were last written.
    pub pools_dirty: AtomicBool,
    retrigger: futures::channel::mpsc::UnboundedSender<()>,
}

impl Context {
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    pub fn ensure_leader(&self) -> Result<(), Error> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    pub fn config(&self) -> Option<Arc<Config>> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reconciles every Service again (configuration change, freed addresses).
    pub fn reconcile_all(&self) {
        let _ = self.retrigger.unbounded_send(());
    }

    /// Notes the version a write of ours produced (see [`Context::written`]).
    pub fn remember_write(&self, key: &ServiceKey, written: &Service) {
        if let Some(revision) = crate::status::revision(written) {
            lock(&self.written).insert(key.clone(), revision);
        }
    }

    /// Addresses were freed: Services waiting for one may now fit.
    pub fn retry_pending(&self) {
        if !lock(&self.pending).is_empty() {
            self.reconcile_all();
        }
    }

    pub fn mark_pools_dirty(&self) {
        self.pools_dirty.store(true, Ordering::Release);
    }

    /// Publishes an Event (only while leading; failures are logged, not retried). It is queued
    /// and sent by [`publish_events`].
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if !self.is_leader() {
            return;
        }
        let mut note = note;
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        // Queued, not awaited: a reconcile's slot is for the writes that assign addresses.
        // The queue only makes a reconcile wait when EVENT_QUEUE Events are already waiting.
        let _ = self.events.send((event, reference.clone())).await;
    }

    /// A Service is gone (deleted, or missed while the watch was down): free its addresses.
    fn forget(&self, key: &ServiceKey) {
        let released = lock(&self.allocator).release(key);
        lock(&self.pending).remove(key);
        lock(&self.last_failure).remove(key);
        lock(&self.warned).retain(|(service, _)| service != key);
        lock(&self.written).remove(key);
        // Also when nothing was released: a Pending Service leaves the pending counts.
        self.mark_pools_dirty();
        if !released.is_empty() {
            info!(service = %key, ips = ?released, "service deleted: addresses released");
            self.retry_pending();
        }
    }

    /// Deletes never reach `reconcile` (style.md §3): release on the watcher's delete event,
    /// and after every re-list release Services that vanished meanwhile.
    fn on_service_event(&self, event: &watcher::Event<Service>) {
        match event {
            watcher::Event::Delete(service) => {
                if let Ok(key) = service_key(service) {
                    self.forget(&key);
                }
            }
            watcher::Event::InitDone => {
                let gone: Vec<ServiceKey> = lock(&self.allocator)
                    .services()
                    .filter(|key| {
                        self.services
                            .get(&ObjectRef::new(&key.name).within(&key.namespace))
                            .is_none()
                    })
                    .cloned()
                    .collect();
                for key in gone {
                    self.forget(&key);
                }
            }
            _ => {}
        }
    }
}

fn error_policy(
    _service: Arc<Service>,
    error: &Error,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            kind: error.metric_label().to_string(),
        })
        .inc();
    match error {
        Error::NotLeader => kube::runtime::controller::Action::await_change(),
        Error::Kube(_) => kube::runtime::controller::Action::requeue(Duration::from_secs(5)),
    }
}

/// Runs the controller until `shutdown`: HTTP endpoints, leader election, and a leadership
/// session whenever this replica holds the Lease.
///
/// Watches use `clients.watch`; every write (Lease, Service status, Events, the membership
/// Secret) uses `clients.write`, whose read timeout turns a hung API server into an error.
pub async fn run(
    clients: ApiClients,
    options: Options,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
    });
    // Every task of the process runs on this tracker and stops on `shutdown`.
    let tasks = TaskTracker::new();
    tasks.spawn(http::serve(
        options.metrics_addr,
        health.clone(),
        shutdown.clone(),
    ));
    if let Some(addr) = options
        .webhook_addr()
        .context("--webhook-addr is not an address")?
    {
        let resolver = Arc::new(crate::webhook::cert::CertResolver::default());
        let settings = crate::webhook::cert::CertSettings {
            namespace: options.namespace.clone(),
            secret: options.webhook_secret.clone(),
            webhook_configuration: options.webhook_configuration.clone(),
            hosts: options.webhook_hosts(),
            validity: k8s_openapi::jiff::SignedDuration::from_hours(
                options.webhook_cert_validity_hours.max(1),
            ),
        };
        let state = Arc::new(crate::webhook::WebhookState {
            client: clients.write.clone(),
            namespace: options.namespace.clone(),
            config_map: options.config_map.clone(),
        });
        let cert_task = tokio::spawn(crate::webhook::cert::maintain(
            clients.write.clone(),
            settings,
            resolver.clone(),
        ));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = crate::webhook::serve(addr, state, resolver, stop.clone()).await {
                warn!(%error, "the admission webhook stopped");
            }
            cert_task.abort();
        });
    }
    let leadership = leader::elect(clients.write.clone(), &options)
        .await
        .context("starting leader election")?;
    let mut is_leader = leadership.is_leader;
    info!(identity = %options.identity(), lease = %options.lease_name, "waiting for leadership");
    let outcome = loop {
        // A standby has nothing to restore: it is ready.
        health.ready.store(true, Ordering::Release);
        metrics.leader.set(0);
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            changed = is_leader.wait_for(|leading| *leading) => {
                if changed.is_err() {
                    break Err(anyhow::anyhow!("leader election stopped"));
                }
            }
        }
        info!("became leader");
        metrics.leader.set(1);
        health.ready.store(false, Ordering::Release);
        let mut watch_loss = is_leader.clone();
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = watch_loss.wait_for(|leading| !*leading) => {
                warn!("lost leadership: stopped all writes");
            }
            result = lead(clients.clone(), options.clone(), health.clone(), is_leader.clone()) => {
                if let Err(error) = result {
                    break Err(error);
                }
            }
        }
    };
    // Dropping the last receiver makes the lease task release the Lease.
    drop(is_leader);
    let _ = tokio::time::timeout(Duration::from_secs(5), leadership.task).await;
    shutdown.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    outcome
}

/// One leadership session; returns only on error.
async fn lead(
    clients: ApiClients,
    options: Options,
    health: Arc<Health>,
    leader: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ApiClients {
        watch: client,
        write,
    } = clients;
    config::check_crds(&client, &options.namespace).await?;
    // Speakers fall back to "every Ready node is live" without this Secret; a failure here is
    // worth a warning, not giving up leadership.
    if let Err(error) = crate::membership_secret::ensure(&write, &options.namespace).await {
        warn!(%error, "could not ensure the speakers' membership Secret");
    }
    let (services, service_writer) = reflector::store::<Service>();
    let (stores, config_changes) = config::watch(&client, &options);
    let (retrigger, retrigger_rx) = futures::channel::mpsc::unbounded();
    let (events, queued_events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let recorder = EventRecorder::new(
        write.clone(),
        Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance: Some(options.identity()),
        },
    );
    let ctx = Arc::new(Context {
        client: write,
        allocator: Mutex::new(Allocator::new()),
        config: RwLock::new(None),
        config_ready: watch::Sender::new(false),
        services: services.clone(),
        stores,
        events,
        metrics: health.metrics.clone(),
        health,
        leader,
        restored: watch::Sender::new(false),
        pending: Mutex::default(),
        last_failure: Mutex::default(),
        warned: Mutex::default(),
        config_events: Mutex::default(),
        written: Mutex::default(),
        pools_dirty: AtomicBool::new(false),
        retrigger,
        options,
    });

    let service_api: Api<Service> = Api::all(client);
    let on_event = ctx.clone();
    let service_stream = reflector::reflector(
        service_writer,
        watcher(service_api, watcher::Config::default())
            .default_backoff()
            .modify(ferrolb_crds::runtime::slim),
    )
    .inspect_ok(move |event| on_event.on_service_event(event))
    .applied_objects();
    let controller = Controller::for_stream(service_stream, services)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
        )
        .reconcile_all_on(retrigger_rx)
        .run(service::reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile failed");
            }
            futures::future::ready(())
        });

    tokio::select! {
        () = controller => anyhow::bail!("the Service controller stopped"),
        result = config::maintain(ctx.clone(), config_changes) => result,
        () = service::restore(ctx.clone()) => anyhow::bail!("restore ended"),
        () = pool::maintain_status(ctx.clone()) => anyhow::bail!("pool status writer ended"),
        () = publish_events(recorder, queued_events) => anyhow::bail!("the Event publisher ended"),
    }
}

/// An Event reference for a configuration object given by kind and name.
pub(crate) fn config_object_reference(kind: &str, name: &str, namespace: &str) -> ObjectReference {
    let api_version = if kind == "ConfigMap" {
        "v1".to_string()
    } else {
        ferrolb_crds::v1beta1::API_VERSION.to_string()
    };
    ObjectReference {
        api_version: Some(api_version),
        kind: Some(kind.to_string()),
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        ..ObjectReference::default()
    }
}

pub(crate) fn object_reference<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    object.object_ref(&())
}
