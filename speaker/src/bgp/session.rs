//! The per-peer session task (holo style): one tokio task per peer owns the TCP connection,
//! the receive buffer and the four timers, and drives the pure [`fsm::Session`]. Inputs:
//! bytes from the connection, the end of a connection attempt, an expired timer, a new
//! [`RouteSet`] on the watch, the cancellation token. Each input becomes one or more
//! [`fsm::Event`]s; the [`fsm::Action`]s they produce are run here, in order, and the state is
//! republished as a [`SessionStatus`] after each input.
//!
//! What goes out: the whole table (UPDATEs packed with as many prefixes as fit, one run per
//! next hop and attributes) then End-of-RIB for every negotiated family when the session comes
//! up and on a ROUTE-REFRESH; afterwards only what changed (announce new or changed routes,
//! withdraw gone ones) when the watch changes. What the peer was sent is kept per session
//! (`sent`), so the diff is always against what the peer has.
//!
//! Active only: the task dials the peer and never accepts connections (a passive peer needs
//! the speaker-wide listener, which is not built yet; with `passive` set the task waits in
//! Active for nothing). Collision detection therefore never arises here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::BgpMessage;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::codec::{
    self, DecodeContext, EncodeError, Family, Ipv6NextHop, Message, RouteAttributes, UpdateContext,
};
use super::fsm::{self, Action, Direction, Event, Negotiated, SessionConfig, State, Timer};
use crate::bfd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How long writing one batch of messages may take before the connection counts as failed
/// (the peer stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing connection may take to flush our last message (a NOTIFICATION).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// RFC 2385 keys are at most 80 bytes (the kernel's `TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// A TCP-MD5 (RFC 2385) key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Key(Vec<u8>);

impl Md5Key {
    /// A key of 1 to 80 bytes.
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, SessionError> {
        let key = key.into();
        if key.is_empty() || key.len() > MD5_MAX_KEY_LEN {
            return Err(SessionError::Md5KeyLength(key.len()));
        }
        Ok(Self(key))
    }
}

impl fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Md5Key(<{} bytes, redacted>)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("TCP-MD5 key of {0} bytes (1 to 80 allowed)")]
    Md5KeyLength(usize),
}

/// One peer: the protocol configuration and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub session: SessionConfig,
    /// The peer's address and port (179 unless configured).
    pub address: SocketAddr,
    /// Bind to this local address before connecting (MetalLB `sourceAddress`).
    pub source: Option<IpAddr>,
    /// IP TTL / hop limit of the connection (255 for `ebgpMultiHop`); `None`: the kernel's.
    pub ttl: Option<u32>,
    pub md5_key: Option<Md5Key>,
}

/// One route we announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// IPv4 prefixes: an IPv4 next hop, or an IPv6 one when the peer negotiated extended next
    /// hop (RFC 8950). IPv6 prefixes: an IPv6 next hop.
    pub next_hop: IpAddr,
    /// Communities, large communities, local preference (iBGP only).
    pub attributes: RouteAttributes,
}

/// What a session should announce: prefix → route. Prefixes are kept truncated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSet {
    routes: BTreeMap<IpNet, Route>,
}

impl RouteSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the route for `prefix`.
    pub fn insert(&mut self, prefix: IpNet, route: Route) {
        self.routes.insert(prefix.trunc(), route);
    }

    pub fn with(mut self, prefix: IpNet, route: Route) -> Self {
        self.insert(prefix, route);
        self
    }

    pub fn routes(&self) -> &BTreeMap<IpNet, Route> {
        &self.routes
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// What the task publishes after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub peer: SocketAddr,
    pub state: State,
    /// When the session became Established (the uptime's start).
    pub established_at: Option<std::time::Instant>,
    /// What was negotiated with the peer, while the session is up (or opening).
    pub negotiated: Option<Negotiated>,
    /// Prefixes the peer currently has from us.
    pub prefixes_sent: usize,
    /// Why the last session, or attempt at one, failed ("hold timer expired").
    pub last_error: Option<String>,
    /// Sessions that reached Established, since the task started.
    pub sessions_established: u64,
    /// Messages written to the peer, by type, since the task started.
    pub sent: MessageCounts,
    /// Messages received from the peer (framed, before decoding), by type.
    pub received: MessageCounts,
    /// The bound BFD session, if any: what it said last.
    pub bfd: Option<bfd::Status>,
}

/// BGP messages by type (RFC 4271 §4.1 type codes; ROUTE-REFRESH is RFC 2918's 5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCounts {
    pub open: u64,
    pub update: u64,
    pub notification: u64,
    pub keepalive: u64,
    pub route_refresh: u64,
    /// A type code that is none of those (received only: it is a header error).
    pub other: u64,
}

impl MessageCounts {
    /// Counts one message of header type `code`.
    pub fn count(&mut self, code: u8) {
        match code {
            1 => self.open += 1,
            2 => self.update += 1,
            3 => self.notification += 1,
            4 => self.keepalive += 1,
            5 => self.route_refresh += 1,
            _ => self.other += 1,
        }
    }

    /// Counts every message in `bytes`, a run of whole encoded messages.
    fn count_all(&mut self, mut bytes: &[u8]) {
        while bytes.len() >= codec::HEADER_LEN {
            let len = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
            self.count(bytes[18]);
            if len < codec::HEADER_LEN || len > bytes.len() {
                return;
            }
            bytes = &bytes[len..];
        }
    }

