//! xDS: Envoy config generation with Istio's semantics, and the Aggregated Discovery
//! Service (State-of-the-World and Delta) that serves it.
#![forbid(unsafe_code)]

pub mod discovery;
pub mod dump;
pub mod generate;
pub mod generator;
pub mod proxy;
pub mod resources;
pub mod secure;
pub mod server;

pub use generator::Generator;
pub use proxy::{Proxy, ProxyKind};
pub use resources::{ProxyResources, Resource, TypeUrl};
pub use server::{ConnectionStatus, DiscoveryServer, TypeStatus};
