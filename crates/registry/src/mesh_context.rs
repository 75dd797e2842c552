//! What every cluster shard needs to know about the mesh: names, identity, and how
//! endpoints map to networks.

use std::net::IpAddr;

use ipnet::IpNet;
use isthmus_model::{ClusterId, MeshConfig, NetworkId, Str, intern};

/// The mesh settings shards derive services with.
#[derive(Clone, Debug)]
pub struct MeshContext {
    pub domain_suffix: String,
    pub trust_domain: String,
    pub system_namespace: String,
    pub default_export_to: Vec<Str>,
    cluster_local_hosts: Vec<String>,
    from_registry: Vec<(ClusterId, NetworkId)>,
    from_cidr: Vec<(IpNet, NetworkId)>,
    cluster_networks: Vec<(ClusterId, NetworkId)>,
}

impl MeshContext {
    pub fn new(mesh: &MeshConfig) -> Self {
        let mut from_registry = Vec::new();
        let mut from_cidr = Vec::new();
        for (net, n) in &mesh.mesh_networks.networks {
            for e in &n.endpoints {
                if let Some(c) = &e.from_registry {
                    from_registry.push((c.clone(), net.clone()));
                }
                if let Some(cidr) = e.from_cidr.as_deref().and_then(|c| c.parse().ok()) {
                    from_cidr.push((cidr, net.clone()));
                }
            }
        }
        // Longest prefix first, so the most specific CIDR decides.
        from_cidr.sort_by_key(|(c, _): &(IpNet, NetworkId)| std::cmp::Reverse(c.prefix_len()));
        let export = if mesh.default_service_export_to.is_empty() {
            vec![intern("*")]
        } else {
            mesh.default_service_export_to
                .iter()
                .map(|s| intern(s))
                .collect()
        };
        Self {
            domain_suffix: mesh.domain_suffix.clone(),
            trust_domain: mesh.trust_domain.clone(),
            system_namespace: mesh.system_namespace.clone(),
            default_export_to: export,
            cluster_local_hosts: mesh
                .service_settings
                .iter()
                .filter(|s| s.settings.cluster_local)
                .flat_map(|s| s.hosts.iter().cloned())
                .collect(),
            from_registry,
            from_cidr,
            cluster_networks: mesh
                .clusters
                .iter()
                .filter_map(|c| c.network.clone().map(|n| (c.name.clone(), n)))
                .collect(),
        }
    }

    /// A context for tests and tools: defaults, no networks.
    pub fn simple() -> Self {
        Self {
            domain_suffix: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            system_namespace: "istio-system".into(),
            default_export_to: vec![intern("*")],
            cluster_local_hosts: Vec::new(),
            from_registry: Vec::new(),
            from_cidr: Vec::new(),
            cluster_networks: Vec::new(),
        }
    }

    pub fn hostname(&self, name: &str, namespace: &str) -> String {
        format!("{name}.{namespace}.svc.{}", self.domain_suffix)
    }

    pub fn is_cluster_local(&self, host: &str) -> bool {
        self.cluster_local_hosts
            .iter()
            .any(|p| isthmus_model::istio::validate::host_subset_of(host, p))
    }

    /// The network of an endpoint after its pod label and its cluster's system
    /// namespace label: the cluster's `network` in mesh.yaml, meshNetworks
    /// `fromRegistry`, then `fromCidr`; the unnamed default network otherwise.
    pub fn network_fallback(&self, cluster: &ClusterId, addr: Option<IpAddr>) -> NetworkId {
        if let Some((_, n)) = self.cluster_networks.iter().find(|(c, _)| c == cluster) {
            return n.clone();
        }
        if let Some((_, n)) = self.from_registry.iter().find(|(c, _)| c == cluster) {
            return n.clone();
        }
        if let Some(ip) = addr
            && let Some((_, n)) = self.from_cidr.iter().find(|(c, _)| c.contains(&ip))
        {
            return n.clone();
        }
        NetworkId::new("")
    }
}
