//! What generation looks up in a snapshot's Istio config, indexed once per snapshot
//! version: VirtualServices by the gateway they bind to, DestinationRules by host,
//! Gateways, and which services each workload address serves (inbound).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use isthmus_model::istio::peer_authentication::{EffectiveMtls, PolicyRef, compose};
use isthmus_model::istio::refs::{
    MESH_GATEWAY, bound_gateways, export_visible, host_subset_of, labels_subset_of,
};
use isthmus_model::istio::{
    DestinationRule, Gateway, IstioConfig, PeerAuthentication, VirtualService, resolve_host,
};
use isthmus_model::{ClusterId, Hostname, Object, ObjectKey, Protocol};
use isthmus_registry::{Address, Service, Snapshot};

/// A VirtualService with its key and its hosts resolved in its namespace.
#[derive(Debug)]
pub struct VsEntry {
    pub key: ObjectKey,
    pub vs: Arc<VirtualService>,
    /// Hosts, short names resolved (`reviews` → `reviews.default.svc.cluster.local`).
    pub hosts: Vec<String>,
    /// Gateways as `namespace/name`, or `mesh`.
    pub gateways: Vec<String>,
}

impl VsEntry {
    /// Whether the VirtualService is visible to proxies in `namespace` (exportTo).
    pub fn visible_to(&self, namespace: &str) -> bool {
        export_visible(&self.vs.export_to, &self.key.namespace, namespace)
    }
}

/// A DestinationRule with its key and resolved host.
#[derive(Debug)]
pub struct DrEntry {
    pub key: ObjectKey,
    pub dr: Arc<IstioConfig<DestinationRule>>,
    pub host: String,
}

/// One port a workload serves: the endpoint (target) port and the protocol of the
/// service port behind it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundPort {
    pub port: u16,
    pub protocol: Protocol,
}

/// What the services selecting one workload address make it serve.
#[derive(Clone, Debug, Default)]
struct AtAddress {
    /// Each service's ports at the address, by hostname.
    by_service: BTreeMap<Hostname, Vec<InboundPort>>,
    /// Their union in port order; where two services name the same endpoint port,
    /// the first by hostname gives its protocol.
    ports: Arc<[InboundPort]>,
}

impl AtAddress {
    fn merge(&mut self) {
        let mut ports: Vec<InboundPort> = Vec::new();
        for p in self.by_service.values().flatten() {
            if !ports.iter().any(|x| x.port == p.port) {
                ports.push(p.clone());
            }
        }
        ports.sort();
        self.ports = ports.into();
    }
}

/// Which ports each workload address serves, kept from one snapshot to the next: only
/// the addresses of services that changed are worked out again.
#[derive(Clone, Debug, Default)]
struct Inbound {
    /// The services it was made from.
    services: imbl::HashMap<Hostname, Arc<Service>>,
    by_address: imbl::HashMap<(ClusterId, IpAddr), AtAddress>,
}

/// Services added, changed or removed between two snapshots' service maps.
pub fn changed_services(
    old: &imbl::HashMap<Hostname, Arc<Service>>,
    new: &imbl::HashMap<Hostname, Arc<Service>>,
) -> Vec<Hostname> {
    if old.ptr_eq(new) {
        return Vec::new();
    }
    let mut changed: Vec<Hostname> = new
        .iter()
        .filter(|(h, s)| !old.get(*h).is_some_and(|o| Arc::ptr_eq(o, s)))
        .map(|(h, _)| h.clone())
        .collect();
    changed.extend(old.keys().filter(|h| !new.contains_key(*h)).cloned());
    changed
}

