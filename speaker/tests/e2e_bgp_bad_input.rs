//! Bad input on the wire (root; skipped with a printed reason otherwise, FAILS when `CI` is set).
//!
//! The real session task (`bgp::session::run`, on a thread moved into node1's namespace, as in
//! `e2e_bgp_session.rs`) runs two sessions on one runtime: a normal one to the lab's FRR and one
//! to a misbehaving peer written here, a plain TCP listener in the client namespace
//! (192.0.2.200:179) that speaks BGP by hand (bytes built here, not with the codec under test).
//! Connection by connection, the fake peer sends garbage after its OPEN, a bad length, a wrong
//! AS, UPDATEs that RFC 7606 says must reset the session, and UPDATEs it says must only be
//! treated as withdraws; for each it reads what our speaker answers (the NOTIFICATION's code,
//! subcode and data), checks the session's `SessionStatus.last_error`, and measures how long the
//! speaker waits before it connects again (the back-off; lower bounds only). Throughout, the FRR
//! session must stay Established with its route in FRR's RIB, and the task must not panic.
//!
//! Run: `cargo test -p ferrolb-speaker --test e2e_bgp_bad_input -- --nocapture`
//!
//! The same file holds the `#[ignore]`d capture of the fuzz seeds (`capture_bgp_seeds`, see
//! docs/fuzzing.md): FRR, BIRD and GoBGP in the router namespace, each recorded message by
//! message.

mod bgp_lab;

use bgp_lab::{init_tracing, start_sessions};

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrolb_crds::config::PeerAsn;
use ferrolb_speaker::bgp::codec::{Family, RouteAttributes};
use ferrolb_speaker::bgp::fsm::{Backoff, SessionConfig, State};
use ferrolb_speaker::bgp::session::{PeerConfig, Route, RouteSet, SessionStatus};
use ferrolb_tests::controlplane::netns::enter_netns;
use ferrolb_tests::harness::TestLab;
use ferrolb_tests::netlab::Router;
use ferrolb_tests::netlab::topology::{CLIENT_V4, NODE_ASN, ROUTER_ASN, ROUTER_LAN_V4};
use ipnet::IpNet;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Hang guard for every wait; nothing here measures speed.
const DEADLINE: Duration = Duration::from_secs(30);
const FRR_PREFIX: &str = "203.0.113.200/32";
/// What we announce to the fake peer; seen again in the table a ROUTE-REFRESH brings.
const FAKE_PREFIX: &str = "203.0.113.201/32";
const FAKE_PREFIX_NLRI: [u8; 5] = [32, 203, 0, 113, 201];
const FAKE_ASN: u32 = 64600;
const FAKE_ID: Ipv4Addr = CLIENT_V4;
/// The fake peer's session back-off: short, so that the whole sequence takes ~15 s.
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(3),
    stable_after: Duration::from_secs(60),
};
/// How much earlier than the back-off a reconnection may be seen: the reset is timed when the
/// fake peer reads our NOTIFICATION (or our close), a little after the speaker sent it.
const SLACK: Duration = Duration::from_millis(50);

fn eventually<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    ferrolb_tests::harness::eventually_ok(what, DEADLINE, check)
}

/// Runs `f` on a thread in namespace `ns` and returns its result (a socket made there stays
/// there, whichever thread uses it later).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns).expect("enter the namespace");
        f()
    })
    .join()
    .expect("namespace thread")
}

fn session_config(peer_asn: u32, families: &[Family]) -> SessionConfig {
    SessionConfig {
        local_asn: NODE_ASN,
        peer_asn: PeerAsn::Fixed(peer_asn),
        router_id: ferrolb_tests::netlab::topology::node_addresses(1).0,
        hold_time: Duration::from_secs(90),
        keepalive_time: Duration::from_secs(30),
        passive: false,
        connect_retry_time: Duration::from_secs(5),
        families: families.iter().copied().collect::<BTreeSet<_>>(),
        extended_next_hop_ipv4: false,
        graceful_restart: None,
        backoff: BACKOFF,
    }
}

