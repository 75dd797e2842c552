//! `isthmus bench …`: benchmarks that print their figures and assert nothing. They
//! live here, not in the crates they measure, so that production crates do not depend
//! on what only a benchmark needs (an HTTP/2 client for simulated proxies, say).
//!
//! - [`registry`]: the registry at Istio's multicluster scale-test shape;
//! - [`xds`]: the control plane against simulated Envoy sidecars;
//! - [`lab`]: a lab with bookinfo from nothing, and its memory;
//! - [`ca`]: the CA's signing on one core, and agents all asking for certificates at once;
//! - [`memory`]: a process's resident memory, read from `/proc`.
#![forbid(unsafe_code)]

pub mod ca;
pub mod lab;
pub mod memory;
pub mod registry;
pub mod xds;
