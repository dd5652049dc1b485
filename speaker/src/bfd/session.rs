//! The BFD driver: one tokio task per session runs its [`fsm::Session`](super::fsm::Session)
//! (timers, its send socket), and one receive task per port and family, shared by every
//! session, hands each datagram to the session of its source address after the checks that do
//! not need the session: the TTL (RFC 5881 §5: 255 on a single hop) and
//! [`ControlPacket::parse`]. What is dropped is counted by reason
//! (`bfd_packets_dropped_total{reason}`).
//!
//! A session is identified by its peer address and hop mode: FerroLB has one session per peer,
//! so the source address finds it whether or not the peer knows our discriminator yet (the
//! state machine then checks Your Discriminator itself, RFC 5880 §6.8.6).
//!
//! What a session tells its users is a [`Status`] on a watch channel: the state, the last
//! diagnostic, and the count of failures (Up → Down, [`StateChange::is_failure`]), which the BGP
//! session bound to it turns into a teardown (`bgp::session::run_with_bfd`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::fsm::{self, Action, Event, SessionConfig, StateChange, Timer};
use super::packet::{ControlPacket, Diagnostic, State};
use super::transport::{self, Listener, MULTI_HOP_PORT, SINGLE_HOP_PORT};
use crate::metrics::Metrics;

/// Packets queued for one session before the receive task drops more (a peer sends a few per
/// detection time; only a flood fills this).
const QUEUE: usize = 64;

/// One BFD session to set up: with whom, how, and for which BGPPeer (names the logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// The BGPPeer this session serves.
    pub name: String,
    pub peer: IpAddr,
    /// Send from this address (the BGP session's `sourceAddress`); `None`: the kernel's choice.
    pub local: Option<IpAddr>,
    /// RFC 5883 multihop (port 4784, TTL ≥ `minimum_ttl`) rather than RFC 5881 single hop.
    pub multihop: bool,
    /// Multihop only: packets that arrive with a lower TTL are dropped.
    pub minimum_ttl: u8,
    pub config: SessionConfig,
}

/// What a session shows: its state, why it last changed, and how often it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    pub diagnostic: Diagnostic,
    /// Up → Down transitions that were failures (not AdminDown), since the task started. A
    /// count and not only the state: a watch keeps the last value, and a Down followed
    /// quickly by an Up must still take the BGP session down.
    pub failures: u64,
    /// Not Up, and nothing heard from the peer for [`SILENCE`]: the peer runs no BFD session
    /// for us (FRR, for one, deletes a dynamic neighbour's BFD session with its BGP session),
    /// so BFD cannot say when the path is back and must not hold BGP down.
    pub peer_silent: bool,
}

/// How long a peer that is not Up may send nothing before it counts as silent (three of the
/// slow, not-Up packets it would send if it had a session for us).
pub const SILENCE: std::time::Duration = std::time::Duration::from_secs(3);

impl Default for Status {
    fn default() -> Self {
        Self {
            state: State::Down,
            diagnostic: Diagnostic::NoDiagnostic,
            failures: 0,
            peer_silent: false,
        }
    }
}

impl Status {
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Whether BFD lets a BGP session it took down come back: Up, or a silent peer.
    pub fn releases_bgp(&self) -> bool {
        self.is_up() || self.peer_silent
    }
}

/// Why a session was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a BFD session with {0} already runs on this node")]
    Duplicate(IpAddr),
    #[error("cannot listen on UDP port {port}: {source}")]
    Listen { port: u16, source: std::io::Error },
}

/// The BFD sessions of one speaker and the receive tasks they share. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tracker: TaskTracker,
    cancel: CancellationToken,
    metrics: Option<Metrics>,
    /// (peer, multihop) → the session's queue and its minimum TTL.
    routes: Mutex<HashMap<(IpAddr, bool), Route>>,
    /// (IPv6, multihop) of the receive tasks started.
    listening: Mutex<BTreeSet<(bool, bool)>>,
}

#[derive(Debug)]
struct Route {
    packets: mpsc::Sender<ControlPacket>,
    minimum_ttl: u8,
}

