//! One cluster's objects and the services derived from them, kept up to date
//! incrementally: a change to one object recomputes only the services it can affect.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use internment::ArcIntern;
use isthmus_model::istio::service_entry::{Location, Resolution};
use isthmus_model::istio::{IstioConfig, ServiceEntry, WorkloadEntry};
use isthmus_model::{
    ClusterId, Hostname, Kind, LABEL_CLUSTER, LABEL_ISTIO_LOCALITY, LABEL_NETWORK, LABEL_REGION,
    LABEL_SUBZONE, LABEL_ZONE, Labels, Locality, LocalityParts, NetworkId, Object, ObjectKey,
    Protocol, Str, intern, spiffe_id,
};
use k8s_openapi::api::core::v1::{Pod, Service as KubeService};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::mesh_context::MeshContext;
use crate::model::{Address, ClusterService, Endpoint, EndpointPorts, Health, Origin, ServicePort};

/// Label of an EndpointSlice naming its Service.
const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// An object added or changed (`Upsert`), or removed (`Delete`).
#[derive(Clone, Debug)]
pub enum ObjectChange {
    Upsert(Arc<Object>),
    Delete(ObjectKey),
}

impl ObjectChange {
    pub fn key(&self) -> ObjectKey {
        match self {
            ObjectChange::Upsert(o) => o.key(),
            ObjectChange::Delete(k) => k.clone(),
        }
    }
}

/// What the shard keeps of each object: Pods and EndpointSlices in compact form (what
/// endpoints are built from, with interned strings), everything else whole.
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Object(Arc<Object>),
    Pod(Arc<PodInfo>),
    Slice(Arc<SliceInfo>),
}

/// What the registry needs of a Pod.
#[derive(Clone, Debug, PartialEq)]
struct PodInfo {
    name: Str,
    namespace: Str,
    labels: Labels,
    ips: Vec<IpAddr>,
    node: Option<Str>,
    ready: bool,
    /// Deleted, Succeeded or Failed: not an endpoint.
    terminal: bool,
    /// Container ports by name, for named target ports.
    named_ports: ArcIntern<Vec<(Str, u16)>>,
    /// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
    identity: Str,
    /// The pod's own `topology.istio.io/network` label.
    network_label: Option<NetworkId>,
    /// The pod's own `istio-locality` label.
    locality_label: Option<Locality>,
}

/// Label keys endpoints get, interned once.
static KEY_CLUSTER: std::sync::LazyLock<Str> = std::sync::LazyLock::new(|| intern(LABEL_CLUSTER));
static KEY_NETWORK: std::sync::LazyLock<Str> = std::sync::LazyLock::new(|| intern(LABEL_NETWORK));

/// What the registry needs of an EndpointSlice.
#[derive(Clone, Debug, PartialEq)]
struct SliceInfo {
    service: Option<Str>,
    ports: EndpointPorts,
    endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq)]
struct SliceEndpoint {
    addresses: Vec<IpAddr>,
    health: Health,
    pod: Option<Str>,
    zone: Option<Str>,
}

fn intern_labels(l: Option<&BTreeMap<String, String>>) -> Labels {
    ArcIntern::new(
        l.into_iter()
            .flatten()
            .map(|(k, v)| (intern(k), intern(v)))
            .collect(),
    )
}

impl PodInfo {
    fn new(p: &Pod, ctx: &MeshContext) -> Self {
        let spec = p.spec.as_ref();
        let labels = p.metadata.labels.as_ref();
        let namespace = p.metadata.namespace.as_deref().unwrap_or_default();
        let sa = spec
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default");
        Self {
            identity: intern(&spiffe_id(&ctx.trust_domain, namespace, sa)),
            network_label: labels
                .and_then(|l| l.get(LABEL_NETWORK))
                .filter(|n| !n.is_empty())
                .map(|n| NetworkId::new(n)),
            locality_label: labels
                .and_then(|l| l.get(LABEL_ISTIO_LOCALITY))
                .filter(|l| !l.is_empty())
                .map(|l| ArcIntern::new(LocalityParts::from_label(l))),
            name: intern(p.metadata.name.as_deref().unwrap_or_default()),
            namespace: intern(p.metadata.namespace.as_deref().unwrap_or_default()),
            labels: intern_labels(p.metadata.labels.as_ref()),
            ips: pod_ips(p),
            node: spec.and_then(|s| s.node_name.as_deref()).map(intern),
            ready: pod_ready(p),
            terminal: p.metadata.deletion_timestamp.is_some()
                || matches!(pod_phase(p), Some("Succeeded" | "Failed")),
            named_ports: ArcIntern::new(
                spec.into_iter()
                    .flat_map(|s| s.containers.iter())
                    .flat_map(|c| c.ports.iter().flatten())
                    .filter_map(|p| {
                        Some((
                            intern(p.name.as_deref()?),
                            u16::try_from(p.container_port).ok()?,
                        ))
                    })
                    .collect(),
            ),
        }
    }
}