fn wait_thread(thread: JoinHandle<()>) {
    let start = Instant::now();
    while !thread.is_finished() {
        assert!(start.elapsed() < DEADLINE, "the session tasks did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    thread.join().expect("session thread");
}

/// FRR's state for neighbour `peer` in `show bgp summary json`, IPv4 unicast.
fn summary_peer(router: &Router, peer: IpAddr) -> Result<Value, String> {
    let summary = router.vtysh_json("show bgp summary json")?;
    summary
        .get("ipv4Unicast")
        .and_then(|af| af.get("peers"))
        .and_then(|peers| peers.get(peer.to_string()))
        .cloned()
        .ok_or_else(|| format!("no peer {peer} in {summary}"))
}

/// The FRR session and its route, as they must be before, during and after the bad input.
/// `last_error` is the one it had when it came up (a first attempt may fail while bgpd starts).
fn frr_unaffected(
    router: &Router,
    ours: &watch::Receiver<SessionStatus>,
    last_error: &Option<String>,
    next_hop: IpAddr,
) {
    let s = ours.borrow().clone();
    assert_eq!(s.state, State::Established, "our FRR session: {s:?}");
    assert_eq!(
        s.sessions_established, 1,
        "our FRR session went down: {s:?}"
    );
    assert_eq!(&s.last_error, last_error, "our FRR session failed: {s:?}");
    let p = summary_peer(router, next_hop).unwrap();
    assert_eq!(p["state"], "Established", "FRR: {p}");
    assert_eq!(p["pfxRcd"], 1, "FRR: {p}");
    let rib = router
        .vtysh_json(&format!("show ip route {FRR_PREFIX} json"))
        .unwrap();
    let selected = rib[FRR_PREFIX].as_array().is_some_and(|entries| {
        entries.iter().any(|e| {
            e["protocol"] == "bgp"
                && e["selected"] == true
                && e["nexthops"]
                    .as_array()
                    .is_some_and(|hops| hops.iter().any(|h| h["ip"] == next_hop.to_string()))
        })
    });
    assert!(
        selected,
        "{FRR_PREFIX} via {next_hop} not in FRR's RIB: {rib}"
    );
}

/// BGP messages written by hand: the fake peer must not share the codec it tests.
mod wire {
    use std::net::Ipv4Addr;

    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;

    pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0xff; 16];
        out.extend_from_slice(&u16::try_from(19 + body.len()).unwrap().to_be_bytes());
        out.push(kind);
        out.extend_from_slice(body);
        out
    }

    pub fn keepalive() -> Vec<u8> {
        message(KEEPALIVE, &[])
    }

    /// Capabilities: IPv4 and IPv6 unicast (RFC 4760), route refresh (RFC 2918), 4-octet AS
    /// (RFC 6793), and graceful restart without families (RFC 4724: asks for End-of-RIB).
    pub fn capabilities(asn: u32, graceful_restart: bool) -> Vec<u8> {
        let mut caps = vec![1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 2, 0, 65, 4];
        caps.extend_from_slice(&asn.to_be_bytes());
        if graceful_restart {
            caps.extend_from_slice(&[64, 2, 0, 120]);
        }
        caps
    }

    pub fn open_with(asn: u32, hold: u16, id: Ipv4Addr, graceful_restart: bool) -> Vec<u8> {
        let caps = capabilities(asn, graceful_restart);
        let mut body = vec![4];
        body.extend_from_slice(&u16::try_from(asn).unwrap_or(23456).to_be_bytes());
        body.extend_from_slice(&hold.to_be_bytes());
        body.extend_from_slice(&id.octets());
        body.push(u8::try_from(caps.len() + 2).unwrap());
        body.push(2);
        body.push(u8::try_from(caps.len()).unwrap());
        body.extend_from_slice(&caps);
        message(OPEN, &body)
    }

    pub fn open(asn: u32, hold: u16, id: Ipv4Addr) -> Vec<u8> {
        open_with(asn, hold, id, false)
    }

    /// An UPDATE with consistent lengths.
    pub fn update(withdrawn: &[u8], attributes: &[u8], nlri: &[u8]) -> Vec<u8> {
        let mut body = u16::try_from(withdrawn.len())
            .unwrap()
            .to_be_bytes()
            .to_vec();
        body.extend_from_slice(withdrawn);
        body.extend_from_slice(&u16::try_from(attributes.len()).unwrap().to_be_bytes());
        body.extend_from_slice(attributes);
        body.extend_from_slice(nlri);
        message(UPDATE, &body)
    }

    /// ORIGIN IGP, AS_PATH (one 4-octet AS_SEQUENCE of `asn`), NEXT_HOP `next_hop`.
    pub fn mandatory_attributes(asn: u32, next_hop: Ipv4Addr) -> Vec<u8> {
        let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 6, 2, 1];
        attrs.extend_from_slice(&asn.to_be_bytes());
        attrs.extend_from_slice(&[0x40, 3, 4]);
        attrs.extend_from_slice(&next_hop.octets());
        attrs
    }

    pub fn route_refresh_ipv4() -> Vec<u8> {
        message(ROUTE_REFRESH, &[0, 1, 0, 1])
    }

    pub fn notification(code: u8, subcode: u8, data: &[u8]) -> Vec<u8> {
        let mut body = vec![code, subcode];
        body.extend_from_slice(data);
        message(NOTIFICATION, &body)
    }
}

/// One message as received: its type and body (after the 19-byte header), and the whole bytes.
#[derive(Debug, Clone)]
struct Received {
    kind: u8,
    bytes: Vec<u8>,
}

impl Received {
    fn body(&self) -> &[u8] {
        &self.bytes[19..]
    }

    fn notification(&self) -> Option<(u8, u8, &[u8])> {
        let body = self.body();
        (self.kind == wire::NOTIFICATION && body.len() >= 2).then(|| (body[0], body[1], &body[2..]))
    }

    /// The UPDATE's (withdrawn, attributes, NLRI) fields.
    fn update_fields(&self) -> Option<(&[u8], &[u8], &[u8])> {
        if self.kind != wire::UPDATE {
            return None;
        }
        let body = self.body();
        let withdrawn_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let rest = body.get(2..)?;
        let (withdrawn, rest) = rest.split_at_checked(withdrawn_len)?;
        let attributes_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
        let (attributes, nlri) = rest.get(2..)?.split_at_checked(attributes_len)?;
        Some((withdrawn, attributes, nlri))
    }

    /// RFC 4724 §2: an empty UPDATE (IPv4 unicast), or one with only an empty MP_UNREACH_NLRI.
    fn end_of_rib(&self) -> Option<Family> {
        let (withdrawn, attributes, nlri) = self.update_fields()?;
        if !withdrawn.is_empty() || !nlri.is_empty() {
            return None;
        }
        match attributes {
            [] => Some(Family::Ipv4Unicast),
            [_, 15, 3, 0, 2, 1] | [_, 15, 0, 3, 0, 2, 1] => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match (self.kind, self.notification(), self.end_of_rib()) {
            (_, Some((code, subcode, data)), _) => {
                format!("NOTIFICATION {code}/{subcode} data {data:02x?}")
            }
            (_, _, Some(family)) => format!("End-of-RIB {family}"),
            (wire::OPEN, ..) => "OPEN".to_string(),
            (wire::UPDATE, ..) => format!("UPDATE of {} bytes", self.bytes.len()),
            (wire::KEEPALIVE, ..) => "KEEPALIVE".to_string(),
            (wire::ROUTE_REFRESH, ..) => "ROUTE-REFRESH".to_string(),
            (kind, ..) => format!("type {kind}"),
        }
    }
}

/// Reads one message; `None` when the peer closed the connection.
fn read_message(stream: &mut TcpStream) -> Option<Received> {
    let mut header = [0u8; 19];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e)
            if e.kind() == ErrorKind::UnexpectedEof || e.kind() == ErrorKind::ConnectionReset =>
        {
            return None;
        }
        Err(e) => panic!("reading a header: {e}"),
    }
    assert_eq!(header[..16], [0xff; 16], "a message without the marker");
    let len = usize::from(u16::from_be_bytes([header[16], header[17]]));
    assert!((19..=4096).contains(&len), "length {len}");
    let mut bytes = header.to_vec();
    bytes.resize(len, 0);
    stream
        .read_exact(&mut bytes[19..])
        .unwrap_or_else(|e| panic!("reading a body of {len} bytes: {e}"));
    Some(Received {
        kind: header[18],
        bytes,
    })
}

