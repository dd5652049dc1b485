//! Neighbor Discovery (RFC 4861): Neighbor Solicitation and Neighbor Advertisement, the two
//! messages a layer2 speaker needs. Added to the same [`Icmpv6Packet`] view as accessors.
//!
//! Options (RFC 4861 §4.6): a zero-length option is an error (it would also loop forever), an
//! option running past the end is an error, the wanted link-layer option with a length other
//! than Ethernet's 8 bytes is an error (Linux drops such an NS: "invalid link-layer address
//! length"; answering it would mean guessing the sender's MAC), unknown options are skipped, and
//! a missing link-layer option is just `None`.

use std::net::Ipv6Addr;

use super::icmpv6::{Icmpv6Packet, TYPE_NEIGHBOR_ADVERT, TYPE_NEIGHBOR_SOLICIT, field};
use super::{Error, Mac, Result, ipv6_at};

/// Option type: source link-layer address.
const OPT_SOURCE_LLADDR: u8 = 1;
/// Option type: target link-layer address.
const OPT_TARGET_LLADDR: u8 = 2;
/// A link-layer address option for Ethernet: type, length (in units of 8 octets), 6-byte MAC.
const LLADDR_OPTION_LEN: usize = 8;

/// Length of an NS or NA without options.
pub const NEIGHBOR_MSG_LEN: usize = field::NEIGH_OPTIONS.start;

const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

/// The flags of a Neighbor Advertisement (RFC 4861 §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NeighborFlags {
    /// R: the sender is a router.
    pub router: bool,
    /// S: sent in response to a Neighbor Solicitation.
    pub solicited: bool,
    /// O: the advertisement should replace a cached link-layer address.
    pub override_: bool,
}

impl NeighborFlags {
    fn from_bits(bits: u8) -> NeighborFlags {
        NeighborFlags {
            router: bits & FLAG_ROUTER != 0,
            solicited: bits & FLAG_SOLICITED != 0,
            override_: bits & FLAG_OVERRIDE != 0,
        }
    }

    fn bits(self) -> u8 {
        let mut bits = 0;
        if self.router {
            bits |= FLAG_ROUTER;
        }
        if self.solicited {
            bits |= FLAG_SOLICITED;
        }
        if self.override_ {
            bits |= FLAG_OVERRIDE;
        }
        bits
    }
}

/// NS/NA accessors; valid once the buffer holds [`NEIGHBOR_MSG_LEN`] bytes
/// (checked by [`NdiscRepr::parse`]).
impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub fn neighbor_flags(&self) -> NeighborFlags {
        NeighborFlags::from_bits(self.buffer.as_ref()[field::NEIGH_FLAGS])
    }

    pub fn target_addr(&self) -> Ipv6Addr {
        ipv6_at(self.buffer.as_ref(), field::TARGET_ADDR.start)
    }

    pub fn neighbor_options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::NEIGH_OPTIONS]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Writes the flag byte and clears the 29 reserved bits (the whole field for an NS).
    pub fn set_neighbor_flags(&mut self, flags: NeighborFlags) {
        let bytes = self.buffer.as_mut();
        bytes[field::NEIGH_FLAGS] = flags.bits();
        bytes[field::NEIGH_FLAGS + 1..field::TARGET_ADDR.start].fill(0);
    }

    pub fn set_target_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn neighbor_options_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::NEIGH_OPTIONS]
    }
}

/// The meaning of a Neighbor Solicitation or Advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdiscRepr {
    NeighborSolicit {
        target: Ipv6Addr,
        /// Absent in DAD probes (source `::`) and allowed to be absent in unicast NUD probes.
        source_lladdr: Option<Mac>,
    },
    NeighborAdvert {
        flags: NeighborFlags,
        target: Ipv6Addr,
        target_lladdr: Option<Mac>,
    },
}

