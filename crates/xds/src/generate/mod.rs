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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::virtual_host::TlsRequirementType;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::google::protobuf::BoolValue;
use isthmus_model::istio::common::Destination;
use isthmus_model::istio::gateway::{Server, ServerTlsMode};
use isthmus_model::istio::virtual_service::RouteDestination;
use isthmus_model::istio::{VirtualService, resolve_host};
use isthmus_model::{ClusterId, Hostname, Kind, Object, ObjectKey, Protocol, intern};
use isthmus_registry::{Service, Snapshot};

use crate::generator::Generator;
use crate::proxy::{Proxy, ProxyKind};
use crate::resources::{self, ProxyResources, Resource};

pub mod clusters;
pub mod http_route;
pub mod index;
pub mod listeners;
pub mod policy;

pub use clusters::{
    BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, inbound_cluster_name, outbound_cluster_name,
};
use http_route::HttpContext;
use index::{ConfigIndex, DrEntry, InboundPort, MESH, VsEntry, host_matches};
use listeners::{CertSource, Routes};

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

/// What one service generates for a given set of visible clusters: its clusters and
/// load assignments. Shared by every proxy with the same view of the service.
type ServiceOutput = Arc<Vec<(&'static str, Resource)>>;

#[derive(Debug)]
struct CacheEntry {
    service: Arc<Service>,
    visible: Vec<ClusterId>,
    dr: Option<Arc<DrEntry>>,
    output: ServiceOutput,
}

#[derive(Debug, Default)]
struct Cache {
    /// The snapshot version entries were last pruned at.
    version: u64,
    entries: HashMap<(Hostname, Vec<ClusterId>, Option<ObjectKey>), CacheEntry>,
}

/// What a generated config depends on of the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ViewKey {
    kind: ProxyKind,
    namespace: String,
    cluster: ClusterId,
    /// Routers: the labels Gateways select on; sidecars: only when a VirtualService
    /// matches on source labels.
    labels: Option<BTreeMap<String, String>>,
    /// The ports the workload serves (sidecars).
    inbound: Vec<InboundPort>,
}

/// What a view's config holds of one visible service.
#[derive(Clone, Debug)]
struct Seen {
    /// [`service_shape`] of the service as seen.
    shape: u64,
    output: ServiceOutput,
}

/// A view's generated config with what it was made from, so that the config of a
/// later snapshot in which only some services' endpoints changed is derived from it
/// (those services' clusters and load assignments replaced, everything else shared)
/// instead of generated anew.
#[derive(Debug)]
struct ViewState {
    version: u64,
    epoch: u64,
    services: imbl::HashMap<Hostname, Arc<Service>>,
    gateways: Arc<[isthmus_registry::Gateway]>,
    visible: imbl::OrdMap<Hostname, Seen>,
    out: Arc<ProxyResources>,
}

/// Views kept at most; beyond, the map starts afresh (views of proxies long gone).
const MAX_VIEWS: usize = 10_000;

/// Services that differ between two snapshots' service maps, with the versions they
/// are of (computed once per pair: views mostly move between the same two versions).
type Changed = (u64, u64, Arc<Vec<Hostname>>);

/// Listeners and routes of a view, with the signature of what they were made from
/// (config epoch and the shape of every visible service: hosts, ports, addresses —
/// not endpoints), so an endpoint change reuses them.
type Shaped = HashMap<ViewKey, (u64, Arc<(Vec<Resource>, Vec<Resource>)>)>;

/// Generates Envoy config with Istio's semantics.
#[derive(Debug)]
pub struct IstioGenerator {
    /// The mesh's domain suffix, for resolving short hosts.
    pub domain_suffix: String,
    pub outbound_policy: OutboundPolicy,
    cache: Mutex<Cache>,
    index: Mutex<Option<Arc<ConfigIndex>>>,
    views: Mutex<HashMap<ViewKey, Arc<ViewState>>>,
    changed: Mutex<Option<Changed>>,
    shaped: Mutex<Shaped>,
    stats: ViewStats,
}

