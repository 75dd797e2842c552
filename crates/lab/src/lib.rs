//! `isthmus lab`: whole clusters on one Linux host without Kubernetes or containers.
//! Every pod is a network namespace on its cluster's bridge, with an address from the
//! cluster's pod range, a hosts file for service names, iptables capture to its Envoy
//! sidecar, and the stand-in of its container image; the lab writes the Pods and
//! EndpointSlices it runs where the control plane reads them, as a kubelet and the
//! endpoints controller would.
//!
//! - [`runtime`]: network namespaces, bridges, veths, addresses, capture rules and
//!   processes, every one recorded in the lab's state so that `lab down` removes them
//!   all, also after a crash or `kill -9`.
#![forbid(unsafe_code)]

pub mod cli;
pub mod controller;
pub mod runtime;
pub mod topology;

pub use controller::{Lab, LabState, PodRole, PodState};
pub use topology::Topology;

/// What a lab command can fail at; each message names what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("topology: {0}")]
    Topology(String),
    #[error("lab state: {0}")]
    State(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotReady(String),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
}
