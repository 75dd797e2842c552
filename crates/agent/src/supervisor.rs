//! Runs Envoy as a child: restarts it with exponential backoff when it exits on its
//! own, and on shutdown drains its listeners, then stops it with SIGTERM.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::envoy::{Stream, forward_lines};
use crate::{Error, http};

/// The first restart waits this long; each further one twice as long as the last.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// The longest wait between restarts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An Envoy that ran this long before it exited is restarted after the initial delay again.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// How long Envoy has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a starting Envoy has to bind its admin interface.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The Envoy child as the agent sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvoyStatus {
    /// The running Envoy's process id; `None` while it is being restarted or after it stopped.
    pub pid: Option<u32>,
    /// How many times Envoy was restarted after exiting on its own.
    pub restarts: u32,
    /// How the last Envoy that exited on its own ended, e.g. `signal: 9 (SIGKILL)`.
    pub last_exit: Option<String>,
    /// Where the running Envoy's admin interface listens (with port 0 configured, the
    /// port Envoy chose); set together with `pid`.
    pub admin: Option<SocketAddr>,
}

/// The delays between restarts: 0.5 s, doubling up to 30 s, back to 0.5 s after an
/// Envoy that stayed up for 60 s.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    /// How long to wait before restarting an Envoy that exited after running `uptime`.
    pub fn after_exit(&mut self, uptime: Duration) -> Duration {
        if uptime >= BACKOFF_RESET_AFTER {
            self.next = BACKOFF_INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

pub(crate) struct Running {
    child: Child,
    pid: u32,
    started: Instant,
}

pub(crate) struct Supervisor {
    pub envoy: PathBuf,
    pub args: Vec<OsString>,
    /// The configured admin address; with port 0, Envoy picks one and writes it to
    /// `admin_address_path` (`--admin-address-path`).
    pub admin: SocketAddr,
    pub admin_address_path: PathBuf,
    pub drain: Duration,
    pub status: watch::Sender<EnvoyStatus>,
    pub draining: Arc<AtomicBool>,
}

impl Supervisor {
    /// Starts Envoy, with its output passed on as tracing events, and waits until its
    /// admin address is known; then publishes its pid and admin address together.
    pub async fn spawn(&self) -> Result<Running, Error> {
        // A file left by an earlier Envoy must not be taken for this one's address.
        match std::fs::remove_file(&self.admin_address_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::WriteBootstrap {
                    path: self.admin_address_path.clone(),
                    source,
                });
            }
        }
        let spawn_error = |source| Error::Spawn {
            path: self.envoy.clone(),
            source,
        };
        let mut child = Command::new(&self.envoy)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let pid = child
            .id()
            .ok_or_else(|| spawn_error(std::io::Error::other("Envoy exited at once")))?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, Stream::Stdout, pid));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, Stream::Stderr, pid));
        }
        let mut running = Running {
            child,
            pid,
            started: Instant::now(),
        };
        let admin = self.learn_admin(&mut running).await?;
        self.status.send_modify(|s| {
            s.pid = Some(pid);
            s.admin = Some(admin);
        });
        Ok(running)
    }

    /// The admin address of the Envoy just started: the configured one, or with port 0
    /// the one Envoy wrote to `--admin-address-path` once bound.
    async fn learn_admin(&self, running: &mut Running) -> Result<SocketAddr, Error> {
        if self.admin.port() != 0 {
            return Ok(self.admin);
        }
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            if let Some(admin) = crate::envoy::read_admin_address(&self.admin_address_path) {
                return Ok(admin);
            }
            let problem = match running.child.try_wait() {
                Ok(Some(status)) => Some(format!(
                    "Envoy exited ({status}) before it bound its admin interface"
                )),
                Ok(None) if Instant::now() >= deadline => Some(format!(
                    "Envoy wrote no admin address to {} within {ADMIN_TIMEOUT:?}",
                    self.admin_address_path.display()
                )),
                Ok(None) => None,
                Err(e) => Some(format!("cannot watch Envoy: {e}")),
            };
            if let Some(problem) = problem {
                let _ = running.child.start_kill();
                let _ = running.child.wait().await;
                return Err(Error::Spawn {
                    path: self.envoy.clone(),
                    source: std::io::Error::other(problem),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keeps Envoy running until `shutdown` changes (or its sender is dropped), then
    /// drains and stops it.
    pub async fn run(
        self,
        first: Running,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut backoff = Backoff::default();
        let mut running = first;
        loop {
            let exit = tokio::select! {
                exit = running.child.wait() => exit,
                _ = shutdown.changed() => return self.stop(running).await,
            };
            let exit = match exit {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown ({e})"),
            };
            self.status.send_modify(|s| {
                s.pid = None;
                s.admin = None;
                s.last_exit = Some(exit.clone());
            });
            let uptime = running.started.elapsed();
            let mut delay = backoff.after_exit(uptime);
            tracing::warn!(
                pid = running.pid,
                status = %exit,
                ?uptime,
                restart_in = ?delay,
                "Envoy exited unexpectedly; restarting it"
            );
            running = loop {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {
                        tracing::info!("shutting down; Envoy is not running");
                        return Ok(());
                    }
                }
                match self.spawn().await {
                    Ok(r) => break r,
                    Err(e) => {
                        delay = backoff.after_exit(Duration::ZERO);
                        tracing::error!(error = %e, retry_in = ?delay, "cannot restart Envoy");
                    }
                }
            };
            let restarts = {
                let mut restarts = 0;
                self.status.send_modify(|s| {
                    s.restarts += 1;
                    restarts = s.restarts;
                });
                restarts
            };
            tracing::warn!(pid = running.pid, restarts, last_exit = %exit, "Envoy restarted");
        }
    }

    /// Drains Envoy's listeners, waits out the drain time (or until Envoy exits), then
    /// stops it with SIGTERM (SIGKILL if it is still there after 10 s).
    async fn stop(&self, mut running: Running) -> Result<(), Error> {
        let pid = running.pid;
        self.draining.store(true, Ordering::Relaxed);
        tracing::info!(pid, drain = ?self.drain, "draining Envoy's listeners");
        let admin = self.status.borrow().admin.unwrap_or(self.admin);
        match http::post(admin, "/drain_listeners?graceful", Duration::from_secs(2)).await {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                tracing::warn!(status = r.status, body = %r.body.trim(), "Envoy refused to drain its listeners")
            }
            Err(e) => tracing::warn!(error = %e, "cannot ask Envoy to drain its listeners"),
        }
        let stopped = |status: String| {
            self.status.send_modify(|s| {
                s.pid = None;
                s.admin = None;
            });
            tracing::info!(pid, %status, "Envoy stopped");
            Ok(())
        };
        tokio::select! {
            _ = tokio::time::sleep(self.drain) => {}
            exit = running.child.wait() => {
                return stopped(exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
            }
        }
        let stop_error = |source: std::io::Error| Error::Stop { pid, source };
        // The child is not reaped until waited for, so its pid cannot have been reused.
        let raw_pid = i32::try_from(pid)
            .map_err(|_| stop_error(std::io::Error::other("pid out of range")))?;
        match kill(Pid::from_raw(raw_pid), Signal::SIGTERM) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(stop_error(e.into())),
        }
        match tokio::time::timeout(STOP_TIMEOUT, running.child.wait()).await {
            Ok(Ok(status)) => stopped(status.to_string()),
            Ok(Err(e)) => Err(stop_error(e)),
            Err(_) => {
                tracing::warn!(
                    pid,
                    "Envoy did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it"
                );
                running.child.kill().await.map_err(stop_error)?;
                stopped("killed".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(1);
        let delays: Vec<f64> = (0..9).map(|_| b.after_exit(short).as_secs_f64()).collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(b.after_exit(Duration::from_secs(60)), BACKOFF_INITIAL);
        assert_eq!(b.after_exit(short), Duration::from_secs(1));
    }
}
