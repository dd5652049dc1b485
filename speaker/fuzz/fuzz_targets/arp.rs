//! Arbitrary bytes as an ARP packet (alone and inside an Ethernet frame) and as a whole frame:
//! no panic anywhere, parse → emit → parse is stable, and every reply is a well-formed ARP reply
//! from our MAC for an IP we own.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use ferrolb_speaker::layer2::{AnnounceTable, IfaceInfo, Interfaces, Responder};
use ferrolb_speaker::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, Mac};
use libfuzzer_sys::fuzz_target;

const OUR_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xf0]);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 240);

fn responder() -> Responder {
    let mut table = AnnounceTable::new();
    table.announce(IpAddr::V4(VIP), Interfaces::All);
    Responder::new(table)
}

fn check_reply(reply: &[u8]) {
    let frame = EthernetFrame::new_checked(reply).expect("reply frame");
    assert_eq!(frame.src_addr(), OUR_MAC);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).expect("reply arp"))
        .expect("reply repr");
    assert_eq!(arp.operation, ArpOperation::Reply);
    assert_eq!((arp.sender_mac, arp.sender_ip), (OUR_MAC, VIP));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = ArpPacket::new_checked(data) {
        if let Ok(repr) = ArpRepr::parse(&packet) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
            let again = ArpRepr::parse(&ArpPacket::new_checked(&out[..]).expect("emitted"));
            assert_eq!(again, Ok(repr));
        }
    }

    let iface = IfaceInfo {
        name: "eth0".into(),
        index: 2,
        mac: OUR_MAC,
    };
    let responder = responder();
    // As the payload of a broadcast ARP frame from a unicast sender: reaches the ARP policy.
    let mut frame = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0xc8, 0x08, 0x06,
    ];
    frame.extend_from_slice(data);
    if let Ok(reply) = responder.answer(&iface, &frame) {
        check_reply(&reply);
    }
    // As a whole frame.
    let _ = responder.answer(&iface, data);
});
