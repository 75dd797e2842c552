//! The lab's control loop, run by each `lab` command: applied objects in, pods out.
//!
//! Like an API server, it keeps the objects applied to each cluster (in `lab.json`
//! and as files in the cluster's manifest directory, which the control plane reads;
//! [`crate::apply`]); like the Deployment controller and the kubelet, it makes each
//! Deployment's replicas run as pods (a network namespace, the container's stand-in,
//! and `isthmus agent` when the pod gets a sidecar, each kept running by a supervisor;
//! [`crate::reconcile`]), stops pods the way a careful cluster does (out of the
//! EndpointSlices first, until every proxy has let go of them, then drained); like the
//! kubelet and the endpoints controller, it writes back the Pods and EndpointSlices
//! ([`crate::publish`]), Ready once the pod answers ([`crate::readiness`]).
//!
//! This file holds the lab's state, opening and saving it, and bringing a lab up.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::LabError;
use crate::apply::ingress_gateway_manifest;
use crate::runtime::{PodKey, Process, Restart, Runtime};
use crate::topology::{ClusterSpec, Topology};

/// The uid Envoy (and the agent) run as in a pod, excluded from capture (Istio's 1337).
pub const PROXY_UID: u32 = 1337;
/// Istio's control plane ports: xDS and the debug/monitoring API.
pub const XDS_PORT: u16 = 15010;
pub const DEBUG_PORT: u16 = 15014;
pub(crate) const SYSTEM_NS: &str = "istio-system";
/// How long `lab up`, `apply` and `scale` wait for pods to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Being stopped: out of the EndpointSlices, its proxy draining.
    #[serde(default)]
    pub terminating: bool,
}

impl PodState {
    /// The names of its containers as the lab runs them: the app's, and `istio-proxy`
    /// (the agent and Envoy) for a sidecar or gateway.
    pub fn process_names(&self) -> Vec<String> {
        match self.role {
            PodRole::ControlPlane => vec!["discovery".into()],
            PodRole::Gateway => vec!["istio-proxy".into()],
            PodRole::Sidecar => self
                .containers
                .iter()
                .map(|c| c.0.clone())
                .chain(["istio-proxy".to_string()])
                .collect(),
            PodRole::Plain => self.containers.iter().map(|c| c.0.clone()).collect(),
        }
    }
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
    /// The Envoy the lab came up with, as its proxies run it: later commands start
    /// proxies with it whatever their environment says.
    #[serde(default)]
    pub envoy: Option<PathBuf>,
}

