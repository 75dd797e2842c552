//! The agent with a real Envoy: the bootstrap passes `envoy --mode validate`, Envoy
//! starts and its admin answers, readiness follows the control plane, a killed Envoy is
//! restarted, and shutdown drains and stops it.
//!
//! Envoy comes from the agent's own search: `ISTHMUS_ENVOY`, else the virtualenv
//! scripts/envoy.sh installs (`.venv` at the workspace root), else `PATH`. Without one these tests say why and
//! pass, unless `CI=true`, where they fail.
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use isthmus_agent::{Agent, AgentConfig, ProxyKind, bootstrap, http};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Each wait for Envoy gives up after this long.
const DEADLINE: Duration = Duration::from_secs(10);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The Envoy binary (the agent's own search, through the test kit), or `None` (with the
/// reason printed and the skip recorded) when there is none.
fn find_envoy() -> Option<PathBuf> {
    isthmus_testkit::require_envoy("agent envoy tests")
}

macro_rules! envoy_or_skip {
    () => {
        match find_envoy() {
            Some(envoy) => envoy,
            None => return,
        }
    };
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "isthmus_agent=debug,envoy=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A control plane that never answers: a bound listener nobody accepts from. Held for
/// the test's length, so no other process can take its port.
fn silent_control_plane() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
}

/// A sidecar whose control plane is `discovery`; Envoy's admin and the readiness
/// endpoint on ports chosen when bound (port 0), and a short drain.
fn config(envoy: &Path, discovery: SocketAddr) -> AgentConfig {
    AgentConfig {
        kind: ProxyKind::Sidecar,
        pod_name: "reviews-v1-abc".into(),
        namespace: "bookinfo".into(),
        cluster_id: "cluster1".into(),
        network: "network1".into(),
        mesh_id: "mesh1".into(),
        service_account: "bookinfo-reviews".into(),
        labels: isthmus_agent::parse_labels("app=reviews,version=v1").unwrap(),
        discovery_address: discovery.into(),
        admin_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        readiness_port: 0,
        envoy_binary: Some(envoy.to_path_buf()),
        drain_duration: Duration::from_millis(300),
        ..AgentConfig::default()
    }
}

/// A sidecar whose control plane never answers.
fn config_silent(envoy: &Path, silent: &TcpListener) -> AgentConfig {
    config(envoy, silent.local_addr().unwrap())
}

/// Polls `f` until it gives `Some`, or panics naming `what` after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until Envoy's admin answers `/server_info`, and returns the answer.
async fn admin_server_info(admin: SocketAddr) -> String {
    eventually("Envoy's admin to answer /server_info", || async move {
        let r = http::get(admin, "/server_info", ADMIN_TIMEOUT).await.ok()?;
        (r.status == 200).then_some(r.body)
    })
    .await
}

async fn readiness(agent: &Agent) -> http::Response {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, agent.readiness_address().port()));
    http::get(addr, "/healthz/ready", Duration::from_secs(5))
        .await
        .expect("the readiness endpoint answers")
}

/// Whether `pid` is a live process (a zombie, killed but not yet reaped, is not).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `PID (COMM) STATE …`; COMM may hold spaces and parentheses.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

