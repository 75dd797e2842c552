//! The aggregated registry: every cluster's services merged by hostname, the networks'
//! gateways, and the Istio config of the config clusters. Changes come in per cluster;
//! what a proxy could see changing goes out as one [`ChangeEvent`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use isthmus_model::{
    ClusterId, DEFAULT_GATEWAY_PORT, Hostname, LABEL_GATEWAY_PORT, LABEL_NETWORK, MeshConfig,
    NetworkId, Object, ObjectKey, intern,
};
use k8s_openapi::api::core::v1::Service as KubeService;
use serde::Serialize;

use crate::cluster::{ClusterState, ObjectChange};
use crate::mesh_context::MeshContext;
use crate::model::{Address, ChangeEvent, Gateway, Service};
use crate::not_enforced::NotEnforcedLog;

/// How far a cluster's source has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Initial listing under way.
    Syncing,
    /// Everything listed; changes stream in.
    Synced,
    /// The initial listing took longer than allowed; serving what is known.
    Timeout,
    /// The source cannot be read; its last good state is kept.
    Unreachable,
}

/// An immutable view of the registry. Cloning it is cheap (shared structure).
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Increases with every change.
    pub version: u64,
    pub services: imbl::HashMap<Hostname, Arc<Service>>,
    pub gateways: Arc<[Gateway]>,
    /// Istio config objects from the config clusters.
    pub config: imbl::OrdMap<ObjectKey, Arc<Object>>,
    /// Secrets of every cluster (gateway certificates), by cluster and object.
    pub secrets: imbl::OrdMap<(ClusterId, ObjectKey), Arc<Object>>,
    pub sync: BTreeMap<ClusterId, SyncState>,
}

impl Snapshot {
    pub fn service(&self, host: &str) -> Option<&Arc<Service>> {
        self.services.get(&Hostname::new(host))
    }

    /// Gateways of a network.
    pub fn network_gateways<'a>(
        &'a self,
        network: &'a NetworkId,
    ) -> impl Iterator<Item = &'a Gateway> + 'a {
        self.gateways.iter().filter(move |g| &g.network == network)
    }
}

/// The aggregated registry.
pub struct Registry {
    mesh: Arc<MeshConfig>,
    clusters: BTreeMap<ClusterId, ClusterState>,
    services: imbl::HashMap<Hostname, Arc<Service>>,
    gateways: Arc<[Gateway]>,
    /// Gateway hostnames and the addresses they last resolved to.
    resolved: HashMap<String, Vec<IpAddr>>,
    config: imbl::OrdMap<ObjectKey, Arc<Object>>,
    secrets: imbl::OrdMap<(ClusterId, ObjectKey), Arc<Object>>,
    sync: BTreeMap<ClusterId, SyncState>,
    version: u64,
    /// Config fields accepted but not enforced yet, logged once per object and field.
    not_enforced: NotEnforcedLog,
}

