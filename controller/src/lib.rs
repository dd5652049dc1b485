//! FerroLB controller: assigns LoadBalancer addresses to Services.
//!
//! The binary (`main.rs`) is the Kubernetes edge; this library holds the pure parts.

pub mod allocator;
