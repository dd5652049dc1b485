//! Who a speaker is on the membership protocol: node name + address + boot id.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A speaker's membership identity.
///
/// The socket address is the stable part (foca's `Addr`): two identities with the same address
/// are the same speaker, and the one with the higher `boot` wins the conflict, so a restarted
/// speaker (new boot id, taken from the wall clock at start) replaces its old incarnation at
/// once instead of waiting for it to be declared down. The address, not the name, is the key
/// because seeds are addresses: a join request is addressed to an identity foca matches by
/// `Addr` before it knows the name behind it. A speaker that comes back on another address is
/// a new member; its old identity is declared down by probing, and the node name stays in the
/// live set throughout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpeakerId {
    /// Kubernetes node name.
    pub name: String,
    /// Where the speaker receives membership datagrams.
    pub addr: SocketAddr,
    /// Boot id: nanoseconds since the Unix epoch at start, bumped by one on each renewal.
    pub boot: u64,
}

impl SpeakerId {
    /// The identity used as destination for announcements to a seed address whose node we do
    /// not know yet; foca ignores the destination identity of received messages.
    pub(crate) fn seed(addr: SocketAddr) -> Self {
        Self {
            name: String::new(),
            addr,
            boot: 0,
        }
    }
}

impl foca::Identity for SpeakerId {
    type Addr = SocketAddr;

    /// After being declared down (e.g. on the far side of a partition), rejoin at once with a
    /// fresh identity that wins against the old one.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            name: self.name.clone(),
            addr: self.addr,
            boot: self.boot.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Newer boot wins; the name breaks a (practically impossible) tie deterministically.
        (self.boot, &self.name) > (adversary.boot, &adversary.name)
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn id(boot: u64) -> SpeakerId {
        SpeakerId {
            name: "node-a".into(),
            addr: "192.0.2.1:7946".parse().unwrap(),
            boot,
        }
    }

    #[test]
    fn newer_boot_wins_and_renew_is_newer() {
        assert!(id(2).win_addr_conflict(&id(1)));
        assert!(!id(1).win_addr_conflict(&id(2)));
        let renewed = id(5).renew().unwrap();
        assert_eq!(renewed.addr(), id(5).addr);
        assert!(renewed.win_addr_conflict(&id(5)));
    }
}