impl Registry {
    pub fn new(mesh: &MeshConfig) -> Self {
        let ctx = Arc::new(MeshContext::new(mesh));
        let clusters = mesh
            .clusters
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    ClusterState::new(c.name.clone(), ctx.clone(), mesh.is_config_cluster(&c.name)),
                )
            })
            .collect();
        let mut r = Self {
            mesh: Arc::new(mesh.clone()),
            clusters,
            services: imbl::HashMap::new(),
            gateways: Arc::from([]),
            resolved: HashMap::new(),
            config: imbl::OrdMap::new(),
            secrets: imbl::OrdMap::new(),
            sync: mesh
                .clusters
                .iter()
                .map(|c| (c.name.clone(), SyncState::Syncing))
                .collect(),
            version: 0,
            not_enforced: NotEnforcedLog::default(),
        };
        r.refresh_gateways();
        r
    }

    pub fn mesh(&self) -> &MeshConfig {
        &self.mesh
    }

    pub fn cluster(&self, id: &ClusterId) -> Option<&ClusterState> {
        self.clusters.get(id)
    }

    /// Applies a batch of object changes from one cluster's source.
    pub fn apply(&mut self, cluster: &ClusterId, changes: Vec<ObjectChange>) -> ChangeEvent {
        let mut event = ChangeEvent::default();
        let Some(state) = self.clusters.get_mut(cluster) else {
            tracing::warn!(%cluster, "changes for a cluster that is not in the mesh configuration were dropped");
            return event;
        };
        let delta = state.apply_all(changes);
        for h in &delta.hostnames {
            let cs = state.derived().get(h).cloned();
            let mut svc = self
                .services
                .get(h)
                .map(|s| (**s).clone())
                .unwrap_or_else(|| Service {
                    hostname: h.clone(),
                    clusters: BTreeMap::new(),
                });
            match cs {
                Some(cs) => svc.clusters.insert(cluster.clone(), cs),
                None => svc.clusters.remove(cluster),
            };
            if svc.clusters.is_empty() {
                self.services.remove(h);
            } else {
                self.services.insert(h.clone(), Arc::new(svc));
            }
            event
                .services
                .entry(h.clone())
                .or_default()
                .insert(cluster.clone());
        }
        if self.mesh.is_config_cluster(cluster) {
            for key in delta.config {
                let new = state.get_shared(&key).cloned();
                let old = match &new {
                    Some(o) => self.config.insert(key.clone(), o.clone()),
                    None => self.config.remove(&key),
                };
                if old.as_deref() != new.as_deref() {
                    self.not_enforced.update(cluster, &key, new.as_deref());
                    event.config.insert(key);
                }
            }
        }
        for key in delta.secrets {
            let k = (cluster.clone(), key);
            let new = state.get_shared(&k.1).cloned();
            let old = match &new {
                Some(o) => self.secrets.insert(k.clone(), o.clone()),
                None => self.secrets.remove(&k),
            };
            if old.as_deref() != new.as_deref() {
                event.secrets.insert(k);
            }
        }
        if delta.gateways {
            event.gateways = self.refresh_gateways();
        }
        if !event.is_empty() {
            self.version += 1;
        }
        event
    }

    /// Records the addresses a gateway hostname resolved to.
    pub fn set_resolved(&mut self, hostname: &str, ips: Vec<IpAddr>) -> ChangeEvent {
        let mut ips = ips;
        ips.sort();
        ips.dedup();
        if self.resolved.get(hostname) == Some(&ips) {
            return ChangeEvent::default();
        }
        self.resolved.insert(hostname.to_string(), ips);
        let gateways = self.refresh_gateways();
        if gateways {
            self.version += 1;
        }
        ChangeEvent {
            gateways,
            ..Default::default()
        }
    }

    /// Gateway hostnames that need resolving.
    pub fn gateway_hostnames(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect_gateways(&mut |g: Gateway| {
            if let Address::Dns(h) = g.address {
                out.insert(h.to_string());
            }
        });
        out
    }

    pub fn set_sync(&mut self, cluster: &ClusterId, state: SyncState) {
        if self.sync.get(cluster) != Some(&state) {
            self.sync.insert(cluster.clone(), state);
            self.version += 1;
        }
    }

    /// Increases with every change (the version snapshots carry).
    pub fn snapshot_version(&self) -> u64 {
        self.version
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            services: self.services.clone(),
            gateways: self.gateways.clone(),
            config: self.config.clone(),
            secrets: self.secrets.clone(),
            sync: self.sync.clone(),
        }
    }

    /// Recomputes the gateway list; returns whether it changed.
    fn refresh_gateways(&mut self) -> bool {
        let mut all = Vec::new();
        let resolved = &self.resolved;
        self.collect_gateways(&mut |g: Gateway| match &g.address {
            Address::Dns(h) if resolved.contains_key(&**h) => {
                for ip in &resolved[&**h] {
                    all.push(Gateway {
                        address: Address::Ip(*ip),
                        ..g.clone()
                    });
                }
            }
            _ => all.push(g),
        });
        // One address may be declared twice (a labelled Service and meshNetworks'
        // registryServiceName): keep it once, naming both sources.
        all.sort();
        let mut merged: Vec<Gateway> = Vec::with_capacity(all.len());
        for g in all {
            match merged.last_mut() {
                Some(last)
                    if (&last.network, &last.address, last.port)
                        == (&g.network, &g.address, g.port) =>
                {
                    if !last.source.split("; ").any(|s| s == g.source) {
                        last.source = format!("{}; {}", last.source, g.source);
                    }
                    last.cluster = last.cluster.take().or(g.cluster);
                }
                _ => merged.push(g),
            }
        }
        let all = merged;
        if *self.gateways != *all {
            self.gateways = all.into();
            true
        } else {
            false
        }
    }

    /// Every gateway address, hostnames unresolved.
    fn collect_gateways(&self, out: &mut dyn FnMut(Gateway)) {
        for (id, state) in &self.clusters {
            for svc in state.gateway_services() {
                let Some(network) = svc
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_NETWORK))
                else {
                    continue;
                };
                let port = svc
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_GATEWAY_PORT))
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap_or(DEFAULT_GATEWAY_PORT);
                let source = format!(
                    "Service {}/{}",
                    svc.metadata.namespace.as_deref().unwrap_or_default(),
                    svc.metadata.name.as_deref().unwrap_or_default()
                );
                for address in service_addresses(svc) {
                    out(Gateway {
                        network: NetworkId::new(network),
                        address,
                        port,
                        cluster: Some(id.clone()),
                        source: source.clone(),
                    });
                }
            }
        }
        for (network, n) in &self.mesh.mesh_networks.networks {
            for g in &n.gateways {
                let Ok(port) = u16::try_from(g.port) else {
                    continue;
                };
                if let Some(addr) = &g.address {
                    let address = addr
                        .parse()
                        .map(Address::Ip)
                        .unwrap_or_else(|_| Address::Dns(intern(addr)));
                    out(Gateway {
                        network: network.clone(),
                        address,
                        port,
                        cluster: None,
                        source: "meshNetworks".into(),
                    });
                }
                if let Some(name) = &g.registry_service_name {
                    for (id, state) in &self.clusters {
                        if !self.cluster_on_network(id, network) {
                            continue;
                        }
                        let Some(Object::Service(svc)) =
                            service_by_hostname(state, name, &self.mesh.domain_suffix)
                        else {
                            continue;
                        };
                        for address in service_addresses(svc) {
                            out(Gateway {
                                network: network.clone(),
                                address,
                                port,
                                cluster: Some(id.clone()),
                                source: format!("meshNetworks registryServiceName {name}"),
                            });
                        }
                    }
                }
            }
        }
    }

    fn cluster_on_network(&self, cluster: &ClusterId, network: &NetworkId) -> bool {
        let in_network = self
            .mesh
            .mesh_networks
            .networks
            .get(network)
            .is_some_and(|n| {
                n.endpoints
                    .iter()
                    .any(|e| e.from_registry.as_ref() == Some(cluster))
            });
        in_network || self.mesh.cluster(cluster).and_then(|c| c.network.as_ref()) == Some(network)
    }
}

fn service_by_hostname<'a>(
    state: &'a ClusterState,
    host: &str,
    domain: &str,
) -> Option<&'a Object> {
    let rest = host.strip_suffix(domain)?.strip_suffix(".svc.")?;
    let (name, ns) = rest.split_once('.')?;
    state.get(&ObjectKey::new(isthmus_model::Kind::Service, ns, name))
}

/// A load balancer's addresses: ingress IPs and hostnames, then external IPs.
fn service_addresses(svc: &KubeService) -> Vec<Address> {
    let mut out = Vec::new();
    for ing in svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(ip) = ing.ip.as_deref().and_then(|i| i.parse().ok()) {
            out.push(Address::Ip(ip));
        } else if let Some(h) = ing.hostname.as_deref().filter(|h| !h.is_empty()) {
            out.push(Address::Dns(intern(h)));
        }
    }
    for ip in svc
        .spec
        .as_ref()
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
    {
        if let Ok(ip) = ip.parse() {
            out.push(Address::Ip(ip));
        }
    }
    out
}
