//! The layer2 answering policy: given a received frame and the interface it arrived on, the
//! reply to send, or the reason for sending none. Pure: no sockets, no clock.
//!
//! # ARP (RFC 826)
//! Requests (broadcast, or unicast to our MAC as in ARP cache refreshes) for an IPv4 address this
//! node announces on the receiving interface get a unicast reply with the *receiving interface's*
//! MAC. Replies and gratuitous requests (sender IP = target IP, somebody else's announcement) are
//! not answered. ARP probes (sender IP 0.0.0.0, RFC 5227) are answered: that is how an owner
//! defends its address against another host about to claim it.
//!
//! # NDP (RFC 4861)
//! Neighbor Solicitations for an IPv6 address this node announces are answered with a solicited
//! Neighbor Advertisement, whether or not the NS carries a source link-layer address option:
//! unicast NUD probes usually do not, and ignoring them (as MetalLB does, its issue #2920) lets
//! the client's entry fail and fall back to multicast resolution, costing seconds. Without the
//! option the NA goes to the frame's source MAC; a DAD probe (source `::`) is answered to
//! `ff02::1` so that the prober sees the address is taken.
//!
//! ## Why the solicited NA sets Override
//! RFC 4861 §7.2.4 says O should be clear only for anycast and proxied addresses, because then
//! another node may legitimately own the address and its answer must win. A FerroLB speaker is the
//! elected sole answerer for the VIP, not a proxy standing next to the real owner. And at takeover
//! O matters: per §7.2.5, an NA with O clear whose link-layer address differs from the cached one
//! does *not* update an entry in STALE/DELAY/PROBE (it only demotes REACHABLE to STALE), so a
//! client still probing the old owner would ignore the new owner's answer until its probes fail.
//! With O set the answer replaces the stale MAC at once. MetalLB sends O clear on solicited NAs;
//! we deliberately do not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use crate::wire::ethernet::{EtherType, EthernetFrame};
use crate::wire::icmpv6::{Icmpv6Packet, TYPE_NEIGHBOR_SOLICIT};
use crate::wire::ipv6::{Ipv6Packet, Ipv6Repr, NEXT_HEADER_ICMPV6};
use crate::wire::ndisc::NdiscRepr;
use crate::wire::{Mac, build, solicited_node};

/// The interface a frame was received on (and the reply is sent from).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfaceInfo {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
}

/// On which interfaces an IP is announced (MetalLB's `L2Advertisement.interfaces`: empty = all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    All,
    Only(BTreeSet<String>),
}

impl Interfaces {
    pub fn contains(&self, iface: &str) -> bool {
        match self {
            Interfaces::All => true,
            Interfaces::Only(names) => names.contains(iface),
        }
    }
}

/// Which IPs this node announces, and where. Built from the election result by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnounceTable {
    ips: BTreeMap<IpAddr, Interfaces>,
}

impl AnnounceTable {
    pub fn new() -> AnnounceTable {
        AnnounceTable::default()
    }

    /// Announces `ip` on `on`, replacing any previous interface set.
    pub fn announce(&mut self, ip: IpAddr, on: Interfaces) {
        self.ips.insert(ip, on);
    }

    /// Stops announcing `ip`; whether it was announced.
    pub fn withdraw(&mut self, ip: IpAddr) -> bool {
        self.ips.remove(&ip).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// Whether `ip` is answered on `iface`, or why not.
    pub fn check(&self, ip: IpAddr, iface: &str) -> Result<(), DropReason> {
        match self.ips.get(&ip) {
            None => Err(DropReason::NotOwner),
            Some(on) if !on.contains(iface) => Err(DropReason::WrongInterface),
            Some(_) => Ok(()),
        }
    }

    /// The IPs announced on `iface`, ascending (for gratuitous announcements).
    pub fn ips_on<'a>(&'a self, iface: &'a str) -> impl Iterator<Item = IpAddr> + 'a {
        self.ips
            .iter()
            .filter(move |(_, on)| on.contains(iface))
            .map(|(ip, _)| *ip)
    }

    /// The solicited-node multicast MACs the socket on `iface` must join so that multicast NSs for
    /// our IPv6 addresses reach it on NICs that filter multicast.
    pub fn solicited_node_macs(&self, iface: &str) -> BTreeSet<Mac> {
        self.ips_on(iface)
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(Mac::ipv6_multicast(solicited_node(v6))),
                IpAddr::V4(_) => None,
            })
            .collect()
    }
}

