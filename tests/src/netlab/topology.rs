//! The lab topology as data: which namespaces exist, which hosts sit on the switch and with which
//! addresses. Pure: no I/O, so `up`, `down` and `status` all walk the same description.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The node LAN (the switch `sw`).
pub const LAN_V4_PREFIX_LEN: u8 = 24;
pub const LAN_V6_PREFIX_LEN: u8 = 64;
/// The router's side of the LAN; also the speakers' BGP peer.
pub const ROUTER_LAN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const ROUTER_LAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
/// The control plane host; kube-apiserver listens here.
pub const CONTROL_PLANE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const CONTROL_PLANE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x200);
/// The link between `router` (`ext0`) and `ext` (`eth0`).
pub const OUTSIDE_V4_NET: &str = "198.51.100.0/24";
pub const OUTSIDE_V6_NET: &str = "2001:db8:51::/64";
pub const ROUTER_OUTSIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const ROUTER_OUTSIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 1);
pub const EXT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const EXT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 2);
/// The LAN subnets, for BGP listen ranges.
pub const LAN_V4_NET: &str = "192.0.2.0/24";
pub const LAN_V6_NET: &str = "2001:db8:2::/64";
/// The router's BGP AS; speakers must use a different AS (eBGP).
pub const ROUTER_ASN: u32 = 64512;
/// The AS the lab suggests for the speakers.
pub const NODE_ASN: u32 = 64513;

/// Node addresses start at 192.0.2.11; more than this many nodes would run into the client.
pub const MAX_NODES: usize = 100;
const FIRST_NODE_HOST: u8 = 10;

/// What a host is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `cp`: kube-apiserver, etcd and the FerroLB controller.
    ControlPlane,
    /// `nodeN` (1-based): plays a Kubernetes node; a speaker runs here.
    Node(usize),
    /// `client`: probes service IPs from the LAN.
    Client,
    /// `router`: FRR, the speakers' BGP peer, and the way to `ext`.
    Router,
}

/// A host attached to the switch by `eth0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanHost {
    /// Short name (`node1`); also the name of its port on the switch.
    pub name: String,
    pub role: Role,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// A fixed locally administered MAC, so captures are readable (`02:00:00:00:00:<last octet>`).
    pub mac: String,
}

/// Invalid lab parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("a lab needs between 1 and {MAX_NODES} nodes, not {0}")]
    NodeCount(usize),
    #[error(
        "lab prefix {0:?} must be 1 to 24 characters of [a-z0-9-] (it names namespaces and FRR paths)"
    )]
    Prefix(String),
}

/// The whole lab: the switch namespace, the hosts on it, and `ext` behind the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub prefix: String,
    pub hosts: Vec<LanHost>,
}

impl Topology {
    /// Describes a lab with `nodes` node namespaces whose namespace names start with `prefix`.
    pub fn new(prefix: &str, nodes: usize) -> Result<Topology, TopologyError> {
        validate_prefix(prefix)?;
        if nodes == 0 || nodes > MAX_NODES {
            return Err(TopologyError::NodeCount(nodes));
        }
        let mut hosts = vec![
            lan_host("router", Role::Router, ROUTER_LAN_V4, ROUTER_LAN_V6),
            lan_host("cp", Role::ControlPlane, CONTROL_PLANE_V4, CONTROL_PLANE_V6),
        ];
        for index in 1..=nodes {
            let (ipv4, ipv6) = node_addresses(index);
            hosts.push(lan_host(
                &format!("node{index}"),
                Role::Node(index),
                ipv4,
                ipv6,
            ));
        }
        hosts.push(lan_host("client", Role::Client, CLIENT_V4, CLIENT_V6));
        Ok(Topology {
            prefix: prefix.to_string(),
            hosts,
        })
    }

    /// The namespace name of a short host name (`node1` -> `flb-node1`).
    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// The switch namespace (holds the bridge `br0`).
    pub fn switch_ns(&self) -> String {
        self.ns("sw")
    }

    /// The outside host's namespace.
    pub fn ext_ns(&self) -> String {
        self.ns("ext")
    }

    pub fn router_ns(&self) -> String {
        self.ns("router")
    }

    pub fn control_plane_ns(&self) -> String {
        self.ns("cp")
    }

    pub fn client_ns(&self) -> String {
        self.ns("client")
    }