impl SliceInfo {
    fn new(slice: &k8s_openapi::api::discovery::v1::EndpointSlice) -> Self {
        Self {
            service: slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SERVICE_NAME))
                .map(|s| intern(s)),
            ports: ArcIntern::new(
                slice
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            intern(p.name.as_deref().unwrap_or_default()),
                            u16::try_from(p.port?).ok()?,
                        ))
                    })
                    .collect(),
            ),
            endpoints: slice
                .endpoints
                .iter()
                .map(|ep| {
                    let c = ep.conditions.as_ref();
                    let ready = c.and_then(|c| c.ready).unwrap_or(true);
                    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                    let health = if ready && !terminating {
                        Health::Healthy
                    } else if terminating && serving {
                        Health::Draining
                    } else {
                        Health::Unhealthy
                    };
                    SliceEndpoint {
                        addresses: ep.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                        health,
                        pod: ep
                            .target_ref
                            .as_ref()
                            .filter(|r| r.kind.as_deref() == Some("Pod"))
                            .and_then(|r| r.name.as_deref())
                            .map(intern),
                        zone: ep.zone.as_deref().map(intern),
                    }
                })
                .collect(),
        }
    }
}

impl Entry {
    fn new(o: &Arc<Object>, ctx: &MeshContext) -> Self {
        match &**o {
            Object::Pod(p) => Entry::Pod(Arc::new(PodInfo::new(p, ctx))),
            Object::EndpointSlice(s) => Entry::Slice(Arc::new(SliceInfo::new(s))),
            _ => Entry::Object(o.clone()),
        }
    }

    fn object(&self) -> Option<&Object> {
        match self {
            Entry::Object(o) => Some(o),
            _ => None,
        }
    }
}

/// What one change did to a cluster.
#[derive(Debug, Default)]
pub struct ClusterDelta {
    /// Hostnames whose derived service changed (added, changed or removed).
    pub hostnames: BTreeSet<Hostname>,
    /// A Service labelled as a network gateway changed.
    pub gateways: bool,
    /// Istio config objects that changed.
    pub config: Vec<ObjectKey>,
    /// Secrets that changed (gateway certificates, by `credentialName`).
    pub secrets: Vec<ObjectKey>,
}

type NsName = (Str, Str);

/// One cluster: its objects, indexes over them, and the services derived from them.
pub struct ClusterState {
    pub id: ClusterId,
    ctx: Arc<MeshContext>,
    /// Whether this cluster's ServiceEntries and WorkloadEntries become services.
    reads_config: bool,
    objects: HashMap<ObjectKey, Entry>,
    slices_by_service: HashMap<NsName, BTreeSet<Str>>,
    pods_by_ip: HashMap<IpAddr, Arc<PodInfo>>,
    /// (namespace, label key, label value) → pod names.
    pods_by_label: HashMap<(Str, Str, Str), BTreeSet<Str>>,
    /// Per namespace: Services with a selector, ServiceEntries with a workloadSelector.
    selectors: HashMap<Str, BTreeMap<ObjectKey, BTreeMap<String, String>>>,
    /// Hostnames each Service / ServiceEntry produced.
    unit_hosts: HashMap<ObjectKey, Vec<Hostname>>,
    derived: HashMap<Hostname, Arc<ClusterService>>,
    /// The system namespace's `topology.istio.io/network` label.
    system_network: Option<NetworkId>,
    /// Locality of each Node, from its topology labels.
    node_localities: HashMap<Str, Locality>,
}

fn str_labels(o: &Object) -> Option<&BTreeMap<String, String>> {
    o.meta().labels.as_ref()
}

