//! smoltcp 0.14's `wire` module (no iface, no sockets), used the way its API invites: the
//! `new_checked` views and the `Repr::parse`/`Repr::emit` representations. Checks smoltcp leaves
//! to its `iface` layer are written out here and marked `HAND CHECK`.

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::phy::{ChecksumCapabilities, Medium};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr,
    NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

use crate::common::{Arp, Eth, Ip6, Mac, Ndisc, Wire};

pub struct Smoltcp;

impl Wire for Smoltcp {
    const NAME: &'static str = "smoltcp";

    fn ethernet(frame: &[u8]) -> Option<Eth<'_>> {
        let frame = EthernetFrame::new_checked(frame).ok()?;
        Some(Eth {
            dst: frame.dst_addr().0,
            src: frame.src_addr().0,
            ethertype: frame.ethertype().into(),
            payload: frame.payload(),
        })
    }

    fn arp(payload: &[u8]) -> Option<Arp> {
        match ArpRepr::parse(&ArpPacket::new_checked(payload).ok()?).ok()? {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            } => Some(Arp {
                op: operation.into(),
                sha: source_hardware_addr.0,
                spa: source_protocol_addr,
                tpa: target_protocol_addr,
            }),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    fn ipv6(payload: &[u8]) -> Option<Ip6<'_>> {
        let packet = Ipv6Packet::new_checked(payload).ok()?;
        let repr = Ipv6Repr::parse(&packet).ok()?;
        Some(Ip6 {
            src: repr.src_addr,
            dst: repr.dst_addr,
            next_header: repr.next_header.into(),
            hop_limit: repr.hop_limit,
            payload: packet.payload(),
        })
    }

    fn icmpv6_type(msg: &[u8]) -> Option<u8> {
        // `new_checked` also rejects ICMPv6 types smoltcp does not know (they are `NotRequest`
        // for the responder, not `Malformed`), so only the common header is checked here.
        if msg.len() < 4 {
            return None;
        }
        Some(Icmpv6Packet::new_unchecked(msg).msg_type().into())
    }

    fn ndisc(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> Result<Ndisc, ()> {
        let packet = Icmpv6Packet::new_checked(msg).map_err(|_| ())?;
        // Checks the checksum, code 0 for NDP, the message length and every option's length.
        let repr = Icmpv6Repr::parse(&src, &dst, &packet, &ChecksumCapabilities::default())
            .map_err(|_| ())?;
        let Icmpv6Repr::Ndisc(ndisc) = repr else {
            return Err(());
        };
        match ndisc {
            NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr,
            } => {
                // HAND CHECK: non-multicast target (smoltcp's iface checks it, wire does not).
                if target_addr.is_multicast() {
                    return Err(());
                }
                // As smoltcp's iface does: a link-layer option that does not parse as an
                // Ethernet address drops the NS.
                let slla = match lladdr.map(|raw| raw.parse(Medium::Ethernet)) {
                    None => None,
                    Some(Ok(HardwareAddress::Ethernet(mac))) => Some(mac.0),
                    Some(_) => return Err(()),
                };
                Ok(Ndisc::Ns {
                    target: target_addr,
                    slla,
                })
            }
            NdiscRepr::NeighborAdvert { target_addr, .. } if !target_addr.is_multicast() => {
                Ok(Ndisc::Other)
            }
            // Router Solicitation/Advertisement, Redirect: not what ours accepts here either.
            _ => Err(()),
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
        let eth = EthernetRepr {
            src_addr: EthernetAddress(sha),
            dst_addr: EthernetAddress(dst_mac),
            ethertype: EthernetProtocol::Arp,
        };
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::from(op),
            source_hardware_addr: EthernetAddress(sha),
            source_protocol_addr: spa,
            target_hardware_addr: EthernetAddress(tha),
            target_protocol_addr: tpa,
        };
        let mut bytes = vec![0u8; (eth.buffer_len() + arp.buffer_len()).max(60)];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
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
        let mut flags = NdiscNeighborFlags::empty();
        if solicited {
            flags |= NdiscNeighborFlags::SOLICITED;
        }
        if override_ {
            flags |= NdiscNeighborFlags::OVERRIDE;
        }
        let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr: target,
            lladdr: Some(RawHardwareAddress::from_bytes(&src_mac)),
        });
        let ip = Ipv6Repr {
            src_addr: src_ip,
            dst_addr: dst_ip,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit: 255,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(src_mac),
            dst_addr: EthernetAddress(dst_mac),
            ethertype: EthernetProtocol::Ipv6,
        };
        let mut bytes = vec![0u8; eth.buffer_len() + ip.buffer_len() + icmp.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        eth.emit(&mut frame);
        let mut packet = Ipv6Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet);
        icmp.emit(
            &src_ip,
            &dst_ip,
            &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
            &ChecksumCapabilities::default(),
        );
        bytes
    }
}