/// How view configs were made, since start.
#[derive(Debug, Default)]
pub struct ViewStats {
    /// Generated from scratch.
    pub generated: std::sync::atomic::AtomicU64,
    /// Derived from the view's previous config (only endpoints changed).
    pub patched: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl IstioGenerator {
    pub fn new(domain_suffix: &str) -> Self {
        Self {
            domain_suffix: domain_suffix.to_string(),
            outbound_policy: OutboundPolicy::default(),
            cache: Mutex::new(Cache::default()),
            index: Mutex::new(None),
            views: Mutex::new(HashMap::new()),
            changed: Mutex::new(None),
            shaped: Mutex::new(HashMap::new()),
            stats: ViewStats::default(),
        }
    }

    /// A generator for a mesh's settings (domain suffix, outbound traffic policy).
    pub fn for_mesh(mesh: &isthmus_model::MeshConfig) -> Self {
        Self::new(&mesh.domain_suffix).with_outbound_policy(
            match mesh.outbound_traffic_policy.mode {
                isthmus_model::mesh::OutboundMode::AllowAny => OutboundPolicy::AllowAny,
                isthmus_model::mesh::OutboundMode::RegistryOnly => OutboundPolicy::RegistryOnly,
            },
        )
    }

    /// How many view configs were generated and how many derived from an earlier one.
    pub fn stats(&self) -> &ViewStats {
        &self.stats
    }

    pub fn with_outbound_policy(mut self, policy: OutboundPolicy) -> Self {
        self.outbound_policy = policy;
        self
    }

    /// The config index of a snapshot, built once per version (from the previous one,
    /// with the changed services the views' configs are then derived with).
    fn index(&self, snapshot: &Snapshot) -> Arc<ConfigIndex> {
        let mut slot = lock(&self.index);
        match &*slot {
            Some(i) if i.version == snapshot.version => i.clone(),
            previous => {
                let changed = previous
                    .as_ref()
                    .map(|p| self.changed_services(p.version, p.services(), snapshot));
                let i = Arc::new(ConfigIndex::build(
                    snapshot,
                    &self.domain_suffix,
                    previous
                        .as_deref()
                        .zip(changed.as_deref().map(Vec::as_slice)),
                ));
                *slot = Some(i.clone());
                i
            }
        }
    }

    /// What each of `services` (with the clusters the proxy sees it in) generates for
    /// this proxy, from the cache where it can be: the cache is locked once to look
    /// everything up and once to store what was missing, not once per service (views
    /// are generated on several threads).
    fn service_outputs(
        &self,
        index: &ConfigIndex,
        proxy: &Proxy,
        services: &[(&Arc<Service>, &[ClusterId])],
    ) -> Vec<ServiceOutput> {
        type Key = (Hostname, Vec<ClusterId>, Option<ObjectKey>);
        let mut outputs: Vec<Option<ServiceOutput>> = Vec::with_capacity(services.len());
        let mut misses: Vec<(usize, Key, Option<&Arc<DrEntry>>)> = Vec::new();
        {
            let cache = lock(&self.cache);
            for (svc, clusters) in services {
                let dr = index.destination_rule(
                    svc.hostname.as_str(),
                    &proxy.namespace,
                    svc.namespace(),
                );
                let key = (
                    svc.hostname.clone(),
                    clusters.to_vec(),
                    dr.map(|d| d.key.clone()),
                );
                let hit = cache.entries.get(&key).filter(|e| {
                    Arc::ptr_eq(&e.service, svc)
                        && match (&e.dr, dr) {
                            (None, None) => true,
                            (Some(a), Some(b)) => Arc::ptr_eq(&a.dr, &b.dr),
                            _ => false,
                        }
                });
                match hit {
                    Some(e) => outputs.push(Some(e.output.clone())),
                    None => {
                        misses.push((outputs.len(), key, dr));
                        outputs.push(None);
                    }
                }
            }
        }
        if !misses.is_empty() {
            let made: Vec<(Key, CacheEntry)> = misses
                .into_iter()
                .map(|(i, key, dr)| {
                    let svc = services[i].0;
                    let output =
                        Arc::new(clusters::service_resources(svc, &key.1, dr.map(|d| &**d)));
                    outputs[i] = Some(output.clone());
                    let entry = CacheEntry {
                        service: svc.clone(),
                        visible: key.1.clone(),
                        dr: dr.cloned(),
                        output,
                    };
                    (key, entry)
                })
                .collect();
            lock(&self.cache).entries.extend(made);
        }
        outputs.into_iter().flatten().collect()
    }

    /// Services that differ between `old` (of version `from`) and the snapshot's.
    fn changed_services(
        &self,
        from: u64,
        old: &imbl::HashMap<Hostname, Arc<Service>>,
        snapshot: &Snapshot,
    ) -> Arc<Vec<Hostname>> {
        if let Some((f, t, c)) = &*lock(&self.changed)
            && *f == from
            && *t == snapshot.version
        {
            return c.clone();
        }
        let changed = Arc::new(index::changed_services(old, &snapshot.services));
        *lock(&self.changed) = Some((from, snapshot.version, changed.clone()));
        changed
    }

    /// The config of `view` for a snapshot, derived from the view's config of an
    /// earlier one when nothing but some services' endpoints (or their clusters'
    /// policies) changed: listeners and routes stay, the changed services' clusters
    /// and load assignments are replaced. `None` when it has to be generated anew.
    fn patch(
        &self,
        state: &ViewState,
        snapshot: &Snapshot,
        index: &ConfigIndex,
        proxy: &Proxy,
    ) -> Option<ViewState> {
        if state.epoch != index.epoch || !Arc::ptr_eq(&state.gateways, &snapshot.gateways) {
            return None;
        }
        let changed = self.changed_services(state.version, &state.services, snapshot);
        // Past a point, generating anew costs less than patching.
        if changed.len() > 64.max(state.visible.len() / 8) {
            return None;
        }
        let mut visible = state.visible.clone();
        let mut updates: Vec<(&Arc<Service>, Vec<ClusterId>)> = Vec::new();
        for host in changed.iter() {
            let now = snapshot
                .services
                .get(host)
                .map(|svc| (svc, visible_clusters(svc, proxy)))
                .filter(|(_, clusters)| !clusters.is_empty());
            match (visible.get(host), now) {
                (None, None) => {}
                (Some(seen), Some((svc, clusters)))
                    if seen.shape == service_shape(svc, &clusters) =>
                {
                    updates.push((svc, clusters));
                }
                // A service appeared, went or changed shape: listeners and routes change.
                _ => return None,
            }
        }
        let mut out = (*state.out).clone();
        let items: Vec<(&Arc<Service>, &[ClusterId])> =
            updates.iter().map(|(s, c)| (*s, c.as_slice())).collect();
        let outputs = self.service_outputs(index, proxy, &items);
        for ((svc, _), output) in updates.into_iter().zip(outputs) {
            let seen = visible.get(&svc.hostname)?;
            if !Arc::ptr_eq(&seen.output, &output) {
                for (type_url, r) in seen.output.iter() {
                    if !output
                        .iter()
                        .any(|(t, n)| t == type_url && n.name == r.name)
                    {
                        out.remove(type_url, &r.name);
                    }
                }
                for (type_url, r) in output.iter() {
                    out.add(type_url, r.clone());
                }
            }
            let shape = seen.shape;
            visible.insert(svc.hostname.clone(), Seen { shape, output });
        }
        Some(ViewState {
            version: snapshot.version,
            epoch: index.epoch,
            services: snapshot.services.clone(),
            gateways: snapshot.gateways.clone(),
            visible,
            out: Arc::new(out),
        })
    }

    /// Drops cache entries of services gone from the snapshot (once per snapshot).
    fn prune(&self, snapshot: &Snapshot) {
        let mut cache = lock(&self.cache);
        if cache.version != snapshot.version {
            cache.version = snapshot.version;
            cache.entries.retain(|(h, _, _), e| {
                snapshot
                    .services
                    .get(h)
                    .is_some_and(|s| Arc::ptr_eq(s, &e.service))
                    && !e.visible.is_empty()
            });
        }
    }
}

impl Generator for IstioGenerator {
    fn generate(&self, snapshot: &Snapshot, proxy: &Proxy) -> Arc<ProxyResources> {
        let index = self.index(snapshot);
        let inbound = match proxy.kind {
            ProxyKind::Sidecar => index.inbound(&proxy.cluster, proxy.ip),
            ProxyKind::Router => Vec::new(),
        };
        let labels = (proxy.kind == ProxyKind::Router || index.uses_source_labels)
            .then(|| proxy.labels.clone());
        let view = ViewKey {
            kind: proxy.kind,
            namespace: proxy.namespace.clone(),
            cluster: proxy.cluster.clone(),
            labels,
            inbound,
        };
        let previous = lock(&self.views).get(&view).cloned();
        if let Some(state) = &previous
            && state.version == snapshot.version
        {
            return state.out.clone();
        }
        self.prune(snapshot);
        use std::sync::atomic::Ordering::Relaxed;
        let state = match previous.and_then(|p| self.patch(&p, snapshot, &index, proxy)) {
            Some(s) => {
                self.stats.patched.fetch_add(1, Relaxed);
                s
            }
            None => {
                self.stats.generated.fetch_add(1, Relaxed);
                self.generate_view(snapshot, &index, proxy, &view)
            }
        };
        let out = state.out.clone();
        let mut views = lock(&self.views);
        if views.len() >= MAX_VIEWS {
            views.clear();
        }
        if views.get(&view).is_none_or(|s| s.version <= state.version) {
            views.insert(view, Arc::new(state));
        }
        out
    }
}

/// The clusters a proxy sees a service in (exportTo, cluster-local).
fn visible_clusters(svc: &Service, proxy: &Proxy) -> Vec<ClusterId> {
    svc.clusters
        .values()
        .filter(|cs| cs.visible_to_namespace(&proxy.namespace))
        .filter(|cs| !cs.cluster_local || cs.cluster == proxy.cluster)
        .map(|cs| cs.cluster.clone())
        .collect()
}

/// One generation: the inputs, and what the proxy can see.
struct Gen<'a> {
    g: &'a IstioGenerator,
    index: &'a ConfigIndex,
    snapshot: &'a Snapshot,
    proxy: &'a Proxy,
    /// Services the proxy may see, by hostname, with the clusters it sees them in.
    visible: BTreeMap<&'a str, (&'a Arc<Service>, Vec<ClusterId>)>,
}

