//! The speaker's Prometheus metrics (prometheus-client), served by [`crate::http`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::membership::MembershipStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IfaceLabels {
    pub interface: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub interface: String,
    pub reason: String,
}

/// One announcement: a Service's IP, by protocol, from this node (MetalLB's
/// `metallb_speaker_announced` labels).
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct AnnouncedLabels {
    /// `namespace/name`
    pub service: String,
    pub ip: String,
    /// `layer2` or `bgp`
    pub protocol: String,
    pub node: String,
}

/// Why the membership dropped a datagram: `malformed`, `bad_tag`, `stale`, `replayed`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: String,
}

/// A membership state transition: `up`, `down`, `restarted`, `rejoined`, `suspected`,
/// `refuted`, `confirmed_down`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub transition: String,
}

/// A membership state: `alive` or `suspect`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// One Service IP this node announces.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpLabels {
    pub ip: String,
}

/// Upper bounds (seconds) of `membership_probe_rtt_seconds`: LAN round trips from 100 µs, the
/// default ack timeout (40 ms: a later ack made foca start indirect probes) and the default
/// probe period (100 ms: the longest a ping waits for its ack to be timed).
pub const PROBE_RTT_BUCKETS: [f64; 10] = [
    0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.1,
];

/// `membership_probe_rtt_seconds`: round-trip times of the membership's direct probes.
#[derive(Debug, Clone)]
pub struct ProbeRttHistogram(Histogram);

impl Default for ProbeRttHistogram {
    fn default() -> Self {
        ProbeRttHistogram(Histogram::new(PROBE_RTT_BUCKETS))
    }
}

impl ProbeRttHistogram {
    /// A handle on the same histogram, for the membership to observe into.
    pub fn handle(&self) -> Histogram {
        self.0.clone()
    }
}

/// The per-IP layer2 counters (MetalLB's `metallb_layer2_*{ip}`), for the IPs this node
/// announces only: a request for another node's IP stays counted per interface. An IP's series
/// are created at 0 when this node starts announcing it and removed when it stops, so the
/// cardinality is the announced set; a counter that restarts from 0 when the IP comes back is
/// what `increase()` and `rate()` expect.
#[derive(Debug, Clone, Default)]
pub struct Layer2IpCounters {
    /// The IPs that have series. Counting and withdrawing both hold it, so a frame counted
    /// just as its IP is withdrawn cannot bring the removed series back.
    announced: Arc<Mutex<BTreeSet<IpAddr>>>,
    requests_received: Family<IpLabels, Counter>,
    responses_sent: Family<IpLabels, Counter>,
    gratuitous_sent: Family<IpLabels, Counter>,
}

impl Layer2IpCounters {
    fn families(&self) -> [&Family<IpLabels, Counter>; 3] {
        [
            &self.requests_received,
            &self.responses_sent,
            &self.gratuitous_sent,
        ]
    }

    /// This node now announces exactly `ips`: new ones get series at 0, the others lose theirs.
    pub fn set_announced(&self, ips: impl IntoIterator<Item = IpAddr>) {
        let now: BTreeSet<IpAddr> = ips.into_iter().collect();
        let mut announced = self
            .announced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for gone in announced.difference(&now) {
            let labels = Metrics::ip(*gone);
            for family in self.families() {
                family.remove(&labels);
            }
        }
        for new in now.difference(&announced) {
            let labels = Metrics::ip(*new);
            for family in self.families() {
                // Created at 0, so that `increase()` sees the first frame counted.
                drop(family.get_or_create(&labels));
            }
        }
        *announced = now;
    }

    /// An ARP request or Neighbor Solicitation for `ip` arrived.
    pub fn request_received(&self, ip: IpAddr) {
        self.count(&self.requests_received, ip);
    }

    /// An ARP reply or Neighbor Advertisement for `ip` was sent.
    pub fn response_sent(&self, ip: IpAddr) {
        self.count(&self.responses_sent, ip);
    }

    /// A gratuitous ARP or unsolicited NA frame for `ip` was sent.
    pub fn gratuitous_sent(&self, ip: IpAddr) {
        self.count(&self.gratuitous_sent, ip);
    }

