//! Round-trip times of the membership's direct probes (SWIM `Ping` → `Ack`).
//!
//! foca measures nothing: it only checks that the `Ack` of its current probe arrived before the
//! probe timeout. But every datagram passes through our transport, and foca's header (sender,
//! destination, message with its probe number) is encoded with the same public codec foca uses
//! ([`foca::PostcardCodec`]), so the transport decodes the header of what it sends and what it
//! receives: a `Ping(n)` to a peer starts a measurement, the `Ack(n)` from that peer ends it.
//!
//! Only direct probes are measured. An indirect probe (`PingReq` → `IndirectPing` →
//! `IndirectAck` → `ForwardedAck`) takes two hops through a third member and only happens after
//! a direct probe went unanswered; its time is not a round trip to the probed peer, and would
//! blur the distribution operators compare with the probe timeout.
//!
//! [`PendingProbes`] is pure (the caller passes the clock) and bounded: foca runs one probe at a
//! time, so a handful of entries suffice; the oldest is evicted when full, and a ping older than
//! `max_age` (the probe period: by then foca has started its next probe) no longer matches.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use foca::{Codec, Header, Message, PostcardCodec, ProbeNumber};

use super::SpeakerId;

/// How many pings may wait for their ack at once. foca has one direct probe in flight (a new
/// one every probe period); the rest is room for acks that cross a probe boundary.
pub(super) const PENDING_CAPACITY: NonZeroUsize = match NonZeroUsize::new(16) {
    Some(capacity) => capacity,
    None => NonZeroUsize::MIN,
};

/// foca's header of a payload, or `None` if it does not decode (the transport still hands the
/// payload to foca, which reports the error itself).
fn header(payload: &[u8]) -> Option<Header<SpeakerId>> {
    <PostcardCodec as Codec<SpeakerId>>::decode_header(&mut PostcardCodec, payload).ok()
}

/// The peer and probe number of an outgoing direct probe (`Ping`); `None` for anything else.
/// Whether `payload` is foca's `TurnUndead` ("you were declared down").
pub(super) fn is_turn_undead(payload: &[u8]) -> bool {
    header(payload).is_some_and(|h| h.message == Message::TurnUndead)
}

pub(super) fn outgoing_ping(payload: &[u8]) -> Option<(SocketAddr, ProbeNumber)> {
    let header = header(payload)?;
    match header.message {
        Message::Ping(probe) => Some((header.dst.addr, probe)),
        _ => None,
    }
}

