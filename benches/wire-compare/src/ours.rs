//! FerroLB's own `speaker/src/wire`, used exactly as `layer2::responder` and `wire::build` use it.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::common::{Arp, Eth, Ip6, Mac, Ndisc, Wire};
use crate::wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use crate::wire::build::{self, GratuitousArpForm};
use crate::wire::ethernet::{EtherType, EthernetFrame, EthernetRepr};
use crate::wire::icmpv6::Icmpv6Packet;
use crate::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use crate::wire::ndisc::{NdiscRepr, NeighborFlags};
use crate::wire::{self as w};

pub struct Ours;

impl Wire for Ours {
    const NAME: &'static str = "ours";

    fn ethernet(frame: &[u8]) -> Option<Eth<'_>> {
        let frame = EthernetFrame::new_checked(frame).ok()?;
        Some(Eth {
            dst: frame.dst_addr().0,
            src: frame.src_addr().0,
            ethertype: frame.ethertype().into(),
            payload: frame.into_inner().get(14..)?,
        })
    }

    fn arp(payload: &[u8]) -> Option<Arp> {
        let repr = ArpRepr::parse(&ArpPacket::new_checked(payload).ok()?).ok()?;
        Some(Arp {
            op: repr.operation.into(),
            sha: repr.sender_mac.0,
            spa: repr.sender_ip,
            tpa: repr.target_ip,
        })
    }

    fn ipv6(payload: &[u8]) -> Option<Ip6<'_>> {
        let packet = Ipv6Packet::new_checked(payload).ok()?;
        let repr = Ipv6Repr::parse(&packet).ok()?;
        let end = 40 + usize::from(repr.payload_len);
        Some(Ip6 {
            src: repr.src_addr,
            dst: repr.dst_addr,
            next_header: repr.next_header,
            hop_limit: repr.hop_limit,
            payload: packet.into_inner().get(40..end)?,
        })
    }

    fn icmpv6_type(msg: &[u8]) -> Option<u8> {
        Some(Icmpv6Packet::new_checked(msg).ok()?.msg_type())
    }

    fn ndisc(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> Result<Ndisc, ()> {
        let packet = Icmpv6Packet::new_checked(msg).map_err(|_| ())?;
        match NdiscRepr::parse(src, dst, &packet).map_err(|_| ())? {
            NdiscRepr::NeighborSolicit {
                target,
                source_lladdr,
            } => Ok(Ndisc::Ns {
                target,
                slla: source_lladdr.map(|m| m.0),
            }),
            NdiscRepr::NeighborAdvert { .. } => Ok(Ndisc::Other),
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
            src_addr: w::Mac(sha),
            dst_addr: w::Mac(dst_mac),
            ethertype: EtherType::Arp,
        };
        let repr = ArpRepr {
            operation: ArpOperation::from(op),
            sender_mac: w::Mac(sha),
            sender_ip: spa,
            target_mac: w::Mac(tha),
            target_ip: tpa,
        };
        let mut bytes = vec![0u8; (eth.buffer_len() + repr.buffer_len()).max(build::MIN_FRAME_LEN)];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        eth.emit(&mut frame);
        repr.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
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
        build::neighbor_advert(
            w::Mac(src_mac),
            w::Mac(dst_mac),
            src_ip,
            dst_ip,
            NeighborFlags {
                router: false,
                solicited,
                override_,
            },
            target,
        )
    }

    // The real builders of the speaker.

    fn arp_reply(iface_mac: Mac, vip: Ipv4Addr, to_mac: Mac, to_ip: Ipv4Addr) -> Vec<u8> {
        build::arp_reply(w::Mac(iface_mac), vip, w::Mac(to_mac), to_ip)
    }

    fn gratuitous_arp(iface_mac: Mac, vip: Ipv4Addr, reply: bool) -> Vec<u8> {
        let form = if reply {
            GratuitousArpForm::Reply
        } else {
            GratuitousArpForm::Request
        };
        build::gratuitous_arp(w::Mac(iface_mac), vip, form)
    }

    fn solicited_na(
        iface_mac: Mac,
        target: Ipv6Addr,
        soliciter_ip: Ipv6Addr,
        soliciter_mac: Mac,
    ) -> Vec<u8> {
        build::solicited_na(
            w::Mac(iface_mac),
            target,
            soliciter_ip,
            w::Mac(soliciter_mac),
            true,
        )
    }

    fn unsolicited_na(iface_mac: Mac, target: Ipv6Addr) -> Vec<u8> {
        build::unsolicited_na(w::Mac(iface_mac), target)
    }
}

/// The speaker's real `Responder`, when compiled in (feature `speaker-responder`).
#[cfg(feature = "speaker-responder")]
pub mod real {
    use std::net::IpAddr;

    use crate::common::{Answer, Drop, OUR_MAC, VIP4, VIP6};
    use crate::responder::{AnnounceTable, DropReason, IfaceInfo, Interfaces, Responder};
    use crate::wire::Mac;

    pub struct Real {
        responder: Responder,
        iface: IfaceInfo,
    }

    impl Real {
        pub fn new() -> Real {
            let mut table = AnnounceTable::new();
            table.announce(IpAddr::V4(VIP4), Interfaces::All);
            table.announce(IpAddr::V6(VIP6), Interfaces::All);
            Real {
                responder: Responder::new(table),
                iface: IfaceInfo {
                    name: "eth0".into(),
                    index: 2,
                    mac: Mac(OUR_MAC),
                },
            }
        }

        pub fn answer(&self, frame: &[u8]) -> Answer {
            self.responder
                .answer(&self.iface, frame)
                .map_err(|reason| match reason {
                    DropReason::Malformed => Drop::Malformed,
                    DropReason::NotRequest => Drop::NotRequest,
                    DropReason::Gratuitous => Drop::Gratuitous,
                    DropReason::NotForUs => Drop::NotForUs,
                    DropReason::InvalidSender => Drop::InvalidSender,
                    DropReason::NotOwner | DropReason::WrongInterface => Drop::NotOwner,
                })
        }
    }
}
