//! The lab's control loop, run by each `lab` command: applied objects in, pods out.
//!
//! Like an API server, it keeps the objects applied to each cluster (in `lab.json`
//! and as files in the cluster's manifest directory, which the control plane reads);
//! like kube-proxy's allocator, it gives Services ClusterIPs; like the Deployment
//! controller and the kubelet, it makes each Deployment's replicas run as pods (a
//! network namespace, the container's stand-in, and `isthmus agent` when the pod gets
//! a sidecar), and writes back the Pods and EndpointSlices, Ready once the pod is.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use isthmus_model::{Kind, Object, ObjectKey, parse_documents};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec, Service};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::LabError;
use crate::runtime::{Capture, PodKey, Runtime};
use crate::topology::{ClusterSpec, Topology};

/// The uid Envoy (and the agent) run as in a pod, excluded from capture (Istio's 1337).
pub const PROXY_UID: u32 = 1337;
/// Istio's control plane ports: xDS and the debug/monitoring API.
pub const XDS_PORT: u16 = 15010;
pub const DEBUG_PORT: u16 = 15014;
const SYSTEM_NS: &str = "istio-system";

/// A pod the lab runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub ip: Ipv4Addr,
    /// The Deployment it belongs to (none for the control plane).
    pub owner: Option<String>,
    pub template_hash: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub role: PodRole,
    pub containers: Vec<ContainerInfo>,
    pub ready: bool,
}

/// A container: name, image, and its ports (name, number).
pub type ContainerInfo = (String, String, Vec<(String, u16)>);

/// What runs in a pod besides its app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodRole {
    /// The app alone.
    Plain,
    /// The app and an Envoy sidecar capturing its traffic.
    Sidecar,
    /// An Envoy gateway (`isthmus agent --router`).
    Gateway,
    /// The control plane (`isthmus discovery`).
    ControlPlane,
}

/// One cluster's objects and pods.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// Applied objects by `Kind/namespace/name`, as applied (JSON).
    pub objects: BTreeMap<String, Value>,
    pub cluster_ips: BTreeMap<String, Ipv4Addr>,
    /// Pods by `namespace/name`.
    pub pods: BTreeMap<String, PodState>,
    /// Counter for pod name suffixes.
    pub next_pod: u64,
}

/// Everything the lab knows, saved as `lab.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    pub topology: Option<Topology>,
    pub clusters: BTreeMap<String, ClusterState>,
}

/// An open lab.
pub struct Lab {
    dir: PathBuf,
    pub rt: Runtime,
    pub state: LabState,
    exe: PathBuf,
    envoy: Option<PathBuf>,
}

/// What `apply` did, for the user.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub configured: Vec<String>,
    pub unchanged: Vec<String>,
    pub problems: Vec<String>,
    pub pods_started: Vec<String>,
    pub pods_stopped: Vec<String>,
}

