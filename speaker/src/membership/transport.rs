//! The membership task: owns the UDP socket, the foca instance and its timer queue (no locks;
//! holo style). Inputs: datagrams, expired timers, commands from the handle, the seed tick.
//! Every foca call writes into an [`AccumulatingRuntime`], drained right after: datagrams are
//! sealed and sent, timers queued, and the live set republished.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foca::{
    AccumulatingRuntime, Foca, Member, NoCustomBroadcast, OwnedNotification, PeriodicParams, State,
};
use prometheus_client::metrics::histogram::Histogram;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::auth::{AuthError, AuthKey, HEADER_LEN, Opener, Sealer, TAG_LEN};
use super::host_check::{self, Answer, Check, HostChecks, Seen};
use super::probe_rtt::{self, PENDING_CAPACITY, PendingProbes};
use super::{Command, LiveSet, MembershipConfig, MembershipStats, SpeakerId, Timers};

/// Largest foca payload; with the auth overhead a datagram stays below 1472 bytes (no IP
/// fragmentation on a 1500-byte MTU).
const MAX_PAYLOAD: usize = 1400;

type SpeakerFoca = Foca<SpeakerId, foca::PostcardCodec, SmallRng, NoCustomBroadcast>;

/// Shared counters, written by the task, read by [`super::Membership::stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_out: AtomicU64,
    rejected_malformed: AtomicU64,
    rejected_bad_tag: AtomicU64,
    rejected_stale: AtomicU64,
    rejected_replayed: AtomicU64,
    protocol_errors: AtomicU64,
    send_errors: AtomicU64,
    members_up: AtomicU64,
    members_down: AtomicU64,
    members_restarted: AtomicU64,
    rejoins: AtomicU64,
    members_suspected: AtomicU64,
    members_refuted: AtomicU64,
    members_confirmed_down: AtomicU64,
    /// Gauges, not counters: the members foca holds as alive / suspect right now (ourselves
    /// not included), stored after every protocol step.
    members_alive: AtomicU64,
    members_suspect: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn rejected(&self, why: AuthError) {
        Self::bump(match why {
            AuthError::Malformed => &self.rejected_malformed,
            AuthError::BadTag => &self.rejected_bad_tag,
            AuthError::Stale => &self.rejected_stale,
            AuthError::Replayed => &self.rejected_replayed,
        });
    }

    pub(super) fn snapshot(&self) -> MembershipStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let count = |c: &AtomicU64| usize::try_from(get(c)).unwrap_or(usize::MAX);
        MembershipStats {
            members: 0,
            // We are alive as far as we know: foca never lists its own identity.
            members_alive: count(&self.members_alive).saturating_add(1),
            members_suspect: count(&self.members_suspect),
            datagrams_in: get(&self.datagrams_in),
            datagrams_out: get(&self.datagrams_out),
            bytes_out: get(&self.bytes_out),
            rejected_malformed: get(&self.rejected_malformed),
            rejected_bad_tag: get(&self.rejected_bad_tag),
            rejected_stale: get(&self.rejected_stale),
            rejected_replayed: get(&self.rejected_replayed),
            protocol_errors: get(&self.protocol_errors),
            send_errors: get(&self.send_errors),
            members_up: get(&self.members_up),
            members_down: get(&self.members_down),
            members_restarted: get(&self.members_restarted),
            rejoins: get(&self.rejoins),
            members_suspected: get(&self.members_suspected),
            members_refuted: get(&self.members_refuted),
            members_confirmed_down: get(&self.members_confirmed_down),
        }
    }
}

