//! Input: one control byte (bit 0 set: IPv6 source `::`, the DAD case) then an ICMPv6 message.
//! The message is parsed (checksum fixed up so the option parser is reached), wrapped in a valid
//! Ethernet + IPv6 header and answered; the whole input is also answered as a raw frame: no panic anywhere, parse →
//! emit → parse is stable, and every reply is a valid solicited NA with hop limit 255.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use ferrolb_speaker::layer2::{AnnounceTable, IfaceInfo, Interfaces, Responder};
use ferrolb_speaker::wire::icmpv6::Icmpv6Packet;
use ferrolb_speaker::wire::{EthernetFrame, Ipv6Packet, Ipv6Repr, Mac, NdiscRepr, solicited_node};
use libfuzzer_sys::fuzz_target;

const OUR_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xf0]);

fn vip() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x240)
}

fn client() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x200)
}

fn check_reply(reply: &[u8]) {
    let frame = EthernetFrame::new_checked(reply).expect("reply frame");
    assert_eq!(frame.src_addr(), OUR_MAC);
    let packet = Ipv6Packet::new_checked(frame.payload()).expect("reply ipv6");
    let ip = Ipv6Repr::parse(&packet).expect("reply ipv6 repr");
    assert_eq!(ip.hop_limit, 255);
    let icmp = Icmpv6Packet::new_checked(packet.payload()).expect("reply icmpv6");
    let na = NdiscRepr::parse(ip.src_addr, ip.dst_addr, &icmp).expect("reply ndisc");
    assert!(matches!(
        na,
        NdiscRepr::NeighborAdvert { target, target_lladdr: Some(OUR_MAC), .. } if target == vip()
    ));
}

fuzz_target!(|data: &[u8]| {
    let Some((control, message)) = data.split_first() else {
        return;
    };
    let src = if control & 1 == 1 {
        Ipv6Addr::UNSPECIFIED
    } else {
        client()
    };
    let dst = solicited_node(vip());
    let mut icmp = message.to_vec();
    if icmp.len() >= 4 {
        Icmpv6Packet::new_unchecked(&mut icmp[..]).fill_checksum(src, dst);
        let packet = Icmpv6Packet::new_checked(&icmp[..]).expect("header");
        if let Ok(repr) = NdiscRepr::parse(src, dst, &packet) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(src, dst, &mut Icmpv6Packet::new_unchecked(&mut out[..]));
            let again = NdiscRepr::parse(
                src,
                dst,
                &Icmpv6Packet::new_checked(&out[..]).expect("emitted"),
            );
            assert_eq!(again, Ok(repr));
        }
    }

    let mut table = AnnounceTable::new();
    table.announce(IpAddr::V6(vip()), Interfaces::All);
    let responder = Responder::new(table);
    let iface = IfaceInfo {
        name: "eth0".into(),
        index: 2,
        mac: OUR_MAC,
    };

    // Wrapped in a valid frame: Ethernet to the solicited-node MAC, IPv6 with hop limit 255.
    if let Ok(payload_len) = u16::try_from(icmp.len()) {
        let mut frame = Vec::with_capacity(54 + icmp.len());
        frame.extend_from_slice(&Mac::ipv6_multicast(dst).0);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xc8, 0x86, 0xdd]);
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&payload_len.to_be_bytes());
        frame.extend_from_slice(&[58, 255]);
        frame.extend_from_slice(&src.octets());
        frame.extend_from_slice(&dst.octets());
        frame.extend_from_slice(&icmp);
        if let Ok(reply) = responder.answer(&iface, &frame) {
            check_reply(&reply);
        }
    }
    // As a whole frame.
    let _ = responder.answer(&iface, data);
});
