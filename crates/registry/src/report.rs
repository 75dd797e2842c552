//! The registry as a user reads it: JSON, or tables like `istioctl proxy-config`.

use std::collections::BTreeMap;
use std::fmt::Write;

use isthmus_model::{ClusterId, MeshConfig};
use serde::Serialize;

use crate::model::{Address, ClusterService, Endpoint, Gateway, Health, Origin, ServicePort};
use crate::registry::{Snapshot, SyncState};

#[derive(Debug, Serialize)]
pub struct RegistryReport {
    pub clusters: Vec<ClusterReport>,
    pub services: Vec<ServiceReport>,
    pub gateways: Vec<Gateway>,
}

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub name: ClusterId,
    pub network: String,
    pub sync: SyncState,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    pub hostname: String,
    pub ports: Vec<ServicePort>,
    pub clusters: Vec<ClusterServiceReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterServiceReport {
    pub cluster: String,
    pub namespace: String,
    pub origin: Origin,
    pub vips: Vec<String>,
    pub export_to: Vec<String>,
    pub cluster_local: bool,
    pub endpoints: Vec<EndpointReport>,
}

#[derive(Debug, Serialize)]
pub struct EndpointReport {
    pub address: Address,
    pub ports: BTreeMap<String, u16>,
    pub cluster: String,
    pub network: String,
    pub locality: String,
    pub labels: BTreeMap<String, String>,
    pub identity: String,
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    pub weight: u32,
}

impl From<&Endpoint> for EndpointReport {
    fn from(e: &Endpoint) -> Self {
        Self {
            address: e.address.clone(),
            ports: e.ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            cluster: e.cluster.to_string(),
            network: e.network.to_string(),
            locality: e.locality.to_string(),
            labels: e
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            identity: e.identity.to_string(),
            health: e.health,
            workload: e.workload.as_ref().map(|w| w.to_string()),
            weight: e.weight,
        }
    }
}

fn cluster_report(cs: &ClusterService) -> ClusterServiceReport {
    ClusterServiceReport {
        cluster: cs.cluster.to_string(),
        namespace: cs.namespace.to_string(),
        origin: cs.origin.clone(),
        vips: cs.vips.clone(),
        export_to: cs.export_to.iter().map(|s| s.to_string()).collect(),
        cluster_local: cs.cluster_local,
        endpoints: cs.endpoints.iter().map(EndpointReport::from).collect(),
    }
}

impl RegistryReport {
    pub fn new(mesh: &MeshConfig, snap: &Snapshot) -> Self {
        let mut services: Vec<ServiceReport> = snap
            .services
            .values()
            .map(|s| ServiceReport {
                hostname: s.hostname.to_string(),
                ports: s.ports(),
                clusters: s.clusters.values().map(|c| cluster_report(c)).collect(),
            })
            .collect();
        services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Self {
            clusters: mesh
                .clusters
                .iter()
                .map(|c| ClusterReport {
                    name: c.name.clone(),
                    network: c
                        .network
                        .as_ref()
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                    sync: snap
                        .sync
                        .get(&c.name)
                        .copied()
                        .unwrap_or(SyncState::Syncing),
                })
                .collect(),
            services,
            gateways: snap.gateways.to_vec(),
        }
    }

    /// Tables: services, endpoints, gateways.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let mut t = Table::new(["SERVICE", "PORTS", "CLUSTERS", "ENDPOINTS"]);
        for s in &self.services {
            let ports = s.ports.iter().map(|p| {
                if p.name.is_empty() {
                    format!("{}/{}", p.port, p.protocol)
                } else {
                    format!("{}/{}({})", p.port, p.protocol, p.name)
                }
            });
            let total: usize = s.clusters.iter().map(|c| c.endpoints.len()).sum();
            let healthy: usize = s
                .clusters
                .iter()
                .flat_map(|c| &c.endpoints)
                .filter(|e| e.health == Health::Healthy)
                .count();
            t.row([
                s.hostname.clone(),
                ports.collect::<Vec<_>>().join(","),
                s.clusters
                    .iter()
                    .map(|c| c.cluster.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                format!("{total} ({healthy} healthy)"),
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
        let mut t = Table::new([
            "ENDPOINT", "SERVICE", "CLUSTER", "NETWORK", "LOCALITY", "HEALTH", "IDENTITY",
            "WORKLOAD",
        ]);
        for s in &self.services {
            for c in &s.clusters {
                for e in &c.endpoints {
                    let ports: Vec<String> = e.ports.values().map(|p| p.to_string()).collect();
                    t.row([
                        format!("{}:{}", e.address, ports.join(",")),
                        s.hostname.clone(),
                        e.cluster.clone(),
                        e.network.clone(),
                        e.locality.clone(),
                        format!("{:?}", e.health).to_uppercase(),
                        e.identity.clone(),
                        e.workload.clone().unwrap_or_default(),
                    ]);
                }
            }
        }
        out.push_str(&t.render());
        out.push('\n');
        let mut t = Table::new(["NETWORK", "GATEWAY", "CLUSTER", "SOURCE"]);
        for g in &self.gateways {
            t.row([
                g.network.to_string(),
                format!("{}:{}", g.address, g.port),
                g.cluster
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                g.source.clone(),
            ]);
        }
        out.push_str(&t.render());
        out
    }
}

/// A plain text table with columns padded to their widest cell.
pub struct Table<const N: usize> {
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    pub fn new(header: [&str; N]) -> Self {
        Self {
            rows: vec![header.map(String::from)],
        }
    }
    pub fn row(&mut self, cells: [String; N]) {
        self.rows.push(cells);
    }
    pub fn render(&self) -> String {
        let mut widths = [0usize; N];
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 == N {
                    line.push_str(c);
                } else {
                    let _ = write!(line, "{c:<w$}  ", w = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}
