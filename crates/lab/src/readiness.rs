//! Readiness and liveness: the lab probes a pod until it answers (its app's ports
//! accept connections, its proxy says ready, the control plane has synced) and then
//! marks it Ready for the control plane; a container that exits meanwhile fails the
//! wait at once, with the end of its log. `lab status` checks that every process
//! runs, not only what was recorded.

use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::LabError;
use crate::controller::{DEBUG_PORT, Lab, PodRole, PodState, pod_key};
use crate::error::ContainerExited;
use crate::http;
use crate::runtime::{ContainerStatus, PodKey};

/// How often pods that are not ready yet are probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The agent's readiness port (`/healthz/ready`).
const PROXY_READINESS_PORT: u16 = 15021;
/// How many lines of a container's log an exit shows.
const LOG_TAIL_LINES: usize = 15;

impl Lab {
    /// Waits until every pod's processes answer, marks them Ready and tells the
    /// control plane; fails at once when a container of a pod that is not ready yet
    /// exits (with the end of its log), else after `timeout`, naming the pods that did
    /// not get ready.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), LabError> {
        let start = Instant::now();
        loop {
            let mut pending = Vec::new();
            let mut changed = false;
            let waiting: Vec<(String, String, PodState)> = self
                .state
                .clusters
                .iter()
                .flat_map(|(c, s)| {
                    s.pods
                        .iter()
                        .filter(|(_, p)| !p.ready && !p.terminating)
                        .map(move |(k, p)| (c.clone(), k.clone(), p.clone()))
                })
                .collect();
            for (cluster, key, p) in waiting {
                let pk = pod_key(&cluster, &key);
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
                    self.fail_on_exit(&pk, &p)?;
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
                return Err(LabError::NotReady {
                    pods: pending,
                    timeout,
                });
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    /// An error if a container of pod `key` has exited (or exited and was restarted).
    fn fail_on_exit(&self, key: &PodKey, p: &PodState) -> Result<(), LabError> {
        for name in p.process_names() {
            let c = self.rt.container(key, &name);
            let exited = c.restarts > 0 || (!c.running && c.last_exit.is_some());
            if !exited {
                continue;
            }
            let log = self.rt.log_path(key, &name);
            return Err(LabError::ContainerExited(Box::new(ContainerExited {
                cluster: key.cluster.clone(),
                pod: format!("{}/{}", key.namespace, key.name),
                container: name,
                exit: c.last_exit.unwrap_or_else(|| "exited".into()),
                tail: log_tail(&log, LOG_TAIL_LINES),
                log,
            })));
        }
        Ok(())
    }

    /// Whether a pod's app ports accept connections and its proxy (or control plane)
    /// says it is ready, asked inside the pod.
    fn pod_answers(&self, key: &PodKey, p: &PodState) -> bool {
        let ready_url = match p.role {
            PodRole::ControlPlane => Some((DEBUG_PORT, "/ready")),
            PodRole::Sidecar | PodRole::Gateway => Some((PROXY_READINESS_PORT, "/healthz/ready")),
            PodRole::Plain => None,
        };
        let ports: Vec<u16> = if matches!(p.role, PodRole::Sidecar | PodRole::Plain) {
            p.containers
                .iter()
                .flat_map(|(_, _, ports)| ports.iter().map(|(_, port)| *port))
                .collect()
        } else {
            Vec::new()
        };
        if ready_url.is_none() && ports.is_empty() {
            return true;
        }
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let probe = || {
            ready_url.is_none_or(|(port, path)| {
                http::get(local(port), &local(port).to_string(), path, PROBE_TIMEOUT)
                    .is_ok_and(|r| r.status == 200)
            }) && ports
                .iter()
                .all(|&port| TcpStream::connect_timeout(&local(port), PROBE_TIMEOUT).is_ok())
        };
        self.rt
            .pod_netns(key)
            .and_then(|ns| ns.run_one(probe))
            .unwrap_or(false)
    }

    /// Rows for `lab status`: cluster, pod, IP, role, ready, restarts, processes. A pod
    /// is shown ready only while every one of its processes runs.
    pub fn status_rows(&self) -> Vec<[String; 7]> {
        let mut out = Vec::new();
        for (cluster, c) in &self.state.clusters {
            for (key, p) in &c.pods {
                let pk = pod_key(cluster, key);
                let containers: Vec<(String, ContainerStatus)> = p
                    .process_names()
                    .into_iter()
                    .map(|n| {
                        let s = self.rt.container(&pk, &n);
                        (n, s)
                    })
                    .collect();
                let all_running = containers.iter().all(|(_, s)| s.running);
                let ready = if p.terminating {
                    "terminating"
                } else if p.ready && all_running {
                    "yes"
                } else {
                    "no"
                };
                let restarts: u32 = containers.iter().map(|(_, s)| s.restarts).sum();
                let processes: Vec<String> = containers
                    .iter()
                    .map(|(n, s)| match (&s.last_exit, s.running) {
                        (_, true) => n.clone(),
                        (Some(exit), false) => format!("{n} (not running: {exit})"),
                        (None, false) => format!("{n} (not running)"),
                    })
                    .collect();
                out.push([
                    cluster.clone(),
                    key.clone(),
                    p.ip.to_string(),
                    format!("{:?}", p.role).to_lowercase(),
                    ready.to_string(),
                    restarts.to_string(),
                    processes.join(", "),
                ]);
            }
        }
        out
    }
}

/// The last `n` lines of the log at `path` (read from its last 64 KiB), or why there
/// are none.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(n)..]
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("  (no log: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_is_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let text: String = (1..=40).map(|i| format!("line {i}\n\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 2), "  line 39\n  line 40");
        assert!(log_tail(&dir.path().join("none.log"), 2).contains("no log"));
    }
}