/// One accepted connection from our speaker.
struct Conn {
    stream: TcpStream,
}

impl Conn {
    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to our speaker");
    }

    fn expect(&mut self, kind: u8) -> Received {
        let message = read_message(&mut self.stream).expect("our speaker closed the connection");
        assert_eq!(
            message.kind,
            kind,
            "expected type {kind}, got {}",
            message.describe()
        );
        message
    }

    /// Reads until a NOTIFICATION, which must be followed by the end of the connection; returns
    /// it with what came before it, and the time it was read.
    fn until_notification(&mut self) -> (Received, Vec<Received>, Instant) {
        let mut before = Vec::new();
        loop {
            let message = read_message(&mut self.stream)
                .unwrap_or_else(|| panic!("closed without a NOTIFICATION after {before:?}"));
            if message.kind == wire::NOTIFICATION {
                let at = Instant::now();
                if let Some(extra) = read_message(&mut self.stream) {
                    panic!("{} after the NOTIFICATION", extra.describe());
                }
                return (message, before, at);
            }
            before.push(message);
        }
    }

    /// OPEN exchange, KEEPALIVEs, then our table and End-of-RIB for both families.
    fn establish(&mut self) -> Vec<Received> {
        self.expect(wire::OPEN);
        self.send(&[wire::open(FAKE_ASN, 90, FAKE_ID), wire::keepalive()].concat());
        self.until_end_of_rib(&[Family::Ipv4Unicast, Family::Ipv6Unicast])
    }

    fn until_end_of_rib(&mut self, families: &[Family]) -> Vec<Received> {
        let mut missing: BTreeSet<Family> = families.iter().copied().collect();
        let mut received = Vec::new();
        while !missing.is_empty() {
            let message = read_message(&mut self.stream)
                .unwrap_or_else(|| panic!("closed before End-of-RIB; got {received:?}"));
            assert_ne!(message.kind, wire::NOTIFICATION, "{}", message.describe());
            if let Some(family) = message.end_of_rib() {
                missing.remove(&family);
            }
            received.push(message);
        }
        received
    }
}

fn announces_fake_prefix(messages: &[Received]) -> bool {
    messages
        .iter()
        .filter_map(Received::update_fields)
        .any(|(_, _, nlri)| nlri == FAKE_PREFIX_NLRI)
}

/// A case of bad input: what the fake peer does on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// RFC 4271 §6.1: bytes without the marker after the OPEN (OpenConfirm).
    GarbageAfterOpen,
    /// RFC 4271 §6.1: a KEEPALIVE of 20 bytes, in Established.
    BadLength,
    /// RFC 4271 §6.2: the OPEN names another AS than configured.
    WrongAs,
    /// RFC 7606 §4 (RFC 4271 §6.3): the Total Path Attribute Length runs past the message, so
    /// the NLRI cannot be located: session reset.
    AttributesOverrunMessage,
    /// RFC 7606 §7.11, RFC 4760 §7: MP_REACH_NLRI with an IPv6 prefix of length 129: session
    /// reset.
    BrokenMpReach,
    /// RFC 7606 treat-as-withdraw and attribute discard: the session survives; then the peer
    /// says Cease itself.
    TreatAsWithdraw,
    /// A peer that behaves: the session comes back up after the back-off.
    Healthy,
}

/// What the fake peer saw on one connection.
#[derive(Debug)]
struct Report {
    case: Case,
    /// Since the reset of the previous connection, and the back-off expected.
    reconnected_after: Option<(Duration, Duration)>,
    notification: Option<Notification>,
    /// Our session's `last_error` once the case was over.
    last_error: String,
}

/// The back-off after the `failures`-th consecutive failure, computed here independently.
fn expected_backoff(failures: u32) -> Duration {
    let doubled = BACKOFF.initial * 2u32.pow(failures.saturating_sub(1).min(16));
    doubled.min(BACKOFF.max)
}

