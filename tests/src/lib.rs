//! FerroLB's end-to-end harness: a real kube-apiserver + etcd (built from Go modules) and a lab of
//! Linux network namespaces. Used by `cargo xtask lab ...` and by the end-to-end tests.
//!
//! * [`controlplane`]: builds and runs kube-apiserver + etcd, kubeconfigs, Nodes, CRDs.
//! * [`netlab`]: the namespace topology (switch, nodes, client, router, ext) and the FRR router.
//! * [`lab`]: the two together, plus the FerroLB processes, as one `Lab` with a name prefix.
//! * [`helm`]: the Helm chart `charts/ferrolb` as a release in a control plane.
//! * [`harness`]: what tests use: a per-test lab prefix, teardown on drop, logs on failure.
//! * [`l2probe`]: layer2 probes for those tests: who answers ARP/NDP, the client's neighbour
//!   cache, failover timing, the Service's IPs, the speakers' membership.
//! * [`chaos`]: the fault-injection soak behind `cargo xtask lab chaos`.
//! * [`plot`]: PNG plots for its report and the peers benchmark.
//! * [`peers`]: the side-by-side benchmark against MetalLB behind `cargo xtask bench peers`.
//! * [`cmd`], [`process`], [`paths`]: running commands, background processes, run directories.

pub mod chaos;
pub mod cmd;
pub mod controlplane;
pub mod demo;
pub mod harness;
pub mod helm;
pub mod l2probe;
pub mod lab;
pub mod netlab;
pub mod paths;
pub mod peers;
pub mod plot;
pub mod process;
