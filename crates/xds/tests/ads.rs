//! The ADS protocol with a real gRPC client: State-of-the-World and Delta flows, ACK and
//! NACK, subscriptions, reconnects, and proxies with different views.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use isthmus_model::{ClusterId, MeshConfig};
use isthmus_registry::{ManifestSource, Registry, Snapshot};
use isthmus_xds::DiscoveryServer;
use isthmus_xds::discovery::endpoint_holders;
use isthmus_xds::generate::IstioGenerator;
use isthmus_xds::resources::{CLUSTER, ENDPOINT};
use isthmus_xds::server::PushOptions;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: private\n  namespace: team\n  annotations: {networking.istio.io/exportTo: '.'}\nspec:\n  ports: [{name: http, port: 80}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n";

fn pod(name: &str, version: &str, ip: &str, ready: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: bookinfo\n  labels: {{app: reviews, version: {version}}}\nstatus:\n  podIP: {ip}\n  conditions: [{{type: Ready, status: '{}'}}]\n",
        if ready { "True" } else { "False" }
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    source: ManifestSource,
    registry: Registry,
    tx: watch::Sender<Snapshot>,
    addr: SocketAddr,
    server: DiscoveryServer,
    _task: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_push(PushOptions::default()).await
    }

    async fn with_push(push: PushOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("c1")).unwrap();
        std::fs::write(
            dir.path().join("mesh.yaml"),
            "clusters:\n- name: c1\n  network: n1\n  source: {manifests: c1}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("c1/svc.yaml"), SVC).unwrap();
        std::fs::write(
            dir.path().join("c1/pods.yaml"),
            format!(
                "{}---\n{}",
                pod("r1", "v1", "198.18.0.1", true),
                pod("r2", "v2", "198.18.0.2", true)
            ),
        )
        .unwrap();
        let mesh = MeshConfig::load(&dir.path().join("mesh.yaml")).unwrap();
        let mut source =
            ManifestSource::new(ClusterId::new("c1"), dir.path().join("c1"), "cluster.local");
        let mut registry = Registry::new(&mesh);
        registry.apply(&ClusterId::new("c1"), source.rescan(&[]).unwrap());
        let (tx, rx) = watch::channel(registry.snapshot());
        let server =
            DiscoveryServer::with_options(rx, Arc::new(IstioGenerator::new("cluster.local")), push);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = server.service();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Self {
            dir,
            source,
            registry,
            tx,
            addr,
            server,
            _task: task,
        }
    }

    /// Rewrites the pods file and publishes the new snapshot.
    fn set_pods(&mut self, text: &str) {
        self.set_file("pods.yaml", text);
    }

    /// Writes a manifest file and publishes the new snapshot.
    fn set_file(&mut self, name: &str, text: &str) {
        let path = self.dir.path().join("c1").join(name);
        std::fs::write(&path, text).unwrap();
        let changes = self.source.rescan(&[path]).unwrap();
        self.registry.apply(&ClusterId::new("c1"), changes);
        self.tx.send_replace(self.registry.snapshot());
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }
}

fn node(ns: &str) -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let fields = HashMap::from([
        ("CLUSTER_ID".to_string(), s("c1")),
        ("NETWORK".to_string(), s("n1")),
        ("NAMESPACE".to_string(), s(ns)),
    ]);
    Node {
        id: format!("sidecar~198.18.0.9~client.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(f: &Fixture) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let rx = f
            .client()
            .await
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }
    async fn send(&self, r: DiscoveryRequest) {
        self.tx.send(r).await.unwrap();
    }
    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("a response within 5 s")
            .unwrap()
            .unwrap()
    }
    /// Waits a bounded time to show that nothing is sent.
    async fn nothing(&mut self) {
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), self.rx.message()).await {
            panic!(
                "expected nothing, got {:?}",
                m.map(|m| m.map(|m| (m.type_url, m.version_info)))
            );
        }
    }
    /// Accepts a response to a request for `names` of its type (as a proxy in `ns`),
    /// and shows that nothing follows.
    async fn ack(&mut self, ns: &str, names: &[&str], r: &DiscoveryResponse) {
        self.send(req(ns, &r.type_url, names, &r.version_info, &r.nonce))
            .await;
        self.nothing().await;
    }
}