impl IstioGenerator {
    fn generate_view(
        &self,
        snapshot: &Snapshot,
        index: &ConfigIndex,
        proxy: &Proxy,
        view: &ViewKey,
    ) -> ViewState {
        let inbound = view.inbound.as_slice();
        let mut visible = BTreeMap::new();
        for svc in snapshot.services.values() {
            let clusters = visible_clusters(svc, proxy);
            if !clusters.is_empty() {
                visible.insert(svc.hostname.as_str(), (svc, clusters));
            }
        }
        let ctx = Gen {
            g: self,
            index,
            snapshot,
            proxy,
            visible,
        };
        let mut out = ProxyResources::default();
        let items: Vec<(&Arc<Service>, &[ClusterId])> = ctx
            .visible
            .values()
            .map(|(s, c)| (*s, c.as_slice()))
            .collect();
        let outputs = self.service_outputs(index, proxy, &items);
        let mut seen = imbl::OrdMap::new();
        let mut signature = xxhash_rust::xxh3::Xxh3::new();
        signature.update(&index.epoch.to_le_bytes());
        for ((svc, clusters), output) in items.into_iter().zip(outputs) {
            for (type_url, r) in output.iter() {
                out.add(type_url, r.clone());
            }
            let shape = service_shape(svc, clusters);
            signature.update(&shape.to_le_bytes());
            seen.insert(svc.hostname.clone(), Seen { shape, output });
        }
        let signature = signature.digest();
        let sidecar = proxy.kind == ProxyKind::Sidecar;
        for r in clusters::fixed_clusters(sidecar) {
            out.add(resources::CLUSTER, r);
        }
        if sidecar {
            for r in clusters::inbound_clusters(inbound) {
                out.add(resources::CLUSTER, r);
            }
        }
        let cached = lock(&self.shaped)
            .get(view)
            .filter(|(sig, _)| *sig == signature)
            .map(|(_, r)| r.clone());
        let shaped = match cached {
            Some(r) => r,
            None => {
                let (listeners, routes) = match proxy.kind {
                    ProxyKind::Sidecar => {
                        let (mut l, r) = ctx.sidecar_outbound();
                        l.push(ctx.inbound_listener(inbound));
                        (l, r)
                    }
                    ProxyKind::Router => ctx.gateway(),
                };
                let r = Arc::new((
                    listeners
                        .iter()
                        .map(|l| Resource::new(resources::LISTENER, &l.name, l))
                        .collect(),
                    routes
                        .iter()
                        .map(|r| Resource::new(resources::ROUTE, &r.name, r))
                        .collect(),
                ));
                let mut shaped = lock(&self.shaped);
                if shaped.len() > 10_000 {
                    shaped.clear();
                }
                shaped.insert(view.clone(), (signature, r.clone()));
                r
            }
        };
        for l in &shaped.0 {
            out.add(resources::LISTENER, l.clone());
        }
        for r in &shaped.1 {
            out.add(resources::ROUTE, r.clone());
        }
        ViewState {
            version: snapshot.version,
            epoch: index.epoch,
            services: snapshot.services.clone(),
            gateways: snapshot.gateways.clone(),
            visible: seen,
            out: Arc::new(out),
        }
    }
}

