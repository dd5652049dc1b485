//! What every implementation must provide, and the answering policy of
//! `speaker/src/layer2/responder.rs` written once over it, so that the three implementations
//! differ only in how they read and write bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

/// The receiving interface's MAC, as in the speaker's unit tests and fuzz targets.
pub const OUR_MAC: Mac = [0x02, 0, 0, 0, 0, 0xf0];
pub const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc8];
pub const BROADCAST: Mac = [0xff; 6];
/// The announced VIPs.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 240);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x240);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x200);
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const NEXT_HEADER_ICMPV6: u8 = 58;
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// `layer2::responder::DropReason`, less `WrongInterface` (one interface here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Drop {
    Malformed,
    NotRequest,
    Gratuitous,
    NotForUs,
    InvalidSender,
    NotOwner,
}

pub type Answer = Result<Vec<u8>, Drop>;

pub struct Eth<'a> {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
    pub payload: &'a [u8],
}

/// An Ethernet/IPv4 ARP packet, any operation.
pub struct Arp {
    pub op: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tpa: Ipv4Addr,
}

pub struct Ip6<'a> {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    /// Exactly `payload_len` bytes (Ethernet padding excluded).
    pub payload: &'a [u8],
}

/// A valid Neighbor Discovery message (RFC 4861 §7.1 message checks passed).
pub enum Ndisc {
    Ns { target: Ipv6Addr, slla: Option<Mac> },
    /// A valid NA, RS, RA or Redirect: not a question.
    Other,
}

