//! AF_PACKET raw sockets for the layer2 responder: the only `unsafe` code of the crate.
//!
//! One socket per interface and protocol, bound to the interface's index and to one EtherType
//! (ARP, or IPv6 for Neighbor Discovery), with a classic BPF program attached in the kernel so
//! that only ARP requests / ICMPv6 Neighbor Solicitations wake the task, not every frame.
//! Binding to a protocol (instead of `ETH_P_ALL`) also keeps our own outgoing frames — for
//! example gratuitous ARP requests — out of the receive queue. The socket is non-blocking and
//! registered with tokio's reactor through `AsyncFd`.
//!
//! The socket is created with protocol 0, which receives nothing, and only bound to its
//! EtherType after the filter is attached: no unfiltered frame is ever queued.
//!
//! Sockets live in the network namespace of the thread that created them.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::mem;
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::responder::IfaceInfo;
use crate::wire::Mac;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// One classic BPF instruction (`struct sock_filter`), kept as plain data so the programs can be
/// checked by the unit tests' interpreter before the kernel runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

/// `BPF_LD | BPF_H | BPF_ABS`: load the big-endian 16-bit word at offset `k`.
const LDH_ABS: u16 = 0x28;
/// `BPF_LD | BPF_B | BPF_ABS`: load the byte at offset `k`.
const LDB_ABS: u16 = 0x30;
/// `BPF_JMP | BPF_JEQ | BPF_K`: if A == k skip `jt` else skip `jf`.
const JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K`: accept `k` bytes (0 = drop).
const RET_K: u16 = 0x06;
/// Bytes of an accepted frame to queue: more than any ARP or NS frame.
const ACCEPT: u32 = 0xffff;

/// Accepts Ethernet ARP frames with opcode 1 (request).
pub const ARP_REQUEST_FILTER: [BpfInsn; 6] = [
    insn(LDH_ABS, 0, 0, 12),   // A = EtherType
    insn(JEQ_K, 0, 3, 0x0806), // ARP? else drop
    insn(LDH_ABS, 0, 0, 20),   // A = ARP opcode (14 + 6)
    insn(JEQ_K, 0, 1, 1),      // request? else drop
    insn(RET_K, 0, 0, ACCEPT),
    insn(RET_K, 0, 0, 0),
];

/// Accepts untagged IPv6 frames whose next header is ICMPv6 and whose ICMPv6 type is 135
/// (Neighbor Solicitation). NSs behind extension headers are not sent by real stacks.
pub const NEIGHBOR_SOLICIT_FILTER: [BpfInsn; 8] = [
    insn(LDH_ABS, 0, 0, 12),   // A = EtherType
    insn(JEQ_K, 0, 5, 0x86dd), // IPv6? else drop
    insn(LDB_ABS, 0, 0, 20),   // A = next header (14 + 6)
    insn(JEQ_K, 0, 3, 58),     // ICMPv6? else drop
    insn(LDB_ABS, 0, 0, 54),   // A = ICMPv6 type (14 + 40)
    insn(JEQ_K, 0, 1, 135),    // Neighbor Solicitation? else drop
    insn(RET_K, 0, 0, ACCEPT),
    insn(RET_K, 0, 0, 0),
];

/// What a socket receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listen {
    ArpRequests,
    NeighborSolicits,
}

impl Listen {
    fn ethertype(self) -> u16 {
        match self {
            Listen::ArpRequests => ETH_P_ARP,
            Listen::NeighborSolicits => ETH_P_IPV6,
        }
    }

    /// The kernel filter for this kind of socket.
    pub fn filter(self) -> &'static [BpfInsn] {
        match self {
            Listen::ArpRequests => &ARP_REQUEST_FILTER,
            Listen::NeighborSolicits => &NEIGHBOR_SOLICIT_FILTER,
        }
    }
}

/// A raw Ethernet socket on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: AsyncFd<Socket>,
    ifindex: u32,
    listen: Listen,
}

impl PacketSocket {
    /// Opens a socket on interface `ifindex` receiving what `listen` says. Must be called from
    /// within a tokio runtime; needs `CAP_NET_RAW`.
    pub fn open(ifindex: u32, listen: Listen) -> io::Result<PacketSocket> {
        // Protocol 0: the socket receives nothing until `bind` names a protocol.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        let program: Vec<SockFilter> = listen
            .filter()
            .iter()
            .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
            .collect();
        socket.attach_filter(&program)?;
        bind_to_interface(socket.as_raw_fd(), ifindex, listen.ethertype())?;
        socket.set_nonblocking(true)?;
        // SAFETY: `socket` owns its file descriptor, which stays open and unchanged until the
        // `AsyncFd` (which takes ownership of the `Socket`) is dropped.
        let fd = unsafe { AsyncFd::register(socket) }?;
        Ok(PacketSocket {
            fd,
            ifindex,
            listen,
        })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn listen(&self) -> Listen {
        self.listen
    }

    /// Receives one frame into `buf` (give it at least the interface MTU + 14 bytes; a longer
    /// frame is truncated) and returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one complete Ethernet frame (header included) out of the bound interface.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| fd.get_ref().write(frame)) {
                Ok(Ok(sent)) if sent == frame.len() => return Ok(()),
                Ok(Ok(sent)) => {
                    return Err(io::Error::other(format!(
                        "short send: {sent} of {} bytes",
                        frame.len()
                    )));
                }
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
    }

    /// Joins a link-layer multicast group (for NDP: the solicited-node MAC of each announced
    /// IPv6 address), so that NICs which filter multicast deliver those frames.
    pub fn join_multicast(&self, mac: Mac) -> io::Result<()> {
        self.membership(libc::PACKET_ADD_MEMBERSHIP, mac)
    }

    /// Leaves a group joined with [`PacketSocket::join_multicast`].
    pub fn leave_multicast(&self, mac: Mac) -> io::Result<()> {
        self.membership(libc::PACKET_DROP_MEMBERSHIP, mac)
    }

    fn membership(&self, operation: libc::c_int, mac: Mac) -> io::Result<()> {
        let mut address = [0u8; 8];
        address[..6].copy_from_slice(&mac.0);
        let request = libc::packet_mreq {
            mr_ifindex: ifindex_as_c_int(self.ifindex)?,
            mr_type: libc::PACKET_MR_MULTICAST as libc::c_ushort,
            mr_alen: 6,
            mr_address: address,
        };
        // SAFETY: the fd is open (owned by `self.fd`); `request` is a valid `packet_mreq` that
        // outlives the call, and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                operation,
                (&raw const request).cast::<libc::c_void>(),
                socklen_of::<libc::packet_mreq>(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

fn bind_to_interface(fd: RawFd, ifindex: u32, ethertype: u16) -> io::Result<()> {
    // SAFETY: `sockaddr_ll` is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = ifindex_as_c_int(ifindex)?;
    // SAFETY: `fd` is an open AF_PACKET socket; `addr` is a valid `sockaddr_ll` that outlives the
    // call, and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast::<libc::sockaddr>(),
            socklen_of::<libc::sockaddr_ll>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn ifindex_as_c_int(ifindex: u32) -> io::Result<libc::c_int> {
    libc::c_int::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"))
}

fn socklen_of<T>() -> libc::socklen_t {
    // The structures passed here are a few dozen bytes.
    mem::size_of::<T>() as libc::socklen_t
}

/// Looks up an interface's index and MAC in the calling thread's network namespace (not through
/// `/sys`, which shows the namespace sysfs was mounted in).
pub fn lookup_iface(name: &str) -> io::Result<IfaceInfo> {
    let c_name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    if c_name.as_bytes_with_nul().len() > libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // Any socket of the namespace can answer SIOCGIFHWADDR.
    let probe = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(c_name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the probe socket is open; `request` is a valid `ifreq` with a NUL-terminated name
    // (checked length above, zero-filled), which the kernel fills in.
    let rc = unsafe { libc::ioctl(probe.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut request) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds `ifru_hwaddr`.
    let hwaddr = unsafe { request.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(hwaddr.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok(IfaceInfo {
        name: name.to_owned(),
        index,
        mac: Mac(mac),
    })
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::build::{
        GratuitousArpForm, arp_reply, arp_request, gratuitous_arp, neighbor_solicit, unsolicited_na,
    };
    use crate::wire::{EtherType, EthernetFrame, solicited_node};
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Runs the subset of classic BPF the programs use, with the kernel's semantics: a load past
    /// the end of the packet drops it.
    fn run_bpf(program: &[BpfInsn], packet: &[u8]) -> u32 {
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        while let Some(i) = program.get(pc) {
            let at = i.k as usize;
            pc += 1;
            match i.code {
                LDH_ABS => match packet.get(at..at + 2) {
                    Some(word) => acc = u32::from(u16::from_be_bytes([word[0], word[1]])),
                    None => return 0,
                },
                LDB_ABS => match packet.get(at) {
                    Some(byte) => acc = u32::from(*byte),
                    None => return 0,
                },
                JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                RET_K => return i.k,
                other => panic!("opcode {other:#x} not modelled"),
            }
        }
        panic!("program fell off the end");
    }

    const MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xc8]);

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn ns() -> Vec<u8> {
        let group = solicited_node(v6("2001:db8:2::240"));
        neighbor_solicit(
            MAC,
            Mac::ipv6_multicast(group),
            v6("2001:db8:2::200"),
            group,
            v6("2001:db8:2::240"),
            Some(MAC),
        )
    }

    #[test]
    fn arp_filter_accepts_only_requests() {
        let vip = Ipv4Addr::new(192, 0, 2, 240);
        let client = Ipv4Addr::new(192, 0, 2, 200);
        let accepted = |frame: &[u8]| run_bpf(&ARP_REQUEST_FILTER, frame) != 0;
        assert!(accepted(&arp_request(MAC, client, vip)));
        assert!(accepted(&gratuitous_arp(
            MAC,
            vip,
            GratuitousArpForm::Request
        )));
        assert!(!accepted(&gratuitous_arp(
            MAC,
            vip,
            GratuitousArpForm::Reply
        )));
        assert!(!accepted(&arp_reply(MAC, vip, MAC, client)));
        assert!(!accepted(&ns()));
        assert!(!accepted(&arp_request(MAC, client, vip)[..20]));
        let mut not_arp = arp_request(MAC, client, vip);
        EthernetFrame::new_unchecked(&mut not_arp[..]).set_ethertype(EtherType::Ipv4);
        assert!(!accepted(&not_arp));
    }

    #[test]
    fn ndp_filter_accepts_only_neighbor_solicits() {
        let accepted = |frame: &[u8]| run_bpf(&NEIGHBOR_SOLICIT_FILTER, frame) != 0;
        assert!(accepted(&ns()));
        assert!(!accepted(&unsolicited_na(MAC, v6("2001:db8:2::240"))));
        assert!(!accepted(&arp_request(
            MAC,
            Ipv4Addr::new(192, 0, 2, 200),
            Ipv4Addr::new(192, 0, 2, 240)
        )));
        assert!(!accepted(&ns()[..54]));
        let mut udp = ns();
        udp[20] = 17;
        assert!(!accepted(&udp));
    }

    #[test]
    fn filters_match_the_kernel_encoding_in_the_reference() {
        // rust-deps.md §3, tested there against a real kernel.
        let arp: Vec<(u16, u8, u8, u32)> = ARP_REQUEST_FILTER
            .iter()
            .map(|i| (i.code, i.jt, i.jf, i.k))
            .collect();
        assert_eq!(
            arp,
            [
                (0x28, 0, 0, 12),
                (0x15, 0, 3, 0x0806),
                (0x28, 0, 0, 20),
                (0x15, 0, 1, 1),
                (0x06, 0, 0, 0xffff),
                (0x06, 0, 0, 0)
            ]
        );
        let ndp: Vec<(u16, u8, u8, u32)> = NEIGHBOR_SOLICIT_FILTER
            .iter()
            .map(|i| (i.code, i.jt, i.jf, i.k))
            .collect();
        assert_eq!(
            ndp,
            [
                (0x28, 0, 0, 12),
                (0x15, 0, 5, 0x86dd),
                (0x30, 0, 0, 20),
                (0x15, 0, 3, 58),
                (0x30, 0, 0, 54),
                (0x15, 0, 1, 135),
                (0x06, 0, 0, 0xffff),
                (0x06, 0, 0, 0)
            ]
        );
    }

    #[test]
    fn lookup_of_a_missing_interface_fails() {
        assert!(lookup_iface("fsp-no-such-if").is_err());
        assert!(lookup_iface("bad\0name").is_err());
        assert!(lookup_iface("a-name-longer-than-ifnamsiz").is_err());
    }

    #[test]
    fn loopback_lookup_works() {
        let lo = lookup_iface("lo").unwrap();
        assert_eq!(lo.mac, Mac::ZERO);
        assert!(lo.index > 0);
    }
}