impl NdiscRepr {
    /// Parses an NS or NA whose IPv6 source and destination were `src` and `dst`.
    ///
    /// Checks what RFC 4861 §7.1 asks of the message itself: correct checksum, code 0, at least
    /// 24 bytes, non-multicast target, well-formed options. The hop-limit-255 check belongs to the
    /// IPv6 header and is left to the caller, which has it. Every other ICMPv6 type is an error.
    pub fn parse<T: AsRef<[u8]>>(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        packet: &Icmpv6Packet<T>,
    ) -> Result<NdiscRepr> {
        packet.check_len()?;
        if packet.buffer.as_ref().len() < NEIGHBOR_MSG_LEN
            || packet.msg_code() != 0
            || !packet.verify_checksum(src, dst)
        {
            return Err(Error);
        }
        let target = packet.target_addr();
        if target.is_multicast() {
            return Err(Error);
        }
        match packet.msg_type() {
            TYPE_NEIGHBOR_SOLICIT => Ok(NdiscRepr::NeighborSolicit {
                target,
                source_lladdr: find_lladdr(packet.neighbor_options(), OPT_SOURCE_LLADDR)?,
            }),
            TYPE_NEIGHBOR_ADVERT => Ok(NdiscRepr::NeighborAdvert {
                flags: packet.neighbor_flags(),
                target,
                target_lladdr: find_lladdr(packet.neighbor_options(), OPT_TARGET_LLADDR)?,
            }),
            _ => Err(Error),
        }
    }

    /// Length of the ICMPv6 message `emit` writes.
    pub fn buffer_len(&self) -> usize {
        let lladdr = match self {
            NdiscRepr::NeighborSolicit { source_lladdr, .. } => source_lladdr,
            NdiscRepr::NeighborAdvert { target_lladdr, .. } => target_lladdr,
        };
        NEIGHBOR_MSG_LEN + lladdr.map_or(0, |_| LLADDR_OPTION_LEN)
    }

    /// Writes the message and its checksum for an IPv6 header from `src` to `dst`;
    /// `packet` must be exactly `buffer_len()` bytes (the checksum covers the whole buffer).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        packet: &mut Icmpv6Packet<T>,
    ) {
        let (msg_type, flags, target, lladdr) = match *self {
            NdiscRepr::NeighborSolicit {
                target,
                source_lladdr,
            } => (
                TYPE_NEIGHBOR_SOLICIT,
                NeighborFlags::default(),
                target,
                source_lladdr.map(|mac| (OPT_SOURCE_LLADDR, mac)),
            ),
            NdiscRepr::NeighborAdvert {
                flags,
                target,
                target_lladdr,
            } => (
                TYPE_NEIGHBOR_ADVERT,
                flags,
                target,
                target_lladdr.map(|mac| (OPT_TARGET_LLADDR, mac)),
            ),
        };
        packet.set_msg_type(msg_type);
        packet.set_msg_code(0);
        packet.set_neighbor_flags(flags);
        packet.set_target_addr(target);
        if let Some((opt_type, mac)) = lladdr {
            let options = packet.neighbor_options_mut();
            options[0] = opt_type;
            options[1] = 1; // in units of 8 octets
            options[2..LLADDR_OPTION_LEN].copy_from_slice(&mac.0);
        }
        packet.fill_checksum(src, dst);
    }
}

/// The first Ethernet link-layer address option of `wanted` type, walking all options so that a
/// malformed one anywhere makes the message invalid (RFC 4861 §7.1.1: "all included options
/// have a length that is greater than zero").
fn find_lladdr(mut options: &[u8], wanted: u8) -> Result<Option<Mac>> {
    let mut found = None;
    while !options.is_empty() {
        let [opt_type, opt_units, ..] = *options else {
            return Err(Error);
        };
        let len = usize::from(opt_units) * 8;
        if len == 0 || len > options.len() {
            return Err(Error);
        }
        if opt_type == wanted {
            if len != LLADDR_OPTION_LEN {
                return Err(Error);
            }
            if found.is_none() {
                found = Mac::from_bytes(&options[2..LLADDR_OPTION_LEN]);
            }
        }
        options = &options[len..];
    }
    Ok(found)
}

