//! Why an allocation or a pool configuration was refused, as data the controller turns into
//! Events and conditions.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::ServiceKey;
use super::pool::Family;
use super::sharing::SharingRejection;

/// Why a request is malformed, whatever the pools.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestProblem {
    #[error("{count} addresses requested, at most one per family (2) allowed")]
    TooManyAddresses { count: usize },
    #[error("two {family} addresses requested")]
    TwoOfFamily { family: Family },
    #[error("requested address families do not match the service's IP families")]
    FamiliesDoNotMatch,
    #[error("addresses {found:?} differ from the requested {requested:?}")]
    NotTheRequestedAddresses {
        found: Vec<IpAddr>,
        requested: Vec<IpAddr>,
    },
}

/// Why a pool could not serve a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolRejection {
    #[error("pool has no {family} addresses")]
    NoAddressesOfFamily { family: Family },
    #[error("pool has no free {family} address")]
    Exhausted { family: Family },
}

/// Why a specific address may not be used by the Service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpRejection {
    #[error("pool {pool} does not admit the service (serviceAllocation)")]
    PoolNotAdmitted { pool: String },
    #[error("address is in pool {actual}, not compatible with requested address pool {requested}")]
    NotInRequestedPool { requested: String, actual: String },
    #[error("addresses are in different pools ({first} and {second})")]
    DifferentPools { first: String, second: String },
    #[error("pool {pool} avoids buggy addresses ending in .0 or .255")]
    BuggyAddress { pool: String },
    #[error("network or broadcast address of a CIDR in pool {pool}")]
    NetworkOrBroadcast { pool: String },
}

/// One pool tried for an automatic allocation, and why it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolAttempt {
    pub pool: String,
    pub why: PoolRejection,
}

/// The attempts of a failed automatic allocation; displays as `pool a: why; pool b: why`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempts(pub Vec<PoolAttempt>);

impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, attempt) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "pool {}: {}", attempt.pool, attempt.why)?;
        }
        Ok(())
    }
}

/// Why `assign` or `restore` failed. Nothing changed in the allocator, except that a Service
/// whose previous addresses were no longer compatible with its request has lost them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("invalid request: {0}")]
    InvalidRequest(RequestProblem),
    #[error("no address pool may be used automatically by this service")]
    NoPoolAvailable,
    #[error("no available IPs: {tried}")]
    NoIpAvailable { tried: Attempts },
    #[error("unknown address pool {pool}")]
    UnknownPool { pool: String },
    #[error("address pool {pool} does not admit this service (serviceAllocation)")]
    PoolNotAdmitted { pool: String },
    #[error("address pool {pool} cannot serve the service: {why}")]
    PoolUnusable { pool: String, why: PoolRejection },
    #[error("requested address {ip} is not in any address pool")]
    RequestedIpNotInPool { ip: IpAddr },
    #[error("requested address {ip} may not be used: {why}")]
    RequestedIpNotAllowed { ip: IpAddr, why: IpRejection },
    #[error("address {ip} is already used by {with}: {why}")]
    SharingConflict {
        ip: IpAddr,
        with: ServiceKey,
        why: SharingRejection,
    },
}

/// Why a pool configuration was refused (the configuration model validates the same; the
/// allocator checks again because its bookkeeping relies on it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolConfigError {
    #[error("address pool with an empty name")]
    EmptyName,
    #[error("address pool {pool} defined twice")]
    DuplicatePool { pool: String },
    #[error("{cidr} in pool {pool} overlaps {other} in pool {other_pool}")]
    Overlap {
        pool: String,
        cidr: IpNet,
        other_pool: String,
        other: IpNet,
    },
}
