//! Liveness among speakers: SWIM ([`foca`]) over UDP, every datagram authenticated with
//! HMAC-SHA256 under a key derived from the shared Secret.
//!
//! The API server is not on the failover path: speakers detect each other's death themselves,
//! in a few hundred milliseconds with the default [`Timers`]. This module knows nothing about
//! Services; it only publishes the set of live node names ([`LiveSet`]), which `election`
//! combines with the eligible nodes of each IP.
//!
//! Layout: [`identity`] (who a speaker is: name + address + boot id), [`auth`] (datagram
//! sealing, replay window: pure), [`transport`] (the one task that owns the socket, the foca
//! instance and its timers), [`probe_rtt`] (timing our probes from foca's headers: pure),
//! [`host_check`] (confirming a suspicion from the suspect's kernel: pure bookkeeping).
//! [`Membership`] is the handle; dropping it stops the task without
//! telling anyone (a silent death), [`Membership::leave`] tells the others first.

pub mod auth;
#[cfg(test)]
mod false_positives;
pub mod host_check;
pub mod identity;
mod probe_rtt;
mod transport;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot, watch};

pub use identity::SpeakerId;

/// Node names of the live speakers, always including our own.
pub type LiveSet = BTreeSet<String>;

/// Default UDP port of the membership protocol (the same as memberlist's, as in MetalLB).
pub const DEFAULT_PORT: u16 = 7946;

/// Protocol timers, tuned for a LAN.
///
/// A silent death is first a suspicion: time until some member probes the dead one (up to one
/// `probe_period`, less with more members since each probes its own random target) +
/// `probe_period` (the probe and its indirect probes fail). Every member that learns of the
/// suspicion then asks the suspect's kernel ([`host_check`]): a TCP connect to its membership
/// address, answered within `host_check_timeout`. Refused (the process is gone) or silent (the
/// host is gone) declares it down at once, and the verdict is gossiped. A completed handshake
/// means the process exists but does not run (stopped, starved): it then has `suspect_to_down`
/// to refute, so stalls shorter than that move nothing. Peers whose host checks cannot be
/// trusted (never seen listening: older speakers, TCP filtered) always wait `suspect_to_down`.
///
/// With the defaults a dead speaker is declared down in about 100–250 ms
/// (docs/benchmarks.md `## speaker membership`), and a speaker stalled for up to ~300 ms is not.
/// A false positive moves the node's IPs away and back (two gratuitous ARP rounds), it never
/// makes two nodes answer at once. Raise `suspect_to_down` for longer stalls; raise
/// `probe_rtt` if the network's RTT p99 is above a few tens of milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// How often each member probes one random member. Default 100 ms.
    pub probe_period: Duration,
    /// How long a direct probe waits for its ack before asking others to probe indirectly;
    /// must be below `probe_period`. Default 40 ms.
    pub probe_rtt: Duration,
    /// How long a suspect whose host still answers (or cannot be checked) has to refute before
    /// it is declared down: the longest stall that moves nothing. Default 400 ms.
    pub suspect_to_down: Duration,
    /// How long a host check waits for the suspect's kernel to answer a TCP connect; silence
    /// for this long declares a trusted suspect down. Default 20 ms (a LAN answers in well
    /// under 1 ms; the kernel answers even when the speaker process does not run). `None`:
    /// no host checks, every suspect waits `suspect_to_down` (we still answer the others').
    pub host_check_timeout: Option<Duration>,
    /// How often membership updates are gossiped to 3 random members, besides piggybacking on
    /// probes. Default 100 ms.
    pub gossip_period: Duration,
    /// How often seeds that are not members are sent a join request (start in any order,
    /// partition heal), and how often foca re-announces to members and to down members.
    /// Default 1 s.
    pub announce_period: Duration,
    /// Largest accepted difference between a datagram's timestamp and our clock: the clock
    /// skew between nodes plus transit time. Default 30 s.
    pub max_clock_skew: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(100),
            probe_rtt: Duration::from_millis(40),
            suspect_to_down: Duration::from_millis(400),
            host_check_timeout: Some(Duration::from_millis(20)),
            gossip_period: Duration::from_millis(100),
            announce_period: Duration::from_secs(1),
            max_clock_skew: Duration::from_secs(30),
        }
    }
}

impl Timers {
    /// Checks the constraints foca relies on.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let invalid = |why| Err(MembershipError::InvalidTimers(why));
        if self.probe_rtt.is_zero() || self.probe_period.is_zero() {
            return invalid("probe_period and probe_rtt must be positive");
        }
        if self.probe_rtt >= self.probe_period {
            return invalid("probe_rtt must be below probe_period");
        }
        if self.suspect_to_down.is_zero()
            || self.host_check_timeout.is_some_and(|t| t.is_zero())
            || self.gossip_period.is_zero()
            || self.announce_period.is_zero()
            || self.max_clock_skew.is_zero()
        {
            return invalid("every timer must be positive");
        }
        Ok(())
    }
}

