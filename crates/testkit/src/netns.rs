//! [`Netns`]: a network namespace of its own per test, the processes started in it,
//! their logs, and cleanup that also runs when the test panics.

use std::ffi::OsStr;
use std::fmt::Display;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use isthmus_model::sync::lock;
use nix::sys::signal::{Signal, kill, killpg};
pub use nix::unistd::Pid;

/// Every namespace this crate makes is named `isthmus-t-PREFIX-PID-N`.
const NAME_PREFIX: &str = "isthmus-t-";

/// How often [`Netns::wait_until`] looks again.
pub const POLL: Duration = Duration::from_millis(50);

/// Lines of each log shown when a test fails.
const TAIL_LINES: usize = 40;

static NEXT: AtomicU32 = AtomicU32::new(0);

struct Proc {
    label: String,
    child: Child,
}

/// A network namespace with `lo` up, and every process started in it.
///
/// Dropping it (also while a test panics) kills each process's whole process group,
/// waits for them (the test process becomes a child subreaper, so grandchildren such
/// as an agent's Envoy are waited for too), kills anything else still in the namespace and deletes it. While
/// panicking it also prints the tail of every log and keeps the log directory.
pub struct Netns {
    name: String,
    dir: Option<tempfile::TempDir>,
    procs: Mutex<Vec<Proc>>,
    logs: Mutex<Vec<PathBuf>>,
    /// Set when a panic message already carries the logs.
    logs_shown: AtomicBool,
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Runs `ip ARGS` on the host; an error carries its stderr.
fn ip(args: &[&str]) -> io::Result<Output> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| other(format!("cannot run `ip {}`: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(other(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// The names of the host's network namespaces (`ip netns list`).
pub fn list() -> io::Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect())
}

/// The processes in namespace `name` (`ip netns pids`).
fn pids_in(name: &str) -> Vec<Pid> {
    ip(&["netns", "pids", name])
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

fn process_exists(pid: Pid) -> bool {
    // A zombie has exited: only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Kills every process in namespace `name` and deletes it.
fn destroy(name: &str) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<Pid> = pids_in(name)
            .into_iter()
            .filter(|p| process_exists(*p))
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ip(&["netns", "del", name]).map(|_| ())
}

/// Deletes the namespaces earlier runs with this `prefix` left behind (a run killed
/// before its cleanup): those whose creating process no longer exists. Their
/// processes are killed first.
pub fn cleanup_stale(prefix: &str) -> io::Result<Vec<String>> {
    let start = format!("{NAME_PREFIX}{prefix}-");
    let mut removed = Vec::new();
    for name in list()? {
        let Some(rest) = name.strip_prefix(&start) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if owner as u32 == std::process::id() || process_exists(Pid::from_raw(owner)) {
            continue;
        }
        destroy(&name)?;
        removed.push(name);
    }
    Ok(removed)
}

/// The live children of `pid`, with their command names (`/proc/PID/comm`).
pub fn children(pid: Pid) -> Vec<(Pid, String)> {
    children_of(pid, false)
}

fn children_of(pid: Pid, with_zombies: bool) -> Vec<(Pid, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid: i32 = fields.next()?.parse().ok()?;
            let comm = head.split_once('(')?.1.to_string();
            (ppid == pid.as_raw() && (with_zombies || state != "Z"))
                .then_some((Pid::from_raw(p), comm))
        })
        .collect()
}

/// The last `n` lines of a file (all of it if shorter).
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

