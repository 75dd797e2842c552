//! Config generation (first part): clusters and endpoints. A pure function of the
//! registry snapshot and the proxy: every service the proxy may see becomes
//! `outbound|PORT||HOST` (and `outbound|PORT|SUBSET|HOST` for each DestinationRule
//! subset), an EDS cluster whose ClusterLoadAssignment groups the service's endpoints
//! by locality. Listeners and routes follow.

use std::collections::BTreeMap;

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
use isthmus_model::Object;
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

/// Generates Envoy config with Istio's semantics.
#[derive(Clone, Debug)]
pub struct IstioGenerator {
    /// The mesh's domain suffix, for resolving short hosts in DestinationRules.
    pub domain_suffix: String,
}

impl Generator for IstioGenerator {
    fn generate(&self, snapshot: &Snapshot, proxy: &Proxy) -> ProxyResources {
        let mut out = ProxyResources::default();
        let subsets = self.subsets(snapshot);
        let mut services: Vec<&Service> = snapshot.services.values().map(|s| &**s).collect();
        services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        for svc in services {
            let visible: Vec<_> = svc
                .clusters
                .values()
                .filter(|cs| cs.visible_to_namespace(&proxy.namespace))
                .filter(|cs| !cs.cluster_local || cs.cluster == proxy.cluster)
                .collect();
            if visible.is_empty() {
                continue;
            }
            let host = svc.hostname.as_str();
            let host_subsets = subsets.get(host).map(Vec::as_slice).unwrap_or_default();
            for port in svc.ports() {
                let mut variants: Vec<(&str, Option<&BTreeMap<String, String>>)> = vec![("", None)];
                variants.extend(host_subsets.iter().map(|(n, l)| (n.as_str(), Some(l))));
                for (subset, labels) in variants {
                    let name = outbound_cluster_name(port.port, subset, host);
                    out.add(
                        resources::CLUSTER,
                        Resource::new(resources::CLUSTER, &name, &eds_cluster(&name)),
                    );
                    let endpoints = visible
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
                    out.add(
                        resources::ENDPOINT,
                        Resource::new(resources::ENDPOINT, &name, &cla),
                    );
                }
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
            let host = if dr.spec.host.contains('.') {
                dr.spec.host.clone()
            } else {
                format!(
                    "{}.{}.svc.{}",
                    dr.spec.host, key.namespace, self.domain_suffix
                )
            };
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
