//! `mesh.yaml`: the mesh's clusters, networks and identity.
//!
//! ```yaml
//! meshID: mesh1                 # default "mesh1"
//! trustDomain: cluster.local    # identities are spiffe://TRUST_DOMAIN/ns/NS/sa/SA
//! domainSuffix: cluster.local   # service hostnames are NAME.NS.svc.DOMAIN_SUFFIX
//! systemNamespace: istio-system # where the control plane and gateways live
//! configClusters: [cluster1]    # which clusters' Istio config is read (default: the first)
//! clusters:
//! - name: cluster1
//!   network: network1           # the cluster's default network (like values.global.network)
//!   source:
//!     manifests: clusters/cluster1   # a directory of Kubernetes-format YAML, relative to mesh.yaml
//! meshNetworks:                 # Istio's meshNetworks, unchanged
//!   networks:
//!     network1:
//!       endpoints:
//!       - fromRegistry: cluster1
//!       - fromCidr: 198.18.0.0/16
//!       gateways:
//!       - registryServiceName: istio-eastwestgateway.istio-system.svc.cluster.local
//!         port: 15443
//!       - address: 203.0.113.10
//!         port: 15443
//! serviceSettings:              # like meshConfig.serviceSettings
//! - settings: {clusterLocal: true}
//!   hosts: ["*.kube-system.svc.cluster.local"]
//! defaultServiceExportTo: ["*"] # like meshConfig.defaultServiceExportTo
//! gatewayHostnameRefresh: 30s   # how often gateway hostnames are resolved again
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::codes;
use crate::istio::refs::host_subset_of;
use crate::{ClusterId, Diagnostic, NetworkId};

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot read mesh configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mesh configuration {path} is invalid:\n{}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Diagnostic>,
    },
}

fn default_mesh_id() -> String {
    "mesh1".into()
}
fn default_cluster_local() -> String {
    "cluster.local".into()
}
fn default_system_namespace() -> String {
    "istio-system".into()
}
fn default_refresh() -> String {
    "30s".into()
}

/// `outboundTrafficPolicy: {mode: ALLOW_ANY | REGISTRY_ONLY}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
}

/// Unknown destinations pass through (ALLOW_ANY, the default) or are dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    #[default]
    AllowAny,
    RegistryOnly,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(rename = "meshID", default = "default_mesh_id")]
    pub mesh_id: String,
    #[serde(default = "default_cluster_local")]
    pub trust_domain: String,
    #[serde(default = "default_cluster_local")]
    pub domain_suffix: String,
    #[serde(default = "default_system_namespace")]
    pub system_namespace: String,
    #[serde(default)]
    pub config_clusters: Vec<ClusterId>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub mesh_networks: MeshNetworks,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_settings: Vec<ServiceSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_service_export_to: Vec<String>,
    #[serde(default = "default_refresh")]
    pub gateway_hostname_refresh: String,
    /// What sidecars do with traffic to hosts the mesh doesn't know (Istio's
    /// meshConfig.outboundTrafficPolicy).
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// The certificate authority in the control plane.
    #[serde(default)]
    pub ca: CaConfig,
    /// The directory `mesh.yaml` was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The control plane's certificate authority (mesh.yaml `ca`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaConfig {
    /// A plug-in CA: a directory in Istio's `cacerts` layout (`ca-cert.pem`,
    /// `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`). Without it, a self-signed root
    /// is made and kept in `stateDir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacerts: Option<PathBuf>,
    /// Where the control plane keeps what it generates (the self-signed root);
    /// default `.isthmus` beside mesh.yaml.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Validity of workload certificates (Istio's DEFAULT_WORKLOAD_CERT_TTL, 24h).
    #[serde(default = "default_workload_cert_ttl", rename = "workloadCertTTL")]
    pub workload_cert_ttl: String,
    /// The longest validity a workload may ask for (Istio's MAX_WORKLOAD_CERT_TTL, 90 days).
    #[serde(
        default = "default_max_workload_cert_ttl",
        rename = "maxWorkloadCertTTL"
    )]
    pub max_workload_cert_ttl: String,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            cacerts: None,
            state_dir: default_state_dir(),
            workload_cert_ttl: default_workload_cert_ttl(),
            max_workload_cert_ttl: default_max_workload_cert_ttl(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".isthmus")
}
fn default_workload_cert_ttl() -> String {
    "24h".into()
}
fn default_max_workload_cert_ttl() -> String {
    "2160h".into()
}