    /// Adds one to `ip`'s series of `family` if this node announces `ip`.
    fn count(&self, family: &Family<IpLabels, Counter>, ip: IpAddr) {
        let announced = self
            .announced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if announced.contains(&ip) {
            family.get_or_create(&Metrics::ip(ip)).inc();
        }
    }
}

/// One BGP session: the BGPPeer's name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// One BGP session and a message type (`open`, `update`, `notification`, `keepalive`,
/// `route_refresh`, `other`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub peer: String,
    pub r#type: String,
}

/// Every metric, cheap to clone (the handles share their values).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// ARP requests and Neighbor Solicitations received.
    pub requests_received: Family<IfaceLabels, Counter>,
    /// Replies sent.
    pub responses_sent: Family<IfaceLabels, Counter>,
    /// Gratuitous ARP / unsolicited NA frames sent.
    pub gratuitous_sent: Family<IfaceLabels, Counter>,
    /// Received requests not answered, by reason.
    pub dropped: Family<DropLabels, Counter>,
    /// Requests, responses and gratuitous frames per IP this node announces.
    pub layer2_ip: Layer2IpCounters,
    /// Layer2 IPs some node should announce, as this node's decision sees it (an eligible
    /// node under an L2Advertisement, live or not).
    pub layer2_ips_expected: Gauge,
    /// IPs this node announces.
    pub ips_owned: Gauge,
    /// Live members (all eligible nodes when membership is off).
    pub membership_size: Gauge,
    /// Configuration rebuilds rejected as invalid (the last valid one stays in force).
    pub config_invalid: Counter,
    /// Times every owned IP was announced again unasked (a stall, a rejoin, a speaker joined).
    pub reasserts: Counter,
    /// Status syncs that failed (the API server away, slow or refusing); retried with back-off.
    pub status_write_failures: Counter,
    /// Events dropped because the event queue was full (the API server away for long).
    pub status_events_dropped: Counter,
    /// 1 for each Service IP this node announces, by protocol (the cardinality is the
    /// announced set).
    pub announced: Family<AnnouncedLabels, Gauge>,
    /// Membership datagrams received that passed authentication.
    pub membership_datagrams_received: Counter,
    pub membership_datagrams_sent: Counter,
    /// Membership datagrams dropped before the protocol saw them, by reason.
    pub membership_datagrams_rejected: Family<RejectLabels, Counter>,
    /// Authenticated datagrams the protocol refused.
    pub membership_protocol_errors: Counter,
    /// Membership state transitions this node saw, by kind.
    pub membership_transitions: Family<TransitionLabels, Counter>,
    /// Live members by state (`alive`, `suspect`), while the membership runs.
    pub membership_members: Family<StateLabels, Gauge>,
    /// Round-trip times of the membership's direct probes.
    pub membership_probe_rtt: ProbeRttHistogram,
    /// 1 while this node's session with the peer is Established.
    pub bgp_session_up: Family<PeerLabels, Gauge>,
    /// Prefixes the peer has from this node.
    pub bgp_prefixes_advertised: Family<PeerLabels, Gauge>,
    pub bgp_messages_sent: Family<MessageLabels, Counter>,
    pub bgp_messages_received: Family<MessageLabels, Counter>,
    /// Established sessions that went down.
    pub bgp_session_flaps: Family<PeerLabels, Counter>,
    /// 1 while the BFD session for the BGPPeer is Up.
    pub bfd_session_up: Family<PeerLabels, Gauge>,
    pub bfd_session_state_changes: Family<PeerLabels, Counter>,
    pub bfd_control_packets_sent: Family<PeerLabels, Counter>,
    /// Control packets handed to the session (after the TTL and packet checks).
    pub bfd_control_packets_received: Family<PeerLabels, Counter>,
    /// BFD packets dropped, by reason (`ttl`, a parse error's label, `unknown_peer`,
    /// `queue_full`, or one the session discarded).
    pub bfd_packets_dropped: Family<RejectLabels, Counter>,
}

