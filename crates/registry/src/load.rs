//! Reading a whole mesh once, without watching: for the CLI and for tests.

use isthmus_model::diagnostic::codes;
use isthmus_model::{ClusterId, Diagnostic, MeshConfig};

use crate::registry::{Registry, SyncState};
use crate::source::ManifestSource;

/// A mesh read once.
pub struct Loaded {
    pub registry: Registry,
    /// Every finding in every cluster's files, and clusters that couldn't be read.
    pub diagnostics: Vec<(ClusterId, Diagnostic)>,
}

/// Reads every cluster's source once.
pub fn load(mesh: &MeshConfig) -> Loaded {
    let mut registry = Registry::new(mesh);
    let mut diagnostics = Vec::new();
    for c in &mesh.clusters {
        let Some(dir) = &c.source.manifests else {
            continue;
        };
        let mut source =
            ManifestSource::new(c.name.clone(), mesh.resolve(dir), &mesh.domain_suffix);
        match source.rescan(&[]) {
            Ok(changes) => {
                registry.apply(&c.name, changes);
                registry.set_sync(&c.name, SyncState::Synced);
            }
            Err(e) => {
                registry.set_sync(&c.name, SyncState::Unreachable);
                diagnostics.push((
                    c.name.clone(),
                    Diagnostic::error(codes::MESH_CONFIG_ERROR, e.to_string()),
                ));
            }
        }
        diagnostics.extend(
            source
                .diagnostics()
                .into_iter()
                .map(|d| (c.name.clone(), d)),
        );
    }
    Loaded {
        registry,
        diagnostics,
    }
}
