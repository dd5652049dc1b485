//! Service annotations understood by FerroLB, and their MetalLB aliases.
//!
//! FerroLB reads its own `ferrolb.io/*` names first, then MetalLB's `metallb.io/*`, then MetalLB's
//! deprecated `metallb.universe.tf/*`, so Services annotated for MetalLB keep working unchanged.
//! [`annotation`] returns which prefix matched, so the controller can warn about old names.

use std::collections::BTreeMap;

/// `ferrolb.io/loadBalancerIPs`: comma-separated addresses requested for the Service (at most one
/// per IP family).
pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/loadBalancerIPs";
/// `ferrolb.io/address-pool`: name of the IPAddressPool the Service's addresses must come from.
pub const ADDRESS_POOL: &str = "ferrolb.io/address-pool";
/// `ferrolb.io/allow-shared-ip`: sharing key; Services with the same key may share an address.
pub const ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
/// `ferrolb.io/ip-allocated-from-pool`: written by the controller, the pool the address came from.
pub const IP_ALLOCATED_FROM_POOL: &str = "ferrolb.io/ip-allocated-from-pool";

/// MetalLB's `metallb.io/loadBalancerIPs`.
pub const METALLB_LOAD_BALANCER_IPS: &str = "metallb.io/loadBalancerIPs";
/// MetalLB's `metallb.io/address-pool`.
pub const METALLB_ADDRESS_POOL: &str = "metallb.io/address-pool";
/// MetalLB's `metallb.io/allow-shared-ip`.
pub const METALLB_ALLOW_SHARED_IP: &str = "metallb.io/allow-shared-ip";
/// MetalLB's `metallb.io/ip-allocated-from-pool`.
pub const METALLB_IP_ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";

/// MetalLB's deprecated `metallb.universe.tf/loadBalancerIPs`.
pub const METALLB_LEGACY_LOAD_BALANCER_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
/// MetalLB's deprecated `metallb.universe.tf/address-pool`.
pub const METALLB_LEGACY_ADDRESS_POOL: &str = "metallb.universe.tf/address-pool";
/// MetalLB's deprecated `metallb.universe.tf/allow-shared-ip`.
pub const METALLB_LEGACY_ALLOW_SHARED_IP: &str = "metallb.universe.tf/allow-shared-ip";
/// MetalLB's deprecated `metallb.universe.tf/ip-allocated-from-pool`.
pub const METALLB_LEGACY_IP_ALLOCATED_FROM_POOL: &str =
    "metallb.universe.tf/ip-allocated-from-pool";

/// A Service annotation, independent of its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `loadBalancerIPs`: requested addresses.
    LoadBalancerIps,
    /// `address-pool`: requested pool.
    AddressPool,
    /// `allow-shared-ip`: sharing key.
    AllowSharedIp,
    /// `ip-allocated-from-pool`: pool of the assigned address (written by the controller).
    IpAllocatedFromPool,
}

impl Key {
    /// Every key.
    pub const ALL: [Key; 4] = [
        Key::LoadBalancerIps,
        Key::AddressPool,
        Key::AllowSharedIp,
        Key::IpAllocatedFromPool,
    ];

    /// The full annotation name of this key under `source`'s prefix.
    pub const fn name(self, source: Source) -> &'static str {
        match (self, source) {
            (Key::LoadBalancerIps, Source::FerroLb) => LOAD_BALANCER_IPS,
            (Key::AddressPool, Source::FerroLb) => ADDRESS_POOL,
            (Key::AllowSharedIp, Source::FerroLb) => ALLOW_SHARED_IP,
            (Key::IpAllocatedFromPool, Source::FerroLb) => IP_ALLOCATED_FROM_POOL,
            (Key::LoadBalancerIps, Source::MetalLb) => METALLB_LOAD_BALANCER_IPS,
            (Key::AddressPool, Source::MetalLb) => METALLB_ADDRESS_POOL,
            (Key::AllowSharedIp, Source::MetalLb) => METALLB_ALLOW_SHARED_IP,
            (Key::IpAllocatedFromPool, Source::MetalLb) => METALLB_IP_ALLOCATED_FROM_POOL,
            (Key::LoadBalancerIps, Source::MetalLbLegacy) => METALLB_LEGACY_LOAD_BALANCER_IPS,
            (Key::AddressPool, Source::MetalLbLegacy) => METALLB_LEGACY_ADDRESS_POOL,
            (Key::AllowSharedIp, Source::MetalLbLegacy) => METALLB_LEGACY_ALLOW_SHARED_IP,
            (Key::IpAllocatedFromPool, Source::MetalLbLegacy) => {
                METALLB_LEGACY_IP_ALLOCATED_FROM_POOL
            }
        }
    }
}

