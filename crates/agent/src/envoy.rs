//! The Envoy binary: finding it, its command line, and passing its output on as
//! tracing events.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::Error;

/// The environment variable naming the Envoy binary (scripts/envoy.sh prints the path).
pub const ENVOY_ENV: &str = "ISTHMUS_ENVOY";

/// Finds a working Envoy: `explicit` (`--envoy`), else `$ISTHMUS_ENVOY`, else `envoy` on
/// `PATH`. The first one named is the one used, and it must answer `--version`.
pub async fn locate(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let from_env = std::env::var_os(ENVOY_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let path = match (explicit, from_env) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) => p,
        (None, None) => search_path("envoy").ok_or_else(|| Error::EnvoyNotFound {
            tried: format!("no --envoy, {ENVOY_ENV} is not set, and no `envoy` on PATH"),
        })?,
    };
    version(&path).await?;
    Ok(path)
}

/// The first executable file called `name` in `$PATH`.
pub fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `envoy --version`'s answer, e.g. `envoy  version: 9e55…/1.40.0/Clean/RELEASE/BoringSSL`.
pub async fn version(path: &Path) -> Result<String, Error> {
    let not_working = |reason: String| Error::EnvoyNotWorking {
        path: path.to_path_buf(),
        reason,
    };
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(path)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| not_working("did not answer within 10 s".into()))?
    .map_err(|e| not_working(format!("could not run: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(not_working(format!("failed: {}", out.status)));
    }
    if !text.contains("version") {
        return Err(not_working(format!("answered {text:?}")));
    }
    Ok(text)
}

/// Seconds for Envoy's integer duration flags: at least one, rounded up.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// Envoy's command line (without the binary):
/// `-c BOOTSTRAP --log-level info --drain-time-s D --parent-shutdown-time-s 2D
/// --local-address-ip-version v4 --disable-hot-restart`.
///
/// Hot restart is off, as with Istio's agent: a new Envoy never takes over from an old
/// one, and without it Envoy keeps no shared memory in /dev/shm — nothing is left
/// behind when it is killed, and Envoys in separate network namespaces (which share
/// /dev/shm) cannot collide.
pub fn args(bootstrap: &Path, drain: Duration) -> Vec<OsString> {
    let drain_s = whole_seconds(drain);
    let mut args: Vec<OsString> = vec!["-c".into(), bootstrap.into()];
    for (flag, value) in [
        ("--log-level", "info".to_string()),
        ("--drain-time-s", drain_s.to_string()),
        ("--parent-shutdown-time-s", (2 * drain_s).to_string()),
        ("--local-address-ip-version", "v4".to_string()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args.push("--disable-hot-restart".into());
    args
}

/// Which of Envoy's output streams a line came from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Envoy's level of a line in its default format
/// `[2025-01-01 00:00:00.000][42][info][main] [source/…:12] message`.
fn level_of(line: &str) -> Option<&str> {
    let mut fields = line.strip_prefix('[')?.split("][");
    fields.nth(2)
}

/// Passes each line of one of Envoy's streams on as a tracing event with target
/// `envoy`, at Envoy's own level (info when the line has none).
pub(crate) async fn forward_lines(reader: impl AsyncRead + Unpin, stream: Stream, pid: u32) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let stream = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        match level_of(line) {
            Some("trace" | "debug") => tracing::debug!(target: "envoy", pid, stream, "{line}"),
            Some("warning") => tracing::warn!(target: "envoy", pid, stream, "{line}"),
            Some("error" | "critical") => tracing::error!(target: "envoy", pid, stream, "{line}"),
            _ => tracing::info!(target: "envoy", pid, stream, "{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let args = args(Path::new("/tmp/x/envoy-rev.json"), Duration::from_secs(5));
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args.join(" "),
            "-c /tmp/x/envoy-rev.json --log-level info --drain-time-s 5 --parent-shutdown-time-s 10 --local-address-ip-version v4 --disable-hot-restart"
        );
        let short = super::args(Path::new("b.json"), Duration::from_millis(200));
        assert!(short.contains(&OsString::from("1")), "{short:?}");
    }

    #[test]
    fn levels() {
        assert_eq!(
            level_of("[2025-01-01 00:00:00.000][42][warning][config] [source/x.cc:1] hi"),
            Some("warning")
        );
        assert_eq!(level_of("plain text"), None);
    }
}
