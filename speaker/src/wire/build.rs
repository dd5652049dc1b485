//! Whole Ethernet frames the speaker sends. Each builder takes every address explicitly: which
//! frame to send, and when, is decided by `layer2::responder` and `layer2::gratuitous`.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::arp::{ArpOperation, ArpPacket, ArpRepr};
use super::ethernet::{self, EtherType, EthernetFrame, EthernetRepr};
use super::icmpv6::Icmpv6Packet;
use super::ipv6::{self, Ipv6Packet, Ipv6Repr, NEXT_HEADER_ICMPV6};
use super::ndisc::{NdiscRepr, NeighborFlags};
use super::{ALL_NODES, Mac};

/// Shortest Ethernet frame without FCS. Short ARP frames are zero-padded to it here rather than
/// trusting every driver to do so for raw sockets.
pub const MIN_FRAME_LEN: usize = 60;

/// Hop limit of every Neighbor Discovery message; receivers drop anything else (RFC 4861 §7.1).
pub const NDISC_HOP_LIMIT: u8 = 255;

/// Which of the two customary gratuitous ARP forms to build (RFC 5944 §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GratuitousArpForm {
    /// A broadcast request "who-has VIP tell VIP"; target hardware address zero (unused).
    Request,
    /// A broadcast reply "VIP is-at MAC"; target hardware address = our MAC as RFC 5944 asks.
    /// Linux only treats a reply as gratuitous (bypassing its ARP `locktime`) when the target
    /// hardware address equals the sender's (`arp_is_garp` in `net/ipv4/arp.c`), so a broadcast
    /// target address here, as some implementations send, would be subject to the lock.
    Reply,
}

/// An ARP reply from `iface_mac` saying `vip` is at `iface_mac`, unicast to the requester.
pub fn arp_reply(iface_mac: Mac, vip: Ipv4Addr, to_mac: Mac, to_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        to_mac,
        ArpRepr {
            operation: ArpOperation::Reply,
            sender_mac: iface_mac,
            sender_ip: vip,
            target_mac: to_mac,
            target_ip: to_ip,
        },
    )
}

/// A broadcast gratuitous ARP: sender and target protocol address are both `vip`, so every
/// host on the link that has `vip` cached updates it to `iface_mac`. Hosts differ in which
/// form they honour (some only requests, some only replies), so the schedule sends both.
pub fn gratuitous_arp(iface_mac: Mac, vip: Ipv4Addr, form: GratuitousArpForm) -> Vec<u8> {
    let (operation, target_mac) = match form {
        GratuitousArpForm::Request => (ArpOperation::Request, Mac::ZERO),
        GratuitousArpForm::Reply => (ArpOperation::Reply, iface_mac),
    };
    arp_frame(
        Mac::BROADCAST,
        ArpRepr {
            operation,
            sender_mac: iface_mac,
            sender_ip: vip,
            target_mac,
            target_ip: vip,
        },
    )
}

fn arp_frame(dst_mac: Mac, repr: ArpRepr) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: repr.sender_mac,
        dst_addr: dst_mac,
        ethertype: EtherType::Arp,
    };
    let len = (eth.buffer_len() + repr.buffer_len()).max(MIN_FRAME_LEN);
    let mut bytes = vec![0u8; len];
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    eth.emit(&mut frame);
    repr.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    bytes
}

/// A broadcast ARP request "who-has `target_ip` tell `sender_ip`" (what a client sends; used by
/// tests, fuzz seeds and probes).
pub fn arp_request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        Mac::BROADCAST,
        ArpRepr {
            operation: ArpOperation::Request,
            sender_mac,
            sender_ip,
            target_mac: Mac::ZERO,
            target_ip,
        },
    )
}

/// A Neighbor Solicitation frame (what a client sends; used by tests, fuzz seeds and probes).
pub fn neighbor_solicit(
    src_mac: Mac,
    dst_mac: Mac,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    target: Ipv6Addr,
    source_lladdr: Option<Mac>,
) -> Vec<u8> {
    let ndisc = NdiscRepr::NeighborSolicit {
        target,
        source_lladdr,
    };
    ndisc_frame(src_mac, dst_mac, src_ip, dst_ip, ndisc)
}