/// An open lab.
pub struct Lab {
    pub(crate) dir: PathBuf,
    pub rt: Runtime,
    pub state: LabState,
    /// This binary: it supervises containers and runs the control plane and apps.
    pub(crate) exe: PathBuf,
    /// This binary where the proxy's uid can run it (found on first use).
    proxy_exe: Option<PathBuf>,
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

/// Pod `ns/name` (a key of [`ClusterState::pods`]) of `cluster`.
pub(crate) fn pod_key(cluster: &str, nsname: &str) -> PodKey {
    let (ns, name) = nsname.split_once('/').expect("pods are kept as ns/name");
    PodKey::new(cluster, ns, name)
}

impl Lab {
    /// Opens the lab in `dir` (state, lock).
    pub fn open(dir: &Path, name: &str) -> Result<Self, LabError> {
        let rt = Runtime::open(dir, name)?;
        let state_file = dir.join("lab.json");
        let state = match std::fs::read(&state_file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| LabError::StateUnreadable {
                path: state_file.clone(),
                source,
            })?,
            Err(_) => LabState::default(),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            rt,
            state,
            exe: std::env::current_exe().map_err(|source| LabError::NoExecutable { source })?,
            proxy_exe: None,
        })
    }

    /// Opens the lab to read it (`exec`, `status`, `logs`, `load`): other commands may
    /// run meanwhile.
    pub fn open_read(dir: &Path, name: &str) -> Result<Self, LabError> {
        let mut lab = Self::open(dir, name)?;
        lab.rt.unlock();
        Ok(lab)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn save(&self) -> Result<(), LabError> {
        let tmp = self.dir.join("lab.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&self.state).expect("serializable"),
        )
        .and_then(|_| std::fs::rename(&tmp, self.dir.join("lab.json")))
        .map_err(|e| LabError::io("write the lab state", self.dir.join("lab.json"), e))
    }

    pub fn topology(&self) -> Result<&Topology, LabError> {
        self.state.topology.as_ref().ok_or_else(|| LabError::NotUp {
            dir: self.dir.clone(),
        })
    }

    pub(crate) fn cluster_spec(&self, cluster: &str) -> Result<ClusterSpec, LabError> {
        let t = self.topology()?;
        t.clusters
            .iter()
            .find(|c| c.name == cluster)
            .cloned()
            .ok_or_else(|| LabError::UnknownCluster {
                cluster: cluster.to_string(),
                known: t.clusters.iter().map(|c| c.name.clone()).collect(),
            })
    }

    /// The control plane's manifest directory of a cluster.
    pub fn manifests_dir(&self, cluster: &str) -> PathBuf {
        self.dir.join("clusters").join(cluster)
    }

    /// The cluster and address of the control plane the proxies connect to.
    pub(crate) fn control_plane(&self) -> Result<(String, Ipv4Addr), LabError> {
        let t = self.topology()?;
        let c = t.clusters.iter().find(|c| c.control_plane).ok_or_else(|| {
            LabError::TopologyInvalid {
                name: t.name.clone(),
                field: "clusters".into(),
                problem: "no cluster has controlPlane: true".into(),
            }
        })?;
        Ok((c.name.clone(), nth(c.pod_cidr, 2)))
    }

    /// Every control plane pod that runs (each reads every cluster of the lab).
    pub(crate) fn control_plane_pods(&self) -> Vec<PodKey> {
        self.state
            .clusters
            .iter()
            .flat_map(|(cluster, c)| {
                c.pods
                    .iter()
                    .filter(|(_, p)| p.role == PodRole::ControlPlane)
                    .map(move |(k, _)| pod_key(cluster, k))
            })
            .collect()
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
            return Err(LabError::OtherTopology {
                dir: self.dir.clone(),
                running: t.name.clone(),
                wanted: topology.name.clone(),
            });
        }
        let envoy = working_envoy()?;
        // Envoy runs as the proxy's uid: from a copy in the lab directory when that uid
        // cannot reach it where it is (a checkout under /root).
        self.state.envoy = Some(runnable_by_others(&envoy, &self.dir.join("bin"))?);
        self.state.topology = Some(topology.clone());
        let names: Vec<String> = topology.clusters.iter().map(|c| c.name.clone()).collect();
        crate::identity::prepare(&self.dir, &names)?;
        self.write_mesh(&topology)?;
        for c in &topology.clusters {
            progress(&format!(
                "network of {} ({} pods, {} services)",
                c.name, c.pod_cidr, c.service_cidr
            ));
            self.rt
                .ensure_cluster(&c.name, c.pod_cidr, nth(c.pod_cidr, 1))?;
            self.state.clusters.entry(c.name.clone()).or_default();
            let dir = self.manifests_dir(&c.name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| LabError::io("create the manifest directory", dir, e))?;
        }
        self.save()?;
        let (cp_cluster, cp_ip) = self.control_plane()?;
        if !self.state.clusters[&cp_cluster]
            .pods
            .contains_key("istio-system/istiod")
        {
            progress(&format!("control plane in {cp_cluster} at {cp_ip}"));
            self.start_control_plane(&cp_cluster, cp_ip)?;
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
        self.wait_ready(READY_TIMEOUT)?;
        Ok(())
    }

    fn start_control_plane(&mut self, cluster: &str, ip: Ipv4Addr) -> Result<(), LabError> {
        let key = PodKey::new(cluster, SYSTEM_NS, "istiod");
        let spec = self.cluster_spec(cluster)?;
        let routes = self.routes(&spec);
        self.rt.create_pod(
            &key,
            ip,
            spec.pod_cidr.prefix_len(),
            &routes,
            "127.0.0.1 localhost\n",
            None,
        )?;
        self.record_pod(
            cluster,
            "istio-system/istiod",
            PodState {
                ip,
                owner: None,
                template_hash: String::new(),
                labels: BTreeMap::from([("app".into(), "istiod".into())]),
                service_account: "istiod".into(),
                role: PodRole::ControlPlane,
                containers: vec![(
                    "discovery".into(),
                    "isthmus".into(),
                    vec![
                        ("grpc-xds".into(), XDS_PORT),
                        ("https-dns".into(), crate::identity::SECURE_XDS_PORT),
                    ],
                )],
                ready: false,
                terminating: false,
            },
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
        self.run_container(&key, "discovery", Process::new(&exe, &args, &[], None))
    }

    /// Records pod `nsname` (`ns/name`) of `cluster`, and saves the state.
    pub(crate) fn record_pod(
        &mut self,
        cluster: &str,
        nsname: &str,
        pod: PodState,
    ) -> Result<(), LabError> {
        self.state
            .clusters
            .entry(cluster.to_string())
            .or_default()
            .pods
            .insert(nsname.to_string(), pod);
        self.save()
    }

    /// Starts a container of a pod under a supervisor that restarts it when it exits
    /// (`restartPolicy: Always`).
    pub(crate) fn run_container(
        &mut self,
        key: &PodKey,
        container: &str,
        process: Process<'_>,
    ) -> Result<(), LabError> {
        let supervisor = self.exe.clone();
        let process = Process {
            restart: Restart::Always {
                supervisor: &supervisor,
            },
            ..process
        };
        self.rt.run_container(key, container, &process)?;
        Ok(())
    }

    /// The isthmus binary and the Envoy the proxy's uid runs: the Envoy the lab came
    /// up with (else found again and remembered), and this binary, each from a copy
    /// in the lab directory where that uid cannot reach the original.
    pub(crate) fn proxy_binaries(&mut self) -> Result<(PathBuf, PathBuf), LabError> {
        let bin = self.dir.join("bin");
        let envoy = match self.state.envoy.as_ref().filter(|e| e.is_file()) {
            Some(e) => e.clone(),
            None => {
                let e = runnable_by_others(&working_envoy()?, &bin)?;
                self.state.envoy = Some(e.clone());
                self.save()?;
                e
            }
        };
        let exe = match &self.proxy_exe {
            Some(e) => e.clone(),
            None => {
                let e = runnable_by_others(&self.exe, &bin)?;
                self.proxy_exe = Some(e.clone());
                e
            }
        };
        Ok((exe, envoy))
    }

    /// Routes a pod of `spec` gets: the service range and every cluster's pod range.
    pub(crate) fn routes(&self, spec: &ClusterSpec) -> Vec<Ipv4Net> {
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
            .map(|c| {
                json!({
                    "name": c.name,
                    "network": c.network,
                    "source": {"manifests": format!("clusters/{}", c.name)},
                    "serviceAccountIssuer": {
                        "jwks": crate::identity::jwks_file(&c.name),
                        "issuer": crate::identity::ISSUER,
                    },
                })
            })
            .collect();
        let mut mesh = json!({"meshID": t.mesh_id, "clusters": clusters});
        // The control plane signs with its cluster's intermediate of the lab's root.
        if let Some(cp) = t.clusters.iter().find(|c| c.control_plane) {
            mesh["ca"] = json!({"cacerts": format!("cacerts/{}", cp.name)});
        }
        let text = format!(
            "# Written by `isthmus lab up` for topology {:?}: the control plane's view of the lab.\n{}",
            t.name,
            serde_yaml_ng::to_string(&mesh).expect("serializable")
        );
        let path = self.dir.join("mesh.yaml");
        std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::write(&path, text))
            .map_err(|e| LabError::io("write", path, e))
    }

    /// A pod by `ns/name`, or by `ns/deployment` (its first ready replica).
    pub fn find_pod(&self, cluster: &str, pod: &str) -> Result<(PodKey, PodState), LabError> {
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
        let c = self
            .state
            .clusters
            .get(cluster)
            .ok_or_else(|| LabError::UnknownCluster {
                cluster: cluster.to_string(),
                known: self.state.clusters.keys().cloned().collect(),
            })?;
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
                matches.sort_by_key(|(_, p)| (p.terminating, !p.ready));
                matches
                    .first()
                    .map(|(k, p)| (k.split_once('/').expect("ns/name").1.to_string(), *p))
            });
        let (name, p) = found.ok_or_else(|| LabError::UnknownPod {
            cluster: cluster.to_string(),
            pod: format!("{ns}/{name}"),
            known: c.pods.keys().cloned().collect(),
        })?;
        Ok((PodKey::new(cluster, ns, name), p.clone()))
    }
}

