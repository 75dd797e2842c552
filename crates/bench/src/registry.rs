//! `isthmus bench registry`: builds the registry for synthetic clusters shaped like
//! Istio's multicluster scale test (per cluster: services, pods, one EndpointSlice per
//! service), then times single endpoint changes. Prints figures; asserts nothing.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isthmus_model::{ClusterId, MeshConfig, Object};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, LoadBalancerIngress, LoadBalancerStatus, Namespace, Node, Pod,
    PodCondition, PodIP, PodSpec, PodStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use isthmus_registry::{ObjectChange, Registry};

use crate::memory::memory;

/// The size of the synthetic mesh.
#[derive(Clone, Debug)]
pub struct Shape {
    pub clusters: usize,
    /// Services per cluster.
    pub services: usize,
    /// Endpoints (pods) per cluster.
    pub endpoints: usize,
    /// Single-endpoint changes to time.
    pub changes: usize,
}

const NAMESPACES: usize = 10;
const NODES: usize = 10;

fn meta(name: &str, ns: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(String::from),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    }
}

fn pod_ip(cluster: usize, pod: usize) -> Ipv4Addr {
    // 198.18.0.0/15 holds 131,072 addresses: 8,192 per cluster for 16 clusters.
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    Ipv4Addr::from(base + (cluster as u32 % 16) * 8192 + 10 + pod as u32 % 8000)
}

fn slice(svc: &str, ns: &str, pods: &[(String, Ipv4Addr)], first_ready: bool) -> EndpointSlice {
    EndpointSlice {
        metadata: meta(
            &format!("{svc}-abcde"),
            Some(ns),
            &[("kubernetes.io/service-name", svc)],
        ),
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
        endpoints: pods
            .iter()
            .enumerate()
            .map(|(i, (name, ip))| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(i != 0 || first_ready),
                    ..Default::default()
                }),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(name.clone()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
    }
}

/// One cluster's objects, in batches.
fn cluster_objects(c: usize, shape: &Shape) -> impl Iterator<Item = Vec<ObjectChange>> {
    let mut out: Vec<Object> = Vec::new();
    let network = format!("network{}", c % 2 + 1);
    out.push(Object::Namespace(Namespace {
        metadata: meta(
            "istio-system",
            None,
            &[("topology.istio.io/network", &network)],
        ),
        ..Default::default()
    }));
    for n in 0..NODES {
        let zone = format!("zone-{}", n % 3);
        out.push(Object::Node(Node {
            metadata: meta(
                &format!("node-{n}"),
                None,
                &[
                    ("topology.kubernetes.io/region", "region-1"),
                    ("topology.kubernetes.io/zone", &zone),
                ],
            ),
            ..Default::default()
        }));
    }
    out.push(Object::Service(Service {
        metadata: meta(
            "istio-eastwestgateway",
            Some("istio-system"),
            &[("topology.istio.io/network", &network)],
        ),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("tls".into()),
                port: 15443,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(format!("203.0.113.{}", c % 250 + 1)),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }),
    }));
    let base = to_changes(out);
    let shape = shape.clone();
    // Then one batch per service, as an informer streams them: its pods, the Service,
    // its EndpointSlice. Batches are made one at a time, so the synthetic input's own
    // memory stays small.
    std::iter::once(base).chain((0..shape.services).map(move |s| service_batch(c, s, &shape)))
}

