//! BFD (Bidirectional Forwarding Detection), our own implementation (`docs/decisions.md`, "BFD:
//! our own implementation"): RFC 5880 asynchronous mode, for the single-hop (RFC 5881) and
//! multihop (RFC 5883) sessions a BGPPeer's `bfdProfile` asks for. This is the pure layer, in
//! the shape of [`crate::wire`] and [`crate::bgp::fsm`]:
//!
//! - [`packet`]: the Control packet, a view ([`ControlPacketView`]) and its meaning
//!   ([`ControlPacket`]); `parse` makes the RFC 5880 §6.8.6 checks a datagram alone decides,
//!   one [`ParseError`] variant each, and never panics.
//! - [`fsm`]: one session's state machine ([`Session::handle`], [`fsm::step`]): the §6.8.6
//!   state table, Poll/Final, negotiated and jittered timers, detection, passive mode,
//!   administrative control. Timers go out as actions and come back as events.
//!
//! Not implemented, on purpose: authentication (a packet with the A bit is rejected with its
//! own error, so it can be counted), the Echo function (we advertise Required Min Echo RX 0),
//! our own Demand mode (we honour a peer's).
//!
//! The driver, in the shape of [`crate::bgp::session`]:
//!
//! - [`transport`]: the UDP sockets (ports 3784 and 4784, the TTL of every datagram read, a
//!   source port in 49152–65535, TTL 255 out);
//! - [`session`]: one task per session, the receive tasks they share, and the [`Status`] a
//!   BGP session is bound to (`bgp::session::run_with_bfd`: a failure takes it down at once
//!   with Cease "BFD Down", RFC 9384).

pub mod fsm;
pub mod packet;
pub mod session;
pub mod transport;

pub use fsm::{Action, DiscardReason, Event, Session, SessionConfig, StateChange, Timer};
pub use packet::{ControlPacket, ControlPacketView, Diagnostic, ParseError, State};
pub use session::{PeerSettings, Sessions, StartError, Status};