/// A service's ports at each of its endpoints' addresses.
fn service_inbound(svc: &Service) -> HashMap<(ClusterId, IpAddr), Vec<InboundPort>> {
    let mut out: HashMap<(ClusterId, IpAddr), Vec<InboundPort>> = HashMap::new();
    for cs in svc.clusters.values() {
        for e in cs.endpoints.iter() {
            let Address::Ip(ip) = e.address else {
                continue;
            };
            for p in cs.ports.iter() {
                let Some(target) = e.port_for(p) else {
                    continue;
                };
                let ports = out.entry((cs.cluster.clone(), ip)).or_default();
                if !ports.iter().any(|x| x.port == target) {
                    ports.push(InboundPort {
                        port: target,
                        protocol: p.protocol,
                    });
                }
            }
        }
    }
    out
}

impl Inbound {
    fn build(snapshot: &Snapshot) -> Self {
        let mut out = Inbound {
            services: snapshot.services.clone(),
            by_address: imbl::HashMap::new(),
        };
        let mut by_address: HashMap<(ClusterId, IpAddr), AtAddress> = HashMap::new();
        for svc in snapshot.services.values() {
            for (key, ports) in service_inbound(svc) {
                by_address
                    .entry(key)
                    .or_default()
                    .by_service
                    .insert(svc.hostname.clone(), ports);
            }
        }
        for (key, mut at) in by_address {
            at.merge();
            out.by_address.insert(key, at);
        }
        out
    }

    /// The same for a later snapshot, given the services `changed` since: their
    /// addresses worked out again (everything anew when most services changed).
    fn update(&self, snapshot: &Snapshot, changed: &[Hostname]) -> Self {
        if self.services.ptr_eq(&snapshot.services) {
            return self.clone();
        }
        if changed.len() > 64.max(snapshot.services.len() / 4) {
            return Self::build(snapshot);
        }
        let mut by_address = self.by_address.clone();
        let mut touched = std::collections::HashSet::new();
        for host in changed {
            if let Some(old) = self.services.get(host) {
                for key in service_inbound(old).into_keys() {
                    if let Some(at) = by_address.get_mut(&key) {
                        at.by_service.remove(host);
                    }
                    touched.insert(key);
                }
            }
            if let Some(new) = snapshot.services.get(host) {
                for (key, ports) in service_inbound(new) {
                    by_address
                        .entry(key.clone())
                        .or_default()
                        .by_service
                        .insert(host.clone(), ports);
                    touched.insert(key);
                }
            }
        }
        for key in touched {
            let empty = match by_address.get_mut(&key) {
                Some(at) => {
                    at.merge();
                    at.by_service.is_empty()
                }
                None => false,
            };
            if empty {
                by_address.remove(&key);
            }
        }
        Inbound {
            services: snapshot.services.clone(),
            by_address,
        }
    }
}

/// The index of one snapshot version.
#[derive(Debug, Default)]
pub struct ConfigIndex {
    pub version: u64,
    /// Changes exactly when the Istio config or the secrets change (a new index of an
    /// unchanged config keeps its epoch).
    pub epoch: u64,
    config: imbl::OrdMap<ObjectKey, Arc<Object>>,
    secrets: imbl::OrdMap<(ClusterId, ObjectKey), Arc<Object>>,
    /// VirtualServices in Istio's precedence order (creation time, then namespace/name).
    pub virtual_services: Vec<Arc<VsEntry>>,
    /// Delegate candidates by (namespace, name).
    pub by_name: HashMap<(String, String), Arc<VsEntry>>,
    pub destination_rules: Vec<Arc<DrEntry>>,
    pub gateways: Vec<(ObjectKey, Arc<IstioConfig<Gateway>>)>,
    /// Ports each workload address serves.
    inbound: Inbound,
    /// Whether any VirtualService matches on the caller's labels (then proxies with
    /// different labels may get different routes).
    pub uses_source_labels: bool,
    /// PeerAuthentications, with what composition needs.
    pub peer_authentications: Arc<[PaEntry]>,
    /// Whether any PeerAuthentication selects workloads by label (then a sidecar's
    /// labels decide its inbound listener).
    pub pa_selects: bool,
    /// Changes exactly when the PeerAuthentications change (service caches key on it).
    pub pa_hash: u64,
}