    /// `(type label, count)` for every type, for the metrics.
    pub fn by_type(&self) -> [(&'static str, u64); 6] {
        [
            ("open", self.open),
            ("update", self.update),
            ("notification", self.notification),
            ("keepalive", self.keepalive),
            ("route_refresh", self.route_refresh),
            ("other", self.other),
        ]
    }
}

impl SessionStatus {
    /// Before the task ran: Idle, nothing sent.
    pub fn new(peer: SocketAddr) -> Self {
        Self {
            peer,
            state: State::Idle,
            established_at: None,
            negotiated: None,
            prefixes_sent: 0,
            last_error: None,
            sessions_established: 0,
            sent: MessageCounts::default(),
            received: MessageCounts::default(),
            bfd: None,
        }
    }
}

/// Starts the task for one peer. It runs until `cancel` (then it sends a Cease, Administrative
/// Shutdown, and closes); the handle ends with it.
pub fn spawn(
    config: PeerConfig,
    routes: watch::Receiver<RouteSet>,
    cancel: CancellationToken,
) -> (watch::Receiver<SessionStatus>, JoinHandle<()>) {
    let (status, status_rx) = watch::channel(SessionStatus::new(config.address));
    let handle = tokio::spawn(run(config, routes, status, cancel));
    (status_rx, handle)
}

/// The task's body, for callers that run it themselves (a current-thread runtime in a
/// namespace, tests).
pub async fn run(
    config: PeerConfig,
    routes: watch::Receiver<RouteSet>,
    status: watch::Sender<SessionStatus>,
    cancel: CancellationToken,
) {
    let stop = Stop {
        cancel,
        graceful: Arc::new(AtomicBool::new(false)),
    };
    run_with_bfd(config, routes, None, status, stop).await;
}

/// How a session task is stopped: `cancel`, and whether that is the speaker stopping to
/// restart (`graceful` set first: with graceful restart negotiated the connection closes
/// without a NOTIFICATION, [`fsm::Event::GracefulStop`]) or the peer going away (Cease).
#[derive(Debug, Clone)]
pub struct Stop {
    pub cancel: CancellationToken,
    pub graceful: Arc<AtomicBool>,
}

/// [`run`], bound to a BFD session. A BFD failure tears the session down at once and holds it
/// until BFD is Up again ([`fsm::Event::BfdDown`]); a BFD session that was never Up holds
/// nothing, so BGP to a router without BFD still comes up (and the BFD status shows Down).
pub async fn run_with_bfd(
    config: PeerConfig,
    routes: watch::Receiver<RouteSet>,
    bfd: Option<watch::Receiver<bfd::Status>>,
    status: watch::Sender<SessionStatus>,
    stop: Stop,
) {
    let span = info_span!("bgp_peer", peer = %config.address);
    let mut task = Task::new(config, routes, status, stop.cancel);
    task.graceful_stop = stop.graceful;
    task.bfd_seen = bfd.as_ref().map(|bfd| *bfd.borrow()).unwrap_or_default();
    task.bfd = bfd;
    task.run().instrument(span).await;
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

struct Task {
    config: PeerConfig,
    fsm: fsm::Session,
    routes: watch::Receiver<RouteSet>,
    routes_open: bool,
    status: watch::Sender<SessionStatus>,
    cancel: CancellationToken,
    connecting: Option<Connecting>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    timers: BTreeMap<Timer, Instant>,
    events: VecDeque<Event>,
    decode_context: DecodeContext,
    /// What the peer has from us in this session.
    sent: BTreeMap<IpNet, Route>,
    sessions_established: u64,
    /// Routes left out because the session cannot carry them, reported once per session.
    told_unsendable: bool,
    sent_messages: MessageCounts,
    received_messages: MessageCounts,
    /// Set before `cancel` when the speaker stops to restart.
    graceful_stop: Arc<AtomicBool>,
    /// The bound BFD session, if any, and what it said last.
    bfd: Option<watch::Receiver<bfd::Status>>,
    bfd_seen: bfd::Status,
}

/// One input of the loop.
enum Input {
    Cancelled,
    Connected(io::Result<TcpStream>),
    Read(io::Result<usize>),
    Timer(Timer),
    RoutesChanged(bool),
    /// The BFD session's view changed (`None`: its task is gone).
    BfdChanged(Option<bfd::Status>),
}

async fn maybe_connecting(connecting: &mut Option<Connecting>) -> io::Result<TcpStream> {
    match connecting {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn maybe_read(stream: &mut Option<TcpStream>, buf: &mut Vec<u8>) -> io::Result<usize> {
    match stream {
        Some(stream) => {
            buf.reserve(codec::MAX_MESSAGE_LEN);
            stream.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}

async fn maybe_bfd_changed(bfd: &mut Option<watch::Receiver<bfd::Status>>) -> Option<bfd::Status> {
    match bfd {
        Some(bfd) => match bfd.changed().await {
            Ok(()) => Some(*bfd.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn maybe_sleep(next: Option<(Timer, Instant)>) -> Timer {
    match next {
        Some((timer, at)) => {
            tokio::time::sleep_until(at).await;
            timer
        }
        None => std::future::pending().await,
    }
}

impl Task {
    fn new(
        config: PeerConfig,
        routes: watch::Receiver<RouteSet>,
        status: watch::Sender<SessionStatus>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            fsm: fsm::Session::new(config.session.clone()),
            config,
            routes,
            routes_open: true,
            status,
            cancel,
            connecting: None,
            stream: None,
            buf: Vec::new(),
            timers: BTreeMap::new(),
            events: VecDeque::new(),
            decode_context: DecodeContext::default(),
            sent: BTreeMap::new(),
            sessions_established: 0,
            told_unsendable: false,
            sent_messages: MessageCounts::default(),
            received_messages: MessageCounts::default(),
            graceful_stop: Arc::new(AtomicBool::new(false)),
            bfd: None,
            bfd_seen: bfd::Status::default(),
        }
    }

    async fn run(mut self) {
        info!(
            local_asn = self.config.session.local_asn,
            source = ?self.config.source,
            ttl = ?self.config.ttl,
            md5 = self.config.md5_key.is_some(),
            "BGP session task started"
        );
        self.feed(Event::ManualStart).await;
        loop {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(timer, at)| (*timer, *at));
            // Biased, the connection last: a peer that sends its table without pause must not
            // hold up our keepalives (its hold timer) or our own changes.
            let input = tokio::select! {
                biased;
                () = self.cancel.cancelled() => Input::Cancelled,
                // Before the timers: a path BFD saw fail must not get a last keepalive out.
                up = maybe_bfd_changed(&mut self.bfd) => Input::BfdChanged(up),
                timer = maybe_sleep(next_timer) => Input::Timer(timer),
                changed = self.routes.changed(), if self.routes_open => {
                    Input::RoutesChanged(changed.is_ok())
                }
                result = maybe_connecting(&mut self.connecting) => Input::Connected(result),
                result = maybe_read(&mut self.stream, &mut self.buf) => Input::Read(result),
            };
            match input {
                Input::Cancelled => {
                    let event = if self.graceful_stop.load(Ordering::SeqCst) {
                        Event::GracefulStop
                    } else {
                        Event::ManualStop
                    };
                    self.feed(event).await;
                    info!("BGP session task stopped");
                    return;
                }
                Input::Connected(Ok(stream)) => {
                    self.connecting = None;
                    debug!(local = ?stream.local_addr().ok(), "TCP connection established");
                    self.stream = Some(stream);
                    self.buf.clear();
                    self.feed(Event::TcpConnectionConfirmed(Direction::Outgoing))
                        .await;
                }
                Input::Connected(Err(error)) => {
                    self.connecting = None;
                    debug!(%error, "TCP connection attempt failed");
                    self.feed(Event::TcpConnectionFails).await;
                }
                Input::Read(Ok(0)) => {
                    debug!("the peer closed the connection");
                    self.feed(Event::TcpConnectionFails).await;
                }
                Input::Read(Ok(_)) => self.received().await,
                Input::Read(Err(error)) => {
                    debug!(%error, "reading from the peer failed");
                    self.feed(Event::TcpConnectionFails).await;
                }
                Input::Timer(timer) => {
                    self.timers.remove(&timer);
                    self.feed(Event::TimerExpired(timer)).await;
                }
                Input::BfdChanged(None) => {
                    warn!("the BFD session task is gone; BGP goes on without it");
                    self.bfd = None;
                    self.publish();
                }
                Input::BfdChanged(Some(path)) => {
                    let seen = std::mem::replace(&mut self.bfd_seen, path);
                    // The status shows the BFD state even when nothing else changes.
                    self.publish();
                    if path.failures > seen.failures {
                        warn!("BFD session down: tearing the BGP session down");
                        self.feed(Event::BfdDown).await;
                    }
                    if path.releases_bgp()
                        && (!seen.releases_bgp() || path.failures > seen.failures)
                    {
                        if path.is_up() {
                            info!("BFD session up");
                        } else {
                            info!("BFD peer silent: BGP no longer held by BFD");
                        }
                        self.feed(Event::BfdUp).await;
                    }
                }
                Input::RoutesChanged(open) => {
                    if open {
                        self.feed(Event::AdvertisementsChanged).await;
                    } else {
                        // The owner is gone; keep announcing the last set until cancelled.
                        self.routes_open = false;
                    }
                }
            }
        }
    }

    /// Frames and decodes what is in the buffer, one event per message.
    async fn received(&mut self) {
        while self.stream.is_some() {
            let len = match codec::message_len(&self.buf) {
                Ok(Some(len)) if self.buf.len() >= len => len,
                Ok(_) => return,
                Err(error) => {
                    self.feed(Event::DecodeError(error)).await;
                    return;
                }
            };
            let event = match codec::decode(&self.buf[..len], &self.decode_context) {
                Ok(Message::Open(open)) => Event::BgpOpen(open),
                Ok(Message::Update(update)) => Event::UpdateMsg(update),
                Ok(Message::Notification(notification)) => Event::NotifMsg(notification),
                Ok(Message::Keepalive) => Event::KeepAliveMsg,
                Ok(Message::RouteRefresh(family)) => Event::RouteRefreshMsg(family),
                Err(error) => Event::DecodeError(error),
            };
            self.received_messages
                .count(self.buf[codec::HEADER_LEN - 1]);
            self.buf.drain(..len);
            self.feed(event).await;
        }
    }

    /// Runs `event` and everything it causes through the state machine, then publishes.
    async fn feed(&mut self, event: Event) {
        self.events.push_back(event);
        while let Some(event) = self.events.pop_front() {
            let now = Instant::now().into_std();
            let actions = self.fsm.handle(event, now);
            for action in actions {
                self.execute(action).await;
            }
        }
        self.publish();
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::Connect => match self.connect() {
                Ok(connecting) => self.connecting = Some(connecting),
                Err(error) => {
                    warn!(%error, "cannot set up the connection to the peer");
                    self.events.push_back(Event::TcpConnectionFails);
                }
            },
            Action::CloseConnection => self.close().await,
            Action::SendOpen(open) => {
                let bytes = codec::encode(&codec::open(&open));
                self.send_encoded(vec![bytes]).await;
            }
            Action::SendKeepalive => self.send(codec::keepalive()).await,
            Action::SendNotification(notification) => {
                info!(%notification, "sending NOTIFICATION");
                self.send(notification.to_bytes()).await;
            }
            Action::SendTable(families) => self.send_table(&families).await,
            Action::SendUpdate => self.send_changes().await,
            Action::StartTimer(timer, after) => {
                self.timers.insert(timer, Instant::now() + after);
            }
            Action::StopTimer(timer) => {
                self.timers.remove(&timer);
            }
            Action::SessionUp(negotiated) => {
                self.sessions_established += 1;
                self.sent.clear();
                self.told_unsendable = false;
                info!(
                    peer_asn = negotiated.peer_asn,
                    peer_router_id = %negotiated.peer_router_id,
                    hold_time = ?negotiated.hold_time,
                    families = ?negotiated.families,
                    "BGP session established"
                );
            }
            Action::SessionDown {
                reason,
                was_established,
            } => {
                self.sent.clear();
                self.decode_context = DecodeContext::default();
                if reason == fsm::DownReason::Stopped {
                    info!(was_established, "BGP session closed: stopped");
                } else if was_established {
                    warn!(%reason, "BGP session down");
                } else {
                    debug!(%reason, "BGP session attempt failed");
                }
            }
            Action::UpdateErrorTolerated(error) => {
                warn!(%error, "malformed UPDATE from the peer, tolerated (RFC 7606)");
            }
        }
        // The 4-octet AS decision is known from the peer's OPEN on.
        if let Some(negotiated) = self.fsm.negotiated() {
            self.decode_context.four_octet_as = negotiated.four_octet_as;
        }
    }

    /// A socket with the peer's options, and the connection attempt on it.
    fn connect(&mut self) -> io::Result<Connecting> {
        self.close_now();
        let peer = self.config.address;
        let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        if let Some(ttl) = self.config.ttl {
            match peer {
                SocketAddr::V4(_) => socket.set_ttl_v4(ttl)?,
                SocketAddr::V6(_) => socket.set_unicast_hops_v6(ttl)?,
            }
        }
        if let Some(key) = &self.config.md5_key {
            set_md5_key(&socket, peer.ip(), key)?;
        }
        if let Some(source) = self.config.source {
            socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
        }
        let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        debug!("connecting");
        Ok(Box::pin(socket.connect(peer)))
    }

    /// Drops the connection (or the attempt) at once.
    fn close_now(&mut self) {
        self.connecting = None;
        self.stream = None;
        self.buf.clear();
    }

    /// Closes the connection after flushing what was written (a NOTIFICATION).
    async fn close(&mut self) {
        self.connecting = None;
        if let Some(mut stream) = self.stream.take() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
        }
        self.buf.clear();
    }

    async fn send(&mut self, bytes: Vec<u8>) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let result = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
        let error = match result {
            Ok(Ok(())) => {
                self.sent_messages.count_all(&bytes);
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("the peer did not read for {WRITE_TIMEOUT:?}"),
        };
        debug!(%error, "writing to the peer failed");
        self.close_now();
        self.events.push_back(Event::TcpConnectionFails);
    }

    /// Sends encoded messages in one write; one that could not be encoded is logged and left
    /// out.
    async fn send_encoded(&mut self, messages: Vec<Result<Vec<u8>, EncodeError>>) {
        let mut bytes = Vec::new();
        for message in messages {
            match message {
                Ok(message) => bytes.extend_from_slice(&message),
                Err(error) => warn!(%error, "cannot encode a message, not sent"),
            }
        }
        if !bytes.is_empty() {
            self.send(bytes).await;
        }
    }

    fn update_context(&self) -> Option<(UpdateContext, Negotiated)> {
        let negotiated = self.fsm.negotiated()?.clone();
        let context = UpdateContext {
            local_asn: self.config.session.local_asn,
            internal: negotiated.internal,
            four_octet_as: negotiated.four_octet_as,
        };
        Some((context, negotiated))
    }

    /// The desired routes this session can carry.
    fn sendable(&mut self, negotiated: &Negotiated) -> BTreeMap<IpNet, Route> {
        let desired = self.routes.borrow_and_update().routes.clone();
        let (sendable, left_out): (BTreeMap<_, _>, BTreeMap<_, _>) = desired
            .into_iter()
            .partition(|(prefix, route)| carried(negotiated, *prefix, route.next_hop));
        if !left_out.is_empty() && !self.told_unsendable {
            self.told_unsendable = true;
            info!(
                routes = left_out.len(),
                first = %left_out.keys().next().map(ToString::to_string).unwrap_or_default(),
                "routes this session cannot carry (family not negotiated, or a next hop of \
                 the other family without extended next hop): not announced"
            );
        }
        sendable
    }

    /// Everything in `families`, then End-of-RIB for each.
    async fn send_table(&mut self, families: &BTreeSet<Family>) {
        let Some((context, negotiated)) = self.update_context() else {
            return;
        };
        let sendable = self.sendable(&negotiated);
        let table: BTreeMap<IpNet, Route> = sendable
            .into_iter()
            .filter(|(prefix, _)| families.contains(&family_of(*prefix)))
            .collect();
        // Whatever the peer has from us in these families and should not keep (a change not
        // seen yet when a ROUTE-REFRESH re-sends the table) goes first.
        let stale: BTreeSet<IpNet> = self
            .sent
            .keys()
            .filter(|prefix| {
                families.contains(&family_of(**prefix)) && !table.contains_key(*prefix)
            })
            .copied()
            .collect();
        let mut messages = withdrawals(&stale);
        messages.extend(announcements(&context, &table));
        for family in families {
            messages.push(codec::end_of_rib(*family).and_then(|m| codec::encode(&m)));
        }
        self.sent
            .retain(|prefix, _| !families.contains(&family_of(*prefix)));
        let count = table.len();
        self.sent.extend(table);
        info!(prefixes = count, families = ?families, "table sent, then End-of-RIB");
        self.send_encoded(messages).await;
    }

    /// Announces what is new or changed, withdraws what is gone.
    async fn send_changes(&mut self) {
        let Some((context, negotiated)) = self.update_context() else {
            return;
        };
        let desired = self.sendable(&negotiated);
        let changes = diff(&self.sent, &desired);
        if changes.is_empty() {
            return;
        }
        let mut messages = withdrawals(&changes.withdraw);
        messages.extend(announcements(&context, &changes.announce));
        info!(
            announce = changes.announce.len(),
            withdraw = changes.withdraw.len(),
            "sending changes"
        );
        self.sent = desired;
        self.send_encoded(messages).await;
    }

    fn publish(&self) {
        let status = SessionStatus {
            peer: self.config.address,
            state: self.fsm.state(),
            established_at: self.fsm.established_at(),
            negotiated: self.fsm.negotiated().cloned(),
            prefixes_sent: if self.fsm.state() == State::Established {
                self.sent.len()
            } else {
                0
            },
            last_error: self.fsm.last_error().map(ToString::to_string),
            sessions_established: self.sessions_established,
            sent: self.sent_messages,
            received: self.received_messages,
            bfd: self.bfd.as_ref().map(|_| self.bfd_seen),
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }
}

fn family_of(prefix: IpNet) -> Family {
    match prefix {
        IpNet::V4(_) => Family::Ipv4Unicast,
        IpNet::V6(_) => Family::Ipv6Unicast,
    }
}

/// Whether a session with `negotiated` can carry a route for `prefix` via `next_hop`.
fn carried(negotiated: &Negotiated, prefix: IpNet, next_hop: IpAddr) -> bool {
    if !negotiated.families.contains(&family_of(prefix)) {
        return false;
    }
    match (prefix, next_hop) {
        (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_)) => true,
        (IpNet::V4(_), IpAddr::V6(_)) => negotiated.extended_next_hop_ipv4,
        (IpNet::V6(_), IpAddr::V4(_)) => false,
    }
}

/// What to send to go from `sent` to `desired`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    /// New routes, and routes whose next hop or attributes changed (an announcement replaces
    /// the previous one, RFC 4271 §3.1).
    announce: BTreeMap<IpNet, Route>,
    withdraw: BTreeSet<IpNet>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

fn diff(sent: &BTreeMap<IpNet, Route>, desired: &BTreeMap<IpNet, Route>) -> Changes {
    Changes {
        announce: desired
            .iter()
            .filter(|(prefix, route)| sent.get(prefix) != Some(route))
            .map(|(prefix, route)| (*prefix, route.clone()))
            .collect(),
        withdraw: sent
            .keys()
            .filter(|prefix| !desired.contains_key(prefix))
            .copied()
            .collect(),
    }
}

/// Routes grouped by (family, next hop, attributes), in first-seen order: one packed run of
/// UPDATEs per group.
fn groups(routes: &BTreeMap<IpNet, Route>) -> Vec<(&Route, Vec<IpNet>)> {
    let mut groups: Vec<(&Route, Vec<IpNet>)> = Vec::new();
    for (prefix, route) in routes {
        let same = |(r, prefixes): &&mut (&Route, Vec<IpNet>)| {
            *r == route && prefixes.first().map(|p| family_of(*p)) == Some(family_of(*prefix))
        };
        match groups.iter_mut().find(same) {
            Some((_, prefixes)) => prefixes.push(*prefix),
            None => groups.push((route, vec![*prefix])),
        }
    }
    groups
}

fn encode_all(messages: Result<Vec<BgpMessage>, EncodeError>) -> Vec<Result<Vec<u8>, EncodeError>> {
    match messages {
        Ok(messages) => messages.iter().map(codec::encode).collect(),
        Err(error) => vec![Err(error)],
    }
}

fn announcements(
    context: &UpdateContext,
    routes: &BTreeMap<IpNet, Route>,
) -> Vec<Result<Vec<u8>, EncodeError>> {
    let mut out = Vec::new();
    for (route, prefixes) in groups(routes) {
        let (v4, v6) = by_family(prefixes.iter());
        if !v4.is_empty() {
            out.extend(encode_all(codec::announce_ipv4(
                context,
                &route.attributes,
                route.next_hop,
                &v4,
            )));
        }
        if let (false, IpAddr::V6(global)) = (v6.is_empty(), route.next_hop) {
            let next_hop = Ipv6NextHop {
                global,
                link_local: None,
            };
            out.extend(encode_all(codec::announce_ipv6(
                context,
                &route.attributes,
                next_hop,
                &v6,
            )));
        }
    }
    out
}

/// The IPv4 and the IPv6 prefixes of `prefixes`, each in the order given.
fn by_family<'a>(prefixes: impl Iterator<Item = &'a IpNet>) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for prefix in prefixes {
        match prefix {
            IpNet::V4(p) => v4.push(*p),
            IpNet::V6(p) => v6.push(*p),
        }
    }
    (v4, v6)
}

fn withdrawals(prefixes: &BTreeSet<IpNet>) -> Vec<Result<Vec<u8>, EncodeError>> {
    let (v4, v6) = by_family(prefixes.iter());
    let mut out = Vec::new();
    if !v4.is_empty() {
        out.extend(encode_all(codec::withdraw_ipv4(&v4)));
    }
    if !v6.is_empty() {
        out.extend(encode_all(codec::withdraw_ipv6(&v6)));
    }
    out
}

/// Linux `struct tcp_md5sig` (include/uapi/linux/tcp.h).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

fn md5sig(peer: IpAddr, key: &Md5Key) -> io::Result<TcpMd5Sig> {
    let address = SockAddr::from(SocketAddr::new(peer, 0));
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (unspecified) value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = usize::try_from(address.len()).unwrap_or(usize::MAX);
    if len > std::mem::size_of::<libc::sockaddr_storage>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "address too long",
        ));
    }
    // SAFETY: both regions are valid for `len` bytes (checked above) and do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            address.as_ptr().cast::<u8>(),
            (&raw mut storage).cast::<u8>(),
            len,
        );
    }
    let mut bytes = [0u8; MD5_MAX_KEY_LEN];
    let key_bytes = bytes
        .get_mut(..key.0.len())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "TCP-MD5 key too long"))?;
    key_bytes.copy_from_slice(&key.0);
    Ok(TcpMd5Sig {
        addr: storage,
        flags: 0,
        prefix_len: 0,
        key_len: u16::try_from(key.0.len()).unwrap_or(u16::MAX),
        ifindex: 0,
        key: bytes,
    })
}

