//! Bookinfo traffic through real Envoy, driven by Istio's unmodified samples.
//!
//! Each test gets a network namespace of its own with: the bookinfo workloads as
//! `isthmus app echo` on their pod IPs (127.0.0.10…, port 9080), `isthmus discovery`
//! reading a manifests directory that holds Istio's `bookinfo.yaml` and the pods, a
//! client sidecar (`isthmus agent`, pod `curl-1`) whose outbound capture port 15001
//! receives, by an iptables REDIRECT, every connection to 198.18.10.0/24, and for the
//! gateway test an ingress gateway (`isthmus agent --router`) on 127.0.0.3. Istio
//! config is applied by copying files of `samples/bookinfo/networking` into the
//! manifests directory, like `kubectl apply`, and changed by replacing them.
//!
//! Needs root, `ip`, `iptables`, `curl` and Envoy: otherwise each test says why it is
//! skipped, except with `CI=true`, where that is a failure.
// Notes for whoever reads the test output (timings, cleanup problems).
#![allow(clippy::print_stderr)]
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use isthmus_testkit::isthmus::{
    AgentSpec, EchoSpec, Mesh, envoy_pid, get_json, start_discovery, wait_ok,
};
use isthmus_testkit::{Curl, Netns, Pid, Reply, cleanup_stale, require_envoy, require_root};

const ISTHMUS: &str = env!("CARGO_BIN_EXE_isthmus");
const BOOKINFO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/istio/samples/bookinfo"
);

/// How long config may take to reach Envoy and take effect.
const CONVERGE: Duration = Duration::from_secs(30);
/// How long a process may take to become ready.
const START: Duration = Duration::from_secs(30);

const GRPC: &str = "127.0.0.1:15010";
const DEBUG: &str = "127.0.0.1:15014";
/// Connections to these addresses are redirected to the sidecar's port 15001; the
/// client calls services at 198.18.10.1.
const CAPTURED: &str = "198.18.10.0/24";
const SERVICE_VIP: &str = "198.18.10.1";
const GATEWAY_IP: &str = "127.0.0.3";

/// The bookinfo workloads: (app, version, pod IP, service account).
const WORKLOADS: [(&str, &str, &str, &str); 6] = [
    ("productpage", "v1", "127.0.0.10", "bookinfo-productpage"),
    ("details", "v1", "127.0.0.11", "bookinfo-details"),
    ("reviews", "v1", "127.0.0.12", "bookinfo-reviews"),
    ("reviews", "v2", "127.0.0.13", "bookinfo-reviews"),
    ("reviews", "v3", "127.0.0.14", "bookinfo-reviews"),
    ("ratings", "v1", "127.0.0.15", "bookinfo-ratings"),
];

fn sample(rel: &str) -> PathBuf {
    Path::new(BOOKINFO).join(rel)
}

fn read_sample(rel: &str) -> String {
    let p = sample(rel);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("cannot read Istio's sample {}: {e}", p.display()))
}

