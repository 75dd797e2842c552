//! A pod's containers: processes started in its network namespace (kept running by a
//! supervisor when their restart policy says so), their logs and state, and running
//! commands or code inside a pod's network namespace.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use super::cmd::{self, IP, SETPRIV, tool};
use super::procs::{Targets, Term, boot_id, netns_id};
use super::state::{ContainerState, ProcessRecord};
use super::{PodKey, Runtime, RuntimeError, etc_netns, netns_path, require_root, validate_name};

/// What restarts a container's process when it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart<'a> {
    /// Nothing: once it exits, it stays gone (`restartPolicy: Never`).
    Never,
    /// `SUPERVISOR lab supervise` runs it and starts it again after it exits, with
    /// backoff (`restartPolicy: Always`); `supervisor` is the isthmus binary.
    Always { supervisor: &'a Path },
}

/// A container's process: what to run, as whom, and what restarts it.
#[derive(Debug, Clone, Copy)]
pub struct Process<'a> {
    pub program: &'a Path,
    pub args: &'a [OsString],
    /// Added to this process's environment.
    pub env: &'a [(String, String)],
    /// Run as this uid and gid (through `setpriv`), else as root.
    pub uid: Option<u32>,
    pub restart: Restart<'a>,
}

impl<'a> Process<'a> {
    /// `program args` with `env` added, as `uid` (else root), not restarted.
    pub fn new(
        program: &'a Path,
        args: &'a [OsString],
        env: &'a [(String, String)],
        uid: Option<u32>,
    ) -> Self {
        Process {
            program,
            args,
            env,
            uid,
            restart: Restart::Never,
        }
    }
}

/// A container as `lab status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Whether the container's process runs now (the supervised process, not only its
    /// supervisor).
    pub running: bool,
    /// How often its supervisor started it again.
    pub restarts: u32,
    /// How it last exited, e.g. `exit status: 1` or `signal: 9 (SIGKILL)`.
    pub last_exit: Option<String>,
}

/// A pod's network namespace, opened: threads can be run inside it.
#[derive(Debug)]
pub struct PodNetns {
    file: File,
    path: PathBuf,
}

