//! The BGP session state machine (RFC 4271 §8), pure: [`Session::handle`] (or [`step`]) takes
//! one [`Event`] and the time, changes the state and returns the [`Action`]s for the driver to
//! run. No I/O, no tokio, no clock of its own: a timer is an [`Action::StartTimer`] out and an
//! [`Event::TimerExpired`] back in, as in holo's protocol crates.
//!
//! One `Session` is one TCP connection's worth of protocol. The per-peer task (the next step of
//! the BGP issue) owns the sockets and timers; when a second connection to the same peer
//! appears (RFC 4271 §6.8) it runs a second `Session` for it and settles the collision with
//! [`resolve_collision`], feeding [`Event::OpenCollisionDump`] to the loser.
//!
//! Deviations from the letter of RFC 4271 §8.2.2, each on purpose:
//! - every failure goes to Idle, and the automatic restart (the RFC's AutomaticStart event,
//!   here [`Timer::IdleHold`]) comes after an exponential back-off, capped, that is only reset
//!   once a session has stayed up for a while, so a peer that accepts and then drops us is not
//!   hammered (RFC 4271 §8.1.1 DampPeerOscillations, in spirit);
//! - passive mode never connects (the RFC's passive mode only waits for the first attempt);
//! - a timer that fires in a state that does not use it is ignored (the driver may deliver an
//!   expiry it had already been told to stop), while an unexpected *message* is an FSM error
//!   with the RFC 6608 subcode of the state.
//!
//! No DelayOpen, no AutomaticStop, no CollisionDetectEstablishedState (a connection arriving
//! while Established is refused by the driver).

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ferrolb_crds::config::{Peer, PeerAsn};

use super::codec::{
    AS_TRANS, Capabilities, DecodeError, Family, GracefulRestart, LocalOpen, Notification,
    OpenParams, UpdateSummary, cease_subcode, error_code, fsm_subcode, open_subcode,
};

/// RFC 4271 §8.2.2: the hold timer while waiting for the peer's OPEN ("a large value"; 4
/// minutes is the suggested one).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// The six states of RFC 4271 §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The session's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// RFC 4271 ConnectRetryTimer: a connection attempt that takes this long is retried.
    ConnectRetry,
    /// RFC 4271 HoldTimer.
    Hold,
    /// RFC 4271 KeepaliveTimer.
    Keepalive,
    /// The back-off in Idle before the automatic restart (RFC 4271 §8.1.1 IdleHoldTimer).
    IdleHold,
}

/// Which side opened the TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We connected to the peer (RFC 4271 Event 16, Tcp_CR_Acked).
    Outgoing,
    /// The peer connected to us (Event 17, TcpConnectionConfirmed).
    Incoming,
}

/// Inputs of the state machine; the RFC 4271 §8.1 events each covers are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Event 1 ManualStart (Event 4 ManualStart_with_PassiveTcpEstablishment when the
    /// configuration is passive).
    ManualStart,
    /// Event 2 ManualStop: the peer was removed, or the speaker stops.
    ManualStop,
    /// The speaker stops to restart (SIGTERM: an upgrade, a rollout). With graceful restart
    /// negotiated on both sides the connection is closed without a NOTIFICATION (RFC 4724
    /// §4: the peer keeps our routes, marked stale, for our restart time, and the restarted
    /// speaker's table and End-of-RIB replace them); otherwise this is [`Event::ManualStop`].
    GracefulStop,
    /// Events 9 ConnectRetryTimer_Expires, 10 HoldTimer_Expires, 11 KeepaliveTimer_Expires,
    /// 13 IdleHoldTimer_Expires (then Event 3 AutomaticStart).
    TimerExpired(Timer),
    /// Events 16 Tcp_CR_Acked and 17 TcpConnectionConfirmed.
    TcpConnectionConfirmed(Direction),
    /// Event 18 TcpConnectionFails: refused, reset, or closed by the peer.
    TcpConnectionFails,
    /// Event 19 BGPOpen.
    BgpOpen(OpenParams),
    /// Events 21 BGPHeaderErr, 22 BGPOpenMsgErr, 28 UpdateMsgErr (and RFC 7606 leniency).
    DecodeError(DecodeError),
    /// Event 23 OpenCollisionDump: [`resolve_collision`] chose the other connection.
    OpenCollisionDump,
    /// Events 24 NotifMsgVerErr and 25 NotifMsg.
    NotifMsg(Notification),
    /// Event 26 KeepAliveMsg.
    KeepAliveMsg,
    /// Event 27 UpdateMsg.
    UpdateMsg(UpdateSummary),
    /// RFC 2918 ROUTE-REFRESH (`None`: a family we do not know, ignored).
    RouteRefreshMsg(Option<Family>),
    /// Not an RFC event: what we announce changed; sent at once if Established, else with the
    /// table when the session comes up.
    AdvertisementsChanged,
    /// The BFD session to the peer went from Up to Down (RFC 5882 §4.3: the forwarding path
    /// failed). The session is torn down at once, with Cease / BFD Down (RFC 9384) if
    /// connected, and held in Idle until [`Event::BfdUp`].
    BfdDown,
    /// BFD no longer holds the session: Up again, or the peer stopped running BFD with us
    /// (then only BFD cannot tell when the path is back). A session held by
    /// [`Event::BfdDown`] starts.
    BfdUp,
}

/// Why a session (or an attempt at one) ended; its `Display` is what status and logs show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    HoldTimerExpired,
    /// We sent a NOTIFICATION; `detail` says why ("peer AS 65010, expected 65001").
    NotificationSent {
        notification: Notification,
        detail: String,
    },
    NotificationReceived(Notification),
    ConnectFailed,
    /// The TCP handshake did not finish within the ConnectRetry time (it is retried). A peer
    /// that drops our SYNs looks like this, and so does one whose TCP-MD5 key differs (the
    /// kernel discards segments with a wrong or missing signature, RFC 2385).
    ConnectTimedOut(Duration),
    ConnectionClosed,
    /// RFC 4271 §6.8: the other connection to the same peer was kept.
    CollisionResolved,
    /// BFD detected the path to the peer as down.
    BfdDown,
    Stopped,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::HoldTimerExpired => f.write_str("hold timer expired"),
            DownReason::NotificationSent {
                notification,
                detail,
            } if detail.is_empty() => write!(f, "NOTIFICATION {notification} sent"),
            DownReason::NotificationSent {
                notification,
                detail,
            } => write!(f, "NOTIFICATION {notification} sent: {detail}"),
            DownReason::NotificationReceived(notification) => {
                write!(f, "NOTIFICATION {notification} received")
            }
            DownReason::ConnectFailed => f.write_str("TCP connection failed"),
            DownReason::ConnectTimedOut(after) => write!(
                f,
                "TCP connection not established within {after:?} (peer unreachable, port filtered, or TCP-MD5 key mismatch)"
            ),
            DownReason::ConnectionClosed => f.write_str("TCP connection closed"),
            DownReason::CollisionResolved => {
                f.write_str("connection collision: the other connection was kept")
            }
            DownReason::BfdDown => f.write_str("BFD session down"),
            DownReason::Stopped => f.write_str("stopped"),
        }
    }
}