fn obj_id(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

fn template_hash(t: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(t).unwrap_or_default();
    // FNV-1a: stable across runs and versions (the name is user-visible).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)[..8].to_string()
}

impl Lab {
    /// Opens the lab in `dir` (state, lock).
    pub fn open(dir: &Path, name: &str) -> Result<Self, LabError> {
        let rt = Runtime::open(dir, name)?;
        let state_file = dir.join("lab.json");
        let state = match std::fs::read(&state_file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                LabError::State(format!(
                    "{}: {e} (remove the lab with `isthmus lab down`)",
                    state_file.display()
                ))
            })?,
            Err(_) => LabState::default(),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            rt,
            state,
            exe: std::env::current_exe().map_err(|e| LabError::State(e.to_string()))?,
            envoy: std::env::var_os("ISTHMUS_ENVOY").map(PathBuf::from),
        })
    }

    /// Opens the lab to read it (`exec`, `status`, `logs`): other commands may run
    /// meanwhile.
    pub fn open_read(dir: &Path, name: &str) -> Result<Self, LabError> {
        let mut lab = Self::open(dir, name)?;
        lab.rt.unlock();
        Ok(lab)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn save(&self) -> Result<(), LabError> {
        let tmp = self.dir.join("lab.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&self.state).expect("serializable"),
        )
        .and_then(|_| std::fs::rename(&tmp, self.dir.join("lab.json")))
        .map_err(|e| LabError::State(format!("{}: {e}", self.dir.display())))
    }

    pub fn topology(&self) -> Result<&Topology, LabError> {
        self.state
            .topology
            .as_ref()
            .ok_or_else(|| LabError::State("no lab is up here: run `isthmus lab up` first".into()))
    }

    fn cluster_spec(&self, cluster: &str) -> Result<ClusterSpec, LabError> {
        let t = self.topology()?;
        t.clusters
            .iter()
            .find(|c| c.name == cluster)
            .cloned()
            .ok_or_else(|| {
                LabError::Usage(format!(
                    "no cluster {cluster:?} in this lab (clusters: {})",
                    t.clusters
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The control plane's manifest directory of a cluster.
    pub fn manifests_dir(&self, cluster: &str) -> PathBuf {
        self.dir.join("clusters").join(cluster)
    }

    /// The control plane's pod (cluster, IP).
    fn control_plane(&self) -> Result<(String, Ipv4Addr), LabError> {
        let t = self.topology()?;
        let c = t
            .clusters
            .iter()
            .find(|c| c.control_plane)
            .ok_or_else(|| LabError::Topology("no control plane".into()))?;
        Ok((c.name.clone(), nth(c.pod_cidr, 2)))
    }

    /// Brings the lab up: networks, control plane, ingress gateway, the topology's
    /// manifests; waits until every pod is ready.
    pub fn up(
        &mut self,
        topology: Topology,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        if let Some(t) = &self.state.topology
            && t.name != topology.name
        {
            return Err(LabError::Usage(format!(
                "a lab with topology {:?} is up in {}: run `isthmus lab down` first",
                t.name,
                self.dir.display()
            )));
        }
        if self.envoy.as_ref().is_none_or(|e| !e.is_file()) {
            return Err(LabError::Usage(
                "Envoy not found: set ISTHMUS_ENVOY to an Envoy binary (scripts/envoy.sh installs one)".into(),
            ));
        }
        // The agent and Envoy run as the proxy's uid: they need binaries that uid can
        // reach (a checkout under /root can't be): else copies in the lab directory.
        let bin = self.dir.join("bin");
        self.exe = runnable_by_others(&self.exe, &bin)?;
        if let Some(e) = &self.envoy {
            self.envoy = Some(runnable_by_others(e, &bin)?);
        }
        self.state.topology = Some(topology.clone());
        self.write_mesh(&topology)?;
        for c in &topology.clusters {
            progress(&format!(
                "network of {} ({} pods, {} services)",
                c.name, c.pod_cidr, c.service_cidr
            ));
            self.rt
                .ensure_cluster(&c.name, c.pod_cidr, nth(c.pod_cidr, 1))?;
            self.state.clusters.entry(c.name.clone()).or_default();
            std::fs::create_dir_all(self.manifests_dir(&c.name))
                .map_err(|e| LabError::State(e.to_string()))?;
        }
        self.save()?;
        let (cp_cluster, cp_ip) = self.control_plane()?;
        let cp_key = PodKey {
            cluster: cp_cluster.clone(),
            namespace: SYSTEM_NS.into(),
            name: "istiod".into(),
        };
        if !self.state.clusters[&cp_cluster]
            .pods
            .contains_key("istio-system/istiod")
        {
            progress(&format!("control plane in {cp_cluster} at {cp_ip}"));
            let spec = self.cluster_spec(&cp_cluster)?;
            let routes = self.routes(&spec);
            self.rt.create_pod(
                &cp_key,
                cp_ip,
                spec.pod_cidr.prefix_len(),
                &routes,
                "127.0.0.1 localhost\n",
                None,
            )?;
            let mesh = self.dir.join("mesh.yaml");
            let args: Vec<OsString> = vec![
                "discovery".into(),
                "--mesh".into(),
                mesh.into(),
                "--grpc-address".into(),
                format!("0.0.0.0:{XDS_PORT}").into(),
                "--debug-address".into(),
                format!("0.0.0.0:{DEBUG_PORT}").into(),
            ];
            let exe = self.exe.clone();
            self.rt
                .spawn(&cp_key, "discovery", &exe, &args, &[], None)?;
            self.state
                .clusters
                .get_mut(&cp_cluster)
                .expect("exists")
                .pods
                .insert(
                    "istio-system/istiod".into(),
                    PodState {
                        ip: cp_ip,
                        owner: None,
                        template_hash: String::new(),
                        labels: BTreeMap::from([("app".into(), "istiod".into())]),
                        service_account: "istiod".into(),
                        role: PodRole::ControlPlane,
                        containers: vec![(
                            "discovery".into(),
                            "isthmus".into(),
                            vec![("grpc-xds".into(), XDS_PORT)],
                        )],
                        ready: false,
                    },
                );
            self.save()?;
        }
        for c in &topology.clusters {
            if c.ingress_gateway {
                progress(&format!("ingress gateway in {}", c.name));
                let docs = ingress_gateway_manifest();
                self.apply_text(
                    &c.name,
                    SYSTEM_NS,
                    Path::new("<ingress gateway>"),
                    &docs,
                    false,
                )?;
            }
            for m in &c.manifests {
                let path = topology.manifest_path(m);
                progress(&format!("applying {} to {}", path.display(), c.name));
                let r = self.apply_paths(&c.name, None, &[path], false)?;
                for p in &r.problems {
                    progress(&format!("  problem: {p}"));
                }
            }
        }
        progress("starting pods");
        let report = self.reconcile_all()?;
        for p in &report.pods_started {
            progress(&format!("  started {p}"));
        }
        progress("waiting for every pod to be ready");
        self.wait_ready(Duration::from_secs(60))?;
        Ok(())
    }

    /// Routes a pod of `spec` gets: the service range and every cluster's pod range.
    fn routes(&self, spec: &ClusterSpec) -> Vec<Ipv4Net> {
        let mut out = vec![spec.service_cidr];
        if let Ok(t) = self.topology() {
            for c in &t.clusters {
                if c.name != spec.name {
                    out.push(c.pod_cidr);
                    out.push(c.service_cidr);
                }
            }
        }
        out
    }

    fn write_mesh(&self, t: &Topology) -> Result<(), LabError> {
        let clusters: Vec<Value> = t
            .clusters
            .iter()
            .map(|c| json!({"name": c.name, "network": c.network, "source": {"manifests": format!("clusters/{}", c.name)}}))
            .collect();
        let mesh = json!({"meshID": t.mesh_id, "clusters": clusters});
        let text = format!(
            "# Written by `isthmus lab up` for topology {:?}: the control plane's view of the lab.\n{}",
            t.name,
            serde_yaml_ng::to_string(&mesh).expect("serializable")
        );
        std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::write(self.dir.join("mesh.yaml"), text))
            .map_err(|e| LabError::State(e.to_string()))
    }

    /// `lab apply`: files or directories of manifests.
    pub fn apply_paths(
        &mut self,
        cluster: &str,
        namespace: Option<&str>,
        paths: &[PathBuf],
        reconcile: bool,
    ) -> Result<ApplyReport, LabError> {
        self.cluster_spec(cluster)?;
        let mut report = ApplyReport::default();
        for file in expand(paths)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| LabError::Usage(format!("{}: {e}", file.display())))?;
            let r =
                self.apply_text(cluster, namespace.unwrap_or("default"), &file, &text, false)?;
            report.configured.extend(r.configured);
            report.unchanged.extend(r.unchanged);
            report.problems.extend(r.problems);
        }
        if reconcile {
            let r = self.reconcile_all()?;
            report.pods_started = r.pods_started;
            report.pods_stopped = r.pods_stopped;
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
            let mut value =
                serde_json::to_value(&obj).map_err(|e| LabError::State(e.to_string()))?;
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
                    remove_file(
                        &self
                            .dir
                            .join("clusters")
                            .join(cluster)
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
    fn objects<T: serde::de::DeserializeOwned>(
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

    /// Whether pods of `namespace` (with these template annotations) get a sidecar.
    fn injects(
        &self,
        cluster: &str,
        namespace: &str,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> bool {
        if let Some(v) = annotations.and_then(|a| a.get("sidecar.istio.io/inject")) {
            return v == "true";
        }
        let labelled = self
            .objects::<k8s_openapi::api::core::v1::Namespace>(cluster, "Namespace")
            .iter()
            .any(|(_, name, n)| {
                name == namespace
                    && n.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("istio-injection"))
                        .is_some_and(|v| v == "enabled")
            });
        labelled
            || self
                .cluster_spec(cluster)
                .is_ok_and(|s| s.injection.iter().any(|n| n == namespace))
    }

    /// Makes every cluster's pods match its Deployments.
    pub fn reconcile_all(&mut self) -> Result<ApplyReport, LabError> {
        let mut report = ApplyReport::default();
        let clusters: Vec<String> = self.state.clusters.keys().cloned().collect();
        for c in clusters {
            self.reconcile(&c, &mut report)?;
        }
        self.refresh_hosts()?;
        self.write_pods_and_slices()?;
        self.save()?;
        Ok(report)
    }

    fn reconcile(&mut self, cluster: &str, report: &mut ApplyReport) -> Result<(), LabError> {
        let deployments: Vec<(String, String, Deployment)> = self.objects(cluster, "Deployment");
        // Desired: (ns/deployment) → (hash, replicas, template).
        let mut desired: BTreeMap<String, (String, usize, PodTemplateSpec)> = BTreeMap::new();
        for (ns, name, d) in deployments {
            let Some(spec) = d.spec else { continue };
            let replicas = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
            desired.insert(
                format!("{ns}/{name}"),
                (template_hash(&spec.template), replicas, spec.template),
            );
        }
        let pods = self
            .state
            .clusters
            .get(cluster)
            .map(|c| c.pods.clone())
            .unwrap_or_default();
        // Stop pods of gone or changed Deployments, and surplus replicas.
        let mut keep: BTreeMap<String, usize> = BTreeMap::new();
        let mut stop = Vec::new();
        for (key, p) in &pods {
            let Some(owner) = &p.owner else { continue };
            match desired.get(owner) {
                Some((hash, replicas, _)) if *hash == p.template_hash => {
                    let n = keep.entry(owner.clone()).or_default();
                    if *n < *replicas {
                        *n += 1;
                    } else {
                        stop.push(key.clone());
                    }
                }
                _ => stop.push(key.clone()),
            }
        }
        // Start what's missing (before stopping old revisions: a rolling update).
        let mut started = Vec::new();
        for (owner, (hash, replicas, template)) in &desired {
            let have = keep.get(owner).copied().unwrap_or(0);
            for _ in have..*replicas {
                let key = self.start_pod(cluster, owner, hash, template)?;
                report.pods_started.push(format!("{cluster}/{key}"));
                started.push(key);
            }
        }
        if !started.is_empty() && !stop.is_empty() {
            self.refresh_hosts()?;
            self.write_pods_and_slices()?;
            self.save()?;
            let _ = self.wait_ready(Duration::from_secs(30));
        }
        // Endpoints go first, as in Kubernetes: the pods leave the EndpointSlices, the
        // proxies stop sending to them, then they are stopped.
        if !stop.is_empty() {
            if let Some(c) = self.state.clusters.get_mut(cluster) {
                for key in &stop {
                    c.pods.remove(key);
                }
            }
            self.write_pods_and_slices()?;
            self.save()?;
        }
        for key in stop {
            let (ns, name) = key.split_once('/').expect("ns/name");
            let pk = PodKey {
                cluster: cluster.into(),
                namespace: ns.into(),
                name: name.into(),
            };
            self.rt.delete_pod(&pk, Duration::from_secs(2))?;
            report.pods_stopped.push(format!("{cluster}/{key}"));
        }
        Ok(())
    }

    fn start_pod(
        &mut self,
        cluster: &str,
        owner: &str,
        hash: &str,
        template: &PodTemplateSpec,
    ) -> Result<String, LabError> {
        let spec = self.cluster_spec(cluster)?;
        let (ns, deployment) = owner.split_once('/').expect("ns/name");
        let cs = self.state.clusters.entry(cluster.to_string()).or_default();
        cs.next_pod += 1;
        let name = format!("{deployment}-{hash}-{}", pod_suffix(cs.next_pod));
        let used: BTreeSet<Ipv4Addr> = cs.pods.values().map(|p| p.ip).collect();
        let ip = free_address(cluster, "pod", spec.pod_cidr, &used)?;
        let meta = template.metadata.clone().unwrap_or_default();
        let labels: BTreeMap<String, String> = meta.labels.clone().unwrap_or_default();
        let annotations = meta.annotations.clone();
        let pod_spec = template.spec.clone().unwrap_or_default();
        let gateway = labels
            .get("istio")
            .is_some_and(|v| v == "ingressgateway" || v == "eastwestgateway")
            && pod_spec.containers.iter().any(|c| c.name == "istio-proxy");
        let role = if gateway {
            PodRole::Gateway
        } else if self.injects(cluster, ns, annotations.as_ref()) {
            PodRole::Sidecar
        } else {
            PodRole::Plain
        };
        let service_account = pod_spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = PodKey {
            cluster: cluster.into(),
            namespace: ns.into(),
            name: name.clone(),
        };
        let capture = (role == PodRole::Sidecar).then(|| Capture {
            proxy_uid: PROXY_UID,
            inbound_exclude_ports: vec![15020, 15021, 15090],
            outbound_exclude_cidrs: Vec::new(),
        });
        let routes = self.routes(&spec);
        let hosts = self.hosts_for(cluster, ns);
        self.rt.create_pod(
            &key,
            ip,
            spec.pod_cidr.prefix_len(),
            &routes,
            &hosts,
            capture.as_ref(),
        )?;
        let containers: Vec<ContainerInfo> = pod_spec
            .containers
            .iter()
            .map(|c| {
                let ports = c
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            p.name.clone().unwrap_or_default(),
                            u16::try_from(p.container_port).ok()?,
                        ))
                    })
                    .collect();
                (c.name.clone(), c.image.clone().unwrap_or_default(), ports)
            })
            .collect();
        self.state
            .clusters
            .get_mut(cluster)
            .expect("exists")
            .pods
            .insert(
                format!("{ns}/{name}"),
                PodState {
                    ip,
                    owner: Some(owner.to_string()),
                    template_hash: hash.to_string(),
                    labels: labels.clone(),
                    service_account: service_account.clone(),
                    role,
                    containers,
                    ready: false,
                },
            );
        self.save()?;
        if role != PodRole::Gateway {
            for c in &pod_spec.containers {
                self.spawn_app(&key, &spec, c, &labels)?;
            }
        }
        if role != PodRole::Plain {
            self.spawn_agent(
                &key,
                &spec,
                ip,
                &labels,
                &service_account,
                role == PodRole::Gateway,
            )?;
        }
        Ok(format!("{ns}/{name}"))
    }

    fn spawn_app(
        &mut self,
        key: &PodKey,
        spec: &ClusterSpec,
        c: &Container,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), LabError> {
        let mut args: Vec<OsString> = vec![
            "app".into(),
            "run".into(),
            "--image".into(),
            c.image.clone().unwrap_or_default().into(),
            "--pod".into(),
            key.name.clone().into(),
            "--namespace".into(),
            key.namespace.clone().into(),
            "--cluster".into(),
            spec.name.clone().into(),
        ];
        for p in c.ports.iter().flatten() {
            args.push("--port".into());
            args.push(p.container_port.to_string().into());
        }
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}").into());
        }
        let mut env: Vec<(String, String)> = vec![("HOSTNAME".into(), key.name.clone())];
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value {
                env.push((e.name.clone(), v.clone()));
            }
        }
        let exe = self.exe.clone();
        self.rt.spawn(key, &c.name, &exe, &args, &env, None)?;
        Ok(())
    }

    fn spawn_agent(
        &mut self,
        key: &PodKey,
        spec: &ClusterSpec,
        ip: Ipv4Addr,
        labels: &BTreeMap<String, String>,
        service_account: &str,
        router: bool,
    ) -> Result<(), LabError> {
        let (_, cp_ip) = self.control_plane()?;
        let mesh_id = self.topology()?.mesh_id.clone();
        let labels_arg = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut args: Vec<OsString> = vec!["agent".into()];
        if router {
            args.push("--router".into());
        }
        for (flag, value) in [
            ("--node-ip", ip.to_string()),
            ("--pod-name", key.name.clone()),
            ("--namespace", key.namespace.clone()),
            ("--cluster-id", spec.name.clone()),
            ("--network", spec.network.clone()),
            ("--mesh-id", mesh_id),
            ("--service-account", service_account.to_string()),
            ("--discovery-address", format!("{cp_ip}:{XDS_PORT}")),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        if !labels_arg.is_empty() {
            args.push("--labels".into());
            args.push(labels_arg.into());
        }
        let mut env = vec![("HOME".to_string(), "/tmp".to_string())];
        if let Some(e) = &self.envoy {
            env.push(("ISTHMUS_ENVOY".into(), e.display().to_string()));
        }
        let exe = self.exe.clone();
        self.rt
            .spawn(key, "istio-proxy", &exe, &args, &env, Some(PROXY_UID))?;
        Ok(())
    }

    /// The hosts file of a pod in `namespace` of `cluster`: every Service with a
    /// ClusterIP as `name.ns.svc.cluster.local`, `name.ns.svc`, `name.ns`, and `name`
    /// for the pod's own namespace.
    fn hosts_for(&self, cluster: &str, namespace: &str) -> String {
        let mut out = String::from("127.0.0.1 localhost\n");
        if let Some(c) = self.state.clusters.get(cluster) {
            for (nsname, ip) in &c.cluster_ips {
                let (ns, name) = nsname.split_once('/').expect("ns/name");
                out.push_str(&format!(
                    "{ip} {name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}"
                ));
                if ns == namespace {
                    out.push_str(&format!(" {name}"));
                }
                out.push('\n');
            }
        }
        out
    }

    fn refresh_hosts(&mut self) -> Result<(), LabError> {
        let mut updates = Vec::new();
        for (cluster, c) in &self.state.clusters {
            for key in c.pods.keys() {
                let (ns, name) = key.split_once('/').expect("ns/name");
                updates.push((
                    PodKey {
                        cluster: cluster.clone(),
                        namespace: ns.into(),
                        name: name.into(),
                    },
                    self.hosts_for(cluster, ns),
                ));
            }
        }
        for (k, h) in updates {
            self.rt.update_hosts(&k, &h)?;
        }
        Ok(())
    }

    /// Writes the Pods and EndpointSlices of every cluster where the control plane reads them.
    fn write_pods_and_slices(&self) -> Result<(), LabError> {
        for (cluster, c) in &self.state.clusters {
            let dir = self.manifests_dir(cluster);
            let mut pods = Vec::new();
            for (key, p) in &c.pods {
                let (ns, name) = key.split_once('/').expect("ns/name");
                pods.push(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": ns, "labels": p.labels},
                    "spec": {
                        "serviceAccountName": p.service_account,
                        "containers": p.containers.iter().map(|(n, image, ports)| json!({
                            "name": n, "image": image,
                            "ports": ports.iter().map(|(pn, port)| if pn.is_empty() {
                                json!({"containerPort": port})
                            } else {
                                json!({"name": pn, "containerPort": port})
                            }).collect::<Vec<_>>()
                        })).collect::<Vec<_>>()
                    },
                    "status": {
                        "phase": "Running", "podIP": p.ip.to_string(), "podIPs": [{"ip": p.ip.to_string()}],
                        "conditions": [{"type": "Ready", "status": if p.ready { "True" } else { "False" }}]
                    }
                }));
            }
            write_multi(
                &dir.join("pods.yaml"),
                "The pods the lab runs (as a kubelet would report them).",
                &pods,
            )?;
            let mut slices = Vec::new();
            for (ns, name, svc) in self.objects::<Service>(cluster, "Service") {
                let Some(spec) = &svc.spec else { continue };
                let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
                    continue;
                };
                let members: Vec<&PodState> = c
                    .pods
                    .iter()
                    .filter(|(k, p)| {
                        k.split_once('/').is_some_and(|(pns, _)| pns == ns)
                            && selector.iter().all(|(sk, sv)| p.labels.get(sk) == Some(sv))
                    })
                    .map(|(_, p)| p)
                    .collect();
                let ports: Vec<Value> = spec
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|sp| {
                        let target = match &sp.target_port {
                            None => u16::try_from(sp.port).ok()?,
                            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => u16::try_from(*n).ok()?,
                            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(pn)) => members
                                .iter()
                                .flat_map(|p| p.containers.iter().flat_map(|c| c.2.iter()))
                                .find(|(n, _)| n == pn)
                                .map(|(_, p)| *p)?,
                        };
                        Some(json!({"name": sp.name.clone().unwrap_or_default(), "port": target, "protocol": "TCP"}))
                    })
                    .collect();
                let endpoints: Vec<Value> = members
                    .iter()
                    .map(|p| {
                        json!({"addresses": [p.ip.to_string()], "conditions": {"ready": p.ready, "serving": p.ready, "terminating": false}})
                    })
                    .collect();
                slices.push(json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{name}-lab"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4", "endpoints": endpoints, "ports": ports
                }));
            }
            write_multi(
                &dir.join("endpointslices.yaml"),
                "EndpointSlices of the Services, as the endpoints controller would write them.",
                &slices,
            )?;
        }
        Ok(())
    }

    /// Waits until every pod's processes answer, marks them Ready and tells the
    /// control plane; fails naming the pods that did not get ready.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), LabError> {
        let start = Instant::now();
        loop {
            let mut pending = Vec::new();
            let mut changed = false;
            let snapshot: Vec<(String, String, PodState)> = self
                .state
                .clusters
                .iter()
                .flat_map(|(c, s)| {
                    s.pods
                        .iter()
                        .map(move |(k, p)| (c.clone(), k.clone(), p.clone()))
                })
                .collect();
            for (cluster, key, p) in snapshot {
                if p.ready {
                    continue;
                }
                let (ns, name) = key.split_once('/').expect("ns/name");
                let pk = PodKey {
                    cluster: cluster.clone(),
                    namespace: ns.into(),
                    name: name.into(),
                };
                if self.pod_answers(&pk, &p) {
                    if let Some(s) = self
                        .state
                        .clusters
                        .get_mut(&cluster)
                        .and_then(|c| c.pods.get_mut(&key))
                    {
                        s.ready = true;
                    }
                    changed = true;
                } else {
                    pending.push(format!("{cluster}/{key}"));
                }
            }
            if changed {
                self.write_pods_and_slices()?;
                self.save()?;
            }
            if pending.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(LabError::NotReady(format!(
                    "{} not ready after {timeout:?}: {} (see `isthmus lab logs CLUSTER NS/POD`)",
                    if pending.len() == 1 {
                        "a pod is"
                    } else {
                        "pods are"
                    },
                    pending.join(", ")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether a pod's app ports accept connections and its proxy is ready.
    fn pod_answers(&self, key: &PodKey, p: &PodState) -> bool {
        let mut checks: Vec<String> = Vec::new();
        match p.role {
            PodRole::ControlPlane => checks.push(format!(
                "curl -sf -o /dev/null http://127.0.0.1:{DEBUG_PORT}/ready"
            )),
            PodRole::Sidecar | PodRole::Gateway => {
                checks.push("curl -sf -o /dev/null http://127.0.0.1:15021/healthz/ready".into());
            }
            PodRole::Plain => {}
        }
        if p.role != PodRole::Gateway && p.role != PodRole::ControlPlane {
            for (_, _, ports) in &p.containers {
                for (_, port) in ports {
                    checks.push(format!("(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null"));
                }
            }
        }
        if checks.is_empty() {
            return true;
        }
        let argv: Vec<OsString> = vec!["bash".into(), "-c".into(), checks.join(" && ").into()];
        self.rt.output(key, &argv).is_ok_and(|o| o.status.success())
    }

    /// A pod by `ns/name`, or by `ns/deployment` (its first ready replica).
    pub fn find_pod(&self, cluster: &str, pod: &str) -> Result<(PodKey, PodState), LabError> {
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
        let c = self
            .state
            .clusters
            .get(cluster)
            .ok_or_else(|| LabError::Usage(format!("no cluster {cluster:?} in this lab")))?;
        let found = c
            .pods
            .get(&format!("{ns}/{name}"))
            .map(|p| (name.to_string(), p))
            .or_else(|| {
                let owner = format!("{ns}/{name}");
                let mut matches: Vec<(&String, &PodState)> = c
                    .pods
                    .iter()
                    .filter(|(_, p)| {
                        p.owner.as_deref() == Some(owner.as_str())
                            || p.labels.get("app").is_some_and(|a| a == name)
                    })
                    .filter(|(k, _)| k.starts_with(&format!("{ns}/")))
                    .collect();
                matches.sort_by_key(|(_, p)| !p.ready);
                matches
                    .first()
                    .map(|(k, p)| (k.split_once('/').expect("ns/name").1.to_string(), *p))
            });
        let (name, p) = found.ok_or_else(|| {
            LabError::Usage(format!(
                "no pod {ns}/{name} in {cluster} (pods: {})",
                c.pods.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        Ok((
            PodKey {
                cluster: cluster.into(),
                namespace: ns.into(),
                name,
            },
            p.clone(),
        ))
    }

    /// `lab scale`: sets a Deployment's replicas, like `kubectl scale`.
    pub fn scale(
        &mut self,
        cluster: &str,
        deployment: &str,
        replicas: u32,
    ) -> Result<ApplyReport, LabError> {
        let (ns, name) = deployment
            .split_once('/')
            .unwrap_or(("default", deployment));
        let id = obj_id("Deployment", ns, name);
        let obj = self
            .state
            .clusters
            .get_mut(cluster)
            .and_then(|c| c.objects.get_mut(&id))
            .ok_or_else(|| LabError::Usage(format!("no Deployment {ns}/{name} in {cluster}")))?;
        obj["spec"]["replicas"] = json!(replicas);
        self.save()?;
        self.reconcile_all()
    }

    /// `lab delete`: removes the objects of these files and the pods they ran.
    pub fn delete_paths(
        &mut self,
        cluster: &str,
        namespace: Option<&str>,
        paths: &[PathBuf],
    ) -> Result<ApplyReport, LabError> {
        self.cluster_spec(cluster)?;
        let mut report = ApplyReport::default();
        for file in expand(paths)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| LabError::Usage(format!("{}: {e}", file.display())))?;
            let r = self.apply_text(cluster, namespace.unwrap_or("default"), &file, &text, true)?;
            report.configured.extend(r.configured);
            report.unchanged.extend(r.unchanged);
            report.problems.extend(r.problems);
        }
        let r = self.reconcile_all()?;
        report.pods_stopped = r.pods_stopped;
        Ok(report)
    }

    /// Rows for `lab status`: cluster, pod, IP, role, ready, processes alive.
    pub fn status_rows(&self) -> Vec<[String; 6]> {
        let mut out = Vec::new();
        for (cluster, c) in &self.state.clusters {
            for (key, p) in &c.pods {
                let (ns, name) = key.split_once('/').expect("ns/name");
                let pk = PodKey {
                    cluster: cluster.clone(),
                    namespace: ns.into(),
                    name: name.into(),
                };
                let mut procs: Vec<String> = Vec::new();
                let names: Vec<String> = match p.role {
                    PodRole::ControlPlane => vec!["discovery".into()],
                    PodRole::Gateway => vec!["istio-proxy".into()],
                    PodRole::Sidecar => p
                        .containers
                        .iter()
                        .map(|c| c.0.clone())
                        .chain(["istio-proxy".to_string()])
                        .collect(),
                    PodRole::Plain => p.containers.iter().map(|c| c.0.clone()).collect(),
                };
                for n in names {
                    let alive = self.rt.alive(&pk, &n);
                    procs.push(format!("{n}{}", if alive { "" } else { " (dead)" }));
                }
                out.push([
                    cluster.clone(),
                    key.clone(),
                    p.ip.to_string(),
                    format!("{:?}", p.role).to_lowercase(),
                    if p.ready { "yes".into() } else { "no".into() },
                    procs.join(", "),
                ]);
            }
        }
        out
    }
}

/// `path`, when every directory above it lets other users through and others may
/// execute it; else a copy in `bin` (kept while the original is unchanged).
fn runnable_by_others(path: &Path, bin: &Path) -> Result<PathBuf, LabError> {
    use std::os::unix::fs::PermissionsExt;
    let others_x = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    };
    let reachable = others_x(path)
        && path
            .ancestors()
            .skip(1)
            .filter(|d| !d.as_os_str().is_empty())
            .all(others_x);
    if reachable {
        return Ok(path.to_path_buf());
    }
    let err = |what: &str, p: &Path, e: std::io::Error| {
        LabError::State(format!(
            "{what} {}: {e} (the proxy runs as uid {PROXY_UID} and cannot reach {})",
            p.display(),
            path.display()
        ))
    };
    let name = path.file_name().unwrap_or_default();
    let dest = bin.join(name);
    let src_len = path.metadata().map_err(|e| err("reading", path, e))?.len();
    if dest.metadata().is_ok_and(|m| m.len() == src_len) && others_x(&dest) {
        return Ok(dest);
    }
    std::fs::create_dir_all(bin).map_err(|e| err("creating", bin, e))?;
    for d in [bin, bin.parent().unwrap_or(bin)] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| err("opening up", d, e))?;
    }
    let tmp = bin.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::copy(path, &tmp).map_err(|e| err("copying to", &tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .and_then(|_| std::fs::rename(&tmp, &dest))
        .map_err(|e| err("installing", &dest, e))?;
    if !dest
        .ancestors()
        .skip(1)
        .filter(|d| !d.as_os_str().is_empty())
        .all(others_x)
    {
        return Err(LabError::State(format!(
            "{}: a directory above it is closed to other users, so the proxy (uid {PROXY_UID}) cannot run it; use a lab directory under /run or /tmp (--dir)",
            dest.display()
        )));
    }
    Ok(dest)
}

/// The first free address of a range after the ten reserved at its start (gateway,
/// control plane, room for more).
fn free_address(
    cluster: &str,
    what: &str,
    range: Ipv4Net,
    used: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, LabError> {
    range
        .hosts()
        .skip(9)
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| LabError::Usage(format!("{cluster}: the {what} range {range} is full")))
}

/// The n-th address of a range (1 = the first usable).
pub fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

fn pod_suffix(n: u64) -> String {
    // Five characters from Kubernetes' alphabet for generated names.
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n.wrapping_mul(2654435761).wrapping_add(12345);
    (0..5)
        .map(|_| {
            let c = ALPHA[(x % ALPHA.len() as u64) as usize] as char;
            x /= ALPHA.len() as u64;
            c
        })
        .collect()
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

fn remove_file(p: &Path) {
    let _ = std::fs::remove_file(p);
}

fn write_yaml(path: &Path, v: &Value) -> Result<(), LabError> {
    write_atomically(path, serde_yaml_ng::to_string(v).expect("serializable"))
}

fn write_multi(path: &Path, comment: &str, docs: &[Value]) -> Result<(), LabError> {
    let mut text = format!("# {comment} Written by the lab.\n");
    for d in docs {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(d).expect("serializable"));
    }
    write_atomically(path, text)
}

/// Writes via a temporary file and a rename, so the control plane's watcher never
/// reads half a file.
fn write_atomically(path: &Path, text: String) -> Result<(), LabError> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| LabError::State(format!("{}: {e}", dir.display())))?;
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("file").to_string_lossy()
    ));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| LabError::State(format!("{}: {e}", path.display())))
}

/// Files of these paths: directories are walked for .yaml/.yml/.json files, sorted.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LabError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| LabError::Usage(format!("{}: {e}", p.display())))?
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
            return Err(LabError::Usage(format!(
                "{}: no such file or directory",
                p.display()
            )));
        }
    }
    Ok(out)
}

/// Istio's ingress gateway as a Deployment and a Service in istio-system.
fn ingress_gateway_manifest() -> String {
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