fn selector_matches(selector: &BTreeMap<String, String>, labels: &Labels) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.get(&intern(k)).is_some_and(|x| **x == **v))
}

/// The label selector of a Service or of a ServiceEntry's workloadSelector, if any.
fn unit_selector(o: &Object) -> Option<BTreeMap<String, String>> {
    let sel = match o {
        Object::Service(s) => s.spec.as_ref()?.selector.clone()?,
        Object::ServiceEntry(se) => se.spec.workload_selector.as_ref()?.labels.clone(),
        _ => return None,
    };
    (!sel.is_empty()).then_some(sel)
}

fn is_gateway_service(o: &Object) -> bool {
    matches!(o, Object::Service(_)) && str_labels(o).is_some_and(|l| l.contains_key(LABEL_NETWORK))
}

impl ClusterState {
    pub fn new(id: ClusterId, ctx: Arc<MeshContext>, reads_config: bool) -> Self {
        Self {
            id,
            ctx,
            reads_config,
            objects: HashMap::new(),
            slices_by_service: HashMap::new(),
            pods_by_ip: HashMap::new(),
            pods_by_label: HashMap::new(),
            selectors: HashMap::new(),
            unit_hosts: HashMap::new(),
            derived: HashMap::new(),
            system_network: None,
            node_localities: HashMap::new(),
        }
    }

