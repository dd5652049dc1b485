//! The host's interfaces (in the speaker's network namespace) and which of them announce an IP.
//!
//! [`scan`] reads them with `getifaddrs` (per namespace, unlike `/sys` which shows the namespace
//! sysfs was mounted in), through `nix`'s safe wrapper; [`Changes`] is an rtnetlink subscription
//! to link and address events, so a change is seen at once rather than at the next periodic
//! rescan. [`select_for`] is the pure rule: the advertisement's interfaces if it names some, else
//! the usable interfaces with an address in the IP's subnet, else every usable interface.
//! Loopback is never used.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr as NetlinkAddr, TokioSocket};
use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::SockaddrStorage;

use crate::layer2::Interfaces;

/// An address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IfaceAddr {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl IfaceAddr {
    /// Whether `ip` is in this address's subnet.
    pub fn same_subnet(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let bits = u32::from(self.prefix_len.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let bits = u32::from(self.prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// One interface as `getifaddrs` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostIface {
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    /// Enslaved to a bridge or bond (`IFF_SLAVE`, or a `master` link in sysfs).
    pub enslaved: bool,
    pub addresses: BTreeSet<IfaceAddr>,
}

impl HostIface {
    /// Up, not loopback, not enslaved.
    pub fn usable(&self) -> bool {
        self.up && !self.loopback && !self.enslaved
    }
}

/// The interfaces `ip` is announced on, given the advertisement's choice and the host's
/// interfaces. Named interfaces are taken as they are (if they exist and are not loopback).
pub fn select_for(ip: IpAddr, on: &Interfaces, host: &[HostIface]) -> BTreeSet<String> {
    match on {
        Interfaces::Only(names) => host
            .iter()
            .filter(|iface| names.contains(&iface.name) && !iface.loopback)
            .map(|iface| iface.name.clone())
            .collect(),
        Interfaces::All => {
            let usable: Vec<&HostIface> = host.iter().filter(|iface| iface.usable()).collect();
            let in_subnet: BTreeSet<String> = usable
                .iter()
                .filter(|iface| iface.addresses.iter().any(|a| a.same_subnet(ip)))
                .map(|iface| iface.name.clone())
                .collect();
            if in_subnet.is_empty() {
                usable.iter().map(|iface| iface.name.clone()).collect()
            } else {
                in_subnet
            }
        }
    }
}

/// Reads the interfaces of the current network namespace.
pub fn scan() -> io::Result<Vec<HostIface>> {
    let mut by_name: BTreeMap<String, HostIface> = BTreeMap::new();
    for entry in getifaddrs().map_err(io::Error::from)? {
        let name = entry.interface_name.clone();
        let iface = by_name.entry(name.clone()).or_insert_with(|| HostIface {
            name,
            ..HostIface::default()
        });
        iface.up = entry.flags.contains(InterfaceFlags::IFF_UP);
        iface.loopback = entry.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        iface.enslaved |= entry.flags.contains(InterfaceFlags::IFF_SLAVE);
        if let (Some(ip), Some(mask)) = (
            entry.address.as_ref().and_then(sockaddr_ip),
            entry.netmask.as_ref().and_then(sockaddr_ip),
        ) {
            iface.addresses.insert(IfaceAddr {
                ip,
                prefix_len: prefix_len(mask),
            });
        }
    }
    for iface in by_name.values_mut() {
        // A bridge port has a `master` link; sysfs is remounted per namespace by `ip netns exec`
        // and by the container runtime, and a missing entry simply means "not enslaved".
        if std::fs::symlink_metadata(format!("/sys/class/net/{}/master", iface.name)).is_ok() {
            iface.enslaved = true;
        }
    }
    Ok(by_name.into_values().collect())
}

fn sockaddr_ip(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

/// rtnetlink multicast groups: link changes and IPv4/IPv6 address changes.
const RTNLGRP_MASK: u32 =
    (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;

/// A subscription to the kernel's link and address events in this network namespace. The
/// messages themselves are not parsed: any event means "scan again", which is cheap.
pub struct Changes {
    socket: TokioSocket,
    buf: Vec<u8>,
}

impl Changes {
    pub fn subscribe() -> io::Result<Changes> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        socket
            .socket_mut()
            .bind(&NetlinkAddr::new(0, RTNLGRP_MASK))?;
        Ok(Changes {
            socket,
            buf: vec![0; 16 * 1024],
        })
    }

    /// Waits for the next link or address event.
    pub async fn next(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.socket.recv(&mut self.buf).await.map(|_| ())
    }
}

fn prefix_len(mask: IpAddr) -> u8 {
    let ones = match mask {
        IpAddr::V4(m) => u32::from(m).count_ones(),
        IpAddr::V6(m) => u128::from(m).count_ones(),
    };
    // At most 128.
    ones as u8
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An up interface with these addresses (loopback if named `lo`).
    pub(crate) fn iface(name: &str, addrs: &[(&str, u8)]) -> HostIface {
        HostIface {
            name: name.into(),
            up: true,
            loopback: name == "lo",
            enslaved: false,
            addresses: addrs
                .iter()
                .map(|(ip, len)| IfaceAddr {
                    ip: ip.parse().unwrap(),
                    prefix_len: *len,
                })
                .collect(),
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subnet_match_picks_the_interface_with_the_subnet() {
        let host = vec![
            iface("lo", &[("127.0.0.1", 8), ("192.0.2.240", 28)]),
            iface("eth0", &[("192.0.2.11", 24), ("2001:db8:2::11", 64)]),
            iface("eth1", &[("198.51.100.5", 24)]),
        ];
        let v4 = "192.0.2.241".parse().unwrap();
        assert_eq!(select_for(v4, &Interfaces::All, &host), names(&["eth0"]));
        let v6 = "2001:db8:2::241".parse().unwrap();
        assert_eq!(select_for(v6, &Interfaces::All, &host), names(&["eth0"]));
    }

    #[test]
    fn no_subnet_match_falls_back_to_every_usable_interface_but_never_lo() {
        let mut down = iface("eth2", &[]);
        down.up = false;
        let mut port = iface("eth3", &[]);
        port.enslaved = true;
        let host = vec![
            iface("lo", &[("127.0.0.1", 8)]),
            iface("eth0", &[("192.0.2.11", 24)]),
            iface("eth1", &[]),
            down,
            port,
        ];
        let ip = "203.0.113.130".parse().unwrap();
        assert_eq!(
            select_for(ip, &Interfaces::All, &host),
            names(&["eth0", "eth1"])
        );
    }

    #[test]
    fn named_interfaces_are_used_as_given_except_lo_and_missing_ones() {
        let host = vec![
            iface("lo", &[("127.0.0.1", 8)]),
            iface("eth0", &[("192.0.2.11", 24)]),
            iface("eth1", &[]),
        ];
        let ip = "192.0.2.241".parse().unwrap();
        let on = Interfaces::Only(names(&["eth1", "lo", "eth9"]));
        assert_eq!(select_for(ip, &on, &host), names(&["eth1"]));
    }

    #[test]
    fn prefix_arithmetic() {
        let a = IfaceAddr {
            ip: "192.0.2.11".parse().unwrap(),
            prefix_len: 0,
        };
        assert!(a.same_subnet("203.0.113.1".parse().unwrap()));
        assert!(!a.same_subnet("2001:db8::1".parse().unwrap()));
        let b = IfaceAddr {
            ip: "2001:db8:2::11".parse().unwrap(),
            prefix_len: 128,
        };
        assert!(b.same_subnet("2001:db8:2::11".parse().unwrap()));
        assert!(!b.same_subnet("2001:db8:2::12".parse().unwrap()));
        assert_eq!(prefix_len("255.255.255.0".parse().unwrap()), 24);
    }

    /// In a network namespace of its own (this thread only), so the host is never touched.
    #[test]
    fn changes_report_an_address_at_once() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "needs root (a network namespace) and CI is set"
            );
            eprintln!("SKIPPED changes_report_an_address_at_once: needs root");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread, which owns no other resources yet.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut changes = Changes::subscribe().unwrap();
                let status = std::process::Command::new("ip")
                    .args(["addr", "add", "192.0.2.77/32", "dev", "lo"])
                    .status()
                    .unwrap();
                assert!(status.success());
                tokio::time::timeout(std::time::Duration::from_secs(5), changes.next())
                    .await
                    .expect("no rtnetlink event for the new address")
                    .unwrap();
                let host = scan().unwrap();
                let lo = host.iter().find(|i| i.loopback).unwrap();
                assert!(
                    lo.addresses
                        .iter()
                        .any(|a| a.ip.to_string() == "192.0.2.77" && a.prefix_len == 32),
                    "{lo:?}"
                );
            });
        })
        .join()
        .unwrap();
    }

    #[test]
    fn scan_sees_loopback() {
        let host = scan().unwrap();
        assert!(host.iter().any(|i| i.loopback && !i.usable()));
    }
}
