//! Ethernet II frames (no 802.1Q tag: the speaker's sockets are bound to untagged interfaces,
//! a VLAN is a separate interface with its own socket).

use super::{Error, Mac, Result, be16};

/// The EtherType field. Unknown values are data, not errors: the caller decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(raw: u16) -> EtherType {
        match raw {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(ethertype: EtherType) -> u16 {
        match ethertype {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

mod field {
    use std::ops::{Range, RangeFrom};

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking its length (for emission).
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps an untrusted buffer; afterwards no getter panics.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>> {
        let frame = EthernetFrame::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// The buffer holds at least a full header.
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

    pub fn dst_addr(&self) -> Mac {
        mac_at(self.buffer.as_ref(), field::DESTINATION.start)
    }

    pub fn src_addr(&self) -> Mac {
        mac_at(self.buffer.as_ref(), field::SOURCE.start)
    }

    pub fn ethertype(&self) -> EtherType {
        EtherType::from(be16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    pub fn set_src_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(ethertype).to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

fn mac_at(bytes: &[u8], at: usize) -> Mac {
    let mut octets = [0u8; 6];
    octets.copy_from_slice(&bytes[at..at + 6]);
    Mac(octets)
}

/// The meaning of an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src_addr: Mac,
    pub dst_addr: Mac,
    pub ethertype: EtherType,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_src_addr(self.src_addr);
        frame.set_dst_addr(self.dst_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // An ARP frame header: to broadcast, from 02:00:00:00:00:c8, EtherType ARP, 4 payload bytes.
    static FRAME_BYTES: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0xc8, 0x08, 0x06, 0xaa,
        0xbb, 0xcc, 0xdd,
    ];
    static PAYLOAD_BYTES: [u8; 4] = [0xaa, 0xbb, 0xcc, 0xdd];
    const SRC: Mac = Mac([0x02, 0, 0, 0, 0, 0xc8]);

    fn repr() -> EthernetRepr {
        EthernetRepr {
            src_addr: SRC,
            dst_addr: Mac::BROADCAST,
            ethertype: EtherType::Arp,
        }
    }

    #[test]
    fn test_deconstruct() {
        let frame = EthernetFrame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(frame.dst_addr(), Mac::BROADCAST);
        assert_eq!(frame.src_addr(), SRC);
        assert_eq!(frame.ethertype(), EtherType::Arp);
        assert_eq!(frame.payload(), &PAYLOAD_BYTES[..]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 18];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes);
        frame.set_dst_addr(Mac::BROADCAST);
        frame.set_src_addr(SRC);
        frame.set_ethertype(EtherType::Arp);
        frame.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        assert_eq!(&bytes[..], &FRAME_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let frame = EthernetFrame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&frame), Ok(repr()));
    }

    #[test]
    fn test_emit() {
        let mut bytes = vec![0xa5; 18];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes);
        repr().emit(&mut frame);
        frame.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        assert_eq!(&bytes[..], &FRAME_BYTES[..]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&FRAME_BYTES[..len]).err(),
                Some(Error)
            );
        }
        // A header alone is a valid (empty-payload) frame.
        assert!(EthernetFrame::new_checked(&FRAME_BYTES[..HEADER_LEN]).is_ok());
    }

    #[test]
    fn unknown_ethertype_is_data() {
        assert_eq!(EtherType::from(0x88cc), EtherType::Unknown(0x88cc));
        assert_eq!(u16::from(EtherType::Unknown(0x88cc)), 0x88cc);
        for known in [EtherType::Ipv4, EtherType::Arp, EtherType::Ipv6] {
            assert_eq!(EtherType::from(u16::from(known)), known);
        }
    }
}