/// A PeerAuthentication as composition reads it.
#[derive(Debug)]
pub struct PaEntry {
    pub namespace: String,
    pub name: String,
    pub created: String,
    pub spec: Arc<PeerAuthentication>,
}

fn creation(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| format!("{:?}", t.0))
        .unwrap_or_default()
}

impl ConfigIndex {
    /// Indexes a snapshot. With the index of an earlier one and the services changed
    /// since ([`changed_services`] of its [`services`](Self::services)), the config part
    /// is taken from it when the config and secrets are unchanged, and the inbound ports
    /// of unchanged services are kept.
    pub fn build(
        snapshot: &Snapshot,
        domain: &str,
        previous: Option<(&ConfigIndex, &[Hostname])>,
    ) -> Self {
        let mut out = match previous.map(|(p, _)| p) {
            Some(p) if p.config.ptr_eq(&snapshot.config) && p.secrets.ptr_eq(&snapshot.secrets) => {
                ConfigIndex {
                    version: snapshot.version,
                    epoch: p.epoch,
                    config: p.config.clone(),
                    secrets: p.secrets.clone(),
                    virtual_services: p.virtual_services.clone(),
                    by_name: p.by_name.clone(),
                    destination_rules: p.destination_rules.clone(),
                    gateways: p.gateways.clone(),
                    inbound: Inbound::default(),
                    uses_source_labels: p.uses_source_labels,
                    peer_authentications: p.peer_authentications.clone(),
                    pa_selects: p.pa_selects,
                    pa_hash: p.pa_hash,
                }
            }
            previous => {
                let mut i = Self::build_config(snapshot, domain);
                i.epoch = previous.map_or(0, |p| p.epoch + 1);
                i
            }
        };
        out.inbound = match previous {
            Some((p, changed)) => p.inbound.update(snapshot, changed),
            None => Inbound::build(snapshot),
        };
        out
    }

