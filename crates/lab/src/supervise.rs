//! `isthmus lab supervise --state FILE -- COMMAND…`: keeps one container's process
//! running, as a kubelet does for a container with `restartPolicy: Always`.
//!
//! The lab starts every container (control planes, gateways, apps, sidecars) under
//! one of these, inside the pod's network namespace: the supervisor is the process
//! the lab records (its process group's leader, so `lab down` stops it with the rest,
//! also after a crash), and the container's command runs as its child in the same
//! group. When the child exits, it is started again after a backoff: 0.5 s, doubling
//! up to 30 s, back to 0.5 s after it stayed up 60 s (Kubernetes: 10 s doubling to
//! 5 min; the lab is faster to see things through). Its pid, restarts and last exit
//! are written to FILE for `lab status` and the readiness wait. SIGTERM (or SIGINT)
//! is passed on to the child, which is then waited for and not restarted; the lab
//! sends SIGKILL to the whole group after the pod's grace period.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use isthmus_agent::Backoff;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{Signal as Stream, SignalKind, signal};

use crate::LabError;
use crate::runtime::{ContainerState, RuntimeError};

/// Runs `command` until told to stop; returns the exit code to exit with (the
/// child's last).
pub fn run(state_path: &Path, command: &[OsString]) -> Result<i32, LabError> {
    let (program, args) = command.split_first().ok_or(RuntimeError::EmptyCommand)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| LabError::Supervisor {
            what: "start its runtime",
            source,
        })?;
    runtime.block_on(supervise(state_path, program, args))
}

/// SIGTERM or SIGINT.
struct Stop {
    term: Stream,
    int: Stream,
}

impl Stop {
    fn new() -> Result<Stop, LabError> {
        let handle = |kind| {
            signal(kind).map_err(|source| LabError::Supervisor {
                what: "handle signals",
                source,
            })
        };
        Ok(Stop {
            term: handle(SignalKind::terminate())?,
            int: handle(SignalKind::interrupt())?,
        })
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// An exit status as a number for our own exit: the code, or 128 + the signal.
fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

async fn supervise(
    state_path: &Path,
    program: &OsString,
    args: &[OsString],
) -> Result<i32, LabError> {
    let mut stop = Stop::new()?;
    let mut state = ContainerState::default();
    let mut backoff = Backoff::default();
    let save = |state: &ContainerState| {
        if let Err(e) = state.save(state_path) {
            tracing::warn!(state = %state_path.display(), error = %e, "cannot record the container's state");
        }
    };
    let mut code = 0;
    loop {
        let started = Instant::now();
        let spawned = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn();
        let exit = match spawned {
            Ok(mut child) => {
                let pid = child.id().unwrap_or_default();
                state.started(pid);
                save(&state);
                // A stop that arrives with the child's exit (both signalled at once)
                // is a stop: checked first.
                let status = tokio::select! {
                    biased;
                    _ = stop.requested() => {
                        state.stopping = true;
                        save(&state);
                        if let Ok(raw) = i32::try_from(pid) {
                            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
                        }
                        let status = child.wait().await;
                        let how = status.as_ref().map_or_else(|e| format!("unknown ({e})"), ToString::to_string);
                        tracing::info!(pid, exit = %how, "stopped");
                        state.exited(how);
                        save(&state);
                        return Ok(status.map_or(1, |s| exit_code(&s)));
                    }
                    status = child.wait() => status,
                };
                match status {
                    Ok(s) => {
                        code = exit_code(&s);
                        s.to_string()
                    }
                    Err(e) => format!("unknown ({e})"),
                }
            }
            Err(e) => format!("cannot start {}: {e}", program.to_string_lossy()),
        };
        let delay = backoff.after_exit(started.elapsed());
        state.exited(exit.clone());
        save(&state);
        tracing::warn!(
            exit = %exit,
            restarts = state.restarts,
            restart_in = ?delay,
            "the container exited; it is started again after the backoff"
        );
        tokio::select! {
            biased;
            _ = stop.requested() => {
                state.stopping = true;
                save(&state);
                return Ok(code);
            }
            _ = tokio::time::sleep(delay) => {}
        }
        state.restarts += 1;
    }
}