/// A new boot id: the wall clock in nanoseconds, so a restarted speaker's identity is newer.
pub(super) fn boot_id() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// foca configuration for our timers. Extensions on: periodic gossip (fast dissemination),
/// periodic announce (full roster), announce to down members and notify down members
/// (partition heal with identity renewal).
pub(super) fn foca_config(timers: &Timers) -> foca::Config {
    let three = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
    let mut config = foca::Config::simple();
    config.probe_period = timers.probe_period;
    config.probe_rtt = timers.probe_rtt;
    config.num_indirect_probes = three;
    config.max_transmissions = NonZeroU8::new(8).unwrap_or(NonZeroU8::MIN);
    config.suspect_to_down_after = timers.suspect_to_down;
    config.max_packet_size = NonZeroUsize::new(MAX_PAYLOAD).unwrap_or(NonZeroUsize::MIN);
    config.notify_down_members = true;
    config.periodic_announce = Some(PeriodicParams {
        frequency: timers.announce_period,
        num_members: NonZeroUsize::MIN,
    });
    config.periodic_announce_to_down_members = Some(PeriodicParams {
        frequency: timers.announce_period,
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    config.periodic_gossip = Some(PeriodicParams {
        frequency: timers.gossip_period,
        num_members: three,
    });
    config
}

struct Scheduled {
    at: Instant,
    seq: u64,
    timer: foca::Timer<SpeakerId>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The membership's sockets: the protocol's UDP socket, and the TCP listener that answers the
/// others' host checks (`None`: could not listen).
pub(super) struct Sockets {
    pub(super) udp: UdpSocket,
    pub(super) host_check: Option<TcpListener>,
}

pub(super) struct Task {
    identity: SpeakerId,
    foca: SpeakerFoca,
    foca_config: foca::Config,
    runtime: AccumulatingRuntime<SpeakerId>,
    socket: UdpSocket,
    sealer: Sealer,
    opener: Opener,
    timers: BinaryHeap<Reverse<Scheduled>>,
    timer_seq: u64,
    seeds: Vec<SocketAddr>,
    announce_period: Duration,
    commands: mpsc::UnboundedReceiver<Command>,
    live: watch::Sender<LiveSet>,
    /// Bumped each time the others declared us down and we rejoined under a new identity.
    rejoins: watch::Sender<u64>,
    counters: Arc<Counters>,
    send_buf: Vec<u8>,
    /// Our pings waiting for their ack, to time the round trip.
    probes: PendingProbes,
    /// Where the round-trip times go (`None`: not measured, nothing is decoded).
    probe_rtt: Option<Histogram>,
    /// The members foca held as suspect after the previous step, by (name, boot).
    suspects: BTreeSet<(String, u64)>,
    /// Accepts the others' host checks (`None`: could not listen).
    listener: Option<TcpListener>,
    /// Our host checks of the others.
    host_checks: HostChecks,
    /// `None`: host checks off.
    host_check_timeout: Option<Duration>,
    /// Answers of the running host checks.
    check_answers_tx: mpsc::UnboundedSender<(Check, Answer)>,
    check_answers: mpsc::UnboundedReceiver<(Check, Answer)>,
}

/// How long a baseline host check (learning whether a peer can be checked at all) may take:
/// it is not on any failover path, so a slow network does not make a peer untrusted.
const BASELINE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a peer not yet seen listening is checked again.
const RECHECK_UNTRUSTED: Duration = Duration::from_secs(10);

/// How the suspects changed between two protocol steps: members newly suspected, and former
/// suspects that are alive again (they refuted the suspicion). A suspect that is now down or
/// gone was not refuted; its `down` is counted by foca's notification.
pub(super) fn suspicion_changes<K: Ord>(
    before: &BTreeSet<K>,
    suspects: &BTreeSet<K>,
    alive: &BTreeSet<K>,
) -> (u64, u64) {
    let suspected = suspects.difference(before).count() as u64;
    let refuted = before
        .difference(suspects)
        .filter(|member| alive.contains(member))
        .count() as u64;
    (suspected, refuted)
}

impl Task {
    pub(super) fn new(
        identity: SpeakerId,
        cfg: &MembershipConfig,
        Sockets {
            udp: socket,
            host_check: listener,
        }: Sockets,
        commands: mpsc::UnboundedReceiver<Command>,
        live: watch::Sender<LiveSet>,
        rejoins: watch::Sender<u64>,
        counters: Arc<Counters>,
    ) -> Self {
        let (check_answers_tx, check_answers) = mpsc::unbounded_channel();
        // Randomness only spreads probes; it need not be secret. The nonce only has to differ
        // between processes sharing the Secret.
        let random = RandomState::new().hash_one(identity.boot);
        let nonce = identity.boot ^ random.rotate_left(17);
        let foca_config = foca_config(&cfg.timers);
        let key = AuthKey::derive(&cfg.secret);
        Self {
            foca: Foca::new(
                identity.clone(),
                foca_config.clone(),
                SmallRng::seed_from_u64(random),
                foca::PostcardCodec,
            ),
            identity,
            foca_config,
            runtime: AccumulatingRuntime::new(),
            socket,
            sealer: Sealer::new(key.clone(), nonce),
            opener: Opener::new(key, cfg.timers.max_clock_skew),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            seeds: Vec::new(),
            announce_period: cfg.timers.announce_period,
            commands,
            live,
            rejoins,
            counters,
            send_buf: Vec::with_capacity(HEADER_LEN + MAX_PAYLOAD + TAG_LEN),
            // A ping unanswered after a probe period belongs to a probe foca has given up.
            probes: PendingProbes::new(PENDING_CAPACITY, cfg.timers.probe_period),
            probe_rtt: cfg.probe_rtt.clone(),
            suspects: BTreeSet::new(),
            listener,
            host_checks: HostChecks::new(RECHECK_UNTRUSTED),
            host_check_timeout: cfg.timers.host_check_timeout,
            check_answers_tx,
            check_answers,
        }
    }

    /// Starts the host checks the current membership calls for; each reports on
    /// `check_answers`.
    fn start_host_checks(&mut self) {
        let Some(suspicion_timeout) = self.host_check_timeout else {
            return;
        };
        let members = self.foca.iter_members().filter_map(|m| match m.state() {
            State::Alive => Some((m.id(), Seen::Alive)),
            State::Suspect => Some((m.id(), Seen::Suspect)),
            State::Down => None,
        });
        for check in self.host_checks.plan(members, std::time::Instant::now()) {
            let timeout = match check.purpose {
                host_check::Purpose::Baseline => BASELINE_CHECK_TIMEOUT,
                host_check::Purpose::Suspicion => suspicion_timeout,
            };
            let answers = self.check_answers_tx.clone();
            tokio::spawn(async move {
                let answer = host_check::probe(check.peer.addr, timeout).await;
                // The membership task is gone: nobody needs the answer.
                let _ = answers.send((check, answer));
            });
        }
    }

    /// A host check answered: a confirmed suspicion declares the suspect down now, and tells
    /// the others at once instead of at the next gossip round.
    fn host_check_answered(&mut self, check: Check, answer: Answer) {
        let Some(dead) = self.host_checks.answered(&check, answer) else {
            if check.purpose == host_check::Purpose::Suspicion {
                tracing::debug!(node = %check.peer.name, ?answer,
                    "membership: suspect's host check: it exists, the suspicion runs its course");
            }
            return;
        };
        // Only if it is still suspect: it may have refuted, or been declared down, meanwhile.
        let still_suspect = self
            .foca
            .iter_members()
            .any(|m| m.id() == &check.peer && m.state() == State::Suspect);
        if !still_suspect {
            return;
        }
        tracing::info!(node = %check.peer.name, addr = %check.peer.addr, reason = dead.label(),
            "membership: suspicion confirmed by a host check; declaring it down");
        Counters::bump(&self.counters.members_confirmed_down);
        let down = std::iter::once(Member::down(check.peer));
        if let Err(error) = self.foca.apply_many(down, true, &mut self.runtime) {
            tracing::debug!(%error, "membership: cannot declare the suspect down");
        }
        if let Err(error) = self.foca.gossip(&mut self.runtime) {
            tracing::debug!(%error, "membership: cannot gossip the verdict");
        }
    }

    fn announce_to_seeds(&mut self) {
        for seed in self.seeds.clone() {
            // Nodes list an InternalIP of each family; the other family's seed cannot be sent
            // to from our socket (it would fail every second, EAFNOSUPPORT).
            let other_family = seed.is_ipv6() != self.identity.addr.is_ipv6();
            if other_family
                || seed == self.identity.addr
                || self.foca.iter_members().any(|m| m.id().addr == seed)
            {
                continue;
            }
            if let Err(error) = self.foca.announce(SpeakerId::seed(seed), &mut self.runtime) {
                tracing::debug!(%seed, %error, "membership: announce failed");
            }
        }
    }

    /// Authenticates a datagram received at `received_at` and hands it to foca.
    fn handle_datagram(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        received_at: std::time::Instant,
    ) {
        let payload = match self.opener.open(datagram, unix_ms()) {
            Ok(payload) => payload,
            Err(why) => {
                self.counters.rejected(why);
                tracing::debug!(%from, reason = why.label(), "membership: datagram dropped");
                return;
            }
        };
        Counters::bump(&self.counters.datagrams_in);
        // Authenticated, so an ack that matches one of our pings is genuine.
        if let Some(histogram) = &self.probe_rtt
            && let Some((peer, probe)) = probe_rtt::incoming_ack(payload)
            && let Some(rtt) = self.probes.ack_received(peer, probe, received_at)
        {
            histogram.observe(rtt.as_secs_f64());
        }
        if let Err(error) = self.foca.handle_data(payload, &mut self.runtime) {
            Counters::bump(&self.counters.protocol_errors);
            tracing::debug!(%from, %error, "membership: datagram refused by the protocol");
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|Reverse(s)| s.at <= now) {
            let Some(Reverse(scheduled)) = self.timers.pop() else {
                break;
            };
            if let Err(error) = self.foca.handle_timer(scheduled.timer, &mut self.runtime) {
                tracing::debug!(%error, "membership: timer failed");
            }
        }
    }

    /// Leaves with a message to every member (foca's `leave_cluster` gossips to
    /// `num_indirect_probes` members), so that all drop us at once.
    fn leave(&mut self) {
        let mut config = self.foca_config.clone();
        config.num_indirect_probes =
            NonZeroUsize::new(self.foca.num_members()).unwrap_or(NonZeroUsize::MIN);
        if let Err(error) = self.foca.set_config(config) {
            tracing::debug!(%error, "membership: cannot widen the leave gossip");
        }
        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::warn!(%error, "membership: leave failed");
        }
    }

    /// foca 2.0 sends "you are down" (`TurnUndead`) when a suspicion times out even if the
    /// suspect refuted it meanwhile (the down is then not applied, but the message goes out),
    /// and the suspect renews its identity and announces again for nothing: every refuted
    /// suspicion would look like a restart. Such a message is to a member foca still holds as
    /// active; to a member it really declared down, or to an unknown sender, it goes out.
    fn refuted_turn_undead(&self, to: &SpeakerId, payload: &[u8]) -> bool {
        probe_rtt::is_turn_undead(payload) && self.foca.iter_members().any(|m| m.id() == to)
    }

    /// Executes what foca asked for: sends, timers, notifications; then republishes the set.
    async fn drain(&mut self) {
        while let Some((to, payload)) = self.runtime.to_send() {
            if self.refuted_turn_undead(&to, &payload) {
                tracing::debug!(node = %to.name,
                    "membership: not telling a suspect that refuted that it is down");
                continue;
            }
            self.sealer.seal(&payload, unix_ms(), &mut self.send_buf);
            let sent_at = std::time::Instant::now();
            match self.socket.send_to(&self.send_buf, to.addr).await {
                Ok(sent) => {
                    Counters::bump(&self.counters.datagrams_out);
                    self.counters
                        .bytes_out
                        .fetch_add(sent as u64, Ordering::Relaxed);
                    if self.probe_rtt.is_some()
                        && let Some((peer, probe)) = probe_rtt::outgoing_ping(&payload)
                    {
                        self.probes.ping_sent(peer, probe, sent_at);
                    }
                }
                Err(error) => {
                    Counters::bump(&self.counters.send_errors);
                    tracing::debug!(to = %to.addr, %error, "membership: send failed");
                }
            }
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.push(Reverse(Scheduled {
                at: Instant::now() + after,
                seq: self.timer_seq,
                timer,
            }));
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    Counters::bump(&self.counters.members_up);
                    tracing::info!(node = %id.name, addr = %id.addr, "membership: member up");
                }
                OwnedNotification::MemberDown(id) => {
                    Counters::bump(&self.counters.members_down);
                    tracing::info!(node = %id.name, addr = %id.addr, "membership: member down");
                }
                OwnedNotification::Rename(old, new) => {
                    Counters::bump(&self.counters.members_restarted);
                    tracing::info!(node = %new.name, old_boot = old.boot, new_boot = new.boot,
                        "membership: member restarted");
                }
                OwnedNotification::Rejoin(id) => {
                    Counters::bump(&self.counters.rejoins);
                    tracing::warn!(
                        boot = id.boot,
                        "membership: we were declared down; rejoined"
                    );
                    self.identity = id;
                    self.rejoins.send_modify(|n| *n += 1);
                }
                OwnedNotification::Defunct => {
                    tracing::debug!("membership: declared down");
                }
                OwnedNotification::Active | OwnedNotification::Idle => {}
            }
        }
        let (mut alive, mut suspects) = (BTreeSet::new(), BTreeSet::new());
        for member in self.foca.iter_members() {
            let key = (member.id().name.clone(), member.id().boot);
            match member.state() {
                State::Alive => drop(alive.insert(key)),
                State::Suspect => drop(suspects.insert(key)),
                State::Down => {}
            }
        }
        let (suspected, refuted) = suspicion_changes(&self.suspects, &suspects, &alive);
        self.counters
            .members_suspected
            .fetch_add(suspected, Ordering::Relaxed);
        self.counters
            .members_refuted
            .fetch_add(refuted, Ordering::Relaxed);
        self.counters
            .members_alive
            .store(alive.len() as u64, Ordering::Relaxed);
        self.counters
            .members_suspect
            .store(suspects.len() as u64, Ordering::Relaxed);
        self.suspects = suspects;
        self.start_host_checks();
        let mut live: LiveSet = self
            .foca
            .iter_members()
            .map(|m| m.id().name.clone())
            .collect();
        live.insert(self.identity.name.clone());
        self.live.send_if_modified(|current| {
            if *current == live {
                false
            } else {
                *current = live;
                true
            }
        });
    }
}

