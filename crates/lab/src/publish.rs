//! The kubelet's and the endpoints controller's side of the lab: the Pods the lab runs
//! and the EndpointSlices of the Services that select them, written where the control
//! plane reads them (a pod's endpoint is ready once the pod is, and leaves the slices
//! when the pod starts terminating); and, when pods stop, asking the control planes
//! until every proxy has let go of their endpoints.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use crate::LabError;
use crate::controller::{DEBUG_PORT, Lab, PodState};
use crate::http;
use crate::runtime::PodKey;

/// How long a stopping pod waits for the proxies to let go of its endpoint.
pub const REMOVAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it waits instead when a control plane cannot tell (it has no
/// `/debug/endpointz`): time enough for a push to every proxy of the lab.
pub const REMOVAL_UNKNOWN_WAIT: Duration = Duration::from_secs(1);
/// How often the control planes are asked.
const REMOVAL_POLL: Duration = Duration::from_millis(50);

/// What a control plane says about an address the lab no longer publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Not in its registry, and no proxy holds it unacknowledged.
    Done,
    /// It cannot tell (no `/debug/endpointz`).
    Unknown,
    /// Still held: by the registry or by these proxies (or the control plane did not
    /// answer, and why).
    Pending(String),
}

impl Removal {
    /// Reads an answer of `GET /debug/endpointz?address=IP`:
    /// `{"address":"IP","registry":BOOL,"proxies":[{"id":"…","acked":BOOL}]}`.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Removal {
        match status {
            404 => return Removal::Unknown,
            200 => {}
            other => return Removal::Pending(format!("/debug/endpointz answered {other}")),
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Removal::Pending("/debug/endpointz answered no JSON".into());
        };
        let registry = v["registry"].as_bool().unwrap_or(true);
        let proxies: Vec<String> = v["proxies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        format!(
                            "{}{}",
                            p["id"].as_str().unwrap_or("?"),
                            if p["acked"].as_bool() == Some(true) {
                                ""
                            } else {
                                " (not acknowledged)"
                            }
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !registry && proxies.is_empty() {
            Removal::Done
        } else if proxies.is_empty() {
            Removal::Pending("still in the registry".into())
        } else {
            Removal::Pending(format!("held by {}", proxies.join(", ")))
        }
    }
}

impl Lab {
    /// Writes the Pods and EndpointSlices of every cluster where the control plane reads them.
    pub(crate) fn write_pods_and_slices(&self) -> Result<(), LabError> {
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
                        !p.terminating
                            && k.split_once('/').is_some_and(|(pns, _)| pns == ns)
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

    /// Waits, at most [`REMOVAL_TIMEOUT`], until every control plane says that none of
    /// `addresses` is in its registry and every proxy that held them has acknowledged
    /// their removal (`GET /debug/endpointz?address=IP` on its debug port, asked in its
    /// pod). A control plane that cannot tell makes this wait [`REMOVAL_UNKNOWN_WAIT`]
    /// instead. Going on after the time-out is logged with what still held them.
    pub(crate) fn wait_endpoints_removed(&self, addresses: &[Ipv4Addr]) {
        let control_planes = self.control_plane_pods();
        if addresses.is_empty() || control_planes.is_empty() {
            return;
        }
        let start = Instant::now();
        let mut pending: BTreeMap<(PodKey, Ipv4Addr), String> = control_planes
            .iter()
            .flat_map(|cp| {
                addresses
                    .iter()
                    .map(|ip| ((cp.clone(), *ip), String::new()))
            })
            .collect();
        let mut unknown = false;
        loop {
            for cp in &control_planes {
                let ips: Vec<Ipv4Addr> = pending
                    .keys()
                    .filter(|(k, _)| k == cp)
                    .map(|(_, ip)| *ip)
                    .collect();
                for (ip, removal) in ips.iter().zip(self.ask_removal(cp, &ips)) {
                    let key = (cp.clone(), *ip);
                    match removal {
                        Removal::Done => {
                            pending.remove(&key);
                        }
                        Removal::Unknown => {
                            unknown = true;
                            pending.remove(&key);
                        }
                        Removal::Pending(why) => {
                            pending.insert(key, why);
                        }
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            if start.elapsed() >= REMOVAL_TIMEOUT {
                for ((cp, ip), why) in &pending {
                    tracing::warn!(control_plane = %cp, address = %ip, "stopping the pod after {REMOVAL_TIMEOUT:?} although its endpoint is {why}");
                }
                return;
            }
            std::thread::sleep(REMOVAL_POLL);
        }
        if unknown {
            std::thread::sleep(REMOVAL_UNKNOWN_WAIT.saturating_sub(start.elapsed()));
        }
        tracing::debug!(elapsed = ?start.elapsed(), unknown, "the proxies let go of the endpoints");
    }

    /// What control plane `cp` says about each of `ips`.
    fn ask_removal(&self, cp: &PodKey, ips: &[Ipv4Addr]) -> Vec<Removal> {
        let debug = SocketAddr::from((Ipv4Addr::LOCALHOST, DEBUG_PORT));
        let ask = || {
            ips.iter()
                .map(|ip| {
                    match http::get(
                        debug,
                        &debug.to_string(),
                        &format!("/debug/endpointz?address={ip}"),
                        Duration::from_secs(1),
                    ) {
                        Ok(r) => Removal::from_answer(r.status, &r.body),
                        Err(e) => Removal::Pending(format!(
                            "unknown: the control plane did not answer ({e})"
                        )),
                    }
                })
                .collect()
        };
        match self.rt.pod_netns(cp).and_then(|ns| ns.run_one(ask)) {
            Ok(answers) => answers,
            Err(e) => vec![Removal::Pending(format!("unknown: {e}")); ips.len()],
        }
    }
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
pub(crate) fn write_atomically(path: &Path, text: String) -> Result<(), LabError> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| LabError::io("create", dir, e))?;
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("file").to_string_lossy()
    ));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| LabError::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpointz_answers() {
        let done = br#"{"address":"198.18.0.12","registry":false,"proxies":[]}"#;
        assert_eq!(Removal::from_answer(200, done), Removal::Done);
        let held = br#"{"address":"198.18.0.12","registry":false,"proxies":[{"id":"sidecar~198.18.0.11~curl-x.default~default.svc.cluster.local","acked":false}]}"#;
        assert_eq!(
            Removal::from_answer(200, held),
            Removal::Pending(
                "held by sidecar~198.18.0.11~curl-x.default~default.svc.cluster.local (not acknowledged)"
                    .into()
            )
        );
        let registry = br#"{"address":"198.18.0.12","registry":true,"proxies":[]}"#;
        assert_eq!(
            Removal::from_answer(200, registry),
            Removal::Pending("still in the registry".into())
        );
        assert_eq!(Removal::from_answer(404, b"not found"), Removal::Unknown);
        assert!(matches!(
            Removal::from_answer(200, b"<html>"),
            Removal::Pending(_)
        ));
        assert!(matches!(
            Removal::from_answer(503, b""),
            Removal::Pending(_)
        ));
    }
}