/// One service of one cluster: its pods, the Service and its EndpointSlice.
fn service_batch(c: usize, s: usize, shape: &Shape) -> Vec<ObjectChange> {
    let mut out: Vec<Object> = Vec::new();
    let ns = format!("ns-{}", s % NAMESPACES);
    let app = format!("svc-{s}");
    let mut pods = Vec::new();
    for p in (s..shape.endpoints).step_by(shape.services.max(1)) {
        let version = if p % 2 == 0 { "v1" } else { "v2" };
        let name = format!("{app}-{version}-7d9c8f6b5-{p:05}");
        let ip = pod_ip(c, p);
        out.push(Object::Pod(Pod {
            metadata: meta(
                &name,
                Some(&ns),
                &[
                    ("app", &app),
                    ("version", version),
                    ("pod-template-hash", "7d9c8f6b5"),
                ],
            ),
            spec: Some(PodSpec {
                service_account_name: Some(app.clone()),
                node_name: Some(format!("node-{}", p % NODES)),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("registry.example/app:1.0".into()),
                    ports: Some(vec![ContainerPort {
                        container_port: 8080,
                        name: Some("http".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.to_string()),
                pod_ips: Some(vec![PodIP { ip: ip.to_string() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }));
        pods.push((name, ip));
    }
    out.push(Object::Service(Service {
        metadata: meta(&app, Some(&ns), &[("app", &app)]),
        spec: Some(ServiceSpec {
            cluster_ip: Some(format!("198.19.{}.{}", 128 + c % 100, s % 250 + 1)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 8080,
                ..Default::default()
            }]),
            selector: Some(BTreeMap::from([("app".to_string(), app.clone())])),
            ..Default::default()
        }),
        status: None,
    }));
    out.push(Object::EndpointSlice(slice(&app, &ns, &pods, true)));
    to_changes(out)
}

fn to_changes(objects: Vec<Object>) -> Vec<ObjectChange> {
    objects
        .into_iter()
        .map(|o| ObjectChange::Upsert(Arc::new(o)))
        .collect()
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Runs the benchmark and returns its report.
/// `allocated` reports the bytes the allocator has handed out, where it can tell.
pub fn run(shape: &Shape, allocated: &dyn Fn() -> Option<u64>) -> String {
    let mut yaml = String::from("clusters:\n");
    for c in 0..shape.clusters {
        let _ = writeln!(
            yaml,
            "- name: cluster{c}\n  network: network{}\n  source: {{manifests: .}}",
            c % 2 + 1
        );
    }
    let mesh = match MeshConfig::parse(std::path::Path::new("bench"), &yaml, &std::env::temp_dir())
    {
        Ok(m) => m,
        Err(e) => return format!("cannot build the bench mesh: {e}\n"),
    };
    let (rss_start, _) = memory();
    let alloc_start = allocated();
    let mut registry = Registry::new(&mesh);
    let mut build = Duration::ZERO;
    for c in 0..shape.clusters {
        let id = ClusterId::new(&format!("cluster{c}"));
        for batch in cluster_objects(c, shape) {
            let t = Instant::now();
            registry.apply(&id, batch);
            build += t.elapsed();
        }
    }
    let alloc_built = allocated();
    let (rss_built, peak) = memory();
    let snap = registry.snapshot();
    let endpoints: usize = snap.services.values().map(|s| s.endpoints().count()).sum();
    let services = snap.services.len();

    // One endpoint changes readiness in cluster0's first service, back and forth.
    let ns = "ns-0";
    let pods: Vec<(String, Ipv4Addr)> = (0..shape.endpoints)
        .filter(|p| p % shape.services == 0)
        .map(|p| {
            (
                format!(
                    "svc-0-{}-7d9c8f6b5-{p:05}",
                    if p % 2 == 0 { "v1" } else { "v2" }
                ),
                pod_ip(0, p),
            )
        })
        .collect();
    let versions = [
        Arc::new(Object::EndpointSlice(slice("svc-0", ns, &pods, false))),
        Arc::new(Object::EndpointSlice(slice("svc-0", ns, &pods, true))),
    ];
    let cluster0 = ClusterId::new("cluster0");
    let mut samples = Vec::with_capacity(shape.changes);
    let mut events = 0usize;
    for i in 0..shape.changes {
        let change = vec![ObjectChange::Upsert(versions[i % 2].clone())];
        let t = Instant::now();
        let event = registry.apply(&cluster0, change);
        samples.push(t.elapsed());
        events += usize::from(event.services.len() == 1);
    }
    samples.sort();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    // Live bytes the registry holds when the allocator can tell; resident growth otherwise.
    let registry_bytes = match (alloc_start, alloc_built) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => rss_built.saturating_sub(rss_start),
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "registry bench: {} clusters × {} services × {} endpoints",
        shape.clusters, shape.services, shape.endpoints
    );
    let _ = writeln!(out, "  services (by hostname)   {services}");
    let _ = writeln!(out, "  endpoints                {endpoints}");
    let _ = writeln!(out, "  gateways                 {}", snap.gateways.len());
    let _ = writeln!(
        out,
        "  build time               {:.0} ms   (target < 1000 ms)",
        build.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        out,
        "  resident, whole process  {}   (target < 100 MB; peak {})",
        mb(rss_built),
        mb(peak)
    );
    let _ = writeln!(
        out,
        "  registry heap            {}   ({})",
        mb(registry_bytes),
        if alloc_built.is_some() {
            "bytes allocated and still live after the build"
        } else {
            "resident growth from start to built"
        }
    );
    let _ = writeln!(
        out,
        "  bytes per endpoint       {}",
        registry_bytes / endpoints.max(1) as u64
    );
    let _ = writeln!(
        out,
        "  endpoint change          p50 {}  p99 {}  mean {}   (target < 50 µs; {} changes, {} emitted an event)",
        micros(pct(0.5)),
        micros(pct(0.99)),
        micros(mean),
        shape.changes,
        events
    );
    out
}
