//! The BGP receive path: arbitrary bytes as a TCP byte stream from a peer, framed and decoded as
//! `bgp::session` does (`codec::message_len`, then `codec::decode`), each message also fed to the
//! state machine (`fsm::Session`, connected, under three peer-AS configurations) as the session
//! task would. Checks: no panic; a decoded NOTIFICATION or KEEPALIVE encodes back to the same
//! bytes; an OPEN's parameters, encoded by our OPEN builder and decoded again, are the same; every
//! NOTIFICATION the codec asks for encodes to a message that decodes back to it; an End-of-RIB
//! announces and withdraws nothing; the state machine sends exactly the codec's NOTIFICATION
//! (and closes) on a decode error, survives an RFC 7606 error in Established, and answers an OPEN
//! as `fsm::validate_open` says.
#![no_main]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ferrolb_crds::config::PeerAsn;
use ferrolb_speaker::bgp::codec::{
    self, DecodeContext, DecodeError, Family, LocalOpen, MAX_MESSAGE_LEN, Message, OpenParams,
};
use ferrolb_speaker::bgp::fsm::{self, Action, Backoff, Direction, Event, SessionConfig, State};
use libfuzzer_sys::fuzz_target;

const LOCAL_ASN: u32 = 64513;

fn config(peer_asn: PeerAsn) -> SessionConfig {
    SessionConfig {
        local_asn: LOCAL_ASN,
        peer_asn,
        router_id: Ipv4Addr::new(192, 0, 2, 11),
        hold_time: Duration::from_secs(90),
        keepalive_time: Duration::from_secs(30),
        passive: false,
        connect_retry_time: Duration::from_secs(10),
        families: BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]),
        extended_next_hop_ipv4: true,
        graceful_restart: None,
        backoff: Backoff::default(),
    }
}

/// The messages of `stream`, framed as the session frames its receive buffer: stops at a framing
/// error (the session resets there) or at an incomplete message (it would wait for more).
fn frames(stream: &[u8]) -> (Vec<&[u8]>, Option<DecodeError>) {
    let mut rest = stream;
    let mut out = Vec::new();
    loop {
        match codec::message_len(rest) {
            Ok(Some(len)) if rest.len() >= len => {
                let (message, tail) = rest.split_at(len);
                out.push(message);
                rest = tail;
            }
            Ok(_) => return (out, None),
            Err(error) => return (out, Some(error)),
        }
    }
}

/// A NOTIFICATION the codec asks for must be sendable and read back as itself.
fn check_notification_to_send(error: &DecodeError) {
    let Some(notification) = error.notification() else {
        return;
    };
    let bytes = notification.to_bytes();
    assert!(bytes.len() <= MAX_MESSAGE_LEN, "{error}");
    let Ok(Message::Notification(back)) = codec::decode(&bytes, &DecodeContext::default()) else {
        panic!("{error}: our NOTIFICATION does not decode");
    };
    assert_eq!(
        (back.code, back.subcode),
        (notification.code, notification.subcode)
    );
    // Data that would not fit in one message is cut.
    assert!(notification.data.starts_with(&back.data), "{error}");
}

/// Our OPEN builder, given what was decoded, writes an OPEN that decodes to the same.
fn check_open_roundtrip(params: &OpenParams) {
    let caps = &params.capabilities;
    // One Capabilities parameter holds at most 255 bytes; ours never carry more than two
    // graceful restart families, a decoded OPEN may carry many more.
    if caps
        .graceful_restart
        .as_ref()
        .is_some_and(|gr| gr.families.len() > 8)
    {
        return;
    }
    let local = LocalOpen {
        asn: params.asn,
        hold_time: params.hold_time,
        router_id: params.router_id,
        capabilities: caps.clone(),
    };
    let bytes = codec::encode(&codec::open(&local)).expect("our OPEN encodes");
    let Ok(Message::Open(again)) = codec::decode(&bytes, &DecodeContext::default()) else {
        panic!("our OPEN for {params:?} does not decode");
    };
    assert_eq!(again.asn, params.asn);
    assert_eq!(again.hold_time, params.hold_time);
    assert_eq!(again.router_id, params.router_id);
    assert_eq!(again.capabilities.four_octet_as, Some(params.asn));
    assert_eq!(again.capabilities.multiprotocol, caps.multiprotocol);
    assert_eq!(again.capabilities.route_refresh, caps.route_refresh);
    assert_eq!(
        again.capabilities.extended_next_hop_ipv4,
        caps.extended_next_hop_ipv4
    );
    assert_eq!(again.capabilities.graceful_restart, caps.graceful_restart);
}