/// What the session agreed with the peer, for the UPDATE builders and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// Zero: no hold timer and no keepalives.
    pub hold_time: Duration,
    pub keepalive_time: Duration,
    /// Both sides can carry 4-octet AS numbers (we always advertise it).
    pub four_octet_as: bool,
    /// Same AS: iBGP (LOCAL_PREF sent, AS_PATH empty).
    pub internal: bool,
    /// The families both sides advertised.
    pub families: BTreeSet<Family>,
    /// RFC 8950 on both sides: IPv4 routes may carry an IPv6 next hop.
    pub extended_next_hop_ipv4: bool,
    /// The peer can ask for our table again (RFC 2918).
    pub route_refresh: bool,
    /// The peer's graceful restart capability (RFC 4724), if any.
    pub peer_graceful_restart: Option<GracefulRestart>,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer (with its MD5 key, source address and TTL).
    Connect,
    /// Drop the TCP connection (after sending what precedes this action).
    CloseConnection,
    SendOpen(LocalOpen),
    SendKeepalive,
    SendNotification(Notification),
    /// Send everything we announce for these families, then End-of-RIB for each: on
    /// Established, and on a ROUTE-REFRESH.
    SendTable(BTreeSet<Family>),
    /// Send what changed in what we announce since the last UPDATEs.
    SendUpdate,
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    SessionUp(Negotiated),
    /// The session, or an attempt at one, ended.
    SessionDown {
        reason: DownReason,
        was_established: bool,
    },
    /// RFC 7606: a malformed UPDATE the session survives (logged and counted).
    UpdateErrorTolerated(String),
}

/// Automatic restart delays: `initial`, doubling per consecutive failure, at most `max`; the
/// count restarts once a session stayed Established for `stable_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub stable_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after the `failures`-th consecutive failure (1 → `initial`).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .saturating_mul(1u32 << doublings)
            .min(self.max.max(self.initial))
    }
}

/// RFC 4724 hooks: what we would advertise, and what the peer advertised. Not acted on yet
/// (the graceful restart issue); kept in the state so that the driver and status can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalGracefulRestart {
    /// How long the peer should keep our routes after our session drops.
    pub restart_time: Duration,
    /// Whether our forwarding state survives a restart of the speaker (the F bit). The
    /// forwarding is the kernel's and kube-proxy's, so it does.
    pub forwarding_preserved: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GracefulRestartState {
    pub local: Option<LocalGracefulRestart>,
    /// From the peer's last OPEN.
    pub peer: Option<GracefulRestart>,
    /// When the session went down while the peer had the capability: the peer keeps our
    /// routes as stale until then (RFC 4724 §4.2).
    pub peer_keeps_routes_until: Option<Instant>,
}

/// Everything the state machine needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: u32,
    pub peer_asn: PeerAsn,
    pub router_id: Ipv4Addr,
    /// 0 or ≥ 3 s, whole seconds (the configuration guarantees it).
    pub hold_time: Duration,
    /// ≤ hold time; MetalLB's default is hold / 3 (applied by the configuration).
    pub keepalive_time: Duration,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// How long a connection attempt may take before it is retried (MetalLB `connectTime`).
    pub connect_retry_time: Duration,
    pub families: BTreeSet<Family>,
    /// Advertise RFC 8950 (IPv4 routes over an IPv6 session: `dualStackAddressFamily`).
    pub extended_next_hop_ipv4: bool,
    pub graceful_restart: Option<LocalGracefulRestart>,
    pub backoff: Backoff,
}

/// When `connectTime` is not set.
pub const DEFAULT_CONNECT_RETRY_TIME: Duration = Duration::from_secs(10);

impl SessionConfig {
    /// From a validated BGPPeer. `router_id` is the peer's `routerID` or, by default, the
    /// node address used for the session, which only the driver knows.
    pub fn from_peer(peer: &Peer, router_id: Ipv4Addr, families: BTreeSet<Family>) -> Self {
        Self {
            local_asn: peer.my_asn,
            peer_asn: peer.peer_asn,
            router_id: peer.router_id.unwrap_or(router_id),
            hold_time: peer.hold_time,
            keepalive_time: peer.keepalive_time,
            passive: false,
            connect_retry_time: peer.connect_time.unwrap_or(DEFAULT_CONNECT_RETRY_TIME),
            families,
            extended_next_hop_ipv4: peer.dual_stack_address_family,
            graceful_restart: peer
                .enable_graceful_restart
                .then_some(LocalGracefulRestart {
                    restart_time: Duration::from_secs(120),
                    // The forwarding is the nodes' (the Service IPs, kube-proxy), which a
                    // speaker restart leaves alone. Without the F bit the peer would drop our
                    // stale routes as soon as the new session opens (RFC 4724 §4.2).
                    forwarding_preserved: true,
                }),
            backoff: Backoff::default(),
        }
    }

    /// Our OPEN.
    pub fn local_open(&self) -> LocalOpen {
        LocalOpen {
            asn: self.local_asn,
            hold_time: u16::try_from(self.hold_time.as_secs()).unwrap_or(u16::MAX),
            router_id: self.router_id,
            capabilities: Capabilities {
                four_octet_as: Some(self.local_asn),
                multiprotocol: self.families.clone(),
                advertises_multiprotocol: true,
                route_refresh: true,
                extended_next_hop_ipv4: self.extended_next_hop_ipv4,
                graceful_restart: self.graceful_restart.map(|gr| GracefulRestart {
                    restart_time: u16::try_from(gr.restart_time.as_secs()).unwrap_or(4095),
                    restarting: false,
                    families: self
                        .families
                        .iter()
                        .map(|family| (*family, gr.forwarding_preserved))
                        .collect(),
                }),
            },
        }
    }
}

/// Hold and keepalive for the session (RFC 4271 §4.2, §10). The hold time is the smaller of
/// ours and the peer's; zero on either side means none (and no keepalives). The keepalive is
/// the configured one (MetalLB: `keepaliveTime`, default hold / 3) while our hold time is the
/// one in force; when the peer's smaller hold time wins, it is at most a third of it, so that
/// three keepalives still fit in a hold time. A keepalive of zero or not below the hold time
/// (which the configuration allows: `keepaliveTime` ≤ `holdTime`) would let the peer's hold
/// timer expire; it becomes hold / 3.
pub fn negotiate_timers(
    local_hold: Duration,
    local_keepalive: Duration,
    peer_hold_secs: u16,
) -> (Duration, Duration) {
    let peer_hold = Duration::from_secs(u64::from(peer_hold_secs));
    if local_hold.is_zero() || peer_hold.is_zero() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let hold = local_hold.min(peer_hold);
    let keepalive = if local_keepalive.is_zero() || local_keepalive >= hold {
        hold / 3
    } else if hold < local_hold {
        local_keepalive.min(hold / 3)
    } else {
        local_keepalive
    };
    (hold, keepalive)
}

/// Checks a received OPEN against the configuration: peer AS (RFC 4271 §6.2, RFC 6793), hold
/// time, BGP identifier (RFC 6286 §2.2). Returns the NOTIFICATION to send and why, if refused.
pub fn validate_open(
    config: &SessionConfig,
    open: &OpenParams,
) -> Result<(), (Notification, String)> {
    let peer_as_ok = match config.peer_asn {
        PeerAsn::Fixed(expected) => open.asn == expected,
        PeerAsn::Internal => open.asn == config.local_asn,
        PeerAsn::External => open.asn != config.local_asn,
    };
    let expected = match config.peer_asn {
        PeerAsn::Fixed(asn) => asn.to_string(),
        PeerAsn::Internal => format!("{} (iBGP)", config.local_asn),
        PeerAsn::External => format!("anything but {} (eBGP)", config.local_asn),
    };
    // RFC 6793 §4.1: a 4-octet speaker whose AS fits in two octets puts it in the AS field;
    // one that does not puts AS_TRANS there.
    let as_field_consistent = match open.capabilities.four_octet_as {
        Some(asn) => match u16::try_from(asn) {
            Ok(two_octet) => open.as_field == two_octet,
            Err(_) => open.as_field == AS_TRANS,
        },
        None => true,
    };
    if !peer_as_ok || !as_field_consistent {
        return Err((
            Notification::bad_peer_as(open.as_field),
            format!(
                "peer AS {} (AS field {}), expected {expected}",
                open.asn, open.as_field
            ),
        ));
    }
    // RFC 4271 §6.2: 1 and 2 s MUST be refused (the decoder already does; an OpenParams
    // built elsewhere is checked here too).
    if open.hold_time == 1 || open.hold_time == 2 {
        return Err((
            Notification::new(
                error_code::OPEN,
                open_subcode::UNACCEPTABLE_HOLD_TIME,
                open.hold_time.to_be_bytes(),
            ),
            format!("hold time {} s", open.hold_time),
        ));
    }
    // RFC 6286 §2.2: within one AS the identifiers must differ.
    if open.asn == config.local_asn && open.router_id == config.router_id {
        return Err((
            Notification::new(
                error_code::OPEN,
                open_subcode::BAD_BGP_IDENTIFIER,
                open.router_id.octets(),
            ),
            format!("peer BGP identifier {} is ours", open.router_id),
        ));
    }
    Ok(())
}