    /// Objects kept whole (every kind but Pods and EndpointSlices).
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values().filter_map(Entry::object)
    }

    /// An object kept whole (not Pods and EndpointSlices).
    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key).and_then(Entry::object)
    }

    /// An object kept whole, shared.
    pub fn get_shared(&self, key: &ObjectKey) -> Option<&Arc<Object>> {
        match self.objects.get(key) {
            Some(Entry::Object(o)) => Some(o),
            _ => None,
        }
    }

    /// How many objects the shard holds.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn derived(&self) -> &HashMap<Hostname, Arc<ClusterService>> {
        &self.derived
    }

    /// Services labelled as east-west gateways.
    pub fn gateway_services(&self) -> impl Iterator<Item = &KubeService> {
        self.objects().filter_map(|o| match o {
            Object::Service(s) if is_gateway_service(o) => Some(s),
            _ => None,
        })
    }

    /// Applies a batch of changes; returns what changed.
    pub fn apply_all(&mut self, changes: impl IntoIterator<Item = ObjectChange>) -> ClusterDelta {
        let mut units = BTreeSet::new();
        let mut delta = ClusterDelta::default();
        for change in changes {
            self.apply_one(change, &mut units, &mut delta);
        }
        for unit in units {
            self.recompute(&unit, &mut delta.hostnames);
        }
        delta
    }

    /// Applies one change; returns what changed.
    pub fn apply(&mut self, change: ObjectChange) -> ClusterDelta {
        self.apply_all([change])
    }

    fn apply_one(
        &mut self,
        change: ObjectChange,
        units: &mut BTreeSet<ObjectKey>,
        delta: &mut ClusterDelta,
    ) {
        let key = change.key();
        let new = match &change {
            ObjectChange::Upsert(o) => Some(Entry::new(o, &self.ctx)),
            ObjectChange::Delete(_) => None,
        };
        let old = self.objects.get(&key).cloned();
        if old == new {
            return;
        }
        if let Some(o) = &old {
            self.unindex(&key, o);
        }
        match &new {
            Some(o) => {
                self.objects.insert(key.clone(), o.clone());
                self.index(&key, o);
            }
            None => {
                self.objects.remove(&key);
            }
        }
        if key.kind.is_istio() {
            delta.config.push(key.clone());
        } else if key.kind == Kind::Secret {
            delta.secrets.push(key.clone());
        }
        for o in old.iter().chain(new.iter()) {
            if o.object().is_some_and(is_gateway_service) {
                delta.gateways = true;
            }
            self.affected_units(&key, o, units);
        }
    }

    fn index(&mut self, key: &ObjectKey, e: &Entry) {
        match e {
            Entry::Slice(s) => {
                if let Some(svc) = &s.service {
                    self.slices_by_service
                        .entry((key.namespace.clone(), svc.clone()))
                        .or_default()
                        .insert(key.name.clone());
                }
            }
            Entry::Pod(p) => {
                for ip in &p.ips {
                    self.pods_by_ip.insert(*ip, p.clone());
                }
                for (k, v) in p.labels.iter() {
                    self.pods_by_label
                        .entry((key.namespace.clone(), k.clone(), v.clone()))
                        .or_default()
                        .insert(key.name.clone());
                }
            }
            Entry::Object(o) => match &**o {
                Object::Service(_) | Object::ServiceEntry(_) => {
                    if let Some(sel) = unit_selector(o) {
                        self.selectors
                            .entry(key.namespace.clone())
                            .or_default()
                            .insert(key.clone(), sel);
                    }
                }
                Object::Node(n) => {
                    let l = n.metadata.labels.as_ref();
                    let get = |k: &str| l.and_then(|l| l.get(k)).cloned().unwrap_or_default();
                    let locality = LocalityParts {
                        region: get(LABEL_REGION),
                        zone: get(LABEL_ZONE),
                        subzone: get(LABEL_SUBZONE),
                    };
                    self.node_localities
                        .insert(key.name.clone(), ArcIntern::new(locality));
                }
                Object::Namespace(ns) if key.name.as_ref() == self.ctx.system_namespace => {
                    self.system_network = ns
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LABEL_NETWORK))
                        .map(|n| NetworkId::new(n));
                }
                _ => {}
            },
        }
    }

    fn unindex(&mut self, key: &ObjectKey, e: &Entry) {
        fn remove<K: std::hash::Hash + Eq, V: Ord>(m: &mut HashMap<K, BTreeSet<V>>, k: K, v: &V) {
            if let Some(set) = m.get_mut(&k) {
                set.remove(v);
                if set.is_empty() {
                    m.remove(&k);
                }
            }
        }
        match e {
            Entry::Slice(s) => {
                if let Some(svc) = &s.service {
                    remove(
                        &mut self.slices_by_service,
                        (key.namespace.clone(), svc.clone()),
                        &key.name,
                    );
                }
            }
            Entry::Pod(p) => {
                for ip in &p.ips {
                    if self
                        .pods_by_ip
                        .get(ip)
                        .is_some_and(|q| q.name == p.name && q.namespace == p.namespace)
                    {
                        self.pods_by_ip.remove(ip);
                    }
                }
                for (k, v) in p.labels.iter() {
                    remove(
                        &mut self.pods_by_label,
                        (key.namespace.clone(), k.clone(), v.clone()),
                        &key.name,
                    );
                }
            }
            Entry::Object(o) => match &**o {
                Object::Service(_) | Object::ServiceEntry(_) => {
                    if let Some(m) = self.selectors.get_mut(&key.namespace) {
                        m.remove(key);
                    }
                }
                Object::Node(_) => {
                    self.node_localities.remove(&key.name);
                }
                Object::Namespace(_) if key.name.as_ref() == self.ctx.system_namespace => {
                    self.system_network = None;
                }
                _ => {}
            },
        }
    }

    /// The Services and ServiceEntries whose derived state `e` (an old or new version
    /// of the object `key`) can affect.
    fn affected_units(&self, key: &ObjectKey, e: &Entry, units: &mut BTreeSet<ObjectKey>) {
        let ns = &key.namespace;
        let by_selector = |labels: &Labels, pods_too: bool, units: &mut BTreeSet<ObjectKey>| {
            for (unit, sel) in self.selectors.get(ns).into_iter().flatten() {
                if (pods_too || unit.kind == Kind::ServiceEntry) && selector_matches(sel, labels) {
                    units.insert(unit.clone());
                }
            }
        };
        match e {
            Entry::Slice(s) => {
                if let Some(svc) = &s.service {
                    units.insert(ObjectKey {
                        kind: Kind::Service,
                        namespace: ns.clone(),
                        name: svc.clone(),
                    });
                }
            }
            Entry::Pod(p) => by_selector(&p.labels, true, units),
            Entry::Object(o) => match &**o {
                Object::Service(_) | Object::ServiceEntry(_) => {
                    units.insert(key.clone());
                }
                Object::Endpoints(_) => {
                    units.insert(ObjectKey {
                        kind: Kind::Service,
                        namespace: ns.clone(),
                        name: key.name.clone(),
                    });
                }
                Object::WorkloadEntry(we) => {
                    by_selector(&intern_labels(Some(&we.spec.labels)), false, units)
                }
                Object::Node(_) => {
                    // Nodes change rarely: find their pods by a scan rather than keep an index.
                    for (k, e) in &self.objects {
                        if let Entry::Pod(p) = e
                            && p.node.as_ref() == Some(&key.name)
                        {
                            self.affected_units(k, e, units);
                        }
                    }
                }
                Object::Namespace(_) if key.name.as_ref() == self.ctx.system_namespace => {
                    units.extend(
                        self.objects
                            .keys()
                            .filter(|k| matches!(k.kind, Kind::Service | Kind::ServiceEntry))
                            .cloned(),
                    );
                }
                _ => {}
            },
        }
    }

    /// Recomputes the services one Service or ServiceEntry produces.
    fn recompute(&mut self, unit: &ObjectKey, changed: &mut BTreeSet<Hostname>) {
        let fresh: Vec<ClusterService> = match self.get(unit) {
            Some(Object::Service(s)) => self.derive_service(unit, s).into_iter().collect(),
            Some(Object::ServiceEntry(se)) if self.reads_config => {
                self.derive_service_entry(unit, se)
            }
            _ => Vec::new(),
        };
        let old_hosts = self.unit_hosts.remove(unit).unwrap_or_default();
        let new_hosts: Vec<Hostname> = fresh.iter().map(|s| s.hostname.clone()).collect();
        for h in &old_hosts {
            if !new_hosts.contains(h) && self.derived.remove(h).is_some() {
                changed.insert(h.clone());
            }
        }
        for svc in fresh {
            let h = svc.hostname.clone();
            if self.derived.get(&h).is_none_or(|s| **s != svc) {
                self.derived.insert(h.clone(), Arc::new(svc));
                changed.insert(h);
            }
        }
        if !new_hosts.is_empty() {
            self.unit_hosts.insert(unit.clone(), new_hosts);
        }
    }

    fn export_to(&self, annotation: Option<&str>, explicit: &[String]) -> Vec<Str> {
        let list: Vec<Str> = match annotation {
            Some(a) => a
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(intern)
                .collect(),
            None => explicit.iter().map(|s| intern(s)).collect(),
        };
        if list.is_empty() {
            self.ctx.default_export_to.clone()
        } else {
            list
        }
    }

    fn derive_service(&self, key: &ObjectKey, svc: &KubeService) -> Option<ClusterService> {
        let spec = svc.spec.as_ref()?;
        let hostname = Hostname::new(&self.ctx.hostname(&key.name, &key.namespace));
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(ServicePort {
                    name: intern(p.name.as_deref().unwrap_or_default()),
                    port: u16::try_from(p.port).ok()?,
                    protocol: Protocol::select(
                        p.name.as_deref(),
                        p.app_protocol.as_deref(),
                        p.protocol.as_deref(),
                    ),
                })
            })
            .collect();
        let vips = spec
            .cluster_ips
            .clone()
            .unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect())
            .into_iter()
            .filter(|ip| ip.parse::<IpAddr>().is_ok())
            .collect();
        let annotations = svc.metadata.annotations.as_ref();
        let export_to = self.export_to(
            annotations
                .and_then(|a| a.get(isthmus_model::ANNOTATION_EXPORT_TO))
                .map(String::as_str),
            &[],
        );
        let endpoints = if spec.type_.as_deref() == Some("ExternalName") {
            spec.external_name
                .iter()
                .map(|name| {
                    self.endpoint(
                        Address::Dns(intern(name)),
                        ports_of(&ports),
                        None,
                        None,
                        &key.namespace,
                        Health::Healthy,
                    )
                })
                .collect()
        } else {
            self.service_endpoints(key, spec, &ports)
        };
        Some(ClusterService {
            cluster_local: self.ctx.is_cluster_local(hostname.as_str()),
            hostname,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            cluster: self.id.clone(),
            ports: ports.into(),
            vips,
            export_to,
            origin: Origin::Kubernetes,
            endpoints,
        })
    }

    fn pod(&self, namespace: &Str, name: &Str) -> Option<&PodInfo> {
        match self.objects.get(&ObjectKey {
            kind: Kind::Pod,
            namespace: namespace.clone(),
            name: name.clone(),
        }) {
            Some(Entry::Pod(p)) => Some(p),
            _ => None,
        }
    }

    fn pod_by_ip(&self, ip: IpAddr) -> Option<&PodInfo> {
        self.pods_by_ip.get(&ip).map(|p| &**p)
    }

    /// Endpoints from EndpointSlices, else from Endpoints, else from the Pods the selector matches.
    fn service_endpoints(
        &self,
        key: &ObjectKey,
        spec: &k8s_openapi::api::core::v1::ServiceSpec,
        ports: &[ServicePort],
    ) -> Arc<[Endpoint]> {
        let ns = &key.namespace;
        let mut out = Vec::new();
        if let Some(slices) = self.slices_by_service.get(&(ns.clone(), key.name.clone())) {
            for name in slices {
                let Some(Entry::Slice(slice)) = self.objects.get(&ObjectKey {
                    kind: Kind::EndpointSlice,
                    namespace: ns.clone(),
                    name: name.clone(),
                }) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    for ip in &ep.addresses {
                        let pod = ep
                            .pod
                            .as_ref()
                            .and_then(|n| self.pod(ns, n))
                            .or_else(|| self.pod_by_ip(*ip));
                        let mut e = self.endpoint(
                            Address::Ip(*ip),
                            slice.ports.clone(),
                            pod,
                            ep.zone.as_deref(),
                            ns,
                            ep.health,
                        );
                        if e.workload.is_none() {
                            e.workload = ep.pod.clone();
                        }
                        out.push(e);
                    }
                }
            }
            return finish(out);
        }
        if let Some(Object::Endpoints(eps)) = self.get(&ObjectKey {
            kind: Kind::Endpoints,
            namespace: ns.clone(),
            name: key.name.clone(),
        }) {
            for subset in eps.subsets.iter().flatten() {
                let eports: EndpointPorts = ArcIntern::new(
                    subset
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| {
                            Some((
                                intern(p.name.as_deref().unwrap_or_default()),
                                u16::try_from(p.port).ok()?,
                            ))
                        })
                        .collect(),
                );
                let all = subset
                    .addresses
                    .iter()
                    .flatten()
                    .map(|a| (a, Health::Healthy))
                    .chain(
                        subset
                            .not_ready_addresses
                            .iter()
                            .flatten()
                            .map(|a| (a, Health::Unhealthy)),
                    );
                for (a, health) in all {
                    let Ok(ip) = a.ip.parse::<IpAddr>() else {
                        continue;
                    };
                    let pod = a
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.as_deref())
                        .and_then(|n| self.pod(ns, &intern(n)))
                        .or_else(|| self.pod_by_ip(ip));
                    out.push(self.endpoint(Address::Ip(ip), eports.clone(), pod, None, ns, health));
                }
            }
            return finish(out);
        }
        // No endpoints written down: derive them from Pods, as the endpoints controller would.
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            return finish(out);
        };
        for pod in self.pods_matching(ns, selector) {
            let Some(ip) = pod.ips.first().copied() else {
                continue;
            };
            if pod.terminal {
                continue;
            }
            let eports = ArcIntern::new(
                ports
                    .iter()
                    .filter_map(|sp| Some((sp.name.clone(), target_port(spec, sp, pod)?)))
                    .collect(),
            );
            let health = if pod.ready {
                Health::Healthy
            } else {
                Health::Unhealthy
            };
            out.push(self.endpoint(Address::Ip(ip), eports, Some(pod), None, ns, health));
        }
        finish(out)
    }

    fn pods_matching<'a>(
        &'a self,
        ns: &Str,
        selector: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a PodInfo> + 'a {
        // Start from the smallest index set among the selector's labels.
        let candidates = selector
            .iter()
            .map(|(k, v)| self.pods_by_label.get(&(ns.clone(), intern(k), intern(v))))
            .min_by_key(|s| s.map_or(0, |s| s.len()))
            .flatten();
        let ns = ns.clone();
        candidates
            .into_iter()
            .flatten()
            .filter_map(move |name| self.pod(&ns, name))
            .filter(move |p| selector_matches(selector, &p.labels))
    }

    /// Builds an endpoint, taking labels, identity, network and locality from its pod.
    fn endpoint(
        &self,
        address: Address,
        ports: EndpointPorts,
        pod: Option<&PodInfo>,
        zone: Option<&str>,
        ns: &Str,
        health: Health,
    ) -> Endpoint {
        let ip = match &address {
            Address::Ip(ip) => Some(*ip),
            Address::Dns(_) => None,
        };
        let network = match pod.and_then(|p| p.network_label.clone()) {
            Some(n) => n,
            None => self.network(None, ip),
        };
        let locality = match pod.and_then(|p| p.locality_label.clone()) {
            Some(l) => l,
            None => self.locality(None, pod.and_then(|p| p.node.as_ref()), zone),
        };
        let identity = match pod {
            Some(p) => p.identity.clone(),
            None => intern(&spiffe_id(&self.ctx.trust_domain, ns, "default")),
        };
        Endpoint {
            address,
            ports,
            labels: self.labels(pod.map(|p| &p.labels), &network),
            identity,
            cluster: self.id.clone(),
            network,
            locality,
            health,
            workload: pod.map(|p| p.name.clone()),
            weight: 1,
        }
    }

    fn network(&self, label: Option<&str>, ip: Option<IpAddr>) -> NetworkId {
        if let Some(n) = label.filter(|n| !n.is_empty()) {
            return NetworkId::new(n);
        }
        if let Some(n) = &self.system_network {
            return n.clone();
        }
        self.ctx.network_fallback(&self.id, ip)
    }

    fn labels(&self, base: Option<&Labels>, network: &NetworkId) -> Labels {
        let mut m: BTreeMap<Str, Str> = base.map(|l| (**l).clone()).unwrap_or_default();
        m.insert(KEY_CLUSTER.clone(), self.id.0.clone());
        if !network.as_str().is_empty() {
            m.insert(KEY_NETWORK.clone(), network.0.clone());
        }
        ArcIntern::new(m)
    }

    fn locality(&self, label: Option<&str>, node: Option<&Str>, zone: Option<&str>) -> Locality {
        if let Some(l) = label.filter(|l| !l.is_empty()) {
            return ArcIntern::new(LocalityParts::from_label(l));
        }
        if let Some(l) = node.and_then(|n| self.node_localities.get(n)) {
            return l.clone();
        }
        ArcIntern::new(LocalityParts {
            zone: zone.unwrap_or_default().to_string(),
            ..Default::default()
        })
    }

    fn derive_service_entry(
        &self,
        key: &ObjectKey,
        se: &IstioConfig<ServiceEntry>,
    ) -> Vec<ClusterService> {
        let spec = &se.spec;
        let ns = &key.namespace;
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .filter_map(|p| {
                Some(ServicePort {
                    name: intern(&p.name),
                    port: u16::try_from(p.number).ok()?,
                    protocol: p
                        .protocol
                        .as_deref()
                        .and_then(Protocol::parse)
                        .unwrap_or_else(|| Protocol::select(Some(&p.name), None, None)),
                })
            })
            .collect();
        let resolution = spec.resolution.unwrap_or_default();
        let we_ports = |we: &WorkloadEntry| -> EndpointPorts {
            ArcIntern::new(
                spec.ports
                    .iter()
                    .filter_map(|p| {
                        let port = we
                            .ports
                            .get(&p.name)
                            .copied()
                            .or(p.target_port)
                            .unwrap_or(p.number);
                        Some((intern(&p.name), u16::try_from(port).ok()?))
                    })
                    .collect(),
            )
        };
        let mut endpoints = Vec::new();
        for we in spec.endpoints.iter().flatten() {
            endpoints.push(self.workload_entry_endpoint(we, we_ports(we), ns, None));
        }
        if let Some(sel) = spec
            .workload_selector
            .as_ref()
            .map(|w| &w.labels)
            .filter(|s| !s.is_empty())
        {
            for pod in self.pods_matching(ns, sel) {
                let Some(ip) = pod.ips.first().copied() else {
                    continue;
                };
                if pod.terminal {
                    continue;
                }
                let eports = ArcIntern::new(
                    spec.ports
                        .iter()
                        .filter_map(|p| {
                            Some((
                                intern(&p.name),
                                u16::try_from(p.target_port.unwrap_or(p.number)).ok()?,
                            ))
                        })
                        .collect(),
                );
                let health = if pod.ready {
                    Health::Healthy
                } else {
                    Health::Unhealthy
                };
                endpoints.push(self.endpoint(Address::Ip(ip), eports, Some(pod), None, ns, health));
            }
            for (k, e) in &self.objects {
                if let Some(Object::WorkloadEntry(we)) = e.object()
                    && &k.namespace == ns
                    && selector_matches(sel, &intern_labels(Some(&we.spec.labels)))
                {
                    endpoints.push(self.workload_entry_endpoint(
                        &we.spec,
                        we_ports(&we.spec),
                        ns,
                        Some(&k.name),
                    ));
                }
            }
        }
        let export_to = self.export_to(None, &spec.export_to);
        let origin = Origin::ServiceEntry {
            name: format!("{}/{}", key.namespace, key.name),
            mesh_internal: spec.location == Some(Location::MeshInternal),
            // Istio's spelling (DNS_ROUND_ROBIN), from the type's own serde names.
            resolution: serde_json::to_value(resolution)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
        };
        spec.hosts
            .iter()
            .map(|host| {
                let eps = if endpoints.is_empty()
                    && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
                {
                    // DNS resolution without endpoints: the host itself is the endpoint.
                    vec![self.endpoint(
                        Address::Dns(intern(host)),
                        ports_of(&ports),
                        None,
                        None,
                        ns,
                        Health::Healthy,
                    )]
                } else {
                    endpoints.clone()
                };
                ClusterService {
                    hostname: Hostname::new(host),
                    namespace: ns.clone(),
                    name: key.name.clone(),
                    cluster: self.id.clone(),
                    ports: ports.clone().into(),
                    vips: spec.addresses.clone(),
                    export_to: export_to.clone(),
                    cluster_local: self.ctx.is_cluster_local(host),
                    origin: origin.clone(),
                    endpoints: finish(eps),
                }
            })
            .collect()
    }

    fn workload_entry_endpoint(
        &self,
        we: &WorkloadEntry,
        ports: EndpointPorts,
        ns: &Str,
        name: Option<&Str>,
    ) -> Endpoint {
        let addr = we.address.as_deref().unwrap_or_default();
        let address = match addr.parse::<IpAddr>() {
            Ok(ip) => Address::Ip(ip),
            Err(_) => Address::Dns(intern(addr)),
        };
        let ip = match &address {
            Address::Ip(ip) => Some(*ip),
            Address::Dns(_) => None,
        };
        let network = self.network(
            we.network
                .as_deref()
                .or(we.labels.get(LABEL_NETWORK).map(String::as_str)),
            ip,
        );
        let labels = intern_labels(Some(&we.labels));
        Endpoint {
            address,
            ports,
            labels: self.labels(Some(&labels), &network),
            identity: intern(&spiffe_id(
                &self.ctx.trust_domain,
                ns,
                we.service_account.as_deref().unwrap_or("default"),
            )),
            cluster: self.id.clone(),
            network,
            locality: self.locality(
                we.locality
                    .as_deref()
                    .map(|l| l.replace('/', "."))
                    .as_deref(),
                None,
                None,
            ),
            health: Health::Healthy,
            workload: name.cloned(),
            weight: we.weight.filter(|w| *w > 0).unwrap_or(1),
        }
    }
}

