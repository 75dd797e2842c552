//! Compact summaries of Pods and EndpointSlices: what the cluster keeps of them instead
//! of the whole objects (the parts endpoints are built from, with interned strings).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use internment::ArcIntern;
use isthmus_model::{
    LABEL_ISTIO_LOCALITY, LABEL_NETWORK, Labels, Locality, LocalityParts, NetworkId, Object, Str,
    intern, spiffe_id,
};
use k8s_openapi::api::core::v1::Pod;

use crate::mesh_context::MeshContext;
use crate::model::{EndpointPorts, Health};

/// Label of an EndpointSlice naming its Service.
const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// What the shard keeps of each object: Pods and EndpointSlices in compact form (what
/// endpoints are built from, with interned strings), everything else whole.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Entry {
    Object(Arc<Object>),
    Pod(Arc<PodInfo>),
    Slice(Arc<SliceInfo>),
}

/// What the registry needs of a Pod.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PodInfo {
    pub(super) name: Str,
    pub(super) namespace: Str,
    pub(super) labels: Labels,
    pub(super) ips: Vec<IpAddr>,
    pub(super) node: Option<Str>,
    pub(super) ready: bool,
    /// Deleted, Succeeded or Failed: not an endpoint.
    pub(super) terminal: bool,
    /// Container ports by name, for named target ports.
    pub(super) named_ports: ArcIntern<Vec<(Str, u16)>>,
    /// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
    pub(super) identity: Str,
    /// The pod's own `topology.istio.io/network` label.
    pub(super) network_label: Option<NetworkId>,
    /// The pod's own `istio-locality` label.
    pub(super) locality_label: Option<Locality>,
}

/// What the registry needs of an EndpointSlice.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct SliceInfo {
    pub(super) service: Option<Str>,
    pub(super) ports: EndpointPorts,
    pub(super) endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct SliceEndpoint {
    pub(super) addresses: Vec<IpAddr>,
    pub(super) health: Health,
    pub(super) pod: Option<Str>,
    pub(super) zone: Option<Str>,
}

pub(super) fn intern_labels(l: Option<&BTreeMap<String, String>>) -> Labels {
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
    pub(super) fn new(o: &Arc<Object>, ctx: &MeshContext) -> Self {
        match &**o {
            Object::Pod(p) => Entry::Pod(Arc::new(PodInfo::new(p, ctx))),
            Object::EndpointSlice(s) => Entry::Slice(Arc::new(SliceInfo::new(s))),
            _ => Entry::Object(o.clone()),
        }
    }

    pub(super) fn object(&self) -> Option<&Object> {
        match self {
            Entry::Object(o) => Some(o),
            _ => None,
        }
    }
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