/// What listeners and routes are made of a service, apart from the proxy's view and
/// the config: its hostname, the clusters the proxy sees it in, and in every cluster
/// (ports and namespace are taken across clusters) its namespace, ports, addresses and
/// resolution — not its endpoints. A view's listeners and routes are reused while the
/// config epoch and the shape of every visible service are unchanged.
fn service_shape(svc: &Service, visible: &[ClusterId]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(svc.hostname.as_str().as_bytes());
    h.update(&[0]);
    for c in visible {
        h.update(c.as_str().as_bytes());
        h.update(&[0]);
    }
    for (c, cs) in &svc.clusters {
        h.update(&[2]);
        h.update(c.as_str().as_bytes());
        h.update(&[0]);
        h.update(cs.namespace.as_bytes());
        h.update(&[0]);
        for p in cs.ports.iter() {
            h.update(&p.port.to_le_bytes());
            h.update(p.protocol.as_str().as_bytes());
            h.update(p.name.as_bytes());
            h.update(&[0]);
        }
        for v in &cs.vips {
            h.update(v.as_bytes());
            h.update(&[0]);
        }
        if let isthmus_registry::Origin::ServiceEntry { resolution, .. } = &cs.origin {
            h.update(resolution.as_bytes());
        }
        h.update(&[1]);
    }
    h.digest()
}

/// A service and the clusters the proxy sees it in.
type VisibleService<'a> = (&'a Arc<Service>, &'a [ClusterId]);

/// A TCP or TLS route's destinations as (cluster, weight).
type Weighted = Vec<(String, u32)>;

