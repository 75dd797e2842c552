//! The workload identity end to end: a real control plane (in this process) with its
//! CA on a TLS listener, the agent asking it for a certificate with the pod's token,
//! Envoy getting its config over TLS, and the certificate served over SDS.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use isthmus_agent::identity::IdentityConfig;
use isthmus_agent::{Agent, AgentConfig, ProxyKind, http};
use isthmus_ca::{CA_AUDIENCE, TokenIssuer};
use isthmus_model::MeshConfig;
use isthmus_xds::discovery::{Listeners, serve};
use isthmus_xds::server::PushOptions;
use prost::Message;
use tokio_stream::StreamExt as _;

const DEADLINE: Duration = Duration::from_secs(15);

/// A control plane with a CA, serving until dropped.
struct ControlPlane {
    secure: SocketAddr,
    root: PathBuf,
    issuer: TokenIssuer,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn control_plane() -> ControlPlane {
    control_plane_with("").await
}

/// A control plane whose mesh.yaml also holds `extra` (e.g. a `ca:` section).
async fn control_plane_with(extra: &str) -> ControlPlane {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::generate("https://kubernetes.default.svc.cluster.local").unwrap();
    std::fs::create_dir_all(dir.path().join("c1")).unwrap();
    std::fs::write(dir.path().join("c1-jwks.json"), issuer.jwks()).unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        format!("{extra}clusters:\n- name: cluster1\n  source: {{manifests: c1}}\n  serviceAccountIssuer: {{jwks: c1-jwks.json}}\n"),
    )
    .unwrap();
    let mesh = MeshConfig::load(&dir.path().join("mesh.yaml")).unwrap();
    let root = dir.path().join("root-cert.pem");
    std::fs::write(
        &root,
        isthmus_ca::authority_for_mesh(&mesh)
            .unwrap()
            .root_bundle_pem(),
    )
    .unwrap();
    let bind = || tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0));
    let secure = bind().await.unwrap();
    let addr = secure.local_addr().unwrap();
    let listeners = Listeners {
        grpc: bind().await.unwrap(),
        debug: bind().await.unwrap(),
        secure: Some(secure),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(mesh, listeners, PushOptions::default(), async move {
        let _ = stopped.await;
    }));
    ControlPlane {
        secure: addr,
        root,
        issuer,
        dir,
        _stop: stop,
    }
}

/// A sidecar of bookinfo/bookinfo-reviews in cluster1, with its token and `root`.
fn config(envoy: &Path, cp: &ControlPlane, root: &Path) -> AgentConfig {
    let token = cp.dir.path().join("istio-token");
    let jwt = cp.issuer.issue(
        "bookinfo",
        "bookinfo-reviews",
        "reviews-v1-abc",
        CA_AUDIENCE,
        Duration::from_secs(3600),
    );
    std::fs::write(&token, jwt).unwrap();
    AgentConfig {
        kind: ProxyKind::Sidecar,
        pod_name: "reviews-v1-abc".into(),
        namespace: "bookinfo".into(),
        cluster_id: "cluster1".into(),
        service_account: "bookinfo-reviews".into(),
        discovery_address: cp.secure.into(),
        admin_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        readiness_port: 0,
        envoy_binary: Some(envoy.to_path_buf()),
        drain_duration: Duration::from_millis(300),
        identity: Some(IdentityConfig {
            ca_address: cp.secure.into(),
            ca_server_name: "istiod.istio-system.svc".into(),
            root_cert: root.to_path_buf(),
            token_file: token,
            trust_domain: "cluster.local".into(),
            requested_ttl: Duration::ZERO,
        }),
        ..AgentConfig::default()
    }
}

async fn get(agent: &Agent, path: &str) -> http::Response {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, agent.readiness_address().port()));
    http::get(addr, path, Duration::from_secs(5))
        .await
        .expect("the agent answers")
}

/// An SDS stream for `default` and `ROOTCA` on the agent's socket.
async fn sds_stream(
    socket: &Path,
) -> tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse> {
    let socket = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::try_from("http://sds")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("the SDS socket accepts");
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let request = DiscoveryRequest {
        resource_names: vec!["default".into(), "ROOTCA".into()],
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
        ..Default::default()
    };
    // The request stream stays open, as Envoy's does, so that renewals are pushed.
    let requests = tokio_stream::iter([request]).chain(tokio_stream::pending());
    client.stream_secrets(requests).await.unwrap().into_inner()
}