fn req(ns: &str, type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node(ns)),
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| match a.type_url.as_str() {
            CLUSTER => {
                envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(a.value.as_slice())
                    .unwrap()
                    .name
            }
            _ => {
                ClusterLoadAssignment::decode(a.value.as_slice())
                    .unwrap()
                    .cluster_name
            }
        })
        .collect()
}

fn endpoint_count(r: &DiscoveryResponse) -> usize {
    r.resources
        .iter()
        .map(|a| {
            ClusterLoadAssignment::decode(a.value.as_slice())
                .unwrap()
                .endpoints
                .iter()
                .map(|l| l.lb_endpoints.len())
                .sum::<usize>()
        })
        .sum()
}

const REVIEWS: &str = "outbound|9080||reviews.bookinfo.svc.cluster.local";
const REVIEWS_V1: &str = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local";

#[tokio::test]
async fn sotw_ack_push_nack_and_reconnect() {
    let mut f = Fixture::new().await;
    let mut s = Sotw::open(&f).await;
    s.send(req("bookinfo", CLUSTER, &[], "", "")).await;
    let cds = s.recv().await;
    let cds_names = names(&cds);
    assert!(
        cds_names.contains(&REVIEWS.to_string()) && cds_names.contains(&REVIEWS_V1.to_string()),
        "{cds_names:?}"
    );
    assert!(cds_names.contains(&"PassthroughCluster".to_string()));
    assert!(
        !cds_names.iter().any(|n| n.contains("private.team")),
        "exportTo '.' hides it from bookinfo"
    );
    s.send(req("bookinfo", CLUSTER, &[], &cds.version_info, &cds.nonce))
        .await;
    s.send(req("bookinfo", ENDPOINT, &[REVIEWS, REVIEWS_V1], "", ""))
        .await;
    let eds = s.recv().await;
    assert_eq!(names(&eds), [REVIEWS_V1, REVIEWS], "in name order");
    assert_eq!(
        endpoint_count(&eds),
        3,
        "two pods in the service, one in subset v1"
    );
    s.send(req(
        "bookinfo",
        ENDPOINT,
        &[REVIEWS, REVIEWS_V1],
        &eds.version_info,
        &eds.nonce,
    ))
    .await;
    s.nothing().await;

    // An endpoint change: EDS is pushed, CDS is not.
    f.set_pods(&format!(
        "{}---\n{}---\n{}",
        pod("r1", "v1", "198.18.0.1", true),
        pod("r2", "v2", "198.18.0.2", true),
        pod("r3", "v1", "198.18.0.3", true)
    ));
    let eds2 = s.recv().await;
    assert_eq!(eds2.type_url, ENDPOINT);
    assert_eq!(endpoint_count(&eds2), 5);
    s.nothing().await;

    // NACK: recorded, nothing resent, the last accepted version stays.
    let mut nack = req(
        "bookinfo",
        ENDPOINT,
        &[REVIEWS, REVIEWS_V1],
        &eds.version_info,
        &eds2.nonce,
    );
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad endpoint".into(),
        details: vec![],
    });
    s.send(nack).await;
    s.nothing().await;
    let st = f.server.statuses();
    let eds_status = &st[0].types["eds"];
    assert_eq!(eds_status.nack.as_deref(), Some("bad endpoint"));
    assert_eq!(
        eds_status.acked_version.as_deref(),
        Some(eds.version_info.as_str())
    );

    // A change that alters nothing this proxy sees: nothing is sent.
    f.set_pods(&format!(
        "# re-saved\n{}---\n{}---\n{}",
        pod("r1", "v1", "198.18.0.1", true),
        pod("r2", "v2", "198.18.0.2", true),
        pod("r3", "v1", "198.18.0.3", true)
    ));
    s.nothing().await;

    // Reconnect with the versions the proxy has: nothing is re-pushed.
    drop(s);
    let mut s2 = Sotw::open(&f).await;
    s2.send(req("bookinfo", CLUSTER, &[], &cds.version_info, ""))
        .await;
    s2.send(req(
        "bookinfo",
        ENDPOINT,
        &[REVIEWS, REVIEWS_V1],
        &eds2.version_info,
        "",
    ))
    .await;
    s2.nothing().await;
    // …and with an old version, the current config comes.
    drop(s2);
    let mut s3 = Sotw::open(&f).await;
    s3.send(req("bookinfo", ENDPOINT, &[REVIEWS], &eds.version_info, ""))
        .await;
    let eds3 = s3.recv().await;
    assert_eq!(names(&eds3), [REVIEWS]);
}

