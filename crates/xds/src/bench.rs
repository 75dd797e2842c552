//! `isthmus bench xds`: simulated proxies (half State-of-the-World, half Delta, with
//! sidecar metadata) against an in-process ADS server on loopback. Measures the time to
//! a proxy's first full config (CDS, then EDS for every cluster) and push convergence
//! (one endpoint changes → every proxy has the update and has ACKed it), with the
//! process's CPU time and memory. Prints figures; asserts nothing.
//!
//! What is generated today is clusters and endpoints; listeners and routes are not yet
//! part of the figures.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use isthmus_model::{ClusterId, MeshConfig, Object};
use isthmus_registry::{ObjectChange, Registry};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::generate::IstioGenerator;
use crate::resources::{CLUSTER, ENDPOINT};
use crate::server::DiscoveryServer;

/// The size of the simulation.
#[derive(Clone, Debug)]
pub struct Shape {
    pub proxies: usize,
    pub services: usize,
    /// Endpoints per service.
    pub endpoints: usize,
}

const NAMESPACES: usize = 10;

fn pod(s: usize, e: usize, ready: bool) -> Object {
    let app = format!("svc-{s}");
    let ns = format!("ns-{}", s % NAMESPACES);
    let n = s * 16 + e;
    Object::Pod(Pod {
        metadata: ObjectMeta {
            name: Some(format!("{app}-{e}")),
            namespace: Some(ns),
            labels: Some([("app".to_string(), app)].into()),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            pod_ip: Some(format!("198.18.{}.{}", n / 250, n % 250 + 1)),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    })
}

fn objects(shape: &Shape) -> Vec<ObjectChange> {
    let mut out = Vec::new();
    for s in 0..shape.services {
        let app = format!("svc-{s}");
        out.push(Object::Service(Service {
            metadata: ObjectMeta {
                name: Some(app.clone()),
                namespace: Some(format!("ns-{}", s % NAMESPACES)),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), app)].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 8080,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }));
        for e in 0..shape.endpoints {
            out.push(pod(s, e, true));
        }
    }
    out.into_iter()
        .map(|o| ObjectChange::Upsert(Arc::new(o)))
        .collect()
}

fn node(i: usize) -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let ns = format!("ns-{}", i % NAMESPACES);
    Node {
        id: format!(
            "sidecar~198.19.{}.{}~client-{i}.{ns}~{ns}.svc.cluster.local",
            i / 250,
            i % 250 + 1
        ),
        metadata: Some(Struct {
            fields: HashMap::from([
                ("CLUSTER_ID".to_string(), s("cluster1")),
                ("NETWORK".to_string(), s("network1")),
                ("NAMESPACE".to_string(), s(&ns)),
                ("SERVICE_ACCOUNT".to_string(), s("client")),
            ]),
        }),
        ..Default::default()
    }
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Events a simulated proxy reports.
enum Report {
    FirstConfig(Duration),
    Updated(Instant),
}

async fn sotw_proxy(addr: String, i: usize, reports: mpsc::UnboundedSender<Report>) -> Option<()> {
    let started = Instant::now();
    let mut client = AggregatedDiscoveryServiceClient::connect(addr).await.ok()?;
    let (tx, rx) = mpsc::channel(8);
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .ok()?
        .into_inner();
    let req = |t: &str, names: Vec<String>, v: &str, n: &str| DiscoveryRequest {
        node: Some(node(i)),
        type_url: t.into(),
        resource_names: names,
        version_info: v.into(),
        response_nonce: n.into(),
        ..Default::default()
    };
    tx.send(req(CLUSTER, vec![], "", "")).await.ok()?;
    let cds = stream.message().await.ok()??;
    let names: Vec<String> = cds
        .resources
        .iter()
        .filter_map(|a| {
            use prost::Message;
            let c =
                envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(a.value.as_slice())
                    .ok()?;
            c.name.starts_with("outbound").then_some(c.name)
        })
        .collect();
    tx.send(req(CLUSTER, vec![], &cds.version_info, &cds.nonce))
        .await
        .ok()?;
    tx.send(req(ENDPOINT, names.clone(), "", "")).await.ok()?;
    let eds = stream.message().await.ok()??;
    tx.send(req(ENDPOINT, names.clone(), &eds.version_info, &eds.nonce))
        .await
        .ok()?;
    let _ = reports.send(Report::FirstConfig(started.elapsed()));
    while let Ok(Some(resp)) = stream.message().await {
        tx.send(req(
            &resp.type_url.clone(),
            if resp.type_url == ENDPOINT {
                names.clone()
            } else {
                vec![]
            },
            &resp.version_info,
            &resp.nonce,
        ))
        .await
        .ok()?;
        let _ = reports.send(Report::Updated(Instant::now()));
    }
    Some(())
}

