//! ARP (RFC 826) packets. Only Ethernet/IPv4 is meaningful to the speaker: `ArpRepr::parse`
//! rejects every other hardware/protocol combination, and it checks the address *lengths* too
//! (pnet's `ArpPacket` trusts them; a 6/4 layout is assumed only after checking hlen 6 / plen 4).

use std::net::Ipv4Addr;

use super::{Error, Mac, Result, be16};

/// The ARP operation code. Unknown values are data: the responder drops them with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(raw: u16) -> ArpOperation {
        match raw {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(operation: ArpOperation) -> u16 {
        match operation {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

/// Hardware type Ethernet.
const HTYPE_ETHERNET: u16 = 1;
/// Protocol type IPv4 (an EtherType).
const PTYPE_IPV4: u16 = 0x0800;

#[allow(non_snake_case)]
mod field {
    use std::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;

    /// Sender hardware address, for the given hardware/protocol address lengths.
    pub const fn SHA(hlen: u8, _plen: u8) -> Range<usize> {
        let start = OPER.end;
        start..start + hlen as usize
    }

    pub const fn SPA(hlen: u8, plen: u8) -> Range<usize> {
        let start = SHA(hlen, plen).end;
        start..start + plen as usize
    }

    pub const fn THA(hlen: u8, plen: u8) -> Range<usize> {
        let start = SPA(hlen, plen).end;
        start..start + hlen as usize
    }

    pub const fn TPA(hlen: u8, plen: u8) -> Range<usize> {
        let start = THA(hlen, plen).end;
        start..start + plen as usize
    }
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const ETHERNET_IPV4_LEN: usize = field::TPA(6, 4).end;

/// A view of an ARP packet of any hardware/protocol type.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking its length (for emission).
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wraps an untrusted buffer; afterwards no getter panics.
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>> {
        let packet = ArpPacket::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The fixed part is present and so are the four addresses the length fields announce.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::OPER.end {
            return Err(Error);
        }
        if len < field::TPA(self.hardware_len(), self.protocol_len()).end {
            return Err(Error);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE.start)
    }

    pub fn protocol_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PTYPE.start)
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(be16(self.buffer.as_ref(), field::OPER.start))
    }

    pub fn sender_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SHA(self.hardware_len(), self.protocol_len())]
    }

    pub fn sender_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SPA(self.hardware_len(), self.protocol_len())]
    }

    pub fn target_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::THA(self.hardware_len(), self.protocol_len())]
    }

    pub fn target_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::TPA(self.hardware_len(), self.protocol_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    pub fn set_hardware_type(&mut self, value: u16) {
        self.buffer.as_mut()[field::HTYPE].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_protocol_type(&mut self, value: u16) {
        self.buffer.as_mut()[field::PTYPE].copy_from_slice(&value.to_be_bytes());
    }

    /// Changes the layout: the address setters after it use the new length.
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Changes the layout: the address setters after it use the new length.
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    pub fn set_operation(&mut self, operation: ArpOperation) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&u16::from(operation).to_be_bytes());
    }

    pub fn set_sender_hardware_addr(&mut self, value: &[u8]) {
        let range = field::SHA(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }

    pub fn set_sender_protocol_addr(&mut self, value: &[u8]) {
        let range = field::SPA(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }

    pub fn set_target_hardware_addr(&mut self, value: &[u8]) {
        let range = field::THA(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }

    pub fn set_target_protocol_addr(&mut self, value: &[u8]) {
        let range = field::TPA(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }
}

/// The meaning of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Accepts only hardware type Ethernet (1), protocol IPv4 (0x0800), hlen 6, plen 4.
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr> {
        packet.check_len()?;
        if packet.hardware_type() != HTYPE_ETHERNET
            || packet.protocol_type() != PTYPE_IPV4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(Error);
        }
        Ok(ArpRepr {
            operation: packet.operation(),
            sender_mac: Mac::from_bytes(packet.sender_hardware_addr()).ok_or(Error)?,
            sender_ip: ipv4(packet.sender_protocol_addr())?,
            target_mac: Mac::from_bytes(packet.target_hardware_addr()).ok_or(Error)?,
            target_ip: ipv4(packet.target_protocol_addr())?,
        })
    }

    pub const fn buffer_len(&self) -> usize {
        ETHERNET_IPV4_LEN
    }

    /// Writes every field; `packet` must hold at least `buffer_len()` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(PTYPE_IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_sender_hardware_addr(&self.sender_mac.0);
        packet.set_sender_protocol_addr(&self.sender_ip.octets());
        packet.set_target_hardware_addr(&self.target_mac.0);
        packet.set_target_protocol_addr(&self.target_ip.octets());
    }
}

