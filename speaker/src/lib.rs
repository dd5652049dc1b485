//! FerroLB speaker library: everything the `ferrolb-speaker` binary runs, split so that the pure
//! parts (packet formats, owner election, layer2 responder policy, eligibility, diffing) can be
//! tested and fuzzed without sockets or a cluster, and the I/O edges stay small.
//!
//! Module map (see `docs/speaker.md` and the style guide §6.3):
//! - [`wire`]: panic-free views and representations of Ethernet, ARP, IPv6, ICMPv6 and NDP.
//! - [`election`]: which node announces which IP (rendezvous hashing), no I/O, no Kubernetes types.
//! - [`layer2`]: the ARP/NDP responder policy, the gratuitous announcement schedule and the
//!   AF_PACKET socket.
//! - [`view`]: the cluster as plain data and the eligibility/ownership decisions over it.
//! - [`announce`]: desired announcements → changes (announce/withdraw, gratuitous on takeover).
//! - [`interfaces`]: the host's interfaces and which of them announce an IP.
//! - [`tasks`]: the per-interface responder tasks and gratuitous bursts.
//! - [`liveness`]: the membership's live set (or every node when it is off).
//! - [`run`]: the Kubernetes watches and the reconcile loop; [`status`]: ServiceL2Status and
//!   Events; [`metrics`], [`http`], [`shutdown`].

pub mod announce;
pub mod election;
pub mod http;
pub mod interfaces;
pub mod layer2;
pub mod liveness;
pub mod membership;
pub mod metrics;
pub mod run;
pub mod shutdown;
pub mod status;
pub mod tasks;
pub mod view;
pub mod wire;