    /// The mutual TLS a workload in `namespace` with `labels` accepts (Istio's
    /// composition of PeerAuthentications, [`compose`]).
    pub fn peer_mtls(
        &self,
        root_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> EffectiveMtls {
        compose(
            root_namespace,
            namespace,
            labels,
            self.peer_authentications.iter().map(|p| PolicyRef {
                namespace: &p.namespace,
                name: &p.name,
                created: &p.created,
                spec: &p.spec,
            }),
        )
    }

    /// The services of the snapshot the index was built from.
    pub fn services(&self) -> &imbl::HashMap<Hostname, Arc<Service>> {
        &self.inbound.services
    }

    /// The ports the workload at `ip` in `cluster` serves, in port order.
    pub fn inbound(&self, cluster: &ClusterId, ip: IpAddr) -> Vec<InboundPort> {
        self.inbound
            .by_address
            .get(&(cluster.clone(), ip))
            .map(|a| a.ports.to_vec())
            .unwrap_or_default()
    }

    fn build_config(snapshot: &Snapshot, domain: &str) -> Self {
        let mut out = ConfigIndex {
            version: snapshot.version,
            config: snapshot.config.clone(),
            secrets: snapshot.secrets.clone(),
            ..Default::default()
        };
        let mut vss = Vec::new();
        let mut pas = Vec::new();
        for (key, obj) in snapshot.config.iter() {
            match &**obj {
                Object::VirtualService(c) => {
                    let ns = &*key.namespace;
                    let gateways = bound_gateways(&c.spec.gateways, ns);
                    let uses_source = c
                        .spec
                        .http
                        .iter()
                        .any(|h| h.r#match.iter().any(|m| !m.source_labels.is_empty()))
                        || c.spec
                            .tcp
                            .iter()
                            .any(|t| t.r#match.iter().any(|m| !m.source_labels.is_empty()))
                        || c.spec
                            .tls
                            .iter()
                            .any(|t| t.r#match.iter().any(|m| !m.source_labels.is_empty()));
                    out.uses_source_labels |= uses_source;
                    let entry = Arc::new(VsEntry {
                        key: key.clone(),
                        vs: Arc::new(c.spec.clone()),
                        hosts: c
                            .spec
                            .hosts
                            .iter()
                            .map(|h| resolve_host(h, ns, domain))
                            .collect(),
                        gateways,
                    });
                    out.by_name
                        .insert((ns.to_string(), key.name.to_string()), entry.clone());
                    vss.push((creation(&c.metadata), entry));
                }
                Object::DestinationRule(c) => out.destination_rules.push(Arc::new(DrEntry {
                    key: key.clone(),
                    host: resolve_host(&c.spec.host, &key.namespace, domain),
                    dr: Arc::new((*c).clone()),
                })),
                Object::Gateway(c) => out.gateways.push((key.clone(), Arc::new((*c).clone()))),
                Object::PeerAuthentication(c) => pas.push(PaEntry {
                    namespace: key.namespace.to_string(),
                    name: key.name.to_string(),
                    created: creation(&c.metadata),
                    spec: Arc::new(c.spec.clone()),
                }),
                _ => {}
            }
        }
        out.pa_selects = pas.iter().any(|p| {
            p.spec
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty())
        });
        out.pa_hash = xxhash_rust::xxh3::xxh3_64(
            format!(
                "{:?}",
                pas.iter()
                    .map(|p| (&p.namespace, &p.name, &p.created, &p.spec))
                    .collect::<Vec<_>>()
            )
            .as_bytes(),
        );
        out.peer_authentications = pas.into();
        vss.sort_by(|a, b| {
            (&a.0, &a.1.key.namespace, &a.1.key.name).cmp(&(
                &b.0,
                &b.1.key.namespace,
                &b.1.key.name,
            ))
        });
        // Delegates (VirtualServices without hosts) only apply through their parents.
        out.virtual_services = vss
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| !e.hosts.is_empty())
            .collect();
        out
    }

    /// VirtualServices bound to `gateway` (`mesh` or `namespace/name`) and visible to
    /// proxies in `namespace`.
    pub fn bound_to<'a>(
        &'a self,
        gateway: &'a str,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<VsEntry>> + 'a {
        self.virtual_services.iter().filter(move |e| {
            e.gateways.iter().any(|g| g == gateway)
                && (gateway != MESH_GATEWAY || e.visible_to(namespace))
        })
    }

    /// The DestinationRule in effect for `host` for a proxy in `namespace`: Istio's
    /// lookup order — the proxy's namespace, then the host's namespace, then any other
    /// exported to the proxy; an exact host before a wildcard.
    pub fn destination_rule(
        &self,
        host: &str,
        proxy_ns: &str,
        service_ns: &str,
    ) -> Option<&Arc<DrEntry>> {
        let candidates: Vec<&Arc<DrEntry>> = self
            .destination_rules
            .iter()
            .filter(|d| host_subset_of(host, &d.host))
            .filter(|d| {
                export_visible(&d.dr.spec.export_to, &d.key.namespace, proxy_ns)
                    && d.dr.spec.workload_selector.is_none()
            })
            .collect();
        let rank = |d: &DrEntry| {
            let ns_rank = if *d.key.namespace == *proxy_ns {
                0
            } else if *d.key.namespace == *service_ns {
                1
            } else {
                2
            };
            let exact = if d.host == host { 0 } else { 1 };
            // A more specific wildcard wins over a broader one.
            (exact, ns_rank, usize::MAX - d.host.len())
        };
        candidates.into_iter().min_by_key(|d| rank(d))
    }

    /// Gateways whose selector matches a router's labels.
    pub fn gateways_for<'a>(
        &'a self,
        labels: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a (ObjectKey, Arc<IstioConfig<Gateway>>)> + 'a {
        self.gateways.iter().filter(move |(_, g)| {
            !g.spec.selector.is_empty() && labels_subset_of(&g.spec.selector, labels)
        })
    }
}
