//! `isthmus bench xds`: the control plane (`isthmus discovery`, a child process, on a
//! manifest directory the bench writes) against simulated Envoy sidecars in this
//! process, half State-of-the-World and half Delta ADS, with the metadata Istio's agent
//! sends. Each simulated proxy behaves like Envoy: it subscribes to clusters and
//! listeners (wildcard), then to the endpoints of the EDS clusters it received and the
//! routes its listeners' HTTP connection managers name, and ACKs every response.
//!
//! Measured: the time to a full config (CDS, LDS, then EDS and RDS for everything they
//! name) for all proxies connecting at once, and for one new proxy while the others
//! are connected; push convergence (one endpoint's readiness is flipped by rewriting its
//! manifest, which goes through the control plane's file watch: the time until every
//! proxy has ACKed the updated assignment); and the control plane's own CPU time and
//! memory, read from `/proc/PID/stat` and `/proc/PID/status`. Prints figures; asserts
//! nothing. Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use prost::Message;
use prost::bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use isthmus_xds::discovery::BoundAddresses;
use isthmus_xds::resources::{CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPES};
use prost::encoding::{WireType, encode_key, encode_varint};

use crate::memory::{memory, process_memory};

mod envoy_sim;
use envoy_sim::{Event, Sim, delta_proxy, sotw_proxy};

/// The size of the simulation.
#[derive(Clone, Debug)]
pub struct Shape {
    pub proxies: usize,
    pub services: usize,
    /// Endpoints (pods) per service.
    pub endpoints: usize,
    /// Proxies connected one at a time after the others, for the per-proxy figure.
    pub new_proxies: usize,
    /// Endpoint changes timed.
    pub pushes: usize,
}

/// How to run the control plane.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `isthmus` binary (its `discovery` subcommand is the control plane).
    pub binary: PathBuf,
    /// Extra arguments for `isthmus discovery` (e.g. `--debounce 10ms`).
    pub discovery_args: Vec<String>,
    /// Keep the manifest directory and the control plane's log.
    pub keep: bool,
}

const NAMESPACES: usize = 10;
const PORT: u16 = 8080;
const DOMAIN: &str = "cluster.local";

fn ns_of(service: usize) -> String {
    format!("ns-{}", service % NAMESPACES)
}

/// Pod `n` (service n / endpoints, endpoint n % endpoints)'s address.
fn pod_ip(n: usize) -> String {
    // Lab addresses only (198.18.0.0/15), though nothing is ever sent to them.
    format!(
        "198.{}.{}.{}",
        18 + n / 62_500 % 2,
        n / 250 % 250,
        n % 250 + 1
    )
}

fn service_yaml(s: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: {ns}\nspec:\n  selector: {{app: svc-{s}}}\n  ports: [{{name: http, port: {PORT}, targetPort: {PORT}}}]\n---\n",
        ns = ns_of(s)
    )
}

fn pod_yaml(shape: &Shape, n: usize, ready: bool) -> String {
    let s = n / shape.endpoints;
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: svc-{s}-{e}\n  namespace: {ns}\n  labels: {{app: svc-{s}, version: v1}}\nspec:\n  serviceAccountName: svc-{s}\n  containers: [{{name: app, ports: [{{containerPort: {PORT}}}]}}]\nstatus:\n  podIP: {ip}\n  conditions: [{{type: Ready, status: '{r}'}}]\n---\n",
        e = n % shape.endpoints,
        ns = ns_of(s),
        ip = pod_ip(n),
        r = if ready { "True" } else { "False" },
    )
}

/// The pod whose readiness flips: the last service's first endpoint.
fn changing_pod(shape: &Shape) -> usize {
    (shape.services - 1) * shape.endpoints
}

fn target_cluster(shape: &Shape) -> String {
    let s = shape.services - 1;
    format!("outbound|{PORT}||svc-{s}.{}.svc.{DOMAIN}", ns_of(s))
}

