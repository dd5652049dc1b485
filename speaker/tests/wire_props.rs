//! Property tests over untrusted input: no parser and no responder path panics on any bytes,
//! and what parses re-emits to the same meaning.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_speaker::layer2::{AnnounceTable, IfaceInfo, Interfaces, Responder};
use ferrolb_speaker::wire::build::{arp_request, neighbor_solicit};
use ferrolb_speaker::wire::icmpv6::Icmpv6Packet;
use ferrolb_speaker::wire::{
    ArpPacket, ArpRepr, EthernetFrame, EthernetRepr, Ipv6Packet, Ipv6Repr, Mac, NdiscRepr,
    solicited_node,
};
use proptest::prelude::*;

const OUR_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xf0]);
const CLIENT_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xc8]);

fn vip6() -> Ipv6Addr {
    "2001:db8:2::240".parse().unwrap()
}

fn iface() -> IfaceInfo {
    IfaceInfo {
        name: "eth0".into(),
        index: 2,
        mac: OUR_MAC,
    }
}

fn responder() -> Responder {
    let mut table = AnnounceTable::new();
    table.announce(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 240)), Interfaces::All);
    table.announce(IpAddr::V6(vip6()), Interfaces::All);
    table.announce(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 241)),
        Interfaces::Only(BTreeSet::from(["eth1".to_owned()])),
    );
    Responder::new(table)
}

fn valid_frames() -> Vec<Vec<u8>> {
    let group = solicited_node(vip6());
    vec![
        arp_request(
            CLIENT_MAC,
            Ipv4Addr::new(192, 0, 2, 200),
            Ipv4Addr::new(192, 0, 2, 240),
        ),
        neighbor_solicit(
            CLIENT_MAC,
            Mac::ipv6_multicast(group),
            "2001:db8:2::200".parse().unwrap(),
            group,
            vip6(),
            Some(CLIENT_MAC),
        ),
        neighbor_solicit(
            CLIENT_MAC,
            OUR_MAC,
            "2001:db8:2::200".parse().unwrap(),
            vip6(),
            vip6(),
            None,
        ),
    ]
}

/// Runs every parser on `bytes` as a frame, as an ARP packet, as IPv6 and as ICMPv6; checks
/// that parse → emit → parse is stable where parsing succeeds.
fn exercise(bytes: &[u8]) {
    if let Ok(frame) = EthernetFrame::new_checked(bytes) {
        let _ = EthernetRepr::parse(&frame);
        let _ = frame.payload();
    }
    if let Ok(packet) = ArpPacket::new_checked(bytes) {
        let _ = (packet.sender_hardware_addr(), packet.target_protocol_addr());
        if let Ok(repr) = ArpRepr::parse(&packet) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
            assert_eq!(
                ArpRepr::parse(&ArpPacket::new_checked(&out[..]).unwrap()),
                Ok(repr)
            );
        }
    }
    if let Ok(packet) = Ipv6Packet::new_checked(bytes) {
        let _ = Ipv6Repr::parse(&packet);
        let _ = packet.payload();
    }
    // ICMPv6 with a fixed-up checksum, so that random input reaches the option parser.
    if bytes.len() >= 4 {
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("fe80::1".parse().unwrap(), "ff02::1".parse().unwrap());
        let mut fixed = bytes.to_vec();
        Icmpv6Packet::new_unchecked(&mut fixed[..]).fill_checksum(src, dst);
        let packet = Icmpv6Packet::new_checked(&fixed[..]).unwrap();
        assert!(packet.verify_checksum(src, dst));
        if let Ok(repr) = NdiscRepr::parse(src, dst, &packet) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(src, dst, &mut Icmpv6Packet::new_unchecked(&mut out[..]));
            let again = NdiscRepr::parse(src, dst, &Icmpv6Packet::new_checked(&out[..]).unwrap());
            assert_eq!(again, Ok(repr));
        }
    }
    if let Ok(reply) = responder().answer(&iface(), bytes) {
        // Every reply is a well-formed frame from our MAC.
        let frame = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!(frame.src_addr(), OUR_MAC);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_requests_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut frame = valid_frames().swap_remove(which);
        for (at, value) in edits {
            let at = at.index(frame.len());
            frame[at] = value;
        }
        let cut = cut.index(frame.len() + 1);
        exercise(&frame[..cut]);
    }
}

#[test]
fn the_valid_frames_are_answered() {
    for frame in valid_frames() {
        assert!(responder().answer(&iface(), &frame).is_ok());
    }
}