    /// The node hosts, in order.
    pub fn nodes(&self) -> impl Iterator<Item = &LanHost> {
        self.hosts
            .iter()
            .filter(|host| matches!(host.role, Role::Node(_)))
    }

    /// Every namespace of the lab: hosts first, then `ext`, the switch last (so that deleting in
    /// this order never leaves a host's veth without its bridge port for long).
    pub fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = self.hosts.iter().map(|host| self.ns(&host.name)).collect();
        all.push(self.ext_ns());
        all.push(self.switch_ns());
        all
    }
}

/// The LAN addresses of node `index` (1-based): 192.0.2.(10+index), 2001:db8:2::(10+index).
pub fn node_addresses(index: usize) -> (Ipv4Addr, Ipv6Addr) {
    // `index` is bounded by MAX_NODES when it comes from a Topology; saturate otherwise.
    let host = u8::try_from(index)
        .unwrap_or(u8::MAX)
        .saturating_add(FIRST_NODE_HOST);
    (
        Ipv4Addr::new(192, 0, 2, host),
        // The v6 host part is written with the same digits as the v4 one (::11 for .11).
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, decimal_digits_as_hex(host)),
    )
}

/// `11` -> `0x11`, so that 192.0.2.11 pairs with 2001:db8:2::11 as in the docs.
fn decimal_digits_as_hex(value: u8) -> u16 {
    let digits = value.to_string();
    u16::from_str_radix(&digits, 16).unwrap_or(u16::from(value))
}

fn lan_host(name: &str, role: Role, ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> LanHost {
    let [.., last] = ipv4.octets();
    LanHost {
        name: name.to_string(),
        role,
        ipv4,
        ipv6,
        mac: format!("02:00:00:00:00:{last:02x}"),
    }
}

fn validate_prefix(prefix: &str) -> Result<(), TopologyError> {
    let valid = !prefix.is_empty()
        && prefix.len() <= 24
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(TopologyError::Prefix(prefix.to_string()))
    }
}

/// Both addresses of a host as `IpAddr`s (v4 first).
pub fn addresses(host: &LanHost) -> [IpAddr; 2] {
    [IpAddr::V4(host.ipv4), IpAddr::V6(host.ipv6)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lab_has_documented_addresses() {
        let topo = Topology::new("flb-", 3).unwrap();
        let names: Vec<&str> = topo.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["router", "cp", "node1", "node2", "node3", "client"]);
        let node1 = &topo.hosts[2];
        assert_eq!(node1.ipv4, Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(node1.ipv6, "2001:db8:2::11".parse::<Ipv6Addr>().unwrap());
        assert_eq!(node1.mac, "02:00:00:00:00:0b");
        let client = topo.hosts.last().unwrap();
        assert_eq!(client.ipv6, "2001:db8:2::200".parse::<Ipv6Addr>().unwrap());
        assert_eq!(topo.ns("node1"), "flb-node1");
        assert_eq!(
            topo.namespaces(),
            [
                "flb-router",
                "flb-cp",
                "flb-node1",
                "flb-node2",
                "flb-node3",
                "flb-client",
                "flb-ext",
                "flb-sw"
            ]
        );
    }

    #[test]
    fn macs_and_addresses_are_unique() {
        let topo = Topology::new("t-", MAX_NODES).unwrap();
        let mut macs: Vec<&str> = topo.hosts.iter().map(|h| h.mac.as_str()).collect();
        let mut v6: Vec<Ipv6Addr> = topo.hosts.iter().map(|h| h.ipv6).collect();
        macs.sort_unstable();
        macs.dedup();
        v6.sort_unstable();
        v6.dedup();
        assert_eq!(macs.len(), topo.hosts.len());
        assert_eq!(v6.len(), topo.hosts.len());
    }

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(Topology::new("flb-", 0), Err(TopologyError::NodeCount(0)));
        assert_eq!(
            Topology::new("flb-", MAX_NODES + 1),
            Err(TopologyError::NodeCount(MAX_NODES + 1))
        );
        assert!(matches!(
            Topology::new("Bad/", 1),
            Err(TopologyError::Prefix(_))
        ));
        assert!(matches!(
            Topology::new("", 1),
            Err(TopologyError::Prefix(_))
        ));
    }
}
