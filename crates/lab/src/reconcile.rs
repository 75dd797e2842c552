//! The Deployment controller's and the kubelet's side of the lab: each Deployment's
//! replicas run as pods (a network namespace, the stand-ins of its containers and,
//! with a sidecar, `isthmus agent`, each under a supervisor that restarts it); a
//! changed template rolls (new pods ready before old ones go); surplus pods stop the
//! way a careful cluster stops them (see [`Lab::terminate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use serde_json::json;

use crate::LabError;
use crate::apply::obj_id;
use crate::controller::{
    ApplyReport, ContainerInfo, Lab, PROXY_UID, PodRole, PodState, READY_TIMEOUT, free_address,
    pod_key,
};
use crate::runtime::{Capture, PodKey, Process};
use crate::topology::ClusterSpec;

/// How long a stopping pod has between SIGTERM and SIGKILL (Kubernetes'
/// `terminationGracePeriodSeconds`, 30 s there): its proxy drains meanwhile.
pub const POD_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping pod's agent drains Envoy's listeners (`--drain-seconds`): the
/// proxies that sent to the pod have already let go of it (see [`Lab::terminate`]),
/// so this only lets requests in flight finish.
pub const PROXY_DRAIN_SECONDS: u64 = 1;

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
        // Stop pods of gone or changed Deployments, surplus replicas, and pods an
        // earlier command left terminating.
        let mut keep: BTreeMap<String, usize> = BTreeMap::new();
        let mut stop = Vec::new();
        for (key, p) in &pods {
            let Some(owner) = &p.owner else { continue };
            match desired.get(owner) {
                Some((hash, replicas, _)) if *hash == p.template_hash && !p.terminating => {
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
        // Start what's missing, and (a rolling update) let it get ready before old
        // revisions stop.
        let mut started = false;
        for (owner, (hash, replicas, template)) in &desired {
            let have = keep.get(owner).copied().unwrap_or(0);
            for _ in have..*replicas {
                let key = self.start_pod(cluster, owner, hash, template)?;
                report.pods_started.push(format!("{cluster}/{key}"));
                started = true;
            }
        }
        if started && !stop.is_empty() {
            self.refresh_hosts()?;
            self.write_pods_and_slices()?;
            self.save()?;
            self.wait_ready(READY_TIMEOUT)?;
        }
        self.terminate(cluster, &stop)?;
        report
            .pods_stopped
            .extend(stop.iter().map(|key| format!("{cluster}/{key}")));
        Ok(())
    }

    /// Stops pods `keys` (`ns/name`) of `cluster` the way a careful cluster does, so
    /// that no request is lost: (a) they leave the EndpointSlices (kept in the Pods as
    /// terminating); (b) the lab waits, bounded, until every control plane reports
    /// that each proxy that held their endpoints has acknowledged the removal; (c)
    /// each container gets SIGTERM, so the sidecar's agent drains Envoy's listeners
    /// while the app finishes the requests it has; (d) what is left is killed after
    /// [`POD_GRACE`]. All of them at once.
    pub(crate) fn terminate(&mut self, cluster: &str, keys: &[String]) -> Result<(), LabError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut addresses = Vec::new();
        if let Some(c) = self.state.clusters.get_mut(cluster) {
            for key in keys {
                if let Some(p) = c.pods.get_mut(key) {
                    p.terminating = true;
                    p.ready = false;
                    addresses.push(p.ip);
                }
            }
        }
        self.write_pods_and_slices()?;
        self.save()?;
        self.wait_endpoints_removed(&addresses);
        let running: Vec<PodKey> = keys
            .iter()
            .map(|k| pod_key(cluster, k))
            .filter(|k| self.rt.pod(k).is_some())
            .collect();
        self.rt.delete_pods(&running, POD_GRACE)?;
        for key in keys {
            crate::identity::unmount_pod_secrets(&self.dir, &pod_key(cluster, key));
        }
        if let Some(c) = self.state.clusters.get_mut(cluster) {
            for key in keys {
                c.pods.remove(key);
            }
        }
        self.write_pods_and_slices()?;
        self.save()
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
        // What Istio's injector adds: the label that says the pod takes mesh mTLS.
        let mut labels = labels;
        if role == PodRole::Sidecar {
            labels.insert("security.istio.io/tlsMode".into(), "istio".into());
        }
        let service_account = pod_spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = PodKey::new(cluster, ns, name.clone());
        if role != PodRole::Plain {
            // Before the pod exists: a proxy without Envoy would never get ready.
            self.proxy_binaries()?;
        }
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
        self.record_pod(
            cluster,
            &format!("{ns}/{name}"),
            PodState {
                ip,
                owner: Some(owner.to_string()),
                template_hash: hash.to_string(),
                labels: labels.clone(),
                service_account: service_account.clone(),
                role,
                containers,
                ready: false,
                terminating: false,
            },
        )?;
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
        self.run_container(key, &c.name, Process::new(&exe, &args, &env, None))
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
        let (exe, envoy) = self.proxy_binaries()?;
        let mesh_id = self.topology()?.mesh_id.clone();
        let labels_arg = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        // What a kubelet mounts: the pod's token and the mesh's root; with them the
        // agent gets the workload's certificate and Envoy its config over TLS (15012).
        let secrets = crate::identity::mount_pod_secrets(&self.dir, key, service_account)?;
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
            (
                "--discovery-address",
                format!("{cp_ip}:{}", crate::identity::SECURE_XDS_PORT),
            ),
            ("--ca-root-cert", secrets.root_cert.display().to_string()),
            ("--token-file", secrets.token.display().to_string()),
            ("--envoy", envoy.display().to_string()),
            ("--drain-seconds", PROXY_DRAIN_SECONDS.to_string()),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        if !labels_arg.is_empty() {
            args.push("--labels".into());
            args.push(labels_arg.into());
        }
        let env = vec![("HOME".to_string(), "/tmp".to_string())];
        self.run_container(
            key,
            "istio-proxy",
            Process::new(&exe, &args, &env, Some(PROXY_UID)),
        )
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

    pub(crate) fn refresh_hosts(&mut self) -> Result<(), LabError> {
        let mut updates = Vec::new();
        for (cluster, c) in &self.state.clusters {
            for key in c.pods.keys() {
                let key = pod_key(cluster, key);
                let hosts = self.hosts_for(cluster, &key.namespace);
                updates.push((key, hosts));
            }
        }
        for (k, h) in updates {
            self.rt.update_hosts(&k, &h)?;
        }
        Ok(())
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
            .ok_or_else(|| LabError::UnknownDeployment {
                cluster: cluster.to_string(),
                namespace: ns.to_string(),
                name: name.to_string(),
            })?;
        obj["spec"]["replicas"] = json!(replicas);
        self.save()?;
        self.reconcile_all()
    }
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