/// RFC 4271 §6.8: of two connections to the same peer, the one opened by the speaker with the
/// higher BGP identifier survives. RFC 6286 §2.3: with equal identifiers (possible between
/// ASes), the speaker with the higher AS number wins. Returns the direction of the connection
/// to keep; the other gets [`Event::OpenCollisionDump`].
pub fn resolve_collision(
    (local_id, local_asn): (Ipv4Addr, u32),
    (remote_id, remote_asn): (Ipv4Addr, u32),
) -> Direction {
    let local_wins = match local_id.cmp(&remote_id) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => local_asn > remote_asn,
    };
    if local_wins {
        Direction::Outgoing
    } else {
        Direction::Incoming
    }
}

/// Whether a connection in `state` takes part in collision detection when an OPEN arrives on
/// another connection (RFC 4271 §6.8: OpenConfirm always, OpenSent when the peer's identifier
/// is known by other means; not Established, as CollisionDetectEstablishedState is off).
pub fn collision_possible(state: State) -> bool {
    matches!(state, State::OpenSent | State::OpenConfirm)
}

/// One peer's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    config: SessionConfig,
    state: State,
    /// Consecutive failures since the last stable session (RFC 4271 ConnectRetryCounter).
    failures: u32,
    /// Stopped by ManualStop: no automatic restart.
    stopped: bool,
    /// Taken down by BFD: no automatic restart until BFD is Up again.
    held_by_bfd: bool,
    /// A session has been Established since this speaker started (RFC 4724's R bit is set
    /// until then).
    ever_established: bool,
    /// From the peer's OPEN, kept until the session ends.
    negotiated: Option<Negotiated>,
    established_at: Option<Instant>,
    last_error: Option<DownReason>,
    graceful_restart: GracefulRestartState,
}

/// The pure step: `(state, event, now) → (new state, actions)`.
pub fn step(mut session: Session, event: Event, now: Instant) -> (Session, Vec<Action>) {
    let actions = session.handle(event, now);
    (session, actions)
}