/// The secrets Envoy would get from the agent's SDS socket.
async fn sds_secrets(socket: &Path) -> Vec<Secret> {
    let mut stream = sds_stream(socket).await;
    let response = stream.message().await.unwrap().expect("a response");
    response
        .resources
        .iter()
        .map(|a| Secret::decode(a.value.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn the_agent_gets_a_certificate_serves_it_over_sds_and_envoy_uses_tls_xds() {
    let Some(envoy) = isthmus_testkit::require_envoy("agent identity tests") else {
        return;
    };
    let cp = control_plane().await;
    let agent = Agent::start(config(&envoy, &cp, &cp.root)).await.unwrap();
    let start = Instant::now();
    let cert = loop {
        if let Some(c) = agent.certificate() {
            break c;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no certificate within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        cert.identity,
        "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    );
    let life = cert.not_after.duration_since(cert.not_before).unwrap();
    assert_eq!(
        life,
        Duration::from_secs(24 * 3600 + 60),
        "24 h (and the minute of backdating)"
    );
    // Envoy got its first clusters and listeners over TLS from 15012.
    loop {
        let r = get(&agent, "/healthz/ready").await;
        if r.status == 200 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not ready over TLS xDS: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The certificate's state on the health endpoint.
    let r = get(&agent, "/healthz/certificate").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let info: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(info["identity"], cert.identity.as_str());
    assert!(
        info["expiresInSeconds"].as_u64().unwrap() > 23 * 3600,
        "{info}"
    );
    // No key material in the bootstrap: it names the SDS socket instead.
    let bootstrap = std::fs::read_to_string(agent.bootstrap_path()).unwrap();
    assert!(
        !bootstrap.contains("PRIVATE KEY") && bootstrap.contains("sds-grpc"),
        "{bootstrap}"
    );
    // SDS: `default` holds the chain and key, `ROOTCA` the roots.
    let secrets = sds_secrets(agent.sds_socket().unwrap()).await;
    let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["default", "ROOTCA"]);
    let text = |d: &Option<envoy_types::pb::envoy::config::core::v3::DataSource>| match d
        .as_ref()
        .and_then(|d| d.specifier.clone())
    {
        Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(b)) => {
            String::from_utf8(b).unwrap()
        }
        other => panic!("not inline bytes: {other:?}"),
    };
    match &secrets[0].r#type {
        Some(secret::Type::TlsCertificate(t)) => {
            assert_eq!(text(&t.certificate_chain), cert.chain_pem);
            assert!(text(&t.private_key).contains("PRIVATE KEY"));
        }
        other => panic!("default is {other:?}"),
    }
    match &secrets[1].r#type {
        Some(secret::Type::ValidationContext(v)) => {
            assert_eq!(
                text(&v.trusted_ca),
                std::fs::read_to_string(&cp.root).unwrap()
            );
        }
        other => panic!("ROOTCA is {other:?}"),
    }
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_a_wrong_root_neither_the_ca_nor_xds_answer() {
    let Some(envoy) = isthmus_testkit::require_envoy("agent identity tests") else {
        return;
    };
    let cp = control_plane().await;
    let other = tempfile::tempdir().unwrap();
    let stranger =
        isthmus_ca::CertificateAuthority::self_signed(other.path(), "cluster.local").unwrap();
    let wrong = other.path().join("wrong-root.pem");
    std::fs::write(&wrong, stranger.root_bundle_pem()).unwrap();
    let agent = Agent::start(config(&envoy, &cp, &wrong)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(agent.certificate().is_none());
    let r = get(&agent, "/healthz/certificate").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let r = get(&agent, "/healthz/ready").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("no clusters (CDS)"), "{}", r.body);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_certificate_is_renewed_at_half_life_and_pushed_over_sds() {
    let Some(envoy) = isthmus_testkit::require_envoy("agent identity tests") else {
        return;
    };
    // Certificates that live 4 s: renewed about every 2 s.
    let cp = control_plane_with("ca: {workloadCertTTL: 4s}\n").await;
    let agent = Agent::start(config(&envoy, &cp, &cp.root)).await.unwrap();
    let mut certs = agent.watch_certificate();
    let first = tokio::time::timeout(DEADLINE, certs.wait_for(Option::is_some))
        .await
        .expect("a certificate")
        .unwrap()
        .clone()
        .unwrap();
    let mut stream = sds_stream(agent.sds_socket().unwrap()).await;
    let initial = stream.message().await.unwrap().expect("the first secrets");
    assert_eq!(initial.version_info, first.serial);
    // The renewal reaches SDS as a new version, without a new request.
    let renewed = tokio::time::timeout(Duration::from_secs(8), stream.message())
        .await
        .expect("a renewal within 8 s")
        .unwrap()
        .expect("the renewed secrets");
    assert_ne!(renewed.version_info, first.serial);
    let now = agent.certificate().unwrap();
    assert_eq!(renewed.version_info, now.serial);
    let renewed_after = now
        .received
        .duration_since(first.received)
        .unwrap_or_default();
    assert!(
        renewed_after >= Duration::from_millis(1500) && renewed_after <= Duration::from_secs(3),
        "renewed {renewed_after:?} after the first (at half of its 4 s)"
    );
    agent.shutdown().await.unwrap();
}
