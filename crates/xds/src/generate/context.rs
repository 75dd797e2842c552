//! One generation's inputs and what VirtualServices make of them for any proxy:
//! destinations to cluster names and hash policies, HTTP routes, TCP destinations.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::Route;
use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy;
use isthmus_model::ClusterId;
use isthmus_model::istio::common::Destination;
use isthmus_model::istio::refs::{MESH_GATEWAY, Source, host_subset_of, port_matches};
use isthmus_model::istio::virtual_service::RouteDestination;
use isthmus_model::istio::{VirtualService, resolve_host};
use isthmus_registry::{Service, Snapshot};

use super::http_route::{self, HttpContext};
use super::index::{ConfigIndex, VsEntry};
use super::view::IstioGenerator;
use super::{BLACKHOLE, OutboundPolicy, PASSTHROUGH, outbound_cluster_name, policy};
use crate::proxy::Proxy;

/// One generation: the inputs, and what the proxy can see.
pub(super) struct Gen<'a> {
    pub(super) g: &'a IstioGenerator,
    pub(super) index: &'a ConfigIndex,
    pub(super) snapshot: &'a Snapshot,
    pub(super) proxy: &'a Proxy,
    /// Services the proxy may see, by hostname, with the clusters it sees them in.
    pub(super) visible: BTreeMap<&'a str, (&'a Arc<Service>, Vec<ClusterId>)>,
}

/// A service and the clusters the proxy sees it in.
pub(super) type VisibleService<'a> = (&'a Arc<Service>, &'a [ClusterId]);

/// A TCP or TLS route's destinations as (cluster, weight).
pub(super) type Weighted = Vec<(String, u32)>;

impl Gen<'_> {
    pub(super) fn domain(&self) -> &str {
        &self.g.domain_suffix
    }

    pub(super) fn passthrough(&self) -> &'static str {
        match self.g.outbound_policy {
            OutboundPolicy::AllowAny => PASSTHROUGH,
            OutboundPolicy::RegistryOnly => BLACKHOLE,
        }
    }

    /// The Envoy cluster a destination names, from a VirtualService in `ns`, for a
    /// listener on `listener_port`: the port defaults to the service's only port, else
    /// the listener's.
    fn cluster_for(&self, d: &Destination, ns: &str, listener_port: u16) -> String {
        let host = resolve_host(&d.host, ns, self.domain());
        let port = d
            .port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
            .or_else(|| {
                let svc = self.visible.get(host.as_str())?.0;
                let ports = svc.ports();
                (ports.len() == 1).then(|| ports[0].port)
            })
            .unwrap_or(listener_port);
        outbound_cluster_name(port, d.subset.as_deref().unwrap_or_default(), &host)
    }

    pub(super) fn hash_for(
        &self,
        d: &Destination,
        ns: &str,
        listener_port: u16,
    ) -> Vec<HashPolicy> {
        let host = resolve_host(&d.host, ns, self.domain());
        let service_ns = self
            .visible
            .get(host.as_str())
            .map(|(s, _)| s.namespace().to_string())
            .unwrap_or_default();
        let Some(dr) = self
            .index
            .destination_rule(&host, &self.proxy.namespace, &service_ns)
        else {
            return Vec::new();
        };
        let port = d
            .port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(listener_port);
        policy::hash_policies(
            policy::effective_policy(&dr.dr.spec, d.subset.as_deref(), port).as_ref(),
        )
    }

    fn delegate(&self, name: &str, ns: &str) -> Option<Arc<VirtualService>> {
        self.index
            .by_name
            .get(&(ns.to_string(), name.to_string()))
            .map(|e| e.vs.clone())
    }

    /// Whom routes are made for: this proxy, serving `gateway` (`namespace/name`; `None`
    /// for sidecars, Istio's `mesh`).
    pub(super) fn source<'s>(&'s self, gateway: Option<&'s str>) -> Source<'s> {
        Source {
            gateway: gateway.unwrap_or(MESH_GATEWAY),
            labels: &self.proxy.labels,
            namespace: &self.proxy.namespace,
        }
    }

    /// Routes of one VirtualService for a listener port (and gateway).
    pub(super) fn vs_routes(&self, e: &VsEntry, port: u16, gateway: Option<&str>) -> Vec<Route> {
        let ns = e.key.namespace.to_string();
        let cluster = |d: &Destination, vs_ns: &str| self.cluster_for(d, vs_ns, port);
        let hash = |d: &Destination, vs_ns: &str| self.hash_for(d, vs_ns, port);
        let delegate = |name: &str, dns: &str| self.delegate(name, dns);
        let ctx = HttpContext {
            port,
            source: self.source(gateway),
            cluster: &cluster,
            hash_policy: &hash,
            delegate: &delegate,
        };
        http_route::http_routes(&e.key.name, &ns, &e.vs, &ctx)
    }

    /// Destinations of the first TCP rule of a VirtualService that applies to `port` (and
    /// this proxy and gateway: Istio's `matchTCP`).
    pub(super) fn tcp_destinations(
        &self,
        e: &VsEntry,
        port: u16,
        gateway: Option<&str>,
    ) -> Option<Weighted> {
        let ns = &e.key.namespace;
        let source = self.source(gateway);
        e.vs.tcp
            .iter()
            .find(|r| {
                r.r#match.is_empty()
                    || r.r#match
                        .iter()
                        .any(|m| port_matches(m.port, port) && source.matches_l4(m.into(), ns))
            })
            .map(|r| self.weighted(&r.route, ns, port))
    }

    pub(super) fn weighted(&self, route: &[RouteDestination], ns: &str, port: u16) -> Weighted {
        let all: Weighted = route
            .iter()
            .map(|d| {
                (
                    self.cluster_for(&d.destination, ns, port),
                    d.weight
                        .map_or(if route.len() == 1 { 100 } else { 0 }, |w| {
                            u32::try_from(w).unwrap_or(0)
                        }),
                )
            })
            .collect();
        let nonzero: Weighted = all.iter().filter(|(_, w)| *w > 0).cloned().collect();
        if nonzero.is_empty() { all } else { nonzero }
    }

    /// The VirtualService for a service host bound to `gateway` (first in precedence).
    pub(super) fn vs_for_host<'s>(
        &'s self,
        host: &str,
        gateway: &'s str,
    ) -> Option<&'s Arc<VsEntry>> {
        self.index
            .bound_to(gateway, &self.proxy.namespace)
            .find(|e| e.hosts.iter().any(|h| host_subset_of(host, h)))
    }
}
