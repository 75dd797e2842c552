//! Deriving a cluster's services and their endpoints from its Services (EndpointSlices,
//! Endpoints or selected Pods), ServiceEntries and WorkloadEntries.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use internment::ArcIntern;
use isthmus_model::istio::service_entry::{Location, Resolution};
use isthmus_model::istio::{IstioConfig, ServiceEntry, WorkloadEntry};
use isthmus_model::{
    Hostname, Kind, LABEL_CLUSTER, LABEL_NETWORK, Labels, Locality, LocalityParts, NetworkId,
    Object, ObjectKey, Protocol, Str, intern, spiffe_id,
};
use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{Address, ClusterService, Endpoint, EndpointPorts, Health, Origin, ServicePort};

use super::objects::{Entry, PodInfo, intern_labels};
use super::{ClusterState, selector_matches};

/// Label keys endpoints get, interned once.
static KEY_CLUSTER: std::sync::LazyLock<Str> = std::sync::LazyLock::new(|| intern(LABEL_CLUSTER));
static KEY_NETWORK: std::sync::LazyLock<Str> = std::sync::LazyLock::new(|| intern(LABEL_NETWORK));

impl ClusterState {
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

    pub(super) fn derive_service(
        &self,
        key: &ObjectKey,
        svc: &KubeService,
    ) -> Option<ClusterService> {
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

    pub(super) fn derive_service_entry(
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
