//! [`LabError`]: what a lab command failed at, and what to do about it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::controller::PROXY_UID;
use crate::runtime::RuntimeError;

/// What a lab command can fail at. Each message names the file, object, pod or
/// cluster, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("topology {name}: {source} (name a topology file, or a built-in topology: {builtin})")]
    TopologyRead {
        name: String,
        builtin: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "topology {name}: {source} (fix the field; the built-in topology `single` is an example)"
    )]
    TopologySyntax {
        name: String,
        #[source]
        source: serde_path_to_error::Error<serde_yaml_ng::Error>,
    },

    #[error("topology {name}: {field}: {problem}")]
    TopologyInvalid {
        name: String,
        field: String,
        problem: String,
    },

    #[error("lab state {}: {source} (remove the lab with `isthmus lab down`)", path.display())]
    StateUnreadable {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot {what} {}: {source} (check the lab directory, --dir or ISTHMUS_LAB_DIR)", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot {what} {}: {source} (name readable manifest files or directories)", path.display())]
    Manifest {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot find the running isthmus binary: {source} (run it by its path)")]
    NoExecutable {
        #[source]
        source: io::Error,
    },

    #[error("no lab is up in {}: run `isthmus lab up` first", dir.display())]
    NotUp { dir: PathBuf },

    #[error(
        "a lab with topology {running:?} is up in {}: run `isthmus lab down` first to bring up {wanted:?}",
        dir.display()
    )]
    OtherTopology {
        dir: PathBuf,
        running: String,
        wanted: String,
    },

    #[error("no cluster {cluster:?} in this lab (clusters: {})", known.join(", "))]
    UnknownCluster { cluster: String, known: Vec<String> },

    #[error("no pod {pod} in cluster {cluster} (pods: {})", known.join(", "))]
    UnknownPod {
        cluster: String,
        pod: String,
        known: Vec<String>,
    },

    #[error(
        "no Deployment {namespace}/{name} in cluster {cluster}: apply it first (`isthmus lab apply {cluster} -f FILE`)"
    )]
    UnknownDeployment {
        cluster: String,
        namespace: String,
        name: String,
    },

    #[error("{}: no such file or directory (name manifest files or directories)", path.display())]
    NoSuchPath { path: PathBuf },

    #[error(
        "cluster {cluster}: the {what} range {range} is full (give the cluster a larger range in its topology)"
    )]
    RangeFull {
        cluster: String,
        what: &'static str,
        range: Ipv4Net,
    },

    #[error("the lab's proxies need Envoy: {source}")]
    Envoy {
        #[source]
        source: isthmus_agent::Error,
    },

    #[error(
        "cannot {what} {} ({source}), so the proxy (uid {PROXY_UID}) cannot run {}: use a lab directory under /run or /tmp (--dir)",
        path.display(),
        program.display()
    )]
    ProxyCannotRun {
        program: PathBuf,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{}: a directory above it is closed to other users, so the proxy (uid {PROXY_UID}) cannot use it; use a lab directory under /run or /tmp (--dir)",
        path.display()
    )]
    ClosedDirectory { path: PathBuf },

    #[error("workload identity: {0}")]
    Identity(#[from] isthmus_ca::CaError),

    #[error(
        "{} not ready after {timeout:?}: {} (see `isthmus lab status` and `isthmus lab logs CLUSTER NS/POD [-c CONTAINER]`)",
        if pods.len() == 1 { "a pod is" } else { "pods are" },
        pods.join(", ")
    )]
    NotReady {
        pods: Vec<String>,
        timeout: Duration,
    },

    #[error(transparent)]
    ContainerExited(Box<ContainerExited>),

    #[error("{}: {source} (containers of pod {pod}: {})", path.display(), containers.join(", "))]
    NoLog {
        pod: String,
        path: PathBuf,
        containers: Vec<String>,
        #[source]
        source: io::Error,
    },

    #[error("invalid URL {url:?}: {reason} (expected http://HOST[:PORT][/PATH])")]
    InvalidUrl { url: String, reason: &'static str },

    #[error(
        "pod {pod} cannot resolve {host:?}: it is neither an IPv4 address nor in the pod's hosts file (a Service's name, name.namespace or its FQDN)"
    )]
    UnknownHost { pod: String, host: String },

    #[error("{what} must be {limit} at most, so that load stays bounded (got {got})")]
    LoadLimit {
        what: &'static str,
        limit: String,
        got: String,
    },

    #[error("the container supervisor cannot {what}: {source}")]
    Supervisor {
        what: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A container that exited before its pod was ready: what it said last.
#[derive(Debug, thiserror::Error)]
#[error(
    "container {container} of pod {pod} exited ({exit}) before the pod was ready; the last lines of {}:\n{tail}\n(fix what it says and apply again; the whole log: `isthmus lab logs {cluster} {pod} -c {container}`)",
    log.display()
)]
pub struct ContainerExited {
    pub cluster: String,
    /// `namespace/name`.
    pub pod: String,
    pub container: String,
    /// How it exited, e.g. `exit status: 1`.
    pub exit: String,
    pub log: PathBuf,
    /// The log's last lines, indented.
    pub tail: String,
}

impl LabError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LabError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