impl Sessions {
    /// Tasks run on `tracker` and stop with `cancel`.
    pub fn new(tracker: TaskTracker, cancel: CancellationToken, metrics: Option<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                tracker,
                cancel,
                metrics,
                routes: Mutex::new(HashMap::new()),
                listening: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// Starts a session; it stops with `cancel`: with AdminDown first, or silently if
    /// `silent_stop` is set by then (the speaker restarting with BGP graceful restart: FRR
    /// takes a remote AdminDown for a failure, and one that overtook the BGP session's close
    /// made it flush the routes; silence is noticed only after the detection time, when the
    /// router already keeps the routes as stale).
    pub fn start(
        &self,
        settings: PeerSettings,
        cancel: CancellationToken,
        silent_stop: Arc<AtomicBool>,
    ) -> Result<watch::Receiver<Status>, StartError> {
        self.listen(settings.peer.is_ipv6(), settings.multihop)?;
        let key = (settings.peer, settings.multihop);
        let (packets_tx, packets_rx) = mpsc::channel(QUEUE);
        {
            let mut routes = self
                .inner
                .routes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if routes.contains_key(&key) {
                return Err(StartError::Duplicate(settings.peer));
            }
            routes.insert(
                key,
                Route {
                    packets: packets_tx,
                    minimum_ttl: settings.minimum_ttl,
                },
            );
        }
        let (status_tx, status_rx) = watch::channel(Status::default());
        let span = info_span!("bfd_peer", peer = %settings.peer, bgp_peer = %settings.name);
        let mut task = Task::new(
            settings,
            packets_rx,
            status_tx,
            cancel,
            self.inner.metrics.clone(),
        );
        task.silent_stop = silent_stop;
        let registry = self.clone();
        self.inner.tracker.spawn(
            async move {
                task.run().await;
                registry.forget(key);
            }
            .instrument(span),
        );
        Ok(status_rx)
    }

    fn forget(&self, key: (IpAddr, bool)) {
        self.inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }

    /// Starts the receive task of this family and hop mode, once.
    fn listen(&self, ipv6: bool, multihop: bool) -> Result<(), StartError> {
        let mut listening = self
            .inner
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if listening.contains(&(ipv6, multihop)) {
            return Ok(());
        }
        let port = if multihop {
            MULTI_HOP_PORT
        } else {
            SINGLE_HOP_PORT
        };
        let any = if ipv6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        };
        let listener =
            Listener::bind(any, port).map_err(|source| StartError::Listen { port, source })?;
        listening.insert((ipv6, multihop));
        let registry = self.clone();
        let span = info_span!("bfd_receive", port, ipv6);
        self.inner
            .tracker
            .spawn(registry.receive(listener, multihop).instrument(span));
        Ok(())
    }

