//! Config generation (first part): clusters and endpoints. A pure function of the
//! registry snapshot and the proxy: every service the proxy may see becomes
//! `outbound|PORT||HOST` (and `outbound|PORT|SUBSET|HOST` for each DestinationRule
//! subset), an EDS cluster whose ClusterLoadAssignment groups the service's endpoints
//! by locality. Listeners and routes follow.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus, Locality,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use isthmus_model::{ClusterId, Hostname, Object};
use isthmus_registry::{Address as EpAddress, Endpoint, Health, Service, Snapshot};

use crate::proxy::Proxy;
use crate::resources::{self, ProxyResources, Resource};
use crate::server::Generator;

/// The cluster for traffic to destinations the mesh doesn't know (ALLOW_ANY).
pub const PASSTHROUGH: &str = "PassthroughCluster";
/// The cluster that drops traffic (REGISTRY_ONLY).
pub const BLACKHOLE: &str = "BlackHoleCluster";

/// `outbound|PORT|SUBSET|HOST`, Istio's cluster name.
pub fn outbound_cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// A DestinationRule subset: name and labels.
type Subset = (String, BTreeMap<String, String>);

/// What one service generates for a given set of visible clusters: its clusters and
/// load assignments. Shared by every proxy with the same view of the service.
type ServiceOutput = Arc<Vec<(&'static str, Resource)>>;

#[derive(Debug)]
struct CacheEntry {
    service: Arc<Service>,
    visible: Vec<ClusterId>,
    subsets: Vec<Subset>,
    output: ServiceOutput,
}

#[derive(Debug, Default)]
struct Cache {
    /// The snapshot version entries were last pruned at.
    version: u64,
    entries: HashMap<(Hostname, Vec<ClusterId>), CacheEntry>,
}

/// Generated configs of one snapshot version, by (namespace, cluster) of the proxy.
type Views = (u64, HashMap<(String, ClusterId), Arc<ProxyResources>>);

/// Generates Envoy config with Istio's semantics.
///
/// Generation is a pure function of (snapshot, proxy); what a service generates is
/// cached by the service's identity in the snapshot (an unchanged service is the same
/// `Arc` across snapshots), the clusters the proxy sees of it, and its subsets, so a
/// push re-encodes only what changed.
#[derive(Debug)]
pub struct IstioGenerator {
    /// The mesh's domain suffix, for resolving short hosts in DestinationRules.
    pub domain_suffix: String,
    cache: Mutex<Cache>,
    /// Generated configs of the latest snapshot, by proxy view.
    views: Mutex<Views>,
}

impl IstioGenerator {
    pub fn new(domain_suffix: &str) -> Self {
        Self {
            domain_suffix: domain_suffix.to_string(),
            cache: Mutex::new(Cache::default()),
            views: Mutex::new((u64::MAX, HashMap::new())),
        }
    }

    fn service_output(
        &self,
        svc: &Arc<Service>,
        visible: Vec<ClusterId>,
        subsets: &[Subset],
    ) -> ServiceOutput {
        let key = (svc.hostname.clone(), visible);
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = cache.entries.get(&key)
                && Arc::ptr_eq(&e.service, svc)
                && e.subsets == subsets
            {
                return e.output.clone();
            }
        }
        let output = Arc::new(service_resources(svc, &key.1, subsets));
        let entry = CacheEntry {
            service: svc.clone(),
            visible: key.1.clone(),
            subsets: subsets.to_vec(),
            output: output.clone(),
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .insert(key, entry);
        output
    }

    /// Drops cache entries of services gone from the snapshot (once per snapshot).
    fn prune(&self, snapshot: &Snapshot) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.version != snapshot.version {
            cache.version = snapshot.version;
            cache.entries.retain(|(h, _), e| {
                snapshot
                    .services
                    .get(h)
                    .is_some_and(|s| Arc::ptr_eq(s, &e.service))
                    && !e.visible.is_empty()
            });
        }
    }
}

/// The clusters and load assignments of one service, for proxies that see it in `visible`.
fn service_resources(
    svc: &Service,
    visible: &[ClusterId],
    subsets: &[Subset],
) -> Vec<(&'static str, Resource)> {
    let mut out = Vec::new();
    let host = svc.hostname.as_str();
    let cluster_services: Vec<_> = visible.iter().filter_map(|c| svc.clusters.get(c)).collect();
    for port in svc.ports() {
        let mut variants: Vec<(&str, Option<&BTreeMap<String, String>>)> = vec![("", None)];
        variants.extend(subsets.iter().map(|(n, l)| (n.as_str(), Some(l))));
        for (subset, labels) in variants {
            let name = outbound_cluster_name(port.port, subset, host);
            out.push((
                resources::CLUSTER,
                Resource::new(resources::CLUSTER, &name, &eds_cluster(&name)),
            ));
            let endpoints = cluster_services
                .iter()
                .flat_map(|cs| cs.endpoints.iter())
                .filter(|e| {
                    labels.is_none_or(|l| {
                        l.iter().all(|(k, v)| {
                            e.labels
                                .get(&isthmus_model::intern(k))
                                .is_some_and(|x| **x == **v)
                        })
                    })
                });
            let cla = load_assignment(&name, endpoints, &port);
            out.push((
                resources::ENDPOINT,
                Resource::new(resources::ENDPOINT, &name, &cla),
            ));
        }
    }
    out
}