/// What a speaker needs to take part in the membership.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Our node name (what others put in their [`LiveSet`]).
    pub node: String,
    /// Where to bind the UDP socket, e.g. `0.0.0.0:7946`.
    pub bind: SocketAddr,
    /// The address others reach us at (the node's InternalIP and the port). A port of 0 means
    /// "the port actually bound" (tests bind port 0).
    pub advertise: SocketAddr,
    /// The shared Secret's bytes; must not be empty.
    pub secret: Vec<u8>,
    /// Protocol timers.
    pub timers: Timers,
    /// Observes the round-trip time of every direct probe (our `Ping` → the peer's `Ack`), in
    /// seconds; `None`: not measured. See `probe_rtt` for how it is measured.
    pub probe_rtt: Option<Histogram>,
}

/// Counters since start (monotonic), and the current member counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Live members, ourselves included.
    pub members: usize,
    /// Of the live members, those foca holds as alive, ourselves included (a gauge).
    pub members_alive: usize,
    /// Of the live members, those suspected of being down that have not refuted it yet (a
    /// gauge; a suspicion lasts at most the suspicion timeout).
    pub members_suspect: usize,
    /// Datagrams received that passed authentication.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes sent in those datagrams (UDP payloads, the authentication header and tag included;
    /// UDP and IP headers not).
    pub bytes_out: u64,
    /// Datagrams dropped: too short, wrong magic or version.
    pub rejected_malformed: u64,
    /// Datagrams dropped: bad tag (wrong Secret or altered).
    pub rejected_bad_tag: u64,
    /// Datagrams dropped: timestamp outside the allowed skew.
    pub rejected_stale: u64,
    /// Datagrams dropped: replayed counter.
    pub rejected_replayed: u64,
    /// Authenticated datagrams that foca refused (decoding errors, our own data).
    pub protocol_errors: u64,
    /// Failed sends.
    pub send_errors: u64,
    /// Members that came up (joined, or came back), as this node saw it.
    pub members_up: u64,
    /// Members declared down (dead or left), as this node saw it.
    pub members_down: u64,
    /// Members replaced by a newer incarnation (a restarted speaker).
    pub members_restarted: u64,
    /// Times the others declared this node down and it rejoined.
    pub rejoins: u64,
    /// Members this node saw become suspect (seen after a protocol step: a suspicion made and
    /// refuted within one step is missed).
    pub members_suspected: u64,
    /// Suspects this node saw alive again: they refuted the suspicion.
    pub members_refuted: u64,
    /// Suspects this node declared down before the suspicion timeout because their host
    /// check confirmed them dead ([`host_check`]).
    pub members_confirmed_down: u64,
}

impl MembershipStats {
    /// All datagrams dropped by authentication.
    pub fn auth_failures(&self) -> u64 {
        self.rejected_malformed
            + self.rejected_bad_tag
            + self.rejected_stale
            + self.rejected_replayed
    }
}

/// Errors at the membership boundary.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// No key material.
    #[error("the membership secret is empty")]
    EmptySecret,
    /// Timers foca cannot work with.
    #[error("invalid membership timers: {0}")]
    InvalidTimers(&'static str),
    /// The UDP socket could not be bound.
    #[error("cannot bind the membership socket to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The membership task is gone (it panicked or was stopped).
    #[error("the membership task has stopped")]
    Stopped,
    /// `leave` could not finish before its deadline.
    #[error("leaving the membership took longer than {0:?}")]
    LeaveTimeout(Duration),
}

enum Command {
    SetSeeds(Vec<SocketAddr>),
    Leave(oneshot::Sender<()>),
}

/// Handle on the running membership. Dropping it stops the task at once, without telling the
/// others (they detect it as a failure); call [`Membership::leave`] for a graceful stop.
#[derive(Debug)]
pub struct Membership {
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<transport::Counters>,
    live: watch::Receiver<LiveSet>,
    rejoins: watch::Receiver<u64>,
    identity: SpeakerId,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::SetSeeds(seeds) => f.debug_tuple("SetSeeds").field(seeds).finish(),
            Command::Leave(_) => f.write_str("Leave"),
        }
    }
}

