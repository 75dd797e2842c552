//! Clusters and endpoints: `outbound|PORT|SUBSET|HOST` per service port and
//! DestinationRule subset (EDS for Kubernetes services and STATIC ServiceEntries,
//! STRICT_DNS / LOGICAL_DNS for DNS ServiceEntries, ORIGINAL_DST for resolution NONE),
//! their ClusterLoadAssignments by locality, `inbound|PORT||` for what a workload
//! serves, and the fixed clusters (passthrough, blackhole, inbound passthrough).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, BindConfig, ConfigSource, HealthStatus, Locality,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use isthmus_model::ClusterId;
use isthmus_registry::{Address as EpAddress, Endpoint, Health, Origin, Service, ServicePort};

use isthmus_model::Protocol;
use isthmus_model::istio::destination_rule::ClientTlsMode;

use super::index::{DrEntry, InboundPort};
use super::mtls;
use super::policy::{self, PortInfo};
use crate::resources::{self, Resource};

/// The cluster for traffic to destinations the mesh doesn't know (ALLOW_ANY).
pub const PASSTHROUGH: &str = "PassthroughCluster";
/// The cluster that drops traffic (REGISTRY_ONLY).
pub const BLACKHOLE: &str = "BlackHoleCluster";
/// Inbound traffic to ports no service declares, to the workload as addressed.
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";
/// The source address inbound connections to the app come from (Istio's), so the
/// lab's capture rules can tell them apart from the app's own traffic.
pub const INBOUND_SOURCE: &str = "127.0.0.6";

/// `outbound|PORT|SUBSET|HOST`, Istio's cluster name.
pub fn outbound_cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// `inbound|PORT||`, Istio's inbound cluster name.
pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

fn seconds(s: i64) -> Option<Duration> {
    Some(Duration {
        seconds: s,
        nanos: 0,
    })
}

pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub(crate) fn socket_address(ip: &str, port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn cluster_of(name: &str, kind: DiscoveryType) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: seconds(10),
        lb_policy: if kind == DiscoveryType::OriginalDst {
            LbPolicy::ClusterProvided as i32
        } else {
            LbPolicy::RoundRobin as i32
        },
        ..Default::default()
    }
}

fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..cluster_of(name, DiscoveryType::Eds)
    }
}

/// How a service's endpoints reach Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Discovery {
    Eds,
    /// DNS names resolved by Envoy, every address used (ServiceEntry DNS).
    StrictDns,
    /// DNS names resolved by Envoy, one address at a time (DNS_ROUND_ROBIN).
    LogicalDns,
    /// Whatever address the caller used (resolution NONE).
    OriginalDst,
}

fn discovery_of(svc: &Service, visible: &[ClusterId]) -> Discovery {
    let origin = visible
        .iter()
        .find_map(|c| svc.clusters.get(c))
        .map(|cs| &cs.origin);
    match origin {
        Some(Origin::ServiceEntry { resolution, .. }) => match resolution.as_str() {
            "DNS" => Discovery::StrictDns,
            "DNS_ROUND_ROBIN" => Discovery::LogicalDns,
            "NONE" => Discovery::OriginalDst,
            _ => Discovery::Eds,
        },
        _ => Discovery::Eds,
    }
}

/// A subset name and its labels; `(None, None)` for the whole service.
type Variant<'a> = (Option<&'a str>, Option<&'a BTreeMap<String, String>>);

/// The clusters and load assignments of one service, for proxies that see it in
/// `visible`, with the DestinationRule in effect for them.
///
/// Whether an endpoint takes mesh mTLS on a (target) port: its PeerAuthentication there
/// is not DISABLE.
pub type AcceptsMtls<'a> = dyn Fn(&Endpoint, u16) -> bool + 'a;

