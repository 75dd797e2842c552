//! Isthmus' shared vocabulary: mesh identifiers, `mesh.yaml`, the Kubernetes and Istio
//! objects a cluster source reads, and the per-document validation every source and
//! `isthmus analyze` apply alike.
#![forbid(unsafe_code)]

pub mod diagnostic;
pub mod document;
pub mod istio;
pub mod mesh;
pub mod sync;
pub mod types;
pub mod yaml;

pub use diagnostic::{Diagnostic, Level, ResourceRef};
pub use document::{Kind, Object, ObjectKey, ParsedDocument, SourcePos, parse_documents};
pub use mesh::{MeshConfig, MeshError};
pub use types::*;
