//! The API server's side of the lab: objects applied to a cluster (`lab apply`,
//! `lab delete`) are kept in the lab's state and, but for workloads, written where
//! the control plane reads them; Services get ClusterIPs from the cluster's service
//! range.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use isthmus_model::{Kind, Object, ObjectKey, parse_documents};
use serde_json::{Value, json};

use crate::LabError;
use crate::controller::{ApplyReport, Lab, free_address};
use crate::publish::write_atomically;

pub(crate) fn obj_id(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

impl Lab {
    /// `lab apply`: files or directories of manifests; with `reconcile`, pods are then
    /// made to match the Deployments.
    pub fn apply_paths(
        &mut self,
        cluster: &str,
        namespace: Option<&str>,
        paths: &[PathBuf],
        reconcile: bool,
    ) -> Result<ApplyReport, LabError> {
        let mut report = self.apply_files(cluster, namespace, paths, false)?;
        if reconcile {
            let r = self.reconcile_all()?;
            report.pods_started = r.pods_started;
            report.pods_stopped = r.pods_stopped;
        }
        Ok(report)
    }

    /// `lab delete`: removes the objects of these files and the pods they ran.
    pub fn delete_paths(
        &mut self,
        cluster: &str,
        namespace: Option<&str>,
        paths: &[PathBuf],
    ) -> Result<ApplyReport, LabError> {
        let mut report = self.apply_files(cluster, namespace, paths, true)?;
        report.pods_stopped = self.reconcile_all()?.pods_stopped;
        Ok(report)
    }

    fn apply_files(
        &mut self,
        cluster: &str,
        namespace: Option<&str>,
        paths: &[PathBuf],
        delete: bool,
    ) -> Result<ApplyReport, LabError> {
        self.cluster_spec(cluster)?;
        let mut report = ApplyReport::default();
        for file in expand(paths)? {
            let text = std::fs::read_to_string(&file).map_err(|source| LabError::Manifest {
                what: "read",
                path: file.clone(),
                source,
            })?;
            let r = self.apply_text(
                cluster,
                namespace.unwrap_or("default"),
                &file,
                &text,
                delete,
            )?;
            report.configured.extend(r.configured);
            report.unchanged.extend(r.unchanged);
            report.problems.extend(r.problems);
        }
        Ok(report)
    }

    /// Applies (or, with `delete`, removes) the objects of one YAML text.
    pub fn apply_text(
        &mut self,
        cluster: &str,
        namespace: &str,
        file: &Path,
        text: &str,
        delete: bool,
    ) -> Result<ApplyReport, LabError> {
        let mut report = ApplyReport::default();
        let docs = parse_documents(file, text, namespace, "cluster.local");
        for d in docs {
            let errors: Vec<String> = d
                .diagnostics
                .iter()
                .filter(|x| x.is_error())
                .map(|x| x.to_string())
                .collect();
            if !errors.is_empty() {
                report
                    .problems
                    .push(format!("{}: {}", pos(&d.pos), errors.join("; ")));
                continue;
            }
            let (Some(obj), Some(key)) = (d.object, d.key) else {
                if let Some((api, kind)) = d.skipped_kind {
                    report.problems.push(format!(
                        "{}: {api} {kind} is not a kind the lab runs; skipped",
                        pos(&d.pos)
                    ));
                }
                continue;
            };
            let id = obj_id(key.kind.name(), &key.namespace, &key.name);
            let mut value = serde_json::to_value(&obj).expect("objects serialize");
            if !key.namespace.is_empty() {
                value["metadata"]["namespace"] = json!(&*key.namespace);
            }
            let cs = self.state.clusters.entry(cluster.to_string()).or_default();
            if delete {
                if cs.objects.remove(&id).is_some() {
                    report.configured.push(format!("{id} deleted"));
                    if key.kind == Kind::Service {
                        cs.cluster_ips
                            .remove(&format!("{}/{}", key.namespace, key.name));
                    }
                    let _ = std::fs::remove_file(
                        self.manifests_dir(cluster)
                            .join("applied")
                            .join(file_name(&key)),
                    );
                } else {
                    report.unchanged.push(format!("{id} not found"));
                }
                continue;
            }
            if key.kind == Kind::Service {
                self.assign_cluster_ip(cluster, &key, &obj, &mut value)?;
            }
            let cs = self.state.clusters.entry(cluster.to_string()).or_default();
            if cs.objects.get(&id) == Some(&value) {
                report.unchanged.push(format!("{id} unchanged"));
                continue;
            }
            cs.objects.insert(id.clone(), value.clone());
            // Everything but workloads goes to the control plane as applied.
            if !matches!(key.kind, Kind::Deployment | Kind::Pod) {
                let dir = self.manifests_dir(cluster).join("applied");
                write_yaml(&dir.join(file_name(&key)), &value)?;
            }
            report.configured.push(format!("{id} configured"));
        }
        self.save()?;
        Ok(report)
    }

    fn assign_cluster_ip(
        &mut self,
        cluster: &str,
        key: &ObjectKey,
        obj: &Object,
        value: &mut Value,
    ) -> Result<(), LabError> {
        let Object::Service(svc) = obj else {
            return Ok(());
        };
        let headless = svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .is_some_and(|ip| ip == "None");
        if headless {
            return Ok(());
        }
        let spec = self.cluster_spec(cluster)?;
        let cs = self.state.clusters.entry(cluster.to_string()).or_default();
        let nsname = format!("{}/{}", key.namespace, key.name);
        let ip = match cs.cluster_ips.get(&nsname) {
            Some(ip) => *ip,
            None => {
                let used: BTreeSet<Ipv4Addr> = cs.cluster_ips.values().copied().collect();
                let ip = free_address(cluster, "service", spec.service_cidr, &used)?;
                cs.cluster_ips.insert(nsname, ip);
                ip
            }
        };
        value["spec"]["clusterIP"] = json!(ip.to_string());
        value["spec"]["clusterIPs"] = json!([ip.to_string()]);
        Ok(())
    }

    /// Objects of a kind in a cluster, decoded.
    pub(crate) fn objects<T: serde::de::DeserializeOwned>(
        &self,
        cluster: &str,
        kind: &str,
    ) -> Vec<(String, String, T)> {
        let prefix = format!("{kind}/");
        self.state
            .clusters
            .get(cluster)
            .into_iter()
            .flat_map(|c| c.objects.iter())
            .filter(|(id, _)| id.starts_with(&prefix))
            .filter_map(|(id, v)| {
                let mut parts = id.splitn(3, '/').skip(1);
                let ns = parts.next()?.to_string();
                let name = parts.next()?.to_string();
                Some((ns, name, serde_json::from_value(v.clone()).ok()?))
            })
            .collect()
    }
}

/// `FILE:LINE (document N)`.
fn pos(p: &isthmus_model::SourcePos) -> String {
    format!(
        "{}:{} (document {})",
        p.file.display(),
        p.line,
        p.document + 1
    )
}

fn file_name(key: &ObjectKey) -> String {
    format!(
        "{}.{}.{}.yaml",
        key.kind.name(),
        if key.namespace.is_empty() {
            "_"
        } else {
            &key.namespace
        },
        key.name
    )
}

fn write_yaml(path: &Path, v: &Value) -> Result<(), LabError> {
    write_atomically(path, serde_yaml_ng::to_string(v).expect("serializable"))
}

/// Files of these paths: directories are walked for .yaml/.yml/.json files, sorted.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LabError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| LabError::Manifest {
                    what: "list",
                    path: p.clone(),
                    source,
                })?
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for e in entries {
                if e.is_dir() {
                    out.extend(expand(&[e])?);
                } else if e
                    .extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                {
                    out.push(e);
                }
            }
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(LabError::NoSuchPath { path: p.clone() });
        }
    }
    Ok(out)
}

/// Istio's ingress gateway as a Deployment and a Service in istio-system.
pub(crate) fn ingress_gateway_manifest() -> String {
    r#"apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: istio-ingressgateway-service-account
  namespace: istio-system
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
  labels: {app: istio-ingressgateway, istio: ingressgateway}
spec:
  type: LoadBalancer
  selector: {app: istio-ingressgateway, istio: ingressgateway}
  ports:
  - {name: status-port, port: 15021, targetPort: 15021}
  - {name: http2, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: istio-ingressgateway
  namespace: istio-system
spec:
  replicas: 1
  selector:
    matchLabels: {app: istio-ingressgateway, istio: ingressgateway}
  template:
    metadata:
      labels: {app: istio-ingressgateway, istio: ingressgateway}
    spec:
      serviceAccountName: istio-ingressgateway-service-account
      containers:
      - name: istio-proxy
        image: isthmus/agent
        ports:
        - {containerPort: 8080}
        - {containerPort: 8443}
        - {containerPort: 15021}
"#
    .to_string()
}
