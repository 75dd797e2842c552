//! The seam between config generation and the server: the server pushes whatever a
//! [`Generator`] makes of (registry snapshot, proxy), and generation knows nothing of
//! the server.

use std::sync::Arc;

use isthmus_registry::Snapshot;

use crate::proxy::Proxy;
use crate::resources::ProxyResources;

/// Config generation: a pure function of (registry snapshot, proxy).
pub trait Generator: Send + Sync + 'static {
    /// Shared: proxies with the same view of the mesh may receive the same config.
    fn generate(&self, snapshot: &Snapshot, proxy: &Proxy) -> Arc<ProxyResources>;
}