/// Writes the mesh: one file of services and pods per namespace, and the changing pod
/// alone in `changing.yaml`.
fn write_manifests(dir: &Path, shape: &Shape) -> std::io::Result<PathBuf> {
    let root = dir.join("cluster1");
    std::fs::create_dir_all(&root)?;
    std::fs::write(
        dir.join("mesh.yaml"),
        "clusters:\n- name: cluster1\n  network: network1\n  source: {manifests: cluster1}\n",
    )?;
    let mut files = vec![String::new(); NAMESPACES];
    let changing = changing_pod(shape);
    for s in 0..shape.services {
        let f = &mut files[s % NAMESPACES];
        f.push_str(&service_yaml(s));
        for e in 0..shape.endpoints {
            let n = s * shape.endpoints + e;
            if n != changing {
                f.push_str(&pod_yaml(shape, n, true));
            }
        }
    }
    for (i, f) in files.iter().enumerate() {
        std::fs::write(root.join(format!("ns-{i}.yaml")), f)?;
    }
    let path = root.join("changing.yaml");
    std::fs::write(&path, pod_yaml(shape, changing, true))?;
    Ok(path)
}

/// The node Istio's agent would send for proxy `i` (pod `i` of the mesh, or a pod
/// outside any service beyond them).
fn node(shape: &Shape, i: usize) -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let st = |fields: Vec<(&str, Value)>| Value {
        kind: Some(Kind::StructValue(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })),
    };
    let pods = shape.services * shape.endpoints;
    let (app, ns, ip, pod) = if i < pods {
        let svc = i / shape.endpoints;
        (
            format!("svc-{svc}"),
            ns_of(svc),
            pod_ip(i),
            format!("svc-{svc}-{}", i % shape.endpoints),
        )
    } else {
        let ns = ns_of(i);
        (
            "client".to_string(),
            ns,
            // Beyond the pods, still in the lab range (198.19.200.0 and up).
            format!("198.19.{}.{}", 200 + i / 250 % 50, i % 250 + 1),
            format!("client-{i}"),
        )
    };
    let fields = vec![
        ("CLUSTER_ID", s("cluster1")),
        ("NETWORK", s("network1")),
        ("NAMESPACE", s(&ns)),
        ("SERVICE_ACCOUNT", s(&app)),
        ("MESH_ID", s(DOMAIN)),
        ("ISTIO_VERSION", s("1.24.0")),
        ("INTERCEPTION_MODE", s("REDIRECT")),
        ("WORKLOAD_NAME", s(&app)),
        ("NAME", s(&pod)),
        ("INSTANCE_IPS", s(&ip)),
        ("ENVOY_STATUS_PORT", s("15021")),
        ("ENVOY_PROMETHEUS_PORT", s("15090")),
        ("APP_CONTAINERS", s("app")),
        (
            "POD_PORTS",
            s(&format!(
                "[{{\"name\":\"http\",\"containerPort\":{PORT},\"protocol\":\"TCP\"}}]"
            )),
        ),
        (
            "OWNER",
            s(&format!(
                "kubernetes://apis/apps/v1/namespaces/{ns}/deployments/{app}"
            )),
        ),
        (
            "LABELS",
            st(vec![
                ("app", s(&app)),
                ("version", s("v1")),
                ("pod-template-hash", s("5d8f7c9b4")),
                ("security.istio.io/tlsMode", s("istio")),
                ("service.istio.io/canonical-name", s(&app)),
                ("service.istio.io/canonical-revision", s("v1")),
            ]),
        ),
        (
            "PROXY_CONFIG",
            st(vec![
                ("discoveryAddress", s("istiod.istio-system.svc:15012")),
                ("drainDuration", s("45s")),
                (
                    "statNameLength",
                    Value {
                        kind: Some(Kind::NumberValue(189.0)),
                    },
                ),
            ]),
        ),
        (
            "PILOT_SAN",
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![s("istiod.istio-system.svc")],
                })),
            },
        ),
    ];
    Node {
        id: format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.{DOMAIN}"),
        cluster: format!("{app}.{ns}"),
        metadata: Some(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------
// The control plane as a child process

/// `isthmus discovery`, killed when dropped.
pub(crate) struct ControlPlane {
    pub(crate) child: Child,
    pub(crate) grpc: SocketAddr,
    pub(crate) debug: SocketAddr,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of a process.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime (fields 14 and 15) are the 12th and 13th after the command name,
    // in clock ticks (USER_HZ, 100 on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time of the process's live threads, in seconds, to the nanosecond
/// (`/proc/PID/task/*/schedstat`): for short intervals, where clock ticks are too coarse.
fn cpu_precise(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// The process's thread count.
fn threads(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    Some(String::from_utf8_lossy(&buf).to_string())
}

async fn start_control_plane(dir: &Path, opts: &Options) -> Result<ControlPlane, String> {
    // The control plane binds port 0 and says which ports it got: no port is chosen
    // here and then taken by someone else before it binds.
    let address_file = dir.join("discovery.addresses");
    let _ = std::fs::remove_file(&address_file);
    let log = std::fs::File::create(dir.join("discovery.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&opts.binary);
    cmd.arg("discovery")
        .arg("--mesh")
        .arg(dir.join("mesh.yaml"))
        .args([
            "--grpc-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
        ])
        .args(["--secure-grpc-address", "off"])
        .arg("--address-file")
        .arg(&address_file)
        .args(&opts.discovery_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd.env("NO_COLOR", "1");
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", opts.binary.display()))?;
    let mut cp = ControlPlane {
        child,
        grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
        debug: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = cp.child.try_wait() {
            return Err(format!(
                "the control plane exited ({status}); see {}",
                dir.join("discovery.log").display()
            ));
        }
        if cp.debug.port() == 0
            && let Some(bound) = BoundAddresses::read(&address_file)
        {
            (cp.grpc, cp.debug) = (bound.grpc, bound.debug);
        }
        if cp.debug.port() != 0
            && let Some(r) = http_get(cp.debug, "/ready").await
            && r.starts_with("HTTP/1.1 200")
        {
            return Ok(cp);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = cp.child.kill();
    Err("the control plane was not ready within 60 s".into())
}

fn spawn_proxy(
    set: &mut JoinSet<()>,
    shape: &Shape,
    addr: SocketAddr,
    i: usize,
    target: &Arc<str>,
    events: &mpsc::UnboundedSender<Event>,
) -> tokio::task::AbortHandle {
    let sim = Sim::new(i, target.clone(), events.clone());
    let node = node(shape, i);
    if i.is_multiple_of(2) {
        set.spawn(sotw_proxy(addr, node, sim))
    } else {
        set.spawn(delta_proxy(addr, node, sim))
    }
}

// ---------------------------------------------------------------------------------
// Figures

/// Nearest-rank percentile.
pub(crate) fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let rank = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or_default()
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub(crate) fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn dist(v: &[Duration]) -> String {
    format!(
        "p50 {}  p99 {}  max {}",
        ms(pct(v, 0.5)),
        ms(pct(v, 0.99)),
        ms(v.iter().max().copied().unwrap_or_default())
    )
}

fn count_reasons(reasons: &BTreeMap<usize, String>) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons.values() {
        *by.entry(r.as_str()).or_default() += 1;
    }
    by.iter()
        .map(|(r, n)| format!("{n}× {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs the simulation; returns its report.
pub async fn run(shape: &Shape, opts: &Options) -> String {
    match run_inner(shape, opts).await {
        Ok(s) | Err(s) => s,
    }
}

async fn run_inner(shape: &Shape, opts: &Options) -> Result<String, String> {
    if shape.services == 0 || shape.endpoints == 0 {
        return Err("the bench needs at least one service with one endpoint\n".into());
    }
    let tmp = tempfile_dir("xds")?;
    let dir = tmp.path().to_path_buf();
    let changing =
        write_manifests(&dir, shape).map_err(|e| format!("cannot write the manifests: {e}\n"))?;
    let mut out = String::new();
    let sotw = shape.proxies.div_ceil(2);
    let _ = writeln!(
        out,
        "xds bench: {} proxies ({sotw} SotW, {} Delta), {} services × {} endpoints in {NAMESPACES} namespaces; CDS, LDS, EDS, RDS",
        shape.proxies,
        shape.proxies - sotw,
        shape.services,
        shape.endpoints
    );
    let cp = start_control_plane(&dir, opts).await?;
    let pid = cp.child.id().to_string();
    let _ = writeln!(
        out,
        "  control plane: `isthmus discovery{}{}` (pid {pid}) on {}",
        if opts.discovery_args.is_empty() {
            ""
        } else {
            " "
        },
        opts.discovery_args.join(" "),
        dir.display()
    );
    let (rss_idle, _) = process_memory(&pid);
    let cpu_start = cpu_seconds(&pid);
    let me_start = cpu_seconds("self");
    let target: Arc<str> = target_cluster(shape).into();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut set = JoinSet::new();

    // 1. Every proxy connects at once.
    let t0 = Instant::now();
    for i in 0..shape.proxies {
        spawn_proxy(&mut set, shape, cp.grpc, i, &target, &ev_tx);
    }
    let mut first = Vec::new();
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    let mut configured = vec![false; shape.proxies];
    let mut config = ([0; 4], 0);
    let deadline = t0 + Duration::from_secs(180);
    while first.len() + failed.len() < shape.proxies {
        match tokio::time::timeout_at(deadline.into(), ev_rx.recv()).await {
            Ok(Some(Event::Configured {
                proxy,
                elapsed,
                counts,
                bytes,
            })) => {
                configured[proxy] = true;
                first.push(elapsed);
                config = (counts, bytes);
            }
            Ok(Some(Event::Failed { proxy, reason })) => {
                failed.insert(proxy, reason);
            }
            Ok(Some(Event::Response { .. })) => {}
            _ => break,
        }
    }
    let connect_wall = t0.elapsed();
    let cpu_connect = cpu_seconds(&pid) - cpu_start;
    let (rss_connected, hwm_connect) = process_memory(&pid);
    let threads_connected = threads(&pid);
    let _ = writeln!(
        out,
        "  config per proxy: {} clusters, {} endpoint assignments, {} listeners, {} routes ({:.2} MB encoded)",
        config.0[0],
        config.0[1],
        config.0[2],
        config.0[3],
        config.1 as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "  all connecting at once       {} of {} configured in {}; per proxy {}; control plane CPU {:.2} s",
        first.len(),
        shape.proxies,
        ms(connect_wall),
        dist(&first),
        cpu_connect
    );
    if !failed.is_empty() {
        let _ = writeln!(out, "    failed: {}", count_reasons(&failed));
    }
    let unfinished = shape.proxies - first.len() - failed.len();
    if unfinished > 0 {
        let _ = writeln!(
            out,
            "    {unfinished} proxies neither configured nor failed within 180 s"
        );
    }

    // 2. New proxies, one at a time, while the others stay connected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut new = Vec::new();
    let cpu_new0 = cpu_seconds(&pid);
    for k in 0..shape.new_proxies {
        let i = shape.proxies + k;
        let handle = spawn_proxy(&mut set, shape, cp.grpc, i, &target, &ev_tx);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline.into(), ev_rx.recv()).await {
                Ok(Some(Event::Configured { proxy, elapsed, .. })) if proxy == i => {
                    new.push(elapsed);
                    break;
                }
                Ok(Some(Event::Failed { proxy, reason })) => {
                    if proxy == i {
                        let _ = writeln!(out, "    new proxy {i} failed: {reason}");
                        break;
                    }
                    failed.insert(proxy, reason);
                }
                Ok(Some(_)) => {}
                _ => {
                    let _ = writeln!(out, "    new proxy {i} not configured within 30 s");
                    break;
                }
            }
        }
        handle.abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_new = cpu_seconds(&pid) - cpu_new0;
    let _ = writeln!(
        out,
        "  first full config, new proxy {} ({} proxies, one at a time, {} connected; control plane CPU {:.1} ms each)   target < 50 ms",
        dist(&new),
        new.len(),
        first.len(),
        cpu_new * 1e3 / new.len().max(1) as f64
    );

    // 3. Push convergence: one endpoint's readiness flips.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while ev_rx.try_recv().is_ok() {}
    let expected: Vec<usize> = (0..shape.proxies)
        .filter(|p| configured[*p] && !failed.contains_key(p))
        .collect();
    let mut all = Vec::new();
    let mut slowest = Vec::new();
    let mut fastest = Vec::new();
    let mut cpu_pushes = Vec::new();
    let mut cpu_pushes_clients = Vec::new();
    let mut responses = [0u64; 5];
    let mut pushed_resources = 0u64;
    let mut removed_names = 0u64;
    let mut extra = 0u64;
    let mut incomplete = 0usize;
    for round in 0..shape.pushes {
        let cpu0 = cpu_precise(&pid);
        let me0 = cpu_precise("self");
        let t = Instant::now();
        // Written whole and renamed into place, as an editor or a sync tool would, so
        // the watch never reads a half-written file.
        let tmp = changing.with_file_name(".changing.yaml.tmp");
        std::fs::write(&tmp, pod_yaml(shape, changing_pod(shape), round % 2 == 1))
            .and_then(|()| std::fs::rename(&tmp, &changing))
            .map_err(|e| format!("cannot rewrite {}: {e}", changing.display()))?;
        let mut got: HashMap<usize, Duration> = HashMap::new();
        let deadline = t + Duration::from_secs(10);
        while got.len() < expected.len() {
            match tokio::time::timeout_at(deadline.into(), ev_rx.recv()).await {
                Ok(Some(Event::Response {
                    proxy,
                    type_index,
                    resources,
                    removed,
                    target,
                    at,
                })) => {
                    responses[type_index.min(4)] += 1;
                    pushed_resources += resources as u64;
                    removed_names += removed as u64;
                    if target && type_index == 1 {
                        got.entry(proxy).or_insert(at.duration_since(t));
                    } else {
                        extra += 1;
                    }
                }
                Ok(Some(Event::Failed { proxy, reason })) => {
                    failed.insert(proxy, reason);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        if got.len() < expected.len() {
            incomplete += 1;
        }
        // Anything else sent for this change arrives in the next 300 ms.
        let settle = Instant::now() + Duration::from_millis(300);
        while let Ok(Some(e)) = tokio::time::timeout_at(settle.into(), ev_rx.recv()).await {
            if let Event::Response {
                type_index,
                resources,
                removed,
                ..
            } = e
            {
                responses[type_index.min(4)] += 1;
                pushed_resources += resources as u64;
                removed_names += removed as u64;
                extra += 1;
            }
        }
        cpu_pushes.push(Duration::from_secs_f64((cpu_precise(&pid) - cpu0).max(0.0)));
        cpu_pushes_clients.push(Duration::from_secs_f64(
            (cpu_precise("self") - me0).max(0.0),
        ));
        slowest.push(got.values().max().copied().unwrap_or_default());
        fastest.push(got.values().min().copied().unwrap_or_default());
        all.extend(got.into_values());
    }
    let _ = writeln!(
        out,
        "  push convergence             {}  (file written → proxy ACKed; {} pushes × {} proxies; per push: first proxy p50 {}, slowest p50 {}){}   target p99 < 100 ms",
        dist(&all),
        shape.pushes,
        expected.len(),
        ms(pct(&fastest, 0.5)),
        ms(pct(&slowest, 0.5)),
        if incomplete > 0 {
            format!("; {incomplete} pushes did not reach every proxy within 10 s")
        } else {
            String::new()
        }
    );
    let per_push = |n: u64| n as f64 / shape.pushes.max(1) as f64;
    let _ = writeln!(
        out,
        "    per push: {:.0} EDS responses, {:.1} resources each, {:.0} removals; other responses: CDS {:.0}, LDS {:.0}, RDS {:.0}; responses without the change {:.0}",
        per_push(responses[1]),
        pushed_resources as f64 / responses.iter().sum::<u64>().max(1) as f64,
        per_push(removed_names),
        per_push(responses[0]),
        per_push(responses[2]),
        per_push(responses[3]),
        per_push(extra),
    );
    let _ = writeln!(
        out,
        "    CPU per push (a round: the change, then 300 ms): control plane p50 {}, simulated proxies p50 {} (both on the same cores)",
        ms(pct(&cpu_pushes, 0.5)),
        ms(pct(&cpu_pushes_clients, 0.5)),
    );
    let (rss_end, hwm) = process_memory(&pid);
    let cpu_total = cpu_seconds(&pid) - cpu_start;
    let _ = writeln!(
        out,
        "  control plane memory         {} before proxies, {} with {} connected ({} threads), {} at the end; peak {} (peak while all connected at once {})   target < 200 MB",
        mb(rss_idle),
        mb(rss_connected),
        first.len(),
        threads_connected,
        mb(rss_end),
        mb(hwm.max(hwm_connect)),
        mb(hwm_connect)
    );
    let _ = writeln!(
        out,
        "  control plane CPU            {cpu_total:.2} s in all (after start-up)"
    );
    let (me_rss, me_hwm) = memory();
    let _ = writeln!(
        out,
        "  simulated proxies (this process): CPU {:.2} s, resident {}, peak {}",
        cpu_seconds("self") - me_start,
        mb(me_rss),
        mb(me_hwm)
    );
    set.abort_all();
    drop(cp);
    if let Ok(log) = std::fs::read_to_string(dir.join("discovery.log")) {
        // The control plane's own account of the timed pushes (the last ones it logged).
        let field = |line: &str, name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| Duration::from_secs_f64(v / 1e3))
        };
        let pushes: Vec<&str> = log.lines().filter(|l| l.contains(" push: ")).collect();
        let timed = &pushes[pushes.len().saturating_sub(shape.pushes)..];
        let get =
            |name: &str| -> Vec<Duration> { timed.iter().filter_map(|l| field(l, name)).collect() };
        if !timed.is_empty() {
            let _ = writeln!(
                out,
                "    in the control plane (its log): registry change → every proxy sent p50 {} p99 {} (debounce included); generating configs p50 {} (summed over threads)",
                ms(pct(&get("total_ms="), 0.5)),
                ms(pct(&get("total_ms="), 0.99)),
                ms(pct(&get("generation_ms="), 0.5)),
            );
        }
        if let Some(last) = log.lines().rev().find(|l| l.contains("push:")) {
            let _ = writeln!(
                out,
                "  last push, as the control plane logged it: {}",
                last.trim()
            );
        }
        let errors = log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .count();
        if errors > 0 {
            let _ = writeln!(out, "  control plane log: {errors} warnings or errors");
        }
    }
    if opts.keep {
        let kept = tmp.keep();
        let _ = writeln!(out, "  kept: {} (discovery.log)", kept.display());
    }
    Ok(out)
}

/// A temporary directory, removed when dropped unless kept.
pub(crate) struct TempDir(Option<PathBuf>);

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("."))
    }
    pub(crate) fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

pub(crate) fn tempfile_dir(bench: &str) -> Result<TempDir, String> {
    let base = std::env::temp_dir();
    for n in 0..100u32 {
        let p = base.join(format!("isthmus-bench-{bench}-{}-{n}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(TempDir(Some(p)));
        }
    }
    Err(format!("cannot create a directory in {}", base.display()))
}