/// The Neighbor Advertisement answering a Neighbor Solicitation for `target` (RFC 4861 §7.2.4).
///
/// - `soliciter_ip` is the NS's IPv6 source. If it is `::` (Duplicate Address Detection) the NA
///   goes to all-nodes `ff02::1` with Solicited clear, as the RFC requires.
/// - Otherwise it is unicast to `soliciter_ip` at `soliciter_mac`: the NS's source link-layer
///   option when present, else the frame's source MAC (unicast NUD probes carry no option).
/// - `override_` is the O flag; see `layer2::responder` for why the speaker sets it.
///
/// The IPv6 source is `target` itself: the VIP is not configured on any interface, and the
/// receiver only requires hop limit 255 and a valid checksum, not a particular source.
pub fn solicited_na(
    iface_mac: Mac,
    target: Ipv6Addr,
    soliciter_ip: Ipv6Addr,
    soliciter_mac: Mac,
    override_: bool,
) -> Vec<u8> {
    let dad = soliciter_ip.is_unspecified();
    let (dst_ip, dst_mac) = if dad {
        (ALL_NODES, Mac::ipv6_multicast(ALL_NODES))
    } else {
        (soliciter_ip, soliciter_mac)
    };
    let flags = NeighborFlags {
        router: false,
        solicited: !dad,
        override_,
    };
    neighbor_advert(iface_mac, dst_mac, target, dst_ip, flags, target)
}

/// An unsolicited Neighbor Advertisement to all-nodes with Override set (RFC 4861 §7.2.6), so
/// that every neighbour caching `target` switches to `iface_mac`.
pub fn unsolicited_na(iface_mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    let flags = NeighborFlags {
        router: false,
        solicited: false,
        override_: true,
    };
    neighbor_advert(
        iface_mac,
        Mac::ipv6_multicast(ALL_NODES),
        target,
        ALL_NODES,
        flags,
        target,
    )
}

/// An NA frame with a target link-layer option of `iface_mac`.
pub fn neighbor_advert(
    iface_mac: Mac,
    dst_mac: Mac,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    flags: NeighborFlags,
    target: Ipv6Addr,
) -> Vec<u8> {
    let ndisc = NdiscRepr::NeighborAdvert {
        flags,
        target,
        target_lladdr: Some(iface_mac),
    };
    ndisc_frame(iface_mac, dst_mac, src_ip, dst_ip, ndisc)
}

fn ndisc_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    ndisc: NdiscRepr,
) -> Vec<u8> {
    let ndisc_len = ndisc.buffer_len();
    let ip = Ipv6Repr {
        src_addr: src_ip,
        dst_addr: dst_ip,
        next_header: NEXT_HEADER_ICMPV6,
        // An NS/NA with at most one option is at most 32 bytes: always fits.
        payload_len: u16::try_from(ndisc_len).unwrap_or(u16::MAX),
        hop_limit: NDISC_HOP_LIMIT,
    };
    let eth = EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EtherType::Ipv6,
    };
    let mut bytes = vec![0u8; ethernet::HEADER_LEN + ipv6::HEADER_LEN + ndisc_len];
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv6Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet);
    ndisc.emit(
        src_ip,
        dst_ip,
        &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
    );
    bytes
}

#[cfg(test)]
mod test {
    use super::*;

