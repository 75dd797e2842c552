//! `isthmus_lab::runtime` against the real kernel: namespaces, bridges, veths, routes,
//! hosts files, capture rules, processes and cleanup. Needs root; without it each test
//! is skipped with a message (and fails when `CI=true`).
#![allow(clippy::print_stderr)]

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use isthmus_lab::runtime::{Capture, DownReport, PodKey, Runtime, RuntimeError, setpriv_args};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn root_or_skip(test: &str) -> bool {
    nix::unistd::geteuid().is_root()
        || isthmus_testkit::skip(test, "needs root (network namespaces, veths, iptables)")
}

/// A lab of its own per test, removed (`Runtime::down`) also when the test fails.
struct Lab {
    name: String,
    dir: tempfile::TempDir,
    rt: Option<Runtime>,
}

impl Lab {
    fn new() -> Lab {
        let name = format!(
            "t{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("isthmus-lab-{name}-"))
            .tempdir()
            .unwrap();
        let rt = Runtime::open(dir.path(), &name).unwrap();
        Lab {
            name,
            dir,
            rt: Some(rt),
        }
    }

    fn rt(&mut self) -> &mut Runtime {
        self.rt.as_mut().unwrap()
    }

    fn lab_ns(&self) -> String {
        format!("il-{}", self.name)
    }

    /// Like a crashed or `kill -9`ed lab command: the runtime goes away without
    /// cleaning up.
    fn crash(&mut self) {
        self.rt = None;
    }

    /// `Runtime::down`, then checks that nothing of the lab remains.
    fn down(&mut self, remove_dir: bool) -> DownReport {
        self.rt = None;
        let report = Runtime::down(self.dir.path(), &self.name, remove_dir).unwrap();
        self.assert_nothing_remains();
        report
    }

    fn assert_nothing_remains(&self) {
        let ours = |n: &str| {
            n == self.lab_ns()
                || n.strip_prefix(&format!("{}-", self.lab_ns()))
                    .is_some_and(|r| r.bytes().all(|b| b.is_ascii_digit()))
        };
        let left: Vec<String> = netns_list().into_iter().filter(|n| ours(n)).collect();
        assert!(left.is_empty(), "namespaces left: {left:?}");
        let link = Command::new("ip")
            .args(["-n", &self.lab_ns(), "link"])
            .output()
            .unwrap();
        assert!(!link.status.success(), "the lab namespace still has links");
        let etc: Vec<String> = std::fs::read_dir("/etc/netns")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| ours(n))
            .collect();
        assert!(etc.is_empty(), "/etc/netns entries left: {etc:?}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.rt = None;
        if let Err(e) = Runtime::down(self.dir.path(), &self.name, true) {
            eprintln!("cleanup of lab {}: {e}", self.name);
        }
    }
}

fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

fn key(cluster: &str, name: &str) -> PodKey {
    PodKey::new(cluster, "default", name)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> ipnet::Ipv4Net {
    s.parse().unwrap()
}

fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `check` until it gives `Some`, or panics after `timeout` with the last `Err`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `curl URL` from pod `key`, as `uid` if given: the HTTP status, or curl's error.
fn curl(rt: &Runtime, key: &PodKey, url: &str, uid: Option<u32>) -> Result<String, String> {
    let mut argv = Vec::new();
    if let Some(uid) = uid {
        argv.push("setpriv".into());
        argv.extend(setpriv_args(uid).map(OsString::from));
    }
    argv.extend(args(&[
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "-m",
        "3",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]));
    let out = rt.output(key, &argv).unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(text(&out))
    }
}

/// Starts `python3 -m http.server PORT --bind ADDR` in a pod as `container`.
fn http_server(lab: &mut Lab, key: &PodKey, container: &str, bind: &str, port: u16) -> u32 {
    let dir = lab.dir.path().to_str().unwrap().to_string();
    lab.rt()
        .spawn(
            key,
            container,
            Path::new("/usr/bin/python3"),
            &args(&[
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                bind,
                "--directory",
                &dir,
            ]),
            &[],
            None,
        )
        .unwrap()
}

fn ip_route(rt: &Runtime, key: &PodKey) -> String {
    let out = rt.output(key, &args(&["ip", "route"])).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// Whether `pid` is a running process (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[test]
fn pods_on_one_bridge_reach_each_other_and_see_their_hosts_file() {
    if !root_or_skip("pods_on_one_bridge_reach_each_other_and_see_their_hosts_file") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (key("c1", "a"), key("c1", "b"));
    let hosts = "198.19.0.5\tweb.default.svc.cluster.local web\n";
    let rt = lab.rt();
    rt.ensure_cluster("c1", net("198.18.0.0/24"), ip("198.18.0.1"))
        .unwrap();
    let services = [net("198.19.0.0/16")];
    let ns_a = rt
        .create_pod(&a, ip("198.18.0.10"), 24, &services, hosts, None)
        .unwrap();
    let ns_b = rt
        .create_pod(&b, ip("198.18.0.11"), 24, &services, hosts, None)
        .unwrap();
    assert_ne!(ns_a, ns_b);
    assert!(ns_a.starts_with(&format!("il-{}-", lab.name)), "{ns_a}");

    http_server(&mut lab, &a, "web", "198.18.0.10", 8080);
    let rt = lab.rt.as_ref().unwrap();
    wait_for("a's server, from b", Duration::from_secs(10), || {
        curl(rt, &b, "http://198.18.0.10:8080/", None)
    });
    assert!(rt.alive(&a, "web"));
    assert!(!rt.alive(&a, "nothing"));

    // Routes: the pod subnet, the service range via the gateway, nothing else.
    let routes = ip_route(rt, &b);
    assert!(!routes.contains("default"), "{routes}");
    assert!(
        routes.contains("198.19.0.0/16 via 198.18.0.1 dev eth0"),
        "{routes}"
    );
    let lab_routes = Command::new("ip")
        .args(["-n", &lab.lab_ns(), "route"])
        .output()
        .unwrap();
    assert!(
        !text(&lab_routes).contains("default"),
        "{}",
        text(&lab_routes)
    );

    // The hosts file, for new processes and, rewritten, for running ones.
    let out = rt
        .output(
            &a,
            &args(&["getent", "hosts", "web.default.svc.cluster.local"]),
        )
        .unwrap();
    assert!(text(&out).starts_with("198.19.0.5"), "{}", text(&out));
    let out = rt
        .output(&a, &args(&["getent", "hosts", "localhost"]))
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let watcher = "until getent hosts db; do sleep 0.1; done";
    lab.rt()
        .spawn(
            &a,
            "watcher",
            Path::new("/bin/sh"),
            &args(&["-c", watcher]),
            &[],
            None,
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let rt = lab.rt();
    assert!(rt.alive(&a, "watcher"), "the watcher resolved db too early");
    rt.update_hosts(&a, &format!("{hosts}198.19.0.6\tdb\n"))
        .unwrap();
    wait_for("the watcher to see db", Duration::from_secs(5), || {
        if rt.alive(&a, "watcher") {
            Err("still running".to_string())
        } else {
            Ok(())
        }
    });
    let log = std::fs::read_to_string(rt.log_path(&a, "watcher")).unwrap();
    assert!(log.contains("198.19.0.6"), "{log}");
    // b's hosts file did not change.
    let out = rt.output(&b, &args(&["getent", "hosts", "db"])).unwrap();
    assert!(!out.status.success(), "{}", text(&out));

    let pods = rt.pods();
    assert_eq!(pods.len(), 2);
    let rec = pods.iter().find(|p| p.key == a).unwrap();
    assert_eq!(
        (rec.netns.as_str(), rec.ip, rec.prefix),
        (ns_a.as_str(), ip("198.18.0.10"), 24)
    );
    assert!(rec.processes.iter().any(|p| p.container == "web"));
    assert_eq!(key("c1", "a").to_string(), "c1/default/a");

    let report = lab.down(false);
    assert_eq!(report.namespaces.len(), 3, "{report:?}");
    assert!(report.state_removed);
    // Logs stay unless the directory is removed.
    assert!(lab.dir.path().join("logs/c1/default/a/web.log").exists());
}

#[test]
fn clusters_reach_each_other_through_the_lab_namespace() {
    if !root_or_skip("clusters_reach_each_other_through_the_lab_namespace") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (key("c1", "a"), key("c2", "b"));
    let rt = lab.rt();
    rt.ensure_cluster("c1", net("198.18.0.0/24"), ip("198.18.0.1"))
        .unwrap();
    rt.ensure_cluster("c2", net("198.18.1.0/24"), ip("198.18.1.1"))
        .unwrap();
    // Idempotent; a cluster's range cannot change, nor overlap another's.
    rt.ensure_cluster("c1", net("198.18.0.0/24"), ip("198.18.0.1"))
        .unwrap();
    assert!(matches!(
        rt.ensure_cluster("c1", net("198.18.2.0/24"), ip("198.18.2.1")),
        Err(RuntimeError::ClusterConflict { .. })
    ));
    assert!(matches!(
        rt.ensure_cluster("c3", net("198.18.1.128/25"), ip("198.18.1.129")),
        Err(RuntimeError::InvalidNetwork(_))
    ));
    assert!(matches!(
        rt.ensure_cluster("c3", net("10.0.0.0/24"), ip("10.0.0.1")),
        Err(RuntimeError::InvalidNetwork(_))
    ));

    let svc = net("198.19.0.0/16");
    rt.create_pod(
        &a,
        ip("198.18.0.10"),
        24,
        &[svc, net("198.18.1.0/24")],
        "",
        None,
    )
    .unwrap();
    rt.create_pod(
        &b,
        ip("198.18.1.10"),
        24,
        &[svc, net("198.18.0.0/24")],
        "",
        None,
    )
    .unwrap();
    // A default route is refused, and leaves nothing behind.
    let before = netns_list().len();
    let c = key("c1", "c");
    assert!(matches!(
        rt.create_pod(&c, ip("198.18.0.12"), 24, &[net("0.0.0.0/0")], "", None),
        Err(RuntimeError::InvalidNetwork(_))
    ));
    assert!(rt.pod(&c).is_none());
    assert_eq!(netns_list().len(), before);
    assert!(matches!(
        rt.create_pod(&a, ip("198.18.0.13"), 24, &[], "", None),
        Err(RuntimeError::PodExists { .. })
    ));

    // A failure half-way (the bridge removed behind the lab's back) says which
    // command failed and why, and leaves nothing behind; ensure_cluster repairs.
    let lab_ns = lab.lab_ns();
    let out = Command::new("ip")
        .args(["-n", &lab_ns, "link", "del", "ilbr0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rt = lab.rt();
    let before = netns_list().len();
    let err = rt
        .create_pod(&c, ip("198.18.0.12"), 24, &[], "", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("master ilbr0") && err.contains("failed"),
        "{err}"
    );
    assert!(rt.pod(&c).is_none());
    assert_eq!(netns_list().len(), before);
    rt.ensure_cluster("c1", net("198.18.0.0/24"), ip("198.18.0.1"))
        .unwrap();
    rt.create_pod(&c, ip("198.18.0.12"), 24, &[], "", None)
        .unwrap();

    http_server(&mut lab, &a, "web", "198.18.0.10", 8080);
    http_server(&mut lab, &b, "web", "198.18.1.10", 8080);
    let rt = lab.rt.as_ref().unwrap();
    let code = wait_for("b's server, from a", Duration::from_secs(10), || {
        curl(rt, &a, "http://198.18.1.10:8080/", None)
    });
    assert_eq!(code, "200");
    wait_for("a's server, from b", Duration::from_secs(10), || {
        curl(rt, &b, "http://198.18.0.10:8080/", None)
    });

    let links = Command::new("ip")
        .args(["-n", &lab.lab_ns(), "-br", "link"])
        .output()
        .unwrap();
    let links = text(&links);
    assert!(
        links.contains("ilbr0") && links.contains("ilbr1"),
        "{links}"
    );
    let routes = Command::new("ip")
        .args(["-n", &lab.lab_ns(), "route"])
        .output()
        .unwrap();
    assert!(!text(&routes).contains("default"), "{}", text(&routes));
    for p in [&a, &b] {
        assert!(!ip_route(rt, p).contains("default"));
    }

    // Another lab's name cannot open this directory.
    drop(lab.rt.take());
    assert!(matches!(
        Runtime::open(lab.dir.path(), "someotherlab"),
        Err(RuntimeError::OtherLab { .. })
    ));
    lab.down(true);
    assert!(!lab.dir.path().exists());
}

#[test]
fn capture_redirects_outbound_and_inbound_tcp_but_not_the_proxys() {
    if !root_or_skip("capture_redirects_outbound_and_inbound_tcp_but_not_the_proxys") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (key("c1", "a"), key("c1", "b"));
    let rt = lab.rt();
    rt.ensure_cluster("c1", net("198.18.0.0/24"), ip("198.18.0.1"))
        .unwrap();
    let svc = [net("198.19.0.0/16")];
    let capture = Capture::istio(1337);
    rt.create_pod(&a, ip("198.18.0.10"), 24, &svc, "", Some(&capture))
        .unwrap();
    rt.create_pod(&b, ip("198.18.0.11"), 24, &svc, "", None)
        .unwrap();
    // Stand-ins for Envoy's outbound and inbound listeners.
    http_server(&mut lab, &a, "outbound", "0.0.0.0", 15001);
    http_server(&mut lab, &a, "inbound", "0.0.0.0", 15006);
    let rt = lab.rt.as_ref().unwrap();

    // The app's connection to a ClusterIP lands on 15001.
    let code = wait_for("outbound capture", Duration::from_secs(10), || {
        curl(rt, &a, "http://198.19.0.10:80/", None)
    });
    assert_eq!(code, "200");
    // The proxy's own connection is not captured: it goes to the gateway, which has
    // no route to the service range (curl hides the errno; bash says it).
    assert!(curl(rt, &a, "http://198.19.0.10:80/", Some(1337)).is_err());
    let connect = "exec 3<>/dev/tcp/198.19.0.10/80";
    let out = rt
        .output(
            &a,
            &args(&[
                "setpriv",
                "--reuid",
                "1337",
                "--regid",
                "1337",
                "--clear-groups",
                "--",
                "bash",
                "-c",
                connect,
            ]),
        )
        .unwrap();
    let err = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("No route to host") || err.contains("Network is unreachable"),
        "{err}"
    );
    // As root, the same connect is captured.
    let out = rt.output(&a, &args(&["bash", "-c", connect])).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Inbound: any port lands on 15006, except the excluded ones.
    let code = wait_for("inbound capture", Duration::from_secs(10), || {
        curl(rt, &b, "http://198.18.0.10:9999/", None)
    });
    assert_eq!(code, "200");
    let err = curl(rt, &b, "http://198.18.0.10:15020/", None).unwrap_err();
    assert!(
        err.contains("refused") || err.contains("Couldn't connect"),
        "{err}"
    );
    // An uncaptured pod is not redirected.
    assert!(curl(rt, &b, "http://198.19.0.10:80/", None).is_err());

    let rules = rt
        .output(&a, &args(&["iptables-save", "-t", "nat"]))
        .unwrap();
    let rules = text(&rules);
    assert!(
        rules.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
        "{rules}"
    );
    assert!(rules.contains("--uid-owner 1337"), "{rules}");

    // A process started with a uid runs as it.
    let lab_rt = lab.rt();
    lab_rt
        .spawn(
            &a,
            "whoami",
            Path::new("id"),
            &args(&["-u"]),
            &[],
            Some(1337),
        )
        .unwrap();
    wait_for("id to exit", Duration::from_secs(5), || {
        if lab_rt.alive(&a, "whoami") {
            Err("running".to_string())
        } else {
            Ok(())
        }
    });
    let log = std::fs::read_to_string(lab_rt.log_path(&a, "whoami")).unwrap();
    assert_eq!(log.lines().last(), Some("1337"), "{log}");
    // Environment is passed.
    lab_rt
        .spawn(
            &a,
            "env",
            Path::new("/bin/sh"),
            &args(&["-c", "echo \"x=$LAB_TEST_VAR\""]),
            &[("LAB_TEST_VAR".into(), "42".into())],
            None,
        )
        .unwrap();
    wait_for("sh to exit", Duration::from_secs(5), || {
        let log = std::fs::read_to_string(lab_rt.log_path(&a, "env")).unwrap_or_default();
        if log.contains("x=42") {
            Ok(())
        } else {
            Err(log)
        }
    });
    lab.down(true);
}

#[test]
fn delete_pod_stops_its_processes_and_removes_its_namespace_and_veth() {
    if !root_or_skip("delete_pod_stops_its_processes_and_removes_its_namespace_and_veth") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (key("c1", "a"), key("c1", "b"));
    let rt = lab.rt();
    rt.ensure_cluster("c1", net("198.18.0.0/24"), ip("198.18.0.1"))
        .unwrap();
    let ns_a = rt
        .create_pod(&a, ip("198.18.0.10"), 24, &[], "", None)
        .unwrap();
    rt.create_pod(&b, ip("198.18.0.11"), 24, &[], "", None)
        .unwrap();
    let veth = rt.pod(&a).unwrap().veth.clone();
    let lab_ns = format!("il-{}", rt.lab());
    // Ignores SIGTERM.
    let stubborn = rt
        .spawn(
            &a,
            "stubborn",
            Path::new("/bin/bash"),
            &args(&["-c", "trap '' TERM; while :; do sleep 1; done"]),
            &[],
            None,
        )
        .unwrap();
    // Leaves the process group (and session): found through the namespace.
    rt.spawn(
        &a,
        "escapee",
        Path::new("/bin/bash"),
        &args(&["-c", "setsid sleep 300 & echo \"pid=$!\"; wait"]),
        &[],
        None,
    )
    .unwrap();
    let other = rt
        .spawn(
            &b,
            "sleeper",
            Path::new("sleep"),
            &args(&["300"]),
            &[],
            None,
        )
        .unwrap();
    let log = rt.log_path(&a, "escapee");
    let escaped: u32 = wait_for("the escapee's pid", Duration::from_secs(5), || {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        log.lines()
            .find_map(|l| l.strip_prefix("pid=")?.parse().ok())
            .ok_or(log)
    });
    assert!(running(stubborn) && running(escaped) && running(other));
    assert!(matches!(
        rt.spawn(&a, "stubborn", Path::new("sleep"), &args(&["1"]), &[], None),
        Err(RuntimeError::AlreadyRunning { .. })
    ));

    let start = Instant::now();
    rt.delete_pod(&a, Duration::from_millis(500)).unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");

    assert!(!running(stubborn), "the SIGTERM-ignoring process survived");
    assert!(!running(escaped), "the process in its own session survived");
    assert!(running(other), "another pod's process was stopped");
    assert!(!netns_list().contains(&ns_a));
    assert!(!Path::new("/etc/netns").join(&ns_a).exists());
    let link = Command::new("ip")
        .args(["-n", &lab_ns, "link", "show", "dev", &veth])
        .output()
        .unwrap();
    assert!(!link.status.success(), "veth {veth} is still there");
    assert!(rt.pod(&a).is_none());
    assert!(!rt.alive(&a, "stubborn"));
    assert!(rt.alive(&b, "sleeper"));
    assert!(matches!(
        rt.delete_pod(&a, Duration::ZERO),
        Err(RuntimeError::UnknownPod(_))
    ));
    assert!(matches!(
        rt.output(&a, &args(&["true"])),
        Err(RuntimeError::UnknownPod(_))
    ));
    let report = lab.down(false);
    assert!(report.processes.contains(&other), "{report:?}");
    assert!(!running(other));
}

#[test]
fn down_cleans_up_after_kill_9_and_a_lost_state() {
    if !root_or_skip("down_cleans_up_after_kill_9_and_a_lost_state") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (key("c1", "a"), key("c2", "b"));
    let rt = lab.rt();
    rt.ensure_cluster("c1", net("198.18.0.0/24"), ip("198.18.0.1"))
        .unwrap();
    rt.ensure_cluster("c2", net("198.18.1.0/24"), ip("198.18.1.1"))
        .unwrap();
    let ns_a = rt
        .create_pod(&a, ip("198.18.0.10"), 24, &[], "", None)
        .unwrap();
    let ns_b = rt
        .create_pod(&b, ip("198.18.1.10"), 24, &[], "", None)
        .unwrap();
    let killed = rt
        .spawn(&a, "app", Path::new("sleep"), &args(&["300"]), &[], None)
        .unwrap();
    let survivor = rt
        .spawn(&b, "app", Path::new("sleep"), &args(&["300"]), &[], None)
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "the SIGKILLed process to go",
        Duration::from_secs(5),
        || {
            if rt.alive(&a, "app") {
                Err("running".to_string())
            } else {
                Ok(())
            }
        },
    );

    // A pod namespace a crash left unrecorded, with a process in it.
    let stray = format!("il-{}-99", lab.name);
    let ok = |cmd: &mut Command| assert!(cmd.status().unwrap().success(), "{cmd:?}");
    ok(Command::new("ip").args(["netns", "add", &stray]));
    std::fs::create_dir_all(Path::new("/etc/netns").join(&stray)).unwrap();
    std::fs::write(Path::new("/etc/netns").join(&stray).join("hosts"), "").unwrap();
    let mut stray_proc = Command::new("ip")
        .args(["netns", "exec", &stray, "sleep", "300"])
        .spawn()
        .unwrap();
    // Another lab's namespace, whose name starts like this lab's.
    let foreign = format!("il-{}z", lab.name);
    ok(Command::new("ip").args(["netns", "add", &foreign]));

    // The lab command dies, and its state is lost.
    lab.crash();
    std::fs::remove_file(lab.dir.path().join("state.json")).unwrap();

    lab.rt = None;
    let report = Runtime::down(lab.dir.path(), &lab.name, false);
    let foreign_left = netns_list().contains(&foreign);
    ok(Command::new("ip").args(["netns", "del", &foreign]));
    let report = report.unwrap();
    assert!(foreign_left, "another lab's namespace was removed");
    lab.assert_nothing_remains();
    let mut namespaces = report.namespaces.clone();
    namespaces.sort();
    let mut expected = vec![lab.lab_ns(), ns_a, ns_b, stray];
    expected.sort();
    assert_eq!(namespaces, expected);
    assert_eq!(report.etc_netns.len(), 3, "{report:?}");
    assert!(!report.state_removed);
    assert!(report.processes.contains(&survivor), "{report:?}");
    assert!(!running(survivor));
    assert!(stray_proc.wait().is_ok());

    // Idempotent; logs stay until the directory goes.
    let again = Runtime::down(lab.dir.path(), &lab.name, false).unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert!(lab.dir.path().join("logs/c2/default/b/app.log").exists());
    let last = lab.down(true);
    assert!(last.dir_removed);
}
