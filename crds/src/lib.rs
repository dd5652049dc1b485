//! FerroLB's configuration API.
//!
//! * [`v1beta1`]: the CRD types (group `ferrolb.io`), with MetalLB's field names.
//! * [`legacy`]: MetalLB's legacy ConfigMap format (`address-pools:` …), accepted as is.
//! * [`config`]: the one validated [`config::Config`] model that the controller, the speaker and
//!   `ferrolbctl` read. Nothing downstream parses YAML or address strings again.

pub mod annotations;
pub mod config;
pub mod crdgen;
pub mod legacy;
pub mod migrate;
pub mod v1beta1;