/// The peer and probe number of an incoming answer to a direct probe (`Ack`); `None` for
/// anything else.
pub(super) fn incoming_ack(payload: &[u8]) -> Option<(SocketAddr, ProbeNumber)> {
    let header = header(payload)?;
    match header.message {
        Message::Ack(probe) => Some((header.src.addr, probe)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingPing {
    peer: SocketAddr,
    probe: ProbeNumber,
    sent_at: Instant,
}

/// Pings waiting for their ack, oldest first.
#[derive(Debug)]
pub(super) struct PendingProbes {
    pending: VecDeque<PendingPing>,
    capacity: NonZeroUsize,
    max_age: Duration,
}

impl PendingProbes {
    /// At most `capacity` pings wait at once; one unanswered for longer than `max_age` is
    /// forgotten.
    pub(super) fn new(capacity: NonZeroUsize, max_age: Duration) -> PendingProbes {
        PendingProbes {
            pending: VecDeque::with_capacity(capacity.get()),
            capacity,
            max_age,
        }
    }

    /// Records that `Ping(probe)` went to `peer` at `sent_at`. Calls come in clock order (one
    /// task, a monotonic clock), so the queue stays sorted by time.
    pub(super) fn ping_sent(&mut self, peer: SocketAddr, probe: ProbeNumber, sent_at: Instant) {
        self.expire(sent_at);
        // foca's probe numbers wrap after 256 probes; a newer ping with the same number
        // replaces the old one, whose ack can no longer be told apart.
        self.pending
            .retain(|ping| (ping.peer, ping.probe) != (peer, probe));
        if self.pending.len() >= self.capacity.get() {
            self.pending.pop_front();
        }
        self.pending.push_back(PendingPing {
            peer,
            probe,
            sent_at,
        });
    }

    /// The round-trip time if `Ack(probe)` from `peer`, received at `received_at`, answers a
    /// ping still waiting; the ping is then done (a duplicate ack measures nothing).
    pub(super) fn ack_received(
        &mut self,
        peer: SocketAddr,
        probe: ProbeNumber,
        received_at: Instant,
    ) -> Option<Duration> {
        self.expire(received_at);
        let position = self
            .pending
            .iter()
            .position(|ping| (ping.peer, ping.probe) == (peer, probe))?;
        let ping = self.pending.remove(position)?;
        Some(received_at.saturating_duration_since(ping.sent_at))
    }

    /// Pings waiting now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
    }

    /// Forgets the pings older than `max_age` at `now`.
    fn expire(&mut self, now: Instant) {
        while self
            .pending
            .front()
            .is_some_and(|ping| now.saturating_duration_since(ping.sent_at) > self.max_age)
        {
            self.pending.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use foca::Incarnation;

    use super::*;

    const PROBE_PERIOD: Duration = Duration::from_millis(100);

    fn peer(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 7946))
    }

    fn id(n: u8) -> SpeakerId {
        SpeakerId {
            name: format!("node{n}"),
            addr: peer(n),
            boot: 1,
        }
    }

    /// A payload as foca encodes it: the header, then (for most messages) the updates.
    fn payload(src: u8, dst: u8, message: Message<SpeakerId>) -> Vec<u8> {
        let header = Header {
            src: id(src),
            src_incarnation: Incarnation::default(),
            dst: id(dst),
            message,
        };
        let mut buf = Vec::new();
        <PostcardCodec as Codec<SpeakerId>>::encode_header(&mut PostcardCodec, &header, &mut buf)
            .unwrap();
        // Zero piggybacked updates, as foca appends them after the header.
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf
    }

    fn table() -> PendingProbes {
        PendingProbes::new(PENDING_CAPACITY, PROBE_PERIOD)
    }

    #[test]
    fn recognises_pings_and_acks_in_foca_payloads() {
        assert_eq!(
            outgoing_ping(&payload(1, 2, Message::Ping(7))),
            Some((peer(2), 7))
        );
        assert_eq!(
            incoming_ack(&payload(2, 1, Message::Ack(7))),
            Some((peer(2), 7))
        );
        // Each direction only knows its own half.
        assert_eq!(incoming_ack(&payload(1, 2, Message::Ping(7))), None);
        assert_eq!(outgoing_ping(&payload(2, 1, Message::Ack(7))), None);
        // Indirect probes and everything else are not measured.
        for message in [
            Message::PingReq {
                target: id(3),
                probe_number: 7,
            },
            Message::IndirectPing {
                origin: id(1),
                probe_number: 7,
            },
            Message::IndirectAck {
                target: id(1),
                probe_number: 7,
            },
            Message::ForwardedAck {
                origin: id(3),
                probe_number: 7,
            },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::TurnUndead,
        ] {
            let bytes = payload(2, 1, message);
            assert_eq!(outgoing_ping(&bytes), None);
            assert_eq!(incoming_ack(&bytes), None);
        }
        // Garbage is not a probe (foca reports it as a protocol error).
        assert_eq!(incoming_ack(&[0xff; 3]), None);
        assert_eq!(outgoing_ping(&[]), None);
    }

    #[test]
    fn recognises_turn_undead() {
        assert!(is_turn_undead(&payload(1, 2, Message::TurnUndead)));
        assert!(!is_turn_undead(&payload(1, 2, Message::Ping(7))));
        assert!(!is_turn_undead(&payload(1, 2, Message::Announce)));
        assert!(!is_turn_undead(&[0xff; 3]));
    }

    #[test]
    fn an_ack_ends_the_matching_ping_once() {
        let mut probes = table();
        let t0 = Instant::now();
        probes.ping_sent(peer(2), 1, t0);
        let rtt = probes.ack_received(peer(2), 1, t0 + Duration::from_micros(350));
        assert_eq!(rtt, Some(Duration::from_micros(350)));
        assert_eq!(probes.len(), 0);
        // A duplicate (or replayed) ack measures nothing.
        assert_eq!(
            probes.ack_received(peer(2), 1, t0 + Duration::from_millis(1)),
            None
        );
    }

    #[test]
    fn acks_match_peer_and_probe_number() {
        let mut probes = table();
        let t0 = Instant::now();
        probes.ping_sent(peer(2), 1, t0);
        probes.ping_sent(peer(3), 2, t0 + Duration::from_millis(1));
        let later = t0 + Duration::from_millis(5);
        // Another peer's ack with our number, or the right peer with another number: no match.
        assert_eq!(probes.ack_received(peer(3), 1, later), None);
        assert_eq!(probes.ack_received(peer(2), 2, later), None);
        assert_eq!(probes.len(), 2);
        assert_eq!(
            probes.ack_received(peer(3), 2, later),
            Some(Duration::from_millis(4))
        );
        assert_eq!(
            probes.ack_received(peer(2), 1, later),
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn a_ping_older_than_the_probe_period_expires() {
        let mut probes = table();
        let t0 = Instant::now();
        probes.ping_sent(peer(2), 1, t0);
        // A late ack inside the probe period still counts (foca's probe is still running).
        probes.ping_sent(peer(3), 2, t0);
        assert_eq!(
            probes.ack_received(peer(3), 2, t0 + PROBE_PERIOD),
            Some(PROBE_PERIOD)
        );
        assert_eq!(
            probes.ack_received(peer(2), 1, t0 + PROBE_PERIOD + Duration::from_millis(1)),
            None
        );
        assert_eq!(probes.len(), 0, "the expired ping is forgotten");
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest() {
        let mut probes = table();
        let t0 = Instant::now();
        let capacity = PENDING_CAPACITY.get();
        // More unanswered pings than the table holds, all within the probe period.
        for n in 0..=capacity {
            let n = u8::try_from(n).unwrap();
            probes.ping_sent(peer(2), n, t0 + Duration::from_micros(u64::from(n)));
        }
        assert_eq!(probes.len(), capacity);
        let at = t0 + Duration::from_millis(1);
        assert_eq!(probes.ack_received(peer(2), 0, at), None, "evicted");
        assert!(probes.ack_received(peer(2), 1, at).is_some());
        let last = u8::try_from(capacity).unwrap();
        assert!(probes.ack_received(peer(2), last, at).is_some());
    }

    #[test]
    fn a_reused_probe_number_replaces_the_older_ping() {
        let mut probes = table();
        let t0 = Instant::now();
        probes.ping_sent(peer(2), 9, t0);
        let again = t0 + Duration::from_millis(50);
        probes.ping_sent(peer(2), 9, again);
        assert_eq!(probes.len(), 1);
        assert_eq!(
            probes.ack_received(peer(2), 9, again + Duration::from_millis(2)),
            Some(Duration::from_millis(2))
        );
    }
}
