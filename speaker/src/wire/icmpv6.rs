//! ICMPv6 (RFC 4443): the common header and the checksum over the IPv6 pseudo header.
//! The Neighbor Discovery accessors for the same view are in `ndisc.rs`.

use std::net::Ipv6Addr;

use super::ipv6::NEXT_HEADER_ICMPV6;
use super::{Error, Result, be16};

/// ICMPv6 message type of a Neighbor Solicitation (RFC 4861 §4.3).
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 message type of a Neighbor Advertisement (RFC 4861 §4.4).
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;

/// Offsets; `pub(super)` so that `ndisc.rs` can add its message fields to the same view.
pub(super) mod field {
    use std::ops::{Range, RangeFrom};

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;

    /// NA flags (R, S, O in the high bits); reserved in an NS.
    pub const NEIGH_FLAGS: usize = 4;
    /// Target address of an NS or NA (RFC 4861 §4.3, §4.4).
    pub const TARGET_ADDR: Range<usize> = 8..24;
    /// Options of an NS or NA.
    pub const NEIGH_OPTIONS: RangeFrom<usize> = 24..;
}

/// Length of the common ICMPv6 header (type, code, checksum).
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A view of an ICMPv6 message (the IPv6 payload, exactly: no trailing padding).
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    pub(super) buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Icmpv6Packet<T> {
        Icmpv6Packet { buffer }
    }

    /// Checks the common header only; message parsers check their own fields.
    pub fn new_checked(buffer: T) -> Result<Icmpv6Packet<T>> {
        let packet = Icmpv6Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The checksum over the pseudo header (`src`, `dst`, length, next header 58) and the
    /// whole message is correct.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let bytes = self.buffer.as_ref();
        let Ok(len) = u32::try_from(bytes.len()) else {
            return false;
        };
        fold(pseudo_header_sum(src, dst, len) + sum_words(bytes)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes and writes the checksum; call it after every other field is written.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let bytes = self.buffer.as_ref();
        // An ICMPv6 message longer than 4 GiB cannot exist; saturate instead of panicking.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let sum = fold(pseudo_header_sum(src, dst, len) + sum_words(bytes));
        self.set_checksum(!sum);
    }
}

/// One's-complement sum of the IPv6 pseudo header (RFC 8200 §8.1), not yet folded.
fn pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, upper_len: u32) -> u64 {
    let mut pseudo = [0u8; 40];
    pseudo[0..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&upper_len.to_be_bytes());
    pseudo[39] = NEXT_HEADER_ICMPV6;
    sum_words(&pseudo)
}

/// Sum of big-endian 16-bit words, an odd last byte padded with zero. A `u64` cannot overflow
/// for any buffer that fits in memory.
fn sum_words(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    let mut sum: u64 = chunks
        .by_ref()
        .map(|pair| u64::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds carries into 16 bits (one's-complement addition).
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits.
    sum as u16
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;

    // A Neighbor Solicitation from 2001:db8:2::200 to ff02::1:ff00:240 for 2001:db8:2::240 with a
    // source link-layer option 02:00:00:00:00:c8. The checksum 0x14e1 was computed independently
    // (Python, RFC 8200 §8.1 pseudo header).
    pub(crate) static NS_BYTES: [u8; 32] = [
        0x87, 0x00, 0x14, 0xe1, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x40, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x00, 0xc8,
    ];

    fn src() -> Ipv6Addr {
        "2001:db8:2::200".parse().unwrap()
    }

    fn dst() -> Ipv6Addr {
        "ff02::1:ff00:240".parse().unwrap()
    }

    #[test]
    fn test_deconstruct() {
        let packet = Icmpv6Packet::new_checked(&NS_BYTES[..]).unwrap();
        assert_eq!(packet.msg_type(), TYPE_NEIGHBOR_SOLICIT);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.checksum(), 0x14e1);
        assert!(packet.verify_checksum(src(), dst()));
    }

    #[test]
    fn test_construct_fills_the_same_checksum() {
        let mut bytes = NS_BYTES;
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_checksum(0xdead);
        packet.set_msg_type(TYPE_NEIGHBOR_SOLICIT);
        packet.set_msg_code(0);
        packet.fill_checksum(src(), dst());
        assert_eq!(bytes, NS_BYTES);
    }

    #[test]
    fn checksum_covers_the_pseudo_header_and_every_byte() {
        let packet = Icmpv6Packet::new_checked(&NS_BYTES[..]).unwrap();
        // (Swapping src and dst cannot be detected: one's-complement addition commutes.)
        assert!(!packet.verify_checksum(src(), "ff02::1".parse().unwrap()));
        assert!(!packet.verify_checksum("2001:db8:2::201".parse().unwrap(), dst()));
        for at in 0..NS_BYTES.len() {
            let mut bytes = NS_BYTES;
            bytes[at] ^= 0x01;
            let flipped = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
            assert!(
                !flipped.verify_checksum(src(), dst()),
                "byte {at} not covered"
            );
        }
        // The length is in the pseudo header: a cut message fails even if its words sum the same.
        let cut = Icmpv6Packet::new_checked(&NS_BYTES[..24]).unwrap();
        assert!(!cut.verify_checksum(src(), dst()));
    }

    #[test]
    fn odd_length_is_padded() {
        let mut bytes = [0x80, 0x00, 0x00, 0x00, 0x12];
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum(src(), dst());
        assert!(
            Icmpv6Packet::new_checked(&bytes[..])
                .unwrap()
                .verify_checksum(src(), dst())
        );
    }

    #[test]
    fn every_truncation_of_the_header_is_an_error() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Icmpv6Packet::new_checked(&NS_BYTES[..len]).err(),
                Some(Error)
            );
        }
    }
}
