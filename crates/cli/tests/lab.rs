//! The lab end to end: `isthmus lab` runs Istio's unmodified bookinfo, curl and
//! helloworld manifests in network namespaces with real Envoy sidecars, and Istio's
//! networking samples route the traffic. Needs root (skipped otherwise, never with
//! CI=true). Each test runs its own lab (own name and directory) and removes it at the
//! end, passing or failing.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ISTIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio");

fn sample(rel: &str) -> String {
    format!("{ISTIO}/samples/{rel}")
}

fn net(file: &str) -> String {
    sample(&format!("bookinfo/networking/{file}"))
}

/// Held by the tests that count requests in flight, so that one's load does not
/// starve the other's on a small machine (the other tests run meanwhile).
static TRAFFIC: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn traffic_turn() -> std::sync::MutexGuard<'static, ()> {
    TRAFFIC
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A lab for one test, brought down when dropped.
struct TestLab {
    dir: tempfile::TempDir,
    name: String,
    envoy: PathBuf,
}

impl TestLab {
    /// A lab named after the test, or None when this machine can't run one (not root,
    /// no Envoy) and CI is not set.
    fn new(test: &str) -> Option<Self> {
        if !isthmus_testkit::require_root(test) {
            return None;
        }
        let envoy = isthmus_testkit::require_envoy(test)?;
        assert!(
            which("setpriv").is_some(),
            "{test}: setpriv (util-linux) is needed to run Envoy as uid 1337"
        );
        let name = format!(
            "t{}{}",
            std::process::id() % 10000,
            &test[..test.len().min(4)]
        );
        Some(Self {
            dir: tempfile::tempdir().unwrap(),
            name,
            envoy,
        })
    }