/// Who signs a cluster's service-account tokens: the public keys a token is checked
/// against when a workload of that cluster asks the CA for a certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountIssuer {
    /// A JWKS document with the issuer's public keys (what the API server serves at
    /// `/openid/v1/jwks`).
    pub jwks: PathBuf,
    /// The tokens' `iss`, checked when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    pub name: ClusterId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkId>,
    pub source: ClusterSource,
    /// The issuer of the cluster's service-account tokens, to authenticate its
    /// workloads at the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_issuer: Option<ServiceAccountIssuer>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSource {
    /// A directory of Kubernetes-format YAML, watched for changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<PathBuf>,
    /// A kubeconfig for a live API server (not served yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshNetworks {
    #[serde(default)]
    pub networks: BTreeMap<NetworkId, Network>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default)]
    pub endpoints: Vec<NetworkEndpoints>,
    #[serde(default)]
    pub gateways: Vec<NetworkGateway>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkEndpoints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_registry: Option<ClusterId>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkGateway {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_service_name: Option<String>,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSettings {
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    #[serde(default)]
    pub cluster_local: bool,
}

/// Durations as Istio writes them (`30s`, `500ms`, `1m30s`): the parser Istio config uses.
pub use crate::istio::validate::parse_duration;

impl MeshConfig {
    /// Reads and validates `mesh.yaml`.
    pub fn load(path: &Path) -> Result<Self, MeshError> {
        let text = std::fs::read_to_string(path).map_err(|source| MeshError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(path, &text, &base)
    }

    /// Parses and validates `mesh.yaml` text; relative paths resolve against `base_dir`.
    pub fn parse(path: &Path, text: &str, base_dir: &Path) -> Result<Self, MeshError> {
        let invalid = |problems| MeshError::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        let pos = crate::SourcePos {
            file: path.into(),
            document: 0,
            line: 1,
        };
        let (text, _) = crate::yaml::kubernetes_compatible(text);
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| {
            let mut d = Diagnostic::error(codes::YAML_SYNTAX_ERROR, format!("not valid YAML: {e}"))
                .at(&pos);
            d.line = e.location().map(|l| l.line());
            invalid(vec![d])
        })?;
        let (mut mesh, unknown): (MeshConfig, _) =
            crate::document::typed(value).map_err(|(field, msg)| {
                invalid(vec![
                    Diagnostic::error(codes::MESH_CONFIG_ERROR, msg)
                        .with_field(field)
                        .at(&pos),
                ])
            })?;
        mesh.base_dir = base_dir.to_path_buf();
        let mut problems: Vec<Diagnostic> = unknown
            .into_iter()
            .map(|f| {
                Diagnostic::error(
                    codes::UNKNOWN_FIELD,
                    format!("unknown field {f:?} in mesh configuration"),
                )
                .with_field(f)
            })
            .collect();
        mesh.check(&mut problems);
        for p in &mut problems {
            *p = p.clone().at(&pos);
        }
        if problems.iter().any(Diagnostic::is_error) {
            return Err(invalid(problems));
        }
        for p in problems {
            tracing::warn!("{p}");
        }
        if mesh.config_clusters.is_empty()
            && let Some(first) = mesh.clusters.first()
        {
            mesh.config_clusters.push(first.name.clone());
        }
        Ok(mesh)
    }

    fn check(&self, out: &mut Vec<Diagnostic>) {
        let err = |field: String, msg: String| {
            Diagnostic::error(codes::MESH_CONFIG_ERROR, msg).with_field(field)
        };
        let warn = |field: String, msg: String| {
            Diagnostic::warning(codes::MESH_CONFIG_ERROR, msg).with_field(field)
        };
        if self.clusters.is_empty() {
            out.push(err(
                "clusters".into(),
                "no clusters: list at least one under `clusters`".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let f = |s: &str| format!("clusters[{i}].{s}");
            if c.name.as_str().is_empty() {
                out.push(err(f("name"), "a cluster needs a name".into()));
            } else if !names.insert(c.name.clone()) {
                out.push(err(
                    f("name"),
                    format!("cluster {} is listed twice", c.name),
                ));
            }
            match (&c.source.manifests, &c.source.kubeconfig) {
                (Some(dir), None) => {
                    let dir = self.resolve(dir);
                    if !dir.is_dir() {
                        out.push(err(
                            f("source.manifests"),
                            format!("cluster {}: {} is not a directory (create it, or fix the path; it is relative to mesh.yaml)", c.name, dir.display()),
                        ));
                    }
                }
                (None, Some(_)) => out.push(err(
                    f("source.kubeconfig"),
                    format!("cluster {}: kubeconfig sources are not supported yet; use `manifests: DIR`", c.name),
                )),
                _ => out.push(err(f("source"), format!("cluster {}: set exactly one of source.manifests or source.kubeconfig", c.name))),
            }
        }
        for (i, c) in self.config_clusters.iter().enumerate() {
            if !names.contains(c) {
                out.push(err(
                    format!("configClusters[{i}]"),
                    format!("config cluster {c} is not one of the clusters"),
                ));
            }
        }
        for (net, n) in &self.mesh_networks.networks {
            for (i, e) in n.endpoints.iter().enumerate() {
                let f = format!("meshNetworks.networks.{net}.endpoints[{i}]");
                match (&e.from_cidr, &e.from_registry) {
                    (Some(cidr), None) => {
                        if cidr.parse::<ipnet::IpNet>().is_err() {
                            out.push(err(
                                format!("{f}.fromCidr"),
                                format!("{cidr:?} is not a CIDR such as 198.18.0.0/16"),
                            ));
                        }
                    }
                    (None, Some(reg)) => {
                        if !names.contains(reg) {
                            out.push(warn(
                                format!("{f}.fromRegistry"),
                                format!("no cluster named {reg}"),
                            ));
                        }
                    }
                    _ => out.push(err(f, "set exactly one of fromCidr or fromRegistry".into())),
                }
            }
            for (i, g) in n.gateways.iter().enumerate() {
                let f = format!("meshNetworks.networks.{net}.gateways[{i}]");
                if g.address.is_some() == g.registry_service_name.is_some() {
                    out.push(err(
                        f.clone(),
                        "set exactly one of address or registryServiceName".into(),
                    ));
                }
                if !(1..=65535).contains(&g.port) {
                    out.push(err(
                        format!("{f}.port"),
                        format!("port {} is not between 1 and 65535", g.port),
                    ));
                }
            }
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if let Some(issuer) = &c.service_account_issuer {
                let jwks = self.resolve(&issuer.jwks);
                if !jwks.is_file() {
                    out.push(err(
                        format!("clusters[{i}].serviceAccountIssuer.jwks"),
                        format!("cluster {}: {} is not a file (the issuer's public keys as JWKS; the path is relative to mesh.yaml)", c.name, jwks.display()),
                    ));
                }
            }
        }
        if let Some(dir) = &self.ca.cacerts
            && !self.resolve(dir).is_dir()
        {
            out.push(err(
                "ca.cacerts".into(),
                format!("{} is not a directory (a cacerts directory in Istio's layout; `isthmus create-cacerts` makes one)", self.resolve(dir).display()),
            ));
        }
        for (field, value) in [
            ("ca.workloadCertTTL", &self.ca.workload_cert_ttl),
            ("ca.maxWorkloadCertTTL", &self.ca.max_workload_cert_ttl),
        ] {
            if parse_duration(value).is_none_or(|d| d.is_zero()) {
                out.push(err(
                    field.into(),
                    format!("{value:?} is not a positive duration such as 24h"),
                ));
            }
        }
        if self.workload_cert_ttl() > self.max_workload_cert_ttl() {
            out.push(err(
                "ca.workloadCertTTL".into(),
                format!(
                    "{} is longer than ca.maxWorkloadCertTTL {}",
                    self.ca.workload_cert_ttl, self.ca.max_workload_cert_ttl
                ),
            ));
        }
        if parse_duration(&self.gateway_hostname_refresh).is_none_or(|d| d.is_zero()) {
            out.push(err(
                "gatewayHostnameRefresh".into(),
                format!(
                    "{:?} is not a positive duration such as 30s",
                    self.gateway_hostname_refresh
                ),
            ));
        }
    }

    /// Resolves a path from mesh.yaml against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn cluster(&self, id: &ClusterId) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| &c.name == id)
    }

    pub fn is_config_cluster(&self, id: &ClusterId) -> bool {
        self.config_clusters.contains(id)
    }

    /// Validity of workload certificates.
    pub fn workload_cert_ttl(&self) -> Duration {
        parse_duration(&self.ca.workload_cert_ttl).unwrap_or(Duration::from_secs(24 * 3600))
    }

    /// The longest validity a workload may ask for.
    pub fn max_workload_cert_ttl(&self) -> Duration {
        parse_duration(&self.ca.max_workload_cert_ttl)
            .unwrap_or(Duration::from_secs(90 * 24 * 3600))
    }

    /// How often gateway hostnames are resolved again.
    pub fn gateway_refresh(&self) -> Duration {
        parse_duration(&self.gateway_hostname_refresh).unwrap_or(Duration::from_secs(30))
    }

    /// Whether `host` is cluster-local by `serviceSettings`.
    pub fn is_cluster_local(&self, host: &str) -> bool {
        self.service_settings
            .iter()
            .filter(|s| s.settings.cluster_local)
            .any(|s| s.hosts.iter().any(|p| host_subset_of(host, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MeshConfig, MeshError> {
        let dir = std::env::temp_dir();
        MeshConfig::parse(Path::new("mesh.yaml"), text, &dir)
    }

    #[test]
    fn defaults_apply() {
        let m = parse("clusters:\n- name: c1\n  source: {manifests: .}\n").unwrap();
        assert_eq!(m.mesh_id, "mesh1");
        assert_eq!(m.trust_domain, "cluster.local");
        assert_eq!(m.domain_suffix, "cluster.local");
        assert_eq!(m.system_namespace, "istio-system");
        assert_eq!(m.config_clusters, vec![ClusterId::new("c1")]);
        assert_eq!(m.gateway_refresh(), Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("clusters:\n- name: c1\n  netwrk: n1\n  source: {manifests: .}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("clusters[0].netwrk"), "{e}");
        let e = parse("clusters:\n- name: c1\n  source: {manifests: /nonexistent/dir}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("clusters[0].source.manifests") && e.contains("not a directory"),
            "{e}"
        );
        let e = parse("clusters:\n- name: c1\n  source: {manifests: .}\nmeshNetworks:\n  networks:\n    n1:\n      endpoints:\n      - fromCidr: 300.0.0.0/8\n").unwrap_err().to_string();
        assert!(
            e.contains("meshNetworks.networks.n1.endpoints[0].fromCidr"),
            "{e}"
        );
        let e = parse("clusters: 3\n").unwrap_err().to_string();
        assert!(e.contains("clusters"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5"), None);
    }

    #[test]
    fn cluster_local_hosts() {
        let m = parse("clusters:\n- name: c1\n  source: {manifests: .}\nserviceSettings:\n- settings: {clusterLocal: true}\n  hosts: ['*.kube-system.svc.cluster.local', 'db.default.svc.cluster.local']\n").unwrap();
        assert!(m.is_cluster_local("dns.kube-system.svc.cluster.local"));
        assert!(m.is_cluster_local("db.default.svc.cluster.local"));
        assert!(!m.is_cluster_local("web.default.svc.cluster.local"));
    }
}
