//! The multi-cluster service registry: cluster sources, per-cluster shards, and the
//! aggregated view by hostname that config generation reads.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod controller;
pub mod load;
pub mod mesh_context;
pub mod model;
mod not_enforced;
pub mod registry;
pub mod report;
pub mod source;

pub use cluster::{ClusterDelta, ClusterState, ObjectChange};
pub use controller::Controller;
pub use mesh_context::MeshContext;
pub use model::*;
pub use registry::{Registry, Snapshot, SyncState};
pub use source::{ManifestSource, SourceError};
