//! Layer2 mode: answer ARP and NDP for the IPs this node owns, and announce them unasked when
//! ownership moves here.
//!
//! - [`responder`]: pure policy, frame in → reply frame or [`responder::DropReason`] out.
//! - [`gratuitous`]: the pure schedule of unsolicited announcements.
//! - [`socket`]: AF_PACKET sockets with kernel BPF filters (the crate's only `unsafe`).

pub mod gratuitous;
pub mod responder;
pub mod socket;

pub use gratuitous::{Burst, GratuitousSchedule, Step, announcement_frames};
pub use responder::{AnnounceTable, DropReason, IfaceInfo, Interfaces, Responder};
pub use socket::{Listen, PacketSocket, lookup_iface};