impl Metrics {
    /// The metrics and a registry holding them (prefix `ferrolb_speaker`).
    pub fn new() -> (Metrics, Registry) {
        let metrics = Metrics::default();
        // The root holds the unprefixed process_* metrics; ours are under `ferrolb_speaker_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(ferrolb_crds::process_metrics::ProcessCollector));
        let registry = root.sub_registry_with_prefix("ferrolb_speaker");
        registry.register(
            "layer2_requests_received",
            "ARP requests and Neighbor Solicitations received",
            metrics.requests_received.clone(),
        );
        registry.register(
            "layer2_responses_sent",
            "ARP replies and Neighbor Advertisements sent",
            metrics.responses_sent.clone(),
        );
        registry.register(
            "layer2_gratuitous_sent",
            "Gratuitous ARP and unsolicited Neighbor Advertisement frames sent",
            metrics.gratuitous_sent.clone(),
        );
        registry.register(
            "layer2_requests_dropped",
            "Requests not answered, by reason",
            metrics.dropped.clone(),
        );
        registry.register(
            "layer2_ip_requests_received",
            "ARP requests and Neighbor Solicitations received for an IP this node announces",
            metrics.layer2_ip.requests_received.clone(),
        );
        registry.register(
            "layer2_ip_responses_sent",
            "ARP replies and Neighbor Advertisements sent for an IP this node announces",
            metrics.layer2_ip.responses_sent.clone(),
        );
        registry.register(
            "layer2_ip_gratuitous_sent",
            "Gratuitous ARP and unsolicited Neighbor Advertisement frames sent for an IP this node announces",
            metrics.layer2_ip.gratuitous_sent.clone(),
        );
        registry.register(
            "layer2_ips_expected",
            "Layer2 Service IPs some node should announce, as this node's decision sees it",
            metrics.layer2_ips_expected.clone(),
        );
        registry.register(
            "layer2_ips_owned",
            "Service IPs this node announces",
            metrics.ips_owned.clone(),
        );
        registry.register(
            "membership_size",
            "Live speakers",
            metrics.membership_size.clone(),
        );
        registry.register(
            "layer2_reasserts",
            "Times every owned IP was announced again unasked (stall, rejoin, a speaker joined)",
            metrics.reasserts.clone(),
        );
        registry.register(
            "status_write_failures",
            "Status syncs that failed and were retried",
            metrics.status_write_failures.clone(),
        );
        registry.register(
            "status_events_dropped",
            "Events dropped while the event queue was full",
            metrics.status_events_dropped.clone(),
        );
        registry.register(
            "config_invalid",
            "Configuration rebuilds rejected as invalid",
            metrics.config_invalid.clone(),
        );
        registry.register(
            "announced",
            "1 for each Service IP this node announces, by protocol",
            metrics.announced.clone(),
        );
        registry.register(
            "membership_datagrams_received",
            "Membership datagrams received that passed authentication",
            metrics.membership_datagrams_received.clone(),
        );
        registry.register(
            "membership_datagrams_sent",
            "Membership datagrams sent",
            metrics.membership_datagrams_sent.clone(),
        );
        registry.register(
            "membership_datagrams_rejected",
            "Membership datagrams dropped before the protocol saw them, by reason",
            metrics.membership_datagrams_rejected.clone(),
        );
        registry.register(
            "membership_protocol_errors",
            "Authenticated membership datagrams the protocol refused",
            metrics.membership_protocol_errors.clone(),
        );
        registry.register(
            "membership_transitions",
            "Membership state transitions seen by this node: up, down, restarted, rejoined",
            metrics.membership_transitions.clone(),
        );
        registry.register(
            "membership_members",
            "Live speakers by membership state (alive, suspect), this node included",
            metrics.membership_members.clone(),
        );
        registry.register_with_unit(
            "membership_probe_rtt",
            "Round-trip time of the membership's direct probes (ping to ack)",
            Unit::Seconds,
            metrics.membership_probe_rtt.0.clone(),
        );
        registry.register(
            "bgp_session_up",
            "1 while this node's BGP session with the peer is Established",
            metrics.bgp_session_up.clone(),
        );
        registry.register(
            "bgp_prefixes_advertised",
            "Prefixes the BGP peer has from this node",
            metrics.bgp_prefixes_advertised.clone(),
        );
        registry.register(
            "bgp_messages_sent",
            "BGP messages sent to the peer, by type",
            metrics.bgp_messages_sent.clone(),
        );
        registry.register(
            "bgp_messages_received",
            "BGP messages received from the peer, by type",
            metrics.bgp_messages_received.clone(),
        );
        registry.register(
            "bgp_session_flaps",
            "Established BGP sessions that went down",
            metrics.bgp_session_flaps.clone(),
        );
        registry.register(
            "bfd_session_up",
            "1 while the BFD session for the BGPPeer is Up",
            metrics.bfd_session_up.clone(),
        );
        registry.register(
            "bfd_session_state_changes",
            "BFD session state changes",
            metrics.bfd_session_state_changes.clone(),
        );
        registry.register(
            "bfd_control_packets_sent",
            "BFD Control packets sent",
            metrics.bfd_control_packets_sent.clone(),
        );
        registry.register(
            "bfd_control_packets_received",
            "BFD Control packets received and handed to the session",
            metrics.bfd_control_packets_received.clone(),
        );
        registry.register(
            "bfd_packets_dropped",
            "BFD packets dropped, by reason",
            metrics.bfd_packets_dropped.clone(),
        );
        (metrics, root)
    }