#[cfg(test)]
mod test {
    use super::super::icmpv6::test::NS_BYTES;
    use super::*;

    // A solicited NA (S|O) from 2001:db8:2::240 to 2001:db8:2::200 for 2001:db8:2::240 with a
    // target link-layer option 02:00:00:00:00:f0. Checksum 0x8302 computed independently (Python).
    static NA_BYTES: [u8; 32] = [
        0x88, 0x00, 0x83, 0x02, 0x60, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x40, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x00, 0xf0,
    ];

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn ns_addrs() -> (Ipv6Addr, Ipv6Addr) {
        (ip("2001:db8:2::200"), ip("ff02::1:ff00:240"))
    }

    fn na_addrs() -> (Ipv6Addr, Ipv6Addr) {
        (ip("2001:db8:2::240"), ip("2001:db8:2::200"))
    }

    fn ns_repr() -> NdiscRepr {
        NdiscRepr::NeighborSolicit {
            target: ip("2001:db8:2::240"),
            source_lladdr: Some(Mac([0x02, 0, 0, 0, 0, 0xc8])),
        }
    }

    fn na_repr() -> NdiscRepr {
        NdiscRepr::NeighborAdvert {
            flags: NeighborFlags {
                router: false,
                solicited: true,
                override_: true,
            },
            target: ip("2001:db8:2::240"),
            target_lladdr: Some(Mac([0x02, 0, 0, 0, 0, 0xf0])),
        }
    }

