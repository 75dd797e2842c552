//! Config generation with Istio's semantics: a pure function of the registry snapshot
//! (services, endpoints, Istio config, secrets) and the proxy.
//!
//! - Sidecars get every service they may see as `outbound|PORT|SUBSET|HOST` clusters
//!   (DestinationRule subsets and traffic policy applied) with their endpoints; the
//!   outbound capture listener on 15001 handing connections to `0.0.0.0_PORT` (HTTP,
//!   routes from RDS `PORT`: one virtual host per service, VirtualService rules or the
//!   default route) or `VIP_PORT` (TCP proxy) or `0.0.0.0_PORT` with SNI chains (TLS);
//!   the inbound capture listener on 15006 with one chain per port the workload serves
//!   to `inbound|PORT||`.
//! - Routers (gateways) get listeners for the servers of the Gateways that select them:
//!   HTTP, HTTPS (SIMPLE/MUTUAL, certificates from `credentialName` Secrets) and TLS
//!   PASSTHROUGH, with their bound VirtualServices.
//!
//! What a service generates is cached by the service's identity in the snapshot, the
//! clusters the proxy sees of it and its DestinationRule; whole configs are cached by
//! the proxy's view (kind, namespace, cluster, the ports it serves, and labels where
//! they matter), so proxies alike share one generated config.
//!
//! Modules: `view` (the generator, its caches and incremental derivation), `context`
//! (one generation's inputs; destinations, routes and TCP destinations of
//! VirtualServices), `sidecar` and `gateway` (listeners and route tables of each kind of
//! proxy), `index` (the snapshot's config, indexed), `clusters`, `listeners`,
//! `http_route` and `policy` (Envoy resources and their parts). Istio's rules for gateway
//! names, source matches and hosts are `isthmus_model::istio::refs`.

use crate::generator::Generator;

pub mod clusters;
mod context;
mod gateway;
pub mod http_route;
pub mod index;
pub mod listeners;
pub mod mtls;
pub mod policy;
mod sidecar;
mod view;

pub use clusters::{
    BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, inbound_cluster_name, outbound_cluster_name,
};
pub use view::{IstioGenerator, ViewStats};

/// The outbound capture port (iptables redirects outbound TCP here).
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// The inbound capture port.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;

/// What a proxy may do with traffic to destinations the mesh doesn't know
/// (Istio's `outboundTrafficPolicy.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutboundPolicy {
    /// Pass it through to where it was going (Istio's default).
    #[default]
    AllowAny,
    /// Drop it.
    RegistryOnly,
}
