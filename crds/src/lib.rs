//! FerroLB's configuration API.
//!
//! * [`v1beta1`]: the CRD types (group `ferrolb.io`), with MetalLB's field names.
//! * [`legacy`]: MetalLB's legacy ConfigMap format (`address-pools:` …), accepted as is.
//! * [`cluster`]: the Kubernetes edge both binaries share (which Services are ours, their
//!   ingress addresses, the shared object names).
//! * [`runtime`]: the API clients (with timeouts) and the stop signal both binaries use.
//! * [`process_metrics`]: the `process_*` metrics both binaries export; [`metrics_doc`]: the
//!   metric reference in `docs/operations.md`, read back for the tests that keep it true.
//! * [`config`]: the one validated [`config::Config`] model that the controller, the speaker and
//!   `ferrolbctl` read. Nothing downstream parses YAML or address strings again.

pub mod annotations;
pub mod cluster;
pub mod config;
pub mod crdgen;
pub mod events;
pub mod legacy;
pub mod metrics_doc;
pub mod migrate;
pub mod process_metrics;
pub mod runtime;
pub mod v1beta1;
