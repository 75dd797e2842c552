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
//! - [`controller`]: the lab's state and `lab up`; [`apply`] (objects applied, as an
//!   API server keeps them), [`reconcile`] (Deployments → pods, rolling updates,
//!   scaling, stopping pods without losing requests), [`publish`] (Pods and
//!   EndpointSlices for the control plane), [`readiness`] (probes and `lab status`).
//! - [`supervise`]: the process that keeps each container running, with backoff.
//! - [`load`]: bounded HTTP load from inside a pod (`lab load`).
#![forbid(unsafe_code)]

pub mod apply;
pub mod cli;
pub mod controller;
mod error;
mod http;
pub mod identity;
pub mod load;
pub mod publish;
pub mod readiness;
pub mod reconcile;
pub mod runtime;
pub mod supervise;
pub mod topology;

pub use controller::{Lab, LabState, PodRole, PodState};
pub use error::{ContainerExited, LabError};
pub use topology::Topology;
