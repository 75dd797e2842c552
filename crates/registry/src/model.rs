//! What the registry holds: services by hostname, as each cluster defines them, with
//! their endpoints; the networks' east-west gateways; and what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use internment::ArcIntern;
use isthmus_model::{ClusterId, Hostname, Labels, Locality, NetworkId, ObjectKey, Protocol, Str};
use serde::Serialize;

/// A port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ServicePort {
    /// The port's name (may be empty for a single-port Service).
    pub name: Str,
    pub port: u16,
    pub protocol: Protocol,
}

/// Where a service definition comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum Origin {
    /// A Kubernetes Service.
    Kubernetes,
    /// An Istio ServiceEntry (`namespace/name`).
    ServiceEntry {
        name: String,
        mesh_internal: bool,
        resolution: String,
    },
}

/// An endpoint's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Address {
    Ip(IpAddr),
    /// A DNS name (ServiceEntry DNS endpoints, ExternalName services).
    Dns(Str),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Dns(h) => f.write_str(h),
        }
    }
}

/// Whether an endpoint takes traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Health {
    Healthy,
    Unhealthy,
    /// Terminating but still serving: kept for in-flight requests, not for new ones.
    Draining,
}

/// Ports of an endpoint by the service port name they serve: shared by every
/// endpoint of one EndpointSlice.
pub type EndpointPorts = ArcIntern<Vec<(Str, u16)>>;

/// One instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    pub address: Address,
    /// Target port per service port name.
    pub ports: EndpointPorts,
    pub cluster: ClusterId,
    pub network: NetworkId,
    pub locality: Locality,
    /// Workload labels, plus `topology.istio.io/cluster` and `topology.istio.io/network`.
    pub labels: Labels,
    /// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
    pub identity: Str,
    pub health: Health,
    /// The Pod (or WorkloadEntry) behind the endpoint, `name` in the service's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<Str>,
    /// Load-balancing weight (ServiceEntry endpoints; 1 otherwise).
    pub weight: u32,
}

impl Endpoint {
    /// The endpoint's port for a service port: by name, else the single declared port.
    pub fn port_for(&self, svc: &ServicePort) -> Option<u16> {
        self.ports
            .iter()
            .find(|(n, _)| *n == svc.name)
            .or_else(|| (self.ports.len() == 1).then(|| &self.ports[0]))
            .map(|(_, p)| *p)
    }
}

/// A service as one cluster (or one config cluster's ServiceEntry) defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterService {
    pub hostname: Hostname,
    pub namespace: Str,
    pub name: Str,
    pub cluster: ClusterId,
    pub ports: Arc<[ServicePort]>,
    /// ClusterIP / ServiceEntry address; none for headless services.
    pub vips: Vec<String>,
    /// Namespaces the service is visible to (`*` everywhere, `.` its own).
    pub export_to: Vec<Str>,
    /// Visible only to proxies in its own cluster (serviceSettings clusterLocal).
    pub cluster_local: bool,
    pub origin: Origin,
    pub endpoints: Arc<[Endpoint]>,
}

impl ClusterService {
    /// Whether a proxy in `namespace` may see this service.
    pub fn visible_to_namespace(&self, namespace: &str) -> bool {
        self.export_to.iter().any(|e| {
            &**e == "*" || (&**e == "." && *self.namespace == *namespace) || &**e == namespace
        })
    }
}

/// A service merged across clusters by hostname.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub hostname: Hostname,
    pub clusters: BTreeMap<ClusterId, Arc<ClusterService>>,
}

impl Service {
    /// Ports across clusters: the first cluster (by name) that defines a port number wins.
    pub fn ports(&self) -> Vec<ServicePort> {
        let mut seen = BTreeMap::new();
        for cs in self.clusters.values() {
            for p in cs.ports.iter() {
                seen.entry(p.port).or_insert_with(|| p.clone());
            }
        }
        seen.into_values().collect()
    }

    /// Every endpoint in every cluster.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.clusters.values().flat_map(|c| c.endpoints.iter())
    }

    pub fn namespace(&self) -> &str {
        self.clusters
            .values()
            .next()
            .map(|c| &*c.namespace)
            .unwrap_or_default()
    }
}

/// An address of a network's east-west gateway.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Gateway {
    pub network: NetworkId,
    /// An IP, or a hostname not resolved yet (resolved addresses appear as IPs).
    pub address: Address,
    pub port: u16,
    /// The cluster whose Service declared it; none for meshNetworks addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterId>,
    /// What declared the gateway, e.g. `Service istio-system/istio-eastwestgateway`.
    pub source: String,
}

/// What changed, at hostname granularity. Emitted only when something a proxy could
/// see changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeEvent {
    /// Hostnames whose definition or endpoints changed, with the clusters they changed in.
    pub services: BTreeMap<Hostname, BTreeSet<ClusterId>>,
    /// The set of east-west gateways changed.
    pub gateways: bool,
    /// Istio config objects added, changed or removed.
    pub config: BTreeSet<ObjectKey>,
    /// Secrets added, changed or removed, by cluster.
    pub secrets: BTreeSet<(ClusterId, ObjectKey)>,
}

impl ChangeEvent {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && !self.gateways
            && self.config.is_empty()
            && self.secrets.is_empty()
    }

    pub fn merge(&mut self, other: ChangeEvent) {
        for (h, cs) in other.services {
            self.services.entry(h).or_default().extend(cs);
        }
        self.gateways |= other.gateways;
        self.config.extend(other.config);
        self.secrets.extend(other.secrets);
    }
}