impl Generator for IstioGenerator {
    fn generate(&self, snapshot: &Snapshot, proxy: &Proxy) -> Arc<ProxyResources> {
        // What this generator reads of a proxy: its namespace (exportTo) and its cluster
        // (cluster-local services). Proxies alike in both share one generated config.
        let view = (proxy.namespace.clone(), proxy.cluster.clone());
        {
            let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
            if views.0 != snapshot.version {
                *views = (snapshot.version, HashMap::new());
            }
            if let Some(r) = views.1.get(&view) {
                return r.clone();
            }
        }
        let out = Arc::new(self.generate_view(snapshot, proxy));
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .insert(view, out.clone());
        out
    }
}

impl IstioGenerator {
    fn generate_view(&self, snapshot: &Snapshot, proxy: &Proxy) -> ProxyResources {
        self.prune(snapshot);
        let mut out = ProxyResources::default();
        let subsets = self.subsets(snapshot);
        for svc in snapshot.services.values() {
            let visible: Vec<ClusterId> = svc
                .clusters
                .values()
                .filter(|cs| cs.visible_to_namespace(&proxy.namespace))
                .filter(|cs| !cs.cluster_local || cs.cluster == proxy.cluster)
                .map(|cs| cs.cluster.clone())
                .collect();
            if visible.is_empty() {
                continue;
            }
            let host_subsets = subsets
                .get(svc.hostname.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (type_url, r) in self.service_output(svc, visible, host_subsets).iter() {
                out.add(type_url, r.clone());
            }
        }
        let passthrough = Cluster {
            name: PASSTHROUGH.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: LbPolicy::ClusterProvided as i32,
            connect_timeout: Some(Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        };
        out.add(
            resources::CLUSTER,
            Resource::new(resources::CLUSTER, PASSTHROUGH, &passthrough),
        );
        let blackhole = Cluster {
            name: BLACKHOLE.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            connect_timeout: Some(Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        };
        out.add(
            resources::CLUSTER,
            Resource::new(resources::CLUSTER, BLACKHOLE, &blackhole),
        );
        out
    }
}

impl IstioGenerator {
    /// DestinationRule subsets by resolved host.
    fn subsets(&self, snapshot: &Snapshot) -> BTreeMap<String, Vec<Subset>> {
        let mut out: BTreeMap<String, Vec<Subset>> = BTreeMap::new();
        for (key, obj) in snapshot.config.iter() {
            let Object::DestinationRule(dr) = &**obj else {
                continue;
            };
            let host = isthmus_model::istio::resolve_host(
                &dr.spec.host,
                &key.namespace,
                &self.domain_suffix,
            );
            let entry = out.entry(host).or_default();
            for s in &dr.spec.subsets {
                if !entry.iter().any(|(n, _)| n == &s.name) {
                    entry.push((s.name.clone(), s.labels.clone()));
                }
            }
        }
        out
    }
}

fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                resource_api_version: ApiVersion::V3 as i32,
                ..Default::default()
            }),
            service_name: String::new(),
        }),
        connect_timeout: Some(Duration {
            seconds: 10,
            nanos: 0,
        }),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

fn health(h: Health) -> HealthStatus {
    match h {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Draining => HealthStatus::Draining,
    }
}

/// Endpoints grouped by locality, in a stable order.
fn load_assignment<'a>(
    name: &str,
    endpoints: impl Iterator<Item = &'a Endpoint>,
    port: &isthmus_registry::ServicePort,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<(String, String, String), Vec<LbEndpoint>> = BTreeMap::new();
    for e in endpoints {
        let EpAddress::Ip(ip) = &e.address else {
            continue;
        };
        let Some(target) = e.port_for(port) else {
            continue;
        };
        let l = &*e.locality;
        by_locality
            .entry((l.region.clone(), l.zone.clone(), l.subzone.clone()))
            .or_default()
            .push(LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                    address: Some(Address {
                        address: Some(AddressKind::SocketAddress(SocketAddress {
                            address: ip.to_string(),
                            port_specifier: Some(PortSpecifier::PortValue(u32::from(target))),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                health_status: health(e.health) as i32,
                load_balancing_weight: Some(UInt32Value {
                    value: e.weight.max(1),
                }),
                ..Default::default()
            });
    }
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(
                |((region, zone, sub_zone), lb_endpoints)| LocalityLbEndpoints {
                    locality: Some(Locality {
                        region,
                        zone,
                        sub_zone,
                    }),
                    load_balancing_weight: Some(UInt32Value {
                        value: lb_endpoints
                            .iter()
                            .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
                            .sum(),
                    }),
                    lb_endpoints,
                    ..Default::default()
                },
            )
            .collect(),
        ..Default::default()
    }
}