/// Which prefix an annotation was found under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `ferrolb.io/`: FerroLB's own name.
    FerroLb,
    /// `metallb.io/`: MetalLB's current name, accepted for migration.
    MetalLb,
    /// `metallb.universe.tf/`: MetalLB's deprecated name, accepted for migration.
    MetalLbLegacy,
}

impl Source {
    /// Every prefix, in lookup order (the first one present wins).
    pub const PRECEDENCE: [Source; 3] = [Source::FerroLb, Source::MetalLb, Source::MetalLbLegacy];

    /// The annotation prefix, including the `/`.
    pub const fn prefix(self) -> &'static str {
        match self {
            Source::FerroLb => "ferrolb.io/",
            Source::MetalLb => "metallb.io/",
            Source::MetalLbLegacy => "metallb.universe.tf/",
        }
    }

    /// Whether this is a name other than FerroLB's own, worth a warning that suggests the
    /// `ferrolb.io/` name.
    pub const fn is_alias(self) -> bool {
        !matches!(self, Source::FerroLb)
    }
}

/// Looks `key` up in a Service's annotations: the `ferrolb.io/` name wins over `metallb.io/`,
/// which wins over `metallb.universe.tf/`. Returns the value and the prefix it was found under.
pub fn annotation(annotations: &BTreeMap<String, String>, key: Key) -> Option<(&str, Source)> {
    Source::PRECEDENCE.into_iter().find_map(|source| {
        annotations
            .get(key.name(source))
            .map(|value| (value.as_str(), source))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ferrolb_name_wins_over_both_metallb_names() {
        let a = annotations(&[
            ("metallb.universe.tf/address-pool", "old"),
            ("metallb.io/address-pool", "metallb"),
            ("ferrolb.io/address-pool", "ours"),
        ]);
        assert_eq!(
            annotation(&a, Key::AddressPool),
            Some(("ours", Source::FerroLb))
        );
    }

    #[test]
    fn metallb_io_wins_over_universe_tf() {
        let a = annotations(&[
            ("metallb.universe.tf/loadBalancerIPs", "192.0.2.1"),
            ("metallb.io/loadBalancerIPs", "192.0.2.2"),
        ]);
        assert_eq!(
            annotation(&a, Key::LoadBalancerIps),
            Some(("192.0.2.2", Source::MetalLb))
        );
    }

    #[test]
    fn deprecated_name_alone_is_found_and_flagged() {
        let a = annotations(&[("metallb.universe.tf/allow-shared-ip", "key1")]);
        let (value, source) = annotation(&a, Key::AllowSharedIp).expect("alias is honoured");
        assert_eq!(value, "key1");
        assert_eq!(source, Source::MetalLbLegacy);
        assert!(source.is_alias());
        assert!(!Source::FerroLb.is_alias());
    }

    #[test]
    fn absent_or_other_key_is_none() {
        let a = annotations(&[
            ("ferrolb.io/address-pool", "p"),
            ("example.com/loadBalancerIPs", "192.0.2.1"),
        ]);
        assert_eq!(annotation(&a, Key::LoadBalancerIps), None);
        assert_eq!(annotation(&BTreeMap::new(), Key::AddressPool), None);
    }

    #[test]
    fn empty_value_is_returned_not_skipped() {
        // An explicitly empty ferrolb.io value still shadows the aliases: the user chose it.
        let a = annotations(&[
            ("ferrolb.io/allow-shared-ip", ""),
            ("metallb.io/allow-shared-ip", "k"),
        ]);
        assert_eq!(
            annotation(&a, Key::AllowSharedIp),
            Some(("", Source::FerroLb))
        );
    }

    #[test]
    fn names_are_prefix_plus_suffix() {
        let suffixes = [
            (Key::LoadBalancerIps, "loadBalancerIPs"),
            (Key::AddressPool, "address-pool"),
            (Key::AllowSharedIp, "allow-shared-ip"),
            (Key::IpAllocatedFromPool, "ip-allocated-from-pool"),
        ];
        for (key, suffix) in suffixes {
            for source in Source::PRECEDENCE {
                assert_eq!(key.name(source), format!("{}{suffix}", source.prefix()));
            }
        }
        assert_eq!(Key::ALL.len(), suffixes.len());
    }
}