/// `mtls`: the proxy holds a workload certificate (SDS), so mesh mTLS applies: auto
/// mTLS toward endpoints that run a sidecar and accept it (Istio marks them `tlsMode:
/// istio`) when the DestinationRule sets no TLS, and `ISTIO_MUTUAL` when it says so.
pub fn service_resources(
    svc: &Service,
    visible: &[ClusterId],
    dr: Option<&DrEntry>,
    mtls: Option<&AcceptsMtls>,
) -> Vec<(&'static str, Resource)> {
    let mut out = Vec::new();
    let host = svc.hostname.as_str();
    let cluster_services: Vec<_> = visible.iter().filter_map(|c| svc.clusters.get(c)).collect();
    let discovery = discovery_of(svc, visible);
    let subsets: Vec<(&str, &BTreeMap<String, String>)> = dr
        .map(|d| {
            d.dr.spec
                .subsets
                .iter()
                .map(|s| (s.name.as_str(), &s.labels))
                .collect()
        })
        .unwrap_or_default();
    for port in svc.ports() {
        // The service as a whole, then each subset with its labels.
        let mut variants: Vec<Variant> = vec![(None, None)];
        variants.extend(subsets.iter().map(|(n, l)| (Some(*n), Some(*l))));
        for (subset, labels) in variants {
            let name = outbound_cluster_name(port.port, subset.unwrap_or_default(), host);
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
            let cla = load_assignment(&name, endpoints, &port, discovery != Discovery::Eds, mtls);
            let mut cluster = match discovery {
                Discovery::Eds => eds_cluster(&name),
                Discovery::StrictDns | Discovery::LogicalDns => Cluster {
                    dns_lookup_family: DnsLookupFamily::V4Only as i32,
                    load_assignment: Some(cla.clone()),
                    ..cluster_of(
                        &name,
                        if discovery == Discovery::StrictDns {
                            DiscoveryType::StrictDns
                        } else {
                            DiscoveryType::LogicalDns
                        },
                    )
                },
                Discovery::OriginalDst => cluster_of(&name, DiscoveryType::OriginalDst),
            };
            let effective =
                dr.and_then(|d| policy::effective_policy(&d.dr.spec, subset, port.port));
            policy::apply(
                &mut cluster,
                effective.as_ref(),
                PortInfo {
                    port: port.port,
                    protocol: port.protocol,
                },
                host,
            );
            if mtls.is_some() && discovery != Discovery::OriginalDst {
                let tls_mode = effective
                    .as_ref()
                    .and_then(|p| p.tls.as_ref())
                    .map(|t| t.mode.unwrap_or_default());
                let socket = || {
                    mtls::client_socket(
                        &mtls::outbound_sni(port.port, subset.unwrap_or_default(), host),
                        &service_accounts(&cluster_services),
                        matches!(port.protocol, Protocol::Http2 | Protocol::Grpc),
                    )
                };
                match tls_mode {
                    // No TLS setting: auto mTLS, per endpoint.
                    None => cluster.transport_socket_matches = mtls::auto_matches(socket()),
                    Some(ClientTlsMode::IstioMutual) => cluster.transport_socket = Some(socket()),
                    Some(_) => {}
                }
            }
            out.push((
                resources::CLUSTER,
                Resource::new(resources::CLUSTER, &name, &cluster),
            ));
            if discovery == Discovery::Eds {
                out.push((
                    resources::ENDPOINT,
                    Resource::new(resources::ENDPOINT, &name, &cla),
                ));
            }
        }
    }
    out
}

/// The identities of a service's endpoints, sorted: whom a client's mTLS accepts as
/// the server (Istio's service accounts of a service).
fn service_accounts(
    cluster_services: &[&std::sync::Arc<isthmus_registry::ClusterService>],
) -> Vec<String> {
    let mut accounts: Vec<String> = cluster_services
        .iter()
        .flat_map(|cs| cs.endpoints.iter())
        .map(|e| e.identity.to_string())
        .filter(|i| !i.is_empty())
        .collect();
    accounts.sort();
    accounts.dedup();
    accounts
}

/// PassthroughCluster, BlackHoleCluster and, for sidecars, InboundPassthroughCluster.
pub fn fixed_clusters(sidecar: bool) -> Vec<Resource> {
    let mut out = vec![
        Resource::new(
            resources::CLUSTER,
            PASSTHROUGH,
            &cluster_of(PASSTHROUGH, DiscoveryType::OriginalDst),
        ),
        Resource::new(
            resources::CLUSTER,
            BLACKHOLE,
            &cluster_of(BLACKHOLE, DiscoveryType::Static),
        ),
    ];
    if sidecar {
        out.push(Resource::new(
            resources::CLUSTER,
            INBOUND_PASSTHROUGH,
            &inbound_original_dst(INBOUND_PASSTHROUGH),
        ));
    }
    out
}

/// A cluster to the workload itself at the address the caller used, from 127.0.0.6.
fn inbound_original_dst(name: &str) -> Cluster {
    Cluster {
        upstream_bind_config: Some(BindConfig {
            source_address: Some(SocketAddress {
                address: INBOUND_SOURCE.into(),
                port_specifier: Some(PortSpecifier::PortValue(0)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..cluster_of(name, DiscoveryType::OriginalDst)
    }
}

/// `inbound|PORT||` for every port the workload serves.
pub fn inbound_clusters(ports: &[InboundPort]) -> Vec<Resource> {
    ports
        .iter()
        .map(|p| {
            let name = inbound_cluster_name(p.port);
            let mut c = inbound_original_dst(&name);
            policy::apply(
                &mut c,
                None,
                PortInfo {
                    port: p.port,
                    protocol: p.protocol,
                },
                "",
            );
            Resource::new(resources::CLUSTER, &name, &c)
        })
        .collect()
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
    port: &ServicePort,
    dns_names: bool,
    mtls: Option<&AcceptsMtls>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<(String, String, String), Vec<LbEndpoint>> = BTreeMap::new();
    for e in endpoints {
        let address = match &e.address {
            EpAddress::Ip(ip) => ip.to_string(),
            // EDS carries addresses only; names are for DNS clusters.
            EpAddress::Dns(h) if dns_names => h.to_string(),
            EpAddress::Dns(_) => continue,
        };
        let Some(target) = e.port_for(port) else {
            continue;
        };
        let l = &*e.locality;
        let runs_sidecar = mtls::runs_sidecar(
            e.labels
                .get(&isthmus_model::intern(mtls::TLS_MODE_LABEL))
                .map(|v| v.as_ref()),
        ) && mtls.is_none_or(|accepts| accepts(e, target));
        by_locality
            .entry((l.region.clone(), l.zone.clone(), l.subzone.clone()))
            .or_default()
            .push(LbEndpoint {
                metadata: runs_sidecar.then(mtls::endpoint_metadata),
                host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                    address: Some(socket_address(&address, target)),
                    ..Default::default()
                })),
                health_status: health(e.health) as i32,
                load_balancing_weight: Some(UInt32Value {
                    value: e.weight.max(1),
                }),
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