/// Every framed message through `decode`, with the checks that need no session.
fn decode_stream(stream: &[u8], four_octet_as: bool) {
    let context = DecodeContext { four_octet_as };
    let (messages, framing_error) = frames(stream);
    if let Some(error) = &framing_error {
        check_notification_to_send(error);
    }
    for message in messages {
        match codec::decode(message, &context) {
            Ok(Message::Notification(notification)) => {
                assert_eq!(notification.to_bytes(), message);
            }
            Ok(Message::Keepalive) => assert_eq!(codec::keepalive(), message),
            Ok(Message::Open(params)) => check_open_roundtrip(&params),
            Ok(Message::Update(summary)) => {
                if summary.end_of_rib.is_some() {
                    assert_eq!(
                        (summary.announced, summary.withdrawn),
                        (0, 0),
                        "{summary:?}"
                    );
                }
            }
            Ok(Message::RouteRefresh(_)) => {}
            Err(error) => check_notification_to_send(&error),
        }
    }
}

/// The stream as one connection of a session: the session task's event mapping, and what the
/// state machine must do with each.
fn drive_session(stream: &[u8], peer_asn: PeerAsn) {
    let config = config(peer_asn);
    let mut session = fsm::Session::new(config.clone());
    let now = Instant::now();
    session.handle(Event::ManualStart, now);
    session.handle(Event::TcpConnectionConfirmed(Direction::Outgoing), now);
    assert_eq!(session.state(), State::OpenSent);
    let mut context = DecodeContext::default();
    let (messages, framing_error) = frames(stream);
    // Each message is decoded with what the earlier ones negotiated (4-octet AS), as the
    // session task does; the framing error, if any, comes last.
    let mut messages = messages.into_iter();
    let mut framing_error = framing_error;
    loop {
        let event = match messages.next() {
            Some(message) => match codec::decode(message, &context) {
                Ok(Message::Open(open)) => Event::BgpOpen(open),
                Ok(Message::Update(update)) => Event::UpdateMsg(update),
                Ok(Message::Notification(notification)) => Event::NotifMsg(notification),
                Ok(Message::Keepalive) => Event::KeepAliveMsg,
                Ok(Message::RouteRefresh(family)) => Event::RouteRefreshMsg(family),
                Err(error) => Event::DecodeError(error),
            },
            None => match framing_error.take() {
                Some(error) => Event::DecodeError(error),
                None => return,
            },
        };
        let before = session.state();
        let sent_for_error = match &event {
            Event::DecodeError(error) => Some(error.notification().cloned()),
            _ => None,
        };
        let refused_open = match &event {
            Event::BgpOpen(open) if before == State::OpenSent => {
                Some(fsm::validate_open(&config, open).err().map(|(n, _)| n))
            }
            _ => None,
        };
        let actions = session.handle(event, now);
        let sent: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::SendNotification(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        let closed = actions.contains(&Action::CloseConnection);
        match sent_for_error {
            Some(Some(notification)) => {
                assert_eq!(sent, vec![notification], "{before}");
                assert!(closed);
            }
            Some(None) if before == State::Established => {
                assert!(sent.is_empty() && !closed, "RFC 7606 leniency: {actions:?}");
                assert_eq!(session.state(), State::Established);
            }
            _ => {}
        }
        match refused_open {
            Some(Some(notification)) => assert_eq!(sent, vec![notification]),
            Some(None) => {
                assert_eq!(session.state(), State::OpenConfirm);
                assert!(actions.contains(&Action::SendKeepalive));
            }
            None => {}
        }
        if closed {
            // The session drops the connection and whatever it still held.
            assert_eq!(session.state(), State::Idle);
            return;
        }
        if let Some(negotiated) = session.negotiated() {
            context.four_octet_as = negotiated.four_octet_as;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    decode_stream(data, false);
    decode_stream(data, true);
    for peer_asn in [PeerAsn::Fixed(64512), PeerAsn::Internal, PeerAsn::External] {
        drive_session(data, peer_asn);
    }
});