/// The Envoy proxies will run (see [`isthmus_agent::envoy::find`]), once it has
/// answered `--version`.
fn working_envoy() -> Result<PathBuf, LabError> {
    let envoy = isthmus_agent::envoy::find(None).map_err(|source| LabError::Envoy { source })?;
    let reason = match std::process::Command::new(&envoy)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => return Ok(envoy),
        Ok(out) => format!("failed: {}", out.status),
        Err(e) => format!("could not run: {e}"),
    };
    Err(LabError::Envoy {
        source: isthmus_agent::Error::EnvoyNotWorking {
            path: envoy,
            reason,
        },
    })
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
    let err = |what: &'static str, p: &Path, source: std::io::Error| LabError::ProxyCannotRun {
        program: path.to_path_buf(),
        what,
        path: p.to_path_buf(),
        source,
    };
    let name = path.file_name().unwrap_or_default();
    let dest = bin.join(name);
    let src_len = path.metadata().map_err(|e| err("read", path, e))?.len();
    if dest.metadata().is_ok_and(|m| m.len() == src_len) && others_x(&dest) {
        return Ok(dest);
    }
    std::fs::create_dir_all(bin).map_err(|e| err("create", bin, e))?;
    for d in [bin, bin.parent().unwrap_or(bin)] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| err("open up", d, e))?;
    }
    let tmp = bin.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::copy(path, &tmp).map_err(|e| err("copy it to", &tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .and_then(|_| std::fs::rename(&tmp, &dest))
        .map_err(|e| err("install", &dest, e))?;
    if !dest
        .ancestors()
        .skip(1)
        .filter(|d| !d.as_os_str().is_empty())
        .all(others_x)
    {
        return Err(LabError::ClosedDirectory { path: dest });
    }
    Ok(dest)
}

/// The first free address of a range after the ten reserved at its start (gateway,
/// control plane, room for more).
pub(crate) fn free_address(
    cluster: &str,
    what: &'static str,
    range: Ipv4Net,
    used: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, LabError> {
    range
        .hosts()
        .skip(9)
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| LabError::RangeFull {
            cluster: cluster.to_string(),
            what,
            range,
        })
}

/// The n-th address of a range (1 = the first usable).
pub fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}