#[tokio::test]
async fn two_proxies_see_their_own_views() {
    let f = Fixture::new().await;
    let mut a = Sotw::open(&f).await;
    let mut b = Sotw::open(&f).await;
    a.send(req("bookinfo", CLUSTER, &[], "", "")).await;
    b.send(req("team", CLUSTER, &[], "", "")).await;
    let (ca, cb) = (names(&a.recv().await), names(&b.recv().await));
    assert!(!ca.iter().any(|n| n.contains("private.team")));
    assert!(cb.iter().any(|n| n.contains("private.team")));
    assert_eq!(f.server.statuses().len(), 2);
}

#[tokio::test]
async fn a_bad_node_is_refused_with_a_reason() {
    let f = Fixture::new().await;
    let mut s = Sotw::open(&f).await;
    let mut r = req("bookinfo", CLUSTER, &[], "", "");
    r.node = Some(Node {
        id: "not-a-node-id".into(),
        ..Default::default()
    });
    s.send(r).await;
    let err = tokio::time::timeout(Duration::from_secs(5), s.rx.message())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.message().contains("node id"), "{}", err.message());
}

struct DeltaStream {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaStream {
    async fn open(f: &Fixture) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let rx = f
            .client()
            .await
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }
    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("a response within 5 s")
            .unwrap()
            .unwrap()
    }
    async fn nothing(&mut self) {
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), self.rx.message()).await {
            panic!(
                "expected nothing, got {:?}",
                m.map(|m| m.map(|m| (m.type_url, m.resources.len())))
            );
        }
    }
}

