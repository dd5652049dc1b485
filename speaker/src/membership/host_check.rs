//! Confirming a suspicion from the suspect's own kernel, so that a dead speaker is declared down
//! well before the suspicion timeout while a merely stalled one is not.
//!
//! SWIM alone cannot tell a dead speaker from one that is not running for a moment (SIGSTOP, a
//! VM pause, CPU starvation): both leave probes unanswered. The suspicion timeout has to be
//! longer than the stalls to be tolerated, which makes every real failover that much slower.
//! The suspect's kernel can tell them apart. Each speaker also listens on TCP at its membership
//! address (the port memberlist, hence MetalLB, already needs open on TCP and UDP), and a TCP
//! connect to it while the speaker is suspect answers:
//!
//! - handshake completed ([`Answer::Listening`]): the socket exists, so the process does; the
//!   kernel completes the handshake even while the process is stopped. The suspicion runs its
//!   course (the speaker may refute it).
//! - refused ([`Answer::Refused`]): the kernel is up but nothing listens: the speaker process is
//!   gone (SIGKILL, crash, OOM). Down now.
//! - nothing within the timeout, or unreachable ([`Answer::Silent`]): the host is gone or cut
//!   off (link down, power). Down now.
//!
//! A peer's answers are only trusted once it has been seen listening (a baseline check when it
//! comes up, repeated while it has not answered): a speaker from before this mechanism refuses
//! every connect, and a firewall that drops TCP on this port makes every connect silent. Such a
//! peer keeps SWIM's plain suspicion timeout.
//!
//! This module is the pure bookkeeping: which checks to run, and what an answer means. The
//! membership task runs the connects and applies the verdicts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::SpeakerId;

/// What a TCP connect to a speaker's membership address found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The handshake completed: the speaker's socket exists.
    Listening,
    /// Connection refused: the host is up, nothing listens on the port.
    Refused,
    /// No answer within the timeout, or the host is unreachable.
    Silent,
}

/// Why a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Learn whether the peer's answers can be trusted (it is alive now, so it must listen).
    Baseline,
    /// The peer is suspect: find out whether it is dead.
    Suspicion,
}

/// A check to run: connect to `peer.addr` over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub peer: SpeakerId,
    pub purpose: Purpose,
}

/// A suspicion confirmed: the peer is dead, declare it down now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dead {
    /// The host answered but nothing listens: the speaker process is gone.
    ProcessGone,
    /// The host did not answer: it is down or cut off.
    HostGone,
}

impl Dead {
    pub fn label(self) -> &'static str {
        match self {
            Dead::ProcessGone => "the speaker's port is closed (process gone)",
            Dead::HostGone => "the host does not answer (down or cut off)",
        }
    }
}

/// How a member looks to foca, as far as the checks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Alive,
    Suspect,
}

#[derive(Debug, Default)]
struct Peer {
    /// It was seen listening: a refused or silent connect means dead.
    trusted: bool,
    /// A check is running.
    in_flight: bool,
    /// When the last baseline check started (untrusted peers are re-checked now and then).
    last_baseline: Option<Instant>,
    /// The current suspicion was already checked (one check per suspicion).
    suspicion_checked: bool,
}

/// Bookkeeping of the host checks, one entry per active member.
#[derive(Debug)]
pub struct HostChecks {
    /// How often an untrusted peer gets its baseline check again.
    recheck_untrusted: Duration,
    peers: HashMap<SpeakerId, Peer>,
}

impl HostChecks {
    pub fn new(recheck_untrusted: Duration) -> Self {
        Self {
            recheck_untrusted,
            peers: HashMap::new(),
        }
    }

    /// Given every active member and how foca sees it, the checks to start now. Members not
    /// listed (down, gone) are forgotten.
    pub fn plan<'a>(
        &mut self,
        members: impl Iterator<Item = (&'a SpeakerId, Seen)>,
        now: Instant,
    ) -> Vec<Check> {
        let mut checks = Vec::new();
        let mut listed = Vec::new();
        for (id, seen) in members {
            listed.push(id.clone());
            let peer = self.peers.entry(id.clone()).or_default();
            if peer.in_flight {
                continue;
            }
            match seen {
                Seen::Alive => {
                    peer.suspicion_checked = false;
                    let due = peer.last_baseline.is_none_or(|at| {
                        now.saturating_duration_since(at) >= self.recheck_untrusted
                    });
                    if !peer.trusted && due {
                        peer.in_flight = true;
                        peer.last_baseline = Some(now);
                        checks.push(Check {
                            peer: id.clone(),
                            purpose: Purpose::Baseline,
                        });
                    }
                }
                Seen::Suspect if peer.trusted && !peer.suspicion_checked => {
                    peer.in_flight = true;
                    peer.suspicion_checked = true;
                    checks.push(Check {
                        peer: id.clone(),
                        purpose: Purpose::Suspicion,
                    });
                }
                Seen::Suspect => {}
            }
        }
        self.peers.retain(|id, _| listed.contains(id));
        checks
    }

