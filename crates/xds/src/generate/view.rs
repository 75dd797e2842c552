//! The generator and its caches: what each service generates, cached by the service's
//! identity in the snapshot, the clusters the proxy sees of it and its
//! DestinationRule; whole configs cached by the proxy's view (kind, namespace, cluster,
//! the ports it serves, and labels where they matter), so proxies alike share one
//! generated config; and a view's config derived from its previous one when only
//! endpoints changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use isthmus_model::istio::peer_authentication::EffectiveMode;
use isthmus_model::{ClusterId, Hostname, ObjectKey};
use isthmus_registry::{Service, Snapshot};

use super::context::Gen;
use super::index::{self, ConfigIndex, DrEntry, InboundPort};
use super::{Generator, OutboundPolicy, clusters};
use crate::proxy::{Proxy, ProxyKind};
use crate::resources::{self, ProxyResources, Resource};
use isthmus_model::sync::lock;

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
    /// By service, the clusters it is seen in, its DestinationRule, and whether the
    /// proxies have mesh mTLS (SDS).
    entries: HashMap<ServiceKey, CacheEntry>,
}

/// A service's cached output: the service, the clusters it is seen in, its
/// DestinationRule, and (for proxies with mesh mTLS) the PeerAuthentications' hash.
type ServiceKey = (Hostname, Vec<ClusterId>, Option<ObjectKey>, Option<u64>);

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
    /// Whether the proxy has mesh mTLS (its agent serves SDS).
    sds: bool,
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
    /// Istio's root namespace (the system namespace): its PeerAuthentication without a
    /// selector is the mesh's.
    pub root_namespace: String,
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

impl IstioGenerator {
    pub fn new(domain_suffix: &str) -> Self {
        Self {
            domain_suffix: domain_suffix.to_string(),
            root_namespace: "istio-system".to_string(),
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
        let mut g = Self::new(&mesh.domain_suffix);
        g.root_namespace = mesh.system_namespace.clone();
        g.with_outbound_policy(match mesh.outbound_traffic_policy.mode {
            isthmus_model::mesh::OutboundMode::AllowAny => OutboundPolicy::AllowAny,
            isthmus_model::mesh::OutboundMode::RegistryOnly => OutboundPolicy::RegistryOnly,
        })
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
        type Key = ServiceKey;
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
                    // Mesh mTLS: which endpoints take it depends on the PeerAuthentications.
                    proxy.sds.then_some(index.pa_hash),
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
                    let accepts = |e: &isthmus_registry::Endpoint, port: u16| {
                        index.peer_authentications.is_empty() || {
                            let labels = e
                                .labels
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect();
                            index
                                .peer_mtls(&self.root_namespace, svc.namespace(), &labels)
                                .for_port(u32::from(port))
                                != EffectiveMode::Disable
                        }
                    };
                    let output = Arc::new(clusters::service_resources(
                        svc,
                        &key.1,
                        dr.map(|d| &**d),
                        key.3
                            .is_some()
                            .then_some(&accepts as &clusters::AcceptsMtls),
                    ));
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
            cache.entries.retain(|(h, _, _, _), e| {
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
        let labels = (proxy.kind == ProxyKind::Router
            || index.uses_source_labels
            || (proxy.sds && index.pa_selects))
            .then(|| proxy.labels.clone());
        let view = ViewKey {
            kind: proxy.kind,
            namespace: proxy.namespace.clone(),
            cluster: proxy.cluster.clone(),
            labels,
            inbound,
            sds: proxy.sds,
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