impl Membership {
    /// Binds the socket and starts the membership task. The returned receiver always holds
    /// the current live set (initially just ourselves).
    pub async fn start(
        cfg: MembershipConfig,
    ) -> Result<(Membership, watch::Receiver<LiveSet>), MembershipError> {
        if cfg.secret.is_empty() {
            return Err(MembershipError::EmptySecret);
        }
        cfg.timers.validate()?;
        let socket = tokio::net::UdpSocket::bind(cfg.bind)
            .await
            .map_err(|source| MembershipError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let local_addr = socket
            .local_addr()
            .map_err(|source| MembershipError::Bind {
                addr: cfg.bind,
                source,
            })?;
        // The host-check listener (host_check): the same address and port, over TCP. Without
        // it the others cannot confirm our death early; they fall back to the suspicion
        // timeout, so a failure here is not fatal.
        let listener = match tokio::net::TcpListener::bind(local_addr).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(addr = %local_addr, %error,
                    "membership: cannot listen on TCP for host checks; others will wait the \
                     suspicion timeout to declare this speaker down");
                None
            }
        };
        let mut advertise = cfg.advertise;
        if advertise.port() == 0 {
            advertise.set_port(local_addr.port());
        }
        let identity = SpeakerId {
            name: cfg.node.clone(),
            addr: advertise,
            boot: transport::boot_id(),
        };
        let (live_tx, live_rx) = watch::channel(LiveSet::from([cfg.node.clone()]));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(transport::Counters::default());
        let (rejoins_tx, rejoins) = watch::channel(0);
        let task = tokio::spawn(transport::run(transport::Task::new(
            identity.clone(),
            &cfg,
            transport::Sockets {
                udp: socket,
                host_check: listener,
            },
            command_rx,
            live_tx,
            rejoins_tx,
            counters.clone(),
        )));
        let handle = Membership {
            commands,
            counters,
            live: live_rx.clone(),
            rejoins,
            identity,
            local_addr,
            task,
        };
        Ok((handle, live_rx))
    }

    /// Replaces the seed list: addresses of the other speakers (port included). Seeds that are
    /// not members are sent a join request now and every `announce_period`; our own address
    /// may be in the list.
    pub fn set_seeds(&self, seeds: Vec<SocketAddr>) {
        // A closed channel means the task is gone; there is nothing left to seed.
        let _ = self.commands.send(Command::SetSeeds(seeds));
    }

    /// Graceful stop: tells every member that we leave (they drop us at once instead of after
    /// failure detection), then stops the task.
    pub async fn leave(self, deadline: Duration) -> Result<(), MembershipError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.commands
            .send(Command::Leave(done_tx))
            .map_err(|_| MembershipError::Stopped)?;
        match tokio::time::timeout(deadline, done_rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(MembershipError::Stopped),
            Err(_) => Err(MembershipError::LeaveTimeout(deadline)),
        }
    }

    /// Counters and the current member count.
    pub fn stats(&self) -> MembershipStats {
        let mut stats = self.counters.snapshot();
        stats.members = self.live.borrow().len();
        stats
    }

    /// Counts the times the others declared us down and we rejoined (under a renewed
    /// identity): each time, what we announce may have been taken over meanwhile.
    pub fn rejoins(&self) -> watch::Receiver<u64> {
        self.rejoins.clone()
    }

    /// Our identity on the protocol.
    pub fn identity(&self) -> &SpeakerId {
        &self.identity
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address advertised to the others (what they should have as seed).
    pub fn advertise_addr(&self) -> SocketAddr {
        self.identity.addr
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timers_are_sane() {
        let t = Timers::default();
        assert!(t.validate().is_ok());
        assert!(
            t.probe_rtt * 2 <= t.probe_period,
            "room for the indirect probe"
        );
        // A confirmed death: worst-case probe cycle + host check; the verdict is gossiped at
        // once. It must stay within the 300 ms failover budget (p99).
        let host_check = t.host_check_timeout.expect("host checks are on by default");
        assert!(t.probe_period * 2 + host_check <= Duration::from_millis(300));
        // A stall of 200 ms that starts right at a probe must be refuted in time.
        assert!(
            t.probe_period + t.suspect_to_down >= Duration::from_millis(200) + t.gossip_period * 2,
            "a stalled suspect gets a chance to refute"
        );
        assert!(host_check < t.probe_rtt);
        assert!(t.max_clock_skew >= Duration::from_secs(1));
    }

    #[test]
    fn invalid_timers_are_refused() {
        let t = Timers {
            probe_rtt: Duration::from_millis(100),
            ..Timers::default()
        };
        assert!(matches!(
            t.validate(),
            Err(MembershipError::InvalidTimers(_))
        ));
        let t = Timers {
            suspect_to_down: Duration::ZERO,
            ..Timers::default()
        };
        assert!(t.validate().is_err());
    }
}
