//! FerroLB controller: assigns LoadBalancer addresses to Services.
//!
//! * [`allocator`]: the pure IP allocator (no Kubernetes types, no I/O).
//! * [`request`]: `AllocRequest::from_service`, the only Service → allocator bridge.
//! * [`reconcile`]: watches, the Service reconciler, configuration, leadership sessions; [`run`].
//! * [`webhook`]: the validating admission webhook and its self-managed certificate.
//! * [`membership_secret`]: creates the speakers' membership Secret when it is missing.
//! * [`status`], [`leader`], [`metrics`], [`http`]: Service status writes, the Lease, Prometheus
//!   metrics, `/metrics` `/healthz` `/readyz`.

pub mod allocator;
pub mod http;
pub mod leader;
pub mod membership_secret;
pub mod metrics;
pub mod options;
pub mod reconcile;
pub mod request;
pub mod status;
pub mod webhook;

pub use options::{LogFormat, Options};
pub use reconcile::run;