impl Session {
    /// A session in Idle, not started.
    pub fn new(config: SessionConfig) -> Self {
        let graceful_restart = GracefulRestartState {
            local: config.graceful_restart,
            ..GracefulRestartState::default()
        };
        Self {
            config,
            state: State::Idle,
            failures: 0,
            stopped: true,
            held_by_bfd: false,
            ever_established: false,
            negotiated: None,
            established_at: None,
            last_error: None,
            graceful_restart,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// The reason of the last failure, for the status ("hold timer expired").
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn graceful_restart(&self) -> &GracefulRestartState {
        &self.graceful_restart
    }

    /// One event. Every state ends in a catch-all: an unexpected message is an FSM error.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match (self.state, event) {
            // ManualStop everywhere but Idle: Cease, close, no automatic restart.
            (State::Idle, Event::ManualStop) => {
                self.stopped = true;
                actions.push(Action::StopTimer(Timer::IdleHold));
            }
            (_, Event::ManualStop) => self.manual_stop(now, &mut actions),
            (State::Idle, Event::GracefulStop) => {
                self.stopped = true;
                actions.push(Action::StopTimer(Timer::IdleHold));
            }
            (State::Established, Event::GracefulStop) if self.graceful_restart_negotiated() => {
                self.stopped = true;
                self.go_idle(DownReason::Stopped, now, &mut actions);
            }
            (_, Event::GracefulStop) => self.manual_stop(now, &mut actions),

            (State::Idle, Event::ManualStart) => {
                self.stopped = false;
                self.failures = 0;
                self.start(&mut actions);
            }
            (State::Idle, Event::TimerExpired(Timer::IdleHold))
                if !self.stopped && !self.held_by_bfd =>
            {
                self.start(&mut actions);
            }
            (State::Idle, Event::BfdDown) => {
                self.held_by_bfd = true;
                actions.push(Action::StopTimer(Timer::IdleHold));
            }
            (_, Event::BfdDown) => {
                self.held_by_bfd = true;
                if self.connected() {
                    actions.push(Action::SendNotification(Notification::cease(
                        cease_subcode::BFD_DOWN,
                    )));
                }
                self.go_idle(DownReason::BfdDown, now, &mut actions);
            }
            (State::Idle, Event::BfdUp) if self.held_by_bfd => {
                self.held_by_bfd = false;
                if !self.stopped {
                    // The path is back: no reason to wait out a back-off.
                    actions.push(Action::StopTimer(Timer::IdleHold));
                    self.start(&mut actions);
                }
            }
            (_, Event::BfdUp) => {}
            // Idle refuses connections (RFC 4271 §8.2.2).
            (State::Idle, Event::TcpConnectionConfirmed(_)) => {
                actions.push(Action::CloseConnection);
            }
            (State::Idle, _) => {}

            (_, Event::ManualStart) => {}

            (State::Connect | State::Active, Event::TcpConnectionConfirmed(_)) => {
                actions.push(Action::StopTimer(Timer::ConnectRetry));
                actions.push(Action::SendOpen(self.local_open()));
                actions.push(Action::StartTimer(Timer::Hold, OPEN_HOLD_TIME));
                self.state = State::OpenSent;
            }
            (State::Connect, Event::TimerExpired(Timer::ConnectRetry)) => {
                // The attempt hangs: drop it and try again, saying so in the status (without
                // it a session that never connects would show no reason at all).
                self.last_error = Some(DownReason::ConnectTimedOut(self.config.connect_retry_time));
                actions.push(Action::CloseConnection);
                self.connect(&mut actions);
            }
            (State::Active, Event::TimerExpired(Timer::ConnectRetry)) if !self.config.passive => {
                self.connect(&mut actions);
            }
            (State::Connect | State::Active, Event::TcpConnectionFails) => {
                self.go_idle(DownReason::ConnectFailed, now, &mut actions);
            }
            (State::Connect | State::Active, Event::TimerExpired(_)) => {}
            (State::Connect | State::Active, Event::AdvertisementsChanged) => {}

            (State::OpenSent, Event::BgpOpen(open)) => self.open_received(&open, &mut actions, now),
            (State::OpenConfirm, Event::KeepAliveMsg) => {
                self.state = State::Established;
                self.ever_established = true;
                self.established_at = Some(now);
                self.restart_hold_timer(&mut actions);
                if let Some(negotiated) = &self.negotiated {
                    actions.push(Action::SessionUp(negotiated.clone()));
                    actions.push(Action::SendTable(negotiated.families.clone()));
                }
            }

            (State::OpenConfirm | State::Established, Event::TimerExpired(Timer::Keepalive)) => {
                actions.push(Action::SendKeepalive);
                if let Some(keepalive) = self.keepalive_time() {
                    actions.push(Action::StartTimer(Timer::Keepalive, keepalive));
                }
            }
            (State::Established, Event::KeepAliveMsg) => self.restart_hold_timer(&mut actions),
            (State::Established, Event::UpdateMsg(_)) => self.restart_hold_timer(&mut actions),
            (State::Established, Event::RouteRefreshMsg(family)) => {
                self.restart_hold_timer(&mut actions);
                // RFC 2918 §4: a family that was not negotiated is ignored.
                if let (Some(family), Some(negotiated)) = (family, &self.negotiated)
                    && negotiated.families.contains(&family)
                    && negotiated.route_refresh
                {
                    actions.push(Action::SendTable(BTreeSet::from([family])));
                }
            }
            (State::Established, Event::AdvertisementsChanged) => {
                actions.push(Action::SendUpdate);
            }
            (State::OpenSent | State::OpenConfirm, Event::AdvertisementsChanged) => {}

            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::TimerExpired(Timer::Hold),
            ) => {
                actions.push(Action::SendNotification(Notification::hold_timer_expired()));
                self.go_idle(DownReason::HoldTimerExpired, now, &mut actions);
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Event::TimerExpired(_)) => {
            }
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::TcpConnectionFails,
            ) => {
                self.go_idle(DownReason::ConnectionClosed, now, &mut actions);
            }
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::NotifMsg(notification),
            ) => {
                self.go_idle(
                    DownReason::NotificationReceived(notification),
                    now,
                    &mut actions,
                );
            }
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::OpenCollisionDump,
            ) => {
                actions.push(Action::SendNotification(Notification::cease(
                    cease_subcode::CONNECTION_COLLISION_RESOLUTION,
                )));
                // The other connection carries the session on: no back-off, no restart.
                self.stopped = true;
                self.go_idle(DownReason::CollisionResolved, now, &mut actions);
            }
            // A second connection while one is being opened: the driver runs a second
            // Session for it and resolves the collision; this one is unaffected.
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::TcpConnectionConfirmed(_),
            ) => {}
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::DecodeError(error),
            ) => match error.notification() {
                Some(notification) => {
                    let notification = notification.clone();
                    actions.push(Action::SendNotification(notification.clone()));
                    self.go_idle(
                        DownReason::NotificationSent {
                            notification,
                            detail: error.to_string(),
                        },
                        now,
                        &mut actions,
                    );
                }
                None if self.state == State::Established => {
                    self.restart_hold_timer(&mut actions);
                    actions.push(Action::UpdateErrorTolerated(error.to_string()));
                }
                // An UPDATE before Established is unexpected, however well-formed.
                None => self.unexpected_message(now, &mut actions),
            },

            // Messages that the state does not expect (RFC 4271 §8.2.2, RFC 6608).
            (
                State::Connect | State::Active,
                Event::BgpOpen(_)
                | Event::KeepAliveMsg
                | Event::UpdateMsg(_)
                | Event::RouteRefreshMsg(_)
                | Event::NotifMsg(_)
                | Event::DecodeError(_)
                | Event::OpenCollisionDump,
            )
            | (
                State::OpenSent,
                Event::KeepAliveMsg | Event::UpdateMsg(_) | Event::RouteRefreshMsg(_),
            )
            | (
                State::OpenConfirm,
                Event::BgpOpen(_) | Event::UpdateMsg(_) | Event::RouteRefreshMsg(_),
            )
            | (State::Established, Event::BgpOpen(_)) => self.unexpected_message(now, &mut actions),
        }
        actions
    }

    fn connected(&self) -> bool {
        matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }

    /// Idle → Connect (or Active when passive).
    fn start(&mut self, actions: &mut Vec<Action>) {
        if self.config.passive {
            self.state = State::Active;
        } else {
            self.connect(actions);
        }
    }

    fn connect(&mut self, actions: &mut Vec<Action>) {
        actions.push(Action::StartTimer(
            Timer::ConnectRetry,
            self.config.connect_retry_time,
        ));
        actions.push(Action::Connect);
        self.state = State::Connect;
    }

    fn keepalive_time(&self) -> Option<Duration> {
        self.negotiated
            .as_ref()
            .map(|n| n.keepalive_time)
            .filter(|k| !k.is_zero())
    }

    fn restart_hold_timer(&self, actions: &mut Vec<Action>) {
        if let Some(hold) = self
            .negotiated
            .as_ref()
            .map(|n| n.hold_time)
            .filter(|h| !h.is_zero())
        {
            actions.push(Action::StartTimer(Timer::Hold, hold));
        }
    }

    fn open_received(&mut self, open: &OpenParams, actions: &mut Vec<Action>, now: Instant) {
        if let Err((notification, detail)) = validate_open(&self.config, open) {
            actions.push(Action::SendNotification(notification.clone()));
            self.go_idle(
                DownReason::NotificationSent {
                    notification,
                    detail,
                },
                now,
                actions,
            );
            return;
        }
        let (hold_time, keepalive_time) = negotiate_timers(
            self.config.hold_time,
            self.config.keepalive_time,
            open.hold_time,
        );
        let peer_caps = &open.capabilities;
        let families: BTreeSet<Family> = self
            .config
            .families
            .intersection(&peer_caps.families())
            .copied()
            .collect();
        self.graceful_restart.peer = peer_caps.graceful_restart.clone();
        self.graceful_restart.peer_keeps_routes_until = None;
        let negotiated = Negotiated {
            peer_asn: open.asn,
            peer_router_id: open.router_id,
            hold_time,
            keepalive_time,
            four_octet_as: peer_caps.four_octet_as.is_some(),
            internal: open.asn == self.config.local_asn,
            families,
            extended_next_hop_ipv4: self.config.extended_next_hop_ipv4
                && peer_caps.extended_next_hop_ipv4,
            route_refresh: peer_caps.route_refresh,
            peer_graceful_restart: peer_caps.graceful_restart.clone(),
        };
        actions.push(Action::SendKeepalive);
        if hold_time.is_zero() {
            actions.push(Action::StopTimer(Timer::Hold));
        } else {
            actions.push(Action::StartTimer(Timer::Hold, hold_time));
            actions.push(Action::StartTimer(Timer::Keepalive, keepalive_time));
        }
        self.negotiated = Some(negotiated);
        self.state = State::OpenConfirm;
    }

    fn unexpected_message(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let subcode = match self.state {
            State::OpenSent => fsm_subcode::UNEXPECTED_IN_OPEN_SENT,
            State::OpenConfirm => fsm_subcode::UNEXPECTED_IN_OPEN_CONFIRM,
            State::Established => fsm_subcode::UNEXPECTED_IN_ESTABLISHED,
            State::Idle | State::Connect | State::Active => fsm_subcode::UNSPECIFIED,
        };
        let notification = Notification::fsm_error(subcode);
        if self.connected() {
            actions.push(Action::SendNotification(notification.clone()));
        }
        self.go_idle(
            DownReason::NotificationSent {
                notification,
                detail: format!("unexpected message in {}", self.state),
            },
            now,
            actions,
        );
    }

    /// Back to Idle: stop the timers, close, report, and schedule the automatic restart
    /// after the back-off unless stopped.
    /// Our OPEN. With graceful restart, the R bit (RFC 4724 §3, "has restarted") is set until
    /// the first session since the speaker started is Established: a speaker cannot tell its
    /// first start from a restart, and the bit only tells the peer not to wait for our
    /// End-of-RIB before sending its own routes, which costs nothing (we install none).
    pub fn local_open(&self) -> LocalOpen {
        let mut open = self.config.local_open();
        if let Some(gr) = &mut open.capabilities.graceful_restart {
            gr.restarting = !self.ever_established;
        }
        open
    }

    /// ManualStop anywhere but Idle: Cease / Administrative Shutdown, close, no restart.
    fn manual_stop(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.stopped = true;
        if self.connected() {
            actions.push(Action::SendNotification(Notification::cease(
                cease_subcode::ADMINISTRATIVE_SHUTDOWN,
            )));
        }
        self.go_idle(DownReason::Stopped, now, actions);
    }

    /// Both OPENs carried the graceful restart capability (RFC 4724 §3).
    fn graceful_restart_negotiated(&self) -> bool {
        self.graceful_restart.local.is_some()
            && self
                .negotiated
                .as_ref()
                .is_some_and(|n| n.peer_graceful_restart.is_some())
    }

    fn go_idle(&mut self, reason: DownReason, now: Instant, actions: &mut Vec<Action>) {
        let was_established = self.state == State::Established;
        for timer in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
            actions.push(Action::StopTimer(timer));
        }
        if self.state != State::Idle {
            actions.push(Action::CloseConnection);
        }
        // A session that stayed up long enough starts the back-off over.
        if let Some(since) = self.established_at.take()
            && now.saturating_duration_since(since) >= self.config.backoff.stable_after
        {
            self.failures = 0;
        }
        if was_established && let Some(gr) = &self.graceful_restart.peer {
            self.graceful_restart.peer_keeps_routes_until =
                now.checked_add(Duration::from_secs(u64::from(gr.restart_time)));
        }
        self.state = State::Idle;
        self.negotiated = None;
        actions.push(Action::SessionDown {
            reason: reason.clone(),
            was_established,
        });
        if reason != DownReason::Stopped && reason != DownReason::CollisionResolved {
            self.last_error = Some(reason);
        }
        if !self.stopped && !self.held_by_bfd {
            self.failures = self.failures.saturating_add(1);
            actions.push(Action::StartTimer(
                Timer::IdleHold,
                self.config.backoff.delay(self.failures),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::{UpdateErrorHandling, header_subcode};

    const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
    const PEER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn config() -> SessionConfig {
        SessionConfig {
            local_asn: 64512,
            peer_asn: PeerAsn::Fixed(64500),
            router_id: LOCAL_ID,
            hold_time: Duration::from_secs(90),
            keepalive_time: Duration::from_secs(30),
            passive: false,
            connect_retry_time: Duration::from_secs(10),
            families: BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]),
            extended_next_hop_ipv4: false,
            graceful_restart: None,
            backoff: Backoff::default(),
        }
    }

    fn peer_open(asn: u32, hold_time: u16) -> OpenParams {
        OpenParams {
            as_field: u16::try_from(asn).unwrap_or(AS_TRANS),
            asn,
            hold_time,
            router_id: PEER_ID,
            capabilities: Capabilities {
                four_octet_as: Some(asn),
                multiprotocol: BTreeSet::from([Family::Ipv4Unicast]),
                advertises_multiprotocol: true,
                route_refresh: true,
                ..Capabilities::default()
            },
        }
    }

    /// A session fed events one by one, with a clock the test moves.
    struct Replay {
        session: Session,
        now: Instant,
    }

    impl Replay {
        fn new(config: SessionConfig) -> Self {
            Self {
                session: Session::new(config),
                now: Instant::now(),
            }
        }

        fn at(&mut self, after: Duration) -> &mut Self {
            self.now += after;
            self
        }

        fn feed(&mut self, event: Event) -> Vec<Action> {
            self.session.handle(event, self.now)
        }

        /// Start → connected → OPENs → KEEPALIVE.
        fn establish(&mut self, open: OpenParams) -> Vec<Action> {
            self.feed(Event::ManualStart);
            self.feed(Event::TcpConnectionConfirmed(Direction::Outgoing));
            self.feed(Event::BgpOpen(open));
            self.feed(Event::KeepAliveMsg)
        }
    }

    fn down_reason(actions: &[Action]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            Action::SessionDown { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
    }

    fn sent(actions: &[Action]) -> Option<&Notification> {
        actions.iter().find_map(|a| match a {
            Action::SendNotification(n) => Some(n),
            _ => None,
        })
    }

    fn idle_hold(actions: &[Action]) -> Option<Duration> {
        actions.iter().find_map(|a| match a {
            Action::StartTimer(Timer::IdleHold, d) => Some(*d),
            _ => None,
        })
    }

    #[test]
    fn a_whole_session_comes_up() {
        let mut replay = Replay::new(config());
        let start = replay.feed(Event::ManualStart);
        assert_eq!(
            start,
            vec![
                Action::StartTimer(Timer::ConnectRetry, Duration::from_secs(10)),
                Action::Connect
            ]
        );
        assert_eq!(replay.session.state(), State::Connect);
        let connected = replay.feed(Event::TcpConnectionConfirmed(Direction::Outgoing));
        assert_eq!(
            connected,
            vec![
                Action::StopTimer(Timer::ConnectRetry),
                Action::SendOpen(config().local_open()),
                Action::StartTimer(Timer::Hold, OPEN_HOLD_TIME),
            ]
        );
        let opened = replay.feed(Event::BgpOpen(peer_open(64500, 180)));
        assert_eq!(
            opened,
            vec![
                Action::SendKeepalive,
                Action::StartTimer(Timer::Hold, Duration::from_secs(90)),
                Action::StartTimer(Timer::Keepalive, Duration::from_secs(30)),
            ]
        );
        assert_eq!(replay.session.state(), State::OpenConfirm);
        let up = replay.feed(Event::KeepAliveMsg);
        assert_eq!(replay.session.state(), State::Established);
        let negotiated = replay.session.negotiated().unwrap().clone();
        assert_eq!(negotiated.families, BTreeSet::from([Family::Ipv4Unicast]));
        assert!(negotiated.four_octet_as && !negotiated.internal);
        assert_eq!(
            up,
            vec![
                Action::StartTimer(Timer::Hold, Duration::from_secs(90)),
                Action::SessionUp(negotiated),
                Action::SendTable(BTreeSet::from([Family::Ipv4Unicast])),
            ]
        );
        // Established: keepalives go out, received messages push the hold timer back,
        // changes are sent, route refresh resends the table.
        assert_eq!(
            replay.feed(Event::TimerExpired(Timer::Keepalive)),
            vec![
                Action::SendKeepalive,
                Action::StartTimer(Timer::Keepalive, Duration::from_secs(30))
            ]
        );
        assert_eq!(
            replay.feed(Event::UpdateMsg(UpdateSummary::default())),
            vec![Action::StartTimer(Timer::Hold, Duration::from_secs(90))]
        );
        assert_eq!(
            replay.feed(Event::AdvertisementsChanged),
            vec![Action::SendUpdate]
        );
        let refresh = replay.feed(Event::RouteRefreshMsg(Some(Family::Ipv4Unicast)));
        assert!(refresh.contains(&Action::SendTable(BTreeSet::from([Family::Ipv4Unicast]))));
        let not_negotiated = replay.feed(Event::RouteRefreshMsg(Some(Family::Ipv6Unicast)));
        assert!(
            !not_negotiated
                .iter()
                .any(|a| matches!(a, Action::SendTable(_)))
        );
        // A graceful stop.
        let stop = replay.feed(Event::ManualStop);
        assert_eq!(
            sent(&stop),
            Some(&Notification::cease(cease_subcode::ADMINISTRATIVE_SHUTDOWN))
        );
        assert!(stop.contains(&Action::CloseConnection));
        assert_eq!(idle_hold(&stop), None, "a stopped session does not restart");
        assert_eq!(replay.session.state(), State::Idle);
        assert_eq!(replay.session.last_error(), None);
    }

    /// BFD Down tears an Established session down at once (Cease / BFD Down) and holds it in
    /// Idle: the back-off does not restart it; BFD Up does, at once.
    #[test]
    fn bfd_down_holds_the_session_until_bfd_up() {
        let mut replay = Replay::new(config());
        replay.establish(peer_open(64500, 90));
        let down = replay.feed(Event::BfdDown);
        assert_eq!(
            sent(&down),
            Some(&Notification::cease(cease_subcode::BFD_DOWN))
        );
        assert!(down.contains(&Action::CloseConnection));
        assert_eq!(down_reason(&down).as_deref(), Some("BFD session down"));
        assert_eq!(idle_hold(&down), None, "held: no automatic restart");
        assert_eq!(replay.session.state(), State::Idle);
        assert_eq!(
            replay
                .session
                .last_error()
                .map(ToString::to_string)
                .as_deref(),
            Some("BFD session down")
        );
        // A stale back-off expiry, a second Down: still held.
        assert!(
            replay
                .at(Duration::from_secs(60))
                .feed(Event::TimerExpired(Timer::IdleHold))
                .is_empty()
        );
        assert_eq!(
            replay.feed(Event::BfdDown),
            vec![Action::StopTimer(Timer::IdleHold)]
        );
        let up = replay.feed(Event::BfdUp);
        assert!(up.contains(&Action::Connect), "{up:?}");
        assert_eq!(replay.session.state(), State::Connect);
        // BFD Up while not held changes nothing.
        assert!(replay.feed(Event::BfdUp).is_empty());
    }

    /// BFD Down while the session is still connecting: no NOTIFICATION (nothing to send it
    /// on), held all the same; a stopped session stays stopped when BFD comes Up.
    #[test]
    fn bfd_down_before_established_and_after_stop() {
        let mut replay = Replay::new(config());
        replay.feed(Event::ManualStart);
        let down = replay.feed(Event::BfdDown);
        assert_eq!(sent(&down), None);
        assert_eq!(idle_hold(&down), None);
        assert_eq!(replay.session.state(), State::Idle);
        replay.feed(Event::ManualStop);
        assert!(replay.feed(Event::BfdUp).is_empty());
        assert_eq!(replay.session.state(), State::Idle);
    }

    #[test]
    fn hold_timer_expiry_resets_the_session() {
        let mut replay = Replay::new(config());
        replay.establish(peer_open(64500, 90));
        let expired = replay
            .at(Duration::from_secs(90))
            .feed(Event::TimerExpired(Timer::Hold));
        assert_eq!(sent(&expired), Some(&Notification::hold_timer_expired()));
        assert_eq!(down_reason(&expired).as_deref(), Some("hold timer expired"));
        assert!(expired.contains(&Action::SessionDown {
            reason: DownReason::HoldTimerExpired,
            was_established: true
        }));
        assert_eq!(idle_hold(&expired), Some(Duration::from_secs(1)));
        assert_eq!(replay.session.state(), State::Idle);
        assert_eq!(
            replay
                .session
                .last_error()
                .map(ToString::to_string)
                .as_deref(),
            Some("hold timer expired")
        );
        // The automatic restart connects again.
        let restart = replay
            .at(Duration::from_secs(1))
            .feed(Event::TimerExpired(Timer::IdleHold));
        assert!(restart.contains(&Action::Connect));
        assert_eq!(replay.session.state(), State::Connect);
    }

    #[test]
    fn a_bad_peer_as_is_refused_with_a_notification() {
        let mut replay = Replay::new(config());
        replay.feed(Event::ManualStart);
        replay.feed(Event::TcpConnectionConfirmed(Direction::Outgoing));
        let refused = replay.feed(Event::BgpOpen(peer_open(65010, 90)));
        assert_eq!(sent(&refused), Some(&Notification::bad_peer_as(65010)));
        assert_eq!(
            down_reason(&refused).as_deref(),
            Some(
                "NOTIFICATION OPEN Bad Peer AS sent: peer AS 65010 (AS field 65010), expected 64500"
            )
        );
        assert!(refused.contains(&Action::SessionDown {
            reason: DownReason::NotificationSent {
                notification: Notification::bad_peer_as(65010),
                detail: "peer AS 65010 (AS field 65010), expected 64500".to_string()
            },
            was_established: false
        }));
        assert_eq!(replay.session.state(), State::Idle);
    }

    #[test]
    fn open_validation_table() {
        let fixed = config();
        let ibgp = SessionConfig {
            peer_asn: PeerAsn::Internal,
            ..config()
        };
        let ebgp = SessionConfig {
            peer_asn: PeerAsn::External,
            ..config()
        };
        let four_octet = SessionConfig {
            peer_asn: PeerAsn::Fixed(4_200_000_001),
            ..config()
        };
        let mut same_id = peer_open(64512, 90);
        same_id.router_id = LOCAL_ID;
        let mut inconsistent_as_field = peer_open(4_200_000_001, 90);
        inconsistent_as_field.as_field = 1;
        let mut old_speaker = peer_open(64500, 90);
        old_speaker.capabilities.four_octet_as = None;
        // (name, config, OPEN, expected NOTIFICATION subcode or None if accepted)
        type Case<'a> = (&'static str, &'a SessionConfig, OpenParams, Option<u8>);
        let cases: Vec<Case> = vec![
            ("fixed AS matches", &fixed, peer_open(64500, 90), None),
            ("fixed AS differs", &fixed, peer_open(64501, 90), Some(2)),
            ("iBGP, same AS", &ibgp, peer_open(64512, 90), None),
            ("iBGP, other AS", &ibgp, peer_open(64500, 90), Some(2)),
            ("eBGP, other AS", &ebgp, peer_open(64500, 90), None),
            ("eBGP, same AS", &ebgp, peer_open(64512, 90), Some(2)),
            (
                "4-octet AS",
                &four_octet,
                peer_open(4_200_000_001, 90),
                None,
            ),
            (
                "4-octet AS, bad AS field",
                &four_octet,
                inconsistent_as_field,
                Some(2),
            ),
            ("2-octet-only speaker", &fixed, old_speaker, None),
            ("iBGP, our own identifier", &ibgp, same_id, Some(3)),
            ("hold time 2 s", &fixed, peer_open(64500, 2), Some(6)),
            ("hold time 3 s", &fixed, peer_open(64500, 3), None),
        ];
        for (name, config, open, expected) in cases {
            let got = validate_open(config, &open).err().map(|(n, _)| {
                assert_eq!(n.code, error_code::OPEN, "{name}");
                n.subcode
            });
            assert_eq!(got, expected, "{name}");
        }
        // A 4-octet AS expected from a 2-octet-only speaker: it can only say AS_TRANS.
        let mut as_trans = peer_open(u32::from(AS_TRANS), 90);
        as_trans.capabilities.four_octet_as = None;
        assert!(validate_open(&four_octet, &as_trans).is_err());
    }

    #[test]
    fn hold_time_negotiation_table() {
        let s = Duration::from_secs;
        // (local hold, local keepalive, peer hold) → (hold, keepalive)
        let cases = [
            (s(90), s(30), 180, (s(90), s(30))),
            (s(90), s(30), 90, (s(90), s(30))),
            (s(90), s(30), 30, (s(30), s(10))),
            (s(90), s(10), 30, (s(30), s(10))),
            (s(90), s(30), 3, (s(3), s(1))),
            (s(90), s(30), 0, (s(0), s(0))),
            (s(0), s(0), 90, (s(0), s(0))),
            (s(240), s(80), 180, (s(180), s(60))),
            // A configured keepalive not below the negotiated hold cannot stand.
            (s(9), s(9), 9, (s(9), s(3))),
        ];
        for (local_hold, local_keepalive, peer_hold, expected) in cases {
            assert_eq!(
                negotiate_timers(local_hold, local_keepalive, peer_hold),
                expected,
                "{local_hold:?}/{local_keepalive:?} vs {peer_hold}"
            );
        }
    }

    #[test]
    fn hold_time_zero_means_no_timers() {
        let mut replay = Replay::new(config());
        replay.feed(Event::ManualStart);
        replay.feed(Event::TcpConnectionConfirmed(Direction::Incoming));
        let opened = replay.feed(Event::BgpOpen(peer_open(64500, 0)));
        assert_eq!(
            opened,
            vec![Action::SendKeepalive, Action::StopTimer(Timer::Hold)]
        );
        let up = replay.feed(Event::KeepAliveMsg);
        assert!(!up.iter().any(|a| matches!(a, Action::StartTimer(..))));
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets_after_a_stable_session() {
        let mut replay = Replay::new(config());
        replay.feed(Event::ManualStart);
        let mut delays = Vec::new();
        for _ in 0..9 {
            let failed = replay.feed(Event::TcpConnectionFails);
            let delay = idle_hold(&failed).unwrap();
            delays.push(delay.as_secs());
            replay.at(delay).feed(Event::TimerExpired(Timer::IdleHold));
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            replay
                .session
                .last_error()
                .map(ToString::to_string)
                .as_deref(),
            Some("TCP connection failed")
        );
        // A session that flaps at once keeps the back-off...
        replay.feed(Event::TcpConnectionConfirmed(Direction::Outgoing));
        replay.feed(Event::BgpOpen(peer_open(64500, 90)));
        replay.feed(Event::KeepAliveMsg);
        let flap = replay
            .at(Duration::from_secs(5))
            .feed(Event::TcpConnectionFails);
        assert_eq!(idle_hold(&flap), Some(Duration::from_secs(60)));
        // ...one that stayed up a minute starts over.
        replay
            .at(Duration::from_secs(60))
            .feed(Event::TimerExpired(Timer::IdleHold));
        replay.feed(Event::TcpConnectionConfirmed(Direction::Outgoing));
        replay.feed(Event::BgpOpen(peer_open(64500, 90)));
        replay.feed(Event::KeepAliveMsg);
        let stable = replay
            .at(Duration::from_secs(61))
            .feed(Event::TcpConnectionFails);
        assert_eq!(idle_hold(&stable), Some(Duration::from_secs(1)));
    }

    #[test]
    fn backoff_delay_table() {
        let backoff = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        };
        let millis: Vec<u128> = [0, 1, 2, 3, 6, 7, 8, 40, u32::MAX]
            .iter()
            .map(|n| backoff.delay(*n).as_millis())
            .collect();
        assert_eq!(
            millis,
            vec![500, 500, 1000, 2000, 16000, 30000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn a_hanging_connect_is_retried() {
        let mut replay = Replay::new(config());
        replay.feed(Event::ManualStart);
        let retry = replay
            .at(Duration::from_secs(10))
            .feed(Event::TimerExpired(Timer::ConnectRetry));
        assert_eq!(
            retry,
            vec![
                Action::CloseConnection,
                Action::StartTimer(Timer::ConnectRetry, Duration::from_secs(10)),
                Action::Connect
            ]
        );
        // The status says why nothing comes up (an MD5 mismatch looks exactly like this).
        assert_eq!(
            replay.session.last_error(),
            Some(&DownReason::ConnectTimedOut(Duration::from_secs(10)))
        );
    }

    #[test]
    fn passive_mode_waits_for_the_peer() {
        let mut replay = Replay::new(SessionConfig {
            passive: true,
            ..config()
        });
        assert_eq!(replay.feed(Event::ManualStart), vec![]);
        assert_eq!(replay.session.state(), State::Active);
        assert_eq!(
            replay.feed(Event::TimerExpired(Timer::ConnectRetry)),
            vec![]
        );
        let accepted = replay.feed(Event::TcpConnectionConfirmed(Direction::Incoming));
        assert!(accepted.contains(&Action::SendOpen(config().local_open())));
        assert_eq!(replay.session.state(), State::OpenSent);
        // After a failure it goes back to waiting, never connecting.
        let failed = replay.feed(Event::TcpConnectionFails);
        let delay = idle_hold(&failed).unwrap();
        let restart = replay.at(delay).feed(Event::TimerExpired(Timer::IdleHold));
        assert!(!restart.contains(&Action::Connect));
        assert_eq!(replay.session.state(), State::Active);
    }

    #[test]
    fn collision_resolution_table() {
        let low = Ipv4Addr::new(10, 0, 0, 1);
        let high = Ipv4Addr::new(10, 0, 0, 2);
        let cases = [
            ((high, 1), (low, 2), Direction::Outgoing),
            ((low, 2), (high, 1), Direction::Incoming),
            // Compared as unsigned integers, not as text.
            (
                (Ipv4Addr::new(192, 0, 2, 100), 1),
                (Ipv4Addr::new(192, 0, 2, 9), 1),
                Direction::Outgoing,
            ),
            // RFC 6286: equal identifiers, the higher AS wins.
            ((low, 65002), (low, 65001), Direction::Outgoing),
            ((low, 65001), (low, 65002), Direction::Incoming),
        ];
        for (local, remote, keep) in cases {
            assert_eq!(
                resolve_collision(local, remote),
                keep,
                "{local:?} vs {remote:?}"
            );
        }
        assert!(collision_possible(State::OpenConfirm) && collision_possible(State::OpenSent));
        assert!(!collision_possible(State::Established) && !collision_possible(State::Connect));
    }

    /// Two connections to the same peer: ours (outgoing) reached OpenConfirm when the peer's
    /// connection brings its OPEN; our identifier is higher, so the peer's connection goes.
    #[test]
    fn a_collision_keeps_one_connection() {
        let mut outgoing = Replay::new(config());
        outgoing.feed(Event::ManualStart);
        outgoing.feed(Event::TcpConnectionConfirmed(Direction::Outgoing));
        outgoing.feed(Event::BgpOpen(peer_open(64500, 90)));
        assert_eq!(outgoing.session.state(), State::OpenConfirm);
        // The driver's second Session, for the incoming connection.
        let mut incoming = Replay::new(config());
        incoming.feed(Event::ManualStart);
        incoming.feed(Event::TcpConnectionConfirmed(Direction::Incoming));
        let open = peer_open(64500, 90);
        assert!(collision_possible(outgoing.session.state()));
        let winner = resolve_collision((LOCAL_ID, 64512), (open.router_id, open.asn));
        assert_eq!(winner, Direction::Outgoing);
        let dumped = incoming.feed(Event::OpenCollisionDump);
        assert_eq!(
            sent(&dumped),
            Some(&Notification::cease(
                cease_subcode::CONNECTION_COLLISION_RESOLUTION
            ))
        );
        assert!(dumped.contains(&Action::CloseConnection));
        assert_eq!(idle_hold(&dumped), None, "the loser does not restart");
        assert_eq!(incoming.session.last_error(), None);
        // The winner goes on.
        outgoing.feed(Event::KeepAliveMsg);
        assert_eq!(outgoing.session.state(), State::Established);
    }

    #[test]
    fn unexpected_messages_are_fsm_errors_with_the_state_subcode() {
        let cases = [
            (State::OpenSent, Event::KeepAliveMsg, 1),
            (
                State::OpenSent,
                Event::UpdateMsg(UpdateSummary::default()),
                1,
            ),
            (
                State::OpenConfirm,
                Event::UpdateMsg(UpdateSummary::default()),
                2,
            ),
            (State::OpenConfirm, Event::BgpOpen(peer_open(64500, 90)), 2),
            (State::Established, Event::BgpOpen(peer_open(64500, 90)), 3),
        ];
        for (state, event, subcode) in cases {
            let mut replay = Replay::new(config());
            replay.feed(Event::ManualStart);
            replay.feed(Event::TcpConnectionConfirmed(Direction::Outgoing));
            if state >= State::OpenConfirm {
                replay.feed(Event::BgpOpen(peer_open(64500, 90)));
            }
            if state == State::Established {
                replay.feed(Event::KeepAliveMsg);
            }
            assert_eq!(replay.session.state(), state);
            let actions = replay.feed(event);
            assert_eq!(
                sent(&actions),
                Some(&Notification::fsm_error(subcode)),
                "{state}"
            );
            assert_eq!(replay.session.state(), State::Idle);
        }
    }

    #[test]
    fn decode_errors_reset_or_are_tolerated() {
        let mut replay = Replay::new(config());
        replay.establish(peer_open(64500, 90));
        let tolerated = replay.feed(Event::DecodeError(DecodeError::Update {
            reason: "in origin: unknown ORIGIN value 5".to_string(),
            handling: UpdateErrorHandling::TreatAsWithdraw,
        }));
        assert_eq!(replay.session.state(), State::Established);
        assert!(matches!(
            tolerated.last(),
            Some(Action::UpdateErrorTolerated(_))
        ));
        let notification = Notification::new(
            error_code::MESSAGE_HEADER,
            header_subcode::BAD_MESSAGE_LENGTH,
            vec![0, 10],
        );
        let reset = replay.feed(Event::DecodeError(DecodeError::Header {
            reason: "length 10".to_string(),
            notification: notification.clone(),
        }));
        assert_eq!(sent(&reset), Some(&notification));
        assert_eq!(
            down_reason(&reset).as_deref(),
            Some("NOTIFICATION Message Header Bad Message Length sent: message header: length 10")
        );
        assert_eq!(replay.session.state(), State::Idle);
    }

    #[test]
    fn a_notification_from_the_peer_ends_the_session() {
        let mut replay = Replay::new(config());
        replay.establish(peer_open(64500, 90));
        let down = replay.feed(Event::NotifMsg(Notification::cease(
            cease_subcode::ADMINISTRATIVE_SHUTDOWN,
        )));
        assert_eq!(sent(&down), None, "a NOTIFICATION is not answered");
        assert_eq!(
            down_reason(&down).as_deref(),
            Some("NOTIFICATION Cease Administrative Shutdown received")
        );
    }

    #[test]
    fn stale_timers_are_ignored_and_idle_refuses_connections() {
        let mut session = Session::new(config());
        let now = Instant::now();
        for timer in [
            Timer::ConnectRetry,
            Timer::Hold,
            Timer::Keepalive,
            Timer::IdleHold,
        ] {
            assert_eq!(session.handle(Event::TimerExpired(timer), now), vec![]);
        }
        assert_eq!(
            session.handle(Event::TcpConnectionConfirmed(Direction::Incoming), now),
            vec![Action::CloseConnection]
        );
        let (session, actions) = step(session, Event::ManualStart, now);
        assert_eq!(session.state(), State::Connect);
        assert!(actions.contains(&Action::Connect));
        let (session, actions) = step(session, Event::TimerExpired(Timer::Keepalive), now);
        assert_eq!((session.state(), actions), (State::Connect, vec![]));
    }

    #[test]
    fn graceful_restart_is_recorded() {
        let local = LocalGracefulRestart {
            restart_time: Duration::from_secs(120),
            forwarding_preserved: true,
        };
        let mut replay = Replay::new(SessionConfig {
            graceful_restart: Some(local),
            ..config()
        });
        // The first OPEN since the speaker started has the R bit.
        let gr = replay.session.local_open().capabilities.graceful_restart;
        assert_eq!(
            gr,
            Some(GracefulRestart {
                restart_time: 120,
                restarting: true,
                families: vec![(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, true)],
            })
        );
        let mut open = peer_open(64500, 90);
        let peer_gr = GracefulRestart {
            restart_time: 90,
            restarting: false,
            families: vec![(Family::Ipv4Unicast, true)],
        };
        open.capabilities.graceful_restart = Some(peer_gr.clone());
        replay.establish(open);
        assert_eq!(replay.session.graceful_restart().local, Some(local));
        assert_eq!(replay.session.graceful_restart().peer, Some(peer_gr));
        let down_at = replay.now + Duration::from_secs(5);
        replay
            .at(Duration::from_secs(5))
            .feed(Event::TcpConnectionFails);
        assert_eq!(
            replay.session.graceful_restart().peer_keeps_routes_until,
            Some(down_at + Duration::from_secs(90))
        );
        // A reconnect of the same speaker is not a restart: no R bit.
        let again = replay.session.local_open().capabilities.graceful_restart;
        assert!(again.is_some_and(|gr| !gr.restarting));
    }

    /// A graceful stop (the speaker restarting) closes without a NOTIFICATION only when both
    /// sides advertised graceful restart; otherwise it is a ManualStop's Cease.
    #[test]
    fn graceful_stop_closes_silently_only_with_graceful_restart() {
        let local = LocalGracefulRestart {
            restart_time: Duration::from_secs(120),
            forwarding_preserved: true,
        };
        let with_gr = SessionConfig {
            graceful_restart: Some(local),
            ..config()
        };
        let mut gr_open = peer_open(64500, 90);
        gr_open.capabilities.graceful_restart = Some(GracefulRestart {
            restart_time: 120,
            restarting: false,
            families: vec![(Family::Ipv4Unicast, false)],
        });

        let mut both = Replay::new(with_gr.clone());
        both.establish(gr_open.clone());
        let stop = both.feed(Event::GracefulStop);
        assert_eq!(sent(&stop), None, "no NOTIFICATION: {stop:?}");
        assert!(stop.contains(&Action::CloseConnection));
        assert_eq!(idle_hold(&stop), None, "stopped, no restart");
        assert_eq!(both.session.state(), State::Idle);

        // The peer without the capability, or ours off: Cease.
        for (config, open) in [(with_gr, peer_open(64500, 90)), (config(), gr_open)] {
            let mut replay = Replay::new(config);
            replay.establish(open);
            let stop = replay.feed(Event::GracefulStop);
            assert_eq!(
                sent(&stop),
                Some(&Notification::cease(cease_subcode::ADMINISTRATIVE_SHUTDOWN))
            );
        }
    }

    #[test]
    fn config_from_a_metallb_peer() {
        let peer = Peer {
            name: "router".to_string(),
            my_asn: 4_200_000_001,
            peer_asn: PeerAsn::External,
            local_asn: None,
            target: ferrolb_crds::config::PeerTarget::Address("192.0.2.1".parse().unwrap()),
            source_address: None,
            peer_port: 179,
            hold_time: Duration::from_secs(90),
            keepalive_time: Duration::from_secs(30),
            connect_time: None,
            router_id: None,
            node_selectors: Vec::new(),
            password: None,
            bfd_profile: None,
            ebgp_multihop: false,
            enable_graceful_restart: false,
            dual_stack_address_family: true,
        };
        let config = SessionConfig::from_peer(
            &peer,
            LOCAL_ID,
            BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]),
        );
        assert_eq!(config.router_id, LOCAL_ID);
        assert_eq!(config.connect_retry_time, DEFAULT_CONNECT_RETRY_TIME);
        let open = config.local_open();
        assert_eq!(open.hold_time, 90);
        assert!(open.capabilities.extended_next_hop_ipv4);
        assert_eq!(open.capabilities.graceful_restart, None);
    }
}
