//! Which speakers are alive, as the reconcile loop sees it: the membership's live set once it
//! runs, or "every node" (MetalLB without memberlist) when membership is off or has no key yet.
//!
//! The key comes from the mounted file or, if there is none, from the Secret
//! [`MEMBERSHIP_SECRET_NAME`] (key [`MEMBERSHIP_SECRET_KEY`]), polled until it exists. A fresh member only knows
//! itself, so its live set is used once it has met another member or after
//! [`SOLO_GRACE`] (a single-node cluster): until then every node counts as live, which is what
//! the other speakers assume too.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::cluster::{MEMBERSHIP_SECRET_KEY, MEMBERSHIP_SECRET_NAME};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::membership::{LiveSet, Membership, MembershipConfig, MembershipStats, Timers};

const SECRET_NAME: &str = MEMBERSHIP_SECRET_NAME;
const SECRET_KEY: &str = MEMBERSHIP_SECRET_KEY;
/// How long a member that met nobody waits before trusting its own (single-member) view.
pub const SOLO_GRACE: Duration = Duration::from_secs(3);
const SECRET_POLL: Duration = Duration::from_secs(2);

/// Where the membership gets its key and address.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    pub node: String,
    pub bind: SocketAddr,
    /// This node's address others reach (HOST_IP); the port is `bind`'s.
    pub host_ip: Option<IpAddr>,
    pub secret_file: PathBuf,
    pub namespace: String,
    pub timers: Timers,
}

/// The liveness source shared by the reconcile loop and the shutdown path.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// `None`: every node counts as live.
    pub live: watch::Receiver<Option<LiveSet>>,
    /// Kept so that `live` never reports a closed channel.
    _live_tx: Arc<watch::Sender<Option<LiveSet>>>,
    /// Bumped each time the others declared this speaker down and it rejoined.
    rejoins: Arc<watch::Sender<u64>>,
    seeds: watch::Sender<Vec<SocketAddr>>,
    handle: Arc<Mutex<Option<Membership>>>,
    port: u16,
}

impl Liveness {
    /// Membership off: every node is live, always.
    pub fn off() -> Liveness {
        let (live_tx, live) = watch::channel(None);
        let (seeds, _) = watch::channel(Vec::new());
        Liveness {
            live,
            _live_tx: Arc::new(live_tx),
            rejoins: Arc::new(watch::channel(0).0),
            seeds,
            handle: Arc::new(Mutex::new(None)),
            port: 0,
        }
    }

