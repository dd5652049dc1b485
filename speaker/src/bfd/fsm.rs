//! The BFD session state machine (RFC 5880 §6.2, §6.8), asynchronous mode, pure:
//! [`Session::handle`] (or [`step`]) takes one [`Event`] and the time, changes the session and
//! returns the [`Action`]s for the driver to run. No I/O, no tokio, no clock of its own: a timer
//! is an [`Action::StartTimer`] out and an [`Event::TimerExpired`] back in, as in `bgp::fsm`.
//! The transmit jitter comes from a generator seeded by the driver ([`Session::new`]), so a
//! session fed the same events with the same seed does the same thing.
//!
//! One `Session` is one BFD session with one peer. The driver (the next step) owns the UDP
//! sockets (RFC 5881 single hop: port 3784, TTL 255 out and checked in; RFC 5883 multihop: port
//! 4784, the profile's minimum TTL), picks the session of a received packet by its your
//! discriminator (or by address while that is 0), parses it with
//! [`ControlPacket::parse`](super::packet::ControlPacket::parse), and feeds the result here.
//! Which port, which TTL: the driver's business, nothing here depends on it.
//!
//! What the machine does, by RFC 5880 section:
//! - §6.8.6 reception, in order: learn the peer's discriminator, state, demand bit and
//!   intervals; end a Poll Sequence on F; discard in AdminDown; the state table
//!   ([`next_state`]); answer a P with an F at once.
//! - §6.8.3 and §6.8.7 timers: while not Up we advertise a Desired Min TX of at least 1 s; the
//!   transmit interval is max(our Desired Min TX, the peer's Required Min RX), jittered down to
//!   75–100 % (75–90 % with a detect multiplier of 1); the detection time is the peer's detect
//!   multiplier × max(our Required Min RX, the peer's Desired Min TX). A shorter interval is
//!   honoured at once; a longer transmit interval, or a shorter receive interval, only once the
//!   peer has answered the Poll Sequence that announced it.
//! - §6.5 Poll Sequences: started whenever our advertised intervals change (coming Up, going
//!   Down, [`Event::ConfigChanged`]), carried on the periodic packets. A change that comes while
//!   a sequence runs waits for it to end and for one more packet without F (the third way out of
//!   the ambiguity §6.8.3 describes), except when the session leaves Up, where the slow rate
//!   applies at once.
//! - §6.8.7: a packet whose contents changed (state, diagnostic, discriminator, intervals) is
//!   sent at once rather than at the next tick; periodic packets stop while the peer asks for
//!   Demand mode (we never ask for it ourselves), while its Required Min RX is 0, and, in
//!   passive mode, until the peer has been heard.
//! - §6.8.4: a detection timeout takes an Init or Up session Down with diagnostic 1 and forgets
//!   the peer (its discriminator, §6.8.1; its Required Min RX, §6.8.18).
//! - §6.8.16: [`Event::AdminDown`] sends AdminDown (diagnostic 7) for a detection time, then
//!   stops; [`Event::AdminUp`] starts the session in Down.
//!
//! Not here: authentication (the packet codec rejects the A bit), the Echo function (we
//! advertise a Required Min Echo RX of 0, so the peer sends none), our own Demand mode.

use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use ferrolb_crds::config::BfdProfile;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::packet::{ControlPacket, Diagnostic, State, duration_to_micros};

/// RFC 5880 §6.8.3: while the session is not Up, the Desired Min TX we advertise (and so our
/// transmit rate) is at least one second.
pub const SLOW_TX_INTERVAL: Duration = Duration::from_secs(1);

/// RFC 5880 §6.8.1: bfd.RemoteMinRxInterval before the peer is heard, and again after it is
/// lost (§6.8.18).
const INITIAL_REMOTE_MIN_RX: Duration = Duration::from_micros(1);

/// The session's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The next periodic Control packet (RFC 5880 §6.8.7).
    Transmit,
    /// No packet from the peer for a detection time (RFC 5880 §6.8.4).
    Detection,
}

/// What the state machine needs from the BFDProfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.DesiredMinTxInterval once Up (while not Up, at least [`SLOW_TX_INTERVAL`]).
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult; 0 is sent as 1 (a packet with 0 is discarded by every receiver).
    pub detect_multiplier: u8,
    /// Send nothing until the peer has been heard (RFC 5880 §6.1, the Passive role).
    pub passive: bool,
}

impl Default for SessionConfig {
    /// MetalLB's BFDProfile defaults.
    fn default() -> Self {
        Self {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_multiplier: 3,
            passive: false,
        }
    }
}

impl SessionConfig {
    /// From a validated BFDProfile. Its echo settings are unused (no Echo function) and its
    /// minimum TTL is the driver's (it checks received packets of multihop sessions).
    pub fn from_profile(profile: &BfdProfile) -> Self {
        Self {
            desired_min_tx: profile.transmit_interval,
            required_min_rx: profile.receive_interval,
            detect_multiplier: profile.detect_multiplier,
            passive: profile.passive_mode,
        }
    }
}

/// Inputs of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A Control packet the driver parsed and matched to this session (RFC 5880 §6.8.6).
    PacketReceived(ControlPacket),
    /// A timer the session started has expired.
    TimerExpired(Timer),
    /// Enable the session (RFC 5880 §6.8.16): AdminDown → Down.
    AdminUp,
    /// Disable the session (RFC 5880 §6.8.16): the peer, its BFD profile or the speaker goes.
    AdminDown,
    /// The BFDProfile changed; new intervals are announced with a Poll Sequence (§6.8.3).
    ConfigChanged(SessionConfig),
}

/// A change of the session state, as the driver reports it and acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    pub from: State,
    pub to: State,
    /// Our diagnostic after the change (bfd.LocalDiag): why we went Down or AdminDown.
    pub diagnostic: Diagnostic,
    /// The peer's last state. AdminDown when the peer was disabled rather than lost.
    pub remote_state: State,
}

impl StateChange {
    /// The path failed: an Up session went Down for another reason than an administrative one
    /// on either side. RFC 5882 §4.2: on Up → AdminDown, or Up → Down because the peer says
    /// AdminDown, clients should take no action; on any other Up → Down, BGP should go down at
    /// once rather than wait for its hold timer.
    pub fn is_failure(&self) -> bool {
        self.from == State::Up && self.to == State::Down && self.remote_state != State::AdminDown
    }
}

impl fmt::Display for StateChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {} ({})", self.from, self.to, self.diagnostic)
    }
}

/// Why a parsed packet did not count for this session; each labels a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DiscardReason {
    /// RFC 5880 §6.8.6: your discriminator selects the session; the driver should not have
    /// delivered this one here.
    #[error("your discriminator {theirs:#010x} is not this session's ({ours:#010x})")]
    YourDiscriminatorMismatch { ours: u32, theirs: u32 },
    /// RFC 5880 §6.8.6: "If bfd.SessionState is AdminDown: Discard the packet."
    #[error("the session is AdminDown")]
    SessionAdminDown,
}