fn ipv4(bytes: &[u8]) -> Result<Ipv4Addr> {
    let octets: [u8; 4] = bytes.try_into().map_err(|_| Error)?;
    Ok(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod test {
    use super::*;

    // "who-has 192.0.2.240 tell 192.0.2.200" from 02:00:00:00:00:c8 (arping's request).
    static PACKET_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0xc8, 0xc0,
        0x00, 0x02, 0xc8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0xf0,
    ];
    const SENDER_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xc8]);

    fn repr() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            sender_mac: SENDER_MAC,
            sender_ip: Ipv4Addr::new(192, 0, 2, 200),
            target_mac: Mac::ZERO,
            target_ip: Ipv4Addr::new(192, 0, 2, 240),
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = ArpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), 0x0800);
        assert_eq!(packet.hardware_len(), 6);
        assert_eq!(packet.protocol_len(), 4);
        assert_eq!(packet.operation(), ArpOperation::Request);
        assert_eq!(packet.sender_hardware_addr(), &SENDER_MAC.0[..]);
        assert_eq!(packet.sender_protocol_addr(), &[192, 0, 2, 200]);
        assert_eq!(packet.target_hardware_addr(), &[0u8; 6]);
        assert_eq!(packet.target_protocol_addr(), &[192, 0, 2, 240]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 28];
        let mut packet = ArpPacket::new_unchecked(&mut bytes);
        packet.set_hardware_type(1);
        packet.set_protocol_type(0x0800);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(ArpOperation::Request);
        packet.set_sender_hardware_addr(&SENDER_MAC.0);
        packet.set_sender_protocol_addr(&[192, 0, 2, 200]);
        packet.set_target_hardware_addr(&[0; 6]);
        packet.set_target_protocol_addr(&[192, 0, 2, 240]);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let packet = ArpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(ArpRepr::parse(&packet), Ok(repr()));
    }

    #[test]
    fn test_emit() {
        let mut bytes = vec![0xa5; repr().buffer_len()];
        repr().emit(&mut ArpPacket::new_unchecked(&mut bytes));
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..PACKET_BYTES.len() {
            let truncated = &PACKET_BYTES[..len];
            assert_eq!(
                ArpPacket::new_checked(truncated).err(),
                Some(Error),
                "len {len}"
            );
            assert_eq!(
                ArpRepr::parse(&ArpPacket::new_unchecked(truncated)),
                Err(Error)
            );
        }
    }

    #[test]
    fn trailing_padding_is_ignored() {
        // Ethernet pads ARP to 46 bytes of payload.
        let mut padded = PACKET_BYTES.to_vec();
        padded.resize(46, 0);
        let packet = ArpPacket::new_checked(&padded[..]).unwrap();
        assert_eq!(ArpRepr::parse(&packet), Ok(repr()));
    }

    #[test]
    fn other_hardware_protocol_or_lengths_are_rejected() {
        // (offset, value) patches that make the packet something other than Ethernet/IPv4.
        for (at, value) in [(1, 6u8), (2, 0x86), (3, 0xdd), (4, 8), (5, 16)] {
            let mut bytes = PACKET_BYTES.to_vec();
            bytes[at] = value;
            bytes.resize(64, 0); // long enough for any announced layout
            let packet = ArpPacket::new_checked(&bytes[..]).unwrap();
            assert_eq!(ArpRepr::parse(&packet), Err(Error), "patch {at}={value}");
        }
    }

    #[test]
    fn announced_lengths_bound_the_check() {
        // hlen 255/plen 255 announce 8 + 2 * 510 bytes: a short buffer must fail the check
        // instead of letting a getter slice out of range.
        let mut bytes = PACKET_BYTES.to_vec();
        bytes[4] = 255;
        bytes[5] = 255;
        assert_eq!(ArpPacket::new_checked(&bytes[..]).err(), Some(Error));
    }

    #[test]
    fn unknown_operation_is_data() {
        let mut bytes = PACKET_BYTES;
        bytes[7] = 9;
        let parsed = ArpRepr::parse(&ArpPacket::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(parsed.operation, ArpOperation::Unknown(9));
    }
}
