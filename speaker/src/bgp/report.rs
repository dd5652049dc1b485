//! Tells the cluster and the metrics about one BGP session: a small task beside each session
//! task, watching its [`SessionStatus`]. It
//!
//! - hands the session's state to the status task (the `BGPSessionState` object), which never
//!   makes the session wait on the API server;
//! - records an Event on the BGPPeer when the session becomes Established or goes down;
//! - keeps the session's metrics current (up, prefixes, messages by type, flaps).
//!
//! It ends with the session task (its status sender is dropped), and then removes what it
//! published. A session restarted under the same peer name (a changed configuration) gets a new
//! generation, so the old reporter's removal never erases the new session's state.

use std::time::{Instant, SystemTime};

use k8s_openapi::jiff::{Timestamp, Unit};
use tokio::sync::watch;

use super::fsm::State;
use super::session::{MessageCounts, SessionStatus};
use crate::metrics::Metrics;
use crate::status::{
    EVENT_REASON_SESSION_DOWN, EVENT_REASON_SESSION_UP, Regarding, SessionReport, StatusEvent,
    StatusHandle,
};

/// Where the reports go.
#[derive(Debug, Clone)]
pub struct Reporting {
    pub node: String,
    pub status: StatusHandle,
    pub metrics: Metrics,
}

/// Reports the session with `peer` (a BGPPeer name) until its task ends.
pub async fn run(
    peer: String,
    generation: u64,
    mut status: watch::Receiver<SessionStatus>,
    reporting: Reporting,
) {
    let mut reporter = Reporter::new(peer, generation, reporting);
    loop {
        let current = status.borrow_and_update().clone();
        reporter.observe(&current);
        if status.changed().await.is_err() {
            break;
        }
    }
    reporter.finish();
}

struct Reporter {
    peer: String,
    generation: u64,
    reporting: Reporting,
    was_up: bool,
    flaps: u64,
    sent: MessageCounts,
    received: MessageCounts,
    /// The wall-clock time of the current session's start, computed once per session (the
    /// status carries a monotonic instant).
    established: Option<(Instant, String)>,
}

impl Reporter {
    fn new(peer: String, generation: u64, reporting: Reporting) -> Self {
        Self {
            peer,
            generation,
            reporting,
            was_up: false,
            flaps: 0,
            sent: MessageCounts::default(),
            received: MessageCounts::default(),
            established: None,
        }
    }

    fn observe(&mut self, status: &SessionStatus) {
        let is_up = status.state == State::Established;
        let node = &self.reporting.node;
        if is_up && !self.was_up {
            let asn = status.negotiated.as_ref().map(|n| n.peer_asn);
            self.reporting.status.event(StatusEvent {
                regarding: Regarding::Peer(self.peer.clone()),
                warning: false,
                reason: EVENT_REASON_SESSION_UP,
                action: "Connect",
                note: format!(
                    "node {node}: BGP session with {} (AS {}) established",
                    status.peer,
                    asn.map_or_else(|| "?".to_string(), |a| a.to_string())
                ),
            });
        } else if self.was_up && !is_up {
            self.flaps += 1;
            self.reporting
                .metrics
                .bgp_session_flaps
                .get_or_create(&Metrics::peer(&self.peer))
                .inc();
            self.reporting.status.event(StatusEvent {
                regarding: Regarding::Peer(self.peer.clone()),
                warning: true,
                reason: EVENT_REASON_SESSION_DOWN,
                action: "Disconnect",
                note: format!(
                    "node {node}: BGP session with {} down: {}",
                    status.peer,
                    status.last_error.as_deref().unwrap_or("closed")
                ),
            });
        }
        self.was_up = is_up;
        let report = SessionReport {
            address: status.peer.to_string(),
            state: status.state.to_string(),
            established_time: self.established_time(status),
            prefixes_sent: u64::try_from(status.prefixes_sent).unwrap_or(u64::MAX),
            last_error: status.last_error.clone(),
            flaps: self.flaps,
            bfd_state: status.bfd.map(|bfd| bfd.state.to_string()),
        };
        let current =
            self.reporting
                .status
                .publish_session(&self.peer, self.generation, Some(report));
        if current {
            self.update_metrics(status, is_up);
        }
    }

    fn established_time(&mut self, status: &SessionStatus) -> Option<String> {
        let at = status
            .established_at
            .filter(|_| status.state == State::Established)?;
        match &self.established {
            Some((known, text)) if *known == at => Some(text.clone()),
            _ => {
                let wall = SystemTime::now() - at.elapsed();
                let text = Timestamp::try_from(wall)
                    .ok()
                    .and_then(|t| t.round(Unit::Second).ok())
                    .map(|t| t.to_string())?;
                self.established = Some((at, text.clone()));
                Some(text)
            }
        }
    }

    fn update_metrics(&mut self, status: &SessionStatus, is_up: bool) {
        let metrics = &self.reporting.metrics;
        let labels = Metrics::peer(&self.peer);
        metrics
            .bgp_session_up
            .get_or_create(&labels)
            .set(i64::from(is_up));
        metrics
            .bgp_prefixes_advertised
            .get_or_create(&labels)
            .set(i64::try_from(status.prefixes_sent).unwrap_or(i64::MAX));
        // The session's counts start at 0 with each session task; the counters keep adding.
        for ((kind, now), (_, before)) in status.sent.by_type().into_iter().zip(self.sent.by_type())
        {
            if now > before {
                metrics
                    .bgp_messages_sent
                    .get_or_create(&Metrics::message(&self.peer, kind))
                    .inc_by(now - before);
            }
        }
        for ((kind, now), (_, before)) in status
            .received
            .by_type()
            .into_iter()
            .zip(self.received.by_type())
        {
            if now > before {
                metrics
                    .bgp_messages_received
                    .get_or_create(&Metrics::message(&self.peer, kind))
                    .inc_by(now - before);
            }
        }
        self.sent = status.sent;
        self.received = status.received;
    }

    /// The session is gone: its state object and gauges go with it (the counters stay).
    fn finish(self) {
        let removed = self
            .reporting
            .status
            .publish_session(&self.peer, self.generation, None);
        if !removed {
            // A newer session with this peer reports now.
            return;
        }
        let labels = Metrics::peer(&self.peer);
        self.reporting.metrics.bgp_session_up.remove(&labels);
        self.reporting
            .metrics
            .bgp_prefixes_advertised
            .remove(&labels);
    }
}