fn validate(envoy: &Path, bootstrap: &Path) {
    let out = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--config-path"])
        .arg(bootstrap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "envoy --mode validate rejected {}:\n{}{}",
        bootstrap.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bootstrap_golden_files_pass_envoy_validate() {
    let envoy = envoy_or_skip!();
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata");
    for golden in ["bootstrap_sidecar.json", "bootstrap_router.json"] {
        validate(&envoy, &testdata.join(golden));
    }
    // And one built here, with a hostname for the control plane (STRICT_DNS).
    let dir = tempfile::tempdir().unwrap();
    let silent = silent_control_plane();
    let mut c = config_silent(&envoy, &silent);
    c.kind = ProxyKind::Router;
    c.requested_network_view = vec!["network1".into()];
    c.discovery_address = "istiod.istio-system.svc:15012".parse().unwrap();
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, bootstrap::bootstrap_json(&c).unwrap()).unwrap();
    validate(&envoy, &path);
}

#[tokio::test]
async fn agent_starts_envoy_and_admin_answers() {
    let envoy = envoy_or_skip!();
    init_tracing();
    let silent = silent_control_plane();
    let config = config_silent(&envoy, &silent);
    let agent = Agent::start(config.clone()).await.unwrap();
    assert!(agent.envoy_pid().is_some());
    assert!(agent.bootstrap_path().is_file());
    let info = admin_server_info(agent.admin_address()).await;
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        info["node"]["id"],
        "sidecar~127.0.0.1~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local"
    );
    assert_eq!(info["node"]["cluster"], "reviews.bookinfo");
    assert_eq!(info["node"]["metadata"]["CLUSTER_ID"], "cluster1");
    let options = &info["command_line_options"];
    assert_eq!(options["disable_hot_restart"], true, "{options}");
    assert_eq!(options["drain_time"], "1s", "{options}");
    assert_eq!(options["parent_shutdown_time"], "2s", "{options}");
    assert_eq!(options["local_address_ip_version"], "v4", "{options}");
    assert!(
        info["version"].as_str().unwrap_or_default().contains("/1."),
        "{}",
        info["version"]
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn readiness_is_503_without_a_control_plane() {
    let envoy = envoy_or_skip!();
    init_tracing();
    let silent = silent_control_plane();
    let agent = Agent::start(config_silent(&envoy, &silent)).await.unwrap();
    admin_server_info(agent.admin_address()).await;
    for _ in 0..3 {
        let r = readiness(&agent).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("no clusters (CDS)"), "{}", r.body);
        assert!(r.body.contains("no listeners (LDS)"), "{}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn readiness_is_200_once_the_control_plane_sent_cds_and_lds() {
    let envoy = envoy_or_skip!();
    init_tracing();
    let control_plane = FakeAds::start().await;
    let mut config = config(&envoy, control_plane.addr);
    config.kind = ProxyKind::Router;
    config.requested_network_view = vec!["network1".into(), "network2".into()];
    let agent = Agent::start(config).await.unwrap();
    let body = eventually("/healthz/ready to answer 200", || async {
        let r = readiness(&agent).await;
        (r.status == 200).then_some(r.body)
    })
    .await;
    assert_eq!(body, "ready\n");
    // The control plane saw the node the bootstrap describes.
    let node = control_plane.node.lock().unwrap().clone().expect("a node");
    assert_eq!(
        node.id,
        "router~127.0.0.1~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local"
    );
    let meta = &node.metadata.expect("metadata").fields;
    let text = |k: &str| format!("{:?}", meta.get(k).and_then(|v| v.kind.clone()));
    assert!(text("NETWORK").contains("network1"), "{meta:?}");
    assert!(
        text("REQUESTED_NETWORK_VIEW").contains("network1,network2"),
        "{meta:?}"
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn killed_envoy_is_restarted() {
    let envoy = envoy_or_skip!();
    init_tracing();
    let silent = silent_control_plane();
    let agent = Agent::start(config_silent(&envoy, &silent)).await.unwrap();
    admin_server_info(agent.admin_address()).await;
    let first = agent.envoy_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let second = eventually("a new Envoy pid", || async {
        agent.envoy_pid().filter(|p| *p != first)
    })
    .await;
    let status = agent.status();
    assert_eq!(status.restarts, 1, "{status:?}");
    assert!(
        status
            .last_exit
            .as_deref()
            .unwrap_or_default()
            .contains('9'),
        "{status:?}"
    );
    assert!(!process_alive(first), "the killed Envoy was reaped");
    // The new Envoy's admin answers (at the port it chose: the address comes with the pid).
    admin_server_info(agent.admin_address()).await;
    assert_eq!(agent.envoy_pid(), Some(second));
    agent.shutdown().await.unwrap();
    assert!(!process_alive(second));
}

#[tokio::test]
async fn shutdown_drains_then_stops_envoy() {
    let envoy = envoy_or_skip!();
    init_tracing();
    let silent = silent_control_plane();
    let config = config_silent(&envoy, &silent);
    let drain = config.drain_duration;
    let agent = Agent::start(config).await.unwrap();
    let admin = agent.admin_address();
    admin_server_info(admin).await;
    let pid = agent.envoy_pid().unwrap();
    let readiness_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, agent.readiness_address().port()));
    let bootstrap_dir = agent.bootstrap_path().parent().unwrap().to_path_buf();

    let start = Instant::now();
    let shutdown = tokio::spawn(agent.shutdown());
    // While draining, readiness says so.
    let body = eventually("readiness to say the proxy drains", || async {
        let r = http::get(readiness_addr, "/healthz/ready", ADMIN_TIMEOUT)
            .await
            .ok()?;
        (r.status == 503 && r.body.contains("draining")).then_some(r.body)
    })
    .await;
    assert_eq!(body, "not ready: the proxy is draining\n");
    shutdown.await.unwrap().unwrap();
    assert!(
        start.elapsed() >= drain,
        "stopped after {:?}, before the drain time",
        start.elapsed()
    );
    assert!(!process_alive(pid), "Envoy (pid {pid}) is gone");
    assert!(
        http::get(admin, "/ready", ADMIN_TIMEOUT).await.is_err(),
        "nothing answers on the admin port any more"
    );
    assert!(
        !bootstrap_dir.exists(),
        "the temporary config directory is removed"
    );
}

#[tokio::test]
async fn dropping_the_agent_kills_envoy() {
    let envoy = envoy_or_skip!();
    init_tracing();
    let silent = silent_control_plane();
    let agent = Agent::start(config_silent(&envoy, &silent)).await.unwrap();
    admin_server_info(agent.admin_address()).await;
    let pid = agent.envoy_pid().unwrap();
    drop(agent);
    eventually("the dropped agent's Envoy to be gone", || async {
        (!process_alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn missing_envoy_says_how_to_install_it() {
    let silent = silent_control_plane();
    let mut c = config_silent(Path::new("/nonexistent/envoy"), &silent);
    c.pod_name = "p".into();
    let e = Agent::start(c).await.err().expect("no Envoy there");
    let e = e.to_string();
    assert!(e.contains("scripts/envoy.sh"), "{e}");
    assert!(e.contains("ISTHMUS_ENVOY"), "{e}");
}

/// A control plane that answers every first request of a type with an empty
/// State-of-the-World response, and records the node.
#[derive(Clone)]
struct FakeAds {
    addr: SocketAddr,
    node: Arc<Mutex<Option<Node>>>,
}

impl FakeAds {
    async fn start() -> FakeAds {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let fake = FakeAds {
            addr: listener.local_addr().unwrap(),
            node: Arc::default(),
        };
        let service = AggregatedDiscoveryServiceServer::new(fake.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        fake
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut nonce = 0;
            while let Ok(Some(req)) = inbound.message().await {
                if let Some(n) = req.node {
                    *node.lock().unwrap() = Some(n);
                }
                if !req.response_nonce.is_empty() {
                    continue; // an ACK or NACK
                }
                nonce += 1;
                let response = DiscoveryResponse {
                    version_info: "1".into(),
                    type_url: req.type_url,
                    nonce: nonce.to_string(),
                    ..Default::default()
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("State of the World only"))
    }
}
