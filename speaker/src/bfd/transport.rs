//! BFD's UDP transport: the receive sockets one per port and family (RFC 5881 §4 single hop on
//! 3784, RFC 5883 §5 multihop on 4784), which read the TTL / hop limit of every datagram, and
//! the per-session send socket (a source port in 49152–65535, TTL 255).

use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

/// RFC 5881 §4: single-hop Control packets go to this port.
pub const SINGLE_HOP_PORT: u16 = 3784;
/// RFC 5883 §5: multihop Control packets go to this port.
pub const MULTI_HOP_PORT: u16 = 4784;
/// RFC 5881 §4: the source port of Control packets is in this range.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// RFC 5881 §5: single-hop packets are sent with TTL 255, and one received with less came
/// from farther than the link (GTSM, RFC 5082).
pub const TTL: u8 = 255;
/// A Control packet without authentication is 24 bytes; anything over this is not ours.
const MAX_DATAGRAM: usize = 512;

/// One received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub from: IpAddr,
    /// The IPv4 TTL or IPv6 hop limit it arrived with (`None`: the kernel did not say).
    pub ttl: Option<u8>,
    pub bytes: Vec<u8>,
}

/// A socket bound to one BFD port of one family, reading the TTL of what arrives.
#[derive(Debug)]
pub struct Listener {
    socket: AsyncFd<Socket>,
}

impl Listener {
    /// Binds `address` (the wildcard of a family, `0.0.0.0` or `::`, to take every packet) and
    /// `port`.
    pub fn bind(address: IpAddr, port: u16) -> io::Result<Listener> {
        let domain = if address.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if address.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        if address.is_ipv4() {
            setsockopt(&socket, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
        } else {
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
        }
        socket.bind(&SocketAddr::new(address, port).into())?;
        // SAFETY: `socket` owns its file descriptor, which stays open and unchanged until the
        // `AsyncFd` (which takes ownership of the `Socket`) is dropped.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|error| error.into_parts().1)?;
        Ok(Listener { socket })
    }

    /// The next datagram.
    pub async fn recv(&self) -> io::Result<Datagram> {
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|socket| receive(socket.get_ref())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn receive(socket: &Socket) -> io::Result<Datagram> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut control = nix::cmsg_space!(libc::c_int);
    // The message borrows `buf` through the I/O slice: take what it says, then read `buf`.
    let (from, ttl, len) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let message = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let mut ttl = None;
        for cmsg in message.cmsgs().map_err(io::Error::from)? {
            match cmsg {
                ControlMessageOwned::Ipv4Ttl(value) | ControlMessageOwned::Ipv6HopLimit(value) => {
                    ttl = u8::try_from(value).ok();
                }
                _ => {}
            }
        }
        let from = message
            .address
            .as_ref()
            .and_then(|address| {
                address
                    .as_sockaddr_in()
                    .map(|a| IpAddr::V4(a.ip()))
                    .or_else(|| address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
            })
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        (from, ttl, message.bytes)
    };
    Ok(Datagram {
        from: unmapped(from),
        ttl,
        bytes: buf[..len].to_vec(),
    })
}

/// An IPv4 peer seen through an IPv4-mapped IPv6 address is that IPv4 address.
fn unmapped(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The wildcard address of `peer`'s family.
pub fn any_address(peer: IpAddr) -> IpAddr {
    if peer.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

/// The socket one session sends from: bound to `local` (or the wildcard of the peer's family)
/// and a free port of [`SOURCE_PORTS`], TTL 255, connected to the peer's BFD port.
pub async fn sender(peer: SocketAddr, local: Option<IpAddr>, seed: u16) -> io::Result<UdpSocket> {
    let local = local.unwrap_or_else(|| any_address(peer.ip()));
    let domain = if peer.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let mut last_error = io::Error::other("no port tried");
    // Start at a seeded port and walk the range: two sessions rarely collide, and a port in
    // use is skipped.
    for attempt in 0..span {
        let offset = (u32::from(seed) + attempt) % span;
        let port = SOURCE_PORTS.start() + u16::try_from(offset).unwrap_or(0);
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if peer.is_ipv6() {
            socket.set_only_v6(true)?;
            socket.set_unicast_hops_v6(u32::from(TTL))?;
        } else {
            socket.set_ttl_v4(u32::from(TTL))?;
        }
        socket.set_nonblocking(true)?;
        match socket.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => {
                let socket = UdpSocket::from_std(socket.into())?;
                socket.connect(peer).await?;
                return Ok(socket);
            }
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => last_error = error,
            Err(error) => return Err(error),
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram sent over loopback arrives with its source address and the TTL it was sent
    /// with, which is what the GTSM check reads.
    #[tokio::test]
    async fn listener_reads_source_and_ttl() {
        let listener = Listener::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 0).unwrap();
        let port = listener
            .socket
            .get_ref()
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap()
            .port();
        let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let sender = sender(to, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), 7)
            .await
            .unwrap();
        let from_port = sender.local_addr().unwrap().port();
        assert!(SOURCE_PORTS.contains(&from_port), "{from_port}");
        sender.send(b"bfd").await.unwrap();
        let datagram = listener.recv().await.unwrap();
        assert_eq!(datagram.from, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(datagram.ttl, Some(TTL));
        assert_eq!(datagram.bytes, b"bfd");

        // A lower TTL is reported as such.
        let low = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        low.set_ttl(64).unwrap();
        low.send_to(b"far", to).unwrap();
        assert_eq!(listener.recv().await.unwrap().ttl, Some(64));
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(unmapped(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }
}
