//! Validation errors: data, not strings, and always collected (never just the first).
//!
//! Every error names the object (`IPAddressPool/prod`, `ConfigMap/config address-pools[1] "lan"`), the
//! field inside it (`spec.addresses[1]`) and a typed [`Reason`]. `Display` of [`ConfigErrors`] is one
//! line per error, which is what `ferrolbctl validate` prints.

use std::fmt;

use ipnet::IpNet;

/// Which object an error is about: the kind and the name, plus, for the legacy ConfigMap, the
/// position and name of the entry inside it (`ConfigMap/config address-pools[1] "lan"`, `peers[0] (192.0.2.1)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub kind: String,
    pub name: String,
    /// Sub-object inside a legacy ConfigMap (`address-pools[1]`); empty for CRs.
    pub entry: String,
}

impl ObjectId {
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectId {
            kind: kind.into(),
            name: name.into(),
            entry: String::new(),
        }
    }

    /// An entry inside a ConfigMap, e.g. `ConfigMap/config address-pools[1] "lan"`.
    pub fn config_map_entry(name: impl Into<String>, entry: impl Into<String>) -> Self {
        ObjectId {
            kind: "ConfigMap".into(),
            name: name.into(),
            entry: entry.into(),
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)?;
        if !self.entry.is_empty() {
            write!(f, " {}", self.entry)?;
        }
        Ok(())
    }
}

/// A field inside an object, in the spelling the user wrote (`spec.addresses[1]`, `hold-time`).
/// Empty means "the object as a whole".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FieldPath(pub String);

impl FieldPath {
    pub fn new(path: impl Into<String>) -> Self {
        FieldPath(path.into())
    }

    /// `self.name`
    pub fn child(&self, name: &str) -> FieldPath {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    /// `self[index]`
    pub fn index(&self, index: usize) -> FieldPath {
        FieldPath(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(object)")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Why a value is invalid. The wording of each variant is part of the tested contract
/// (`crds/tests/config_cases.rs` compares whole lines).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("is required")]
    Missing,
    #[error("must not be empty")]
    Empty,
    #[error("{value:?} is not a CIDR or an IP range: {detail}")]
    BadAddress { value: String, detail: String },
    #[error("CIDR {cidr} overlaps with {other} of pool {other_pool:?}")]
    Overlap {
        cidr: IpNet,
        other: IpNet,
        other_pool: String,
    },
    #[error("duplicate name {0:?}")]
    DuplicateName(String),
    #[error("duplicate value {0:?}")]
    DuplicateValue(String),
    #[error("duplicate selector (same as entry {0})")]
    DuplicateSelector(usize),
    #[error("same as {0} (identical objects are rejected)")]
    Identical(String),
    #[error("{value:?} is not a valid IP address")]
    BadIp { value: String },
    #[error("{value:?} is not a valid duration: {detail}")]
    BadDuration { value: String, detail: String },
    #[error("{value} is out of range {min}..={max}")]
    OutOfRange { value: i64, min: i64, max: i64 },
    #[error("ASN must not be 0")]
    ZeroAsn,
    #[error("hold time {0:?} must be 0 or at least 3s")]
    HoldTimeTooShort(std::time::Duration),
    #[error("keepalive time {keepalive:?} must not exceed hold time {hold:?}")]
    KeepaliveAboveHold {
        keepalive: std::time::Duration,
        hold: std::time::Duration,
    },
    #[error("ebgpMultiHop is invalid for an iBGP session (myASN == peerASN == {0})")]
    MultihopForIbgp(u32),
    #[error("exactly one of {a} and {b} must be set")]
    ExactlyOneOf { a: &'static str, b: &'static str },
    #[error("{a} and {b} are mutually exclusive")]
    MutuallyExclusive { a: &'static str, b: &'static str },
    #[error("{value:?} is not a BGP community: {detail}")]
    BadCommunity { value: String, detail: String },
    #[error("unknown community alias {0:?}")]
    UnknownCommunityAlias(String),
    #[error(
        "aggregation length {length} is shorter than the /{prefix} of {entry:?} in pool {pool:?}"
    )]
    AggregationTooShort {
        length: u8,
        entry: String,
        prefix: u8,
        pool: String,
    },
    #[error(
        "localPref differs from advertisement {other:?} for the same prefixes of pool {pool:?}"
    )]
    LocalPrefConflict { other: String, pool: String },
    #[error("IPv6 pool {pool:?} is advertised to peer {peer:?} whose BFD profile uses echo mode")]
    EchoModeWithIpv6 { pool: String, peer: String },
    #[error("unknown IPAddressPool {0:?}")]
    UnknownPool(String),
    #[error("unknown BGPPeer {0:?}")]
    UnknownPeer(String),
    #[error("unknown BFDProfile {0:?}")]
    UnknownBfdProfile(String),
    #[error("Secret {0:?} cannot be checked offline")]
    SecretUnchecked(String),
    #[error(
        "VRF {0:?} is not supported: the speaker peers in the default VRF only (it does not bind sessions to a VRF device, and kernels without CONFIG_NET_VRF, like the test lab's, have none); remove vrf"
    )]
    VrfUnsupported(String),
    #[error("is not supported: {0}")]
    NotSupported(&'static str),
    #[error("router ID must be an IPv4 address")]
    RouterIdNotIpv4,
    #[error("Secret {0:?} not found")]
    SecretNotFound(String),
    #[error("Secret {secret:?} is not usable: {detail}")]
    BadSecret { secret: String, detail: String },
    #[error("invalid label selector: {0}")]
    BadSelector(String),
    #[error("{value:?} is not a valid protocol (want layer2 or bgp)")]
    BadProtocol { value: String },
    #[error("bgp-advertisements are only allowed with protocol bgp")]
    AdvertisementsWithoutBgp,
    #[error("serviceSelectors cannot be combined with a non-default aggregation length")]
    ServiceSelectorsWithAggregation,
    /// A problem found outside [`crate::config::Config::build`] (e.g. an object the controller
    /// could not decode), reported in the same shape.
    #[error("{0}")]
    Other(String),
}

impl Reason {
    /// Errors that depend on objects that may simply not exist *yet* (MetalLB's
    /// `TransientError`): a Secret named by `passwordSecret`. Offline they are warnings.
    pub fn is_transient(&self) -> bool {
        matches!(self, Reason::SecretNotFound(_) | Reason::SecretUnchecked(_))
    }

    /// A name that refers to another object that is not in the input: a pool, a BGPPeer, a
    /// Community alias, a BFDProfile, a Secret. Another file may hold it, so `ferrolbctl
    /// validate` treats all of these alike: warnings by default, errors with `--complete`.
    pub fn is_dangling_reference(&self) -> bool {
        matches!(
            self,
            Reason::UnknownPool(_)
                | Reason::UnknownPeer(_)
                | Reason::UnknownCommunityAlias(_)
                | Reason::UnknownBfdProfile(_)
                | Reason::SecretNotFound(_)
        )
    }
}

/// One validation error: object, field, reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {reason}")]
pub struct ConfigError {
    pub object: ObjectId,
    pub field: FieldPath,
    pub reason: Reason,
}

/// All errors found in one configuration, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// One string per error, as printed by `ferrolbctl validate`.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A problem that does not make the configuration invalid (e.g. a Secret that cannot be checked
/// offline). Same shape as [`ConfigError`].
pub type ConfigWarning = ConfigError;