    /// The receive task: every datagram to its session, or counted as dropped.
    async fn receive(self, listener: Listener, multihop: bool) {
        loop {
            let datagram = tokio::select! {
                () = self.inner.cancel.cancelled() => return,
                datagram = listener.recv() => datagram,
            };
            let datagram = match datagram {
                Ok(datagram) => datagram,
                Err(error) => {
                    warn!(%error, "receiving a BFD datagram failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Err(reason) = self.deliver(&datagram, multihop) {
                debug!(from = %datagram.from, ttl = ?datagram.ttl, reason, "BFD packet dropped");
                if let Some(metrics) = &self.inner.metrics {
                    metrics
                        .bfd_packets_dropped
                        .get_or_create(&Metrics::reason(reason))
                        .inc();
                }
            }
        }
    }

    /// Hands one datagram to its session; the reason it was dropped otherwise.
    fn deliver(&self, datagram: &transport::Datagram, multihop: bool) -> Result<(), &'static str> {
        // RFC 5881 §5: a single-hop packet must come from the link (GTSM). Checked before
        // parsing, as the cheapest and least trusting test.
        if !multihop && datagram.ttl != Some(transport::TTL) {
            return Err("ttl");
        }
        let packet = ControlPacket::parse(&datagram.bytes).map_err(|error| error.label())?;
        let routes = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let route = routes
            .get(&(datagram.from, multihop))
            .ok_or("unknown_peer")?;
        // RFC 5883 §5: multihop packets with less than the configured TTL are dropped.
        if multihop && datagram.ttl.is_none_or(|ttl| ttl < route.minimum_ttl) {
            return Err("ttl");
        }
        route.packets.try_send(packet).map_err(|_| "queue_full")
    }
}

/// One session's task.
struct Task {
    settings: PeerSettings,
    fsm: fsm::Session,
    packets: mpsc::Receiver<ControlPacket>,
    status: watch::Sender<Status>,
    cancel: CancellationToken,
    metrics: Option<Metrics>,
    timers: BTreeMap<Timer, Instant>,
    seed: u64,
    /// When the peer was last heard (the task's start before that).
    last_heard: Instant,
    /// Stop without AdminDown (see [`Sessions::start`]).
    silent_stop: Arc<AtomicBool>,
}

impl Task {
    fn new(
        settings: PeerSettings,
        packets: mpsc::Receiver<ControlPacket>,
        status: watch::Sender<Status>,
        cancel: CancellationToken,
        metrics: Option<Metrics>,
    ) -> Self {
        // Not secret (the jitter, the source port, the discriminator): std's per-process
        // random hasher keys are random enough.
        let seed = RandomState::new().hash_one((settings.peer, std::process::id()));
        // RFC 5880 §6.8.1: a unique, non-zero local discriminator; random, so that a
        // restarted speaker is not mistaken for its predecessor.
        let discriminator =
            NonZeroU32::new(u32::try_from(seed >> 32).unwrap_or(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            fsm: fsm::Session::new(settings.config, discriminator, seed),
            settings,
            packets,
            status,
            cancel,
            metrics,
            timers: BTreeMap::new(),
            seed,
            last_heard: Instant::now(),
            silent_stop: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn run(mut self) {
        let port = if self.settings.multihop {
            MULTI_HOP_PORT
        } else {
            SINGLE_HOP_PORT
        };
        let peer = SocketAddr::new(self.settings.peer, port);
        let seed = u16::try_from(self.seed & 0x3fff).unwrap_or(0);
        // The local address may not be up yet (the node is starting): retry until it is.
        let socket = loop {
            match transport::sender(peer, self.settings.local, seed).await {
                Ok(socket) => break socket,
                Err(error) => {
                    warn!(%error, "cannot open the BFD send socket; retrying in 1 s");
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        info!(
            local = ?socket.local_addr().ok(), multihop = self.settings.multihop,
            tx = ?self.settings.config.desired_min_tx, rx = ?self.settings.config.required_min_rx,
            multiplier = self.settings.config.detect_multiplier, "BFD session task started"
        );
        self.feed(Event::AdminUp, &socket).await;
        self.last_heard = Instant::now();
        let mut silence_check = tokio::time::interval(SILENCE / 3);
        loop {
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    if self.silent_stop.load(Ordering::SeqCst) {
                        info!("BFD session task stopped silently (graceful restart)");
                        return;
                    }
                    // Tell the peer this is administrative (RFC 5882 §3.2: not a path failure),
                    // then stop without waiting out a detection time.
                    self.feed(Event::AdminDown, &socket).await;
                    info!("BFD session task stopped");
                    return;
                }
                timer = sleep_until(next) => {
                    self.timers.remove(&timer);
                    self.feed(Event::TimerExpired(timer), &socket).await;
                }
                _ = silence_check.tick() => self.check_silence(),
                packet = self.packets.recv() => match packet {
                    Some(packet) => {
                        self.last_heard = Instant::now();
                        self.status.send_if_modified(|status| {
                            std::mem::replace(&mut status.peer_silent, false)
                        });
                        self.count(|m, labels| {
                            m.bfd_control_packets_received.get_or_create(labels).inc();
                        });
                        self.feed(Event::PacketReceived(packet), &socket).await;
                    }
                    None => return,
                },
            }
        }
    }

    async fn feed(&mut self, event: Event, socket: &tokio::net::UdpSocket) {
        let actions = self.fsm.handle(event, Instant::now().into_std());
        for action in actions {
            match action {
                Action::SendPacket(packet) => {
                    // A send can fail while the link is down; the detection timer says what
                    // that means for the session.
                    match socket.send(&packet.to_bytes()).await {
                        Ok(_) => self.count(|m, labels| {
                            m.bfd_control_packets_sent.get_or_create(labels).inc();
                        }),
                        Err(error) => debug!(%error, "sending a BFD packet failed"),
                    }
                }
                Action::StartTimer(timer, after) => {
                    self.timers.insert(timer, Instant::now() + after);
                }
                Action::StopTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Action::StateChanged(change) => self.state_changed(change),
                Action::PacketDiscarded(reason) => {
                    debug!(
                        reason = reason.label(),
                        "BFD packet discarded by the session"
                    );
                    if let Some(metrics) = &self.metrics {
                        metrics
                            .bfd_packets_dropped
                            .get_or_create(&Metrics::reason(reason.label()))
                            .inc();
                    }
                }
            }
        }
    }

    /// Marks the peer silent when it is not Up and said nothing for [`SILENCE`].
    fn check_silence(&mut self) {
        let silent = self.fsm.state() != State::Up && self.last_heard.elapsed() >= SILENCE;
        self.status.send_if_modified(|status| {
            if status.peer_silent == silent {
                return false;
            }
            status.peer_silent = silent;
            if silent {
                info!("BFD peer silent: it runs no session for us; BGP is not held by BFD");
            }
            true
        });
    }

    fn state_changed(&mut self, change: StateChange) {
        if change.is_failure() {
            warn!(%change, "BFD session failed");
        } else {
            info!(%change, "BFD session state changed");
        }
        self.count(|m, labels| {
            m.bfd_session_state_changes.get_or_create(labels).inc();
        });
        let up = change.to == State::Up;
        if let Some(metrics) = &self.metrics {
            metrics
                .bfd_session_up
                .get_or_create(&Metrics::peer(&self.settings.name))
                .set(i64::from(up));
        }
        self.status.send_modify(|status| {
            status.state = change.to;
            status.diagnostic = change.diagnostic;
            if change.is_failure() {
                status.failures += 1;
            }
        });
    }

    fn count(&self, update: impl Fn(&Metrics, &crate::metrics::PeerLabels)) {
        if let Some(metrics) = &self.metrics {
            update(metrics, &Metrics::peer(&self.settings.name));
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            let labels = Metrics::peer(&self.settings.name);
            metrics.bfd_session_up.remove(&labels);
        }
    }
}

async fn sleep_until(next: Option<(Timer, Instant)>) -> Timer {
    match next {
        Some((timer, at)) => {
            tokio::time::sleep_until(at).await;
            timer
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn settings(name: &str, peer: IpAddr) -> PeerSettings {
        PeerSettings {
            name: name.to_string(),
            peer,
            local: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            multihop: false,
            minimum_ttl: 254,
            config: SessionConfig {
                desired_min_tx: Duration::from_millis(50),
                required_min_rx: Duration::from_millis(50),
                detect_multiplier: 3,
                passive: false,
            },
        }
    }

    async fn wait_state(status: &mut watch::Receiver<Status>, state: State) -> Status {
        *tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.state == state),
        )
        .await
        .expect("state in time")
        .expect("task alive")
    }

    /// Two sessions of two `Sessions` (two speakers) on loopback, each the other's peer: they
    /// come Up; one is stopped (AdminDown: not a failure for the other); the other detects the
    /// silence of a dropped queue as a failure. Runs on port 3784 of 127.0.0.1 and 127.0.0.2,
    /// so it needs those free (a test namespace, or a machine without bfdd).
    #[tokio::test]
    async fn two_sessions_come_up_and_detect_failure() {
        let a_address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let b_address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        // Both sides share one receive socket on 0.0.0.0:3784 here (one machine), so they are
        // one `Sessions`: the session with peer 127.0.0.2 is A's, the one with 127.0.0.1 B's.
        let sessions = Sessions::new(TaskTracker::new(), CancellationToken::new(), None);
        let a_cancel = CancellationToken::new();
        let mut a_settings = settings("to-b", b_address);
        a_settings.local = Some(a_address);
        let mut b_settings = settings("to-a", a_address);
        b_settings.local = Some(b_address);
        let Ok(mut a) = sessions.start(a_settings, a_cancel.clone(), Arc::default()) else {
            eprintln!("SKIPPED: UDP port 3784 is in use");
            return;
        };
        let b_cancel = CancellationToken::new();
        let mut b = sessions
            .start(b_settings, b_cancel.clone(), Arc::default())
            .unwrap();
        wait_state(&mut a, State::Up).await;
        wait_state(&mut b, State::Up).await;
        assert!(matches!(
            sessions.start(
                settings("again", b_address),
                CancellationToken::new(),
                Arc::default()
            ),
            Err(StartError::Duplicate(_))
        ));

        // A stops: B sees AdminDown, which is not a failure.
        a_cancel.cancel();
        let b_down = wait_state(&mut b, State::Down).await;
        assert_eq!(b_down.failures, 0, "{b_down:?}");
        assert_eq!(b_down.diagnostic, Diagnostic::NeighborSignaledSessionDown);
        b_cancel.cancel();
    }
}