impl PodNetns {
    /// Runs `f(0)`..`f(n - 1)` at once, each on a thread of its own inside the network
    /// namespace (sockets it opens are the pod's, with its addresses, routes and
    /// capture rules), and returns what they returned.
    pub fn run<T: Send>(
        &self,
        n: usize,
        f: impl Fn(usize) -> T + Sync,
    ) -> Result<Vec<T>, RuntimeError> {
        let f = &f;
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..n)
                .map(|i| {
                    scope.spawn(move || {
                        // Only this thread changes namespace; it ends with the scope.
                        setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                            RuntimeError::io("enter network namespace", &self.path, errno.into())
                        })?;
                        Ok(f(i))
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// Runs `f` on a thread inside the network namespace; see [`PodNetns::run`].
    pub fn run_one<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, RuntimeError> {
        let f = std::sync::Mutex::new(Some(f));
        let mut out = self.run(1, |_| {
            let f = f.lock().ok().and_then(|mut f| f.take()).expect("runs once");
            f()
        })?;
        Ok(out.pop().expect("one result"))
    }
}

impl Runtime {
    /// Where container `container` of pod `key` logs:
    /// `<dir>/logs/<cluster>/<namespace>/<pod>/<container>.log`.
    pub fn log_path(&self, key: &PodKey, container: &str) -> PathBuf {
        self.dir
            .join("logs")
            .join(&key.cluster)
            .join(&key.namespace)
            .join(&key.name)
            .join(format!("{container}.log"))
    }

    /// Where the supervisor of container `container` of pod `key` keeps its state
    /// (process, restarts, last exit), beside its log: `<container>.state.json`.
    pub fn container_state_path(&self, key: &PodKey, container: &str) -> PathBuf {
        self.log_path(key, container)
            .with_file_name(format!("{container}.state.json"))
    }

    /// Starts `program args` as container `container` of pod `key` and does not
    /// restart it: [`Runtime::run_container`] with [`Restart::Never`].
    pub fn spawn(
        &mut self,
        key: &PodKey,
        container: &str,
        program: &Path,
        args: &[OsString],
        env: &[(String, String)],
        uid: Option<u32>,
    ) -> Result<u32, RuntimeError> {
        self.run_container(key, container, &Process::new(program, args, env, uid))
    }

    /// Starts container `container` of pod `key`: `ip netns exec NETNS [SUPERVISOR lab
    /// supervise --state FILE --] [setpriv --reuid UID --regid UID --clear-groups --]
    /// program args`, with `env` added to this process's environment, stdin from
    /// /dev/null, stdout and stderr appended to [`Runtime::log_path`], in a process
    /// group of its own, not waited for (it outlives this process). Records it,
    /// replacing an earlier process of the container that has exited. Returns the pid
    /// of the process group's leader (the supervisor, if there is one).
    pub fn run_container(
        &mut self,
        key: &PodKey,
        container: &str,
        process: &Process<'_>,
    ) -> Result<u32, RuntimeError> {
        validate_name("container name", container)?;
        require_root("start processes in pods")?;
        let netns = self.pod_checked(key)?.netns.clone();
        let boot = boot_id();
        if let Some(p) = self
            .pod(key)
            .into_iter()
            .flat_map(|p| &p.processes)
            .find(|p| p.container == container && p.running(&boot))
        {
            return Err(RuntimeError::AlreadyRunning {
                key: key.clone(),
                container: container.to_string(),
                pid: p.pid,
            });
        }
        let program = cmd::find_program(process.program.as_os_str())
            .ok_or_else(|| RuntimeError::ProgramNotFound(process.program.to_path_buf()))?;
        let log = self.log_path(key, container);
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| RuntimeError::io("create log directory", parent, e))?;
        }
        let state_path = self.container_state_path(key, container);
        match std::fs::remove_file(&state_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io("remove", &state_path, e)),
        }
        let mut out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| RuntimeError::io("open log", &log, e))?;
        let err = out
            .try_clone()
            .map_err(|e| RuntimeError::io("open log", &log, e))?;

        let mut cmd = Command::new(tool(&IP)?);
        cmd.args(["netns", "exec", &netns]);
        let supervised = match process.restart {
            Restart::Never => false,
            Restart::Always { supervisor } => {
                cmd.arg(supervisor)
                    .args(["lab", "supervise", "--state"])
                    .arg(&state_path)
                    .arg("--");
                true
            }
        };
        if let Some(uid) = process.uid {
            cmd.arg(tool(&SETPRIV)?).args(setpriv_args(uid));
        }
        cmd.arg(&program)
            .args(process.args)
            .envs(process.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(
                out.try_clone()
                    .map_err(|e| RuntimeError::io("open log", &log, e))?,
            )
            .stderr(err)
            .process_group(0);
        let line = cmd::cmdline(&cmd);
        writeln!(
            out,
            "--- isthmus lab, unix time {}: starting {line}",
            unix_now()
        )
        .map_err(|e| RuntimeError::io("write log", &log, e))?;
        drop(out);
        // Dropping the child neither kills nor waits for it.
        let pid = cmd
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                command: line.clone(),
                source,
            })?
            .id();
        drop(cmd);
        let start_time = super::procs::stat(pid as i32).map_or(0, |s| s.start_time);
        let record = ProcessRecord {
            container: container.to_string(),
            pid,
            start_time,
            boot_id: boot,
            command: std::iter::once(program.as_os_str())
                .chain(process.args.iter().map(|a| a.as_os_str()))
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            uid: process.uid,
            log,
            supervised,
        };
        let pod = self
            .state
            .pods
            .get_mut(&key.to_string())
            .ok_or_else(|| RuntimeError::UnknownPod(key.clone()))?;
        pod.processes.retain(|p| p.container != container);
        pod.processes.push(record);
        self.save()?;
        tracing::info!(pod = %key, container, pid, "started {line}");
        Ok(pid)
    }

    pub(super) fn process(&self, key: &PodKey, container: &str) -> Option<&ProcessRecord> {
        self.pod(key)?
            .processes
            .iter()
            .find(|p| p.container == container)
    }

    /// Whether the recorded process of container `container` of pod `key` is running
    /// (not merely a process that reuses its pid); for a supervised container, the
    /// container's own process, not only its supervisor.
    pub fn alive(&self, key: &PodKey, container: &str) -> bool {
        self.container(key, container).running
    }

    /// Container `container` of pod `key` now: running or not (its process checked,
    /// not only recorded), its restarts and how it last exited. A recorded process
    /// that exited while this process is its parent is reaped.
    pub fn container(&self, key: &PodKey, container: &str) -> ContainerStatus {
        let Some(p) = self.process(key, container) else {
            return ContainerStatus::default();
        };
        let boot = boot_id();
        let leader_running = match p.current(&boot) {
            Some(s) if s.running() => true,
            Some(s) => {
                if s.ppid == std::process::id() as i32 {
                    let _ = nix::sys::wait::waitpid(
                        nix::unistd::Pid::from_raw(s.pid),
                        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                    );
                }
                false
            }
            None => false,
        };
        if !p.supervised {
            return ContainerStatus {
                running: leader_running,
                restarts: 0,
                last_exit: (!leader_running).then(|| "exited".to_string()),
            };
        }
        let state = ContainerState::load(&self.container_state_path(key, container));
        let mut status = ContainerStatus {
            running: leader_running && state.as_ref().is_some_and(|s| s.running(&boot)),
            restarts: state.as_ref().map_or(0, |s| s.restarts),
            last_exit: state.and_then(|s| s.last_exit),
        };
        if !leader_running {
            status.last_exit = Some(match status.last_exit {
                Some(e) => format!("{e}; its supervisor is gone"),
                None => "its supervisor is gone".into(),
            });
        }
        status
    }

    /// Stops container `container` of pod `key`: SIGTERM to its process group, up to
    /// `grace` to exit, then SIGKILL. Returns whether anything was running.
    pub fn stop(
        &mut self,
        key: &PodKey,
        container: &str,
        grace: Duration,
    ) -> Result<bool, RuntimeError> {
        require_root("stop processes in pods")?;
        let pod = self
            .pod(key)
            .ok_or_else(|| RuntimeError::UnknownPod(key.clone()))?;
        let Some(p) = self.process(key, container) else {
            return Ok(false);
        };
        let targets = Targets {
            leaders: vec![p],
            namespaces: netns_id(&netns_path(&pod.netns)).into_iter().collect(),
            group: Some(p.pid as i32),
            term: Term::Everything,
        };
        let stopped = targets.stop(grace);
        Ok(!stopped.is_empty())
    }

    fn exec_command(&self, key: &PodKey, argv: &[OsString]) -> Result<Command, RuntimeError> {
        require_root("run commands in pods")?;
        let netns = &self.pod_checked(key)?.netns;
        let (program, args) = argv.split_first().ok_or(RuntimeError::EmptyCommand)?;
        if cmd::find_program(program).is_none() {
            return Err(RuntimeError::CommandNotFound {
                program: program.to_string_lossy().into_owned(),
                install: cmd::install_hint(program),
            });
        }
        let mut cmd = Command::new(tool(&IP)?);
        cmd.args(["netns", "exec", netns]).arg(program).args(args);
        Ok(cmd)
    }

    /// Runs `argv` in pod `key`'s network namespace (as root) with this process's
    /// stdio, and waits for it (for `lab exec`).
    pub fn exec(&self, key: &PodKey, argv: &[OsString]) -> Result<ExitStatus, RuntimeError> {
        let mut cmd = self.exec_command(key, argv)?;
        cmd.status().map_err(|source| RuntimeError::Spawn {
            command: cmd::cmdline(&cmd),
            source,
        })
    }

    /// Runs `argv` in pod `key`'s network namespace (as root) with stdin from
    /// /dev/null and returns its output, whatever its exit status.
    pub fn output(&self, key: &PodKey, argv: &[OsString]) -> Result<Output, RuntimeError> {
        let mut cmd = self.exec_command(key, argv)?;
        cmd::run_status(&mut cmd, None)
    }

    /// Pod `key`'s network namespace, to run threads in (needs root).
    pub fn pod_netns(&self, key: &PodKey) -> Result<PodNetns, RuntimeError> {
        require_root("enter pods' network namespaces")?;
        let path = netns_path(&self.pod_checked(key)?.netns);
        let file =
            File::open(&path).map_err(|e| RuntimeError::io("open network namespace", &path, e))?;
        Ok(PodNetns { file, path })
    }

    /// The address `name` has in pod `key`'s hosts file (what its processes resolve).
    pub fn resolve_in_pod(
        &self,
        key: &PodKey,
        name: &str,
    ) -> Result<Option<Ipv4Addr>, RuntimeError> {
        let path = etc_netns(&self.pod_checked(key)?.netns).join("hosts");
        let text =
            std::fs::read_to_string(&path).map_err(|e| RuntimeError::io("read", &path, e))?;
        Ok(lookup_hosts(&text, name))
    }
}

