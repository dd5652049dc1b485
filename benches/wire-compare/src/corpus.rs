//! The inputs: the fuzz seeds, the frames of the speaker's unit tests, and seeded random and
//! mutated frames. Frames are assembled here byte by byte, independently of all three
//! implementations.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::common::*;

/// A frame and where it came from (the class used in the report).
pub struct Case {
    pub origin: String,
    pub frame: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Frame assembly

pub fn eth_header(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(90);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

pub fn arp_payload(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x00, 0x01, 0x08, 0x00, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa.octets());
    p
}

pub fn arp_frame(dst: Mac, src: Mac, payload: &[u8]) -> Vec<u8> {
    let mut f = eth_header(dst, src, ETHERTYPE_ARP);
    f.extend_from_slice(payload);
    f
}

/// RFC 4443 §2.3 checksum over the RFC 8200 §8.1 pseudo header, for `msg` with its checksum
/// field taken as zero.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            sum += if i % 2 == 0 {
                u64::from(*b) << 8
            } else {
                u64::from(*b)
            };
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    let mut zeroed = msg.to_vec();
    if zeroed.len() >= 4 {
        zeroed[2] = 0;
        zeroed[3] = 0;
    }
    add(&zeroed);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn fix_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &mut [u8]) {
    if msg.len() >= 4 {
        let c = icmpv6_checksum(src, dst, msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

/// Ethernet + IPv6 (payload length = `msg.len()`) + `msg`.
pub fn ipv6_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    msg: &[u8],
) -> Vec<u8> {
    let mut f = eth_header(dst_mac, src_mac, ETHERTYPE_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[NEXT_HEADER_ICMPV6, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(msg);
    f
}

/// An NS (or any NDP-shaped message) body: type, code, checksum 0, reserved/flags, target,
/// options.
pub fn nd_msg(msg_type: u8, flags: u8, target: Ipv6Addr, options: &[u8]) -> Vec<u8> {
    let mut m = vec![msg_type, 0, 0, 0, flags, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(options);
    m
}

pub fn lladdr_option(opt_type: u8, mac: Mac) -> Vec<u8> {
    let mut o = vec![opt_type, 1];
    o.extend_from_slice(&mac);
    o
}

/// A checksummed NS frame.
pub fn ns_frame(
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    options: &[u8],
) -> Vec<u8> {
    let mut msg = nd_msg(TYPE_NEIGHBOR_SOLICIT, 0, target, options);
    fix_checksum(src, dst, &mut msg);
    ipv6_frame(dst_mac, CLIENT_MAC, src, dst, 255, &msg)
}

fn group() -> Ipv6Addr {
    solicited_node(VIP6)
}

pub fn multicast_ns(options: &[u8]) -> Vec<u8> {
    ns_frame(
        ipv6_multicast_mac(group()),
        CLIENT6,
        group(),
        VIP6,
        options,
    )
}

/// Recomputes the checksum of the ICMPv6 message of an IPv6 frame, over the bytes the IPv6
/// payload length announces (clamped to the frame), if the frame is long enough.
pub fn refix_frame_checksum(frame: &mut [u8]) {
    if frame.len() < 58 {
        return;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
    let len = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    let end = (54 + len).min(frame.len());
    fix_checksum(src, dst, &mut frame[54..end]);
}

// ---------------------------------------------------------------------------------------------
// (i) The fuzz seeds, fed the way the fuzz targets feed them.

pub fn seeds(root: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for (target, dir) in [("arp", root.join("arp")), ("ndisc", root.join("ndisc"))] {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let data = std::fs::read(&path).unwrap();
            let name = format!("seed {target}/{}", path.file_name().unwrap().to_string_lossy());
            cases.extend(seed_cases(target, &name, &data));
        }
    }
    cases
}

/// The frames the fuzz target `target` builds from one input (`speaker/fuzz/fuzz_targets`).
pub fn seed_cases(target: &str, name: &str, data: &[u8]) -> Vec<Case> {
    let mut cases = vec![Case {
        origin: format!("{name} as a whole frame"),
        frame: data.to_vec(),
    }];
    match target {
        "arp" => cases.push(Case {
            origin: format!("{name} in a broadcast ARP frame"),
            frame: arp_frame(BROADCAST, CLIENT_MAC, data),
        }),
        _ => {
            if let Some((control, message)) = data.split_first() {
                let src = if control & 1 == 1 {
                    Ipv6Addr::UNSPECIFIED
                } else {
                    CLIENT6
                };
                let mut fixed = message.to_vec();
                fix_checksum(src, group(), &mut fixed);
                cases.push(Case {
                    origin: format!("{name} in an IPv6 frame, checksum fixed"),
                    frame: ipv6_frame(
                        ipv6_multicast_mac(group()),
                        CLIENT_MAC,
                        src,
                        group(),
                        255,
                        &fixed,
                    ),
                });
                cases.push(Case {
                    origin: format!("{name} in an IPv6 frame, checksum as is"),
                    frame: ipv6_frame(
                        ipv6_multicast_mac(group()),
                        CLIENT_MAC,
                        src,
                        group(),
                        255,
                        message,
                    ),
                });
            }
        }
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// (ii) The frames of the speaker's unit tests (speaker/src/wire/*.rs, layer2/responder.rs).

/// `arp.rs` PACKET_BYTES: "who-has 192.0.2.240 tell 192.0.2.200" from 02:00:00:00:00:c8.
pub const ARP_PACKET_BYTES: [u8; 28] = [
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0xc8, 0xc0, 0x00,
    0x02, 0xc8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0xf0,
];
/// `ethernet.rs` FRAME_BYTES.
pub const ETH_FRAME_BYTES: [u8; 18] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0xc8, 0x08, 0x06, 0xaa, 0xbb,
    0xcc, 0xdd,
];
/// `ipv6.rs` PACKET_BYTES (ICMPv6 with 4 payload bytes).
pub const IPV6_PACKET_BYTES: [u8; 44] = [
    0x60, 0x00, 0x00, 0x00, 0x00, 0x04, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x02, 0x40, 0xde, 0xad, 0xbe, 0xef,
];
/// `icmpv6.rs` NS_BYTES: NS for 2001:db8:2::240 with SLLA 02:00:00:00:00:c8, checksum 0x14e1
/// for 2001:db8:2::200 -> ff02::1:ff00:240.
pub const NS_BYTES: [u8; 32] = [
    0x87, 0x00, 0x14, 0xe1, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x40, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0xc8,
];
/// `ndisc.rs` NA_BYTES: solicited NA (S|O), TLLA 02:00:00:00:00:f0, checksum 0x8302 for
/// 2001:db8:2::240 -> 2001:db8:2::200.
pub const NA_BYTES: [u8; 32] = [
    0x88, 0x00, 0x83, 0x02, 0x60, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x40, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0xf0,
];

pub fn unit_test_frames() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut push = |origin: &str, frame: Vec<u8>| {
        cases.push(Case {
            origin: format!("unit {origin}"),
            frame,
        })
    };
    // The NS_BYTES addresses: ff02::1:ff00:240 is the solicited-node group of VIP6.
    let ns_dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x240);
    let na_src = VIP6;
    let wrap_ns = |msg: &[u8]| {
        ipv6_frame(ipv6_multicast_mac(ns_dst), CLIENT_MAC, CLIENT6, ns_dst, 255, msg)
    };
    let wrap_ns_fixed = |msg: &[u8]| {
        let mut m = msg.to_vec();
        fix_checksum(CLIENT6, ns_dst, &mut m);
        wrap_ns(&m)
    };

    // arp.rs
    push("arp PACKET_BYTES", arp_frame(BROADCAST, CLIENT_MAC, &ARP_PACKET_BYTES));
    let mut padded = ARP_PACKET_BYTES.to_vec();
    padded.resize(46, 0);
    push("arp padded to 46", arp_frame(BROADCAST, CLIENT_MAC, &padded));
    for (at, value) in [(1, 6u8), (2, 0x86), (3, 0xdd), (4, 8), (5, 16)] {
        let mut bytes = ARP_PACKET_BYTES.to_vec();
        bytes[at] = value;
        bytes.resize(64, 0);
        push(&format!("arp patch {at}={value:#x}"), arp_frame(BROADCAST, CLIENT_MAC, &bytes));
    }
    let mut lens = ARP_PACKET_BYTES;
    lens[4] = 255;
    lens[5] = 255;
    push("arp hlen/plen 255", arp_frame(BROADCAST, CLIENT_MAC, &lens));
    let mut op = ARP_PACKET_BYTES;
    op[7] = 9;
    push("arp operation 9", arp_frame(BROADCAST, CLIENT_MAC, &op));
    for len in 0..ARP_PACKET_BYTES.len() {
        push(
            "arp truncation",
            arp_frame(BROADCAST, CLIENT_MAC, &ARP_PACKET_BYTES[..len]),
        );
    }

    // ethernet.rs
    for len in 0..=ETH_FRAME_BYTES.len() {
        push("ethernet FRAME_BYTES truncation", ETH_FRAME_BYTES[..len].to_vec());
    }

    // ipv6.rs
    let mut f = eth_header(ipv6_multicast_mac(ns_dst), CLIENT_MAC, ETHERTYPE_IPV6);
    f.extend_from_slice(&IPV6_PACKET_BYTES);
    push("ipv6 PACKET_BYTES", f.clone());
    let mut p = f.clone();
    p.extend_from_slice(&[0; 8]);
    push("ipv6 PACKET_BYTES padded", p);
    let mut v4 = f.clone();
    v4[14] = 0x45;
    push("ipv6 version 4", v4);
    for len in 0..IPV6_PACKET_BYTES.len() {
        push("ipv6 truncation", f[..14 + len].to_vec());
    }

    // icmpv6.rs / ndisc.rs
    push("icmpv6 NS_BYTES", wrap_ns(&NS_BYTES));
    for at in 0..NS_BYTES.len() {
        let mut b = NS_BYTES;
        b[at] ^= 0x01;
        push("icmpv6 NS_BYTES bit flip (checksum left)", wrap_ns(&b));
    }
    for len in 0..NS_BYTES.len() {
        push("ndisc NS truncation (checksum fixed)", wrap_ns_fixed(&NS_BYTES[..len]));
    }
    let mut zero = NS_BYTES;
    zero[25] = 0;
    push("ndisc zero-length option", wrap_ns_fixed(&zero));
    let mut past = NS_BYTES.to_vec();
    past[25] = 2;
    push("ndisc option past the end", wrap_ns_fixed(&past));
    past.truncate(25);
    push("ndisc lone option type byte", wrap_ns_fixed(&past));
    let mut unknown = NS_BYTES[..24].to_vec();
    unknown.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
    unknown.extend_from_slice(&NS_BYTES[24..]);
    unknown.extend_from_slice(&[200, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    push("ndisc unknown options skipped", wrap_ns_fixed(&unknown));
    let mut tlla = NS_BYTES;
    tlla[24] = 2;
    push("ndisc target lladdr in a solicit", wrap_ns_fixed(&tlla));
    let mut code = NS_BYTES;
    code[1] = 1;
    push("ndisc code 1", wrap_ns_fixed(&code));
    let mut mcast = NS_BYTES;
    mcast[8] = 0xff;
    push("ndisc multicast target", wrap_ns_fixed(&mcast));
    let mut rs = NS_BYTES;
    rs[0] = 133;
    push("ndisc router solicit type", wrap_ns_fixed(&rs));
    push(
        "ndisc NA_BYTES",
        ipv6_frame(OUR_MAC, CLIENT_MAC, na_src, CLIENT6, 255, &NA_BYTES),
    );

    // layer2/responder.rs
    let req = |dst: Mac, tpa: Ipv4Addr| {
        arp_frame(dst, CLIENT_MAC, &arp_payload(ARP_REQUEST, CLIENT_MAC, CLIENT4, [0; 6], tpa))
    };
    push("responder broadcast ARP request", req(BROADCAST, VIP4));
    push("responder unicast ARP request to us", req(OUR_MAC, VIP4));
    push(
        "responder ARP request to another MAC",
        req([2, 0, 0, 0, 0, 0x99], VIP4),
    );
    push("responder ARP for a foreign IP", req(BROADCAST, Ipv4Addr::new(192, 0, 2, 9)));
    let other = [0x02, 0, 0, 0, 0, 0x77];
    push(
        "responder gratuitous request",
        arp_frame(BROADCAST, other, &arp_payload(1, other, VIP4, [0; 6], VIP4)),
    );
    push(
        "responder gratuitous reply",
        arp_frame(BROADCAST, other, &arp_payload(2, other, VIP4, other, VIP4)),
    );
    push(
        "responder ARP reply to us",
        arp_frame(OUR_MAC, CLIENT_MAC, &arp_payload(2, CLIENT_MAC, CLIENT4, OUR_MAC, VIP4)),
    );
    push(
        "responder ARP probe",
        arp_frame(
            BROADCAST,
            CLIENT_MAC,
            &arp_payload(1, CLIENT_MAC, Ipv4Addr::UNSPECIFIED, [0; 6], VIP4),
        ),
    );
    push(
        "responder ARP multicast sender",
        arp_frame(BROADCAST, CLIENT_MAC, &arp_payload(1, [0xff; 6], CLIENT4, [0; 6], VIP4)),
    );
    push(
        "responder multicast frame source",
        arp_frame(
            BROADCAST,
            [1, 0, 0, 0, 0, 1],
            &arp_payload(1, CLIENT_MAC, CLIENT4, [0; 6], VIP4),
        ),
    );
    let slla = lladdr_option(1, [0x02, 0, 0, 0, 0, 0xc9]);
    push("responder NS with SLLA", multicast_ns(&slla));
    push(
        "responder unicast NUD probe without SLLA",
        ns_frame(OUR_MAC, CLIENT6, VIP6, VIP6, &[]),
    );
    push(
        "responder DAD probe",
        ns_frame(
            ipv6_multicast_mac(group()),
            Ipv6Addr::UNSPECIFIED,
            group(),
            VIP6,
            &[],
        ),
    );
    push(
        "responder DAD probe with SLLA",
        ns_frame(
            ipv6_multicast_mac(group()),
            Ipv6Addr::UNSPECIFIED,
            group(),
            VIP6,
            &lladdr_option(1, CLIENT_MAC),
        ),
    );
    push(
        "responder DAD probe to all-nodes",
        ns_frame(
            ipv6_multicast_mac(ALL_NODES),
            Ipv6Addr::UNSPECIFIED,
            ALL_NODES,
            VIP6,
            &[],
        ),
    );
    let mut hop = multicast_ns(&lladdr_option(1, CLIENT_MAC));
    hop[21] = 254;
    push("responder NS hop limit 254", hop);
    push(
        "responder NS for a foreign IP",
        ns_frame(
            ipv6_multicast_mac(group()),
            CLIENT6,
            group(),
            Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x999),
            &[],
        ),
    );
    let mut na = nd_msg(136, 0x60, VIP6, &lladdr_option(2, CLIENT_MAC));
    fix_checksum(CLIENT6, VIP6, &mut na);
    push("responder NA", ipv6_frame(OUR_MAC, CLIENT_MAC, CLIENT6, VIP6, 255, &na));
    let mut bad = multicast_ns(&lladdr_option(1, CLIENT_MAC));
    let last = bad.len() - 1;
    bad[last] ^= 1;
    push("responder NS corrupted checksum", bad);
    for valid in [req(BROADCAST, VIP4), multicast_ns(&lladdr_option(1, CLIENT_MAC))] {
        for len in 0..valid.len() {
            push("responder truncation of a request", valid[..len].to_vec());
        }
    }
    let mut v4 = req(BROADCAST, VIP4);
    v4[12..14].copy_from_slice(&[0x08, 0x00]);
    push("responder ethertype IPv4", v4);

    cases
}

// ---------------------------------------------------------------------------------------------
// (iii) Random and mutated frames.

/// SplitMix64: small, seedable, good enough to spread mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn interesting(&mut self) -> u8 {
        const VALUES: [u8; 12] = [0, 1, 2, 3, 4, 6, 8, 0x20, 0x21, 0x7f, 0x80, 0xff];
        VALUES[self.below(VALUES.len())]
    }
}

/// The valid requests mutation starts from.
pub fn templates() -> Vec<(&'static str, Vec<u8>)> {
    let req = arp_payload(ARP_REQUEST, CLIENT_MAC, CLIENT4, [0; 6], VIP4);
    let mut padded_arp = arp_frame(BROADCAST, CLIENT_MAC, &req);
    padded_arp.resize(60, 0);
    let slla = lladdr_option(1, CLIENT_MAC);
    let mut opts = vec![14, 1, 1, 2, 3, 4, 5, 6];
    opts.extend_from_slice(&slla);
    opts.extend_from_slice(&[200, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut padded_ns = ns_frame(OUR_MAC, CLIENT6, VIP6, VIP6, &[]);
    padded_ns.extend_from_slice(&[0; 10]);
    vec![
        ("ARP request", arp_frame(BROADCAST, CLIENT_MAC, &req)),
        ("ARP request, padded", padded_arp),
        (
            "ARP probe",
            arp_frame(
                BROADCAST,
                CLIENT_MAC,
                &arp_payload(1, CLIENT_MAC, Ipv4Addr::UNSPECIFIED, [0; 6], VIP4),
            ),
        ),
        ("NS with SLLA", multicast_ns(&slla)),
        ("NS without option", multicast_ns(&[])),
        ("NS unicast NUD, padded", padded_ns),
        (
            "NS DAD",
            ns_frame(
                ipv6_multicast_mac(group()),
                Ipv6Addr::UNSPECIFIED,
                group(),
                VIP6,
                &[],
            ),
        ),
        ("NS with three options", multicast_ns(&opts)),
    ]
}

/// One mutated frame: 1..=4 mutations of a template, then (usually) the ICMPv6 checksum fixed
/// over what the IPv6 length announces, so that the option parsers are reached.
pub fn mutate(rng: &mut Rng, template: &[u8]) -> (Vec<u8>, Vec<&'static str>) {
    let mut f = template.to_vec();
    let mut applied = Vec::new();
    for _ in 0..1 + rng.below(4) {
        match rng.below(12) {
            0 => {
                f.truncate(rng.below(f.len() + 1));
                applied.push("truncate");
            }
            1 | 2 => {
                if !f.is_empty() {
                    let at = rng.below(f.len());
                    f[at] ^= 1 << rng.below(8);
                    applied.push("bit flip");
                }
            }
            3 => {
                if !f.is_empty() {
                    let at = rng.below(f.len());
                    f[at] = rng.interesting();
                    applied.push("interesting byte");
                }
            }
            4 => {
                // IPv6 payload length lies (or ARP hlen/plen, for ARP frames).
                if f.len() >= 20 && f[12..14] == [0x86, 0xdd] {
                    let len = u16::from_be_bytes([f[18], f[19]]);
                    let new = match rng.below(3) {
                        0 => len.wrapping_add(1 + rng.below(16) as u16),
                        1 => len.saturating_sub(1 + rng.below(16) as u16),
                        _ => rng.next_u64() as u16,
                    };
                    f[18..20].copy_from_slice(&new.to_be_bytes());
                    applied.push("ipv6 length lies");
                } else if f.len() >= 20 {
                    f[18 + rng.below(2)] = rng.interesting();
                    applied.push("arp hlen/plen");
                }
            }
            5 | 6 => {
                // An option length field of 0, huge, or off by a little.
                if f.len() > 79 && f[12..14] == [0x86, 0xdd] {
                    let slots: Vec<usize> = (78..f.len() - 1).step_by(8).collect();
                    let at = slots[rng.below(slots.len())] + 1;
                    f[at] = match rng.below(5) {
                        0 => 0,
                        1 => 0xff,
                        2 => 32 + rng.below(8) as u8,
                        3 => 2,
                        _ => rng.byte(),
                    };
                    applied.push("option length");
                }
            }
            7 => {
                // Append an option with an arbitrary type and length and 0..24 data bytes.
                let opt_type = match rng.below(4) {
                    0 => 1,
                    1 => 2,
                    2 => 3 + rng.below(3) as u8,
                    _ => rng.byte(),
                };
                let units = match rng.below(4) {
                    0 => 0,
                    1 => 1,
                    2 => 2,
                    _ => rng.byte(),
                };
                f.push(opt_type);
                f.push(units);
                for _ in 0..rng.below(24) {
                    f.push(rng.byte());
                }
                if f.len() >= 54 && f[12..14] == [0x86, 0xdd] && rng.chance(2) {
                    // Make the IPv6 length cover it.
                    let len = (f.len() - 54) as u16;
                    f[18..20].copy_from_slice(&len.to_be_bytes());
                }
                applied.push("append option");
            }
            8 => {
                for _ in 0..1 + rng.below(20) {
                    f.push(if rng.chance(2) { 0 } else { rng.byte() });
                }
                applied.push("append padding");
            }
            9 => {
                if f.len() > 55 {
                    f[54 + rng.below(2)] = match rng.below(4) {
                        0 => 135,
                        1 => 136,
                        2 => 133 + rng.below(5) as u8,
                        _ => rng.byte(),
                    };
                    applied.push("icmp type/code");
                }
            }
            10 => {
                // Duplicate or differing link-layer options.
                if f.len() >= 78 && f[12..14] == [0x86, 0xdd] {
                    let mut mac = [0x02, 0, 0, 0, 0, rng.byte()];
                    if rng.chance(4) {
                        mac[0] = 0x01;
                    }
                    f.extend_from_slice(&lladdr_option(1 + rng.below(2) as u8, mac));
                    let len = (f.len() - 54) as u16;
                    f[18..20].copy_from_slice(&len.to_be_bytes());
                    applied.push("extra lladdr option");
                }
            }
            _ => {
                // Replace a few bytes of the addresses.
                if f.len() > 14 {
                    let at = 6 + rng.below(f.len() - 6);
                    f[at] = rng.byte();
                    applied.push("random byte");
                }
            }
        }
    }
    if f.len() >= 14 && f[12..14] == [0x86, 0xdd] && !rng.chance(4) {
        refix_frame_checksum(&mut f);
        applied.push("checksum fixed");
    }
    (f, applied)
}

/// A random frame: random bytes, sometimes with a plausible Ethernet header.
pub fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(120);
    let mut f: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    if f.len() >= 14 && rng.chance(2) {
        let dst = [BROADCAST, OUR_MAC, ipv6_multicast_mac(group())][rng.below(3)];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&CLIENT_MAC);
        let et = if rng.chance(2) {
            ETHERTYPE_ARP
        } else {
            ETHERTYPE_IPV6
        };
        f[12..14].copy_from_slice(&et.to_be_bytes());
        if et == ETHERTYPE_ARP && f.len() >= 22 && rng.chance(2) {
            f[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
            f[20] = 0;
            f[21] = 1 + rng.below(2) as u8;
        }
        if et == ETHERTYPE_IPV6 && f.len() >= 58 && rng.chance(2) {
            f[14] = 0x60;
            let plen = (f.len() - 54) as u16;
            f[18..20].copy_from_slice(&plen.to_be_bytes());
            f[20] = NEXT_HEADER_ICMPV6;
            f[21] = 255;
            f[54] = 135;
            f[55] = 0;
            refix_frame_checksum(&mut f);
        }
    }
    f
}

// ---------------------------------------------------------------------------------------------
// Targeted cases for the edge classes the random run turns up.

pub fn targeted() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut push = |origin: &str, frame: Vec<u8>| {
        cases.push(Case {
            origin: format!("targeted {origin}"),
            frame,
        })
    };
    let slla = lladdr_option(1, CLIENT_MAC);

    // A checksum whose correct value is 0x0000, sent as 0xffff (the other one's-complement zero).
    let mut opts = vec![14, 1, 0, 0, 0, 0, 0, 0];
    let mut msg = nd_msg(TYPE_NEIGHBOR_SOLICIT, 0, VIP6, &opts);
    let c = icmpv6_checksum(CLIENT6, group(), &msg);
    opts[2..4].copy_from_slice(&c.to_be_bytes());
    msg = nd_msg(TYPE_NEIGHBOR_SOLICIT, 0, VIP6, &opts);
    assert_eq!(icmpv6_checksum(CLIENT6, group(), &msg), 0);
    let mut ffff = msg.clone();
    ffff[2..4].copy_from_slice(&[0xff, 0xff]);
    push(
        "checksum 0xffff for 0x0000",
        ipv6_frame(ipv6_multicast_mac(group()), CLIENT_MAC, CLIENT6, group(), 255, &ffff),
    );
    push(
        "checksum 0x0000 (canonical)",
        ipv6_frame(ipv6_multicast_mac(group()), CLIENT_MAC, CLIENT6, group(), 255, &msg),
    );

    // A source link-layer option of length 2 (16 bytes): not Ethernet's length 1 (RFC 2464 §6).
    let mut long = vec![1, 2];
    long.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xc9]);
    long.extend_from_slice(&[0; 8]);
    push("SLLA of length 2", multicast_ns(&long));
    // Two SLLAs.
    let mut two = slla.clone();
    two.extend_from_slice(&lladdr_option(1, [0x02, 0, 0, 0, 0, 0xc9]));
    push("two SLLAs", multicast_ns(&two));
    // A Prefix Information option (type 3) of length 1 in an NS: meaningless there, but is it
    // fatal?
    let mut prefix = slla.clone();
    prefix.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
    push("short prefix-information option", multicast_ns(&prefix));
    let mut redirect = slla.clone();
    redirect.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0, 0]);
    push("short redirected-header option", multicast_ns(&redirect));
    // An option of length 33 (264 bytes), present in full: u8 overflow in length * 8.
    let mut big = slla.clone();
    big.push(200);
    big.push(33);
    big.extend_from_slice(&[0; 262]);
    push("unknown option of length 33, present", multicast_ns(&big));
    let mut big32 = slla.clone();
    big32.push(200);
    big32.push(32);
    big32.extend_from_slice(&[0; 254]);
    push("unknown option of length 32, present", multicast_ns(&big32));
    let mut huge = slla.clone();
    huge.extend_from_slice(&[200, 255, 0, 0, 0, 0, 0, 0]);
    push("option length 255, 8 bytes present", multicast_ns(&huge));
    // IPv6 length larger than the frame, checksum over what is there.
    let mut lying = multicast_ns(&slla);
    lying[18..20].copy_from_slice(&40u16.to_be_bytes());
    push("ipv6 length 40, 32 present", lying);
    // IPv6 length shorter than the message: the SLLA is Ethernet padding.
    let mut short = multicast_ns(&slla);
    short[18..20].copy_from_slice(&24u16.to_be_bytes());
    refix_frame_checksum(&mut short);
    push("ipv6 length 24, SLLA after it", short);
    // The SLLA is the multicast address: reply would go to a group.
    push("SLLA multicast", multicast_ns(&lladdr_option(1, [0x01, 0, 0x5e, 0, 0, 1])));
    // The target link-layer option (type 2) of length 2 in an NS.
    let mut tlla2 = vec![2, 2];
    tlla2.extend_from_slice(&[0; 14]);
    push("TLLA of length 2 in an NS", multicast_ns(&tlla2));
    // Traffic class / flow label set.
    let mut tc = multicast_ns(&slla);
    tc[15] = 0xab;
    push("traffic class and flow label set", tc);
    // ARP with hlen 6 / plen 4 but hardware type IEEE 802 (6).
    let mut ieee = arp_frame(
        BROADCAST,
        CLIENT_MAC,
        &arp_payload(1, CLIENT_MAC, CLIENT4, [0; 6], VIP4),
    );
    ieee[15] = 6;
    push("ARP hardware type 6", ieee);
    // ARP with hlen 8: the layout moves.
    let mut h8 = arp_frame(
        BROADCAST,
        CLIENT_MAC,
        &arp_payload(1, CLIENT_MAC, CLIENT4, [0; 6], VIP4),
    );
    h8[18] = 8;
    h8.resize(60, 0);
    push("ARP hlen 8, padded", h8);
    cases
}