    /// Starts the membership on `tracker` (as soon as a key is found), until `cancel`; it
    /// observes its probes' round-trip times into `probe_rtt`.
    pub fn start(
        tracker: &TaskTracker,
        cancel: &CancellationToken,
        client: Client,
        settings: MembershipSettings,
        probe_rtt: Histogram,
    ) -> Liveness {
        let (live_tx, live) = watch::channel(None);
        let live_tx = Arc::new(live_tx);
        let task_live_tx = Arc::clone(&live_tx);
        let rejoins = Arc::new(watch::channel(0u64).0);
        let task_rejoins = Arc::clone(&rejoins);
        let cancel = cancel.clone();
        let (seeds, mut seed_rx) = watch::channel(Vec::new());
        let handle: Arc<Mutex<Option<Membership>>> = Arc::new(Mutex::new(None));
        let port = settings.bind.port();
        let slot = Arc::clone(&handle);
        tracker.spawn(async move {
            let mut told = false;
            let secret = loop {
                let loaded = tokio::select! {
                    _ = cancel.cancelled() => return,
                    loaded = load_secret(&client, &settings) => loaded,
                };
                match loaded {
                    Some(secret) => break secret,
                    None => {
                        if !told {
                            info!(
                                file = %settings.secret_file.display(),
                                "no membership key yet (file nor Secret {SECRET_NAME}): every node counts as live until there is one"
                            );
                            told = true;
                        }
                        tokio::time::sleep(SECRET_POLL).await;
                    }
                }
            };
            let advertise = SocketAddr::new(
                settings.host_ip.unwrap_or(settings.bind.ip()),
                settings.bind.port(),
            );
            let config = MembershipConfig {
                node: settings.node.clone(),
                bind: settings.bind,
                advertise,
                secret,
                timers: settings.timers.clone(),
                probe_rtt: Some(probe_rtt),
            };
            let (membership, mut members) = match Membership::start(config).await {
                Ok(started) => started,
                Err(err) => {
                    warn!(error = %err, "membership cannot start: every node counts as live");
                    return;
                }
            };
            info!(bind = %settings.bind, %advertise, timers = ?settings.timers, "membership started");
            membership.set_seeds(seed_rx.borrow_and_update().clone());
            let mut rejoined = membership.rejoins();
            *slot.lock().await = Some(membership);
            let started = tokio::time::Instant::now();
            let mut trusted = false;
            // Runs until the membership stops: `leave` (on shutdown) takes it out of `slot`
            // and stops it, which closes `members`.
            loop {
                let current: LiveSet = members.borrow_and_update().clone();
                trusted |= current.len() > 1;
                if trusted {
                    let _ = task_live_tx.send(Some(current));
                }
                tokio::select! {
                    changed = members.changed() => if changed.is_err() { break },
                    changed = rejoined.changed() => {
                        if changed.is_err() { break }
                        task_rejoins.send_modify(|n| *n += 1);
                    }
                    changed = seed_rx.changed() => {
                        if changed.is_err() { break }
                        let seeds = seed_rx.borrow_and_update().clone();
                        if let Some(m) = slot.lock().await.as_ref() {
                            m.set_seeds(seeds);
                        }
                    }
                    _ = tokio::time::sleep_until(started + SOLO_GRACE), if !trusted => {
                        trusted = true;
                    }
                }
            }
        });
        Liveness {
            live,
            _live_tx: live_tx,
            rejoins,
            seeds,
            handle,
            port,
        }
    }

    /// The membership's counters, if it runs (and is not being stopped right now). Never
    /// waits: the decision loop calls it.
    pub fn stats(&self) -> Option<MembershipStats> {
        self.handle.try_lock().ok()?.as_ref().map(Membership::stats)
    }

    /// The other speakers' addresses (nodes' InternalIPs); sent to the membership when changed.
    pub fn set_seed_ips(&self, ips: BTreeSet<IpAddr>) {
        let seeds: Vec<SocketAddr> = ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, self.port))
            .collect();
        self.seeds.send_if_modified(|current| {
            if *current == seeds {
                false
            } else {
                *current = seeds;
                true
            }
        });
    }

    /// Bumped each time the others declared this speaker down and it rejoined.
    pub fn rejoins(&self) -> watch::Receiver<u64> {
        self.rejoins.subscribe()
    }

    /// The live node names, or `None` when every node counts as live.
    pub fn current(&self) -> Option<LiveSet> {
        self.live.borrow().clone()
    }

    /// Leaves the membership (the others drop us at once), if it runs.
    pub async fn leave(&self, deadline: Duration) {
        if let Some(membership) = self.handle.lock().await.take() {
            match membership.leave(deadline).await {
                Ok(()) => info!("left the membership"),
                Err(err) => warn!(error = %err, "leaving the membership"),
            }
        }
    }
}

async fn load_secret(client: &Client, settings: &MembershipSettings) -> Option<Vec<u8>> {
    match tokio::fs::read(&settings.secret_file).await {
        Ok(bytes) if !bytes.is_empty() => return Some(bytes),
        _ => {}
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    match secrets.get_opt(SECRET_NAME).await {
        Ok(Some(secret)) => {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(SECRET_KEY))
                .map(|b| b.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(SECRET_KEY))
                        .map(|s| s.as_bytes().to_vec())
                })
                .filter(|b| !b.is_empty());
            if bytes.is_none() {
                warn!("Secret {SECRET_NAME} has no {SECRET_KEY}");
            }
            bytes
        }
        Ok(None) => {
            debug!(
                "no membership key yet ({} nor Secret {SECRET_NAME}): every node counts as live",
                settings.secret_file.display()
            );
            None
        }
        Err(err) => {
            warn!(error = %err, "cannot read Secret {SECRET_NAME}");
            None
        }
    }
}