/// The arguments of `setpriv` that run the command after them as `uid` (user and
/// group, no supplementary groups).
pub fn setpriv_args(uid: u32) -> [String; 6] {
    let uid = uid.to_string();
    [
        "--reuid".into(),
        uid.clone(),
        "--regid".into(),
        uid,
        "--clear-groups".into(),
        "--".into(),
    ]
}

/// The first IPv4 address a hosts file gives `name`.
fn lookup_hosts(text: &str, name: &str) -> Option<Ipv4Addr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let addr: Ipv4Addr = fields.next()?.parse().ok()?;
            fields.any(|n| n == name).then_some(addr)
        })
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_resolve_like_glibc() {
        let hosts = "# comment\n127.0.0.1\tlocalhost\n::1 localhost\n\
                     198.19.0.10 reviews.default.svc.cluster.local reviews.default reviews # x\n";
        assert_eq!(
            lookup_hosts(hosts, "reviews"),
            Some(Ipv4Addr::new(198, 19, 0, 10))
        );
        assert_eq!(
            lookup_hosts(hosts, "reviews.default"),
            Some(Ipv4Addr::new(198, 19, 0, 10))
        );
        assert_eq!(lookup_hosts(hosts, "localhost"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(lookup_hosts(hosts, "x"), None);
        assert_eq!(lookup_hosts(hosts, "comment"), None);
    }
}
