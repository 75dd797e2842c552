//! `lab down`: everything a lab made removed, from its recorded state and by name, so
//! also after a crash, a `kill -9` or a lost state file.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::procs::{Targets, Term, netns_id};
use super::state::State;
use super::{
    ETC_NETNS, Runtime, RuntimeError, STATE_FILE, cmd::ip, is_lab_netns, lab_netns, list_netns,
    lock_dir, netns_exists, netns_path, require_root, validate_lab,
};

/// How long [`Runtime::down`] gives processes between SIGTERM and SIGKILL.
const DOWN_GRACE: Duration = Duration::from_secs(2);

/// What [`Runtime::down`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownReport {
    /// Network namespaces deleted (pods' first, the lab's last).
    pub namespaces: Vec<String>,
    /// `/etc/netns` entries deleted.
    pub etc_netns: Vec<PathBuf>,
    /// Processes signalled (SIGTERM, and SIGKILL if they outlived the grace period).
    pub processes: Vec<u32>,
    /// Whether a state file was deleted.
    pub state_removed: bool,
    /// Whether the lab directory was deleted.
    pub dir_removed: bool,
}

impl DownReport {
    /// Whether there was nothing to remove.
    pub fn is_empty(&self) -> bool {
        *self == DownReport::default()
    }
}

impl fmt::Display for DownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing to remove");
        }
        let mut parts = Vec::new();
        if !self.processes.is_empty() {
            parts.push(format!("stopped {} processes", self.processes.len()));
        }
        if !self.namespaces.is_empty() {
            parts.push(format!(
                "deleted network namespaces {}",
                self.namespaces.join(", ")
            ));
        }
        if !self.etc_netns.is_empty() {
            parts.push(format!(
                "removed {} /etc/netns entries",
                self.etc_netns.len()
            ));
        }
        if self.dir_removed {
            parts.push("removed the lab directory".into());
        } else if self.state_removed {
            parts.push("removed the lab state".into());
        }
        f.write_str(&parts.join("; "))
    }
}

impl Runtime {
    /// Removes everything lab `lab` made: the processes recorded in `dir`'s state and
    /// any other process in one of its namespaces (SIGTERM, then SIGKILL after two
    /// seconds), every network namespace `il-<lab>` and `il-<lab>-<n>` (recorded or
    /// not: this also cleans up after a crash, a `kill -9` or a lost state file), their
    /// `/etc/netns` entries, and the state file; with `remove_dir`, the whole lab
    /// directory (else the logs stay). Idempotent. Must not be called while this
    /// process holds a [`Runtime`] of `dir` (it takes the directory's lock).
    pub fn down(dir: &Path, lab: &str, remove_dir: bool) -> Result<DownReport, RuntimeError> {
        validate_lab(lab)?;
        require_root("remove the lab")?;
        let mut report = DownReport::default();
        let state_path = dir.join(STATE_FILE);
        let (_lock, state) = if dir.is_dir() {
            let lock = lock_dir(dir)?;
            let state = match State::load(&state_path) {
                Ok(Some(state)) if state.lab != lab => {
                    return Err(RuntimeError::OtherLab {
                        dir: dir.to_path_buf(),
                        found: state.lab,
                        wanted: lab.to_string(),
                    });
                }
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(error = %e, "removing everything by name only");
                    None
                }
            };
            (Some(lock), state.unwrap_or_else(|| State::new(lab)))
        } else {
            (None, State::new(lab))
        };

        let lab_ns = lab_netns(lab);
        let mut names: BTreeSet<String> = list_netns()?
            .into_iter()
            .filter(|n| is_lab_netns(n, lab))
            .collect();
        names.extend(
            state
                .pods
                .values()
                .map(|p| p.netns.clone())
                .filter(|n| netns_exists(n)),
        );
        report.processes = Targets {
            leaders: state.pods.values().flat_map(|p| &p.processes).collect(),
            namespaces: names
                .iter()
                .filter_map(|n| netns_id(&netns_path(n)))
                .collect(),
            group: None,
            term: Term::Everything,
        }
        .stop(DOWN_GRACE);

        let mut errors = Vec::new();
        // Pods first: deleting their namespaces also deletes their veths.
        let (labs, pods): (Vec<String>, Vec<String>) =
            names.into_iter().partition(|n| *n == lab_ns);
        for name in pods.into_iter().chain(labs) {
            if !netns_exists(&name) {
                continue;
            }
            match ip(&["netns", "del", &name]) {
                Ok(_) => report.namespaces.push(name),
                Err(e) => errors.push(e),
            }
        }
        match std::fs::read_dir(ETC_NETNS) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if name.to_str().is_some_and(|n| is_lab_netns(n, lab)) {
                        let path = entry.path();
                        match std::fs::remove_dir_all(&path) {
                            Ok(()) => report.etc_netns.push(path),
                            Err(e) => errors.push(RuntimeError::io("remove", path, e)),
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(RuntimeError::io("list", ETC_NETNS, e)),
        }
        if let Some(first) = errors.into_iter().reduce(|first, later| {
            tracing::warn!(error = %later, "lab down");
            first
        }) {
            // The state stays, so that another `lab down` finds the processes too.
            return Err(first);
        }
        for path in [state_path.clone(), state_path.with_extension("json.tmp")] {
            match std::fs::remove_file(&path) {
                Ok(()) => report.state_removed |= path == state_path,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RuntimeError::io("remove", path, e)),
            }
        }
        // The pods' mounted tokens go with the pods (the CA material stays with the lab
        // directory, so a lab brought up again keeps its root).
        let secrets = dir.join("secrets");
        match std::fs::remove_dir_all(&secrets) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io("remove", secrets, e)),
        }
        if remove_dir && dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| RuntimeError::io("remove", dir, e))?;
            report.dir_removed = true;
        }
        tracing::info!(lab, "lab down: {report}");
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_reports_read_well() {
        assert_eq!(DownReport::default().to_string(), "nothing to remove");
        let r = DownReport {
            namespaces: vec!["il-a-1".into(), "il-a".into()],
            processes: vec![1, 2],
            state_removed: true,
            ..DownReport::default()
        };
        assert_eq!(
            r.to_string(),
            "stopped 2 processes; deleted network namespaces il-a-1, il-a; removed the lab state"
        );
    }
}