async fn delta_proxy(addr: String, i: usize, reports: mpsc::UnboundedSender<Report>) -> Option<()> {
    let started = Instant::now();
    let mut client = AggregatedDiscoveryServiceClient::connect(addr).await.ok()?;
    let (tx, rx) = mpsc::channel(8);
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .ok()?
        .into_inner();
    let req = |t: &str, sub: Vec<String>, n: &str| DeltaDiscoveryRequest {
        node: Some(node(i)),
        type_url: t.into(),
        resource_names_subscribe: sub,
        response_nonce: n.into(),
        ..Default::default()
    };
    tx.send(req(CLUSTER, vec![], "")).await.ok()?;
    let cds = stream.message().await.ok()??;
    let names: Vec<String> = cds
        .resources
        .iter()
        .map(|r| r.name.clone())
        .filter(|n| n.starts_with("outbound"))
        .collect();
    tx.send(req(CLUSTER, vec![], &cds.nonce)).await.ok()?;
    tx.send(req(ENDPOINT, names, "")).await.ok()?;
    let eds = stream.message().await.ok()??;
    tx.send(req(ENDPOINT, vec![], &eds.nonce)).await.ok()?;
    let _ = reports.send(Report::FirstConfig(started.elapsed()));
    while let Ok(Some(resp)) = stream.message().await {
        tx.send(req(&resp.type_url.clone(), vec![], &resp.nonce))
            .await
            .ok()?;
        let _ = reports.send(Report::Updated(Instant::now()));
    }
    Some(())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Runs the simulation; returns its report.
pub async fn run(shape: &Shape) -> String {
    let mesh = match MeshConfig::parse(
        std::path::Path::new("bench"),
        "clusters:\n- name: cluster1\n  network: network1\n  source: {manifests: .}\n",
        &std::env::temp_dir(),
    ) {
        Ok(m) => m,
        Err(e) => return format!("cannot build the bench mesh: {e}\n"),
    };
    let cluster = ClusterId::new("cluster1");
    let mut registry = Registry::new(&mesh);
    registry.apply(&cluster, objects(shape));
    let (snap_tx, snap_rx) = watch::channel(registry.snapshot());
    let server = DiscoveryServer::new(snap_rx, Arc::new(IstioGenerator::new(&mesh.domain_suffix)));
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return format!("cannot listen on loopback: {e}\n"),
    };
    let addr = format!(
        "http://{}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    let svc = server.service();
    let serving = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    let (rep_tx, mut rep_rx) = mpsc::unbounded_channel();
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let mut clients = Vec::new();
    for i in 0..shape.proxies {
        let (a, r) = (addr.clone(), rep_tx.clone());
        clients.push(if i % 2 == 0 {
            tokio::spawn(async move {
                sotw_proxy(a, i, r).await;
            })
        } else {
            tokio::spawn(async move {
                delta_proxy(a, i, r).await;
            })
        });
    }
    let mut first = Vec::new();
    while first.len() < shape.proxies {
        match tokio::time::timeout(Duration::from_secs(120), rep_rx.recv()).await {
            Ok(Some(Report::FirstConfig(d))) => first.push(d),
            Ok(Some(Report::Updated(_))) => {}
            _ => break,
        }
    }
    let connect_wall = wall0.elapsed();
    let cpu_connect = cpu_seconds() - cpu0;
    let (rss_connected, _) = isthmus_registry::bench::memory();

    // One endpoint goes unready: every proxy sees svc-0's cluster change.
    let mut rounds = Vec::new();
    for round in 0..5 {
        let t = Instant::now();
        let event = registry.apply(
            &cluster,
            vec![ObjectChange::Upsert(Arc::new(pod(0, 0, round % 2 == 1)))],
        );
        if event.is_empty() {
            continue;
        }
        snap_tx.send_replace(registry.snapshot());
        let mut got = Vec::new();
        while got.len() < first.len() {
            match tokio::time::timeout(Duration::from_secs(60), rep_rx.recv()).await {
                Ok(Some(Report::Updated(at))) => got.push(at.duration_since(t)),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        rounds.push(got);
    }
    let cpu_total = cpu_seconds() - cpu0;
    let (rss, peak) = isthmus_registry::bench::memory();
    serving.abort();
    for c in clients {
        c.abort();
    }

    let mut all: Vec<Duration> = rounds.iter().flatten().copied().collect();
    let mut last: Vec<Duration> = rounds
        .iter()
        .filter_map(|r| r.iter().max().copied())
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "xds bench: {} proxies (half SotW, half Delta), {} services × {} endpoints; clusters and endpoints",
        shape.proxies, shape.services, shape.endpoints
    );
    let _ = writeln!(
        out,
        "  proxies fully configured   {} of {}",
        first.len(),
        shape.proxies
    );
    let _ = writeln!(
        out,
        "  first full config          p50 {}  p99 {}   (target < 50 ms per proxy; all connecting at once)",
        ms(pct(&mut first, 0.5)),
        ms(pct(&mut first, 0.99))
    );
    let _ = writeln!(
        out,
        "  all connected and synced   {}  (CPU {:.2} s)",
        ms(connect_wall),
        cpu_connect
    );
    let _ = writeln!(
        out,
        "  push convergence           p50 {}  p99 {}  slowest proxy per push p50 {}   (target p99 < 100 ms; {} pushes)",
        ms(pct(&mut all, 0.5)),
        ms(pct(&mut all, 0.99)),
        ms(pct(&mut last, 0.5)),
        rounds.len()
    );
    let _ = writeln!(
        out,
        "  process resident           {:.1} MB after connecting, {:.1} MB at the end, peak {:.1} MB (target < 200 MB; the simulated proxies run in this process too)",
        rss_connected as f64 / 1e6,
        rss as f64 / 1e6,
        peak as f64 / 1e6
    );
    let _ = writeln!(out, "  CPU, whole run             {cpu_total:.2} s");
    out
}