fn ports_of(ports: &[ServicePort]) -> EndpointPorts {
    ArcIntern::new(ports.iter().map(|p| (p.name.clone(), p.port)).collect())
}

/// Endpoints in a stable order, so equal sets compare equal.
fn finish(mut v: Vec<Endpoint>) -> Arc<[Endpoint]> {
    v.sort_by(|a, b| (&a.address, &a.workload).cmp(&(&b.address, &b.workload)));
    v.dedup_by(|a, b| a.address == b.address && a.ports == b.ports);
    v.into()
}

fn pod_ips(p: &Pod) -> Vec<IpAddr> {
    let Some(st) = &p.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = st
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|i| i.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = st.pod_ip.as_deref().and_then(|i| i.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

fn pod_phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

/// A pod is ready when its Ready condition says so; a manifest that states no
/// conditions is taken as ready.
fn pod_ready(p: &Pod) -> bool {
    match p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
    {
        Some(c) => c.status == "True",
        None => true,
    }
}

/// The pod port a service port targets: a number, a named container port, or the
/// service port itself.
fn target_port(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    sp: &ServicePort,
    pod: &PodInfo,
) -> Option<u16> {
    let kp = spec
        .ports
        .iter()
        .flatten()
        .find(|p| u16::try_from(p.port).ok() == Some(sp.port))?;
    match &kp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod
            .named_ports
            .iter()
            .find(|(n, _)| **n == **name)
            .map(|(_, p)| *p),
    }
}