impl Netns {
    /// Creates `isthmus-t-PREFIX-PID-N` with `lo` up, and a temporary directory for
    /// logs and files. `prefix` should be short and made of `[a-z0-9]`.
    pub fn new(prefix: &str) -> io::Result<Netns> {
        // Grandchildren (Envoy under an agent) whose parent is killed are reparented
        // here rather than to init, so that they can be waited for.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{prefix}-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()?;
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name,
            dir: Some(dir),
            procs: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
            logs_shown: AtomicBool::new(false),
        };
        // From here on, Drop deletes the namespace.
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A temporary directory for this test's logs and files, deleted with the
    /// namespace (kept if the test fails).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("."))
    }

    /// Starts `ip netns exec NAME program args…` in a process group of its own, with
    /// stdout and stderr appended to `log` (relative paths are in [`Netns::dir`]) and
    /// `NO_COLOR=1` unless `envs` says otherwise.
    pub fn spawn(
        &self,
        program: impl AsRef<OsStr>,
        args: &[&str],
        envs: &[(&str, &str)],
        log: impl AsRef<Path>,
    ) -> io::Result<Pid> {
        let program = program.as_ref();
        let log = self.dir().join(log.as_ref());
        let out = File::options().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args([
                OsStr::new("netns"),
                OsStr::new("exec"),
                OsStr::new(&self.name),
                program,
            ])
            .args(args)
            // Logs are files: no terminal colours (the caller may say otherwise).
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| other(format!("cannot start {}: {e}", program.to_string_lossy())))?;
        let pid = Pid::from_raw(child.id() as i32);
        let label = format!(
            "{} (pid {pid}, log {})",
            Path::new(program)
                .file_name()
                .unwrap_or(program)
                .to_string_lossy(),
            log.display()
        );
        lock(&self.procs).push(Proc { label, child });
        let mut logs = lock(&self.logs);
        if !logs.contains(&log) {
            logs.push(log);
        }
        Ok(pid)
    }

    /// Runs a short command in the namespace and returns its output (stdin closed).
    pub fn run(&self, program: impl AsRef<OsStr>, args: &[&str]) -> Output {
        let program = program.as_ref();
        Command::new("ip")
            .args([
                OsStr::new("netns"),
                OsStr::new("exec"),
                OsStr::new(&self.name),
                program,
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `ip netns exec {} {}`: {e}",
                    self.name,
                    program.to_string_lossy()
                )
            })
    }

    /// Like [`Netns::run`], but an unsuccessful exit is an error with its stderr.
    pub fn run_ok(&self, program: impl AsRef<OsStr>, args: &[&str]) -> io::Result<String> {
        let program = program.as_ref();
        let out = self.run(program, args);
        if !out.status.success() {
            return Err(other(format!(
                "`{} {}` failed ({}): {}",
                program.to_string_lossy(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `iptables ARGS` in the namespace.
    pub fn iptables(&self, args: &[&str]) -> io::Result<()> {
        self.run_ok("iptables", args).map(|_| ())
    }

    /// `ip ARGS` in the namespace.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all).map(|_| ())
    }

    /// Whether a process started with [`Netns::spawn`] is still running.
    pub fn is_running(&self, pid: Pid) -> bool {
        lock(&self.procs)
            .iter_mut()
            .find(|p| p.child.id() as i32 == pid.as_raw())
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// Kills a process started with [`Netns::spawn`] and its process group
    /// (SIGKILL) and waits for it.
    pub fn kill(&self, pid: Pid) {
        let mut procs = lock(&self.procs);
        if let Some(i) = procs
            .iter()
            .position(|p| p.child.id() as i32 == pid.as_raw())
        {
            let mut p = procs.remove(i);
            stop(&mut p);
        }
    }

    /// The last lines of every log, each under a header naming its file.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for log in lock(&self.logs).iter() {
            out.push_str(&format!(
                "\n----- {} (last {TAIL_LINES} lines) -----\n{}\n",
                log.display(),
                tail(log, TAIL_LINES)
            ));
        }
        out
    }

    /// Panics with `msg` followed by the tail of every log.
    #[track_caller]
    pub fn fail(&self, msg: impl Display) -> ! {
        self.logs_shown.store(true, Ordering::Relaxed);
        panic!("{msg}\n{}", self.log_tails())
    }

    /// Polls `check` every 50 ms until it gives `Ok`, or fails (with the logs) after
    /// `timeout`, showing the last `Err`: what was seen instead.
    #[track_caller]
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut() -> Result<T, String>,
    ) -> T {
        poll_until(what, timeout, check).unwrap_or_else(|e| self.fail(e))
    }
}

/// Polls `check` every 50 ms until it gives `Ok`; after `timeout`, an error naming
/// `what` and the last `Err` (what was seen instead).
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(last) if start.elapsed() >= timeout => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen: {last}"
                ));
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn stop(p: &mut Proc) {
    let pgid = Pid::from_raw(p.child.id() as i32);
    // The leader may be gone while the rest of its group is not.
    if killpg(pgid, Signal::SIGKILL).is_err() {
        let _ = p.child.kill();
    }
    let _ = p.child.wait();
    reap_group(pgid);
}

/// Waits for the members of process group `pgid` that became this process's children
/// when their parent died (see [`Netns::new`]: this process is a child subreaper), so
/// that no killed grandchild lingers as a zombie.
fn reap_group(pgid: Pid) {
    let me = Pid::from_raw(std::process::id() as i32);
    for (pid, _) in children_of(me, true) {
        if nix::unistd::getpgid(Some(pid)) == Ok(pgid) {
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let mut procs = std::mem::take(&mut *lock(&self.procs));
        if panicking {
            let running: Vec<String> = procs
                .iter_mut()
                .map(|p| {
                    let state = match p.child.try_wait() {
                        Ok(None) => "running".to_string(),
                        Ok(Some(s)) => format!("exited: {s}"),
                        Err(e) => format!("unknown: {e}"),
                    };
                    format!("  {}: {state}", p.label)
                })
                .collect();
            let tails = if self.logs_shown.load(Ordering::Relaxed) {
                String::new()
            } else {
                self.log_tails()
            };
            eprintln!(
                "test failed; processes in {}:\n{}\n{tails}",
                self.name,
                running.join("\n"),
            );
        }
        for p in &mut procs {
            stop(p);
        }
        if let Err(e) = destroy(&self.name) {
            eprintln!("cleanup of network namespace {}: {e}", self.name);
        }
        if panicking && let Some(dir) = self.dir.take() {
            eprintln!("logs kept in {}", dir.keep().display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), "b\nc");
        assert_eq!(tail(&p, 10), "a\nb\nc");
        assert!(tail(&dir.path().join("none"), 1).starts_with("(cannot read"));
    }

    #[test]
    fn children_of_this_process() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let me = Pid::from_raw(std::process::id() as i32);
        let kids = children(me);
        assert!(
            kids.iter()
                .any(|(p, comm)| p.as_raw() == child.id() as i32 && comm == "sleep"),
            "{kids:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