    #[test]
    fn test_deconstruct() {
        let ns = Icmpv6Packet::new_checked(&NS_BYTES[..]).unwrap();
        assert_eq!(ns.target_addr(), ip("2001:db8:2::240"));
        assert_eq!(ns.neighbor_options(), &[1, 1, 2, 0, 0, 0, 0, 0xc8]);
        let na = Icmpv6Packet::new_checked(&NA_BYTES[..]).unwrap();
        assert_eq!(
            na.neighbor_flags(),
            NeighborFlags {
                router: false,
                solicited: true,
                override_: true
            }
        );
        assert_eq!(na.target_addr(), ip("2001:db8:2::240"));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 32];
        let mut na = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        na.set_msg_type(TYPE_NEIGHBOR_ADVERT);
        na.set_msg_code(0);
        na.set_neighbor_flags(NeighborFlags {
            router: false,
            solicited: true,
            override_: true,
        });
        na.set_target_addr(ip("2001:db8:2::240"));
        na.neighbor_options_mut()
            .copy_from_slice(&[2, 1, 2, 0, 0, 0, 0, 0xf0]);
        let (src, dst) = na_addrs();
        na.fill_checksum(src, dst);
        assert_eq!(bytes, NA_BYTES);
    }

    #[test]
    fn test_parse() {
        let (src, dst) = ns_addrs();
        let ns = Icmpv6Packet::new_checked(&NS_BYTES[..]).unwrap();
        assert_eq!(NdiscRepr::parse(src, dst, &ns), Ok(ns_repr()));
        let (src, dst) = na_addrs();
        let na = Icmpv6Packet::new_checked(&NA_BYTES[..]).unwrap();
        assert_eq!(NdiscRepr::parse(src, dst, &na), Ok(na_repr()));
    }

    #[test]
    fn test_emit() {
        let (src, dst) = ns_addrs();
        let mut bytes = vec![0xa5; ns_repr().buffer_len()];
        ns_repr().emit(src, dst, &mut Icmpv6Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(&bytes[..], &NS_BYTES[..]);

        let (src, dst) = na_addrs();
        let mut bytes = vec![0xa5; na_repr().buffer_len()];
        na_repr().emit(src, dst, &mut Icmpv6Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(&bytes[..], &NA_BYTES[..]);
    }

    /// Re-checksums `bytes` so that only the property under test makes the parse fail.
    fn parse_fixed(mut bytes: Vec<u8>) -> Result<NdiscRepr> {
        let (src, dst) = ns_addrs();
        if bytes.len() >= 4 {
            Icmpv6Packet::new_unchecked(&mut bytes[..]).fill_checksum(src, dst);
        }
        NdiscRepr::parse(src, dst, &Icmpv6Packet::new_unchecked(&bytes[..]))
    }

    #[test]
    fn every_truncation_is_an_error() {
        // Even with a checksum that matches the truncated bytes. 24 bytes is the NS without its
        // option, which is valid (`solicit_without_options_has_no_lladdr`); every other cut is not.
        for len in (0..NS_BYTES.len()).filter(|len| *len != NEIGHBOR_MSG_LEN) {
            assert_eq!(
                parse_fixed(NS_BYTES[..len].to_vec()),
                Err(Error),
                "len {len}"
            );
        }
    }

    #[test]
    fn solicit_without_options_has_no_lladdr() {
        let repr = parse_fixed(NS_BYTES[..24].to_vec()).unwrap();
        assert_eq!(
            repr,
            NdiscRepr::NeighborSolicit {
                target: ip("2001:db8:2::240"),
                source_lladdr: None
            }
        );
    }

    #[test]
    fn zero_length_option_is_an_error() {
        let mut bytes = NS_BYTES.to_vec();
        bytes[25] = 0;
        assert_eq!(parse_fixed(bytes), Err(Error));
    }

    #[test]
    fn option_past_the_end_is_an_error() {
        let mut bytes = NS_BYTES.to_vec();
        bytes[25] = 2; // announces 16 bytes, 8 present
        assert_eq!(parse_fixed(bytes.clone()), Err(Error));
        bytes.truncate(25); // a lone type byte
        assert_eq!(parse_fixed(bytes), Err(Error));
    }

    #[test]
    fn a_source_lladdr_of_the_wrong_length_is_an_error() {
        // A 16-byte SLLA (length 2): Linux drops the NS ("invalid link-layer address length"),
        // so do we, rather than answering the frame's source MAC (found by comparing with
        // smoltcp and pnet_packet, docs/decisions.md).
        let mut bytes = NS_BYTES.to_vec();
        bytes[25] = 2;
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(parse_fixed(bytes), Err(Error));
    }

    #[test]
    fn unknown_options_are_skipped() {
        // A nonce option (type 14, 8 bytes) before the SLLA, and an unknown one after it.
        let mut bytes = NS_BYTES[..24].to_vec();
        bytes.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
        bytes.extend_from_slice(&NS_BYTES[24..]);
        bytes.extend_from_slice(&[200, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_fixed(bytes), Ok(ns_repr()));
    }

    #[test]
    fn target_lladdr_in_a_solicit_is_not_a_source() {
        let mut bytes = NS_BYTES.to_vec();
        bytes[24] = OPT_TARGET_LLADDR;
        assert!(matches!(
            parse_fixed(bytes),
            Ok(NdiscRepr::NeighborSolicit {
                source_lladdr: None,
                ..
            })
        ));
    }

    #[test]
    fn bad_checksum_code_target_or_type_is_an_error() {
        let (src, dst) = ns_addrs();
        let mut bytes = NS_BYTES;
        bytes[3] ^= 0xff;
        assert_eq!(
            NdiscRepr::parse(src, dst, &Icmpv6Packet::new_unchecked(&bytes[..])),
            Err(Error)
        );

        let mut code = NS_BYTES.to_vec();
        code[1] = 1;
        assert_eq!(parse_fixed(code), Err(Error));

        let mut multicast_target = NS_BYTES.to_vec();
        multicast_target[8] = 0xff;
        assert_eq!(parse_fixed(multicast_target), Err(Error));

        let mut router_solicit = NS_BYTES.to_vec();
        router_solicit[0] = 133;
        assert_eq!(parse_fixed(router_solicit), Err(Error));
    }
}
