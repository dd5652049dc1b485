//! Pool address entries: `10.0.0.0/24` (host bits masked) or `10.0.0.10-10.0.0.20` (summarised to
//! the minimal CIDR set), IPv4 and IPv6.
//!
//! Decision, as MetalLB: a bare IP (`10.0.0.1`) is rejected with a hint to write `/32` (`/128`),
//! because silently accepting it would make the same file mean different things to MetalLB and
//! FerroLB. Surrounding whitespace is trimmed (one of the articles' ConfigMaps has a trailing
//! space), as are the two sides of a range.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

/// What the user wrote: a CIDR or a range. The allocator needs the difference: it skips the
/// network and broadcast addresses of IPv4 CIDR entries shorter than /31, but not of ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressEntry {
    /// A CIDR with its host bits already masked.
    Cidr(IpNet),
    /// An inclusive range; `start <= end`, same family.
    Range { start: IpAddr, end: IpAddr },
}

/// One validated pool address entry with its normalised CIDRs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolAddress {
    pub entry: AddressEntry,
    /// Minimal CIDR set covering the entry exactly (one element for a CIDR entry).
    pub cidrs: Vec<IpNet>,
}

/// Why an address entry does not parse. The text is the "detail" of
/// [`crate::config::Reason::BadAddress`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty entry")]
    Empty,
    #[error("invalid IP address {0:?}")]
    BadIp(String),
    #[error("invalid prefix length {0:?}")]
    BadPrefixLength(String),
    #[error("a single address must be written as a CIDR ({0}/{1})")]
    BareAddress(IpAddr, u8),
    #[error("range start {start} is after its end {end}")]
    Reversed { start: IpAddr, end: IpAddr },
    #[error("range mixes IPv4 and IPv6 ({start} and {end})")]
    MixedFamilies { start: IpAddr, end: IpAddr },
}

impl PoolAddress {
    /// Parses one `addresses[]` entry.
    pub fn parse(text: &str) -> Result<PoolAddress, AddressError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Some((ip, prefix)) = text.split_once('/') {
            let ip: IpAddr = parse_ip(ip)?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            // Only plain decimal digits: `u8::from_str` would also accept a leading `+`.
            let prefix_len = if !prefix.is_empty()
                && prefix.len() <= 3
                && prefix.bytes().all(|b| b.is_ascii_digit())
            {
                prefix.parse::<u8>().ok().filter(|len| *len <= max)
            } else {
                None
            };
            let Some(prefix_len) = prefix_len else {
                return Err(AddressError::BadPrefixLength(prefix.to_string()));
            };
            let net = IpNet::new(ip, prefix_len)
                .map_err(|_| AddressError::BadPrefixLength(prefix.to_string()))?
                .trunc();
            return Ok(PoolAddress {
                entry: AddressEntry::Cidr(net),
                cidrs: vec![net],
            });
        }
        if let Some((start, end)) = text.split_once('-') {
            let start = parse_ip(start.trim())?;
            let end = parse_ip(end.trim())?;
            let cidrs: Vec<IpNet> = match (start, end) {
                (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
                    Ipv4Subnets::new(s, e, 0).map(IpNet::V4).collect()
                }
                (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
                    Ipv6Subnets::new(s, e, 0).map(IpNet::V6).collect()
                }
                (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                    return Err(AddressError::Reversed { start, end });
                }
                _ => return Err(AddressError::MixedFamilies { start, end }),
            };
            return Ok(PoolAddress {
                entry: AddressEntry::Range { start, end },
                cidrs,
            });
        }
        let ip = parse_ip(text)?;
        Err(AddressError::BareAddress(
            ip,
            if ip.is_ipv4() { 32 } else { 128 },
        ))
    }

    pub fn is_cidr(&self) -> bool {
        matches!(self.entry, AddressEntry::Cidr(_))
    }

    pub fn is_ipv4(&self) -> bool {
        match self.entry {
            AddressEntry::Cidr(net) => matches!(net, IpNet::V4(_)),
            AddressEntry::Range { start, .. } => start.is_ipv4(),
        }
    }

    /// The shortest prefix length among the entry's CIDRs: the longest aggregation an
    /// advertisement may not go below (MetalLB: a `.0-.63` range cannot aggregate to /24).
    pub fn shortest_prefix_len(&self) -> u8 {
        self.cidrs
            .iter()
            .map(IpNet::prefix_len)
            .min()
            .unwrap_or(if self.is_ipv4() { 32 } else { 128 })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.cidrs.iter().any(|net| net.contains(ip))
    }
}

impl fmt::Display for PoolAddress {
    /// The canonical spelling (`10.0.0.0/24`, `10.0.0.10-10.0.0.20`): what `migrate` writes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entry {
            AddressEntry::Cidr(net) => write!(f, "{net}"),
            AddressEntry::Range { start, end } => write!(f, "{start}-{end}"),
        }
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, AddressError> {
    text.parse()
        .map_err(|_| AddressError::BadIp(text.to_string()))
}

/// Whether two CIDRs share at least one address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_summarised() {
        let p = PoolAddress::parse(" 192.168.1.70-192.168.1.80 ").unwrap();
        let cidrs: Vec<String> = p.cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            cidrs,
            ["192.168.1.70/31", "192.168.1.72/29", "192.168.1.80/32"]
        );
        assert_eq!(p.shortest_prefix_len(), 29);
    }

    #[test]
    fn cidr_is_masked() {
        let p = PoolAddress::parse("10.0.0.5/24").unwrap();
        assert_eq!(p.entry, AddressEntry::Cidr("10.0.0.0/24".parse().unwrap()));
    }

    #[test]
    fn errors() {
        assert_eq!(
            PoolAddress::parse("10.0.0.0/33"),
            Err(AddressError::BadPrefixLength("33".into()))
        );
        assert_eq!(
            PoolAddress::parse("10.0.0.0/+8"),
            Err(AddressError::BadPrefixLength("+8".into()))
        );
        assert!(matches!(
            PoolAddress::parse("10.0.0.9-10.0.0.1"),
            Err(AddressError::Reversed { .. })
        ));
        assert!(matches!(
            PoolAddress::parse("10.0.0.1-::1"),
            Err(AddressError::MixedFamilies { .. })
        ));
        assert!(matches!(
            PoolAddress::parse("10.0.0.1"),
            Err(AddressError::BareAddress(_, 32))
        ));
    }

    proptest::proptest! {
        /// A range's CIDRs cover exactly the range: first network = start, last broadcast = end,
        /// adjacent, and the address count adds up.
        #[test]
        fn range_cidrs_cover_exactly(a: u32, b: u32) {
            let (start, end) = (a.min(b), a.max(b));
            let text = format!("{}-{}", std::net::Ipv4Addr::from(start), std::net::Ipv4Addr::from(end));
            let p = PoolAddress::parse(&text).unwrap();
            let mut next = u64::from(start);
            for net in &p.cidrs {
                let IpNet::V4(net) = net else { panic!("v4 range gave {net}") };
                proptest::prop_assert_eq!(u64::from(u32::from(net.network())), next);
                next = u64::from(u32::from(net.broadcast())) + 1;
            }
            proptest::prop_assert_eq!(next, u64::from(end) + 1);
        }

        /// Parsing never panics, whatever the text.
        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = PoolAddress::parse(&text);
        }
    }

    #[test]
    fn full_v6_range_does_not_panic() {
        let p = PoolAddress::parse("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").unwrap();
        assert_eq!(p.cidrs, vec!["::/0".parse::<IpNet>().unwrap()]);
    }
}