impl Gen<'_> {
    fn domain(&self) -> &str {
        &self.g.domain_suffix
    }

    fn passthrough(&self) -> &'static str {
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

    fn hash_for(&self, d: &Destination, ns: &str, listener_port: u16) -> Vec<HashPolicy> {
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

    /// Routes of one VirtualService for a listener port (and gateway).
    fn vs_routes(&self, e: &VsEntry, port: u16, gateway: Option<&str>) -> Vec<Route> {
        let ns = e.key.namespace.to_string();
        let cluster = |d: &Destination, vs_ns: &str| self.cluster_for(d, vs_ns, port);
        let hash = |d: &Destination, vs_ns: &str| self.hash_for(d, vs_ns, port);
        let delegate = |name: &str, dns: &str| self.delegate(name, dns);
        let ctx = HttpContext {
            port,
            gateway,
            source_namespace: &self.proxy.namespace,
            source_labels: &self.proxy.labels,
            cluster: &cluster,
            hash_policy: &hash,
            delegate: &delegate,
        };
        http_route::http_routes(&e.key.name, &ns, &e.vs, &ctx)
    }

    /// Destinations of the first TCP rule of a VirtualService that applies to `port`.
    fn tcp_destinations(&self, e: &VsEntry, port: u16, gateway: Option<&str>) -> Option<Weighted> {
        let ns = &e.key.namespace;
        let gw = gateway.unwrap_or(MESH);
        e.vs.tcp
            .iter()
            .find(|r| {
                r.r#match.is_empty()
                    || r.r#match.iter().any(|m| {
                        m.port.is_none_or(|p| p == u32::from(port))
                            && self.source_matches(&m.source_labels, m.source_namespace.as_deref())
                            && gateways_match(&m.gateways, ns, gw)
                    })
            })
            .map(|r| self.weighted(&r.route, ns, port))
    }

    fn source_matches(&self, labels: &BTreeMap<String, String>, ns: Option<&str>) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.proxy.labels.get(k).is_some_and(|x| x == v))
            && ns.is_none_or(|n| n == self.proxy.namespace)
    }

    fn weighted(&self, route: &[RouteDestination], ns: &str, port: u16) -> Weighted {
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
    fn vs_for_host<'s>(&'s self, host: &str, gateway: &'s str) -> Option<&'s Arc<VsEntry>> {
        self.index
            .bound_to(gateway, &self.proxy.namespace)
            .find(|e| e.hosts.iter().any(|h| host_matches(h, host)))
    }

    /// The virtual host domains Istio gives a service: its FQDN and shorter forms in
    /// the proxy's namespace, its VIPs, each alone and with `:PORT`.
    fn domains(&self, svc: &Service, clusters: &[ClusterId], port: u16) -> Vec<String> {
        let host = svc.hostname.as_str();
        let mut names = vec![host.to_string()];
        let svc_ns = svc.namespace();
        let suffix = format!(".{svc_ns}.svc.{}", self.domain());
        if let Some(name) = host.strip_suffix(&suffix) {
            names.push(format!("{name}.{svc_ns}.svc"));
            names.push(format!("{name}.{svc_ns}"));
            if svc_ns == self.proxy.namespace {
                names.push(name.to_string());
            }
        }
        for c in clusters {
            if let Some(cs) = svc.clusters.get(c) {
                names.extend(cs.vips.iter().cloned());
            }
        }
        let mut out = Vec::new();
        for n in names {
            out.push(format!("{n}:{port}"));
            out.push(n);
        }
        out
    }

    /// Sidecar outbound: the capture listener, per-port listeners, and route tables.
    fn sidecar_outbound(&self) -> (Vec<Listener>, Vec<RouteConfiguration>) {
        let mut http_ports: BTreeMap<u16, Vec<VisibleService>> = BTreeMap::new();
        let mut tcp: Vec<(&Arc<Service>, &[ClusterId], u16)> = Vec::new();
        let mut tls_ports: BTreeMap<u16, Vec<&Arc<Service>>> = BTreeMap::new();
        for (svc, clusters) in self.visible.values() {
            for p in svc.ports() {
                match p.protocol {
                    Protocol::Http | Protocol::Http2 | Protocol::Grpc => http_ports
                        .entry(p.port)
                        .or_default()
                        .push((svc, clusters.as_slice())),
                    Protocol::Https | Protocol::Tls => {
                        tls_ports.entry(p.port).or_default().push(svc);
                        tcp.push((svc, clusters.as_slice(), p.port));
                    }
                    Protocol::Udp => {}
                    _ => tcp.push((svc, clusters.as_slice(), p.port)),
                }
            }
        }
        let mut listeners = vec![self.outbound_capture()];
        let mut routes = Vec::new();
        for (port, services) in &http_ports {
            let name = format!("0.0.0.0_{port}");
            listeners.push(listeners::listener(
                &name,
                "0.0.0.0",
                *port,
                false,
                TrafficDirection::Outbound,
                vec![listeners::chain(
                    &name,
                    None,
                    vec![listeners::http_connection_manager(
                        &format!("outbound_0.0.0.0_{port}"),
                        Routes::Rds(port.to_string()),
                        false,
                    )],
                )],
            ));
            routes.push(self.sidecar_route_config(*port, services));
        }
        // TLS ports without HTTP: one listener per port choosing by SNI.
        for (port, services) in &tls_ports {
            if http_ports.contains_key(port) {
                continue;
            }
            let name = format!("0.0.0.0_{port}");
            let mut chains = Vec::new();
            let mut seen = BTreeSet::new();
            for svc in services {
                let host = svc.hostname.as_str();
                if !seen.insert(host) {
                    continue;
                }
                let dests = self
                    .tls_destinations(host, *port, None)
                    .unwrap_or_else(|| vec![(outbound_cluster_name(*port, "", host), 100)]);
                chains.push(listeners::chain(
                    &format!("outbound|{port}||{host}"),
                    Some(listeners::match_sni(vec![host.to_string()])),
                    vec![listeners::tcp_proxy(&dests[0].0, &dests)],
                ));
            }
            let mut l = listeners::listener(
                &name,
                "0.0.0.0",
                *port,
                false,
                TrafficDirection::Outbound,
                chains,
            );
            l.listener_filters = vec![listeners::tls_inspector()];
            l.default_filter_chain = Some(self.passthrough_chain());
            listeners.push(l);
        }
        // TCP services with addresses: `VIP_PORT`.
        let mut names = BTreeSet::new();
        for (svc, clusters, port) in tcp {
            let host = svc.hostname.as_str();
            let vips: BTreeSet<&String> = clusters
                .iter()
                .filter_map(|c| svc.clusters.get(c))
                .flat_map(|cs| cs.vips.iter())
                .collect();
            let dests = self
                .vs_for_host(host, MESH)
                .and_then(|e| self.tcp_destinations(e, port, None))
                .unwrap_or_else(|| vec![(outbound_cluster_name(port, "", host), 100)]);
            for vip in vips {
                if vip.contains('/') || vip.parse::<std::net::IpAddr>().is_err() {
                    continue;
                }
                let name = format!("{vip}_{port}");
                if !names.insert(name.clone()) {
                    continue;
                }
                listeners.push(listeners::listener(
                    &name,
                    vip,
                    port,
                    false,
                    TrafficDirection::Outbound,
                    vec![listeners::chain(
                        &name,
                        None,
                        vec![listeners::tcp_proxy(&dests[0].0, &dests)],
                    )],
                ));
            }
        }
        (listeners, routes)
    }

    /// TLS routes of the VirtualService for `host` that apply to `port`, by SNI.
    fn tls_destinations(&self, host: &str, port: u16, gateway: Option<&str>) -> Option<Weighted> {
        let e = self.vs_for_host(host, gateway.unwrap_or(MESH))?;
        let ns = &e.key.namespace;
        e.vs.tls
            .iter()
            .find(|r| {
                r.r#match.iter().any(|m| {
                    m.port.is_none_or(|p| p == u32::from(port))
                        && m.sni_hosts
                            .iter()
                            .any(|s| host_matches(s, host) || host_matches(host, s))
                        && gateways_match(&m.gateways, ns, gateway.unwrap_or(MESH))
                })
            })
            .map(|r| self.weighted(&r.route, ns, port))
    }

    fn passthrough_chain(&self) -> FilterChain {
        let cluster = self.passthrough();
        listeners::chain(
            cluster,
            None,
            vec![listeners::tcp_proxy(cluster, &[(cluster.to_string(), 100)])],
        )
    }

    /// `virtualOutbound`: 0.0.0.0:15001, hands each connection to the listener of its
    /// original destination; anything else passes through (or is dropped).
    fn outbound_capture(&self) -> Listener {
        let mut l = listeners::capture_listener(
            "virtualOutbound",
            OUTBOUND_CAPTURE_PORT,
            TrafficDirection::Outbound,
        );
        l.default_filter_chain = Some(self.passthrough_chain());
        l
    }

    /// `virtualInbound`: 0.0.0.0:15006, one chain per port the workload serves (HTTP
    /// through a connection manager, else TCP) to `inbound|PORT||`; other ports pass
    /// through to the workload.
    fn inbound_listener(&self, inbound: &[InboundPort]) -> Listener {
        let mut l = listeners::capture_listener(
            "virtualInbound",
            INBOUND_CAPTURE_PORT,
            TrafficDirection::Inbound,
        );
        for p in inbound {
            let cluster = inbound_cluster_name(p.port);
            let filter = if matches!(
                p.protocol,
                Protocol::Http | Protocol::Http2 | Protocol::Grpc
            ) {
                let rc = RouteConfiguration {
                    name: cluster.clone(),
                    virtual_hosts: vec![VirtualHost {
                        name: format!("inbound|http|{}", p.port),
                        domains: vec!["*".into()],
                        routes: vec![http_route::default_route(&cluster, Vec::new())],
                        ..Default::default()
                    }],
                    validate_clusters: Some(BoolValue { value: false }),
                    ..Default::default()
                };
                listeners::http_connection_manager(
                    &format!("inbound_0.0.0.0_{}", p.port),
                    Routes::Inline(Box::new(rc)),
                    false,
                )
            } else {
                listeners::tcp_proxy(&cluster, &[(cluster.clone(), 100)])
            };
            l.filter_chains.push(listeners::chain(
                &cluster,
                Some(listeners::match_port(p.port)),
                vec![filter],
            ));
        }
        l.default_filter_chain = Some(listeners::chain(
            INBOUND_PASSTHROUGH,
            None,
            vec![listeners::tcp_proxy(
                INBOUND_PASSTHROUGH,
                &[(INBOUND_PASSTHROUGH.to_string(), 100)],
            )],
        ));
        l
    }

    /// Route table `PORT` of a sidecar: a virtual host per service on the port, routed
    /// by its VirtualService or to the service, and `allow_any` for the rest.
    fn sidecar_route_config(&self, port: u16, services: &[VisibleService]) -> RouteConfiguration {
        let mut seen = BTreeSet::new();
        let mut vhosts = Vec::new();
        for (svc, clusters) in services {
            let host = svc.hostname.as_str();
            let domains: Vec<String> = self
                .domains(svc, clusters, port)
                .into_iter()
                .filter(|d| seen.insert(d.clone()))
                .collect();
            if domains.is_empty() {
                continue;
            }
            let routes = match self.vs_for_host(host, MESH) {
                Some(e) => self.vs_routes(e, port, None),
                None => {
                    let d = Destination {
                        host: host.to_string(),
                        subset: None,
                        port: Some(isthmus_model::istio::common::PortSelector {
                            number: Some(u32::from(port)),
                        }),
                    };
                    vec![http_route::default_route(
                        &outbound_cluster_name(port, "", host),
                        self.hash_for(&d, svc.namespace(), port),
                    )]
                }
            };
            vhosts.push(VirtualHost {
                name: format!("{host}:{port}"),
                domains,
                routes,
                ..Default::default()
            });
        }
        vhosts.push(self.catch_all_vhost());
        RouteConfiguration {
            name: port.to_string(),
            virtual_hosts: vhosts,
            validate_clusters: Some(BoolValue { value: false }),
            ..Default::default()
        }
    }

    /// Unknown hosts: passed through (ALLOW_ANY) or answered 502 (REGISTRY_ONLY).
    fn catch_all_vhost(&self) -> VirtualHost {
        let action = match self.g.outbound_policy {
            OutboundPolicy::AllowAny => Action::Route(
                envoy_types::pb::envoy::config::route::v3::RouteAction {
                    cluster_specifier: Some(
                        envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier::Cluster(
                            PASSTHROUGH.into(),
                        ),
                    ),
                    timeout: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: 0,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            ),
            OutboundPolicy::RegistryOnly => Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        };
        let name = match self.g.outbound_policy {
            OutboundPolicy::AllowAny => "allow_any",
            OutboundPolicy::RegistryOnly => "block_all",
        };
        VirtualHost {
            name: name.into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: name.into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(action),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A router's listeners and route tables, from the Gateways that select it.
    fn gateway(&self) -> (Vec<Listener>, Vec<RouteConfiguration>) {
        // Servers by port, with their Gateway.
        let mut by_port: BTreeMap<u16, Vec<(&ObjectKey, &Server)>> = BTreeMap::new();
        for (key, gw) in self.index.gateways_for(&self.proxy.labels) {
            for s in &gw.spec.servers {
                if let Ok(port) = u16::try_from(s.port.number) {
                    by_port.entry(port).or_default().push((key, s));
                }
            }
        }
        let mut listeners_out = Vec::new();
        let mut routes = Vec::new();
        for (port, servers) in by_port {
            let name = format!("0.0.0.0_{port}");
            let mut chains = Vec::new();
            let mut needs_inspector = false;
            let mut plain_http: Vec<(&ObjectKey, &Server)> = Vec::new();
            for (key, server) in &servers {
                let protocol = Protocol::parse(&server.port.protocol).unwrap_or(Protocol::Tcp);
                let tls_mode = server.tls.as_ref().and_then(|t| t.mode);
                match protocol {
                    Protocol::Http | Protocol::Http2 | Protocol::Grpc => {
                        plain_http.push((key, server))
                    }
                    Protocol::Https | Protocol::Tls
                        if matches!(
                            tls_mode,
                            Some(
                                ServerTlsMode::Simple
                                    | ServerTlsMode::Mutual
                                    | ServerTlsMode::OptionalMutual
                            )
                        ) && protocol == Protocol::Https =>
                    {
                        needs_inspector = true;
                        let Some(certs) = self.server_certs(key, server) else {
                            continue;
                        };
                        let rds = format!(
                            "https.{port}.{}.{}.{}",
                            server.name.clone().unwrap_or_else(|| "https".into()),
                            key.name,
                            key.namespace
                        );
                        let mut c = listeners::chain(
                            &rds,
                            Some(listeners::match_sni(sni_names(&server.hosts))),
                            vec![listeners::http_connection_manager(
                                &format!("outbound_0.0.0.0_{port}"),
                                Routes::Rds(rds.clone()),
                                true,
                            )],
                        );
                        c.transport_socket = Some(listeners::downstream_tls(
                            certs,
                            tls_mode == Some(ServerTlsMode::Mutual),
                            &["h2", "http/1.1"],
                        ));
                        chains.push(c);
                        routes.push(self.gateway_route_config(&rds, port, &[(key, server)]));
                    }
                    Protocol::Https | Protocol::Tls => {
                        // PASSTHROUGH (and anything else): route by SNI to the
                        // VirtualServices' tls rules.
                        needs_inspector = true;
                        chains.extend(self.passthrough_chains(key, server, port));
                    }
                    _ => {
                        let gw = format!("{}/{}", key.namespace, key.name);
                        let dests = self
                            .index
                            .bound_to(&gw, &self.proxy.namespace)
                            .filter(|e| server_allows(server, key, e))
                            .find_map(|e| self.tcp_destinations(e, port, Some(&gw)));
                        if let Some(dests) = dests {
                            chains.push(listeners::chain(
                                &name,
                                None,
                                vec![listeners::tcp_proxy(&dests[0].0, &dests)],
                            ));
                        }
                    }
                }
            }
            if !plain_http.is_empty() {
                let rds = format!("http.{port}");
                chains.push(listeners::chain(
                    &rds,
                    None,
                    vec![listeners::http_connection_manager(
                        &format!("outbound_0.0.0.0_{port}"),
                        Routes::Rds(rds.clone()),
                        true,
                    )],
                ));
                routes.push(self.gateway_route_config(&rds, port, &plain_http));
            }
            if chains.is_empty() {
                tracing::warn!(proxy = %self.proxy.id, port, "no server on this port has anything to serve; no listener");
                continue;
            }
            let mut l = listeners::listener(
                &name,
                "0.0.0.0",
                port,
                true,
                TrafficDirection::Outbound,
                chains,
            );
            if needs_inspector {
                l.listener_filters = vec![listeners::tls_inspector()];
            }
            listeners_out.push(l);
        }
        (listeners_out, routes)
    }

    /// A gateway route table: virtual hosts for the hosts of VirtualServices bound to
    /// these servers' Gateways, rules of several VirtualServices for one host merged in
    /// precedence order.
    fn gateway_route_config(
        &self,
        name: &str,
        port: u16,
        servers: &[(&ObjectKey, &Server)],
    ) -> RouteConfiguration {
        let mut vhosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
        let mut https_redirect = BTreeSet::new();
        for (key, server) in servers {
            let gw = format!("{}/{}", key.namespace, key.name);
            let redirect = server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true);
            for e in self.index.bound_to(&gw, &self.proxy.namespace) {
                if !server_allows(server, key, e) {
                    continue;
                }
                let routes = self.vs_routes(e, port, Some(&gw));
                for host in &e.hosts {
                    if !server_hosts(server, key)
                        .any(|(_, h)| host_matches(h, host) || host_matches(host, h))
                    {
                        continue;
                    }
                    let vh = vhosts.entry(host.clone()).or_insert_with(|| VirtualHost {
                        name: format!("{host}:{port}"),
                        domains: vec![host.clone()],
                        ..Default::default()
                    });
                    vh.routes.extend(routes.iter().cloned());
                    if redirect {
                        https_redirect.insert(host.clone());
                    }
                }
            }
        }
        let virtual_hosts = vhosts
            .into_iter()
            .map(|(host, mut vh)| {
                if https_redirect.contains(&host) {
                    vh.require_tls = TlsRequirementType::All as i32;
                }
                vh
            })
            .collect();
        RouteConfiguration {
            name: name.to_string(),
            virtual_hosts,
            validate_clusters: Some(BoolValue { value: false }),
            ..Default::default()
        }
    }

    /// Filter chains of a TLS PASSTHROUGH server: one per SNI of the bound
    /// VirtualServices' tls rules.
    fn passthrough_chains(&self, key: &ObjectKey, server: &Server, port: u16) -> Vec<FilterChain> {
        let gw = format!("{}/{}", key.namespace, key.name);
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for e in self.index.bound_to(&gw, &self.proxy.namespace) {
            if !server_allows(server, key, e) {
                continue;
            }
            let ns = &e.key.namespace;
            for r in &e.vs.tls {
                for m in &r.r#match {
                    if m.port.is_some_and(|p| p != u32::from(port))
                        || !gateways_match(&m.gateways, ns, &gw)
                    {
                        continue;
                    }
                    let snis: Vec<String> = m
                        .sni_hosts
                        .iter()
                        .filter(|s| {
                            server_hosts(server, key)
                                .any(|(_, h)| host_matches(h, s) || host_matches(s, h))
                        })
                        .filter(|s| seen.insert((*s).clone()))
                        .cloned()
                        .collect();
                    if snis.is_empty() {
                        continue;
                    }
                    let dests = self.weighted(&r.route, ns, port);
                    if dests.is_empty() {
                        continue;
                    }
                    out.push(listeners::chain(
                        &format!("{gw}|{}", snis.join(",")),
                        Some(listeners::match_sni(snis)),
                        vec![listeners::tcp_proxy(&dests[0].0, &dests)],
                    ));
                }
            }
        }
        out
    }

    /// A server's certificate: files, or the `credentialName` Secret in the gateway's
    /// namespace and cluster (`tls.crt`/`tls.key`/`ca.crt`, or `cert`/`key`/`cacert`).
    fn server_certs(&self, key: &ObjectKey, server: &Server) -> Option<CertSource> {
        let tls = server.tls.as_ref()?;
        if let Some(cred) = tls
            .credential_name
            .as_deref()
            .or(tls.credential_names.first().map(String::as_str))
        {
            let skey = ObjectKey {
                kind: Kind::Secret,
                namespace: intern(&self.proxy.namespace),
                name: intern(cred),
            };
            let Some(obj) = self
                .snapshot
                .secrets
                .get(&(self.proxy.cluster.clone(), skey))
            else {
                tracing::warn!(gateway = %format!("{}/{}", key.namespace, key.name), credential = cred, namespace = %self.proxy.namespace, cluster = %self.proxy.cluster, "credentialName names no Secret in the gateway's namespace; the server is skipped until it exists");
                return None;
            };
            let Object::Secret(secret) = &**obj else {
                return None;
            };
            let get = |k: &str| -> Option<Vec<u8>> {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map(|b| b.0.clone())
                    .or_else(|| {
                        secret
                            .string_data
                            .as_ref()
                            .and_then(|d| d.get(k))
                            .map(|s| s.as_bytes().to_vec())
                    })
            };
            let cert = get("tls.crt").or_else(|| get("cert"));
            let pkey = get("tls.key").or_else(|| get("key"));
            let (Some(cert), Some(pkey)) = (cert, pkey) else {
                tracing::warn!(
                    credential = cred,
                    "Secret has no tls.crt/tls.key (or cert/key); the server is skipped"
                );
                return None;
            };
            return Some(CertSource::Inline {
                cert,
                key: pkey,
                ca: get("ca.crt").or_else(|| get("cacert")),
            });
        }
        match (&tls.server_certificate, &tls.private_key) {
            (Some(c), Some(k)) => Some(CertSource::Files {
                cert: c.clone(),
                key: k.clone(),
                ca: tls.ca_certificates.clone(),
            }),
            _ => {
                tracing::warn!(gateway = %format!("{}/{}", key.namespace, key.name), "TLS server without credentialName or certificate files; skipped");
                None
            }
        }
    }
}