    /// Records an answer; `Some` when it confirms the suspicion.
    pub fn answered(&mut self, check: &Check, answer: Answer) -> Option<Dead> {
        let peer = self.peers.get_mut(&check.peer)?;
        peer.in_flight = false;
        match check.purpose {
            Purpose::Baseline => {
                peer.trusted = answer == Answer::Listening;
                None
            }
            Purpose::Suspicion => match answer {
                Answer::Listening => None,
                Answer::Refused => Some(Dead::ProcessGone),
                Answer::Silent => Some(Dead::HostGone),
            },
        }
    }

    /// Whether `peer`'s answers are trusted (for tests and logs).
    pub fn is_trusted(&self, peer: &SpeakerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.trusted)
    }
}

/// Connects to `peer` over TCP within `timeout` and closes the connection again.
pub async fn probe(peer: std::net::SocketAddr, timeout: Duration) -> Answer {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(peer)).await {
        Ok(Ok(_stream)) => Answer::Listening,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => Answer::Refused,
        // Unreachable host or network, or the timeout: nobody there answers.
        Ok(Err(_)) | Err(_) => Answer::Silent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> SpeakerId {
        SpeakerId {
            name: name.into(),
            addr: "192.0.2.1:7946".parse().unwrap(),
            boot: 1,
        }
    }

    const RECHECK: Duration = Duration::from_secs(10);

    /// Runs one baseline check of `peer` with `answer`.
    fn baseline(checks: &mut HostChecks, peer: &SpeakerId, answer: Answer, now: Instant) {
        let planned = checks.plan([(peer, Seen::Alive)].into_iter(), now);
        assert_eq!(
            planned,
            vec![Check {
                peer: peer.clone(),
                purpose: Purpose::Baseline
            }]
        );
        assert_eq!(checks.answered(&planned[0], answer), None);
    }

    #[test]
    fn a_trusted_suspect_is_checked_once_and_its_answer_decides() {
        let t0 = Instant::now();
        for (answer, verdict) in [
            (Answer::Listening, None),
            (Answer::Refused, Some(Dead::ProcessGone)),
            (Answer::Silent, Some(Dead::HostGone)),
        ] {
            let mut checks = HostChecks::new(RECHECK);
            let a = id("a");
            baseline(&mut checks, &a, Answer::Listening, t0);
            assert!(checks.is_trusted(&a));
            // Alive and trusted: nothing more to check.
            assert!(checks.plan([(&a, Seen::Alive)].into_iter(), t0).is_empty());
            let planned = checks.plan([(&a, Seen::Suspect)].into_iter(), t0);
            assert_eq!(planned.len(), 1);
            assert_eq!(planned[0].purpose, Purpose::Suspicion);
            // While it runs, and after it answered, the same suspicion is not checked again.
            assert!(
                checks
                    .plan([(&a, Seen::Suspect)].into_iter(), t0)
                    .is_empty()
            );
            assert_eq!(checks.answered(&planned[0], answer), verdict, "{answer:?}");
            assert!(
                checks
                    .plan([(&a, Seen::Suspect)].into_iter(), t0)
                    .is_empty()
            );
            // It refuted; the next suspicion gets its own check.
            assert!(checks.plan([(&a, Seen::Alive)].into_iter(), t0).is_empty());
            assert_eq!(checks.plan([(&a, Seen::Suspect)].into_iter(), t0).len(), 1);
        }
    }

    #[test]
    fn a_peer_never_seen_listening_keeps_the_plain_suspicion_timeout() {
        // An older speaker refuses every connect; a firewall may make every connect silent.
        let t0 = Instant::now();
        for answer in [Answer::Refused, Answer::Silent] {
            let mut checks = HostChecks::new(RECHECK);
            let a = id("a");
            baseline(&mut checks, &a, answer, t0);
            assert!(!checks.is_trusted(&a));
            assert!(
                checks
                    .plan([(&a, Seen::Suspect)].into_iter(), t0)
                    .is_empty()
            );
            // Re-checked only after the interval, then trusted once it listens.
            assert!(checks.plan([(&a, Seen::Alive)].into_iter(), t0).is_empty());
            baseline(&mut checks, &a, Answer::Listening, t0 + RECHECK);
            assert!(checks.is_trusted(&a));
        }
    }

    #[test]
    fn members_that_left_are_forgotten_and_a_late_answer_is_ignored() {
        let t0 = Instant::now();
        let mut checks = HostChecks::new(RECHECK);
        let (a, b) = (id("a"), id("b"));
        let planned = checks.plan([(&a, Seen::Alive), (&b, Seen::Alive)].into_iter(), t0);
        assert_eq!(planned.len(), 2);
        // a is gone (declared down) before its check answers.
        checks.plan([(&b, Seen::Alive)].into_iter(), t0);
        assert_eq!(checks.answered(&planned[0], Answer::Refused), None);
        assert!(!checks.is_trusted(&a));
        // A restarted a (new boot) is a new peer: baseline first.
        let a2 = SpeakerId { boot: 2, ..a };
        let planned = checks.plan([(&a2, Seen::Suspect)].into_iter(), t0);
        assert!(planned.is_empty(), "untrusted until seen listening");
    }
}
