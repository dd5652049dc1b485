//! The fixed IPv6 header (RFC 8200 §3). Extension headers are not followed: Neighbor Discovery
//! messages are sent without them, and a frame that has some is not one the responder answers.

use std::net::Ipv6Addr;

use super::{Error, Result, be16, ipv6_at};

/// Next-header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;

mod field {
    use std::ops::Range;

    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>> {
        let packet = Ipv6Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The header is present and so is the payload its length field announces (trailing
    /// Ethernet padding is allowed and ignored by [`Ipv6Packet::payload`]).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            Err(Error)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        ipv6_at(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        ipv6_at(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// Exactly `payload_len` bytes after the header.
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, traffic class 0 and flow label 0.
    pub fn set_version_6(&mut self) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
    }

    /// Voids the length check of a checked view if it grows.
    pub fn set_payload_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = value;
    }

    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Exactly `payload_len` bytes after the header (set the length first).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The meaning of a fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: u16,
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// Accepts only version 6.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Ipv6Repr> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error);
        }
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.payload_len(),
            hop_limit: packet.hop_limit(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header; the buffer must hold `buffer_len() + payload_len` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        packet.set_version_6();
        packet.set_payload_len(self.payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // ICMPv6 from 2001:db8:2::200 to ff02::1:ff00:240, hop limit 255, 4 payload bytes.
    static PACKET_BYTES: [u8; 44] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x04, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x02, 0x40, 0xde, 0xad, 0xbe, 0xef,
    ];

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: "2001:db8:2::200".parse().unwrap(),
            dst_addr: "ff02::1:ff00:240".parse().unwrap(),
            next_header: NEXT_HEADER_ICMPV6,
            payload_len: 4,
            hop_limit: 255,
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = Ipv6Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.payload_len(), 4);
        assert_eq!(packet.next_header(), 58);
        assert_eq!(packet.hop_limit(), 255);
        assert_eq!(packet.src_addr(), repr().src_addr);
        assert_eq!(packet.dst_addr(), repr().dst_addr);
        assert_eq!(packet.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 44];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes);
        packet.set_version_6();
        packet.set_payload_len(4);
        packet.set_next_header(58);
        packet.set_hop_limit(255);
        packet.set_src_addr(repr().src_addr);
        packet.set_dst_addr(repr().dst_addr);
        packet
            .payload_mut()
            .copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let packet = Ipv6Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&packet), Ok(repr()));
    }

    #[test]
    fn test_emit() {
        let mut bytes = vec![0xa5; 44];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes);
        repr().emit(&mut packet);
        packet
            .payload_mut()
            .copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..PACKET_BYTES.len() {
            assert_eq!(
                Ipv6Packet::new_checked(&PACKET_BYTES[..len]).err(),
                Some(Error)
            );
        }
    }

    #[test]
    fn padding_is_not_payload_and_version_is_checked() {
        let mut padded = PACKET_BYTES.to_vec();
        padded.extend_from_slice(&[0; 8]);
        let packet = Ipv6Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload(), &[0xde, 0xad, 0xbe, 0xef]);

        let mut v4 = PACKET_BYTES;
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_checked(&v4[..]).unwrap()),
            Err(Error)
        );
    }
}
