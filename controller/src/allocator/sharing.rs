//! IP sharing between Services (MetalLB's `allow-shared-ip` rules).

use std::fmt;

/// A transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// One port a Service exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    pub protocol: Protocol,
    pub port: u16,
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// What a Service that asks to share its IP brings to the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharing {
    /// The `allow-shared-ip` annotation; an empty key means "do not share".
    pub key: String,
    /// Services sharing an IP must be reachable through the same nodes: with
    /// `externalTrafficPolicy: Local` this is the selector string, with `Cluster` it is empty
    /// (so Local and Cluster services never share).
    pub backend_key: String,
    pub ports: Vec<ServicePort>,
}

/// Why two Services may not share an IP.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SharingRejection {
    #[error("the address is in use and one of the services has no sharing key")]
    NotShared,
    #[error("sharing key {theirs:?} differs from {ours:?}")]
    DifferentKey { ours: String, theirs: String },
    #[error("backend key {theirs:?} differs from {ours:?} (externalTrafficPolicy or selector)")]
    DifferentBackend { ours: String, theirs: String },
    #[error("port {port} is used by both services")]
    PortInUse { port: ServicePort },
}

/// Treats `Some` with an empty key as no sharing, so the rest of the allocator sees one form.
pub(crate) fn normalized(sharing: Option<&Sharing>) -> Option<&Sharing> {
    sharing.filter(|s| !s.key.is_empty())
}

/// Whether a Service (`ours`) may use an IP that another Service (`theirs`) holds.
pub(crate) fn check(
    ours: Option<&Sharing>,
    theirs: Option<&Sharing>,
) -> Result<(), SharingRejection> {
    let (Some(ours), Some(theirs)) = (normalized(ours), normalized(theirs)) else {
        return Err(SharingRejection::NotShared);
    };
    if ours.key != theirs.key {
        return Err(SharingRejection::DifferentKey {
            ours: ours.key.clone(),
            theirs: theirs.key.clone(),
        });
    }
    if ours.backend_key != theirs.backend_key {
        return Err(SharingRejection::DifferentBackend {
            ours: ours.backend_key.clone(),
            theirs: theirs.backend_key.clone(),
        });
    }
    if let Some(port) = ours.ports.iter().find(|port| theirs.ports.contains(port)) {
        return Err(SharingRejection::PortInUse { port: *port });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharing(key: &str, backend: &str, ports: &[(Protocol, u16)]) -> Sharing {
        Sharing {
            key: key.into(),
            backend_key: backend.into(),
            ports: ports
                .iter()
                .map(|(protocol, port)| ServicePort {
                    protocol: *protocol,
                    port: *port,
                })
                .collect(),
        }
    }

    /// Name, our sharing, theirs, verdict.
    type Case = (
        &'static str,
        Option<Sharing>,
        Option<Sharing>,
        Result<(), SharingRejection>,
    );

    #[test]
    fn sharing_rules() {
        use Protocol::*;
        let tcp80 = sharing("k", "", &[(Tcp, 80)]);
        let cases: Vec<Case> = vec![
            ("no keys", None, None, Err(SharingRejection::NotShared)),
            (
                "one key",
                Some(tcp80.clone()),
                None,
                Err(SharingRejection::NotShared),
            ),
            (
                "empty key",
                Some(sharing("", "", &[(Tcp, 80)])),
                Some(sharing("", "", &[(Tcp, 443)])),
                Err(SharingRejection::NotShared),
            ),
            (
                "same key, other port",
                Some(tcp80.clone()),
                Some(sharing("k", "", &[(Tcp, 443)])),
                Ok(()),
            ),
            (
                "same port, other protocol",
                Some(tcp80.clone()),
                Some(sharing("k", "", &[(Udp, 80)])),
                Ok(()),
            ),
            (
                "port overlap",
                Some(sharing("k", "", &[(Udp, 53), (Tcp, 80)])),
                Some(sharing("k", "", &[(Tcp, 80)])),
                Err(SharingRejection::PortInUse {
                    port: ServicePort {
                        protocol: Tcp,
                        port: 80,
                    },
                }),
            ),
            (
                "different key",
                Some(tcp80.clone()),
                Some(sharing("j", "", &[(Tcp, 443)])),
                Err(SharingRejection::DifferentKey {
                    ours: "k".into(),
                    theirs: "j".into(),
                }),
            ),
            (
                "local vs cluster",
                Some(tcp80.clone()),
                Some(sharing("k", "app=x", &[(Tcp, 443)])),
                Err(SharingRejection::DifferentBackend {
                    ours: "".into(),
                    theirs: "app=x".into(),
                }),
            ),
            (
                "same local selector",
                Some(sharing("k", "app=x", &[(Tcp, 80)])),
                Some(sharing("k", "app=x", &[(Tcp, 443)])),
                Ok(()),
            ),
        ];
        for (name, ours, theirs, want) in cases {
            assert_eq!(check(ours.as_ref(), theirs.as_ref()), want, "{name}");
        }
    }
}