/// A Pod per workload, as the kubelet would report it: running, ready, with its IP.
fn pods_yaml() -> String {
    WORKLOADS
        .iter()
        .map(|(app, version, ip, sa)| {
            format!(
                "apiVersion: v1
kind: Pod
metadata:
  name: {app}-{version}-1
  namespace: default
  labels:
    app: {app}
    version: {version}
spec:
  serviceAccountName: {sa}
  containers:
  - name: {app}
    image: isthmus-echo
    ports:
    - containerPort: 9080
status:
  phase: Running
  podIP: {ip}
  podIPs:
  - ip: {ip}
  conditions:
  - type: Ready
    status: \"True\"
"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One test's mesh: namespace, processes, manifests.
struct Bookinfo {
    mesh: Mesh,
    discovery: Pid,
    sidecar: AgentSpec,
    sidecar_agent: Pid,
    gateway: Option<AgentSpec>,
    /// Last: dropped after everything that refers to it.
    ns: Netns,
}

impl Bookinfo {
    /// Everything but the gateway; `None` when the test is skipped.
    fn start(test: &str) -> Option<Self> {
        Self::start_with(test, false)
    }

    fn start_with(test: &str, with_gateway: bool) -> Option<Self> {
        if !require_root(test) {
            return None;
        }
        let envoy = require_envoy(test)?;
        static STALE: Once = Once::new();
        STALE.call_once(|| {
            if let Err(e) = cleanup_stale("traffic") {
                eprintln!("cleaning up namespaces of earlier runs: {e}");
            }
        });
        let ns = Netns::new("traffic").expect("create a network namespace");
        ns.ip(&["route", "add", "local", CAPTURED, "dev", "lo"])
            .expect("route the captured range to lo");
        ns.iptables(&[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            CAPTURED,
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ])
        .expect("redirect the captured range to the sidecar");

        let mesh = Mesh::new(&ns.dir().join("mesh"), "cluster1", "network1").unwrap();
        // kubectl apply -f samples/bookinfo/platform/kube/bookinfo.yaml, and the pods
        // its Deployments would make.
        mesh.apply_file(&sample("platform/kube/bookinfo.yaml"))
            .unwrap();
        mesh.apply("pods.yaml", &pods_yaml()).unwrap();

        let isthmus = Path::new(ISTHMUS);
        for (app, version, ip, _) in WORKLOADS {
            EchoSpec {
                service: app.into(),
                version: version.into(),
                pod: format!("{app}-{version}-1"),
                cluster: "cluster1".into(),
                listen: vec![SocketAddr::new(ip.parse().unwrap(), 9080)],
            }
            .start(&ns, isthmus)
            .unwrap();
        }
        let discovery = start_discovery(&ns, isthmus, mesh.file(), addr(GRPC), addr(DEBUG))
            .expect("start isthmus discovery");
        wait_ok(
            &ns,
            "the control plane's /ready",
            &format!("http://{DEBUG}/ready"),
            START,
        );

        let sidecar = AgentSpec {
            router: false,
            pod: "curl-1".into(),
            namespace: "default".into(),
            labels: "app=curl".into(),
            node_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            admin: addr("127.0.0.1:15000"),
            readiness_port: 15021,
            discovery: addr(GRPC),
            cluster_id: "cluster1".into(),
            network: "network1".into(),
            envoy,
        };
        let sidecar_agent = sidecar.start(&ns, isthmus).expect("start the sidecar");
        let gateway = with_gateway.then(|| {
            let gw = AgentSpec {
                router: true,
                pod: "istio-ingressgateway-1".into(),
                namespace: "istio-system".into(),
                labels: "istio=ingressgateway,app=istio-ingressgateway".into(),
                node_ip: GATEWAY_IP.parse().unwrap(),
                admin: addr("127.0.0.1:15100"),
                readiness_port: 15121,
                ..sidecar.clone()
            };
            gw.start(&ns, isthmus).expect("start the gateway");
            gw
        });
        let me = Bookinfo {
            mesh,
            discovery,
            sidecar,
            sidecar_agent,
            gateway,
            ns,
        };
        wait_ok(
            &me.ns,
            "the sidecar's readiness",
            &me.sidecar.readiness_url(),
            START,
        );
        if let Some(gw) = &me.gateway {
            wait_ok(
                &me.ns,
                "the gateway's readiness",
                &gw.readiness_url(),
                START,
            );
        }
        Some(me)
    }

    /// Copies Istio's sample `networking/FILE` into the manifests.
    fn apply_sample(&self, file: &str) {
        self.mesh
            .apply_file(&sample(&format!("networking/{file}")))
            .unwrap();
    }

    /// Writes Istio's sample `networking/FILE` as manifest `name`, replacing what was
    /// there at once.
    fn apply_sample_as(&self, name: &str, file: &str) {
        self.mesh
            .apply(name, &read_sample(&format!("networking/{file}")))
            .unwrap();
    }

    /// `n` requests from the client through its sidecar to `http://HOST:9080PATH`.
    fn call(&self, host: &str, path: &str, n: usize, headers: &[&str]) -> Vec<Reply> {
        headers
            .iter()
            .fold(
                Curl::get(format!("http://{host}:9080{path}"))
                    .resolve(format!("{host}:9080:{SERVICE_VIP}")),
                |c, h| c.header(*h),
            )
            .times(n)
            .send(&self.ns)
    }

    fn reviews(&self, n: usize, headers: &[&str]) -> Vec<Reply> {
        self.call("reviews", "/reviews/0", n, headers)
    }

    /// The control plane's `/debug/syncz` entry for a proxy.
    fn syncz(&self, node_id: &str) -> Result<serde_json::Value, String> {
        let all = get_json(&self.ns, &format!("http://{DEBUG}/debug/syncz"))?;
        all.as_array()
            .into_iter()
            .flatten()
            .find(|c| c["proxy"]["id"] == node_id)
            .cloned()
            .ok_or_else(|| format!("{node_id} is not connected: {all}"))
    }

    /// Fails the test with `msg` and what the control plane and Envoy have: syncz,
    /// the control plane's config dump for the proxies, Envoy's listeners and routes,
    /// and the logs. The full dumps are saved next to the logs.
    #[track_caller]
    fn fail(&self, msg: impl std::fmt::Display) -> ! {
        let mut out = format!("{msg}\n");
        let fetch = |url: &str, save_as: &str| {
            let r = Curl::get(url).send_one(&self.ns);
            let text = match r.error {
                Some(e) => e,
                None => r.body,
            };
            let path = self.ns.dir().join(save_as);
            let _ = std::fs::write(&path, &text);
            (text, path)
        };
        let (syncz, _) = fetch(&format!("http://{DEBUG}/debug/syncz"), "syncz.json");
        out.push_str(&format!(
            "\n----- control plane /debug/syncz -----\n{}\n",
            truncate(&syncz, 3000)
        ));
        for proxy in std::iter::once(&self.sidecar).chain(&self.gateway) {
            let (dump, path) = fetch(
                &format!(
                    "http://{DEBUG}/debug/config_dump?proxyID={}",
                    proxy.node_id()
                ),
                &format!("control-plane-config_dump-{}.json", proxy.pod),
            );
            out.push_str(&format!(
                "\n----- control plane config_dump for {} (all of it in {}) -----\n{}\n",
                proxy.pod,
                path.display(),
                truncate(&dump, 3000)
            ));
            let (listeners, _) = fetch(
                &format!("http://{}/listeners", proxy.admin),
                &format!("envoy-listeners-{}.txt", proxy.pod),
            );
            let (routes, path) = fetch(
                &format!(
                    "http://{}/config_dump?resource=dynamic_route_configs",
                    proxy.admin
                ),
                &format!("envoy-routes-{}.json", proxy.pod),
            );
            out.push_str(&format!(
                "\n----- Envoy {}: /listeners -----\n{listeners}\n----- routes (all of them in {}) -----\n{}\n",
                proxy.pod,
                path.display(),
                route_summary(&routes),
            ));
        }
        self.ns.fail(out)
    }

    /// Polls `check` every 50 ms until it gives `Ok`, else fails showing the last `Err`.
    #[track_caller]
    fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut() -> Result<T, String>,
    ) -> T {
        isthmus_testkit::poll_until(what, timeout, check).unwrap_or_else(|e| self.fail(e))
    }

    /// Waits until `n` requests to reviews (with `headers`) all come from `version`.
    #[track_caller]
    fn wait_reviews(&self, version: &str, headers: &[&str]) {
        self.wait_until(
            &format!("reviews {headers:?} all from {version}"),
            CONVERGE,
            || {
                let got = tally(&self.reviews(10, headers));
                if got.len() == 1 && got.contains_key(version) {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        );
    }

    /// The sidecar's Envoy, which must be running.
    fn envoy_pid(&self) -> Pid {
        envoy_pid(self.sidecar_agent).unwrap_or_else(|| self.fail("the sidecar runs no Envoy"))
    }
}

/// The first `n` characters of `s`, and how many more there are.
fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{}… ({} more bytes)", &s[..at], s.len() - at),
        None => s.to_string(),
    }
}

/// Route config names and their virtual hosts' domains, from Envoy's
/// `/config_dump?resource=dynamic_route_configs`.
fn route_summary(dump: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(dump) else {
        return truncate(dump, 2000);
    };
    let mut out = String::new();
    for cfg in v["configs"].as_array().into_iter().flatten() {
        let rc = &cfg["route_config"];
        out.push_str(&format!(
            "{} (version {}):\n",
            rc["name"], cfg["version_info"]
        ));
        for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {} {} routes, domains {}\n",
                vh["name"],
                vh["routes"].as_array().map_or(0, Vec::len),
                vh["domains"]
            ));
        }
    }
    if out.is_empty() {
        out = "(no dynamic route configs)".into();
    }
    out
}

