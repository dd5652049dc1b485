//! BFD (Bidirectional Forwarding Detection), our own implementation: RFC 5880 asynchronous
//! mode, for the single-hop (RFC 5881) and multihop (RFC 5883) sessions a BGPPeer's
//! `bfdProfile` asks for. This is the pure layer, in the shape of [`crate::wire`]:
//!
//! - [`packet`]: the Control packet, a view ([`ControlPacketView`]) and its meaning
//!   ([`ControlPacket`]); `parse` makes the RFC 5880 §6.8.6 checks a datagram alone decides,
//!   one [`ParseError`] variant each, and never panics.
//!
//! Not implemented, on purpose: authentication (a packet with the A bit is rejected with its
//! own error, so it can be counted).
//!
//! Not here yet: the session state machine, the transport task, the binding to BGP, the
//! status in the CRDs, metrics.

pub mod packet;

pub use packet::{ControlPacket, ControlPacketView, Diagnostic, ParseError, State};