impl DiscardReason {
    /// A stable, metric-label-friendly name of the variant.
    pub const fn label(&self) -> &'static str {
        match self {
            DiscardReason::YourDiscriminatorMismatch { .. } => "your_discriminator_mismatch",
            DiscardReason::SessionAdminDown => "session_admin_down",
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this packet to the peer now (`to_bytes()` is the UDP payload).
    SendPacket(ControlPacket),
    /// (Re)start the timer: it expires after the duration (zero: at once).
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    StateChanged(StateChange),
    /// A received packet was dropped (count it); nothing else changed.
    PacketDiscarded(DiscardReason),
}

/// RFC 5880 §6.8.6, the state table, row by row: the new state and diagnostic when a packet in
/// state `remote` reaches a session in state `local`, or `None` to stay.
pub fn next_state(local: State, remote: State) -> Option<(State, Diagnostic)> {
    use State::{AdminDown, Down, Init, Up};
    match (local, remote) {
        // "If bfd.SessionState is AdminDown: Discard the packet."
        (AdminDown, _) => None,
        // "If received state is AdminDown: If bfd.SessionState is not Down: set bfd.LocalDiag
        // to 3 (Neighbor signaled session down), set bfd.SessionState to Down."
        (Down, AdminDown) => None,
        (Init | Up, AdminDown) => Some((Down, Diagnostic::NeighborSignaledSessionDown)),
        // "If bfd.SessionState is Down: If received State is Down, set bfd.SessionState to
        // Init; Else if received State is Init, set bfd.SessionState to Up."
        (Down, Down) => Some((Init, Diagnostic::NoDiagnostic)),
        (Down, Init) => Some((Up, Diagnostic::NoDiagnostic)),
        (Down, Up) => None,
        // "Else if bfd.SessionState is Init: If received State is Init or Up, set
        // bfd.SessionState to Up."
        (Init, Init | Up) => Some((Up, Diagnostic::NoDiagnostic)),
        (Init, Down) => None,
        // "Else (bfd.SessionState is Up): If received State is Down, set bfd.LocalDiag to 3
        // (Neighbor signaled session down), set bfd.SessionState to Down."
        (Up, Down) => Some((Down, Diagnostic::NeighborSignaledSessionDown)),
        (Up, Init | Up) => None,
    }
}

/// RFC 5880 §6.8.7: a periodic interval `interval` less the jitter. `draw` is uniform over
/// `u32`; the result is 75–100 % of `interval`, or 75–90 % when our detect multiplier is 1 (so
/// that the peer's detection time, one interval, cannot pass before the next packet).
pub fn jittered(interval: Duration, detect_multiplier: u8, draw: u32) -> Duration {
    const PPM: u128 = 1_000_000;
    let fraction = u128::from(draw);
    let range = u128::from(u32::MAX);
    // The reduction, in parts per million of the interval.
    let reduction = if detect_multiplier == 1 {
        100_000 + 150_000 * fraction / range
    } else {
        250_000 * fraction / range
    };
    let nanos = interval.as_nanos() * (PPM - reduction) / PPM;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The two intervals a session advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Intervals {
    /// bfd.DesiredMinTxInterval.
    desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    required_min_rx: Duration,
}

/// RFC 5880 §6.5, with the wait §6.8.3 asks for before a second sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    Idle,
    /// Our packets carry P until one with F comes back.
    AwaitingFinal,
    /// The sequence ended; the next one waits for a packet without F, so that a late F of
    /// this one is not taken for the answer to the next.
    AwaitingNonFinal,
}

/// What we know of the peer (the bfd.Remote* variables of RFC 5880 §6.8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remote {
    /// bfd.RemoteDiscr; 0 until heard.
    discriminator: u32,
    /// bfd.RemoteSessionState.
    state: State,
    /// bfd.RemoteDemandMode.
    demand: bool,
    /// bfd.RemoteMinRxInterval.
    min_rx: Duration,
    /// The last Desired Min TX Interval received.
    desired_min_tx: Duration,
    /// The last Detect Mult received; 0 until heard.
    detect_multiplier: u8,
}

impl Remote {
    const UNKNOWN: Remote = Remote {
        discriminator: 0,
        state: State::Down,
        demand: false,
        min_rx: INITIAL_REMOTE_MIN_RX,
        desired_min_tx: Duration::ZERO,
        detect_multiplier: 0,
    };
}

/// Collected while handling one event; turned into actions at the end.
#[derive(Debug, Default)]
struct Pending {
    actions: Vec<Action>,
    /// A packet with P came in: answer with F now.
    final_due: bool,
    /// The transmit timer expired: a periodic packet is due now.
    periodic_due: bool,
}

/// One BFD session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    config: SessionConfig,
    /// bfd.LocalDiscr, chosen by the driver (random, unique among its sessions).
    local_discriminator: NonZeroU32,
    /// bfd.SessionState.
    state: State,
    /// bfd.LocalDiag.
    diagnostic: Diagnostic,
    remote: Remote,
    /// What our packets carry.
    advertised: Intervals,
    /// The Desired Min TX our transmit interval is computed from: lags `advertised` while a
    /// slower rate waits for the peer's Final (RFC 5880 §6.8.3).
    tx_in_use: Duration,
    /// The Required Min RX our detection time is computed from: lags `advertised` while a
    /// faster rate waits for the peer's Final (RFC 5880 §6.8.3).
    rx_in_use: Duration,
    poll: Poll,
    /// When the transmit timer expires; `None` while it is stopped.
    transmit_at: Option<Instant>,
    /// When the last periodic packet went out (answers and change packets do not count).
    last_periodic: Option<Instant>,
    /// When the detection timer expires; `None` while it is stopped.
    detection_at: Option<Instant>,
    /// When the last packet that counts for detection arrived.
    last_received: Option<Instant>,
    /// The last packet sent, to notice when what we say changes (RFC 5880 §6.8.7).
    last_sent: Option<ControlPacket>,
    /// In AdminDown after [`Event::AdminDown`]: AdminDown packets go out until then.
    admin_down_until: Option<Instant>,
    jitter: SmallRng,
}

/// The pure step: `(session, event, now) → (new session, actions)`.
pub fn step(mut session: Session, event: Event, now: Instant) -> (Session, Vec<Action>) {
    let actions = session.handle(event, now);
    (session, actions)
}

