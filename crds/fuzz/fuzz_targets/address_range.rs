//! Bytes → pool address entry. Must never panic, and a parsed entry must be self-consistent:
//! its CIDRs are masked, and cover exactly the range that was written.
#![no_main]

use std::net::IpAddr;

use ferrolb_crds::config::{AddressEntry, PoolAddress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(address) = PoolAddress::parse(text) else {
        return;
    };
    assert!(!address.cidrs.is_empty());
    for cidr in &address.cidrs {
        assert_eq!(*cidr, cidr.trunc(), "host bits masked");
    }
    if let AddressEntry::Range { start, end } = address.entry {
        assert!(start <= end);
        assert_eq!(address.cidrs.first().map(|c| c.network()), Some(start));
        assert_eq!(address.cidrs.last().map(|c| c.broadcast()), Some(end));
        // Consecutive CIDRs are adjacent (no gaps, no overlaps).
        for pair in address.cidrs.windows(2) {
            let next = match pair[0].broadcast() {
                IpAddr::V4(b) => IpAddr::V4((u32::from(b) + 1).into()),
                IpAddr::V6(b) => IpAddr::V6((u128::from(b) + 1).into()),
            };
            assert_eq!(pair[1].network(), next);
        }
    }
    // The canonical spelling parses back to the same entry.
    assert_eq!(PoolAddress::parse(&address.to_string()).ok(), Some(address));
});
