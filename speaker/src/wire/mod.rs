//! Packet formats the layer2 responder reads and writes, in the smoltcp style: pure, no I/O.
//!
//! Each protocol has two layers:
//! - a zero-copy *view* (`EthernetFrame<T>`, `ArpPacket<T>`, `Ipv6Packet<T>`, `Icmpv6Packet<T>`)
//!   over any `T: AsRef<[u8]>`, with setters when `T: AsMut<[u8]>`;
//! - a small owned *representation* (`ArpRepr`, `Ipv6Repr`, `NdiscRepr`) that carries the meaning.
//!
//! # The length contract
//! `new_checked` (= `new_unchecked` + `check_len`) must be used for every untrusted buffer: once it
//! returned `Ok`, no getter of that view panics. Offsets that depend on header fields (ARP address
//! lengths, NDP options) are checked by `check_len` or by the `Repr::parse` that reads them.
//! `new_unchecked` is for emission into a buffer of exactly `Repr::buffer_len()` bytes, where a
//! reused buffer could pass a length check by chance. `Repr::emit` never panics on a buffer of at
//! least `buffer_len()` bytes.
//!
//! A malformed packet is only ever dropped, so [`Error`] carries no detail: *why* a frame was not
//! answered is the responder's business (`layer2::responder::DropReason`).
//!
//! Builders for the frames the speaker sends (ARP reply, gratuitous ARP, solicited and
//! unsolicited Neighbor Advertisement) live in [`build`].

pub mod arp;
pub mod build;
pub mod ethernet;
pub mod icmpv6;
pub mod ipv6;
pub mod ndisc;

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr};
pub use icmpv6::Icmpv6Packet;
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use ndisc::{NdiscRepr, NeighborFlags};

/// A packet was truncated or malformed. Deliberately without detail (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("truncated or malformed packet")]
pub struct Error;

/// Result of parsing untrusted bytes.
pub type Result<T> = std::result::Result<T, Error>;

/// An Ethernet (EUI-48) hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// `00:00:00:00:00:00`, the "unknown" target hardware address of an ARP request.
    pub const ZERO: Mac = Mac([0; 6]);

    /// Reads a MAC from the first 6 bytes of `bytes`; `None` if shorter.
    pub fn from_bytes(bytes: &[u8]) -> Option<Mac> {
        let octets: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(Mac(octets))
    }

    /// The raw octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Group bit set (multicast, including broadcast).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        *self == Mac::BROADCAST
    }

    /// Individual (unicast) address that is not all zeros: the only kind a host may send from.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && *self != Mac::ZERO
    }

    /// The Ethernet multicast address an IPv6 multicast group maps to (RFC 2464 §7:
    /// `33:33` followed by the low 32 bits of the group address).
    pub fn ipv6_multicast(group: Ipv6Addr) -> Mac {
        let o = group.octets();
        Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A MAC string was not six colon-separated hex octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six colon-separated hex octets")]
pub struct ParseMacError(pub String);

impl FromStr for Mac {
    type Err = ParseMacError;

    fn from_str(s: &str) -> std::result::Result<Mac, ParseMacError> {
        let err = || ParseMacError(s.to_owned());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(octets))
    }
}

/// The solicited-node multicast group of an IPv6 address (RFC 4291 §2.7.1):
/// `ff02::1:ffXX:XXXX` with the low 24 bits of `addr`.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// `ff02::1`, the link-local all-nodes group.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Reads a big-endian `u16` at `at`; callers have checked the length.
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Reads 16 bytes at `at` as an IPv6 address; callers have checked the length.
fn ipv6_at(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn mac_display_and_parse_round_trip() {
        let mac = Mac([0x02, 0x00, 0x5e, 0x10, 0xab, 0xff]);
        assert_eq!(mac.to_string(), "02:00:5e:10:ab:ff");
        assert_eq!("02:00:5e:10:ab:ff".parse::<Mac>(), Ok(mac));
        assert_eq!("2:0:5e:10:AB:ff".parse::<Mac>(), Ok(mac));
        for bad in [
            "",
            "02:00:5e:10:ab",
            "02:00:5e:10:ab:ff:00",
            "02:00:5e:10:ab:fg",
            "002:0:0:0:0:0",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn mac_classes() {
        assert!(Mac::BROADCAST.is_multicast() && Mac::BROADCAST.is_broadcast());
        assert!(!Mac::BROADCAST.is_unicast());
        assert!(!Mac::ZERO.is_unicast());
        assert!(Mac([0x02, 0, 0, 0, 0, 1]).is_unicast());
        assert!(Mac([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
    }

    #[test]
    fn solicited_node_group_and_its_mac() {
        let addr: Ipv6Addr = "2001:db8:2::1:2:240".parse().unwrap();
        let group = solicited_node(addr);
        assert_eq!(group, "ff02::1:ff02:240".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            Mac::ipv6_multicast(group),
            Mac([0x33, 0x33, 0xff, 0x02, 0x02, 0x40])
        );
        assert_eq!(
            Mac::ipv6_multicast(ALL_NODES),
            Mac([0x33, 0x33, 0, 0, 0, 1])
        );
    }
}
