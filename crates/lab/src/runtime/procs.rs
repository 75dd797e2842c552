//! Processes: their identity (pid + start time + boot), which network namespace they
//! are in, and stopping them (SIGTERM, a grace period, SIGKILL) without ever
//! signalling a process that merely reuses a recorded pid.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::ProcessRecord;

/// How often a stop looks again whether the processes are gone.
const POLL: Duration = Duration::from_millis(25);

/// How long to wait for SIGKILLed processes to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The fields of `/proc/PID/stat` the lab uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// Clock ticks after boot.
    pub start_time: u64,
}

impl Stat {
    /// Whether it still runs: a zombie (`Z`) or dead (`X`) process has exited.
    pub fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// Parses `/proc/PID/stat`; the command name may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field n of proc(5) is fields[n - 3].
    Some(Stat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// This boot's id: start times are only comparable within one boot.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A network namespace's identity: device and inode of its nsfs file.
pub(crate) type NsId = (u64, u64);

/// The identity of the network namespace mounted at `path` (`/var/run/netns/NAME`).
pub(crate) fn netns_id(path: &Path) -> Option<NsId> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino()))
}

/// The running processes whose network namespace is one of `namespaces` (what `ip
/// netns pids` finds; zombies have left their namespaces).
pub(crate) fn in_namespaces(namespaces: &[NsId]) -> Vec<Stat> {
    if namespaces.is_empty() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| namespaces.contains(&(m.dev(), m.ino())))
        })
        .filter_map(stat)
        .filter(Stat::running)
        .collect()
}

impl ProcessRecord {
    /// The process's stat if the recorded process (not a later one with its pid) still
    /// exists, zombie or not.
    pub(crate) fn current(&self, boot: &str) -> Option<Stat> {
        if self.boot_id != boot {
            return None;
        }
        stat(i32::try_from(self.pid).ok()?).filter(|s| s.start_time == self.start_time)
    }

    /// Whether the recorded process is still running.
    pub(crate) fn running(&self, boot: &str) -> bool {
        self.current(boot).is_some_and(|s| s.running())
    }
}

/// Which processes get the first signal (SIGTERM) of a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Term {
    /// Every process: the recorded leaders' groups and everything in the namespaces.
    Everything,
    /// The recorded leaders only, as a kubelet sends SIGTERM to each container's main
    /// process: a supervisor or an agent passes it on in order (an agent drains Envoy
    /// before stopping it, which a SIGTERM of its own would cut short).
    Leaders,
}

/// What to stop: recorded process-group leaders, and processes in network namespaces.
pub(crate) struct Targets<'a> {
    pub leaders: Vec<&'a ProcessRecord>,
    pub namespaces: Vec<NsId>,
    /// Only the processes (in `namespaces`) of this process group.
    pub group: Option<i32>,
    pub term: Term,
}

impl Targets<'_> {
    /// The running pids to signal, and the running recorded leaders (whose groups to
    /// signal).
    fn running(&self, boot: &str) -> (BTreeSet<i32>, Vec<i32>) {
        let leaders: Vec<i32> = self
            .leaders
            .iter()
            .filter(|p| p.running(boot))
            .map(|p| p.pid as i32)
            .collect();
        let mut pids: BTreeSet<i32> = leaders.iter().copied().collect();
        pids.extend(
            in_namespaces(&self.namespaces)
                .into_iter()
                .filter(|s| self.group.is_none_or(|g| s.pgrp == g))
                .map(|s| s.pid),
        );
        (pids, leaders)
    }

    /// Signals what `term` says of what is running. A recorded leader that still runs
    /// still owns its pid, so no other process can have created a group with that id:
    /// signalling the group is safe. Other pids were just seen in the namespaces,
    /// which are the lab's.
    fn signal(&self, boot: &str, signal: Signal, term: Term) -> BTreeSet<i32> {
        let (pids, leaders) = self.running(boot);
        if term == Term::Leaders {
            for &leader in &leaders {
                let _ = kill(Pid::from_raw(leader), signal);
            }
            return leaders.into_iter().collect();
        }
        for &leader in &leaders {
            let _ = killpg(Pid::from_raw(leader), signal);
        }
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        pids
    }

    /// Waits for recorded leaders that are this process's children (the lab command
    /// that started them is still running), so that they do not linger as zombies.
    fn reap(&self, boot: &str) {
        let me = std::process::id() as i32;
        for p in &self.leaders {
            if p.current(boot)
                .is_some_and(|s| !s.running() && s.ppid == me)
            {
                let _ = waitpid(Pid::from_raw(p.pid as i32), Some(WaitPidFlag::WNOHANG));
            }
        }
    }

    fn wait_gone(&self, boot: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap(boot);
            if self.running(boot).0.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM to what `term` says, up to `grace` for everything to exit, then
    /// SIGKILL to everything that remains. Returns the pids signalled.
    pub fn stop(&self, grace: Duration) -> Vec<u32> {
        let boot = boot_id();
        let mut signalled = self.signal(&boot, Signal::SIGTERM, self.term);
        if !self.wait_gone(&boot, grace) {
            let killed = self.signal(&boot, Signal::SIGKILL, Term::Everything);
            if !killed.is_empty() {
                tracing::debug!(pids = ?killed, "killed after the grace period");
            }
            signalled.extend(killed);
            if !self.wait_gone(&boot, KILL_WAIT) {
                tracing::warn!(
                    pids = ?self.running(&boot).0,
                    "processes survived SIGKILL (stuck in the kernel?)"
                );
            }
        }
        signalled.into_iter().map(|p| p as u32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let text = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 100 18446744073709551615";
        let s = parse_stat(text).unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 4242,
                state: 'S',
                ppid: 1,
                pgrp: 4242,
                start_time: 987654
            }
        );
        assert!(parse_stat("12 (x) S 1").is_none());
    }

    #[test]
    fn this_process_has_a_stat_and_a_netns() {
        let me = stat(std::process::id() as i32).unwrap();
        assert!(me.running());
        assert!(netns_id(Path::new("/proc/self/ns/net")).is_some());
        assert!(!boot_id().is_empty());
    }

    #[test]
    fn a_recycled_pid_is_not_the_recorded_process() {
        let me = stat(std::process::id() as i32).unwrap();
        let record = |start_time, boot_id: &str| ProcessRecord {
            container: "c".into(),
            pid: me.pid as u32,
            start_time,
            boot_id: boot_id.into(),
            command: Vec::new(),
            uid: None,
            log: "x".into(),
            supervised: false,
        };
        let boot = boot_id();
        assert!(record(me.start_time, &boot).running(&boot));
        assert!(!record(me.start_time + 1, &boot).running(&boot));
        assert!(!record(me.start_time, "another-boot").running(&boot));
    }
}