/// What answered: the version for the echo app's answers, else the status or error.
fn outcome(r: &Reply) -> String {
    if let Some(e) = &r.error {
        return format!("error: {e}");
    }
    let line = r.first_line();
    let version = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("version="));
    match (r.status, version) {
        (200, Some(v)) => v.to_string(),
        (s, _) => format!("{s} {line:?}"),
    }
}

fn tally(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in replies {
        *out.entry(outcome(r)).or_default() += 1;
    }
    out
}

fn only(version: &str, n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([(version.to_string(), n)])
}

#[test]
fn gateway_routes_to_productpage() {
    let Some(b) = Bookinfo::start_with("gateway_routes_to_productpage", true) else {
        return;
    };
    b.apply_sample("bookinfo-gateway.yaml");
    let url = format!("http://{GATEWAY_IP}:8080/productpage");
    let reply = b.wait_until("productpage through the gateway", CONVERGE, || {
        let r = Curl::get(&url).send_one(&b.ns);
        if outcome(&r) == "v1" {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    });
    assert!(
        reply
            .first_line()
            .starts_with("service=productpage version=v1 pod=productpage-v1-1"),
        "{reply}"
    );
    assert!(
        reply.body.contains("\nmethod=GET path=/productpage\n"),
        "{}",
        reply.body
    );
    // Only the VirtualService's paths are routed.
    let other = Curl::get(format!("http://{GATEWAY_IP}:8080/reviews/0")).send_one(&b.ns);
    if other.status != 404 {
        b.fail(format_args!(
            "a path the bookinfo VirtualService does not match: want 404, got {other}"
        ));
    }
    let replies = Curl::get(&url).times(20).send(&b.ns);
    assert_eq!(tally(&replies), only("v1", 20));

    // A second VirtualService names the Gateway in the legacy `NAME.NAMESPACE.svc.DOMAIN`
    // form, and its match in the `NAME.NAMESPACE` form: Istio binds both to
    // default/bookinfo-gateway. Unbound, its host would fall to bookinfo's `*` host,
    // which has no route for /details.
    b.mesh
        .apply("details-legacy-gateway.yaml", LEGACY_GATEWAY_VS)
        .unwrap();
    let details = format!("http://{GATEWAY_IP}:8080/details/0");
    let call = || {
        Curl::get(&details)
            .header("Host: details.example.com")
            .send_one(&b.ns)
    };
    let reply = b.wait_until(
        "details through the gateway named in the legacy form",
        CONVERGE,
        || {
            let r = call();
            if r.first_line().starts_with("service=details version=v1") {
                Ok(r)
            } else {
                Err(r.to_string())
            }
        },
    );
    assert!(
        reply.body.contains("\nmethod=GET path=/details/0\n"),
        "{}",
        reply.body
    );
    let replies = Curl::get(&details)
        .header("Host: details.example.com")
        .times(10)
        .send(&b.ns);
    assert_eq!(tally(&replies), only("v1", 10));
}

/// Routes details.example.com through bookinfo's Gateway, named the legacy way.
const LEGACY_GATEWAY_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: details-legacy-gateway
  namespace: default
spec:
  hosts: [details.example.com]
  gateways: [bookinfo-gateway.default.svc.cluster.local]
  http:
  - match:
    - uri: {prefix: /details}
      gateways: [bookinfo-gateway.default]
    route:
    - destination: {host: details, port: {number: 9080}}
";

#[test]
fn reviews_all_v1() {
    let Some(b) = Bookinfo::start("reviews_all_v1") else {
        return;
    };
    b.apply_sample("destination-rule-all.yaml");
    b.apply_sample("virtual-service-all-v1.yaml");
    b.wait_reviews("v1", &[]);
    let replies = b.reviews(50, &[]);
    assert_eq!(tally(&replies), only("v1", 50));
    // The Host header reaches the app as the client sent it.
    assert!(
        replies[0].body.contains("\nheader: host=reviews:9080\n"),
        "{}",
        replies[0].body
    );
    // The other services answer from v1 too.
    for svc in ["productpage", "details", "ratings"] {
        assert_eq!(tally(&b.call(svc, "/", 5, &[])), only("v1", 5), "{svc}");
    }
}

#[test]
fn reviews_50_50() {
    let Some(b) = Bookinfo::start("reviews_50_50") else {
        return;
    };
    b.apply_sample("destination-rule-all.yaml");
    b.apply_sample("virtual-service-reviews-50-v3.yaml");
    // Without the VirtualService v2 answers too.
    b.wait_until("reviews split between v1 and v3 only", CONVERGE, || {
        let got = tally(&b.reviews(30, &[]));
        if got.contains_key("v1") && got.contains_key("v3") && got.len() == 2 {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    let got = tally(&b.reviews(200, &[]));
    let v1 = got.get("v1").copied().unwrap_or(0);
    let v3 = got.get("v3").copied().unwrap_or(0);
    // Binomial(200, 0.5): 70..=130 is more than 4 standard deviations either way.
    assert!(
        v1 + v3 == 200 && (70..=130).contains(&v1) && (70..=130).contains(&v3),
        "want about 100 each of v1 and v3 and nothing else: {got:?}"
    );
}

#[test]
fn reviews_jason() {
    let Some(b) = Bookinfo::start("reviews_jason") else {
        return;
    };
    b.apply_sample("destination-rule-all.yaml");
    b.apply_sample("virtual-service-reviews-jason-v2-v3.yaml");
    b.wait_reviews("v2", &["end-user: jason"]);
    b.wait_reviews("v3", &[]);
    assert_eq!(tally(&b.reviews(20, &["end-user: jason"])), only("v2", 20));
    assert_eq!(tally(&b.reviews(20, &[])), only("v3", 20));
    assert_eq!(tally(&b.reviews(20, &["end-user: alice"])), only("v3", 20));
}

#[test]
fn ratings_fault_abort() {
    let Some(b) = Bookinfo::start("ratings_fault_abort") else {
        return;
    };
    b.apply_sample("destination-rule-all.yaml");
    b.apply_sample("virtual-service-ratings-test-abort.yaml");
    let jason = |n| b.call("ratings", "/ratings/0", n, &["end-user: jason"]);
    let aborted = |r: &Reply| r.status == 500 && r.body == "fault filter abort";
    b.wait_until(
        "jason's ratings requests aborted with 500",
        CONVERGE,
        || {
            let r = jason(1).remove(0);
            if aborted(&r) {
                Ok(())
            } else {
                Err(format!("{r} {:?}", r.body))
            }
        },
    );
    let replies = jason(20);
    assert!(replies.iter().all(aborted), "{:?}", tally(&replies));
    let others = b.call("ratings", "/ratings/0", 20, &[]);
    assert_eq!(tally(&others), only("v1", 20));
    let others = b.call("ratings", "/ratings/0", 10, &["end-user: alice"]);
    assert_eq!(tally(&others), only("v1", 10));
}

#[test]
fn live_change() {
    let Some(b) = Bookinfo::start("live_change") else {
        return;
    };
    b.apply_sample("destination-rule-all.yaml");
    b.apply_sample_as("routing.yaml", "virtual-service-all-v1.yaml");
    b.wait_reviews("v1", &[]);
    let envoy = b.envoy_pid();

    // Batches of requests, each with the time it started, until told to stop.
    let stop = AtomicBool::new(false);
    let batches = AtomicUsize::new(0);
    let (during, switched_after, confirmed) = std::thread::scope(|s| {
        let background = s.spawn(|| {
            let mut seen: Vec<(Instant, Vec<Reply>)> = Vec::new();
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                seen.push((Instant::now(), b.reviews(10, &[])));
                batches.fetch_add(1, Ordering::Relaxed);
            }
            seen
        });
        // Let the loop run on the old config first.
        b.wait_until("the request loop to start", CONVERGE, || {
            match batches.load(Ordering::Relaxed) {
                n if n >= 2 => Ok(()),
                n => Err(format!("{n} batches")),
            }
        });
        let switch = Instant::now();
        b.apply_sample_as("routing.yaml", "virtual-service-reviews-v3.yaml");
        b.wait_until(
            "every reviews answer from v3",
            Duration::from_secs(10),
            || {
                let got = tally(&b.reviews(20, &[]));
                if got == only("v3", 20) {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        );
        let confirmed = Instant::now();
        // A few more batches on the new config.
        let seen = batches.load(Ordering::Relaxed);
        b.wait_until("the request loop to go on", CONVERGE, || {
            match batches.load(Ordering::Relaxed) {
                n if n >= seen + 3 => Ok(()),
                n => Err(format!("{} batches", n - seen)),
            }
        });
        stop.store(true, Ordering::Relaxed);
        (background.join().unwrap(), confirmed - switch, confirmed)
    });
    let all: Vec<Reply> = during.iter().flat_map(|(_, r)| r.clone()).collect();
    let got = tally(&all);
    if got.keys().any(|k| k != "v1" && k != "v3") || !got.contains_key("v1") {
        b.fail(format_args!(
            "during the switch every request must succeed, from v1 then v3: {got:?}"
        ));
    }
    let after: Vec<Reply> = during
        .iter()
        .filter(|(started, _)| *started > confirmed)
        .flat_map(|(_, r)| r.clone())
        .collect();
    assert!(!after.is_empty());
    assert_eq!(
        tally(&after),
        only("v3", after.len()),
        "after the switch ({got:?})"
    );
    assert_eq!(b.envoy_pid(), envoy, "Envoy was restarted");
    eprintln!("live_change: v3 everywhere {switched_after:?} after the change; {got:?}");
}

/// A VirtualService Istio's validation accepts (the regex compiles) but Envoy rejects:
/// `x{500}` compiles to an RE2 program far over Envoy's default
/// `re2.max_program_size.error_level` of 100. Were it accepted, everything would go to
/// v3.
const HUGE_REGEX_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          regex: "x{500}"
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v3
"#;

#[test]
fn nack_keeps_last_good() {
    let Some(b) = Bookinfo::start("nack_keeps_last_good") else {
        return;
    };
    b.apply_sample("destination-rule-all.yaml");
    b.apply_sample_as("routing.yaml", "virtual-service-all-v1.yaml");
    b.wait_reviews("v1", &[]);
    let node = b.sidecar.node_id();
    let acked = b.wait_until("the sidecar's rds ACK", CONVERGE, || {
        let s = b.syncz(&node)?;
        let rds = &s["types"]["rds"];
        match (rds["ackedVersion"].as_str(), rds["nack"].is_null()) {
            (Some(v), true) if Some(v) == rds["sentVersion"].as_str() => Ok(v.to_string()),
            _ => Err(format!("{rds}")),
        }
    });

    // The control plane accepts it, as Istio's validation would.
    let bad = b.ns.dir().join("huge-regex.yaml");
    std::fs::write(&bad, HUGE_REGEX_VS).unwrap();
    let analyze = Command::new(ISTHMUS)
        .args(["analyze", "--mesh"])
        .arg(b.mesh.file())
        .arg(&bad)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&analyze.stdout);
    assert!(
        analyze.status.success() && !report.contains("Error"),
        "isthmus analyze finds errors in the VirtualService ({}):\n{report}{}",
        analyze.status,
        String::from_utf8_lossy(&analyze.stderr)
    );

    b.mesh.apply("routing.yaml", HUGE_REGEX_VS).unwrap();
    let nack = b.wait_until("Envoy's NACK of the new routes", CONVERGE, || {
        let s = b.syncz(&node)?;
        let rds = &s["types"]["rds"];
        rds["nack"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| format!("{rds}"))
    });
    assert!(
        nack.contains("program size") || nack.contains("regex"),
        "the NACK names the regex: {nack}"
    );
    eprintln!("nack_keeps_last_good: Envoy rejected the routes: {nack}");
    let s = b.syncz(&node).unwrap();
    assert_eq!(
        s["types"]["rds"]["ackedVersion"].as_str(),
        Some(acked.as_str()),
        "the last accepted version stays: {s}"
    );
    // Envoy keeps its last good routes: all v1, not the rejected config's v3.
    assert_eq!(tally(&b.reviews(30, &[])), only("v1", 30));

    // Taking it back clears the NACK.
    b.apply_sample_as("routing.yaml", "virtual-service-all-v1.yaml");
    b.wait_until("the NACK to clear", CONVERGE, || {
        let s = b.syncz(&node)?;
        let rds = &s["types"]["rds"];
        if rds["nack"].is_null() && rds["ackedVersion"] == rds["sentVersion"] {
            Ok(())
        } else {
            Err(format!("{rds}"))
        }
    });
    assert_eq!(tally(&b.reviews(10, &[])), only("v1", 10));
}

#[test]
fn control_plane_restart() {
    let Some(mut b) = Bookinfo::start("control_plane_restart") else {
        return;
    };
    b.apply_sample("destination-rule-all.yaml");
    b.apply_sample_as("routing.yaml", "virtual-service-all-v1.yaml");
    b.wait_reviews("v1", &[]);
    let envoy = b.envoy_pid();

    b.ns.kill(b.discovery);
    // Envoy keeps serving what it has, also once it has noticed the control plane is gone.
    assert_eq!(tally(&b.reviews(20, &[])), only("v1", 20));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(tally(&b.reviews(20, &[])), only("v1", 20));

    b.discovery = start_discovery(
        &b.ns,
        Path::new(ISTHMUS),
        b.mesh.file(),
        addr(GRPC),
        addr(DEBUG),
    )
    .expect("restart isthmus discovery");
    wait_ok(
        &b.ns,
        "the restarted control plane's /ready",
        &format!("http://{DEBUG}/ready"),
        START,
    );
    b.apply_sample_as("routing.yaml", "virtual-service-reviews-v3.yaml");
    b.wait_reviews("v3", &[]);
    assert_eq!(tally(&b.reviews(20, &[])), only("v3", 20));
    assert_eq!(b.envoy_pid(), envoy, "Envoy was restarted");
}
