//! The lab's recorded state (`state.json` in the lab's directory): every cluster
//! bridge, pod namespace and process the lab made, so that later commands, and `lab
//! down`, find them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{Capture, RuntimeError};

/// Identifies a pod: `cluster/namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(
        cluster: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> PodKey {
        PodKey {
            cluster: cluster.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.cluster, self.namespace, self.name)
    }
}

/// A cluster's bridge in the lab's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    /// `ilbrN` in the lab namespace.
    pub bridge: String,
    pub pod_cidr: Ipv4Net,
    /// The bridge's address: the pods' next hop to other clusters and services.
    pub gateway: Ipv4Addr,
}

/// A pod: its network namespace, its veth and its processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub key: PodKey,
    /// `il-<lab>-<n>`.
    pub netns: String,
    /// The host side of its veth, on the cluster bridge in the lab namespace (`vp<n>`).
    pub veth: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub routes: Vec<Ipv4Net>,
    pub capture: Option<Capture>,
    pub processes: Vec<ProcessRecord>,
}

/// A process started in a pod, the leader of its own process group. It is identified
/// by pid, start time and boot, so that a later process reusing the pid is never taken
/// for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub container: String,
    pub pid: u32,
    /// `/proc/PID/stat` field 22: clock ticks after boot.
    pub start_time: u64,
    pub boot_id: String,
    /// The command line (lossily UTF-8), for people.
    pub command: Vec<String>,
    pub uid: Option<u32>,
    pub log: PathBuf,
    /// Whether it is a supervisor (`lab supervise`) that keeps the container's own
    /// process running, recording it in a [`ContainerState`].
    #[serde(default)]
    pub supervised: bool,
}

/// What a supervisor records about its container (`<container>.state.json` beside the
/// log): the running process, its restarts, how it last exited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// The container's process while it runs (`None` while it waits to be restarted),
    /// with its start time and boot, so a later process with its pid is not taken for it.
    pub pid: Option<u32>,
    #[serde(default)]
    pub start_time: u64,
    #[serde(default)]
    pub boot_id: String,
    /// How often it was started again after exiting.
    pub restarts: u32,
    /// How it last exited, e.g. `exit status: 1` or `signal: 9 (SIGKILL)`.
    pub last_exit: Option<String>,
    /// When (Unix seconds).
    pub last_exit_at: Option<u64>,
    /// Told to stop: it is not restarted again.
    #[serde(default)]
    pub stopping: bool,
}

impl ContainerState {
    /// Records `pid` as the container's running process.
    pub fn started(&mut self, pid: u32) {
        self.pid = Some(pid);
        self.start_time = super::procs::stat(pid as i32).map_or(0, |s| s.start_time);
        self.boot_id = super::procs::boot_id();
    }

    /// Records that the container's process exited, and how.
    pub fn exited(&mut self, how: String) {
        self.pid = None;
        self.last_exit = Some(how);
        self.last_exit_at = Some(super::unix_now());
    }

    /// Whether the recorded process still runs (this boot, same start time, not a zombie).
    pub fn running(&self, boot: &str) -> bool {
        self.pid.is_some_and(|pid| {
            self.boot_id == boot
                && super::procs::stat(pid as i32)
                    .is_some_and(|s| s.start_time == self.start_time && s.running())
        })
    }

    /// The state in `path`, if there is a readable one.
    pub fn load(path: &Path) -> Option<ContainerState> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Writes it to `path` through a temporary file, so readers see all or nothing.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    }
}

const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    pub lab: String,
    /// The number of the next pod namespace (`il-<lab>-<n>`).
    pub next_pod: u32,
    pub clusters: BTreeMap<String, ClusterRecord>,
    /// By `PodKey`'s display form.
    pub pods: BTreeMap<String, PodRecord>,
}

impl State {
    pub fn new(lab: &str) -> State {
        State {
            version: VERSION,
            lab: lab.to_string(),
            next_pod: 1,
            ..State::default()
        }
    }

    /// The state in `path`; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<State>, RuntimeError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RuntimeError::io("read lab state", path, e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| RuntimeError::State {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Writes the state to `path` atomically (a temporary file renamed over it), so a
    /// crash leaves the old state or the new one.
    pub fn save(&self, path: &Path) -> Result<(), RuntimeError> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|source| RuntimeError::State {
            path: path.to_path_buf(),
            source,
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()
        };
        write().map_err(|e| RuntimeError::io("write lab state", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("write lab state", path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(State::load(&path).unwrap().is_none());
        let mut state = State::new("t1");
        state.clusters.insert(
            "c1".into(),
            ClusterRecord {
                name: "c1".into(),
                bridge: "ilbr0".into(),
                pod_cidr: "198.18.0.0/24".parse().unwrap(),
                gateway: "198.18.0.1".parse().unwrap(),
            },
        );
        let key = PodKey::new("c1", "default", "a");
        state.pods.insert(
            key.to_string(),
            PodRecord {
                key: key.clone(),
                netns: "il-t1-1".into(),
                veth: "vp1".into(),
                ip: "198.18.0.10".parse().unwrap(),
                prefix: 24,
                routes: vec!["198.19.0.0/16".parse().unwrap()],
                capture: Some(Capture::istio(1337)),
                processes: vec![ProcessRecord {
                    container: "app".into(),
                    pid: 42,
                    start_time: 7,
                    boot_id: "b".into(),
                    command: vec!["sleep".into(), "1".into()],
                    uid: Some(1337),
                    log: "/x.log".into(),
                    supervised: true,
                }],
            },
        );
        state.save(&path).unwrap();
        let loaded = State::load(&path).unwrap().unwrap();
        assert_eq!(loaded.pods, state.pods);
        assert_eq!(loaded.clusters, state.clusters);
        assert_eq!(key.to_string(), "c1/default/a");

        std::fs::write(&path, "{").unwrap();
        let err = State::load(&path).unwrap_err().to_string();
        assert!(err.contains("lab down"), "{err}");

        // A state written before containers had supervisors.
        let old = r#"{"container":"app","pid":1,"start_time":2,"boot_id":"b","command":[],"uid":null,"log":"/x"}"#;
        let p: ProcessRecord = serde_json::from_str(old).unwrap();
        assert!(!p.supervised);
    }

    #[test]
    fn container_state_round_trips_and_knows_its_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.state.json");
        assert_eq!(ContainerState::load(&path), None);
        let mut s = ContainerState::default();
        s.started(std::process::id());
        let boot = super::super::procs::boot_id();
        assert!(s.running(&boot));
        assert!(!s.running("another boot"));
        s.save(&path).unwrap();
        assert_eq!(ContainerState::load(&path), Some(s.clone()));
        s.exited("signal: 9 (SIGKILL)".into());
        assert!(!s.running(&boot));
        assert_eq!(s.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"));
    }
}