/// Waits (1 ms polls, hang guard) until our session to the fake peer reports `check`.
fn wait_status(
    status: &watch::Receiver<SessionStatus>,
    what: &str,
    check: impl Fn(&SessionStatus) -> bool,
) -> SessionStatus {
    let start = Instant::now();
    loop {
        let s = status.borrow().clone();
        if check(&s) {
            return s;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: last status {s:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A NOTIFICATION: code, subcode, data.
type Notification = (u8, u8, Vec<u8>);

/// How one case ended.
struct Outcome {
    /// What our speaker sent.
    notification: Option<Notification>,
    /// When the session was reset (`None`: it is still up, the caller ends it).
    reset_at: Option<Instant>,
    last_error: String,
}

/// Runs one case on `conn`.
fn run_case(case: Case, conn: &mut Conn, status: &watch::Receiver<SessionStatus>) -> Outcome {
    let mandatory = wire::mandatory_attributes(FAKE_ASN, FAKE_ID);
    // (expected code, subcode, data; what last_error must contain)
    let (expected, reason): (Notification, Vec<&str>) = match case {
        Case::GarbageAfterOpen => {
            conn.expect(wire::OPEN);
            let mut bytes = wire::open(FAKE_ASN, 90, FAKE_ID);
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: 192.0.2.11\r\n\r\n");
            conn.send(&bytes);
            (
                (1, 1, vec![]),
                vec!["Message Header Connection Not Synchronized sent", "marker"],
            )
        }
        Case::BadLength => {
            let table = conn.establish();
            assert!(announces_fake_prefix(&table), "{table:?}");
            let mut long_keepalive = wire::keepalive();
            long_keepalive[17] = 20;
            long_keepalive.push(0);
            conn.send(&long_keepalive);
            (
                (1, 2, vec![0, 20]),
                vec!["Message Header Bad Message Length sent", "length 20"],
            )
        }
        Case::WrongAs => {
            conn.expect(wire::OPEN);
            conn.send(&wire::open(FAKE_ASN + 1, 90, FAKE_ID));
            (
                (
                    2,
                    2,
                    u16::try_from(FAKE_ASN + 1).unwrap().to_be_bytes().to_vec(),
                ),
                vec!["OPEN Bad Peer AS sent", "peer AS 64601", "expected 64600"],
            )
        }
        Case::AttributesOverrunMessage => {
            conn.establish();
            let mut update = wire::update(&[], &mandatory, &[24, 198, 51, 100]);
            // Total Path Attribute Length 256 in a message that has 24 bytes after it.
            update[21..23].copy_from_slice(&256u16.to_be_bytes());
            conn.send(&update);
            ((3, 1, vec![]), vec!["UPDATE Malformed Attribute List sent"])
        }
        Case::BrokenMpReach => {
            conn.establish();
            // AFI 2, SAFI 1, a 16-byte next hop, reserved, then a /129.
            let mut value = vec![0, 2, 1, 16];
            value.extend_from_slice(
                &"2001:db8:2::200"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            value.push(0);
            value.push(129);
            value.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            value.extend_from_slice(&[0; 13]);
            let mut mp_reach = vec![0x80, 14, u8::try_from(value.len()).unwrap()];
            mp_reach.extend_from_slice(&value);
            // ORIGIN and AS_PATH; no NEXT_HOP (the next hop is in MP_REACH_NLRI).
            let mut attrs = mandatory[..13].to_vec();
            attrs.extend_from_slice(&mp_reach);
            conn.send(&wire::update(&[], &attrs, &[]));
            // RFC 4271 §6.3: "the Data field MUST contain the attribute".
            (
                (3, 9, mp_reach),
                vec!["UPDATE Optional Attribute Error sent", "MP reach"],
            )
        }
        Case::TreatAsWithdraw => {
            conn.establish();
            let before = status.borrow().clone();
            let nlri = [24, 198, 51, 100];
            let with = |replace: &[u8], extra: &[u8]| {
                // ORIGIN (the first 4 bytes) replaced, AS_PATH and NEXT_HOP kept.
                let mut attrs = replace.to_vec();
                attrs.extend_from_slice(&mandatory[4..]);
                attrs.extend_from_slice(extra);
                wire::update(&[], &attrs, &nlri)
            };
            let lenient = [
                // RFC 7606 §3 c: ORIGIN marked optional (flags conflict with the type).
                ("ORIGIN with the optional bit", with(&[0xc0, 1, 1, 0], &[])),
                // §7.1: ORIGIN 5 is undefined.
                ("ORIGIN value 5", with(&[0x40, 1, 1, 5], &[])),
                // §7.2: an AS_PATH segment of length 0.
                (
                    "AS_PATH segment of length 0",
                    wire::update(
                        &[],
                        &[&mandatory[..4], &[0x40, 2, 2, 2, 0], &mandatory[13..]].concat(),
                        &nlri,
                    ),
                ),
                // §4: an (unknown, optional transitive) attribute whose length runs past the
                // Total Path Attribute Length.
                (
                    "an attribute running past the attribute list",
                    with(&[0x40, 1, 1, 0], &[0xc0, 99, 40, 1, 2, 3]),
                ),
                // §4: fewer than three octets left for the last attribute's header.
                (
                    "two octets of a trailing attribute header",
                    with(&[0x40, 1, 1, 0], &[0xc0, 99]),
                ),
                // §7.7: an AGGREGATOR of 3 bytes is discarded (attribute discard).
                (
                    "AGGREGATOR of 3 bytes",
                    with(&[0x40, 1, 1, 0], &[0xc0, 7, 3, 0, 0, 1]),
                ),
            ];
            for (name, update) in &lenient {
                eprintln!("fake peer: sending UPDATE with {name}");
                conn.send(update);
            }
            // Proof that the session read past them and is alive: our table again.
            conn.send(&wire::route_refresh_ipv4());
            let refreshed = conn.until_end_of_rib(&[Family::Ipv4Unicast]);
            assert!(announces_fake_prefix(&refreshed), "{refreshed:?}");
            let after = status.borrow().clone();
            assert_eq!(after.state, State::Established, "{after:?}");
            assert_eq!(
                after.sessions_established, before.sessions_established,
                "{after:?}"
            );
            assert_eq!(
                after.last_error, before.last_error,
                "a new error: {after:?}"
            );
            // The peer ends the session: RFC 8203 shutdown communication, then close.
            let message = b"bad input test done";
            let mut data = vec![u8::try_from(message.len()).unwrap()];
            data.extend_from_slice(message);
            conn.send(&wire::notification(6, 2, &data));
            conn.stream.shutdown(Shutdown::Write).expect("shutdown");
            // A NOTIFICATION is never answered with one.
            let mut after_cease = Vec::new();
            while let Some(message) = read_message(&mut conn.stream) {
                after_cease.push(message);
            }
            let at = Instant::now();
            assert!(
                after_cease.iter().all(|m| m.kind != wire::NOTIFICATION),
                "{after_cease:?}"
            );
            let s = wait_status(status, "Cease received", |s| {
                s.state == State::Idle
                    && s.last_error.as_deref()
                        == Some("NOTIFICATION Cease Administrative Shutdown received")
            });
            return Outcome {
                notification: None,
                reset_at: Some(at),
                last_error: s.last_error.unwrap_or_default(),
            };
        }
        Case::Healthy => {
            let table = conn.establish();
            assert!(announces_fake_prefix(&table), "{table:?}");
            let s = wait_status(status, "Established again", |s| {
                s.state == State::Established
            });
            return Outcome {
                notification: None,
                reset_at: None,
                last_error: s.last_error.unwrap_or_default(),
            };
        }
    };
    let (notification, before, at) = conn.until_notification();
    let (code, subcode, data) = notification.notification().expect("a NOTIFICATION");
    let got = (code, subcode, data.to_vec());
    assert_eq!(
        got,
        expected,
        "{case:?}: NOTIFICATION {code}/{subcode} data {data:02x?}, after {:?}",
        before.iter().map(Received::describe).collect::<Vec<_>>()
    );
    // A refused OPEN is not acknowledged with a KEEPALIVE.
    if case == Case::WrongAs {
        assert!(before.is_empty(), "{before:?}");
    }
    let s = wait_status(status, &format!("{case:?}: reset"), |s| {
        s.state == State::Idle
            && s.last_error
                .as_deref()
                .is_some_and(|e| reason.iter().all(|part| e.contains(part)))
    });
    Outcome {
        notification: Some(got),
        reset_at: Some(at),
        last_error: s.last_error.unwrap_or_default(),
    }
}

/// The fake peer: one connection per case, in order. Sends a report after each; waits for
/// `go` before the first (the FRR session must be up) and before ending the last.
fn fake_peer(
    listener: TcpListener,
    cases: Vec<Case>,
    status: watch::Receiver<SessionStatus>,
    reports: mpsc::Sender<Report>,
    go: mpsc::Receiver<()>,
) -> usize {
    go.recv().expect("go");
    let mut reset: Option<Instant> = None;
    let mut failures = 0u32;
    let mut accepted = 0;
    for case in cases {
        let (stream, from) = listener.accept().expect("accept");
        let now = Instant::now();
        accepted += 1;
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let reconnected_after = reset.map(|at| (now - at, expected_backoff(failures)));
        eprintln!("fake peer: {case:?}: connection from {from}, {reconnected_after:?}");
        if let Some((after, backoff)) = reconnected_after {
            assert!(
                after + SLACK >= backoff,
                "{case:?}: reconnected {after:?} after the reset, back-off {backoff:?}"
            );
        }
        let mut conn = Conn { stream };
        let Outcome {
            notification,
            reset_at,
            last_error,
        } = run_case(case, &mut conn, &status);
        if case == Case::Healthy {
            reports
                .send(Report {
                    case,
                    reconnected_after,
                    notification: None,
                    last_error,
                })
                .expect("report");
            // The test cancels the sessions: our Cease.
            go.recv().expect("go");
            let (cease, _, _) = conn.until_notification();
            assert_eq!(cease.notification().map(|(c, s, _)| (c, s)), Some((6, 2)));
            break;
        }
        if reset_at.is_some() {
            failures += 1;
        }
        reset = reset_at;
        reports
            .send(Report {
                case,
                reconnected_after,
                notification,
                last_error,
            })
            .expect("report");
    }
    // Stopped: no further connection attempt (the listener would hold it).
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::sleep(Duration::from_millis(500));
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a connection after the end: {other:?}"),
    }
    accepted
}

#[test]
fn e2e_bgp_bad_input() {
    let test = "e2e_bgp_bad_input";
    init_tracing("ferrolb_speaker=debug");
    let Some(lab) = TestLab::network(test, 1).unwrap() else {
        return;
    };
    let topology = &lab.netlab().topology;
    let router = lab.netlab().router();
    let node_v4 = ferrolb_tests::netlab::topology::node_addresses(1).0;
    let nh4 = IpAddr::V4(node_v4);
    let fake_address = SocketAddr::new(IpAddr::V4(FAKE_ID), 179);
    let listener = in_netns(&topology.client_ns(), move || {
        TcpListener::bind(fake_address).expect("bind the fake peer")
    });

    let route = |prefix: &str| {
        RouteSet::new().with(
            prefix.parse::<IpNet>().unwrap(),
            Route {
                next_hop: nh4,
                attributes: RouteAttributes {
                    communities: vec![(64513 << 16) | 300],
                    ..RouteAttributes::default()
                },
            },
        )
    };
    let frr_peer = PeerConfig {
        session: session_config(ROUTER_ASN, &[Family::Ipv4Unicast]),
        address: SocketAddr::new(IpAddr::V4(ROUTER_LAN_V4), 179),
        source: Some(nh4),
        ttl: None,
        md5_key: None,
    };
    let fake = PeerConfig {
        session: session_config(FAKE_ASN, &[Family::Ipv4Unicast, Family::Ipv6Unicast]),
        address: fake_address,
        source: Some(nh4),
        ttl: None,
        md5_key: None,
    };
    let (_frr_tx, frr_rx) = watch::channel(route(FRR_PREFIX));
    let (_fake_tx, fake_rx) = watch::channel(route(FAKE_PREFIX));
    let cancel = CancellationToken::new();
    let (statuses, thread) = start_sessions(
        &topology.ns("node1"),
        vec![(frr_peer, frr_rx), (fake, fake_rx)],
        cancel.clone(),
    );
    let (frr_status, fake_status) = (statuses[0].clone(), statuses[1].clone());

    let cases = vec![
        Case::GarbageAfterOpen,
        Case::BadLength,
        Case::WrongAs,
        Case::AttributesOverrunMessage,
        Case::BrokenMpReach,
        Case::TreatAsWithdraw,
        Case::Healthy,
    ];
    let count = cases.len();
    let (report_tx, reports) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let status = fake_status.clone();
    let fake_thread =
        std::thread::spawn(move || fake_peer(listener, cases, status, report_tx, go_rx));

    eventually("the FRR session Established with its route", || {
        let s = frr_status.borrow().clone();
        if s.state != State::Established || s.prefixes_sent != 1 {
            return Err(format!("{s:?}"));
        }
        let p = summary_peer(&router, nh4)?;
        (p["state"] == "Established" && p["pfxRcd"] == 1)
            .then_some(())
            .ok_or_else(|| p.to_string())
    });
    let frr_error = frr_status.borrow().last_error.clone();
    frr_unaffected(&router, &frr_status, &frr_error, nh4);
    go.send(()).expect("go");

    for _ in 0..count {
        let report = match reports.recv_timeout(DEADLINE) {
            Ok(report) => report,
            Err(e) => {
                cancel.cancel();
                match fake_thread.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(_) => panic!("no report from the fake peer: {e}"),
                }
            }
        };
        eprintln!("{report:?}");
        frr_unaffected(&router, &frr_status, &frr_error, nh4);
        assert!(
            report.case == Case::GarbageAfterOpen || report.reconnected_after.is_some(),
            "{report:?}"
        );
        // A NOTIFICATION from us for every case but the two the session survives.
        let survives = matches!(report.case, Case::TreatAsWithdraw | Case::Healthy);
        assert_eq!(report.notification.is_none(), survives, "{report:?}");
        assert!(!report.last_error.is_empty(), "{report:?}");
    }
    let s = fake_status.borrow().clone();
    // Every case but the two that fail before Established came up once.
    assert_eq!(s.sessions_established, count as u64 - 2, "{s:?}");
    cancel.cancel();
    go.send(()).expect("go");
    let accepted = match fake_thread.join() {
        Ok(accepted) => accepted,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    assert_eq!(accepted, count, "connections from our speaker");
    wait_thread(thread);
}

// ---------------------------------------------------------------------------------------------
// Fuzz seeds from real routers (`#[ignore]`d: run by hand, see docs/fuzzing.md).

/// Where the captured messages go: `speaker/fuzz/seeds/bgp`, or `FLB_BGP_SEEDS`.
fn seeds_dir() -> PathBuf {
    std::env::var_os("FLB_BGP_SEEDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/bgp"))
}

/// The families an OPEN's multiprotocol capabilities name (none: IPv4 unicast, RFC 4760 §8).
fn open_families(open: &Received) -> BTreeSet<Family> {
    let body = open.body();
    let mut families = BTreeSet::new();
    let mut any = false;
    let mut params = body.get(10..).unwrap_or_default();
    while let [kind, len, rest @ ..] = params {
        let (value, next) = rest.split_at(usize::from(*len).min(rest.len()));
        if *kind == 2 {
            let mut caps = value;
            while let [code, len, rest @ ..] = caps {
                let (cap, next) = rest.split_at(usize::from(*len).min(rest.len()));
                if let (1, [0, afi, _, 1]) = (*code, cap) {
                    any = true;
                    match afi {
                        1 => families.insert(Family::Ipv4Unicast),
                        2 => families.insert(Family::Ipv6Unicast),
                        _ => false,
                    };
                }
                caps = next;
            }
        }
        params = next;
    }
    if !any {
        families.insert(Family::Ipv4Unicast);
    }
    families
}

/// Messages framed out of a byte stream that is read with a timeout (a `read_exact` cut short
/// by the timeout would lose its place in the stream).
struct Framer {
    stream: TcpStream,
    buf: Vec<u8>,
}

enum Next {
    Message(Received),
    Quiet,
    Closed,
}

impl Framer {
    fn next(&mut self) -> Next {
        loop {
            if self.buf.len() >= 19 {
                let len = usize::from(u16::from_be_bytes([self.buf[16], self.buf[17]]));
                assert!(
                    (19..=4096).contains(&len),
                    "length {len}: {:02x?}",
                    self.buf
                );
                if self.buf.len() >= len {
                    let bytes: Vec<u8> = self.buf.drain(..len).collect();
                    return Next::Message(Received {
                        kind: bytes[18],
                        bytes,
                    });
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Next::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Next::Quiet;
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Next::Closed,
                Err(e) => panic!("reading from the router: {e}"),
            }
        }
    }
}

/// One session with a router, from our side: our OPEN (with graceful restart, so that the
/// router sends End-of-RIB), KEEPALIVEs, until the router's End-of-RIB for every family both
/// sides have; then `provoke` (bad bytes) and whatever the router answers until it closes.
/// Returns everything the router sent, in order.
fn record(node_ns: &str, router: SocketAddr, provoke: Vec<u8>) -> Vec<Received> {
    let node_id = ferrolb_tests::netlab::topology::node_addresses(1).0;
    let stream = in_netns(node_ns, move || {
        let start = Instant::now();
        loop {
            match TcpStream::connect_timeout(&router, Duration::from_secs(2)) {
                Ok(stream) => return stream,
                // The daemon may still be starting.
                Err(e) if start.elapsed() < DEADLINE => {
                    eprintln!("connecting to {router}: {e}, again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("connecting to {router}: {e}"),
            }
        }
    });
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut framer = Framer {
        stream,
        buf: Vec::new(),
    };
    let send = |framer: &mut Framer, bytes: &[u8]| {
        framer.stream.write_all(bytes).expect("send to the router");
    };
    send(&mut framer, &wire::open_with(NODE_ASN, 90, node_id, true));
    let mut received: Vec<Received> = Vec::new();
    let mut missing: Option<BTreeSet<Family>> = None;
    let mut keepalive_seen = false;
    let start = Instant::now();
    while missing.as_ref().is_none_or(|m| !m.is_empty()) || !keepalive_seen {
        assert!(
            start.elapsed() < DEADLINE,
            "{router}: no End-of-RIB for {missing:?} (keepalive: {keepalive_seen}); got {:?}",
            received.iter().map(Received::describe).collect::<Vec<_>>()
        );
        match framer.next() {
            Next::Message(message) => {
                eprintln!("{router}: {}", message.describe());
                match message.kind {
                    wire::OPEN => {
                        let ours = BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]);
                        missing = Some(
                            open_families(&message)
                                .intersection(&ours)
                                .copied()
                                .collect(),
                        );
                        send(&mut framer, &wire::keepalive());
                    }
                    wire::KEEPALIVE => keepalive_seen = true,
                    wire::NOTIFICATION => panic!("{router}: {}", message.describe()),
                    _ => {}
                }
                if let (Some(family), Some(missing)) = (message.end_of_rib(), missing.as_mut()) {
                    missing.remove(&family);
                }
                received.push(message);
            }
            // Keep the router's hold timer (3 s for FRR's lab peers) from expiring.
            Next::Quiet if missing.is_some() => send(&mut framer, &wire::keepalive()),
            Next::Quiet => {}
            Next::Closed => panic!("{router} closed the session"),
        }
    }
    send(&mut framer, &provoke);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        match framer.next() {
            Next::Message(message) => {
                eprintln!("{router}: {}", message.describe());
                received.push(message);
            }
            Next::Quiet => {}
            Next::Closed => break,
        }
    }
    received
}

/// The seed files of one session: `<router>-<v4|v6>-<nn>-<kind>.bin`, a message each; of the
/// KEEPALIVEs (all alike) only the first.
fn write_seeds(dir: &Path, session: &str, messages: &[Received]) -> Vec<String> {
    let mut names = Vec::new();
    let mut keepalive_written = false;
    for (index, message) in messages.iter().enumerate() {
        let kind = match (message.kind, message.end_of_rib(), message.notification()) {
            (wire::KEEPALIVE, ..) if keepalive_written => continue,
            (wire::KEEPALIVE, ..) => {
                keepalive_written = true;
                "keepalive".to_string()
            }
            (wire::OPEN, ..) => "open".to_string(),
            (_, Some(Family::Ipv4Unicast), _) => "end-of-rib-ipv4".to_string(),
            (_, Some(Family::Ipv6Unicast), _) => "end-of-rib-ipv6".to_string(),
            (wire::UPDATE, ..) => "update".to_string(),
            (_, _, Some((code, subcode, _))) => format!("notification-{code}-{subcode}"),
            (wire::ROUTE_REFRESH, ..) => "route-refresh".to_string(),
            (kind, ..) => format!("type-{kind}"),
        };
        let name = format!("{session}-{:02}-{kind}.bin", index + 1);
        std::fs::write(dir.join(&name), &message.bytes).expect("write a seed");
        names.push(name);
    }
    names
}

/// `vtysh -c` lines from `configure terminal` on (bgpd may still be starting).
fn configure_frr(router: &Router, lines: &[&str]) {
    eventually("bgpd: seed routes", || {
        let mut args = vec!["-N", router.ns.as_str(), "-c", "configure terminal"];
        for line in lines {
            args.extend(["-c", line]);
        }
        let mut vtysh = ferrolb_tests::cmd::command("vtysh", args);
        vtysh.env("LC_ALL", "C");
        ferrolb_tests::cmd::run(vtysh)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

/// BIRD 2 in the router namespace: two passive sessions on port 1790 (FRR has 179), static
/// routes with communities and large communities.
fn start_bird(ns: &str, dir: &Path) {
    let conf = dir.join("bird.conf");
    std::fs::write(
        &conf,
        format!(
            r#"router id 192.0.2.1;
log "{log}" all;
protocol device {{}}
protocol static seeds4 {{
  ipv4;
  route 203.0.113.128/26 blackhole {{ bgp_community.add((64520, 100)); bgp_large_community.add((64520, 1, 2)); }};
  route 203.0.113.192/26 blackhole;
}}
protocol static seeds6 {{
  ipv6;
  route 2001:db8:ef::/48 blackhole {{ bgp_community.add((64520, 100)); bgp_large_community.add((64520, 1, 2)); }};
}}
protocol bgp rec4 {{
  local 192.0.2.1 port 1790 as 64520;
  neighbor 192.0.2.11 as 64513;
  passive on;
  ipv4 {{ import none; export all; }};
}}
protocol bgp rec6 {{
  local 2001:db8:2::1 port 1790 as 64520;
  neighbor 2001:db8:2::11 as 64513;
  passive on;
  ipv6 {{ import none; export all; }};
}}
"#,
            log = dir.join("bird.log").display()
        ),
    )
    .expect("bird.conf");
    let socket = dir.join("bird.ctl");
    ferrolb_tests::process::Background {
        name: "bird",
        ns,
        program: Path::new("bird"),
        args: vec![
            "-f".into(),
            "-c".into(),
            conf.display().to_string(),
            "-s".into(),
            socket.display().to_string(),
        ],
        env: Default::default(),
        dir,
    }
    .start()
    .expect("start bird");
}

/// GoBGP in the router namespace: passive on port 1792, its API on the namespace's loopback,
/// routes added through the CLI; graceful restart on, without which it sends no End-of-RIB.
fn start_gobgp(ns: &str, dir: &Path) {
    let conf = dir.join("gobgpd.toml");
    let mut toml = String::from(
        "[global.config]\n  as = 64530\n  router-id = \"192.0.2.1\"\n  port = 1792\n  local-address-list = [\"192.0.2.1\", \"2001:db8:2::1\"]\n",
    );
    for (neighbor, family) in [
        ("192.0.2.11", "ipv4-unicast"),
        ("2001:db8:2::11", "ipv6-unicast"),
    ] {
        toml.push_str(&format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{neighbor}\"\n    peer-as = 64513\n  [neighbors.transport.config]\n    passive-mode = true\n  [neighbors.graceful-restart.config]\n    enabled = true\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
        ));
    }
    std::fs::write(&conf, toml).expect("gobgpd.toml");
    ferrolb_tests::process::Background {
        name: "gobgpd",
        ns,
        program: Path::new("gobgpd"),
        args: vec![
            "-f".into(),
            conf.display().to_string(),
            "--api-hosts".into(),
            "127.0.0.1:50061".into(),
            "--pprof-disable".into(),
            "-p".into(),
        ],
        env: Default::default(),
        dir,
    }
    .start()
    .expect("start gobgpd");
    let routes: [&[&str]; 3] = [
        &[
            "-a",
            "ipv4",
            "203.0.113.32/27",
            "nexthop",
            "192.0.2.1",
            "community",
            "64530:100",
            "large-community",
            "64530:1:2",
        ],
        &["-a", "ipv4", "203.0.113.96/27", "nexthop", "192.0.2.1"],
        &[
            "-a",
            "ipv6",
            "2001:db8:f0::/48",
            "nexthop",
            "2001:db8:2::1",
            "community",
            "64530:100",
            "large-community",
            "64530:1:2",
        ],
    ];
    for route in routes {
        eventually(&format!("gobgp global rib add {route:?}"), || {
            let mut gobgp = ferrolb_tests::netlab::netns::exec(ns, "gobgp");
            gobgp
                .args(["-p", "50061", "global", "rib", "add"])
                .args(route);
            ferrolb_tests::cmd::run(gobgp)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }
}

/// Records what FRR, BIRD and GoBGP send, one file per message, into the fuzz seeds.
/// `cargo test -p ferrolb-speaker --test e2e_bgp_bad_input -- --ignored capture_bgp_seeds
/// --nocapture` (root).
#[test]
#[ignore = "writes the fuzz seeds; run by hand (docs/fuzzing.md)"]
fn capture_bgp_seeds() {
    let test = "capture_bgp_seeds";
    init_tracing("ferrolb_speaker=debug");
    let Some(lab) = TestLab::network(test, 1).unwrap() else {
        return;
    };
    let topology = &lab.netlab().topology;
    let router = lab.netlab().router();
    let router_ns = topology.router_ns();
    let node_ns = topology.ns("node1");
    let dir = lab.run_dir().join("seed-routers");
    std::fs::create_dir_all(&dir).expect("run dir");
    configure_frr(
        &router,
        &[
            "route-map flb-seeds permit 10",
            "set community 64512:100 64512:200",
            "set large-community 64512:1:2",
            "exit",
            &format!("router bgp {ROUTER_ASN}"),
            "address-family ipv4 unicast",
            "network 203.0.113.0/26 route-map flb-seeds",
            "network 203.0.113.64/26",
            "exit-address-family",
            "address-family ipv6 unicast",
            "network 2001:db8:ee::/48 route-map flb-seeds",
            "exit-address-family",
        ],
    );
    start_bird(&router_ns, &dir);
    start_gobgp(&router_ns, &dir);

    // Bad input that makes each router send a NOTIFICATION, recorded too: a 20-byte KEEPALIVE
    // (Bad Message Length), a message of type 9 (Bad Message Type), an UPDATE whose Total Path
    // Attribute Length runs past the message (Malformed Attribute List), a second OPEN (FSM
    // error). BIRD and GoBGP sent no NOTIFICATION (none within 10 s) for some of them, so each
    // session gets one its router answers, where one was found (GoBGP's IPv6 session: none).
    let mut bad_length = wire::keepalive();
    bad_length[17] = 20;
    bad_length.push(0);
    let bad_type = wire::message(9, &[]);
    let mut attributes_overrun = wire::update(&[], &[0x40, 1, 1, 0], &[]);
    attributes_overrun[21..23].copy_from_slice(&200u16.to_be_bytes());
    let second_open = wire::open(NODE_ASN, 90, Ipv4Addr::new(192, 0, 2, 11));
    let v4 = |port| SocketAddr::new(IpAddr::V4(ROUTER_LAN_V4), port);
    let v6 = |port| {
        SocketAddr::new(
            IpAddr::V6(ferrolb_tests::netlab::topology::ROUTER_LAN_V6),
            port,
        )
    };
    let sessions = [
        ("frr-v4", v4(179), bad_length),
        ("frr-v6", v6(179), bad_type.clone()),
        ("bird-v4", v4(1790), attributes_overrun.clone()),
        ("bird-v6", v6(1790), bad_type),
        ("gobgp-v4", v4(1792), attributes_overrun),
        ("gobgp-v6", v6(1792), second_open),
    ];
    let seeds = seeds_dir();
    std::fs::create_dir_all(&seeds).expect("seeds dir");
    for (session, address, provoke) in sessions {
        let messages = record(&node_ns, address, provoke);
        assert!(
            messages
                .iter()
                .any(|m| m.kind == wire::UPDATE && m.end_of_rib().is_none()),
            "{session}: no UPDATE with routes"
        );
        // Repeatable: this session's files from an earlier run go first.
        for entry in std::fs::read_dir(&seeds).expect("seeds dir").flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{session}-"))
            {
                std::fs::remove_file(entry.path()).expect("remove an old seed");
            }
        }
        let names = write_seeds(&seeds, session, &messages);
        eprintln!("{session}: {}", names.join(" "));
    }
}