/// Why a received frame got no reply; a metric label, never free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Truncated, inconsistent, bad checksum, or violating an RFC 4861 §7.1 validity rule.
    Malformed,
    /// Not an ARP request or Neighbor Solicitation (replies, advertisements, other traffic).
    NotRequest,
    /// A gratuitous ARP (sender IP = target IP): another host's announcement, not a question.
    Gratuitous,
    /// Unicast to a MAC other than the receiving interface's (seen in promiscuous mode).
    NotForUs,
    /// The sender's hardware or IPv6 source address cannot be replied to (multicast, zero).
    InvalidSender,
    /// The target IP is not announced by this node.
    NotOwner,
    /// The target IP is announced by this node, but not on the receiving interface.
    WrongInterface,
}

impl DropReason {
    /// A stable snake_case label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NotRequest => "not_request",
            DropReason::Gratuitous => "gratuitous",
            DropReason::NotForUs => "not_for_us",
            DropReason::InvalidSender => "invalid_sender",
            DropReason::NotOwner => "not_owner",
            DropReason::WrongInterface => "wrong_interface",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Responder::respond`] made of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The IP asked about, when the frame is a valid request for an IP this node announces
    /// (on this interface or another: then `reply` is [`DropReason::WrongInterface`]); `None`
    /// for any other frame, so that per-IP counting stays bounded by the announced IPs.
    pub announced_target: Option<IpAddr>,
    /// The reply frame, or why there is none.
    pub reply: Result<Vec<u8>, DropReason>,
}

impl Response {
    fn new(target: IpAddr, reply: Result<Vec<u8>, DropReason>) -> Response {
        let announced = !matches!(reply, Err(DropReason::NotOwner));
        Response {
            announced_target: announced.then_some(target),
            reply,
        }
    }

    fn dropped(reason: DropReason) -> Response {
        Response {
            announced_target: None,
            reply: Err(reason),
        }
    }
}

/// Answers ARP requests and Neighbor Solicitations for the IPs of an [`AnnounceTable`].
#[derive(Debug, Clone, Default)]
pub struct Responder {
    table: AnnounceTable,
}

impl Responder {
    pub fn new(table: AnnounceTable) -> Responder {
        Responder { table }
    }

    pub fn table(&self) -> &AnnounceTable {
        &self.table
    }

    pub fn set_table(&mut self, table: AnnounceTable) {
        self.table = table;
    }

    /// The reply frame for `frame` received on `iface`, or why there is none.
    pub fn answer(&self, iface: &IfaceInfo, frame: &[u8]) -> Result<Vec<u8>, DropReason> {
        self.respond(iface, frame).reply
    }

    /// [`Self::answer`], and which announced IP the frame asked about.
    pub fn respond(&self, iface: &IfaceInfo, frame: &[u8]) -> Response {
        let Ok(frame) = EthernetFrame::new_checked(frame) else {
            return Response::dropped(DropReason::Malformed);
        };
        let dst = frame.dst_addr();
        if !dst.is_multicast() && dst != iface.mac {
            return Response::dropped(DropReason::NotForUs);
        }
        if !frame.src_addr().is_unicast() {
            return Response::dropped(DropReason::InvalidSender);
        }
        let request = match frame.ethertype() {
            EtherType::Arp => self.answer_arp(iface, frame.payload()),
            EtherType::Ipv6 => self.answer_solicit(iface, frame.src_addr(), frame.payload()),
            EtherType::Ipv4 | EtherType::Unknown(_) => Err(DropReason::NotRequest),
        };
        match request {
            Ok((target, reply)) => Response::new(target, reply),
            Err(reason) => Response::dropped(reason),
        }
    }

    /// A valid ARP request's target and what to do with it; `Err` for frames that are not one.
    fn answer_arp(
        &self,
        iface: &IfaceInfo,
        payload: &[u8],
    ) -> Result<(IpAddr, Result<Vec<u8>, DropReason>), DropReason> {
        let packet = ArpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
        let request = ArpRepr::parse(&packet).map_err(|_| DropReason::Malformed)?;
        if request.operation != ArpOperation::Request {
            return Err(DropReason::NotRequest);
        }
        if !request.sender_mac.is_unicast() {
            return Err(DropReason::InvalidSender);
        }
        if request.sender_ip == request.target_ip {
            return Err(DropReason::Gratuitous);
        }
        let target = IpAddr::V4(request.target_ip);
        let reply = self.table.check(target, &iface.name).map(|()| {
            build::arp_reply(
                iface.mac,
                request.target_ip,
                request.sender_mac,
                request.sender_ip,
            )
        });
        Ok((target, reply))
    }

    fn answer_solicit(
        &self,
        iface: &IfaceInfo,
        frame_src: Mac,
        payload: &[u8],
    ) -> Result<(IpAddr, Result<Vec<u8>, DropReason>), DropReason> {
        let packet = Ipv6Packet::new_checked(payload).map_err(|_| DropReason::Malformed)?;
        let ip = Ipv6Repr::parse(&packet).map_err(|_| DropReason::Malformed)?;
        if ip.next_header != NEXT_HEADER_ICMPV6 {
            return Err(DropReason::NotRequest);
        }
        let icmp =
            Icmpv6Packet::new_checked(packet.payload()).map_err(|_| DropReason::Malformed)?;
        if icmp.msg_type() != TYPE_NEIGHBOR_SOLICIT {
            return Err(DropReason::NotRequest);
        }
        // RFC 4861 §7.1.1: hop limit 255 proves the NS was not forwarded by a router.
        if ip.hop_limit != build::NDISC_HOP_LIMIT {
            return Err(DropReason::Malformed);
        }
        let NdiscRepr::NeighborSolicit {
            target,
            source_lladdr,
        } = NdiscRepr::parse(ip.src_addr, ip.dst_addr, &icmp).map_err(|_| DropReason::Malformed)?
        else {
            return Err(DropReason::NotRequest);
        };
        if ip.src_addr.is_unspecified() && !is_dad_valid(ip.dst_addr, source_lladdr) {
            return Err(DropReason::Malformed);
        }
        if ip.src_addr.is_multicast() {
            return Err(DropReason::InvalidSender);
        }
        let soliciter_mac = source_lladdr.unwrap_or(frame_src);
        if !soliciter_mac.is_unicast() {
            return Err(DropReason::InvalidSender);
        }
        let reply = self
            .table
            .check(IpAddr::V6(target), &iface.name)
            .map(|()| build::solicited_na(iface.mac, target, ip.src_addr, soliciter_mac, true));
        Ok((IpAddr::V6(target), reply))
    }
}

/// RFC 4861 §7.1.1: an NS from `::` must go to a solicited-node group and carry no source
/// link-layer option.
fn is_dad_valid(dst: Ipv6Addr, source_lladdr: Option<Mac>) -> bool {
    let o = dst.octets();
    let solicited_node_group = o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff];
    solicited_node_group && source_lladdr.is_none()
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::build::{GratuitousArpForm, gratuitous_arp, neighbor_solicit};
    use crate::wire::ndisc::NeighborFlags;
    use crate::wire::{ALL_NODES, ArpPacket, EthernetRepr};
    use std::net::Ipv4Addr;

    const OUR_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xf0]);
    const CLIENT_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xc8]);
    const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 240);
    const OTHER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 241);
    const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

    fn vip6() -> Ipv6Addr {
        "2001:db8:2::240".parse().unwrap()
    }

    fn client6() -> Ipv6Addr {
        "2001:db8:2::200".parse().unwrap()
    }

    fn eth0() -> IfaceInfo {
        IfaceInfo {
            name: "eth0".into(),
            index: 2,
            mac: OUR_MAC,
        }
    }

    fn responder() -> Responder {
        let mut table = AnnounceTable::new();
        table.announce(IpAddr::V4(VIP4), Interfaces::All);
        table.announce(IpAddr::V6(vip6()), Interfaces::All);
        table.announce(
            IpAddr::V4(OTHER4),
            Interfaces::Only(BTreeSet::from(["eth1".to_owned()])),
        );
        Responder::new(table)
    }

    fn arp_request(dst: Mac, target: Ipv4Addr) -> Vec<u8> {
        let mut frame = build::arp_request(CLIENT_MAC, CLIENT4, target);
        EthernetFrame::new_unchecked(&mut frame[..]).set_dst_addr(dst);
        frame
    }

    fn ns(src_ip: Ipv6Addr, dst_ip: Ipv6Addr, dst_mac: Mac, slla: Option<Mac>) -> Vec<u8> {
        neighbor_solicit(CLIENT_MAC, dst_mac, src_ip, dst_ip, vip6(), slla)
    }

    fn multicast_ns(slla: Option<Mac>) -> Vec<u8> {
        let group = solicited_node(vip6());
        ns(client6(), group, Mac::ipv6_multicast(group), slla)
    }

    fn parse_arp_reply(frame: &[u8]) -> (EthernetRepr, ArpRepr) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        (EthernetRepr::parse(&eth).unwrap(), arp)
    }

    fn parse_na(frame: &[u8]) -> (Mac, Ipv6Addr, NdiscRepr) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        let packet = Ipv6Packet::new_checked(eth.payload()).unwrap();
        let ip = Ipv6Repr::parse(&packet).unwrap();
        let icmp = Icmpv6Packet::new_checked(packet.payload()).unwrap();
        let ndisc = NdiscRepr::parse(ip.src_addr, ip.dst_addr, &icmp).unwrap();
        (eth.dst_addr(), ip.dst_addr, ndisc)
    }

    #[test]
    fn broadcast_arp_request_for_owned_ip_gets_a_reply_with_our_mac() {
        let reply = responder()
            .answer(&eth0(), &arp_request(Mac::BROADCAST, VIP4))
            .unwrap();
        let (eth, arp) = parse_arp_reply(&reply);
        assert_eq!((eth.src_addr, eth.dst_addr), (OUR_MAC, CLIENT_MAC));
        assert_eq!(
            arp,
            ArpRepr {
                operation: ArpOperation::Reply,
                sender_mac: OUR_MAC,
                sender_ip: VIP4,
                target_mac: CLIENT_MAC,
                target_ip: CLIENT4,
            }
        );
    }

    /// `announced_target` names the IP only for valid requests for an IP this node announces,
    /// so the per-IP counters cannot grow a series for anything else.
    #[test]
    fn the_announced_target_is_named_only_for_requests_for_our_ips() {
        let r = responder();
        let on_eth0 = |frame: &[u8]| r.respond(&eth0(), frame);
        let answered = on_eth0(&arp_request(Mac::BROADCAST, VIP4));
        assert_eq!(answered.announced_target, Some(IpAddr::V4(VIP4)));
        assert!(answered.reply.is_ok());
        let v6 = on_eth0(&multicast_ns(Some(CLIENT_MAC)));
        assert_eq!(v6.announced_target, Some(IpAddr::V6(vip6())));
        assert!(v6.reply.is_ok());
        // Ours, but announced on eth1 only: asked about, not answered here.
        let elsewhere = on_eth0(&arp_request(Mac::BROADCAST, OTHER4));
        assert_eq!(elsewhere.announced_target, Some(IpAddr::V4(OTHER4)));
        assert_eq!(elsewhere.reply, Err(DropReason::WrongInterface));
        // Another node's IP, someone's gratuitous announcement, a frame to another MAC.
        let unowned = Ipv4Addr::new(192, 0, 2, 250);
        let other_mac = Mac([0x02, 0, 0, 0, 0, 0x99]);
        for (frame, reason) in [
            (arp_request(Mac::BROADCAST, unowned), DropReason::NotOwner),
            (
                gratuitous_arp(CLIENT_MAC, VIP4, GratuitousArpForm::Request),
                DropReason::Gratuitous,
            ),
            (arp_request(other_mac, VIP4), DropReason::NotForUs),
        ] {
            let response = on_eth0(&frame);
            assert_eq!(response.announced_target, None, "{reason}");
            assert_eq!(response.reply, Err(reason));
        }
    }

    #[test]
    fn unicast_arp_request_to_us_is_answered_to_others_is_not() {
        assert!(
            responder()
                .answer(&eth0(), &arp_request(OUR_MAC, VIP4))
                .is_ok()
        );
        let elsewhere = Mac([0x02, 0, 0, 0, 0, 0x99]);
        assert_eq!(
            responder().answer(&eth0(), &arp_request(elsewhere, VIP4)),
            Err(DropReason::NotForUs)
        );
    }

    #[test]
    fn arp_for_ips_we_do_not_own_or_not_here() {
        let r = responder();
        assert_eq!(
            r.answer(
                &eth0(),
                &arp_request(Mac::BROADCAST, Ipv4Addr::new(192, 0, 2, 9))
            ),
            Err(DropReason::NotOwner)
        );
        assert_eq!(
            r.answer(&eth0(), &arp_request(Mac::BROADCAST, OTHER4)),
            Err(DropReason::WrongInterface)
        );
        let eth1 = IfaceInfo {
            name: "eth1".into(),
            ..eth0()
        };
        assert!(
            r.answer(&eth1, &arp_request(Mac::BROADCAST, OTHER4))
                .is_ok()
        );
    }

    #[test]
    fn arp_replies_and_gratuitous_are_ignored() {
        let r = responder();
        let other_mac = Mac([0x02, 0, 0, 0, 0, 0x77]);
        for form in [GratuitousArpForm::Request, GratuitousArpForm::Reply] {
            let expected = match form {
                GratuitousArpForm::Request => DropReason::Gratuitous,
                GratuitousArpForm::Reply => DropReason::NotRequest,
            };
            assert_eq!(
                r.answer(&eth0(), &gratuitous_arp(other_mac, VIP4, form)),
                Err(expected)
            );
        }
        let reply = build::arp_reply(other_mac, VIP4, CLIENT_MAC, CLIENT4);
        let mut reply_to_us = reply.clone();
        EthernetFrame::new_unchecked(&mut reply_to_us[..]).set_dst_addr(OUR_MAC);
        assert_eq!(r.answer(&eth0(), &reply_to_us), Err(DropReason::NotRequest));
    }

    #[test]
    fn arp_probe_is_defended() {
        let probe = build::arp_request(CLIENT_MAC, Ipv4Addr::UNSPECIFIED, VIP4);
        let (_, arp) = parse_arp_reply(&responder().answer(&eth0(), &probe).unwrap());
        assert_eq!(
            (arp.target_mac, arp.target_ip),
            (CLIENT_MAC, Ipv4Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn arp_from_a_multicast_sender_is_dropped() {
        let mut frame = arp_request(Mac::BROADCAST, VIP4);
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        ArpPacket::new_unchecked(eth.payload_mut()).set_sender_hardware_addr(&[0xff; 6]);
        assert_eq!(
            responder().answer(&eth0(), &frame),
            Err(DropReason::InvalidSender)
        );
        let mut frame = arp_request(Mac::BROADCAST, VIP4);
        EthernetFrame::new_unchecked(&mut frame[..]).set_src_addr(Mac([0x01, 0, 0, 0, 0, 1]));
        assert_eq!(
            responder().answer(&eth0(), &frame),
            Err(DropReason::InvalidSender)
        );
    }

    #[test]
    fn ns_with_source_lladdr_gets_a_solicited_override_na() {
        let slla = Mac([0x02, 0, 0, 0, 0, 0xc9]); // differs from the frame source on purpose
        let reply = responder()
            .answer(&eth0(), &multicast_ns(Some(slla)))
            .unwrap();
        let (dst_mac, dst_ip, ndisc) = parse_na(&reply);
        assert_eq!((dst_mac, dst_ip), (slla, client6()));
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
    fn unicast_nud_probe_without_lladdr_is_answered_to_the_frame_source() {
        let probe = ns(client6(), vip6(), OUR_MAC, None);
        let (dst_mac, dst_ip, _) = parse_na(&responder().answer(&eth0(), &probe).unwrap());
        assert_eq!((dst_mac, dst_ip), (CLIENT_MAC, client6()));
    }

    #[test]
    fn dad_probe_gets_an_na_to_all_nodes() {
        let group = solicited_node(vip6());
        let probe = ns(
            Ipv6Addr::UNSPECIFIED,
            group,
            Mac::ipv6_multicast(group),
            None,
        );
        let (dst_mac, dst_ip, ndisc) = parse_na(&responder().answer(&eth0(), &probe).unwrap());
        assert_eq!(
            (dst_mac, dst_ip),
            (Mac::ipv6_multicast(ALL_NODES), ALL_NODES)
        );
        assert!(matches!(ndisc, NdiscRepr::NeighborAdvert { flags, .. } if !flags.solicited));
    }

    #[test]
    fn invalid_dad_probes_are_malformed() {
        let group = solicited_node(vip6());
        // From :: with a source link-layer option.
        let with_slla = ns(
            Ipv6Addr::UNSPECIFIED,
            group,
            Mac::ipv6_multicast(group),
            Some(CLIENT_MAC),
        );
        assert_eq!(
            responder().answer(&eth0(), &with_slla),
            Err(DropReason::Malformed)
        );
        // From :: to a unicast destination.
        let unicast = ns(Ipv6Addr::UNSPECIFIED, vip6(), OUR_MAC, None);
        assert_eq!(
            responder().answer(&eth0(), &unicast),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn ns_hop_limit_must_be_255() {
        let mut frame = multicast_ns(Some(CLIENT_MAC));
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        Ipv6Packet::new_unchecked(eth.payload_mut()).set_hop_limit(254);
        assert_eq!(
            responder().answer(&eth0(), &frame),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn ns_for_a_foreign_ip_or_an_na_is_not_answered() {
        let group = solicited_node(vip6());
        let foreign = neighbor_solicit(
            CLIENT_MAC,
            Mac::ipv6_multicast(group),
            client6(),
            group,
            "2001:db8:2::9".parse().unwrap(),
            Some(CLIENT_MAC),
        );
        assert_eq!(
            responder().answer(&eth0(), &foreign),
            Err(DropReason::NotOwner)
        );
        let na = build::unsolicited_na(CLIENT_MAC, vip6());
        assert_eq!(
            responder().answer(&eth0(), &na),
            Err(DropReason::NotRequest)
        );
    }

    #[test]
    fn corrupted_ns_checksum_is_malformed() {
        let mut frame = multicast_ns(Some(CLIENT_MAC));
        let last = frame.len() - 1;
        frame[last] ^= 0x01;
        assert_eq!(
            responder().answer(&eth0(), &frame),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn every_truncation_of_a_request_is_dropped() {
        let r = responder();
        for valid in [
            arp_request(Mac::BROADCAST, VIP4),
            multicast_ns(Some(CLIENT_MAC)),
        ] {
            assert!(r.answer(&eth0(), &valid).is_ok());
            // ARP frames are padded to 60 bytes; only cuts into the 42 meaningful bytes fail.
            let meaningful = if valid.len() == build::MIN_FRAME_LEN {
                42
            } else {
                valid.len()
            };
            for len in 0..meaningful {
                assert!(
                    r.answer(&eth0(), &valid[..len]).is_err(),
                    "len {len} answered"
                );
            }
        }
    }

    #[test]
    fn table_queries() {
        let r = responder();
        let on_eth0: Vec<IpAddr> = r.table().ips_on("eth0").collect();
        assert_eq!(on_eth0, vec![IpAddr::V4(VIP4), IpAddr::V6(vip6())]);
        assert_eq!(
            r.table().solicited_node_macs("eth0"),
            BTreeSet::from([Mac([0x33, 0x33, 0xff, 0x00, 0x02, 0x40])])
        );
        let mut table = r.table().clone();
        assert!(table.withdraw(IpAddr::V4(VIP4)));
        assert!(!table.withdraw(IpAddr::V4(VIP4)));
        assert_eq!(
            table.check(IpAddr::V4(VIP4), "eth0"),
            Err(DropReason::NotOwner)
        );
    }

    #[test]
    fn other_ethertypes_are_not_requests() {
        let mut frame = arp_request(Mac::BROADCAST, VIP4);
        EthernetFrame::new_unchecked(&mut frame[..]).set_ethertype(EtherType::Ipv4);
        assert_eq!(
            responder().answer(&eth0(), &frame),
            Err(DropReason::NotRequest)
        );
    }
}