    const OUR_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xf0]);
    const CLIENT_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xc8]);

    fn vip6() -> Ipv6Addr {
        "2001:db8:2::240".parse().unwrap()
    }

    fn client6() -> Ipv6Addr {
        "2001:db8:2::200".parse().unwrap()
    }

    /// Parses a built NA frame all the way down.
    fn parse_na(bytes: &[u8]) -> (EthernetRepr, Ipv6Repr, NdiscRepr) {
        let frame = EthernetFrame::new_checked(bytes).unwrap();
        let packet = Ipv6Packet::new_checked(frame.payload()).unwrap();
        let ip = Ipv6Repr::parse(&packet).unwrap();
        let icmp = Icmpv6Packet::new_checked(packet.payload()).unwrap();
        let ndisc = NdiscRepr::parse(ip.src_addr, ip.dst_addr, &icmp).unwrap();
        (EthernetRepr::parse(&frame).unwrap(), ip, ndisc)
    }

    fn parse_arp(bytes: &[u8]) -> (EthernetRepr, ArpRepr) {
        let frame = EthernetFrame::new_checked(bytes).unwrap();
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        (EthernetRepr::parse(&frame).unwrap(), arp)
    }

    #[test]
    fn arp_reply_bytes() {
        let vip = Ipv4Addr::new(192, 0, 2, 240);
        let bytes = arp_reply(OUR_MAC, vip, CLIENT_MAC, Ipv4Addr::new(192, 0, 2, 200));
        #[rustfmt::skip]
        let mut expected = vec![
            0x02, 0, 0, 0, 0, 0xc8, 0x02, 0, 0, 0, 0, 0xf0, 0x08, 0x06, // Ethernet
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02,                   // Ethernet/IPv4, reply
            0x02, 0, 0, 0, 0, 0xf0, 192, 0, 2, 240,                      // sender: us, VIP
            0x02, 0, 0, 0, 0, 0xc8, 192, 0, 2, 200,                      // target: the requester
        ];
        expected.resize(MIN_FRAME_LEN, 0);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn gratuitous_arp_forms() {
        let vip = Ipv4Addr::new(192, 0, 2, 240);
        let (eth, request) = parse_arp(&gratuitous_arp(OUR_MAC, vip, GratuitousArpForm::Request));
        assert_eq!(eth.dst_addr, Mac::BROADCAST);
        assert_eq!(eth.src_addr, OUR_MAC);
        assert_eq!(
            request,
            ArpRepr {
                operation: ArpOperation::Request,
                sender_mac: OUR_MAC,
                sender_ip: vip,
                target_mac: Mac::ZERO,
                target_ip: vip,
            }
        );
        let (eth, reply) = parse_arp(&gratuitous_arp(OUR_MAC, vip, GratuitousArpForm::Reply));
        assert_eq!(eth.dst_addr, Mac::BROADCAST);
        assert_eq!(reply.operation, ArpOperation::Reply);
        assert_eq!((reply.sender_ip, reply.target_ip), (vip, vip));
        assert_eq!((reply.sender_mac, reply.target_mac), (OUR_MAC, OUR_MAC));
    }

    #[test]
    fn solicited_na_is_unicast_to_the_soliciter() {
        let bytes = solicited_na(OUR_MAC, vip6(), client6(), CLIENT_MAC, true);
        let (eth, ip, ndisc) = parse_na(&bytes);
        assert_eq!((eth.src_addr, eth.dst_addr), (OUR_MAC, CLIENT_MAC));
        assert_eq!(
            (ip.src_addr, ip.dst_addr, ip.hop_limit),
            (vip6(), client6(), 255)
        );
        assert_eq!(
            ndisc,
            NdiscRepr::NeighborAdvert {
                flags: NeighborFlags {
                    router: false,
                    solicited: true,
                    override_: true
                },
                target: vip6(),
                target_lladdr: Some(OUR_MAC),
            }
        );
    }

    #[test]
    fn dad_probe_is_answered_to_all_nodes_unsolicited() {
        let bytes = solicited_na(OUR_MAC, vip6(), Ipv6Addr::UNSPECIFIED, CLIENT_MAC, true);
        let (eth, ip, ndisc) = parse_na(&bytes);
        assert_eq!(eth.dst_addr, Mac([0x33, 0x33, 0, 0, 0, 1]));
        assert_eq!(ip.dst_addr, ALL_NODES);
        let NdiscRepr::NeighborAdvert { flags, .. } = ndisc else {
            panic!("not an NA: {ndisc:?}");
        };
        assert!(!flags.solicited && flags.override_);
    }

    #[test]
    fn unsolicited_na_to_all_nodes_with_override() {
        let (eth, ip, ndisc) = parse_na(&unsolicited_na(OUR_MAC, vip6()));
        assert_eq!(eth.dst_addr, Mac::ipv6_multicast(ALL_NODES));
        assert_eq!((ip.dst_addr, ip.hop_limit), (ALL_NODES, 255));
        assert_eq!(
            ndisc,
            NdiscRepr::NeighborAdvert {
                flags: NeighborFlags {
                    router: false,
                    solicited: false,
                    override_: true
                },
                target: vip6(),
                target_lladdr: Some(OUR_MAC),
            }
        );
    }
}