fn dreq(
    type_url: &str,
    subscribe: &[&str],
    unsubscribe: &[&str],
    nonce: &str,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(node("bookinfo")),
        type_url: type_url.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn delta_sends_only_what_changed() {
    let mut f = Fixture::new().await;
    let mut d = DeltaStream::open(&f).await;
    d.tx.send(dreq(CLUSTER, &[], &[], "")).await.unwrap();
    let cds = d.recv().await;
    assert!(cds.resources.iter().any(|r| r.name == REVIEWS));
    d.tx.send(dreq(CLUSTER, &[], &[], &cds.nonce))
        .await
        .unwrap();
    d.tx.send(dreq(ENDPOINT, &[REVIEWS, REVIEWS_V1], &[], ""))
        .await
        .unwrap();
    let eds = d.recv().await;
    assert_eq!(eds.resources.len(), 2);
    d.tx.send(dreq(ENDPOINT, &[], &[], &eds.nonce))
        .await
        .unwrap();
    d.nothing().await;

    // r2 (version v2) goes unready: only the unsubsetted cluster's assignment changes.
    f.set_pods(&format!(
        "{}---\n{}",
        pod("r1", "v1", "198.18.0.1", true),
        pod("r2", "v2", "198.18.0.2", false)
    ));
    let eds2 = d.recv().await;
    assert_eq!(
        eds2.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        [REVIEWS]
    );
    assert!(eds2.removed_resources.is_empty());
    d.tx.send(dreq(ENDPOINT, &[], &[], &eds2.nonce))
        .await
        .unwrap();

    // Unsubscribing sends nothing; subscribing again sends the resource.
    d.tx.send(dreq(ENDPOINT, &[], &[REVIEWS_V1], ""))
        .await
        .unwrap();
    d.nothing().await;
    d.tx.send(dreq(ENDPOINT, &[REVIEWS_V1], &[], ""))
        .await
        .unwrap();
    let r2 = d.recv().await;
    assert_eq!(
        r2.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        [REVIEWS_V1]
    );

    // Reconnect with the versions held: the first answer carries nothing new.
    drop(d);
    let mut d2 = DeltaStream::open(&f).await;
    let mut first = dreq(CLUSTER, &[], &[], "");
    first.initial_resource_versions = cds
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    d2.tx.send(first).await.unwrap();
    let again = d2.recv().await;
    assert!(
        again.resources.is_empty(),
        "{:?}",
        again.resources.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn sotw_endpoint_pushes_carry_only_the_changed_assignments() {
    let mut f = Fixture::new().await;
    let mut s = Sotw::open(&f).await;
    s.send(req("bookinfo", ENDPOINT, &[REVIEWS, REVIEWS_V1], "", ""))
        .await;
    let eds = s.recv().await;
    assert_eq!(
        names(&eds).len(),
        2,
        "the first response carries everything asked for"
    );
    s.send(req(
        "bookinfo",
        ENDPOINT,
        &[REVIEWS, REVIEWS_V1],
        &eds.version_info,
        &eds.nonce,
    ))
    .await;
    // r2 (v2) goes unready: subset v1 is unchanged, so only the whole-service assignment is sent.
    f.set_pods(&format!(
        "{}---\n{}",
        pod("r1", "v1", "198.18.0.1", true),
        pod("r2", "v2", "198.18.0.2", false)
    ));
    let push = s.recv().await;
    assert_eq!(names(&push), [REVIEWS]);
    assert_ne!(push.version_info, eds.version_info);
}

/// A SotW proxy in `ns` with CDS and EDS (the given names) acknowledged.
async fn synced_sotw(f: &Fixture, ns: &str, eds_names: &[&str]) -> Sotw {
    let mut s = Sotw::open(f).await;
    s.send(req(ns, CLUSTER, &[], "", "")).await;
    let cds = s.recv().await;
    s.send(req(ns, CLUSTER, &[], &cds.version_info, &cds.nonce))
        .await;
    if !eds_names.is_empty() {
        s.send(req(ns, ENDPOINT, eds_names, "", "")).await;
        let eds = s.recv().await;
        s.send(req(ns, ENDPOINT, eds_names, &eds.version_info, &eds.nonce))
            .await;
    }
    s.nothing().await;
    s
}

fn pods(specs: &[(&str, &str, &str, bool)]) -> String {
    specs
        .iter()
        .map(|(name, version, ip, ready)| pod(name, version, ip, *ready))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test]
async fn registry_changes_within_the_debounce_make_one_push() {
    let mut f = Fixture::with_push(PushOptions {
        debounce: Duration::from_millis(300),
        max_delay: Duration::from_secs(5),
    })
    .await;
    let mut s = synced_sotw(&f, "bookinfo", &[REVIEWS, REVIEWS_V1]).await;
    // Three changes 50 ms apart: r3 joins, r4 joins, r2 goes unready.
    let mut specs = vec![
        ("r1", "v1", "198.18.0.1", true),
        ("r2", "v2", "198.18.0.2", true),
        ("r3", "v1", "198.18.0.3", true),
    ];
    f.set_pods(&pods(&specs));
    tokio::time::sleep(Duration::from_millis(50)).await;
    specs.push(("r4", "v2", "198.18.0.4", true));
    f.set_pods(&pods(&specs));
    tokio::time::sleep(Duration::from_millis(50)).await;
    specs[1].3 = false;
    f.set_pods(&pods(&specs));
    let push = s.recv().await;
    assert_eq!(push.type_url, ENDPOINT);
    // Both assignments changed; the push carries the last state: r1 to r4 in the
    // service (r2 unhealthy), r1 and r3 in subset v1.
    assert_eq!(names(&push), [REVIEWS_V1, REVIEWS]);
    assert_eq!(endpoint_count(&push), 6);
    let unhealthy: usize = push
        .resources
        .iter()
        .map(|a| {
            ClusterLoadAssignment::decode(a.value.as_slice())
                .unwrap()
                .endpoints
                .iter()
                .flat_map(|l| &l.lb_endpoints)
                .filter(|e| e.health_status == 2)
                .count()
        })
        .sum();
    assert_eq!(unhealthy, 1, "r2 went unready in the last change");
    s.send(req(
        "bookinfo",
        ENDPOINT,
        &[REVIEWS, REVIEWS_V1],
        &push.version_info,
        &push.nonce,
    ))
    .await;
    // …and nothing more: the three changes made one push.
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(700), s.rx.message()).await {
        panic!(
            "expected one push, got another: {:?}",
            m.map(|m| m.map(|m| m.type_url))
        );
    }
    assert_eq!(f.server.statuses()[0].types["eds"].pushes, 2);
}

#[tokio::test]
async fn a_steady_stream_of_changes_is_pushed_at_the_max_delay() {
    let mut f = Fixture::with_push(PushOptions {
        debounce: Duration::from_millis(200),
        max_delay: Duration::from_millis(250),
    })
    .await;
    let mut s = synced_sotw(&f, "bookinfo", &[REVIEWS, REVIEWS_V1]).await;
    // A change every 50 ms for 1 s: never quiet for 200 ms, so only the max delay pushes.
    // Each change moves r2 to a new address, so every push differs from the one before
    // (a state the proxy already has would rightly send nothing).
    let started = std::time::Instant::now();
    let mut pushed_while_changing = false;
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(1) {
        i += 1;
        let ip = format!("198.18.1.{}", i % 250 + 1);
        f.set_pods(&pods(&[
            ("r1", "v1", "198.18.0.1", true),
            ("r2", "v2", &ip, i % 2 == 0),
        ]));
        if let Ok(Ok(Some(m))) =
            tokio::time::timeout(Duration::from_millis(50), s.rx.message()).await
        {
            pushed_while_changing = true;
            s.send(req(
                "bookinfo",
                ENDPOINT,
                &[REVIEWS, REVIEWS_V1],
                &m.version_info,
                &m.nonce,
            ))
            .await;
        }
    }
    assert!(
        pushed_while_changing,
        "no push within 1 s of changes every 50 ms (max delay 250 ms)"
    );
}

#[tokio::test]
async fn a_change_a_proxy_cannot_see_sends_it_nothing() {
    let mut f = Fixture::new().await;
    let mut bookinfo = synced_sotw(&f, "bookinfo", &[REVIEWS, REVIEWS_V1]).await;
    let mut team = synced_sotw(&f, "team", &[]).await;
    // A service only its own namespace sees (exportTo '.'): team's clusters change,
    // bookinfo's config does not.
    f.set_file(
        "more.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: hidden\n  namespace: team\n  annotations: {networking.istio.io/exportTo: '.'}\nspec:\n  ports: [{name: http, port: 81}]\n",
    );
    let cds = team.recv().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert!(names(&cds).iter().any(|n| n.contains("hidden.team")));
    bookinfo.nothing().await;
    let st = f.server.statuses();
    let b = st
        .iter()
        .find(|c| c.proxy.as_ref().is_some_and(|p| p.namespace == "bookinfo"))
        .unwrap();
    assert_eq!(b.types["cds"].pushes, 1, "only the first response");
    assert_eq!(b.types["eds"].pushes, 1, "only the first response");
}

#[tokio::test]
async fn an_endpoint_change_goes_only_to_the_proxies_watching_it() {
    let mut f = Fixture::new().await;
    // Both assignments, only the subset's, and (Delta) only the service's.
    let mut both = synced_sotw(&f, "bookinfo", &[REVIEWS, REVIEWS_V1]).await;
    let mut subset = synced_sotw(&f, "bookinfo", &[REVIEWS_V1]).await;
    let mut d = DeltaStream::open(&f).await;
    d.tx.send(dreq(ENDPOINT, &[REVIEWS], &[], ""))
        .await
        .unwrap();
    let first = d.recv().await;
    assert_eq!(first.resources.len(), 1);
    d.tx.send(dreq(ENDPOINT, &[], &[], &first.nonce))
        .await
        .unwrap();
    d.nothing().await;

    // r2 (v2) goes unready: only the service's assignment changes.
    f.set_pods(&pods(&[
        ("r1", "v1", "198.18.0.1", true),
        ("r2", "v2", "198.18.0.2", false),
    ]));
    let push = both.recv().await;
    assert_eq!(
        push.type_url, ENDPOINT,
        "no CDS push for an endpoint change"
    );
    assert_eq!(names(&push), [REVIEWS]);
    let dpush = d.recv().await;
    assert_eq!(
        dpush
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        [REVIEWS]
    );
    subset.nothing().await;
    both.nothing().await;

    // The debug API lists what each proxy subscribed to.
    let st = serde_json::to_value(f.server.statuses()).unwrap();
    let subscribed: Vec<&serde_json::Value> = st
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["types"]["eds"]["subscribed"])
        .collect();
    assert!(subscribed.contains(&&serde_json::json!([REVIEWS_V1])));
    assert!(subscribed.contains(&&serde_json::json!([REVIEWS])));
    assert!(subscribed.contains(&&serde_json::json!([REVIEWS_V1, REVIEWS])));
}

/// What `/debug/endpointz?address=IP` answers.
fn endpointz(f: &Fixture, ip: &str) -> serde_json::Value {
    let holders = endpoint_holders(&f.registry.snapshot(), &f.server, ip.parse().unwrap());
    serde_json::to_value(holders).unwrap()
}

#[tokio::test]
async fn endpointz_lists_the_proxies_holding_an_address_until_they_accept_its_removal() {
    let mut f = Fixture::new().await;
    let id = |ns: &str| node(ns).id;
    // `a` accepts every response; `b` is sent the endpoints and has not answered yet.
    let mut a = synced_sotw(&f, "bookinfo", &[REVIEWS]).await;
    let mut b = Sotw::open(&f).await;
    b.send(req("team", ENDPOINT, &[REVIEWS], "", "")).await;
    let eds = b.recv().await;
    assert_eq!(
        endpointz(&f, "198.18.0.2"),
        serde_json::json!({
            "address": "198.18.0.2",
            "registry": true,
            "proxies": [{"id": id("bookinfo"), "acked": true}, {"id": id("team"), "acked": false}],
        })
    );
    b.ack("team", &[REVIEWS], &eds).await;
    assert_eq!(
        endpointz(&f, "198.18.0.2")["proxies"],
        serde_json::json!([{"id": id("bookinfo"), "acked": true}, {"id": id("team"), "acked": true}])
    );

    // r2 leaves the registry: both are sent the change; until one accepts it, the
    // config it accepted still has the address.
    f.set_pods(&pods(&[("r1", "v1", "198.18.0.1", true)]));
    let (pa, pb) = (a.recv().await, b.recv().await);
    assert_eq!(endpoint_count(&pa), 1);
    let holders = endpointz(&f, "198.18.0.2");
    assert_eq!(holders["registry"], false);
    assert_eq!(holders["proxies"].as_array().unwrap().len(), 2, "{holders}");
    a.ack("bookinfo", &[REVIEWS], &pa).await;
    assert_eq!(
        endpointz(&f, "198.18.0.2"),
        serde_json::json!({
            "address": "198.18.0.2",
            "registry": false,
            "proxies": [{"id": id("team"), "acked": true}],
        }),
        "only the proxy that has not accepted the removal"
    );
    b.ack("team", &[REVIEWS], &pb).await;
    assert_eq!(
        endpointz(&f, "198.18.0.2")["proxies"],
        serde_json::json!([])
    );
    // The pod that stays is held by both.
    let r1 = endpointz(&f, "198.18.0.1");
    assert_eq!(r1["registry"], true);
    assert_eq!(r1["proxies"].as_array().unwrap().len(), 2, "{r1}");
}