impl Session {
    /// A session in AdminDown that sends nothing until [`Event::AdminUp`].
    /// `local_discriminator` must be unique among the driver's sessions (RFC 5880 §6.8.1
    /// suggests random); `jitter_seed` seeds the transmit jitter (the driver draws it from
    /// `rand`, tests pick it).
    pub fn new(config: SessionConfig, local_discriminator: NonZeroU32, jitter_seed: u64) -> Self {
        let mut session = Self {
            config,
            local_discriminator,
            state: State::AdminDown,
            diagnostic: Diagnostic::NoDiagnostic,
            remote: Remote::UNKNOWN,
            advertised: Intervals {
                desired_min_tx: Duration::ZERO,
                required_min_rx: Duration::ZERO,
            },
            tx_in_use: Duration::ZERO,
            rx_in_use: Duration::ZERO,
            poll: Poll::Idle,
            transmit_at: None,
            last_periodic: None,
            detection_at: None,
            last_received: None,
            last_sent: None,
            admin_down_until: None,
            jitter: SmallRng::seed_from_u64(jitter_seed),
        };
        session.advertised = session.wanted_intervals();
        session.tx_in_use = session.advertised.desired_min_tx;
        session.rx_in_use = session.advertised.required_min_rx;
        session
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// bfd.LocalDiag: why the session last went Down (or AdminDown).
    pub fn diagnostic(&self) -> Diagnostic {
        self.diagnostic
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn local_discriminator(&self) -> NonZeroU32 {
        self.local_discriminator
    }

    /// The peer's discriminator, once heard (forgotten after a detection timeout).
    pub fn remote_discriminator(&self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.remote.discriminator)
    }

    /// The peer's state as its last packet said (Down until heard).
    pub fn remote_state(&self) -> State {
        self.remote.state
    }

    /// The negotiated transmit interval before jitter: max(our Desired Min TX in force, the
    /// peer's Required Min RX).
    pub fn transmit_interval(&self) -> Duration {
        self.tx_in_use.max(self.remote.min_rx)
    }

    /// The detection time (asynchronous mode): the peer's Detect Mult × max(our Required Min
    /// RX in force, the peer's Desired Min TX). `None` until the peer is heard.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote.detect_multiplier == 0 {
            return None;
        }
        let agreed = self.rx_in_use.max(self.remote.desired_min_tx);
        Some(agreed.saturating_mul(u32::from(self.remote.detect_multiplier)))
    }

    /// A Poll Sequence is running (our packets carry P).
    pub fn poll_in_progress(&self) -> bool {
        self.poll == Poll::AwaitingFinal
    }

    /// One event.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut pending = Pending::default();
        match event {
            Event::PacketReceived(packet) => self.packet_received(&packet, now, &mut pending),
            Event::TimerExpired(Timer::Transmit) => {
                // A stale expiry (the timer was stopped or restarted since) is ignored.
                if self.transmit_at.is_some_and(|at| now >= at) {
                    self.transmit_at = None;
                    pending.periodic_due = self.periodic_allowed(now);
                }
            }
            Event::TimerExpired(Timer::Detection) => {
                if self.detection_at.is_some_and(|at| now >= at) {
                    self.detection_expired(&mut pending);
                }
            }
            Event::AdminUp => {
                if self.state == State::AdminDown {
                    self.admin_down_until = None;
                    self.change_state(State::Down, Diagnostic::NoDiagnostic, &mut pending);
                }
            }
            Event::AdminDown => {
                if self.state != State::AdminDown {
                    self.change_state(
                        State::AdminDown,
                        Diagnostic::AdministrativelyDown,
                        &mut pending,
                    );
                    // Packets no longer count for detection.
                    self.last_received = None;
                    // RFC 5880 §6.8.16: AdminDown packets "for at least a Detection Time" of
                    // the peer's, which after this change is our detect multiplier times our
                    // (slow) transmit interval.
                    let interval = self
                        .wanted_intervals()
                        .desired_min_tx
                        .max(self.remote.min_rx);
                    let detection = interval.saturating_mul(u32::from(self.detect_multiplier()));
                    self.admin_down_until = now.checked_add(detection);
                }
            }
            Event::ConfigChanged(config) => self.config = config,
        }
        self.settle(now, &mut pending);
        pending.actions
    }

    /// RFC 5880 §6.8.6 from "If the Your Discriminator field is nonzero" on; the checks before
    /// it were made by the parser.
    fn packet_received(&mut self, packet: &ControlPacket, now: Instant, pending: &mut Pending) {
        let ours = self.local_discriminator.get();
        if packet.your_discriminator != 0 && packet.your_discriminator != ours {
            pending.actions.push(Action::PacketDiscarded(
                DiscardReason::YourDiscriminatorMismatch {
                    ours,
                    theirs: packet.your_discriminator,
                },
            ));
            return;
        }
        self.remote = Remote {
            discriminator: packet.my_discriminator,
            state: packet.state,
            demand: packet.demand,
            min_rx: packet.required_min_rx(),
            desired_min_tx: packet.desired_min_tx(),
            detect_multiplier: packet.detect_multiplier,
        };
        match self.poll {
            Poll::AwaitingFinal if packet.final_ => {
                // The peer has seen what we advertise: the changes held back may apply.
                self.tx_in_use = self.advertised.desired_min_tx;
                self.rx_in_use = self.advertised.required_min_rx;
                self.poll = Poll::AwaitingNonFinal;
            }
            Poll::AwaitingNonFinal if !packet.final_ => self.poll = Poll::Idle,
            _ => {}
        }
        if self.state == State::AdminDown {
            pending
                .actions
                .push(Action::PacketDiscarded(DiscardReason::SessionAdminDown));
            return;
        }
        self.last_received = Some(now);
        if let Some((state, diagnostic)) = next_state(self.state, packet.state) {
            self.change_state(state, diagnostic, pending);
        }
        if packet.poll {
            pending.final_due = true;
        }
    }

    /// RFC 5880 §6.8.4 and §6.8.1: the peer is gone.
    fn detection_expired(&mut self, pending: &mut Pending) {
        self.detection_at = None;
        self.last_received = None;
        // bfd.RemoteDiscr "MUST be set to zero" (§6.8.1), bfd.RemoteMinRxInterval back to 1 µs
        // (§6.8.18); a passive session falls silent again.
        self.remote = Remote::UNKNOWN;
        if matches!(self.state, State::Init | State::Up) {
            self.change_state(
                State::Down,
                Diagnostic::ControlDetectionTimeExpired,
                pending,
            );
        }
    }

    fn change_state(&mut self, to: State, diagnostic: Diagnostic, pending: &mut Pending) {
        let from = self.state;
        self.state = to;
        self.diagnostic = diagnostic;
        pending.actions.push(Action::StateChanged(StateChange {
            from,
            to,
            diagnostic,
            remote_state: self.remote.state,
        }));
    }

    fn detect_multiplier(&self) -> u8 {
        self.config.detect_multiplier.max(1)
    }

    /// What the configuration and the state ask us to advertise.
    fn wanted_intervals(&self) -> Intervals {
        let desired_min_tx = if self.state == State::Up {
            self.config.desired_min_tx
        } else {
            self.config.desired_min_tx.max(SLOW_TX_INTERVAL)
        };
        Intervals {
            desired_min_tx,
            required_min_rx: self.config.required_min_rx,
        }
    }

    /// RFC 5880 §6.8.7: passive, we say nothing before the peer has spoken.
    fn silenced(&self) -> bool {
        self.config.passive && self.remote.discriminator == 0
    }

    /// Never enabled, or disabled and done telling the peer (RFC 5880 §6.8.16).
    fn admin_down_silent(&self, now: Instant) -> bool {
        self.state == State::AdminDown && self.admin_down_until.is_none_or(|until| now >= until)
    }

    /// A packet we were not asked for (periodic, or a change) may go out.
    fn unsolicited_allowed(&self, now: Instant) -> bool {
        // A Required Min RX of 0: "the remote system should send no packets whatsoever"
        // (§6.8.18).
        !self.silenced() && !self.admin_down_silent(now) && !self.remote.min_rx.is_zero()
    }

    /// RFC 5880 §6.8.7: no periodic packets while Demand mode is active on the peer, unless a
    /// Poll Sequence is being sent.
    fn periodic_allowed(&self, now: Instant) -> bool {
        let remote_demand_active = self.remote.demand
            && self.state == State::Up
            && self.remote.state == State::Up
            && self.poll != Poll::AwaitingFinal;
        self.unsolicited_allowed(now) && !remote_demand_active
    }

    fn jittered_interval(&mut self) -> Duration {
        jittered(
            self.transmit_interval(),
            self.detect_multiplier(),
            self.jitter.next_u32(),
        )
    }

    /// Our packet as things stand.
    fn control_packet(&self, poll: bool, final_: bool) -> ControlPacket {
        ControlPacket {
            diagnostic: self.diagnostic,
            state: self.state,
            poll,
            final_,
            // Userspace, in the speaker's process: it fails with the control plane.
            control_plane_independent: false,
            demand: false,
            detect_multiplier: self.detect_multiplier(),
            my_discriminator: self.local_discriminator.get(),
            your_discriminator: self.remote.discriminator,
            desired_min_tx_us: duration_to_micros(self.advertised.desired_min_tx),
            required_min_rx_us: duration_to_micros(self.advertised.required_min_rx),
            // No Echo function: the peer must not send us Echo packets.
            required_min_echo_rx_us: 0,
        }
    }

    /// What we would send now differs from what we last sent, P and F aside.
    fn contents_changed(&self) -> bool {
        let now = self.control_packet(false, false);
        self.last_sent.is_none_or(|last| {
            ControlPacket {
                poll: false,
                final_: false,
                ..last
            } != now
        })
    }

    /// RFC 5880 §6.8.3: start a Poll Sequence for a change of what we advertise, and apply it
    /// at once where the RFC allows.
    fn update_intervals(&mut self) {
        let wanted = self.wanted_intervals();
        let up = self.state == State::Up;
        // While Up, a change waits for the running sequence (and the packet after it); when
        // the session leaves Up the slow rate is due at once, so it restarts the sequence.
        if wanted != self.advertised && (self.poll == Poll::Idle || !up) {
            // "If bfd.DesiredMinTxInterval is increased and bfd.SessionState is Up, the actual
            // transmission interval used MUST NOT change until the Poll Sequence ... has
            // terminated."
            if !(up && wanted.desired_min_tx > self.advertised.desired_min_tx) {
                self.tx_in_use = wanted.desired_min_tx;
            }
            // "If bfd.RequiredMinRxInterval is reduced and bfd.SessionState is Up, the previous
            // value ... MUST be used when calculating the Detection Time ... until the Poll
            // Sequence ... has terminated."
            if !(up && wanted.required_min_rx < self.advertised.required_min_rx) {
                self.rx_in_use = wanted.required_min_rx;
            }
            self.advertised = wanted;
            self.poll = Poll::AwaitingFinal;
        }
        if !up {
            // The two rules above hold only while Up: what waited applies now.
            self.tx_in_use = self.advertised.desired_min_tx;
            self.rx_in_use = self.advertised.required_min_rx;
        }
    }

    /// The end of every event: intervals, timers, and at most one packet.
    fn settle(&mut self, now: Instant, pending: &mut Pending) {
        self.update_intervals();

        let mut periodic_now = pending.periodic_due;
        let mut transmit_timer = None;
        if !periodic_now {
            let allowed = self.periodic_allowed(now);
            match (self.transmit_at, self.last_periodic) {
                (Some(_), _) if !allowed => {
                    self.transmit_at = None;
                    transmit_timer = Some(Action::StopTimer(Timer::Transmit));
                }
                (None, None) if allowed => periodic_now = true,
                // Resuming (after AdminDown, a passive wait, Demand mode): not sooner than an
                // interval after the last periodic packet.
                (None, Some(last)) if allowed => {
                    let next = last + self.jittered_interval();
                    if next <= now {
                        periodic_now = true;
                    } else {
                        self.transmit_at = Some(next);
                        transmit_timer = Some(Action::StartTimer(Timer::Transmit, next - now));
                    }
                }
                // §6.8.3: "the local system cannot wait longer than the new interval between
                // the previous packet transmission and the next one."
                (Some(at), Some(last)) if last + self.transmit_interval() < at => {
                    let next = last + self.jittered_interval();
                    if next <= now {
                        periodic_now = true;
                    } else {
                        self.transmit_at = Some(next);
                        transmit_timer = Some(Action::StartTimer(Timer::Transmit, next - now));
                    }
                }
                _ => {}
            }
        }
        if periodic_now {
            let interval = self.jittered_interval();
            self.last_periodic = Some(now);
            self.transmit_at = now.checked_add(interval);
            transmit_timer = Some(Action::StartTimer(Timer::Transmit, interval));
        }

        // One packet: the Final owed (§6.8.7: "as soon as practicable, without respect to the
        // transmission timer"), the periodic one, or the news (§6.8.7: a packet "SHOULD be
        // transmitted during the interval between periodic Control packet transmissions when
        // the contents of that packet would differ from that in the previously transmitted
        // packet"). An F packet never carries P (§6.5); the next periodic one will.
        let packet = if pending.final_due {
            Some(self.control_packet(false, true))
        } else if periodic_now || (self.contents_changed() && self.unsolicited_allowed(now)) {
            Some(self.control_packet(self.poll == Poll::AwaitingFinal, false))
        } else {
            None
        };
        if let Some(packet) = packet {
            self.last_sent = Some(packet);
            pending.actions.push(Action::SendPacket(packet));
        }
        pending.actions.extend(transmit_timer);

        // The detection timer runs from the last packet that counted, with the detection time
        // as it is now (it changes with the intervals).
        let detection_at = match (self.state, self.last_received, self.detection_time()) {
            (State::AdminDown, _, _) => None,
            (_, Some(received), Some(time)) => received.checked_add(time),
            _ => None,
        };
        if detection_at != self.detection_at {
            pending.actions.push(match detection_at {
                Some(at) => Action::StartTimer(Timer::Detection, at.saturating_duration_since(now)),
                None => Action::StopTimer(Timer::Detection),
            });
            self.detection_at = detection_at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OURS: u32 = 0x0000_0a01;
    const THEIRS: u32 = 0x0000_0b02;
    const SEED: u64 = 7;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn ours() -> NonZeroU32 {
        NonZeroU32::new(OURS).unwrap()
    }

    /// The peer's packet in `state`, as FRR's bfdd sends it: 1 s Desired Min TX until Up,
    /// 300 ms once Up, Required Min RX 300 ms, detect multiplier 3, our discriminator (0 while
    /// it has not heard us, set with `unheard`).
    fn peer(state: State) -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::NoDiagnostic,
            state,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_multiplier: 3,
            my_discriminator: THEIRS,
            your_discriminator: OURS,
            desired_min_tx_us: if state == State::Up {
                300_000
            } else {
                1_000_000
            },
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
        }
    }

    fn unheard(packet: ControlPacket) -> ControlPacket {
        ControlPacket {
            your_discriminator: 0,
            ..packet
        }
    }

    fn with_final(packet: ControlPacket) -> ControlPacket {
        ControlPacket {
            final_: true,
            ..packet
        }
    }

    fn with_poll(packet: ControlPacket) -> ControlPacket {
        ControlPacket {
            poll: true,
            ..packet
        }
    }

    /// Our packet in `state`, as the session should send it: `desired_min_tx` in ms.
    fn ours_packet(state: State, your: u32, desired_min_tx_ms: u32) -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::NoDiagnostic,
            state,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_multiplier: 3,
            my_discriminator: OURS,
            your_discriminator: your,
            desired_min_tx_us: desired_min_tx_ms * 1000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
        }
    }

    fn change(from: State, to: State, diagnostic: Diagnostic, remote_state: State) -> Action {
        Action::StateChanged(StateChange {
            from,
            to,
            diagnostic,
            remote_state,
        })
    }

    /// A session fed events one by one, with a clock the test moves.
    struct Replay {
        session: Session,
        now: Instant,
    }

    impl Replay {
        fn new(config: SessionConfig) -> Self {
            Self {
                session: Session::new(config, ours(), SEED),
                now: Instant::now(),
            }
        }

        /// A session that came Up and finished the Poll Sequence that announced its fast rate.
        fn up(config: SessionConfig) -> Self {
            let mut replay = Self::new(config);
            replay.feed(Event::AdminUp);
            replay.receive(unheard(peer(State::Down)));
            replay.receive(peer(State::Up));
            replay.receive(with_final(peer(State::Up)));
            replay.receive(peer(State::Up));
            assert_eq!(replay.session.state(), State::Up);
            assert!(!replay.session.poll_in_progress());
            replay
        }

        fn at(&mut self, after: Duration) -> &mut Self {
            self.now += after;
            self
        }

        fn feed(&mut self, event: Event) -> Vec<Action> {
            let actions = self.session.handle(event, self.now);
            check_invariants(&self.session, &actions);
            actions
        }

        fn receive(&mut self, packet: ControlPacket) -> Vec<Action> {
            self.feed(Event::PacketReceived(packet))
        }

        /// Moves the clock to the transmit timer and fires it.
        fn tick(&mut self) -> Vec<Action> {
            let at = self.session.transmit_at.expect("transmit timer running");
            self.now = self.now.max(at);
            self.feed(Event::TimerExpired(Timer::Transmit))
        }

        /// Moves the clock to the detection timer and fires it.
        fn detection_timeout(&mut self) -> Vec<Action> {
            let at = self.session.detection_at.expect("detection timer running");
            self.now = self.now.max(at);
            self.feed(Event::TimerExpired(Timer::Detection))
        }
    }

    /// What must hold after every event, whatever came in.
    fn check_invariants(session: &Session, actions: &[Action]) {
        let sent = sent(actions);
        assert!(sent.len() <= 1, "one packet per event: {actions:?}");
        for packet in sent {
            assert!(!(packet.poll && packet.final_), "P and F: {packet:?}");
            assert_eq!(packet.my_discriminator, OURS);
            assert_eq!(packet.required_min_echo_rx_us, 0);
            assert!(!packet.demand);
            if packet.state != State::Up {
                assert!(
                    packet.desired_min_tx_us >= 1_000_000,
                    "slow when not Up: {packet:?}"
                );
            }
            // What we send, our own parser accepts as it is.
            assert_eq!(ControlPacket::parse(&packet.to_bytes()), Ok(packet));
        }
        if session.state() == State::AdminDown {
            assert_eq!(session.detection_at, None);
        }
    }

    fn sent(actions: &[Action]) -> Vec<ControlPacket> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendPacket(packet) => Some(*packet),
                _ => None,
            })
            .collect()
    }

    fn started(actions: &[Action], timer: Timer) -> Option<Duration> {
        actions.iter().find_map(|a| match a {
            Action::StartTimer(t, d) if *t == timer => Some(*d),
            _ => None,
        })
    }

    fn in_range(d: Duration, low: Duration, high: Duration) -> bool {
        low <= d && d <= high
    }

    #[test]
    fn state_table_of_rfc5880_6_8_6() {
        use Diagnostic::{NeighborSignaledSessionDown as Diag3, NoDiagnostic as Diag0};
        use State::{AdminDown, Down, Init, Up};
        // (local, received) → new state and diagnostic, every one of the 16 pairs.
        let table = [
            (AdminDown, AdminDown, None),
            (AdminDown, Down, None),
            (AdminDown, Init, None),
            (AdminDown, Up, None),
            (Down, AdminDown, None),
            (Down, Down, Some((Init, Diag0))),
            (Down, Init, Some((Up, Diag0))),
            (Down, Up, None),
            (Init, AdminDown, Some((Down, Diag3))),
            (Init, Down, None),
            (Init, Init, Some((Up, Diag0))),
            (Init, Up, Some((Up, Diag0))),
            (Up, AdminDown, Some((Down, Diag3))),
            (Up, Down, Some((Down, Diag3))),
            (Up, Init, None),
            (Up, Up, None),
        ];
        for (local, remote, expected) in table {
            assert_eq!(next_state(local, remote), expected, "{local} + {remote}");
        }
    }

    /// Every row of the table through a whole session: the state reached and what it says.
    #[test]
    fn state_table_through_the_session() {
        use State::{AdminDown, Down, Init, Up};
        // (how to reach the local state, received state, resulting state)
        let reach = |local: State| -> Replay {
            let mut replay = Replay::new(SessionConfig::default());
            match local {
                AdminDown => {}
                Down => {
                    replay.feed(Event::AdminUp);
                }
                Init => {
                    replay.feed(Event::AdminUp);
                    replay.receive(unheard(peer(Down)));
                }
                Up => replay = Replay::up(SessionConfig::default()),
            }
            assert_eq!(replay.session.state(), local);
            replay
        };
        for local in [AdminDown, Down, Init, Up] {
            for remote in [AdminDown, Down, Init, Up] {
                let mut replay = reach(local);
                let actions = replay.receive(peer(remote));
                let expected = next_state(local, remote);
                let reached = expected.map_or(local, |(state, _)| state);
                assert_eq!(replay.session.state(), reached, "{local} + {remote}");
                let changes: Vec<_> = actions
                    .iter()
                    .filter(|a| matches!(a, Action::StateChanged(_)))
                    .collect();
                match expected {
                    Some((to, diagnostic)) => {
                        assert_eq!(changes, vec![&change(local, to, diagnostic, remote)]);
                        // The news goes out at once, in the new state.
                        assert_eq!(sent(&actions)[0].state, to, "{local} + {remote}");
                        assert_eq!(sent(&actions)[0].diagnostic, diagnostic);
                    }
                    None => assert!(changes.is_empty(), "{local} + {remote}: {actions:?}"),
                }
                if local == AdminDown {
                    assert_eq!(
                        actions,
                        vec![Action::PacketDiscarded(DiscardReason::SessionAdminDown)]
                    );
                }
            }
        }
    }

    #[test]
    fn a_session_comes_up_in_three_packets() {
        let mut replay = Replay::new(SessionConfig::default());
        assert_eq!(replay.session.state(), State::AdminDown);
        // Enabled: the first Down packet at once, slow (1 s) while not Up.
        let start = replay.feed(Event::AdminUp);
        assert_eq!(start.len(), 3, "{start:?}");
        assert_eq!(
            start[0],
            change(
                State::AdminDown,
                State::Down,
                Diagnostic::NoDiagnostic,
                State::Down
            )
        );
        assert_eq!(
            start[1],
            Action::SendPacket(ours_packet(State::Down, 0, 1000))
        );
        let first_tick = started(&start, Timer::Transmit).unwrap();
        assert!(in_range(first_tick, ms(750), ms(1000)), "{first_tick:?}");
        assert_eq!(replay.session.transmit_interval(), ms(1000));

        // The peer's Down: Init, said at once; detection time 3 × max(300 ms, its 1 s).
        let init = replay.receive(unheard(peer(State::Down)));
        assert_eq!(
            init,
            vec![
                change(
                    State::Down,
                    State::Init,
                    Diagnostic::NoDiagnostic,
                    State::Down
                ),
                Action::SendPacket(ours_packet(State::Init, THEIRS, 1000)),
                Action::StartTimer(Timer::Detection, ms(3000)),
            ]
        );
        assert_eq!(
            replay.session.remote_discriminator(),
            NonZeroU32::new(THEIRS)
        );

        // The peer's Up: Up. The fast rate goes out at once with P (§6.8.3: a change of
        // Desired Min TX starts a Poll Sequence) and, being a decrease, applies at once: the
        // transmit timer is brought forward.
        let up = replay.at(ms(100)).receive(peer(State::Up));
        assert_eq!(up.len(), 4, "{up:?}");
        assert_eq!(
            up[0],
            change(State::Init, State::Up, Diagnostic::NoDiagnostic, State::Up)
        );
        assert_eq!(
            up[1],
            Action::SendPacket(with_poll(ours_packet(State::Up, THEIRS, 300)))
        );
        let tick = started(&up, Timer::Transmit).unwrap();
        assert!(in_range(tick, ms(125), ms(200)), "{tick:?} after 100 ms");
        assert_eq!(up[3], Action::StartTimer(Timer::Detection, ms(900)));
        assert!(replay.session.poll_in_progress());
        assert_eq!(replay.session.transmit_interval(), ms(300));
        assert_eq!(replay.session.detection_time(), Some(ms(900)));

        // The next periodic packet still carries P...
        let polling = replay.tick();
        assert!(sent(&polling)[0].poll);
        // ...until the peer's Final ends the sequence; nothing new to say.
        let done = replay.receive(with_final(peer(State::Up)));
        assert_eq!(done, vec![Action::StartTimer(Timer::Detection, ms(900))]);
        assert!(!replay.session.poll_in_progress());
        let quiet = replay.tick();
        assert_eq!(
            sent(&quiet),
            vec![ours_packet(State::Up, THEIRS, 300)],
            "no P after the Final"
        );
        let next = started(&quiet, Timer::Transmit).unwrap();
        assert!(in_range(next, ms(225), ms(300)), "{next:?}");
    }

    #[test]
    fn detection_timeout_takes_an_up_session_down_with_diagnostic_1() {
        let mut replay = Replay::up(SessionConfig::default());
        let down = replay.detection_timeout();
        let StateChange {
            from,
            to,
            diagnostic,
            ..
        } = match &down[0] {
            Action::StateChanged(change) => *change,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (from, to, diagnostic),
            (
                State::Up,
                State::Down,
                Diagnostic::ControlDetectionTimeExpired
            )
        );
        let Action::StateChanged(change) = down[0] else {
            unreachable!()
        };
        assert!(change.is_failure(), "BGP goes down at once");
        // The peer is forgotten (§6.8.1): Down with your discriminator 0, slow again, with P
        // (the Desired Min TX changed).
        let packet = sent(&down)[0];
        assert_eq!(packet.state, State::Down);
        assert_eq!(packet.diagnostic, Diagnostic::ControlDetectionTimeExpired);
        assert_eq!(packet.your_discriminator, 0);
        assert_eq!(packet.desired_min_tx_us, 1_000_000);
        assert!(packet.poll);
        assert_eq!(replay.session.remote_discriminator(), None);
        assert_eq!(replay.session.detection_time(), None);
        assert_eq!(replay.session.transmit_interval(), ms(1000));
        assert_eq!(started(&down, Timer::Detection), None);
        // Periodic packets go on, at the slow rate (75–100 % of 1 s).
        replay.tick();
        let slow = replay.tick();
        assert!(in_range(
            started(&slow, Timer::Transmit).unwrap(),
            ms(750),
            ms(1000)
        ));
        // A detection timeout in Down only forgets the peer.
        let mut down = Replay::new(SessionConfig::default());
        down.feed(Event::AdminUp);
        down.receive(peer(State::Up)); // Down + Up: stays Down, but the peer is heard
        assert_eq!(down.session.state(), State::Down);
        assert_eq!(down.session.remote_discriminator(), NonZeroU32::new(THEIRS));
        let expired = down.detection_timeout();
        assert!(!expired.iter().any(|a| matches!(a, Action::StateChanged(_))));
        assert_eq!(down.session.remote_discriminator(), None);
        assert_eq!(sent(&expired)[0].your_discriminator, 0);
    }

    #[test]
    fn the_peer_saying_down_takes_an_up_session_down_with_diagnostic_3() {
        let mut replay = Replay::up(SessionConfig::default());
        let down = replay.receive(peer(State::Down));
        assert_eq!(
            down[0],
            change(
                State::Up,
                State::Down,
                Diagnostic::NeighborSignaledSessionDown,
                State::Down
            )
        );
        let Action::StateChanged(failure) = down[0] else {
            unreachable!()
        };
        assert!(failure.is_failure());
        assert_eq!(
            failure.to_string(),
            "Up → Down (Neighbor Signaled Session Down)"
        );
        // The peer is still there: our Down names it, and its packets keep the session.
        let packet = sent(&down)[0];
        assert_eq!(
            (packet.state, packet.your_discriminator),
            (State::Down, THEIRS)
        );
        assert_eq!(started(&down, Timer::Detection), Some(ms(3000)));
        // And it comes straight back: Down + Down → Init.
        replay.receive(peer(State::Down));
        assert_eq!(replay.session.state(), State::Init);

        // AdminDown from the peer: the same transition, but not a failure (RFC 5882 §4.2).
        let mut replay = Replay::up(SessionConfig::default());
        let admin = replay.receive(peer(State::AdminDown));
        let Action::StateChanged(disabled) = admin[0] else {
            panic!("{admin:?}")
        };
        assert_eq!(
            (disabled.to, disabled.diagnostic, disabled.remote_state),
            (
                State::Down,
                Diagnostic::NeighborSignaledSessionDown,
                State::AdminDown
            )
        );
        assert!(!disabled.is_failure());
    }

    #[test]
    fn admin_down_tells_the_peer_for_a_detection_time_then_stops() {
        let mut replay = Replay::up(SessionConfig::default());
        let disabled_at = replay.now;
        let disable = replay.feed(Event::AdminDown);
        assert_eq!(
            disable[0],
            change(
                State::Up,
                State::AdminDown,
                Diagnostic::AdministrativelyDown,
                State::Up
            )
        );
        let packet = sent(&disable)[0];
        assert_eq!(
            (packet.state, packet.diagnostic),
            (State::AdminDown, Diagnostic::AdministrativelyDown)
        );
        assert!(disable.contains(&Action::StopTimer(Timer::Detection)));
        let Action::StateChanged(disabled) = disable[0] else {
            unreachable!()
        };
        assert!(
            !disabled.is_failure(),
            "RFC 5882 §4.2: no action on AdminDown"
        );
        // AdminDown packets for 3 × 1 s, then silence.
        let mut packets = 1;
        loop {
            let tick = replay.tick();
            if sent(&tick).is_empty() {
                assert_eq!(tick, vec![], "stopped without a new timer");
                assert!(replay.now >= disabled_at + ms(3000));
                break;
            }
            assert!(replay.now < disabled_at + ms(3000));
            assert_eq!(sent(&tick)[0].state, State::AdminDown);
            packets += 1;
        }
        assert!(packets >= 3, "{packets} AdminDown packets");
        assert_eq!(replay.session.transmit_at, None);
        // The peer's packets are discarded, and nothing is sent.
        assert_eq!(
            replay.receive(with_poll(peer(State::Down))),
            vec![Action::PacketDiscarded(DiscardReason::SessionAdminDown)]
        );
        assert_eq!(replay.session.state(), State::AdminDown);
        // Enabled again: Down at once, the peer is still known.
        let enable = replay.at(ms(10)).feed(Event::AdminUp);
        assert_eq!(
            enable[0],
            change(
                State::AdminDown,
                State::Down,
                Diagnostic::NoDiagnostic,
                State::Down
            )
        );
        assert_eq!(sent(&enable)[0].state, State::Down);
        assert_eq!(sent(&enable)[0].your_discriminator, THEIRS);
        assert!(started(&enable, Timer::Transmit).is_some());
        // Admin events that change nothing do nothing.
        assert_eq!(replay.feed(Event::AdminUp), vec![]);
        let mut fresh = Replay::new(SessionConfig::default());
        assert_eq!(fresh.feed(Event::AdminDown), vec![]);
    }

    #[test]
    fn a_packet_for_another_discriminator_is_discarded() {
        let mut replay = Replay::up(SessionConfig::default());
        let before = replay.session.clone();
        let stray = ControlPacket {
            your_discriminator: 99,
            ..peer(State::Down)
        };
        let discarded = replay.receive(stray);
        assert_eq!(
            discarded,
            vec![Action::PacketDiscarded(
                DiscardReason::YourDiscriminatorMismatch {
                    ours: OURS,
                    theirs: 99
                }
            )]
        );
        assert_eq!(replay.session, before, "nothing learned, nothing changed");
        let reason = discarded_reason(&discarded).unwrap();
        assert_eq!(reason.label(), "your_discriminator_mismatch");
        assert_eq!(
            reason.to_string(),
            "your discriminator 0x00000063 is not this session's (0x00000a01)"
        );
    }

    fn discarded_reason(actions: &[Action]) -> Option<DiscardReason> {
        actions.iter().find_map(|a| match a {
            Action::PacketDiscarded(reason) => Some(*reason),
            _ => None,
        })
    }

    #[test]
    fn a_poll_is_answered_with_a_final_at_once() {
        let mut replay = Replay::up(SessionConfig::default());
        let answer = replay.at(ms(5)).receive(with_poll(peer(State::Up)));
        assert_eq!(
            answer,
            vec![
                Action::SendPacket(with_final(ours_packet(State::Up, THEIRS, 300))),
                Action::StartTimer(Timer::Detection, ms(900)),
            ],
            "outside the transmit timer, which is left alone"
        );
        // While our own sequence runs, the answer carries F and not P; the next periodic
        // packet carries P again.
        let mut replay = Replay::new(SessionConfig::default());
        replay.feed(Event::AdminUp);
        replay.receive(unheard(peer(State::Down)));
        replay.receive(peer(State::Up));
        assert!(replay.session.poll_in_progress());
        let answer = replay.receive(with_poll(peer(State::Up)));
        let packet = sent(&answer)[0];
        assert!(packet.final_ && !packet.poll);
        assert!(replay.session.poll_in_progress());
        assert!(sent(&replay.tick())[0].poll);
    }

    #[test]
    fn a_slower_transmit_rate_waits_for_the_final() {
        let mut replay = Replay::up(SessionConfig::default());
        let slower = SessionConfig {
            desired_min_tx: ms(2000),
            ..SessionConfig::default()
        };
        let announced = replay.feed(Event::ConfigChanged(slower));
        // Announced at once, with P...
        assert_eq!(
            sent(&announced),
            vec![with_poll(ours_packet(State::Up, THEIRS, 2000))]
        );
        // ...but we keep sending at 300 ms until the peer has answered.
        assert_eq!(replay.session.transmit_interval(), ms(300));
        let tick = replay.tick();
        assert!(sent(&tick)[0].poll);
        assert!(in_range(
            started(&tick, Timer::Transmit).unwrap(),
            ms(225),
            ms(300)
        ));
        replay.receive(with_final(peer(State::Up)));
        assert_eq!(replay.session.transmit_interval(), ms(2000));
        let tick = replay.tick();
        assert!(!sent(&tick)[0].poll);
        assert!(in_range(
            started(&tick, Timer::Transmit).unwrap(),
            ms(1500),
            ms(2000)
        ));
    }

    #[test]
    fn a_faster_receive_rate_waits_for_the_final() {
        // The peer would send every 50 ms; our Required Min RX of 300 ms holds it back.
        let fast_peer = |state| ControlPacket {
            desired_min_tx_us: 50_000,
            ..peer(state)
        };
        let mut replay = Replay::up(SessionConfig::default());
        replay.receive(fast_peer(State::Up));
        assert_eq!(replay.session.detection_time(), Some(ms(900)));
        let faster = SessionConfig {
            required_min_rx: ms(100),
            ..SessionConfig::default()
        };
        let announced = replay.feed(Event::ConfigChanged(faster));
        assert_eq!(sent(&announced)[0].required_min_rx_us, 100_000);
        assert!(sent(&announced)[0].poll);
        // Not in force before the Final: the peer may still send every 300 ms.
        replay.at(ms(10)).receive(fast_peer(State::Up));
        assert_eq!(replay.session.detection_time(), Some(ms(900)));
        let answered = replay.at(ms(10)).receive(with_final(fast_peer(State::Up)));
        assert_eq!(replay.session.detection_time(), Some(ms(300)));
        assert_eq!(started(&answered, Timer::Detection), Some(ms(300)));
    }

    #[test]
    fn a_faster_transmit_or_slower_receive_rate_applies_at_once() {
        // The peer accepts packets every 50 ms.
        let eager_peer = |state| ControlPacket {
            required_min_rx_us: 50_000,
            ..peer(state)
        };
        let mut replay = Replay::up(SessionConfig::default());
        replay.receive(eager_peer(State::Up));
        assert_eq!(replay.session.transmit_interval(), ms(300));
        let changed = replay.at(ms(20)).feed(Event::ConfigChanged(SessionConfig {
            desired_min_tx: ms(100),
            required_min_rx: ms(1000),
            ..SessionConfig::default()
        }));
        assert_eq!(replay.session.transmit_interval(), ms(100));
        // The transmit timer is brought forward: at most 100 ms after the last packet.
        let next = started(&changed, Timer::Transmit).unwrap();
        assert!(next <= ms(100), "{next:?}");
        // 3 × max(1 s, the peer's 300 ms), from the last packet received 20 ms ago.
        assert_eq!(replay.session.detection_time(), Some(ms(3000)));
        assert_eq!(started(&changed, Timer::Detection), Some(ms(2980)));
    }

    #[test]
    fn a_second_change_waits_for_the_first_sequence() {
        let mut replay = Replay::up(SessionConfig::default());
        let config = |tx| SessionConfig {
            desired_min_tx: ms(tx),
            ..SessionConfig::default()
        };
        replay.feed(Event::ConfigChanged(config(2000)));
        // Mid-sequence: nothing new is announced (which Final would answer which change?).
        let held = replay.feed(Event::ConfigChanged(config(3000)));
        assert_eq!(sent(&held), vec![]);
        assert_eq!(sent(&replay.tick())[0].desired_min_tx_us, 2_000_000);
        // The Final ends the first sequence; the second waits for one more packet without F.
        replay.receive(with_final(peer(State::Up)));
        assert!(!replay.session.poll_in_progress());
        assert_eq!(replay.session.transmit_interval(), ms(2000));
        let second = replay.receive(peer(State::Up));
        assert_eq!(
            sent(&second),
            vec![with_poll(ours_packet(State::Up, THEIRS, 3000))]
        );
        assert_eq!(replay.session.transmit_interval(), ms(2000));
        replay.receive(with_final(peer(State::Up)));
        assert_eq!(replay.session.transmit_interval(), ms(3000));
    }

    #[test]
    fn leaving_up_applies_the_slow_rate_at_once() {
        let mut replay = Replay::up(SessionConfig::default());
        replay.feed(Event::ConfigChanged(SessionConfig {
            desired_min_tx: ms(500),
            ..SessionConfig::default()
        }));
        assert!(replay.session.poll_in_progress());
        let down = replay.receive(peer(State::Down));
        assert_eq!(replay.session.state(), State::Down);
        assert_eq!(sent(&down)[0].desired_min_tx_us, 1_000_000);
        assert!(sent(&down)[0].poll, "a new sequence for the new value");
        assert_eq!(replay.session.transmit_interval(), ms(1000));
    }

    #[test]
    fn transmit_interval_negotiation() {
        // (our Desired Min TX, the peer's Required Min RX, Up?) → the transmit interval.
        let cases = [
            (300, 300, true, 300),
            (300, 500, true, 500),
            (300, 100, true, 300),
            (50, 10, true, 50),
            // While not Up, at least 1 s whatever we configured...
            (300, 100, false, 1000),
            // ...and still the larger of the two.
            (300, 2000, false, 2000),
            (1500, 300, false, 1500),
        ];
        for (desired_min_tx, remote_min_rx, up, expected) in cases {
            let config = SessionConfig {
                desired_min_tx: ms(desired_min_tx),
                ..SessionConfig::default()
            };
            let mut replay = if up {
                Replay::up(config)
            } else {
                let mut replay = Replay::new(config);
                replay.feed(Event::AdminUp);
                replay
            };
            let state = replay.session.state();
            replay.receive(ControlPacket {
                required_min_rx_us: u32::try_from(remote_min_rx * 1000).unwrap(),
                ..peer(state)
            });
            assert_eq!(
                replay.session.transmit_interval(),
                ms(expected),
                "{desired_min_tx} vs {remote_min_rx}, up {up}"
            );
        }
    }

    #[test]
    fn detection_time_negotiation() {
        // (our Required Min RX, the peer's Desired Min TX, the peer's Detect Mult) → time.
        let cases = [
            (300, 300, 3, 900),
            (300, 1000, 3, 3000),
            (300, 100, 3, 900),
            (100, 400, 5, 2000),
            (50, 10, 1, 50),
            (300, 300, 255, 76_500),
        ];
        for (required_min_rx, remote_min_tx, remote_mult, expected) in cases {
            let mut replay = Replay::new(SessionConfig {
                required_min_rx: ms(required_min_rx),
                ..SessionConfig::default()
            });
            replay.feed(Event::AdminUp);
            let armed = replay.receive(ControlPacket {
                desired_min_tx_us: u32::try_from(remote_min_tx * 1000).unwrap(),
                detect_multiplier: remote_mult,
                ..unheard(peer(State::Down))
            });
            assert_eq!(replay.session.detection_time(), Some(ms(expected)));
            assert_eq!(started(&armed, Timer::Detection), Some(ms(expected)));
        }
    }

    #[test]
    fn jitter_bounds() {
        let second = ms(1000);
        assert_eq!(jittered(second, 3, 0), ms(1000));
        assert_eq!(jittered(second, 3, u32::MAX), ms(750));
        assert_eq!(jittered(second, 1, 0), ms(900));
        assert_eq!(jittered(second, 1, u32::MAX), ms(750));
        assert_eq!(jittered(Duration::ZERO, 3, 12345), Duration::ZERO);
        // Overflow-free at the extremes.
        assert!(jittered(Duration::MAX, 3, u32::MAX) < Duration::MAX);
        // Through the session: every periodic interval in range, and spread over it.
        for (multiplier, low, high) in [(3u8, 225, 300), (1, 225, 270)] {
            let mut replay = Replay::up(SessionConfig {
                detect_multiplier: multiplier,
                ..SessionConfig::default()
            });
            let intervals: Vec<Duration> = (0..500)
                .map(|_| started(&replay.tick(), Timer::Transmit).unwrap())
                .collect();
            let (min, max) = (
                intervals.iter().min().unwrap(),
                intervals.iter().max().unwrap(),
            );
            assert!(*min >= ms(low) && *max <= ms(high), "{min:?}..{max:?}");
            assert!(
                *min < ms(low + 10) && *max > ms(high - 10),
                "spread: {min:?}..{max:?}"
            );
        }
    }

    #[test]
    fn passive_mode_waits_for_the_peer() {
        let passive = SessionConfig {
            passive: true,
            ..SessionConfig::default()
        };
        let mut replay = Replay::new(passive);
        assert_eq!(
            replay.feed(Event::AdminUp),
            vec![change(
                State::AdminDown,
                State::Down,
                Diagnostic::NoDiagnostic,
                State::Down
            )]
        );
        assert_eq!(replay.session.transmit_at, None);
        assert_eq!(
            replay
                .at(ms(5000))
                .feed(Event::TimerExpired(Timer::Transmit)),
            vec![]
        );
        // The peer speaks: we answer at once and start the periodic packets.
        let heard = replay.receive(unheard(peer(State::Down)));
        assert_eq!(heard.len(), 4, "{heard:?}");
        assert_eq!(
            heard[1],
            Action::SendPacket(ours_packet(State::Init, THEIRS, 1000))
        );
        assert!(in_range(
            started(&heard, Timer::Transmit).unwrap(),
            ms(750),
            ms(1000)
        ));
        assert_eq!(started(&heard, Timer::Detection), Some(ms(3000)));
        // The peer goes quiet: Down, and silent again (its discriminator is forgotten).
        let lost = replay.detection_timeout();
        assert_eq!(
            lost,
            vec![
                change(
                    State::Init,
                    State::Down,
                    Diagnostic::ControlDetectionTimeExpired,
                    State::Down
                ),
                Action::StopTimer(Timer::Transmit),
            ]
        );
    }

    #[test]
    fn no_periodic_packets_when_the_peer_wants_none() {
        // Required Min RX 0 (RFC 5880 §6.8.18): stop, but still answer a Poll.
        let mut replay = Replay::up(SessionConfig::default());
        let quiet = ControlPacket {
            required_min_rx_us: 0,
            ..peer(State::Up)
        };
        let stopped = replay.receive(quiet);
        assert!(stopped.contains(&Action::StopTimer(Timer::Transmit)));
        assert_eq!(sent(&stopped), vec![]);
        let answer = replay.receive(with_poll(quiet));
        assert!(sent(&answer)[0].final_);
        assert_eq!(started(&answer, Timer::Transmit), None);
        // Back to a normal Required Min RX: packets resume (the last was long enough ago).
        let resumed = replay.at(ms(400)).receive(peer(State::Up));
        assert_eq!(sent(&resumed).len(), 1);
        assert!(started(&resumed, Timer::Transmit).is_some());
    }

    #[test]
    fn the_peer_in_demand_mode_stops_our_periodic_packets() {
        let mut replay = Replay::up(SessionConfig::default());
        let demand = |state| ControlPacket {
            demand: true,
            ..peer(state)
        };
        let stopped = replay.receive(demand(State::Up));
        assert!(stopped.contains(&Action::StopTimer(Timer::Transmit)));
        // Its Polls are answered (that is how Demand mode checks the path).
        let answer = replay.at(ms(1000)).receive(with_poll(demand(State::Up)));
        assert!(sent(&answer)[0].final_);
        assert_eq!(started(&answer, Timer::Transmit), None);
        // A parameter change needs a Poll Sequence: periodic packets with P until the Final.
        let polling = replay.feed(Event::ConfigChanged(SessionConfig {
            desired_min_tx: ms(200),
            ..SessionConfig::default()
        }));
        assert!(sent(&polling)[0].poll);
        assert!(started(&polling, Timer::Transmit).is_some());
        assert!(sent(&replay.tick())[0].poll);
        let done = replay.receive(with_final(demand(State::Up)));
        assert!(done.contains(&Action::StopTimer(Timer::Transmit)));
        // Demand mode off: periodic packets again.
        let resumed = replay.at(ms(500)).receive(peer(State::Up));
        assert_eq!(sent(&resumed).len(), 1);
        assert!(started(&resumed, Timer::Transmit).is_some());
    }

    #[test]
    fn a_shorter_interval_from_the_peer_is_honoured_at_once() {
        // We could send every 50 ms; the peer accepts one per second, then one per 100 ms.
        let config = SessionConfig {
            desired_min_tx: ms(50),
            ..SessionConfig::default()
        };
        let slow_rx = |us| ControlPacket {
            required_min_rx_us: us,
            ..peer(State::Up)
        };
        let mut replay = Replay::up(config);
        replay.receive(slow_rx(1_000_000));
        replay.tick();
        assert_eq!(replay.session.transmit_interval(), ms(1000));
        let last = replay.now;
        let faster = replay.at(ms(30)).receive(slow_rx(100_000));
        assert_eq!(replay.session.transmit_interval(), ms(100));
        // §6.8.3: no longer than the new interval after the previous packet.
        let next = started(&faster, Timer::Transmit).unwrap();
        assert!(replay.now + next <= last + ms(100), "{next:?}");
        assert!(replay.now + next >= last + ms(75));
        // Shorter than what already passed: at once.
        replay.receive(slow_rx(1_000_000));
        replay.tick();
        let now_due = replay.at(ms(200)).receive(slow_rx(100_000));
        assert_eq!(sent(&now_due).len(), 1, "{now_due:?}");
        assert!(in_range(
            started(&now_due, Timer::Transmit).unwrap(),
            ms(75),
            ms(100)
        ));
    }

    #[test]
    fn stale_timers_are_ignored() {
        let mut session = Session::new(SessionConfig::default(), ours(), SEED);
        let now = Instant::now();
        for timer in [Timer::Transmit, Timer::Detection] {
            assert_eq!(session.handle(Event::TimerExpired(timer), now), vec![]);
        }
        let (session, actions) = step(session, Event::AdminUp, now);
        assert_eq!(session.state(), State::Down);
        assert_eq!(sent(&actions).len(), 1);
        // An expiry before the deadline is a timer that was restarted since.
        let (mut session, actions) = step(session, Event::TimerExpired(Timer::Transmit), now);
        assert_eq!(actions, vec![]);
        let (_, early) = step(
            session.clone(),
            Event::TimerExpired(Timer::Detection),
            now + ms(5000),
        );
        assert_eq!(early, vec![], "no detection timer before the peer is heard");
        session.handle(Event::PacketReceived(unheard(peer(State::Down))), now);
        let (session, early) = step(
            session,
            Event::TimerExpired(Timer::Detection),
            now + ms(2999),
        );
        assert_eq!(early, vec![]);
        assert_eq!(session.state(), State::Init);
    }

    /// Found by the property test: an event that comes after the detection deadline (a busy
    /// driver) and shortens the detection time re-arms the timer at zero, not in the past.
    #[test]
    fn an_overdue_detection_timer_fires_at_once() {
        let mut replay = Replay::new(SessionConfig::default());
        replay.feed(Event::AdminUp);
        replay.receive(ControlPacket {
            detect_multiplier: 1,
            desired_min_tx_us: 0,
            ..unheard(peer(State::AdminDown))
        });
        assert_eq!(replay.session.detection_time(), Some(ms(300)));
        let late = replay
            .at(ms(1476))
            .feed(Event::ConfigChanged(SessionConfig {
                required_min_rx: ms(10),
                ..SessionConfig::default()
            }));
        assert_eq!(started(&late, Timer::Detection), Some(Duration::ZERO));
        let expired = replay.feed(Event::TimerExpired(Timer::Detection));
        assert_eq!(replay.session.remote_discriminator(), None, "{expired:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_session() {
        let run = || {
            let mut replay = Replay::up(SessionConfig::default());
            (0..20).flat_map(|_| replay.tick()).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_detect_multiplier_change_goes_out_without_a_poll() {
        let mut replay = Replay::up(SessionConfig::default());
        let changed = replay.feed(Event::ConfigChanged(SessionConfig {
            detect_multiplier: 5,
            ..SessionConfig::default()
        }));
        // RFC 5880 §6.8.12: "the use of a Poll Sequence is not necessary".
        let packet = sent(&changed)[0];
        assert_eq!(packet.detect_multiplier, 5);
        assert!(!packet.poll);
        // A multiplier of 0 would make every receiver drop our packets: sent as 1.
        let zero = replay.feed(Event::ConfigChanged(SessionConfig {
            detect_multiplier: 0,
            ..SessionConfig::default()
        }));
        assert_eq!(sent(&zero)[0].detect_multiplier, 1);
    }

    #[test]
    fn config_from_a_metallb_profile() {
        let profile = BfdProfile {
            name: "fast".to_string(),
            receive_interval: ms(100),
            transmit_interval: ms(200),
            detect_multiplier: 5,
            echo_interval: ms(50),
            echo_mode: false,
            passive_mode: true,
            minimum_ttl: 254,
        };
        assert_eq!(
            SessionConfig::from_profile(&profile),
            SessionConfig {
                desired_min_tx: ms(200),
                required_min_rx: ms(100),
                detect_multiplier: 5,
                passive: true,
            }
        );
    }

    /// An event for the property test; timers fire at their deadline.
    #[derive(Debug, Clone)]
    enum Input {
        Packet(ControlPacket),
        Transmit,
        Detection,
        AdminUp,
        AdminDown,
        Config(SessionConfig),
        Wait(Duration),
    }

    fn any_state() -> impl Strategy<Value = State> {
        (0..4u8).prop_map(State::from_bits)
    }

    fn any_interval_us() -> impl Strategy<Value = u32> {
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(50_000),
            Just(300_000),
            Just(1_000_000),
            1..5_000_000u32,
        ]
    }

    prop_compose! {
        /// What parse accepts from a peer that may be wrong about us.
        fn any_peer_packet()(
            state in any_state(),
            flags in any::<[bool; 4]>(),
            your in prop_oneof![Just(0u32), Just(OURS), Just(7u32)],
            detect_multiplier in 1..=u8::MAX,
            intervals in [any_interval_us(), any_interval_us()],
        ) -> ControlPacket {
            let [poll, final_, demand, control_plane_independent] = flags;
            let your_discriminator = if your == 0 && !matches!(state, State::Down | State::AdminDown) {
                OURS
            } else {
                your
            };
            ControlPacket {
                diagnostic: Diagnostic::NoDiagnostic,
                state,
                poll,
                final_,
                control_plane_independent,
                demand,
                detect_multiplier,
                my_discriminator: THEIRS,
                your_discriminator,
                desired_min_tx_us: intervals[0],
                required_min_rx_us: intervals[1],
                required_min_echo_rx_us: 0,
            }
        }
    }

    fn any_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            4 => any_peer_packet().prop_map(Input::Packet),
            3 => Just(Input::Transmit),
            1 => Just(Input::Detection),
            1 => Just(Input::AdminUp),
            1 => Just(Input::AdminDown),
            1 => (10..2_000u64, 10..2_000u64, 0..4u8, any::<bool>()).prop_map(|(tx, rx, mult, passive)| {
                Input::Config(SessionConfig {
                    desired_min_tx: ms(tx),
                    required_min_rx: ms(rx),
                    detect_multiplier: mult,
                    passive,
                })
            }),
            2 => (0..3_000u64).prop_map(|t| Input::Wait(ms(t))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any sequence of events: no panic, and the invariants of `check_invariants` plus the
        /// timer bookkeeping hold after each.
        #[test]
        fn any_event_sequence_keeps_the_invariants(
            start_up in any::<bool>(),
            inputs in proptest::collection::vec(any_input(), 1..80),
        ) {
            let mut replay = Replay::new(SessionConfig::default());
            if start_up {
                replay.feed(Event::AdminUp);
            }
            for input in inputs {
                let actions = match input {
                    Input::Packet(packet) => replay.receive(packet),
                    Input::Transmit => match replay.session.transmit_at {
                        Some(_) => replay.tick(),
                        None => replay.feed(Event::TimerExpired(Timer::Transmit)),
                    },
                    Input::Detection => match replay.session.detection_at {
                        Some(_) => replay.detection_timeout(),
                        None => replay.feed(Event::TimerExpired(Timer::Detection)),
                    },
                    Input::AdminUp => replay.feed(Event::AdminUp),
                    Input::AdminDown => replay.feed(Event::AdminDown),
                    Input::Config(config) => replay.feed(Event::ConfigChanged(config)),
                    Input::Wait(duration) => {
                        // Time passes without an event: nothing to check.
                        replay.at(duration);
                        continue;
                    }
                };
                let session = &replay.session;
                let now = replay.now;
                // The timers the session counts on are the ones it told the driver about (a
                // deadline already past, after a late event, is a timer of zero).
                for action in &actions {
                    let (deadline, timer) = match action {
                        Action::StartTimer(timer, d) => (Some(now + *d), *timer),
                        Action::StopTimer(timer) => (None, *timer),
                        _ => continue,
                    };
                    let kept = match timer {
                        Timer::Transmit => session.transmit_at,
                        Timer::Detection => session.detection_at,
                    };
                    match (deadline, kept) {
                        (Some(deadline), Some(kept)) if deadline == now => {
                            prop_assert!(kept <= now, "{:?}", action);
                        }
                        _ => prop_assert_eq!(deadline, kept, "{:?}", action),
                    }
                }
                // Periodic packets run exactly when they may (AdminDown notices the end of its
                // announcements at the next tick, so it may run a little longer).
                if session.periodic_allowed(now) {
                    prop_assert!(session.transmit_at.is_some(), "{:?}", actions);
                } else if session.state() != State::AdminDown {
                    prop_assert!(session.transmit_at.is_none(), "{:?}", actions);
                }
                // The detection timer runs from the last packet that counted.
                let expected_detection = match (session.state(), session.last_received, session.detection_time()) {
                    (State::AdminDown, _, _) => None,
                    (_, Some(received), Some(time)) => Some(received + time),
                    _ => None,
                };
                prop_assert_eq!(session.detection_at, expected_detection);
                // Init and Up are only reached by hearing the peer, and lost with it.
                if matches!(session.state(), State::Init | State::Up) {
                    prop_assert!(session.remote_discriminator().is_some());
                }
            }
        }
    }
}
