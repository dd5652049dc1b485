//! FerroLB speaker library: everything the `ferrolb-speaker` binary runs, split so that the pure
//! parts (packet formats, owner election, layer2 responder policy) can be tested and fuzzed
//! without sockets, and the I/O edge (`layer2::socket`) stays small.
//!
//! Module map (see `docs` and the style guide §6.3):
//! - [`wire`]: panic-free views and representations of Ethernet, ARP, IPv6, ICMPv6 and NDP.
//! - [`election`]: which node announces which IP (rendezvous hashing), no I/O, no Kubernetes types.
//! - [`layer2`]: the ARP/NDP responder policy, the gratuitous announcement schedule and the
//!   AF_PACKET socket (the only `unsafe` code of the crate).

pub mod election;
pub mod layer2;
pub mod membership;
pub mod wire;