/// The byte-level operations the responder needs. `None`/`Err` = malformed.
pub trait Wire {
    const NAME: &'static str;
    /// At least the 14-byte header.
    fn ethernet(frame: &[u8]) -> Option<Eth<'_>>;
    /// Hardware type 1, protocol 0x0800, hlen 6, plen 4, all four addresses present.
    fn arp(payload: &[u8]) -> Option<Arp>;
    /// Version 6; the header and the `payload_len` bytes it announces are present.
    fn ipv6(payload: &[u8]) -> Option<Ip6<'_>>;
    /// The ICMPv6 type, once the 4-byte common header is present.
    fn icmpv6_type(msg: &[u8]) -> Option<u8>;
    /// Checksum, code 0, length >= 24, non-multicast target, all options of length > 0 and
    /// within the message; the first Ethernet-sized source link-layer option of an NS.
    fn ndisc(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> Result<Ndisc, ()>;

    /// An Ethernet + Ethernet/IPv4 ARP frame, zero-padded to 60 bytes.
    fn arp_frame(dst_mac: Mac, op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr)
    -> Vec<u8>;
    /// An Ethernet + IPv6 (hop limit 255) + Neighbor Advertisement frame with a target
    /// link-layer option of `src_mac` and a correct checksum.
    fn na_frame(
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: Ipv6Addr,
        dst_ip: Ipv6Addr,
        solicited: bool,
        override_: bool,
        target: Ipv6Addr,
    ) -> Vec<u8>;

    // The four frames the speaker sends, as `wire::build` composes them. Ours overrides these
    // with the real `wire::build` functions.

    fn arp_reply(iface_mac: Mac, vip: Ipv4Addr, to_mac: Mac, to_ip: Ipv4Addr) -> Vec<u8> {
        Self::arp_frame(to_mac, ARP_REPLY, iface_mac, vip, to_mac, to_ip)
    }

    /// `reply`: the "VIP is-at MAC" form (target MAC = ours), else "who-has VIP tell VIP".
    fn gratuitous_arp(iface_mac: Mac, vip: Ipv4Addr, reply: bool) -> Vec<u8> {
        let (op, tha) = if reply {
            (ARP_REPLY, iface_mac)
        } else {
            (ARP_REQUEST, [0; 6])
        };
        Self::arp_frame(BROADCAST, op, iface_mac, vip, tha, vip)
    }

    fn solicited_na(
        iface_mac: Mac,
        target: Ipv6Addr,
        soliciter_ip: Ipv6Addr,
        soliciter_mac: Mac,
    ) -> Vec<u8> {
        let dad = soliciter_ip.is_unspecified();
        let (dst_ip, dst_mac) = if dad {
            (ALL_NODES, ipv6_multicast_mac(ALL_NODES))
        } else {
            (soliciter_ip, soliciter_mac)
        };
        Self::na_frame(iface_mac, dst_mac, target, dst_ip, !dad, true, target)
    }

    fn unsolicited_na(iface_mac: Mac, target: Ipv6Addr) -> Vec<u8> {
        Self::na_frame(
            iface_mac,
            ipv6_multicast_mac(ALL_NODES),
            target,
            ALL_NODES,
            false,
            true,
            target,
        )
    }
}

pub fn ipv6_multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

pub fn is_unicast(mac: &Mac) -> bool {
    !is_multicast(mac) && *mac != [0; 6]
}

/// `Responder::answer` over `W`, with the announce table {VIP4, VIP6} on the one interface.
pub fn answer<W: Wire>(frame: &[u8]) -> Answer {
    let eth = W::ethernet(frame).ok_or(Drop::Malformed)?;
    if !is_multicast(&eth.dst) && eth.dst != OUR_MAC {
        return Err(Drop::NotForUs);
    }
    if !is_unicast(&eth.src) {
        return Err(Drop::InvalidSender);
    }
    match eth.ethertype {
        ETHERTYPE_ARP => answer_arp::<W>(eth.payload),
        ETHERTYPE_IPV6 => answer_solicit::<W>(eth.src, eth.payload),
        _ => Err(Drop::NotRequest),
    }
}

fn answer_arp<W: Wire>(payload: &[u8]) -> Answer {
    let arp = W::arp(payload).ok_or(Drop::Malformed)?;
    if arp.op != ARP_REQUEST {
        return Err(Drop::NotRequest);
    }
    if !is_unicast(&arp.sha) {
        return Err(Drop::InvalidSender);
    }
    if arp.spa == arp.tpa {
        return Err(Drop::Gratuitous);
    }
    if arp.tpa != VIP4 {
        return Err(Drop::NotOwner);
    }
    Ok(W::arp_reply(OUR_MAC, arp.tpa, arp.sha, arp.spa))
}

fn answer_solicit<W: Wire>(frame_src: Mac, payload: &[u8]) -> Answer {
    let ip = W::ipv6(payload).ok_or(Drop::Malformed)?;
    if ip.next_header != NEXT_HEADER_ICMPV6 {
        return Err(Drop::NotRequest);
    }
    let msg_type = W::icmpv6_type(ip.payload).ok_or(Drop::Malformed)?;
    if msg_type != TYPE_NEIGHBOR_SOLICIT {
        return Err(Drop::NotRequest);
    }
    if ip.hop_limit != 255 {
        return Err(Drop::Malformed);
    }
    let Ndisc::Ns { target, slla } =
        W::ndisc(ip.src, ip.dst, ip.payload).map_err(|()| Drop::Malformed)?
    else {
        return Err(Drop::NotRequest);
    };
    if ip.src.is_unspecified() && !is_dad_valid(ip.dst, slla) {
        return Err(Drop::Malformed);
    }
    if ip.src.is_multicast() {
        return Err(Drop::InvalidSender);
    }
    let soliciter_mac = slla.unwrap_or(frame_src);
    if !is_unicast(&soliciter_mac) {
        return Err(Drop::InvalidSender);
    }
    if target != VIP6 {
        return Err(Drop::NotOwner);
    }
    Ok(W::solicited_na(OUR_MAC, target, ip.src, soliciter_mac))
}

fn is_dad_valid(dst: Ipv6Addr, slla: Option<Mac>) -> bool {
    let o = dst.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff] && slla.is_none()
}