/// Whether a match's `gateways` (empty = any the VirtualService binds) include `gw`.
fn gateways_match(gateways: &[String], ns: &str, gw: &str) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| index::qualify_gateway(g, ns) == gw)
}

/// A server's hosts as (namespace filter, host): `ns/host`, `./host`, `*/host` or `host`.
fn server_hosts<'a>(
    server: &'a Server,
    key: &'a ObjectKey,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    server.hosts.iter().map(move |h| match h.split_once('/') {
        Some((".", host)) => (&*key.namespace, host),
        Some((ns, host)) => (ns, host),
        None => ("*", h.as_str()),
    })
}

/// Whether a server exposes a VirtualService: a host of the server's (in a namespace
/// the server allows) covers or is covered by a host of the VirtualService.
fn server_allows(server: &Server, key: &ObjectKey, e: &VsEntry) -> bool {
    server_hosts(server, key).any(|(ns, h)| {
        (ns == "*" || ns == &*e.key.namespace)
            && e.hosts
                .iter()
                .any(|vh| host_matches(h, vh) || host_matches(vh, h))
    })
}

/// SNI names for a filter chain match: none (any) when a host is `*`.
fn sni_names(hosts: &[String]) -> Vec<String> {
    let names: Vec<String> = hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, x)| x).to_string())
        .collect();
    if names.iter().any(|n| n == "*") {
        Vec::new()
    } else {
        names
    }
}
