//! Layer2: from the desired announcements to what changes. Pure, so that "gratuitous only on
//! takeover" and "withdraw what is no longer ours" are unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// IP → the interfaces it is answered on.
pub type Announced = BTreeMap<IpAddr, BTreeSet<String>>;

/// One change to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Answer `ip` on `interfaces` from now on; send the gratuitous burst on `gratuitous_on` (every
    /// interface when the node takes the IP over, only the new ones when an announced IP gains
    /// interfaces, none when nothing new).
    Announce {
        ip: IpAddr,
        interfaces: BTreeSet<String>,
        gratuitous_on: BTreeSet<String>,
    },
    /// Stop answering `ip`.
    Withdraw { ip: IpAddr },
}

/// The changes that turn `current` into `desired`, withdrawals first, then by IP. An IP desired
/// on no interface is not announced (nothing could answer it).
pub fn diff(current: &Announced, desired: &Announced) -> Vec<Change> {
    let mut changes = Vec::new();
    for (ip, _) in current.iter() {
        if desired.get(ip).is_none_or(BTreeSet::is_empty) {
            changes.push(Change::Withdraw { ip: *ip });
        }
    }
    for (ip, interfaces) in desired {
        if interfaces.is_empty() {
            continue;
        }
        let before = current.get(ip);
        if before == Some(interfaces) {
            continue;
        }
        let gratuitous_on = match before {
            None => interfaces.clone(),
            Some(old) => interfaces.difference(old).cloned().collect(),
        };
        changes.push(Change::Announce {
            ip: *ip,
            interfaces: interfaces.clone(),
            gratuitous_on,
        });
    }
    changes
}

/// Re-announces everything in `current` (gratuitous burst on every interface, nothing else
/// changes). Used when speakers (re)join: one of them may have answered for our IPs while it
/// was cut off from us, and the LAN's caches may still point at it.
pub fn refresh(current: &Announced) -> Vec<Change> {
    current
        .iter()
        .filter(|(_, interfaces)| !interfaces.is_empty())
        .map(|(ip, interfaces)| Change::Announce {
            ip: *ip,
            interfaces: interfaces.clone(),
            gratuitous_on: interfaces.clone(),
        })
        .collect()
}

/// Applies `changes` to `current` (what the responder then serves).
pub fn apply(current: &mut Announced, changes: &[Change]) {
    for change in changes {
        match change {
            Change::Announce { ip, interfaces, .. } => {
                current.insert(*ip, interfaces.clone());
            }
            Change::Withdraw { ip } => {
                current.remove(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn takeover_announces_with_gratuitous_on_every_interface() {
        let desired = Announced::from([(ip("192.0.2.240"), set(&["eth0", "eth1"]))]);
        let changes = diff(&Announced::new(), &desired);
        assert_eq!(
            changes,
            vec![Change::Announce {
                ip: ip("192.0.2.240"),
                interfaces: set(&["eth0", "eth1"]),
                gratuitous_on: set(&["eth0", "eth1"]),
            }]
        );
    }

    #[test]
    fn refresh_repeats_the_burst_without_changing_the_state() {
        let current = Announced::from([
            (ip("192.0.2.240"), set(&["eth0"])),
            (ip("2001:db8:2::240"), set(&["eth0", "eth1"])),
        ]);
        let changes = refresh(&current);
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| matches!(
            c,
            Change::Announce { interfaces, gratuitous_on, .. } if interfaces == gratuitous_on
        )));
        let mut after = current.clone();
        apply(&mut after, &changes);
        assert_eq!(after, current);
    }

    #[test]
    fn unchanged_announcement_sends_nothing() {
        let current = Announced::from([(ip("2001:db8:2::240"), set(&["eth0"]))]);
        assert!(diff(&current, &current.clone()).is_empty());
    }

    #[test]
    fn new_interface_gets_gratuitous_only_there() {
        let current = Announced::from([(ip("192.0.2.240"), set(&["eth0"]))]);
        let desired = Announced::from([(ip("192.0.2.240"), set(&["eth0", "eth1"]))]);
        assert_eq!(
            diff(&current, &desired),
            vec![Change::Announce {
                ip: ip("192.0.2.240"),
                interfaces: set(&["eth0", "eth1"]),
                gratuitous_on: set(&["eth1"]),
            }]
        );
    }

    #[test]
    fn lost_ips_are_withdrawn_first_and_empty_sets_are_not_announced() {
        let current = Announced::from([
            (ip("192.0.2.240"), set(&["eth0"])),
            (ip("192.0.2.241"), set(&["eth0"])),
        ]);
        let desired = Announced::from([
            (ip("192.0.2.241"), BTreeSet::new()),
            (ip("192.0.2.242"), set(&["eth0"])),
        ]);
        let changes = diff(&current, &desired);
        assert_eq!(
            changes,
            vec![
                Change::Withdraw {
                    ip: ip("192.0.2.240")
                },
                Change::Withdraw {
                    ip: ip("192.0.2.241")
                },
                Change::Announce {
                    ip: ip("192.0.2.242"),
                    interfaces: set(&["eth0"]),
                    gratuitous_on: set(&["eth0"]),
                },
            ]
        );
        let mut state = current;
        apply(&mut state, &changes);
        assert_eq!(
            state,
            Announced::from([(ip("192.0.2.242"), set(&["eth0"]))])
        );
        assert!(diff(&state, &state.clone()).is_empty());
    }
}