pub(super) async fn run(mut task: Task) {
    let mut recv_buf = vec![0u8; 65536];
    let mut seed_tick = tokio::time::interval(task.announce_period);
    seed_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_timer = task.timers.peek().map(|Reverse(s)| s.at);
        tokio::select! {
            command = task.commands.recv() => match command {
                // The handle is gone: stop silently.
                None => return,
                Some(Command::SetSeeds(seeds)) => {
                    task.seeds = seeds;
                    task.announce_to_seeds();
                }
                Some(Command::Leave(done)) => {
                    task.leave();
                    task.drain().await;
                    let _ = done.send(());
                    return;
                }
            },
            received = task.socket.recv_from(&mut recv_buf) => match received {
                Ok((len, from)) => {
                    task.handle_datagram(&recv_buf[..len], from, std::time::Instant::now());
                }
                // ICMP errors surface here on some systems; they say nothing about membership.
                Err(error) => tracing::debug!(%error, "membership: receive failed"),
            },
            () = sleep_until_opt(next_timer) => task.fire_due_timers(),
            Some((check, answer)) = task.check_answers.recv() => {
                task.host_check_answered(check, answer);
            }
            // A host check of us: the completed handshake was the answer.
            accepted = accept_opt(task.listener.as_ref()) => {
                if let Err(error) = accepted {
                    tracing::debug!(%error, "membership: accepting a host check failed");
                }
            }
            _ = seed_tick.tick() => task.announce_to_seeds(),
        }
        task.drain().await;
    }
}

async fn accept_opt(listener: Option<&TcpListener>) -> std::io::Result<()> {
    match listener {
        Some(listener) => listener.accept().await.map(drop),
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn suspicions_and_refutations_are_told_apart_from_deaths() {
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        // b becomes suspect; c was suspect and is alive again; d was suspect and is gone.
        let before = set(&["c", "d"]);
        let suspects = set(&["b"]);
        let alive = set(&["a", "c"]);
        assert_eq!(super::suspicion_changes(&before, &suspects, &alive), (1, 1));
        assert_eq!(
            super::suspicion_changes(&suspects, &suspects, &alive),
            (0, 0)
        );
    }
}