    /// Adds what `now` counted since `before` (the membership's own counters are monotonic;
    /// they are copied on every decision, so the metrics lag by at most one pass).
    pub fn record_membership(&self, before: &MembershipStats, now: &MembershipStats) {
        let add = |counter: &Counter, before: u64, now: u64| {
            counter.inc_by(now.saturating_sub(before));
        };
        add(
            &self.membership_datagrams_received,
            before.datagrams_in,
            now.datagrams_in,
        );
        add(
            &self.membership_datagrams_sent,
            before.datagrams_out,
            now.datagrams_out,
        );
        add(
            &self.membership_protocol_errors,
            before.protocol_errors,
            now.protocol_errors,
        );
        for (reason, before, now) in [
            (
                "malformed",
                before.rejected_malformed,
                now.rejected_malformed,
            ),
            ("bad_tag", before.rejected_bad_tag, now.rejected_bad_tag),
            ("stale", before.rejected_stale, now.rejected_stale),
            ("replayed", before.rejected_replayed, now.rejected_replayed),
        ] {
            add(
                &self
                    .membership_datagrams_rejected
                    .get_or_create(&RejectLabels {
                        reason: reason.to_string(),
                    }),
                before,
                now,
            );
        }
        for (transition, before, now) in [
            ("up", before.members_up, now.members_up),
            ("down", before.members_down, now.members_down),
            ("restarted", before.members_restarted, now.members_restarted),
            ("rejoined", before.rejoins, now.rejoins),
            ("suspected", before.members_suspected, now.members_suspected),
            ("refuted", before.members_refuted, now.members_refuted),
            (
                "confirmed_down",
                before.members_confirmed_down,
                now.members_confirmed_down,
            ),
        ] {
            add(
                &self
                    .membership_transitions
                    .get_or_create(&TransitionLabels {
                        transition: transition.to_string(),
                    }),
                before,
                now,
            );
        }
    }

    /// Sets `membership_members{state}` from the membership's current counts.
    pub fn record_membership_states(&self, stats: &MembershipStats) {
        for (state, members) in [
            ("alive", stats.members_alive),
            ("suspect", stats.members_suspect),
        ] {
            self.membership_members
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(i64::try_from(members).unwrap_or(i64::MAX));
        }
    }

    pub fn ip(ip: IpAddr) -> IpLabels {
        IpLabels { ip: ip.to_string() }
    }

    pub fn peer(peer: &str) -> PeerLabels {
        PeerLabels {
            peer: peer.to_string(),
        }
    }

    pub fn reason(reason: &str) -> RejectLabels {
        RejectLabels {
            reason: reason.to_string(),
        }
    }