/// `setsockopt(TCP_MD5SIG)`: segments to and from `peer` carry the RFC 2385 signature.
fn set_md5_key(socket: &Socket, peer: IpAddr, key: &Md5Key) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let sig = md5sig(peer, key)?;
    let len = libc::socklen_t::try_from(std::mem::size_of::<TcpMd5Sig>()).unwrap_or(0);
    // SAFETY: `sig` is a valid tcp_md5sig that outlives the call; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::{Capabilities, LocalOpen, UpdateSummary, cease_subcode};
    use crate::bgp::fsm::Backoff;
    use ferrolb_crds::config::PeerAsn;
    use std::net::Ipv4Addr;
    use tokio::net::TcpListener;

    fn route(next_hop: &str) -> Route {
        Route {
            next_hop: next_hop.parse().unwrap(),
            attributes: RouteAttributes::default(),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn negotiated(families: &[Family], extended_next_hop_ipv4: bool) -> Negotiated {
        Negotiated {
            peer_asn: 64512,
            peer_router_id: Ipv4Addr::new(192, 0, 2, 1),
            hold_time: Duration::from_secs(90),
            keepalive_time: Duration::from_secs(30),
            four_octet_as: true,
            internal: false,
            families: families.iter().copied().collect(),
            extended_next_hop_ipv4,
            route_refresh: true,
            peer_graceful_restart: None,
        }
    }

    #[test]
    fn diff_announces_new_and_changed_and_withdraws_gone() {
        let sent: BTreeMap<IpNet, Route> = [
            (net("203.0.113.1/32"), route("192.0.2.11")),
            (net("203.0.113.2/32"), route("192.0.2.11")),
            (net("2001:db8:ee::1/128"), route("2001:db8:2::11")),
        ]
        .into();
        let desired: BTreeMap<IpNet, Route> = [
            (net("203.0.113.1/32"), route("192.0.2.11")),
            (net("203.0.113.2/32"), route("192.0.2.12")),
            (net("203.0.113.3/32"), route("192.0.2.11")),
        ]
        .into();
        let changes = diff(&sent, &desired);
        assert_eq!(
            changes.announce.keys().copied().collect::<Vec<_>>(),
            vec![net("203.0.113.2/32"), net("203.0.113.3/32")]
        );
        assert_eq!(
            changes.withdraw,
            BTreeSet::from([net("2001:db8:ee::1/128")])
        );
        assert!(diff(&desired, &desired).is_empty());
    }

    #[test]
    fn routes_are_grouped_by_family_next_hop_and_attributes() {
        let mut communities = route("192.0.2.11");
        communities.attributes.communities = vec![0xfde8_0001];
        let routes: BTreeMap<IpNet, Route> = [
            (net("203.0.113.1/32"), route("192.0.2.11")),
            (net("203.0.113.2/32"), communities.clone()),
            (net("203.0.113.3/32"), route("192.0.2.11")),
            (net("2001:db8:ee::1/128"), route("2001:db8:2::11")),
        ]
        .into();
        let grouped: Vec<(Route, Vec<IpNet>)> = groups(&routes)
            .into_iter()
            .map(|(r, p)| (r.clone(), p))
            .collect();
        assert_eq!(grouped.len(), 3);
        assert_eq!(
            grouped[0].1,
            vec![net("203.0.113.1/32"), net("203.0.113.3/32")]
        );
        assert_eq!(grouped[1], (communities, vec![net("203.0.113.2/32")]));
        let context = UpdateContext {
            local_asn: 64513,
            internal: false,
            four_octet_as: true,
        };
        // One UPDATE per group, each carrying its prefixes.
        let decoded: Vec<UpdateSummary> = announcements(&context, &routes)
            .into_iter()
            .map(|bytes| {
                match codec::decode(
                    &bytes.unwrap(),
                    &DecodeContext {
                        four_octet_as: true,
                    },
                ) {
                    Ok(Message::Update(summary)) => summary,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        let announced: Vec<usize> = decoded.iter().map(|s| s.announced).collect();
        assert_eq!(announced, vec![2, 1, 1]);
    }

    #[test]
    fn what_a_session_can_carry() {
        let v4_only = negotiated(&[Family::Ipv4Unicast], false);
        let both = negotiated(&[Family::Ipv4Unicast, Family::Ipv6Unicast], false);
        let extended = negotiated(&[Family::Ipv4Unicast], true);
        let v4 = net("203.0.113.1/32");
        let v6 = net("2001:db8:ee::1/128");
        let nh4: IpAddr = "192.0.2.11".parse().unwrap();
        let nh6: IpAddr = "2001:db8:2::11".parse().unwrap();
        assert!(carried(&v4_only, v4, nh4));
        assert!(!carried(&v4_only, v6, nh6), "IPv6 not negotiated");
        assert!(carried(&both, v6, nh6));
        assert!(!carried(&both, v6, nh4));
        assert!(!carried(&both, v4, nh6), "no extended next hop");
        assert!(carried(&extended, v4, nh6));
    }

    #[test]
    fn md5_struct_matches_the_kernel_layout() {
        // include/uapi/linux/tcp.h: 128 + 1 + 1 + 2 + 4 + 80.
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        let key = Md5Key::new("s3cret").unwrap();
        let sig = md5sig("192.0.2.1".parse().unwrap(), &key).unwrap();
        assert_eq!(sig.key_len, 6);
        assert_eq!(&sig.key[..6], b"s3cret");
        assert_eq!(i32::from(sig.addr.ss_family), libc::AF_INET);
        assert!(!format!("{key:?}").contains("s3cret"));
        assert!(Md5Key::new(vec![b'x'; 81]).is_err());
        assert!(Md5Key::new("").is_err());
        // The kernel takes the option on a fresh socket.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        set_md5_key(&socket, "192.0.2.1".parse().unwrap(), &key).unwrap();
    }

    /// A fake peer on loopback, played with the codec.
    struct FakePeer {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl FakePeer {
        async fn next(&mut self) -> Message {
            loop {
                if let Some(len) = codec::message_len(&self.buf).unwrap()
                    && self.buf.len() >= len
                {
                    let message = codec::decode(
                        &self.buf[..len],
                        &DecodeContext {
                            four_octet_as: true,
                        },
                    )
                    .unwrap();
                    self.buf.drain(..len);
                    return message;
                }
                let n = self.stream.read_buf(&mut self.buf).await.unwrap();
                assert!(n > 0, "the speaker closed the connection");
            }
        }

        /// The next message that is not a KEEPALIVE.
        async fn next_not_keepalive(&mut self) -> Message {
            loop {
                match self.next().await {
                    Message::Keepalive => continue,
                    other => return other,
                }
            }
        }

        /// The next NOTIFICATION, skipping everything else.
        async fn next_notification(&mut self) -> codec::Notification {
            loop {
                if let Message::Notification(n) = self.next().await {
                    return n;
                }
            }
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.unwrap();
        }
    }

    async fn accept(listener: &TcpListener) -> FakePeer {
        let (stream, from) = listener.accept().await.unwrap();
        assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        FakePeer {
            stream,
            buf: Vec::new(),
        }
    }

    /// The speaker's next connection, answered: its OPEN read, `peer_open` and a KEEPALIVE
    /// sent back.
    async fn accept_and_open(listener: &TcpListener, peer_open: &[u8]) -> FakePeer {
        let mut peer = accept(listener).await;
        assert!(matches!(peer.next().await, Message::Open(_)));
        peer.send(peer_open).await;
        peer.send(&codec::keepalive()).await;
        peer
    }

    fn peer_config(address: SocketAddr) -> PeerConfig {
        PeerConfig {
            session: SessionConfig {
                local_asn: 64513,
                peer_asn: PeerAsn::Fixed(64512),
                router_id: Ipv4Addr::new(192, 0, 2, 11),
                hold_time: Duration::from_secs(90),
                keepalive_time: Duration::from_secs(30),
                passive: false,
                connect_retry_time: Duration::from_secs(5),
                families: BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]),
                extended_next_hop_ipv4: false,
                graceful_restart: None,
                backoff: Backoff {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(1),
                    stable_after: Duration::from_secs(60),
                },
            },
            address,
            source: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ttl: Some(255),
            md5_key: None,
        }
    }

    /// The fake peer's OPEN: AS 64512, IPv4 unicast, with or without route refresh.
    fn router_open(route_refresh: bool) -> Vec<u8> {
        codec::encode(&codec::open(&LocalOpen {
            asn: 64512,
            hold_time: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: Capabilities {
                four_octet_as: Some(64512),
                multiprotocol: BTreeSet::from([Family::Ipv4Unicast]),
                advertises_multiprotocol: true,
                route_refresh,
                ..Capabilities::default()
            },
        }))
        .unwrap()
    }

    async fn wait_for(
        status: &mut watch::Receiver<SessionStatus>,
        what: impl Fn(&SessionStatus) -> bool,
    ) -> SessionStatus {
        tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| what(s)))
            .await
            .expect("status in time")
            .expect("task alive")
            .clone()
    }

    /// The whole life of a session against a fake peer: OPEN exchange, table + End-of-RIB,
    /// a change, a ROUTE-REFRESH, the peer dropping us (reconnect), and the Cease on cancel.
    #[tokio::test]
    async fn a_session_against_a_fake_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let v4 = net("203.0.113.200/32");
        let v6 = net("2001:db8:ee::1/128");
        let routes = RouteSet::new()
            .with(v4, route("192.0.2.11"))
            .with(v6, route("2001:db8:2::11"));
        let (routes_tx, routes_rx) = watch::channel(routes);
        let cancel = CancellationToken::new();
        let (mut status, handle) = spawn(peer_config(address), routes_rx, cancel.clone());

        let peer_open = router_open(true);
        let mut peer = accept(&listener).await;
        let Message::Open(open) = peer.next().await else {
            panic!("expected OPEN");
        };
        assert_eq!(open.asn, 64513);
        assert_eq!(open.hold_time, 90);
        peer.send(&peer_open).await;
        peer.send(&codec::keepalive()).await;
        assert_eq!(peer.next().await, Message::Keepalive);

        // The table: the IPv4 route, not the IPv6 one (not negotiated), then End-of-RIB.
        assert_eq!(
            peer.next_not_keepalive().await,
            Message::Update(UpdateSummary {
                announced: 1,
                withdrawn: 0,
                end_of_rib: None
            })
        );
        let Message::Update(eor) = peer.next_not_keepalive().await else {
            panic!("expected End-of-RIB");
        };
        assert_eq!(eor.end_of_rib, Some(Family::Ipv4Unicast));
        let up = wait_for(&mut status, |s| {
            s.state == State::Established && s.prefixes_sent == 1
        })
        .await;
        assert!(up.established_at.is_some());
        assert_eq!(up.sessions_established, 1);

        // A second route, then none: an announcement, then the withdrawals.
        routes_tx.send_modify(|set| set.insert(net("203.0.113.201/32"), route("192.0.2.11")));
        let Message::Update(added) = peer.next_not_keepalive().await else {
            panic!("expected UPDATE");
        };
        assert_eq!((added.announced, added.withdrawn), (1, 0));
        routes_tx.send_replace(RouteSet::new());
        let Message::Update(gone) = peer.next_not_keepalive().await else {
            panic!("expected UPDATE");
        };
        assert_eq!((gone.announced, gone.withdrawn), (0, 2));
        wait_for(&mut status, |s| s.prefixes_sent == 0).await;

        // ROUTE-REFRESH for IPv4 unicast: the (empty) table again, End-of-RIB.
        routes_tx.send_replace(RouteSet::new().with(v4, route("192.0.2.11")));
        let Message::Update(again) = peer.next_not_keepalive().await else {
            panic!("expected UPDATE");
        };
        assert_eq!(again.announced, 1);
        let refresh = [&[0xff; 16][..], &[0, 23, 5 /* ROUTE-REFRESH */, 0, 1, 0, 1]].concat();
        peer.send(&refresh).await;
        let Message::Update(table) = peer.next_not_keepalive().await else {
            panic!("expected UPDATE");
        };
        assert_eq!(table.announced, 1);
        let Message::Update(eor) = peer.next_not_keepalive().await else {
            panic!("expected End-of-RIB");
        };
        assert_eq!(eor.end_of_rib, Some(Family::Ipv4Unicast));

        // The peer goes away: the session goes down and the task reconnects after its
        // back-off.
        drop(peer);
        let down = wait_for(&mut status, |s| s.state != State::Established).await;
        assert_eq!(down.last_error.as_deref(), Some("TCP connection closed"));
        let mut peer = accept_and_open(&listener, &peer_open).await;
        wait_for(&mut status, |s| s.sessions_established == 2).await;

        // Cancel: Cease, Administrative Shutdown, then the connection closes.
        cancel.cancel();
        let cease = peer.next_notification().await;
        assert_eq!(
            cease,
            codec::Notification::cease(cease_subcode::ADMINISTRATIVE_SHUTDOWN)
        );
        let mut rest = Vec::new();
        let n = peer.stream.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0, "closed after the NOTIFICATION");
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.borrow().state, State::Idle);
    }

    /// Bound to BFD: BFD Up then Down sends Cease / BFD Down and closes; nothing reconnects
    /// while BFD stays down (the back-off here is 100 ms); BFD Up reconnects at once.
    #[tokio::test]
    async fn bfd_down_tears_the_session_down_until_bfd_is_up() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (_routes_tx, routes_rx) = watch::channel(RouteSet::new());
        let (bfd_tx, bfd_rx) = watch::channel(bfd::Status::default());
        let (status_tx, mut status) = watch::channel(SessionStatus::new(address));
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(run_with_bfd(
            peer_config(address),
            routes_rx,
            Some(bfd_rx),
            status_tx,
            Stop {
                cancel: cancel.clone(),
                graceful: Arc::new(AtomicBool::new(false)),
            },
        ));
        let peer_open = router_open(false);
        // BFD not Up yet (never was): the session comes up all the same.
        let mut peer = accept_and_open(&listener, &peer_open).await;
        wait_for(&mut status, |s| s.state == State::Established).await;

        // Up and Down again before the task looks: the failure is not lost.
        bfd_tx.send_replace(bfd::Status {
            state: bfd::State::Up,
            ..bfd::Status::default()
        });
        bfd_tx.send_replace(bfd::Status {
            failures: 1,
            ..bfd::Status::default()
        });
        let notification = peer.next_notification().await;
        assert_eq!(
            notification,
            codec::Notification::cease(cease_subcode::BFD_DOWN)
        );
        let down = wait_for(&mut status, |s| s.state == State::Idle).await;
        assert_eq!(down.last_error.as_deref(), Some("BFD session down"));
        // Ten back-offs' worth of time: no connection attempt.
        let attempt = tokio::time::timeout(Duration::from_secs(1), listener.accept()).await;
        assert!(attempt.is_err(), "reconnected while BFD is down");

        bfd_tx.send_replace(bfd::Status {
            state: bfd::State::Up,
            failures: 1,
            ..bfd::Status::default()
        });
        let _peer = accept_and_open(&listener, &peer_open).await;
        wait_for(&mut status, |s| s.sessions_established == 2).await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }
}
