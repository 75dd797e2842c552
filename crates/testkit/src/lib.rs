//! Test support for real-traffic tests: each test gets a network namespace of its own
//! ([`Netns`]) in which it starts the control plane, agents with real Envoy and the
//! sample apps, sends requests with the system `curl` ([`Curl`]) and waits for
//! conditions with deadlines. Everything it started is killed and the namespace
//! deleted when the [`Netns`] is dropped, also when the test panics; a failing test
//! shows the tail of every process's log.
//!
//! Such tests need root (network namespaces, iptables), `ip`, `iptables`, `curl` and
//! Envoy: [`require_root`] and [`require_envoy`] say why a test is skipped, except under
//! `CI=true`, where a missing piece is a failure.
//!
//! Addresses: tests use loopback addresses inside their namespace and invented ones
//! from 198.18.0.0/15 only.
#![forbid(unsafe_code)]
#![allow(clippy::print_stderr)]

pub mod curl;
pub mod isthmus;
pub mod netns;

use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use curl::{Curl, Reply};
pub use netns::{Netns, Pid, cleanup_stale, poll_until};

/// Whether `CI=true`: nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The file in which skipped tests are recorded, one line each, for the test script's
/// closing count (`scripts/test.sh` sets it).
pub const SKIP_LOG_VAR: &str = "ISTHMUS_SKIP_LOG";

/// Skips (`false`, with the reason on stderr and a line in [`SKIP_LOG_VAR`]'s file) or,
/// under `CI=true`, panics. Every test that can skip goes through here.
pub fn skip(test_name: &str, why: &str) -> bool {
    if in_ci() {
        panic!("{test_name}: {why}; CI=true, so this is a failure");
    }
    // Straight to stderr, past the test harness's capture, so that the skip is seen.
    let _ = writeln!(std::io::stderr(), "skipping {test_name}: {why}");
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR).filter(|p| !p.is_empty()) {
        let line = format!("{test_name}: {why}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            let _ = writeln!(
                std::io::stderr(),
                "cannot record the skip in {}: {e}",
                Path::new(&path).display()
            );
        }
    }
    false
}

/// `program` on `PATH` (or in /usr/sbin and /sbin, where `ip` and `iptables` live and
/// which a non-root `PATH` may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// True if this process is root and `ip`, `iptables` and `curl` exist. Otherwise the
/// test should return: this prints why it is skipped, or panics under `CI=true`.
pub fn require_root(test_name: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (network namespaces and iptables need it)".to_string());
    }
    for program in ["ip", "iptables", "curl"] {
        if find_program(program).is_none() {
            missing.push(format!(
                "`{program}` (apt-get install {})",
                match program {
                    "ip" => "iproute2",
                    p => p,
                }
            ));
        }
    }
    if missing.is_empty() {
        return true;
    }
    skip(test_name, &format!("needs {}", missing.join(", ")))
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Envoy from the one search the binary uses too ([`isthmus_agent::envoy::find_from`]):
/// `ISTHMUS_ENVOY`, the virtualenv `scripts/envoy.sh` makes (`.venv` at the workspace
/// root), or `PATH`.
pub fn find_envoy() -> Option<PathBuf> {
    isthmus_agent::envoy::find_from(None, &[workspace_root()]).ok()
}

/// The address a started Envoy wrote to its `--admin-address-path` file, if it has.
pub use isthmus_agent::envoy::read_admin_address;

/// Envoy (see [`find_envoy`]), or `None` after printing why the test is skipped;
/// panics under `CI=true`.
pub fn require_envoy(test_name: &str) -> Option<PathBuf> {
    // The search's own error says where it looked and what to do.
    match isthmus_agent::envoy::find_from(None, &[workspace_root()]) {
        Ok(envoy) => Some(envoy),
        Err(e) => {
            skip(test_name, &e.to_string());
            None
        }
    }
}
