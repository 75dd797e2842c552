//! What a lab runs: clusters, their networks and address ranges, where the control
//! plane runs, which namespaces get sidecars, and which manifests to apply at start.

use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::LabError;
use crate::runtime::LAB_RANGE;

/// A lab topology (`--topology NAME|FILE`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    pub name: String,
    /// The mesh's id, as in mesh.yaml.
    #[serde(default = "default_mesh_id")]
    pub mesh_id: String,
    pub clusters: Vec<ClusterSpec>,
    /// Where relative manifest paths resolve (the topology file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_mesh_id() -> String {
    "mesh1".into()
}

/// One cluster of the lab.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    pub network: String,
    /// Pod addresses; the first address is the cluster's gateway (the bridge).
    pub pod_cidr: Ipv4Net,
    /// ClusterIPs of Services.
    pub service_cidr: Ipv4Net,
    /// Whether a control plane (`isthmus discovery`) runs in this cluster, as istiod
    /// in istio-system.
    #[serde(default)]
    pub control_plane: bool,
    /// Whether an ingress gateway runs in this cluster (istio-system/istio-ingressgateway).
    #[serde(default)]
    pub ingress_gateway: bool,
    /// Namespaces labelled `istio-injection=enabled`.
    #[serde(default)]
    pub injection: Vec<String>,
    /// Manifests applied when the lab comes up, in order (files or directories;
    /// `istio:PATH` is a path in Istio's sample tree, `../shared/istio` beside the
    /// checkout or `$ISTHMUS_ISTIO_DIR`).
    #[serde(default)]
    pub manifests: Vec<String>,
}

/// The built-in topologies.
pub const BUILTIN: &[(&str, &str)] = &[("single", SINGLE)];

/// One cluster, one network, a control plane and an ingress gateway; bookinfo in
/// `default` with sidecars.
const SINGLE: &str = r#"
name: single
clusters:
- name: cluster1
  network: network1
  podCidr: 198.18.0.0/20
  serviceCidr: 198.19.0.0/20
  controlPlane: true
  ingressGateway: true
  injection: [default]
"#;

impl Topology {
    /// A built-in topology by name, or a topology file.
    pub fn load(name_or_file: &str) -> Result<Self, LabError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_file) {
            return Self::parse(text, Path::new("."), name_or_file);
        }
        let path = Path::new(name_or_file);
        let text = std::fs::read_to_string(path).map_err(|source| LabError::TopologyRead {
            name: name_or_file.to_string(),
            builtin: BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, name_or_file)
    }

    pub fn parse(text: &str, base_dir: &Path, source_name: &str) -> Result<Self, LabError> {
        let mut t: Topology = serde_path_to_error::deserialize(
            serde_yaml_ng::Deserializer::from_str(text),
        )
        .map_err(|source| LabError::TopologySyntax {
            name: source_name.to_string(),
            source,
        })?;
        t.base_dir = base_dir.to_path_buf();
        t.check(source_name)?;
        Ok(t)
    }

    fn check(&self, source: &str) -> Result<(), LabError> {
        let err = |field: String, problem: String| {
            Err(LabError::TopologyInvalid {
                name: source.to_string(),
                field,
                problem,
            })
        };
        if self.clusters.is_empty() {
            return err("clusters".into(), "at least one cluster is needed".into());
        }
        let mut ranges: Vec<(String, Ipv4Net)> = Vec::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if self.clusters[..i].iter().any(|o| o.name == c.name) {
                return err(
                    format!("clusters[{i}].name"),
                    format!("{} is used twice", c.name),
                );
            }
            for (field, net) in [("podCidr", c.pod_cidr), ("serviceCidr", c.service_cidr)] {
                let field = format!("clusters[{i}].{field}");
                if !LAB_RANGE.contains(&net) {
                    return err(
                        field,
                        format!("{net} is outside {LAB_RANGE}, the only range the lab uses"),
                    );
                }
                if net.prefix_len() > 28 {
                    return err(field, format!("{net} is too small (/28 at most)"));
                }
                if let Some((other, _)) = ranges
                    .iter()
                    .find(|(_, r)| r.contains(&net.network()) || net.contains(&r.network()))
                {
                    return err(field, format!("{net} overlaps {other}"));
                }
                ranges.push((format!("{field} ({net})"), net));
            }
        }
        if !self.clusters.iter().any(|c| c.control_plane) {
            return err(
                "clusters".into(),
                "no cluster has controlPlane: true (one must run the control plane)".into(),
            );
        }
        Ok(())
    }

    /// Resolves a manifest path: `istio:PATH` in Istio's tree, else relative to the
    /// topology file.
    pub fn manifest_path(&self, m: &str) -> PathBuf {
        match m.strip_prefix("istio:") {
            Some(rel) => istio_dir().join(rel),
            None => self.base_dir.join(m),
        }
    }
}

/// Istio's sample tree: `$ISTHMUS_ISTIO_DIR`, else `../shared/istio` from the current
/// directory or from the executable's checkout.
pub fn istio_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ISTHMUS_ISTIO_DIR") {
        return PathBuf::from(d);
    }
    let candidates = [
        PathBuf::from("../shared/istio"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/istio"),
    ];
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_single_parses() {
        let t = Topology::load("single").unwrap();
        assert_eq!(t.clusters.len(), 1);
        assert!(t.clusters[0].control_plane);
    }

    #[test]
    fn ranges_outside_the_lab_or_overlapping_are_refused() {
        let bad = "name: x\nclusters:\n- {name: a, network: n, podCidr: 10.0.0.0/16, serviceCidr: 198.19.0.0/20, controlPlane: true}\n";
        let e = Topology::parse(bad, Path::new("."), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside 198.18.0.0/15"), "{e}");
        let overlap = "name: x\nclusters:\n- {name: a, network: n, podCidr: 198.18.0.0/20, serviceCidr: 198.18.0.0/24, controlPlane: true}\n";
        let e = Topology::parse(overlap, Path::new("."), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps"), "{e}");
        let unknown = "name: x\nbogus: 1\nclusters: []\n";
        let e = Topology::parse(unknown, Path::new("."), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
