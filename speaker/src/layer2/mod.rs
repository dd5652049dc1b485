//! Layer2 mode: exactly one node answers ARP and NDP for each IP, and announces it unasked when
//! ownership moves to it.
//!
//! - [`planner`]: pure, the election (one owner per IP) and this host's interfaces per IP.
//! - [`diff`]: pure, desired announcements → changes (gratuitous only where something is new).
//! - [`responder`]: pure policy, frame in → reply frame or [`responder::DropReason`] out.
//! - [`gratuitous`]: the pure schedule of unsolicited announcements.
//! - [`interfaces`]: the host's interfaces, and which of them answer an IP.
//! - [`socket`]: AF_PACKET sockets with kernel BPF filters (the crate's only `unsafe`).
//! - [`announcer`]: the I/O, behind [`crate::announcer::Announcer`].

pub mod announcer;
pub mod diff;
pub mod gratuitous;
pub mod interfaces;
pub mod planner;
pub mod responder;
pub mod socket;

pub use announcer::Layer2Announcer;
pub use gratuitous::{Burst, GratuitousSchedule, Step, announcement_frames};
pub use responder::{AnnounceTable, DropReason, IfaceInfo, Interfaces, Responder};
pub use socket::{Listen, PacketSocket, lookup_iface};
