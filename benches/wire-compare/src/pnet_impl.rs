//! pnet_packet 0.35, used the way its API invites. Every check pnet does not make itself, but
//! the responder needs, is written out here and marked `HAND CHECK`.

use std::net::{Ipv4Addr, Ipv6Addr};

use pnet_packet::arp::{ArpHardwareTypes, ArpOperation, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::{EtherType, EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags,
    NeighborSolicitPacket,
};
use pnet_packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_base::MacAddr;
use pnet_packet::{MutablePacket, Packet};

use crate::common::{Arp, Eth, Ip6, Mac, Ndisc, Wire};

/// `HAND = false` drops every `HAND CHECK` (pnet's own checks only), to count what they catch.
pub struct PnetImpl<const HAND: bool>;
pub type Pnet = PnetImpl<true>;
pub type PnetBare = PnetImpl<false>;

fn octets(mac: MacAddr) -> Mac {
    mac.octets()
}

fn mac(m: Mac) -> MacAddr {
    MacAddr::new(m[0], m[1], m[2], m[3], m[4], m[5])
}

impl<const HAND: bool> Wire for PnetImpl<HAND> {
    const NAME: &'static str = if HAND {
        "pnet_packet"
    } else {
        "pnet_packet without hand checks"
    };

    fn ethernet(frame: &[u8]) -> Option<Eth<'_>> {
        let packet = EthernetPacket::new(frame)?;
        Some(Eth {
            dst: octets(packet.get_destination()),
            src: octets(packet.get_source()),
            ethertype: packet.get_ethertype().0,
            // `payload()` borrows the view; the view borrows `frame`, so slice `frame` itself.
            payload: &frame[EthernetPacket::minimum_packet_size()..],
        })
    }

    fn arp(payload: &[u8]) -> Option<Arp> {
        // `new` checks the 28-byte Ethernet/IPv4 layout only; pnet ignores hlen/plen.
        let packet = ArpPacket::new(payload)?;
        // HAND CHECK: hardware/protocol type and both address lengths.
        if HAND
            && (packet.get_hardware_type() != ArpHardwareTypes::Ethernet
            || packet.get_protocol_type() != EtherTypes::Ipv4
            || packet.get_hw_addr_len() != 6
                || packet.get_proto_addr_len() != 4)
        {
            return None;
        }
        Some(Arp {
            op: packet.get_operation().0,
            sha: octets(packet.get_sender_hw_addr()),
            spa: packet.get_sender_proto_addr(),
            tpa: packet.get_target_proto_addr(),
        })
    }

    fn ipv6(payload: &[u8]) -> Option<Ip6<'_>> {
        let packet = Ipv6Packet::new(payload)?;
        // HAND CHECK: version (pnet reads any first nibble).
        if HAND && packet.get_version() != 6 {
            return None;
        }
        // HAND CHECK: pnet's `payload()` silently clamps a lying payload length to the buffer.
        let end = 40 + usize::from(packet.get_payload_length());
        let body = if HAND {
            payload.get(40..end)?
        } else {
            &payload[40..end.min(payload.len())]
        };
        Some(Ip6 {
            src: packet.get_source(),
            dst: packet.get_destination(),
            next_header: packet.get_next_header().0,
            hop_limit: packet.get_hop_limit(),
            payload: body,
        })
    }

    fn icmpv6_type(msg: &[u8]) -> Option<u8> {
        Some(Icmpv6Packet::new(msg)?.get_icmpv6_type().0)
    }

    fn ndisc(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> Result<Ndisc, ()> {
        let icmp = Icmpv6Packet::new(msg).ok_or(())?;
        // pnet has no verify: recompute and compare (see the 0xffff note in the README).
        if icmpv6::checksum(&icmp, &src, &dst) != icmp.get_checksum() {
            return Err(());
        }
        // HAND CHECK: code 0.
        if HAND && icmp.get_icmpv6_code() != Icmpv6Code(0) {
            return Err(());
        }
        let ty = icmp.get_icmpv6_type();
        if ty != Icmpv6Types::NeighborSolicit && ty != Icmpv6Types::NeighborAdvert {
            return Err(());
        }
        // Both messages have the target at 8..24: NeighborSolicitPacket reads an NA too.
        let ns = NeighborSolicitPacket::new(msg).ok_or(())?;
        // HAND CHECK: non-multicast target.
        let target = ns.get_target_addr();
        if HAND && target.is_multicast() {
            return Err(());
        }
        // HAND CHECK: the option walk. pnet's iterator accepts length 0 (as 2 bytes), stops
        // silently at a lone trailing byte, clamps an option running past the end, and computes
        // `length * 8 - 2` in u8 (wraps for length >= 33 in release, panics with overflow checks).
        let wanted = if ty == Icmpv6Types::NeighborSolicit {
            NdpOptionTypes::SourceLLAddr
        } else {
            NdpOptionTypes::TargetLLAddr
        };
        let mut lladdr = None;
        let mut walked = 0;
        for option in ns.get_options_iter() {
            let size = usize::from(option.get_length()) * 8;
            if !HAND {
                // What pnet's API invites: take the first option of the wanted type.
                if option.get_option_type() == wanted && lladdr.is_none() {
                    lladdr = option.payload().get(..6).and_then(|m| m.try_into().ok());
                }
                continue;
            }
            if size == 0 || option.payload().len() + 2 != size {
                return Err(());
            }
            if option.get_option_type() == wanted && size == 8 && lladdr.is_none() {
                lladdr = option.payload()[..6].try_into().ok();
            }
            walked += size;
        }
        if HAND && walked != msg.len() - 24 {
            return Err(());
        }
        if ty == Icmpv6Types::NeighborSolicit {
            Ok(Ndisc::Ns {
                target,
                slla: lladdr,
            })
        } else {
            Ok(Ndisc::Other)
        }
    }

    fn arp_frame(
        dst_mac: Mac,
        op: u16,
        sha: Mac,
        spa: Ipv4Addr,
        tha: Mac,
        tpa: Ipv4Addr,
    ) -> Vec<u8> {
        let mut bytes = vec![0u8; 60];
        let mut eth = MutableEthernetPacket::new(&mut bytes).expect("60 bytes");
        eth.set_destination(mac(dst_mac));
        eth.set_source(mac(sha));
        eth.set_ethertype(EtherType(0x0806));
        let mut arp = MutableArpPacket::new(eth.payload_mut()).expect("46 bytes");
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(ArpOperation(op));
        arp.set_sender_hw_addr(mac(sha));
        arp.set_sender_proto_addr(spa);
        arp.set_target_hw_addr(mac(tha));
        arp.set_target_proto_addr(tpa);
        bytes
    }

    fn na_frame(
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: Ipv6Addr,
        dst_ip: Ipv6Addr,
        solicited: bool,
        override_: bool,
        target: Ipv6Addr,
    ) -> Vec<u8> {
        const NA_LEN: usize = 32;
        let mut bytes = vec![0u8; 14 + 40 + NA_LEN];
        let mut eth = MutableEthernetPacket::new(&mut bytes).expect("frame");
        eth.set_destination(mac(dst_mac));
        eth.set_source(mac(src_mac));
        eth.set_ethertype(EtherTypes::Ipv6);
        let mut ip = MutableIpv6Packet::new(eth.payload_mut()).expect("ipv6");
        ip.set_version(6);
        ip.set_traffic_class(0);
        ip.set_flow_label(0);
        ip.set_payload_length(NA_LEN as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(255);
        ip.set_source(src_ip);
        ip.set_destination(dst_ip);
        let mut na = MutableNeighborAdvertPacket::new(ip.payload_mut()).expect("na");
        na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        na.set_icmpv6_code(Icmpv6Code(0));
        let mut flags = 0;
        if solicited {
            flags |= NeighborAdvertFlags::Solicited;
        }
        if override_ {
            flags |= NeighborAdvertFlags::Override;
        }
        na.set_flags(flags);
        na.set_reserved(0);
        na.set_target_addr(target);
        na.set_options(&[NdpOption {
            option_type: NdpOptionTypes::TargetLLAddr,
            length: 1,
            data: src_mac.to_vec(),
        }]);
        let checksum = icmpv6::checksum(
            &Icmpv6Packet::new(na.packet()).expect("icmpv6"),
            &src_ip,
            &dst_ip,
        );
        na.set_checksum(checksum);
        bytes
    }
}