    pub fn message(peer: &str, r#type: &str) -> MessageLabels {
        MessageLabels {
            peer: peer.to_string(),
            r#type: r#type.to_string(),
        }
    }

    pub fn iface(interface: &str) -> IfaceLabels {
        IfaceLabels {
            interface: interface.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_page_documents_every_metric() {
        // Families without a sample are not encoded: give each one a sample.
        let (m, registry) = Metrics::new();
        let eth0 = Metrics::iface("eth0");
        let ip: IpAddr = "192.0.2.100".parse().unwrap();
        for family in [&m.requests_received, &m.responses_sent, &m.gratuitous_sent] {
            family.get_or_create(&eth0).inc();
        }
        m.dropped
            .get_or_create(&DropLabels {
                interface: "eth0".to_string(),
                reason: "malformed".to_string(),
            })
            .inc();
        m.layer2_ip.set_announced([ip]);
        m.announced
            .get_or_create(&AnnouncedLabels {
                service: "ns/web".to_string(),
                ip: ip.to_string(),
                protocol: "layer2".to_string(),
                node: "node1".to_string(),
            })
            .set(1);
        m.membership_datagrams_rejected
            .get_or_create(&Metrics::reason("bad_tag"))
            .inc();
        m.bfd_packets_dropped
            .get_or_create(&Metrics::reason("ttl"))
            .inc();
        m.record_membership(&MembershipStats::default(), &MembershipStats::default());
        m.record_membership_states(&MembershipStats::default());
        let peer = Metrics::peer("router");
        for gauge in [
            &m.bgp_session_up,
            &m.bgp_prefixes_advertised,
            &m.bfd_session_up,
        ] {
            gauge.get_or_create(&peer).set(1);
        }
        for counter in [
            &m.bgp_session_flaps,
            &m.bfd_session_state_changes,
            &m.bfd_control_packets_sent,
            &m.bfd_control_packets_received,
        ] {
            counter.get_or_create(&peer).inc();
        }
        for messages in [&m.bgp_messages_sent, &m.bgp_messages_received] {
            messages
                .get_or_create(&Metrics::message("router", "open"))
                .inc();
        }
        let exported = ferrolb_crds::metrics_doc::exported(&encoded(&registry));
        let registered = include_str!("metrics.rs")
            .matches(concat!("registry", ".register"))
            .count();
        let ours = exported
            .keys()
            .filter(|name| name.starts_with("ferrolb_speaker_"));
        assert_eq!(ours.count(), registered, "give every family a sample above");

        let page = include_str!("../../docs/operations.md");
        let mut documented = ferrolb_crds::metrics_doc::documented(
            page,
            "### Speaker (prefix `ferrolb_speaker_`, `speaker/src/metrics.rs`)",
        );
        documented.extend(ferrolb_crds::metrics_doc::documented(
            page,
            "### Both binaries: process metrics (`crds/src/process_metrics.rs`)",
        ));
        assert_eq!(
            documented, exported,
            "docs/operations.md's speaker and process tables must list exactly what the \
             speaker exports, with the same types"
        );
    }

    #[test]
    fn encodes_with_prefix_and_labels() {
        let (metrics, registry) = Metrics::new();
        metrics
            .responses_sent
            .get_or_create(&Metrics::iface("eth0"))
            .inc();
        metrics.ips_owned.set(2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("ferrolb_speaker_layer2_responses_sent_total{interface=\"eth0\"} 1"));
        assert!(text.contains("ferrolb_speaker_layer2_ips_owned 2"));
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    }

    fn encoded(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    /// Per-IP series exist exactly for the IPs announced: created at 0, counted only while
    /// announced, removed on withdrawal, and back at 0 when the IP is taken again.
    #[test]
    fn per_ip_layer2_series_follow_the_announced_set() {
        let (metrics, registry) = Metrics::new();
        let ours: IpAddr = "192.0.2.100".parse().unwrap();
        let theirs: IpAddr = "2001:db8:2::100".parse().unwrap();
        let ip = &metrics.layer2_ip;
        ip.set_announced([ours]);
        ip.request_received(ours);
        ip.request_received(ours);
        ip.response_sent(ours);
        // Not announced here: no series appears for it.
        ip.request_received(theirs);
        ip.gratuitous_sent(theirs);
        let text = encoded(&registry);
        for line in [
            "ferrolb_speaker_layer2_ip_requests_received_total{ip=\"192.0.2.100\"} 2",
            "ferrolb_speaker_layer2_ip_responses_sent_total{ip=\"192.0.2.100\"} 1",
            "ferrolb_speaker_layer2_ip_gratuitous_sent_total{ip=\"192.0.2.100\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("2001:db8:2::100"), "{text}");

        // Withdrawn: its series go, and late frames do not bring them back.
        ip.set_announced([theirs]);
        ip.response_sent(ours);
        ip.gratuitous_sent(theirs);
        let text = encoded(&registry);
        assert!(!text.contains("192.0.2.100"), "{text}");
        assert!(
            text.lines().any(|l| l
                == "ferrolb_speaker_layer2_ip_gratuitous_sent_total{ip=\"2001:db8:2::100\"} 1")
        );

        // Taken again: the counters restart from 0.
        ip.set_announced([ours, theirs]);
        let text = encoded(&registry);
        assert!(text.lines().any(
            |l| l == "ferrolb_speaker_layer2_ip_requests_received_total{ip=\"192.0.2.100\"} 0"
        ));
        ip.set_announced([]);
        assert!(!encoded(&registry).contains("{ip="));
    }

    #[test]
    fn members_by_state_probe_rtt_and_expected_ips_are_exported() {
        let (metrics, registry) = Metrics::new();
        metrics.record_membership_states(&MembershipStats {
            members: 3,
            members_alive: 2,
            members_suspect: 1,
            ..MembershipStats::default()
        });
        let rtt = metrics.membership_probe_rtt.handle();
        rtt.observe(0.000_3);
        rtt.observe(0.5);
        metrics.layer2_ips_expected.set(2);
        let text = encoded(&registry);
        for line in [
            "ferrolb_speaker_membership_members{state=\"alive\"} 2",
            "ferrolb_speaker_membership_members{state=\"suspect\"} 1",
            "# TYPE ferrolb_speaker_membership_probe_rtt_seconds histogram",
            "ferrolb_speaker_membership_probe_rtt_seconds_count 2",
            "ferrolb_speaker_membership_probe_rtt_seconds_bucket{le=\"+Inf\"} 2",
            "ferrolb_speaker_layer2_ips_expected 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // 300 µs falls in the 500 µs bucket; 0.5 s only in +Inf.
        let bucket = |le: f64| {
            text.lines()
                .filter_map(|l| {
                    let rest = l.strip_prefix(
                        "ferrolb_speaker_membership_probe_rtt_seconds_bucket{le=\"",
                    )?;
                    let (bound, count) = rest.split_once("\"} ")?;
                    Some((bound.parse::<f64>().ok()?, count.parse::<u64>().ok()?))
                })
                .find(|(bound, _)| (bound - le).abs() < f64::EPSILON)
                .map(|(_, count)| count)
        };
        assert_eq!(bucket(0.000_2), Some(0));
        assert_eq!(bucket(0.000_5), Some(1));
        assert_eq!(bucket(0.1), Some(1));
    }

    /// Each pass adds what the membership counted since the last one.
    #[test]
    fn membership_counters_are_added_as_deltas() {
        let (metrics, registry) = Metrics::new();
        let before = MembershipStats::default();
        let first = MembershipStats {
            members_up: 2,
            members_down: 1,
            rejected_bad_tag: 5,
            ..MembershipStats::default()
        };
        let second = MembershipStats {
            members_up: 3,
            ..first
        };
        metrics.record_membership(&before, &first);
        metrics.record_membership(&first, &second);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "ferrolb_speaker_membership_transitions_total{transition=\"up\"} 3",
            "ferrolb_speaker_membership_transitions_total{transition=\"down\"} 1",
            "ferrolb_speaker_membership_transitions_total{transition=\"rejoined\"} 0",
            "ferrolb_speaker_membership_datagrams_rejected_total{reason=\"bad_tag\"} 5",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
