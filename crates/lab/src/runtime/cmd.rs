//! Running the host's tools (`ip`, `iptables-restore`, `setpriv`, `sysctl`): finding
//! them, and turning a failure into an error that shows the command line and its stderr.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::RuntimeError;

/// A tool of the host, and the Debian/Ubuntu package that provides it.
pub(crate) struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

pub(crate) const IP: Tool = Tool {
    name: "ip",
    package: "iproute2",
};
pub(crate) const SETPRIV: Tool = Tool {
    name: "setpriv",
    package: "util-linux",
};
pub(crate) const IPTABLES_RESTORE: Tool = Tool {
    name: "iptables-restore",
    package: "iptables",
};
pub(crate) const SYSCTL: Tool = Tool {
    name: "sysctl",
    package: "procps",
};

/// Searched after `PATH`: `sudo` and cron often leave the sbin directories out.
const EXTRA_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The executable `name` names: itself if it has a slash, else the first in `PATH`
/// (then the usual system directories).
pub(crate) fn find_program(name: &OsStr) -> Option<PathBuf> {
    let path = Path::new(name);
    if name.is_empty() {
        return None;
    }
    if path.components().count() > 1 || path.is_absolute() {
        return is_executable(path).then(|| path.to_path_buf());
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// The path of `tool`, or an error naming the package to install.
pub(crate) fn tool(tool: &Tool) -> Result<PathBuf, RuntimeError> {
    find_program(OsStr::new(tool.name)).ok_or(RuntimeError::ToolMissing {
        tool: tool.name,
        package: tool.package,
    })
}

/// Packages of programs people run in pods (`lab exec`) that a fresh machine may lack.
const KNOWN_PROGRAMS: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("wget", "wget"),
    ("nc", "netcat-openbsd"),
    ("dig", "dnsutils"),
    ("nslookup", "dnsutils"),
    ("ss", "iproute2"),
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("tcpdump", "tcpdump"),
    ("ps", "procps"),
    ("jq", "jq"),
];

/// What to do about a program that is not installed: the command that installs it,
/// where it is known.
pub(crate) fn install_hint(program: &OsStr) -> String {
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match KNOWN_PROGRAMS.iter().find(|(p, _)| *p == name) {
        Some((_, package)) => format!("install it with `apt-get install {package}`"),
        None => "install it on this host (pods run the host's programs), or give its path".into(),
    }
}

/// `cmd` as a shell-like line, for messages.
pub(crate) fn cmdline(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion with `input` on its stdin (else /dev/null) and its output
/// captured; an unsuccessful exit is [`RuntimeError::Command`] with its stderr.
pub(crate) fn run(cmd: &mut Command, input: Option<&[u8]>) -> Result<Output, RuntimeError> {
    let out = run_status(cmd, input)?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(RuntimeError::Command {
            command: cmdline(cmd),
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(out)
}

/// Like [`run`], but any exit status is returned rather than turned into an error.
pub(crate) fn run_status(cmd: &mut Command, input: Option<&[u8]>) -> Result<Output, RuntimeError> {
    let spawn_error = |cmd: &Command, source| RuntimeError::Spawn {
        command: cmdline(cmd),
        source,
    };
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    tracing::trace!(command = %cmdline(cmd), "running");
    let mut child = cmd.spawn().map_err(|e| spawn_error(cmd, e))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A tool that exits early reports why on stderr; a broken pipe adds nothing.
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().map_err(|e| spawn_error(cmd, e))
}

/// `ip ARGS` on the host (with `-n NETNS` among them, in a lab namespace).
pub(crate) fn ip(args: &[&str]) -> Result<Output, RuntimeError> {
    run(Command::new(tool(&IP)?).args(args), None)
}

/// Whether `ip ARGS` succeeds (for "does this link exist" questions).
pub(crate) fn ip_succeeds(args: &[&str]) -> Result<bool, RuntimeError> {
    Ok(run_status(Command::new(tool(&IP)?).args(args), None)?
        .status
        .success())
}

/// Sets `key=value` sysctls inside network namespace `netns`.
pub(crate) fn sysctl(netns: &str, settings: &[&str]) -> Result<(), RuntimeError> {
    let mut cmd = Command::new(tool(&IP)?);
    cmd.args(["netns", "exec", netns])
        .arg(tool(&SYSCTL)?)
        .args(["-q", "-w"])
        .args(settings);
    run(&mut cmd, None).map(|_| ())
}

/// Whether a failed command only said that the thing to remove is already gone.
pub(crate) fn is_gone(err: &RuntimeError) -> bool {
    matches!(err, RuntimeError::Command { stderr, .. }
        if stderr.contains("Cannot find device")
            || stderr.contains("does not exist")
            || stderr.contains("No such file or directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "a b", "it's", ""]);
        assert_eq!(cmdline(&cmd), r"ip netns exec 'a b' 'it'\''s' ''");
    }

    #[test]
    fn finds_programs_by_name_and_path() {
        assert!(find_program(OsStr::new("sh")).is_some());
        assert_eq!(
            find_program(OsStr::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(find_program(OsStr::new("/nonexistent/x")), None);
        assert_eq!(find_program(OsStr::new("isthmus-no-such-tool")), None);
        assert_eq!(find_program(OsStr::new("")), None);
    }

    #[test]
    fn missing_programs_are_named_with_their_package() {
        let err = tool(&Tool {
            name: "isthmus-no-such-tool",
            package: "iptables",
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`isthmus-no-such-tool` not found")
                && err.contains("install it with `apt-get install iptables`"),
            "{err}"
        );
        assert_eq!(
            install_hint(OsStr::new("/usr/bin/curl")),
            "install it with `apt-get install curl`"
        );
        assert!(install_hint(OsStr::new("x")).contains("host"));
    }

    #[test]
    fn a_failure_shows_the_command_and_its_stderr() {
        let err = run(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            None,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c 'echo oops >&2; exit 3'"), "{msg}");
        assert!(msg.contains("oops"), "{msg}");
    }
}
