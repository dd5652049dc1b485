//! The BFD receive path: arbitrary bytes as one UDP payload, parsed as the transport will
//! (`bfd::packet::ControlPacket::parse`), then as a stream of datagrams fed to a session
//! (`bfd::fsm::Session`) together with timer expiries, as the driver will. Checks: no panic;
//! an accepted packet emits back to its own mandatory section and parses to itself; every packet
//! the session sends parses to itself, never carries both P and F, advertises at least 1 s while
//! not Up, and there is at most one per event.
//!
//! Stream layout: a control byte, then (for a datagram) that many bytes. Control 0xff fires the
//! transmit timer, 0xfe the detection timer, 0xfd disables and 0xfc enables the session; any
//! other value is the length of the next datagram (cut at the end of the input).
#![no_main]

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use ferrolb_speaker::bfd::fsm::{Action, Event, Session, SessionConfig, Timer};
use ferrolb_speaker::bfd::packet::{ControlPacket, MANDATORY_LEN, State};
use libfuzzer_sys::fuzz_target;

const OUR_DISCRIMINATOR: u32 = 0x0000_0a01;

fn check_parse(data: &[u8]) {
    let Ok(packet) = ControlPacket::parse(data) else {
        return;
    };
    let bytes = packet.to_bytes();
    let mut expected = [0u8; MANDATORY_LEN];
    expected.copy_from_slice(&data[..MANDATORY_LEN]);
    expected[3] = MANDATORY_LEN as u8; // we never send more than the mandatory section
    assert_eq!(bytes, expected);
    assert_eq!(ControlPacket::parse(&bytes), Ok(packet));
}

fn check_actions(session: &Session, actions: &[Action]) {
    let sent: Vec<&ControlPacket> = actions
        .iter()
        .filter_map(|a| match a {
            Action::SendPacket(packet) => Some(packet),
            _ => None,
        })
        .collect();
    assert!(sent.len() <= 1, "{actions:?}");
    for packet in sent {
        assert!(!(packet.poll && packet.final_), "{packet:?}");
        assert_eq!(packet.my_discriminator, OUR_DISCRIMINATOR);
        if packet.state != State::Up {
            assert!(packet.desired_min_tx_us >= 1_000_000, "{packet:?}");
        }
        assert_eq!(ControlPacket::parse(&packet.to_bytes()), Ok(*packet));
    }
    if matches!(session.state(), State::Init | State::Up) {
        assert!(session.remote_discriminator().is_some());
    }
}

/// One event through the session, the timers updated as a driver would.
fn feed(session: &mut Session, event: Event, now: Instant, timers: &mut BTreeMap<Timer, Instant>) {
    let actions = session.handle(event, now);
    check_actions(session, &actions);
    for action in &actions {
        match action {
            Action::StartTimer(timer, after) => {
                timers.insert(*timer, now + *after);
            }
            Action::StopTimer(timer) => {
                timers.remove(timer);
            }
            _ => {}
        }
    }
}

fn drive_session(mut stream: &[u8]) {
    let Some(discriminator) = NonZeroU32::new(OUR_DISCRIMINATOR) else {
        return;
    };
    let mut session = Session::new(SessionConfig::default(), discriminator, 1);
    let mut now = Instant::now();
    // The driver's timers: deadline per timer, as the actions set them.
    let mut timers: BTreeMap<Timer, Instant> = BTreeMap::new();
    feed(&mut session, Event::AdminUp, now, &mut timers);
    while let Some((&control, rest)) = stream.split_first() {
        stream = rest;
        let event = match control {
            0xff | 0xfe => {
                let timer = if control == 0xff {
                    Timer::Transmit
                } else {
                    Timer::Detection
                };
                match timers.remove(&timer) {
                    Some(at) => {
                        now = now.max(at);
                        Event::TimerExpired(timer)
                    }
                    None => continue,
                }
            }
            0xfd => Event::AdminDown,
            0xfc => Event::AdminUp,
            len => {
                let (datagram, tail) = stream.split_at(usize::from(len).min(stream.len()));
                stream = tail;
                // Packets arrive a little apart.
                now += Duration::from_millis(10);
                match ControlPacket::parse(datagram) {
                    Ok(packet) => Event::PacketReceived(packet),
                    Err(_) => continue,
                }
            }
        };
        feed(&mut session, event, now, &mut timers);
    }
}

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    drive_session(data);
});
