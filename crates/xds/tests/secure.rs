//! 15012: the CA and xDS over TLS with the control plane's certificate from the mesh's
//! CA. A workload with the mesh's root and its service-account token gets a
//! certificate; a client with another root cannot even connect.

use std::path::Path;
use std::time::Duration;

use isthmus_ca::proto::IstioCertificateRequest;
use isthmus_ca::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use isthmus_ca::{CA_AUDIENCE, TokenIssuer};
use isthmus_model::MeshConfig;
use isthmus_xds::discovery::{Listeners, serve};
use isthmus_xds::server::PushOptions;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// A mesh of one cluster whose tokens `issuer` signs, with Istio's sample cacerts
/// plugged in when they are beside the checkout (else a self-signed root).
fn mesh(dir: &Path, issuer: &TokenIssuer) -> MeshConfig {
    std::fs::create_dir_all(dir.join("c1")).unwrap();
    std::fs::write(dir.join("c1-jwks.json"), issuer.jwks()).unwrap();
    let samples = isthmus_testkit::workspace_root().join("../shared/istio/samples/certs");
    let cacerts = if samples.is_dir() {
        let plugged = dir.join("cacerts");
        std::fs::create_dir_all(&plugged).unwrap();
        for f in [
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ] {
            std::fs::copy(samples.join(f), plugged.join(f)).unwrap();
        }
        "ca: {cacerts: cacerts}\n"
    } else {
        ""
    };
    let text = format!(
        "{cacerts}clusters:\n- name: c1\n  source: {{manifests: c1}}\n  serviceAccountIssuer: {{jwks: c1-jwks.json, issuer: {}}}\n",
        issuer.issuer()
    );
    std::fs::write(dir.join("mesh.yaml"), &text).unwrap();
    MeshConfig::load(&dir.join("mesh.yaml")).unwrap()
}

async fn channel(
    addr: std::net::SocketAddr,
    root_pem: &str,
) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root_pem))
        .domain_name("istiod.istio-system.svc");
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

#[tokio::test]
async fn workloads_get_certificates_over_tls_and_a_wrong_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::generate("https://kubernetes.default.svc.cluster.local").unwrap();
    let mesh = mesh(dir.path(), &issuer);
    let ca = isthmus_ca::authority_for_mesh(&mesh).unwrap();
    let root = ca.root_bundle_pem();
    drop(ca);
    let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = secure.local_addr().unwrap();
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        debug: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        secure: Some(secure),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(mesh, listeners, PushOptions::default(), async move {
        let _ = stopped.await;
    }));

    // The mesh's root and a token: a certificate for exactly that identity.
    let mut client = IstioCertificateServiceClient::new(
        channel(addr, &root)
            .await
            .expect("TLS with the mesh's root"),
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    let spiffe = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews";
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr,
        subject_id: String::new(),
        validity_duration: 0,
    });
    let token = issuer.issue(
        "bookinfo",
        "bookinfo-reviews",
        "reviews-v1-x",
        CA_AUDIENCE,
        Duration::from_secs(600),
    );
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req.metadata_mut()
        .insert("clusterid", "c1".parse().unwrap());
    let chain = client
        .create_certificate(req)
        .await
        .expect("a certificate")
        .into_inner()
        .cert_chain;
    assert!(chain.len() >= 2, "{chain:?}");
    assert_eq!(chain.last().unwrap(), &root, "the root bundle comes last");

    // Another root: the handshake fails, nothing is served.
    let other = tempfile::tempdir().unwrap();
    let stranger =
        isthmus_ca::CertificateAuthority::self_signed(other.path(), "cluster.local").unwrap();
    let refused = match channel(addr, &stranger.root_bundle_pem()).await {
        Err(e) => format!("{e:?}"),
        Ok(ch) => {
            let mut c = IstioCertificateServiceClient::new(ch);
            let e = c
                .create_certificate(IstioCertificateRequest::default())
                .await
                .expect_err("no answer without trusting the server");
            format!("{e:?}")
        }
    };
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
