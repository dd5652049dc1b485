//! FerroLB speaker library: everything the `ferrolb-speaker` binary runs, split so that the pure
//! parts (packet formats, eligibility, the decision step, owner election, layer2 responder
//! policy, diffing) can be tested and fuzzed without sockets or a cluster, and the I/O edges stay
//! small. See `docs/speaker.md` for the task and channel diagram.
//!
//! Module map:
//! - [`view`]: the cluster as plain data; [`cluster`] builds it from the watched objects.
//! - [`eligibility`]: which nodes may announce an IP, whatever the mode (pure).
//! - [`engine`]: the one decision step, view + live set + interfaces → a plan per mode (pure).
//! - [`election`]: rendezvous hashing with preferences, balanced assignment (pure).
//! - [`announcer`]: the trait each mode implements; [`layer2`] (ARP/NDP) and [`bgp`] are the
//!   modes, each with its planner and its announcer.
//! - [`wire`]: panic-free views and representations of Ethernet, ARP, IPv6, ICMPv6 and NDP.
//! - [`liveness`] and [`membership`]: which speakers are alive (SWIM), never the API server.
//! - [`stall`]: notices that this process did not run (SIGSTOP, paused VM).
//! - [`status`]: ServiceL2Status and Events, written by their own task, off the failover path.
//! - [`daemon`]: starts every task and runs the decision loop; [`metrics`], [`http`].

pub mod announcer;
pub mod bfd;
pub mod bgp;
pub mod cluster;
pub mod daemon;
pub mod election;
pub mod eligibility;
pub mod engine;
pub mod http;
pub mod layer2;
pub mod liveness;
pub mod membership;
pub mod metrics;
pub mod stall;
pub mod status;
pub mod view;
pub mod wire;