    /// `isthmus lab ARGS` for this lab, with ISTHMUS_ENVOY set.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_isthmus"));
        cmd.arg("lab")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--name")
            .arg(&self.name)
            .args(args)
            .env("ISTHMUS_ENVOY", &self.envoy)
            .env("ISTHMUS_ISTIO_DIR", ISTIO);
        cmd
    }

    fn cmd(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a lab verb that must succeed, from a shell that knows no Envoy: no
    /// ISTHMUS_ENVOY, and a current directory without the checkout's .venv above it.
    #[track_caller]
    fn ok_without_envoy(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .env_remove("ISTHMUS_ENVOY")
            .current_dir("/")
            .output()
            .unwrap();
        self.check(args, out)
    }

    /// Runs a lab verb that must succeed.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        self.check(args, out)
    }

    #[track_caller]
    fn check(&self, args: &[&str], out: Output) -> String {
        if !out.status.success() {
            self.fail(&format!(
                "`isthmus lab {}` failed:\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A shell command in the curl pod (which has a sidecar).
    fn sh(&self, script: &str) -> String {
        self.ok(&["exec", "cluster1", "default/curl", "--", "sh", "-c", script])
    }

    #[track_caller]
    fn fail(&self, msg: &str) -> ! {
        let status = self.cmd(&["status"]);
        let cp = self.cmd(&["logs", "cluster1", "istio-system/istiod"]);
        let cp = String::from_utf8_lossy(&cp.stdout);
        let tail: Vec<&str> = cp.lines().rev().take(30).collect();
        panic!(
            "{msg}\n--- lab status ---\n{}\n--- control plane log (last lines) ---\n{}",
            String::from_utf8_lossy(&status.stdout),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// Polls `check` every 100 ms until it returns Ok, else fails with the last Err.
    #[track_caller]
    fn until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            match check() {
                Ok(v) => return v,
                Err(e) if start.elapsed() > timeout => self.fail(&format!(
                    "timed out after {timeout:?} waiting for {what}; last: {e}"
                )),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The versions of `n` answers of reviews (from the curl pod, through its sidecar).
    fn reviews_versions(&self, n: usize, header: Option<&str>) -> Vec<String> {
        let h = header.map(|h| format!("-H '{h}'")).unwrap_or_default();
        let out = self.sh(&format!(
            "for i in $(seq {n}); do curl -s -m 5 {h} http://reviews:9080/reviews/0; echo; done"
        ));
        out.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["podname"].as_str().map(version_of))
                    .unwrap_or_else(|| format!("error: {l}"))
            })
            .collect()
    }
}

fn version_of(pod: &str) -> String {
    pod.split('-').nth(1).unwrap_or_default().to_string()
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let out = self.cmd(&["down"]);
        if !out.status.success() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("lab down failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

fn all(versions: &[String], v: &str) -> Result<(), String> {
    if versions.iter().all(|x| x == v) {
        Ok(())
    } else {
        Err(format!("{versions:?}"))
    }
}

#[test]
fn bookinfo_through_sidecars_and_the_ingress_gateway() {
    let _turn = traffic_turn();
    let Some(lab) = TestLab::new("bookinfo") else {
        return;
    };
    let up = lab.ok(&[
        "up",
        "-f",
        &sample("bookinfo/platform/kube/bookinfo.yaml"),
        "-f",
        &sample("curl/curl.yaml"),
        "-f",
        &net("bookinfo-gateway.yaml"),
    ]);
    assert!(up.contains("up in"), "{up}");

    // Through the ingress gateway: the page with reviews from some version.
    let page = lab.until(
        "the product page through the ingress gateway",
        Duration::from_secs(10),
        || {
            let out = lab.ok(&[
                "exec",
                "cluster1",
                "istio-system/istio-ingressgateway",
                "--",
                "curl",
                "-s",
                "-m",
                "5",
                "http://127.0.0.1:8080/productpage",
            ]);
            if out.contains("Reviews served by") {
                Ok(out)
            } else {
                Err(out)
            }
        },
    );
    assert!(page.contains("Simple Bookstore App"), "{page}");

    // All traffic to v1: no stars.
    lab.ok(&[
        "apply",
        "cluster1",
        "-f",
        &net("destination-rule-all.yaml"),
        "-f",
        &net("virtual-service-all-v1.yaml"),
    ]);
    lab.until("reviews all v1", Duration::from_secs(5), || {
        all(&lab.reviews_versions(20, None), "v1")
    });
    let page = lab.sh("curl -s http://productpage:9080/productpage");
    assert!(
        !page.contains("glyphicon-star"),
        "v1 shows no stars: {page}"
    );

    // 50/50 between v1 and v3 over 200 requests.
    lab.ok(&[
        "apply",
        "cluster1",
        "-f",
        &net("virtual-service-reviews-50-v3.yaml"),
    ]);
    lab.until("reviews v1 and v3", Duration::from_secs(5), || {
        let v = lab.reviews_versions(10, None);
        if v.iter().any(|x| x == "v3") {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    });
    let v = lab.reviews_versions(200, None);
    let v1 = v.iter().filter(|x| *x == "v1").count();
    let v3 = v.iter().filter(|x| *x == "v3").count();
    assert_eq!(v1 + v3, 200, "only v1 and v3 answer: {v:?}");
    // Binomial(200, 0.5): 70..=130 is beyond 4 standard deviations.
    assert!((70..=130).contains(&v1), "v1 {v1}, v3 {v3}");

    // Jason (logged in through productpage) gets v2's black stars; others v3's red.
    lab.ok(&[
        "apply",
        "cluster1",
        "-f",
        &net("virtual-service-reviews-jason-v2-v3.yaml"),
    ]);
    lab.until("anonymous users on v3", Duration::from_secs(5), || {
        all(&lab.reviews_versions(10, None), "v3")
    });
    let jason = lab.sh(
        "curl -s -c /tmp/jar -o /dev/null -d 'username=jason&passwd=jason' http://productpage:9080/login && curl -s -b /tmp/jar http://productpage:9080/productpage",
    );
    assert!(
        jason.contains("<font color=\"black\">") && jason.contains("jason"),
        "{jason}"
    );
    let anon = lab.sh("curl -s http://productpage:9080/productpage");
    assert!(anon.contains("<font color=\"red\">"), "{anon}");

    // A fault abort on ratings for jason: the page says ratings are unavailable.
    lab.ok(&[
        "apply",
        "cluster1",
        "-f",
        &net("virtual-service-ratings-test-abort.yaml"),
    ]);
    lab.until("ratings aborted for jason", Duration::from_secs(5), || {
        let p = lab.sh("curl -s -b /tmp/jar http://productpage:9080/productpage");
        if p.contains("Ratings service is currently unavailable") {
            Ok(())
        } else {
            Err("stars still shown".into())
        }
    });
    let anon = lab.sh("curl -s http://productpage:9080/productpage");
    assert!(
        !anon.contains("Ratings service is currently unavailable"),
        "{anon}"
    );

    // A VirtualService changed while traffic flows: every answer is v1 or v3, none
    // fails, and the proxies are not restarted.
    lab.ok(&[
        "apply",
        "cluster1",
        "-f",
        &net("virtual-service-all-v1.yaml"),
    ]);
    lab.until("reviews all v1 again", Duration::from_secs(5), || {
        all(&lab.reviews_versions(10, None), "v1")
    });
    // The pids of this lab's Envoys, in order (other tests' labs start theirs
    // meanwhile).
    let envoys = || lab.envoy_pids();
    let pid_before = envoys();
    assert!(!pid_before.is_empty(), "no Envoy found");
    let loader = lab.cmd_spawn_loop();
    // Read its output as it comes, so it never blocks on a full pipe.
    let loader = std::thread::spawn(move || loader.wait_with_output().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    lab.ok(&[
        "apply",
        "cluster1",
        "-f",
        &net("virtual-service-reviews-v3.yaml"),
    ]);
    lab.until("reviews all v3", Duration::from_secs(5), || {
        all(&lab.reviews_versions(10, None), "v3")
    });
    let during = loader.join().unwrap();
    let lines = String::from_utf8_lossy(&during.stdout);
    let versions: Vec<String> = lines
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["podname"].as_str().map(version_of))
                .unwrap_or_else(|| format!("error: {l}"))
        })
        .collect();
    assert!(
        versions.len() > 20,
        "traffic flowed during the change: {versions:?}"
    );
    assert!(
        versions.iter().all(|v| v == "v1" || v == "v3"),
        "no request failed: {versions:?}"
    );
    assert_eq!(pid_before, envoys(), "Envoy was not restarted");
}

impl TestLab {
    /// This lab's network namespaces: il-NAME and il-NAME-N.
    fn namespaces(&self) -> Vec<String> {
        let prefix = format!("il-{}", self.name);
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| *n == prefix || n.starts_with(&format!("{prefix}-")))
            .map(String::from)
            .collect()
    }

    /// The pids of the processes in this lab's network namespaces.
    fn pids(&self) -> Vec<u32> {
        self.namespaces()
            .iter()
            .flat_map(|n| {
                let out = Command::new("ip")
                    .args(["netns", "pids", n])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|p| p.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// The pids of the Envoys running in this lab's network namespaces, in order.
    fn envoy_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("envoy-rev.json"))
            })
            .collect();
        pids.sort_unstable();
        pids
    }

    /// 3 s of requests to reviews from the curl pod, in the background.
    fn cmd_spawn_loop(&self) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_isthmus"))
            .arg("lab")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--name")
            .arg(&self.name)
            .args(["exec", "cluster1", "default/curl", "--", "sh", "-c"])
            .arg("end=$(($(date +%s%N)+3000000000)); while [ $(date +%s%N) -lt $end ]; do curl -s -m 5 http://reviews:9080/reviews/0; echo; done")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[test]
fn plain_pods_and_scaling() {
    let Some(lab) = TestLab::new("scaling") else {
        return;
    };
    // helloworld in a namespace without injection: plain pods, still reachable from a
    // pod with a sidecar.
    let hello = sample("helloworld/helloworld.yaml");
    lab.ok(&["up", "-f", &sample("curl/curl.yaml")]);
    lab.ok(&["apply", "cluster1", "-n", "plain", "-f", &hello]);
    let status = lab.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("plain/helloworld-v1") && l.contains(" plain ")),
        "helloworld runs without a sidecar: {status}"
    );
    let out = lab.until(
        "helloworld from the curl pod",
        Duration::from_secs(5),
        || {
            let o = lab.sh("curl -s -m 3 http://helloworld.plain:5000/hello");
            if o.starts_with("Hello version:") {
                Ok(o)
            } else {
                Err(o)
            }
        },
    );
    assert!(out.contains("instance: helloworld-v"), "{out}");

    // Scaling changes the endpoints the curl pod's Envoy uses, within a second.
    let endpoints = || -> usize {
        let clusters = lab.sh("curl -s http://127.0.0.1:15000/clusters");
        clusters
            .lines()
            .filter(|l| {
                l.starts_with("outbound|5000||helloworld.plain.svc.cluster.local::")
                    && l.ends_with("::health_flags::healthy")
            })
            .count()
    };
    lab.until("2 helloworld endpoints", Duration::from_secs(5), || {
        let n = endpoints();
        if n == 2 { Ok(()) } else { Err(format!("{n}")) }
    });
    lab.ok(&[
        "scale",
        "cluster1",
        "plain/helloworld-v1",
        "--replicas",
        "3",
    ]);
    lab.until(
        "4 endpoints within a second",
        Duration::from_secs(1),
        || {
            let n = endpoints();
            if n == 4 { Ok(()) } else { Err(format!("{n}")) }
        },
    );
    lab.ok(&[
        "scale",
        "cluster1",
        "plain/helloworld-v1",
        "--replicas",
        "1",
    ]);
    lab.until(
        "2 endpoints within a second",
        Duration::from_secs(1),
        || {
            let n = endpoints();
            if n == 2 { Ok(()) } else { Err(format!("{n}")) }
        },
    );
}

#[test]
fn down_removes_everything_also_after_kill_9() {
    let Some(lab) = TestLab::new("cleanup") else {
        return;
    };
    lab.ok(&["up", "-f", &sample("curl/curl.yaml")]);
    let prefix = format!("il-{}", lab.name);
    let netns = || lab.namespaces();
    let pids = || lab.pids();
    assert!(!netns().is_empty() && !pids().is_empty());
    // Every process of the lab killed at once, and its state file lost.
    for p in pids() {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status();
    }
    let _ = std::fs::remove_file(lab.dir.path().join("lab.json"));
    lab.ok(&["down"]);
    assert!(netns().is_empty(), "namespaces left: {:?}", netns());
    let etc: Vec<_> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(etc.is_empty(), "/etc/netns entries left: {etc:?}");
    let ps = Command::new("pgrep")
        .args(["-f", lab.dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

/// The `lab status` row of pod `pod` (`ns/name`), as its cells.
fn status_row(status: &str, pod: &str) -> Option<Vec<String>> {
    status
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.get(1).is_some_and(|c| c == pod))
}

#[test]
fn a_killed_control_plane_comes_back_and_a_crashing_container_fails_fast() {
    let Some(lab) = TestLab::new("restarts") else {
        return;
    };
    lab.ok(&["up"]);
    let status = lab.ok(&["status"]);
    assert!(
        status.lines().next().unwrap().contains("RESTARTS"),
        "{status}"
    );
    let row = status_row(&status, "istio-system/istiod").expect("the control plane's row");
    // CLUSTER POD IP ROLE READY RESTARTS PROCESSES
    assert_eq!((row[4].as_str(), row[5].as_str()), ("yes", "0"), "{status}");

    // The control plane's own process (not its supervisor), killed with SIGKILL while
    // its supervisor is held (SIGSTOP), so that it stays down while we look.
    let dir = lab.dir.path().canonicalize().unwrap();
    let pgrep = |pattern: String| -> String {
        let out = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let pid = || {
        pgrep(format!(
            "^[^ ]*isthmus discovery --mesh {}/mesh.yaml",
            dir.display()
        ))
    };
    let supervisor = pgrep(format!(
        "^[^ ]*isthmus lab supervise --state {}/logs/cluster1/istio-system/istiod/",
        dir.display()
    ));
    let before = pid();
    assert!(
        !before.is_empty() && !before.contains('\n'),
        "one control plane process: {before:?}"
    );
    assert!(
        !supervisor.is_empty() && !supervisor.contains('\n'),
        "one supervisor of the control plane: {supervisor:?}"
    );
    let signal = |sig: &str, pid: &str| {
        assert!(
            Command::new("kill")
                .args([sig, pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP", &supervisor);
    signal("-KILL", &before);
    lab.until("the control plane to die", Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{before}/stat")).unwrap_or_default();
        match stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]) {
            None | Some("Z" | "X") => Ok(()),
            Some(state) => Err(format!("state {state}")),
        }
    });
    let status = lab.ok(&["status"]);
    signal("-CONT", &supervisor);
    let row = status_row(&status, "istio-system/istiod").unwrap();
    assert_ne!(row[4], "yes", "a dead control plane shown ready:\n{status}");
    assert!(status.contains("not running"), "{status}");

    lab.until(
        "the control plane restarted",
        Duration::from_secs(10),
        || {
            let status = lab.ok(&["status"]);
            let row = status_row(&status, "istio-system/istiod").unwrap();
            if row[4] == "yes" && row[5] == "1" {
                Ok(())
            } else {
                Err(status)
            }
        },
    );
    let after = pid();
    assert!(!after.is_empty() && after != before, "{before} -> {after}");
    let log = lab.ok(&["logs", "cluster1", "istio-system/istiod"]);
    assert!(log.contains("signal: 9 (SIGKILL)"), "{log}");

    // A pod whose container exits before it is ready (two containers on one port):
    // the apply fails at once, with the end of the container's log.
    let manifest = lab.dir.path().join("clash.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: clash}
spec:
  selector: {matchLabels: {app: clash}}
  template:
    metadata: {labels: {app: clash}}
    spec:
      containers:
      - {name: one, image: example.com/echo, ports: [{containerPort: 8080}]}
      - {name: two, image: example.com/echo, ports: [{containerPort: 8080}]}
",
    )
    .unwrap();
    let started = Instant::now();
    let out = lab.cmd(&["apply", "cluster1", "-f", manifest.to_str().unwrap()]);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        took < Duration::from_secs(20),
        "failed only after {took:?}: {err}"
    );
    assert!(
        err.contains("exited (exit status: 1) before the pod was ready")
            && err.contains("cannot listen on 0.0.0.0:8080")
            && err.contains(".log"),
        "{err}"
    );
}

/// What `lab load --json` reports.
fn load_report(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "no load report ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn no_request_is_lost_when_pods_go_away() {
    let _turn = traffic_turn();
    let Some(lab) = TestLab::new("zeroloss") else {
        return;
    };
    lab.ok(&[
        "up",
        "-f",
        &sample("bookinfo/platform/kube/bookinfo.yaml"),
        "-f",
        &sample("curl/curl.yaml"),
    ]);
    lab.ok(&["scale", "cluster1", "default/reviews-v2", "--replicas", "3"]);
    let replicas = |status: &str| {
        status
            .lines()
            .filter(|l| l.contains("default/reviews-v2-") && !l.contains("terminating"))
            .count()
    };
    assert_eq!(replicas(&lab.ok(&["status"])), 3);

    // 10 clients at 200 requests/s in all from the curl pod (through its sidecar) to
    // reviews, while something takes pods away; bounded to 8 s each.
    let with_load = |what: &str, change: &dyn Fn()| {
        let load = lab
            .command(&[
                "load",
                "cluster1",
                "default/curl",
                "http://reviews:9080/reviews/0",
                "--concurrency",
                "10",
                "--rate",
                "200",
                "--duration",
                "8s",
                "--json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let load = std::thread::spawn(move || load.wait_with_output().unwrap());
        std::thread::sleep(Duration::from_millis(1500));
        let started = Instant::now();
        change();
        let took = started.elapsed();
        let report = load_report(&load.join().unwrap());
        let requests = report["requests"].as_u64().unwrap();
        assert!(requests >= 800, "{what}: too little load to tell: {report}");
        assert_eq!(
            report["ok"].as_u64(),
            Some(requests),
            "{what} ({took:?}) lost requests: {report}"
        );
        took
    };

    // A scale-down from 3 to 1.
    let took = with_load("scaling reviews-v2 from 3 to 1", &|| {
        lab.ok(&["scale", "cluster1", "default/reviews-v2", "--replicas", "1"]);
    });
    assert_eq!(replicas(&lab.ok(&["status"])), 1, "scaled down in {took:?}");

    // A rolling update (a changed template), started from a shell that knows no Envoy:
    // the new pod's proxy runs the Envoy the lab came up with.
    let text = std::fs::read_to_string(sample("bookinfo/platform/kube/bookinfo.yaml")).unwrap();
    let v2 = text
        .split("\n---\n")
        .find(|d| d.contains("kind: Deployment") && d.contains("name: reviews-v2"))
        .expect("reviews-v2's Deployment")
        .replace(
            "        version: v2\n",
            "        version: v2\n      annotations:\n        restarted: \"1\"\n",
        );
    assert!(v2.contains("restarted"), "{v2}");
    let manifest = lab.dir.path().join("reviews-v2.yaml");
    std::fs::write(&manifest, v2).unwrap();
    let before = lab.ok(&["status"]);
    with_load("a rolling update of reviews-v2", &|| {
        lab.ok_without_envoy(&["apply", "cluster1", "-f", manifest.to_str().unwrap()]);
    });
    let after = lab.ok(&["status"]);
    let pods = |status: &str| -> Vec<String> {
        status
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with("default/reviews-v2-"))
            .map(String::from)
            .collect()
    };
    assert_eq!(pods(&after).len(), 1, "{after}");
    assert_ne!(pods(&before), pods(&after), "the pod was replaced: {after}");
    let row = status_row(&after, &pods(&after)[0]).unwrap();
    assert_eq!(row[4], "yes", "{after}");
}

/// An echo workload (the stand-in for an image the lab does not know) with its own
/// service account, in `default` (sidecar injected).
const ECHO: &str = "apiVersion: v1
kind: ServiceAccount
metadata:
  name: echo
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  labels: {app: echo}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 1
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo, version: v1}
    spec:
      serviceAccountName: echo
      containers:
      - name: echo
        image: example.com/echo:1
        ports:
        - containerPort: 8080
";

#[test]
fn sidecars_talk_mutual_tls_with_their_spiffe_identities() {
    let Some(lab) = TestLab::new("mtls") else {
        return;
    };
    let echo = lab.dir.path().join("echo.yaml");
    std::fs::write(&echo, ECHO).unwrap();
    let curl = sample("curl/curl.yaml");
    lab.ok(&["up", "-f", &curl, "-f", echo.to_str().unwrap()]);
    // The same curl without a sidecar, in a namespace without injection.
    lab.ok(&["apply", "cluster1", "-n", "plain", "-f", &curl]);

    // Sidecar to sidecar: mesh mTLS, and the app sees the caller's identity.
    let answer = lab.until("echo through mTLS", Duration::from_secs(10), || {
        let o = lab.sh("curl -s -m 3 http://echo/hello");
        if o.contains("service=echo") {
            Ok(o)
        } else {
            Err(o)
        }
    });
    let xfcc = answer
        .lines()
        .find_map(|l| l.strip_prefix("header: x-forwarded-client-cert="))
        .unwrap_or_else(|| panic!("no x-forwarded-client-cert: {answer}"));
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/default/sa/echo")
            && xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/curl"),
        "{xfcc}"
    );
    let handshakes = lab.sh(
        "curl -s 'http://127.0.0.1:15000/stats?filter=outbound.80..echo.default.svc.cluster.local.ssl.handshake'",
    );
    assert!(
        handshakes.contains("ssl.handshake: ") && !handshakes.contains("ssl.handshake: 0"),
        "the curl pod's sidecar used TLS to echo: {handshakes}"
    );
    // Its certificate, as the agent reports it.
    let cert = lab.sh("curl -s http://127.0.0.1:15021/healthz/certificate");
    assert!(
        cert.contains("\"identity\":\"spiffe://cluster.local/ns/default/sa/curl\""),
        "{cert}"
    );

    // A pod without a sidecar (so without ClusterIPs: it calls the pod's address)
    // still reaches it in plaintext (PERMISSIVE), and no identity is claimed for it.
    let status = lab.ok(&["status"]);
    let echo_ip = status
        .lines()
        .find(|l| l.contains("default/echo-"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no echo pod: {status}"))
        .to_string();
    let url = format!("http://{echo_ip}:8080/plain");
    // What the plain pod gets from echo (stdout), or why it got nothing.
    let from_plain = || {
        let out = lab.cmd(&[
            "exec",
            "cluster1",
            "plain/curl",
            "--",
            "curl",
            "-s",
            "-m",
            "3",
            &url,
        ]);
        let o = String::from_utf8_lossy(&out.stdout).into_owned();
        if o.contains("service=echo") {
            Ok(o)
        } else {
            Err(format!("{o}{}", String::from_utf8_lossy(&out.stderr)))
        }
    };
    let plain = lab.until("echo from a plain pod", Duration::from_secs(10), from_plain);
    assert!(!plain.contains("x-forwarded-client-cert"), "{plain}");

    // STRICT for the namespace: the plain pod is refused, the sidecar still gets through.
    let pa = lab.dir.path().join("pa.yaml");
    std::fs::write(
        &pa,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls: {mode: STRICT}\n",
    )
    .unwrap();
    lab.ok(&["apply", "cluster1", "-f", pa.to_str().unwrap()]);
    lab.until(
        "the plain pod refused under STRICT",
        Duration::from_secs(10),
        || match from_plain() {
            Ok(o) => Err(o),
            Err(_) => Ok(()),
        },
    );
    let strict = lab.sh("curl -s -m 3 http://echo/strict");
    assert!(
        strict.contains("URI=spiffe://cluster.local/ns/default/sa/curl"),
        "{strict}"
    );

    // DISABLE for echo: clients switch to plaintext toward it (no identity passed on).
    std::fs::write(
        &pa,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  selector:\n    matchLabels: {app: echo}\n  mtls: {mode: DISABLE}\n",
    )
    .unwrap();
    lab.ok(&["apply", "cluster1", "-f", pa.to_str().unwrap()]);
    lab.until(
        "echo in plaintext under DISABLE",
        Duration::from_secs(10),
        || {
            let o = lab.sh("curl -s -m 3 http://echo/disabled");
            if o.contains("service=echo") && !o.contains("x-forwarded-client-cert") {
                Ok(())
            } else {
                Err(o)
            }
        },
    );
}
