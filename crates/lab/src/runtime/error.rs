//! [`RuntimeError`]: what failed, and what to do about it.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::PodKey;

/// An error of the lab's runtime. Each says what failed and, where there is one, what
/// to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "the lab needs root to {what} (network namespaces, links and iptables need \
         CAP_NET_ADMIN and CAP_SYS_ADMIN): run it as root, e.g. with sudo"
    )]
    NotRoot { what: String },

    #[error(
        "`{tool}` not found (looked in PATH, /usr/sbin and /sbin): install it with `apt-get install {package}`"
    )]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },

    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "lab state {} is unreadable: {source}; move it away, or run `lab down` (which also \
         removes everything by name)",
        path.display()
    )]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "lab directory {} holds lab `{found}`, not `{wanted}`: use another directory, or \
         `lab down` lab `{found}` first",
        dir.display()
    )]
    OtherLab {
        dir: PathBuf,
        found: String,
        wanted: String,
    },

    #[error("invalid lab name `{0}`: use 1 to 24 characters from a-z and 0-9")]
    InvalidLabName(String),

    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("invalid network settings: {0}")]
    InvalidNetwork(String),

    #[error("cluster `{0}` is not set up in this lab: call ensure_cluster first")]
    UnknownCluster(String),

    #[error(
        "cluster `{cluster}` already has pod range {existing} (gateway {existing_gateway}); \
         it cannot become {wanted} (gateway {wanted_gateway}) while the lab runs: `lab down` first"
    )]
    ClusterConflict {
        cluster: String,
        existing: Ipv4Net,
        existing_gateway: Ipv4Addr,
        wanted: Ipv4Net,
        wanted_gateway: Ipv4Addr,
    },

    #[error("pod {0} is not in this lab")]
    UnknownPod(PodKey),

    #[error("pod {key} already exists (network namespace {netns}): delete it first")]
    PodExists { key: PodKey, netns: String },

    #[error(
        "network namespace {netns} of pod {key} is gone (host rebooted, or removed by hand): \
         delete the pod, or `lab down` and start again"
    )]
    NetnsGone { key: PodKey, netns: String },

    #[error("container {container} of pod {key} is still running (pid {pid}): stop it first")]
    AlreadyRunning {
        key: PodKey,
        container: String,
        pid: u32,
    },

    #[error("program {} not found or not executable", .0.display())]
    ProgramNotFound(PathBuf),

    #[error("`{program}` not found (looked in PATH, /usr/sbin and /sbin): {install}")]
    CommandNotFound { program: String, install: String },

    #[error("nothing to run: the command line is empty")]
    EmptyCommand,
}

impl RuntimeError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
