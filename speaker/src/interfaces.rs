//! The host's interfaces (in the speaker's network namespace) and which of them announce an IP.
//!
//! [`scan`] reads them with `getifaddrs` (per namespace, unlike `/sys` which shows the namespace
//! sysfs was mounted in); [`select_for`] is the pure rule: the advertisement's interfaces if it
//! names some, else the usable interfaces with an address in the IP's subnet, else every usable
//! interface. Loopback is never used.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_name` is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let flags = entry.ifa_flags;
        let iface = by_name.entry(name.clone()).or_insert_with(|| HostIface {
            name: name.clone(),
            ..HostIface::default()
        });
        iface.up = flags & libc::IFF_UP as u32 != 0;
        iface.loopback = flags & libc::IFF_LOOPBACK as u32 != 0;
        iface.enslaved |= flags & libc::IFF_SLAVE as u32 != 0;
        // SAFETY: address pointers are null or point to a sockaddr of the family they state.
        if let (Some(ip), Some(mask)) =
            unsafe { (sockaddr_ip(entry.ifa_addr), sockaddr_ip(entry.ifa_netmask)) }
        {
            iface.addresses.insert(IfaceAddr {
                ip,
                prefix_len: prefix_len(mask),
            });
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    for iface in by_name.values_mut() {
        // A bridge port has a `master` link; sysfs is remounted per namespace by `ip netns exec`
        // and by the container runtime, and a missing entry simply means "not enslaved".
        if std::fs::symlink_metadata(format!("/sys/class/net/{}/master", iface.name)).is_ok() {
            iface.enslaved = true;
        }
    }
    Ok(by_name.into_values().collect())
}

/// # Safety
/// `addr` must be null or point to a valid `sockaddr` whose `sa_family` tells its real type.
unsafe fn sockaddr_ip(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: non-null and valid per the contract.
    let family = i32::from(unsafe { (*addr).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let v4 = unsafe { &*addr.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let v6 = unsafe { &*addr.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
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
mod tests {
    use super::*;

    fn iface(name: &str, addrs: &[(&str, u8)]) -> HostIface {
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

    #[test]
    fn scan_sees_loopback() {
        let host = scan().unwrap();
        assert!(host.iter().any(|i| i.loopback && !i.usable()));
    }
}
