//! The CA against independent verifiers: every chain it issues is checked by
//! rustls-webpki (path building to the trust bundle, key usage) and x509-parser (SAN,
//! usages, validity), and in some tests by the openssl command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use isthmus_ca::{
    AuthError, CA_AUDIENCE, CaService, CertificateAuthority, ClusterIssuer, SignError, TokenIssuer,
    TokenVerifier, create_cacerts,
};
use x509_parser::prelude::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Istio's sample cacerts, or `None` (the test skips, never under CI=true).
fn istio_certs() -> Option<PathBuf> {
    let dir = isthmus_testkit::workspace_root().join("../shared/istio/samples/certs");
    if dir.is_dir() {
        Some(dir)
    } else {
        isthmus_testkit::skip(
            "ca tests with Istio's sample cacerts",
            "../shared/istio/samples/certs is not beside the checkout",
        );
        None
    }
}

/// A plug-in directory from Istio's sample files, under the names Istio reads.
fn plugin_dir(certs: &Path, cert: &str, key: &str, root: &str, chain: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        (cert, "ca-cert.pem"),
        (key, "ca-key.pem"),
        (root, "root-cert.pem"),
        (chain, "cert-chain.pem"),
    ] {
        std::fs::copy(certs.join(from), dir.path().join(to)).unwrap();
    }
    dir
}

/// The CA of Istio's sample `ca-cert.pem`/`ca-key.pem` under `root-cert.pem` (its
/// directory lives as long as the first value).
fn sample_ca(certs: &Path) -> (tempfile::TempDir, CertificateAuthority) {
    let dir = plugin_dir(
        certs,
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    );
    let ca = CertificateAuthority::load_plugin(dir.path(), "cluster.local").unwrap();
    (dir, ca)
}

/// A key and a CSR asking for `uri` (as the agent makes them).
fn csr(uri: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn ders(pem_text: &str) -> Vec<Vec<u8>> {
    ::pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

/// Checks an issued chain with rustls-webpki against every root of the bundle (its last
/// element) and returns the leaf's DER.
fn verify_with_webpki(chain: &[String]) -> Vec<u8> {
    let (bundle, certs) = chain.split_last().unwrap();
    let roots = ders(bundle);
    assert!(!roots.is_empty());
    let leaf = ders(&certs[0]).remove(0);
    let intermediates: Vec<rustls_pki_types::CertificateDer> = certs[1..]
        .iter()
        .flat_map(|c| ders(c))
        .map(rustls_pki_types::CertificateDer::from)
        .collect();
    let root_ders: Vec<rustls_pki_types::CertificateDer> = roots
        .iter()
        .cloned()
        .map(rustls_pki_types::CertificateDer::from)
        .collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).unwrap())
        .collect();
    let leaf_der = rustls_pki_types::CertificateDer::from(leaf.clone());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
    let now = rustls_pki_types::UnixTime::now();
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            now,
            usage,
            None,
            None,
        )
        .unwrap_or_else(|e| panic!("webpki refused the chain: {e:?}"));
    }
    leaf
}

/// Checks the leaf's SAN, usages, CA flag and validity.
fn check_leaf(leaf: &[u8], spiffe: &str, ttl: Duration) {
    let (_, cert) = X509Certificate::from_der(leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let uris: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    assert_eq!(uris, [spiffe]);
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let v = cert.validity();
    let life = (v.not_after.timestamp() - v.not_before.timestamp()) as u64;
    // Backdated by a minute for clock skew.
    assert_eq!(life, ttl.as_secs() + 60, "validity {v:?}");
    assert!(v.is_valid());
    assert!(
        cert.subject().iter().next().is_none(),
        "no subject: {}",
        cert.subject()
    );
}

#[test]
fn istio_sample_cacerts_sign_verifiable_workload_certificates() {
    let Some(certs) = istio_certs() else { return };
    let (_dir, ca) = sample_ca(&certs);
    let spiffe = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews";
    let issued = ca
        .sign_workload(&csr(spiffe), "bookinfo", "bookinfo-reviews", Duration::ZERO)
        .unwrap();
    // leaf, the intermediate (ca-cert.pem), the root bundle.
    assert_eq!(issued.cert_chain.len(), 3, "{:?}", issued.cert_chain);
    assert_eq!(
        ders(&issued.cert_chain[1]),
        ders(&std::fs::read_to_string(certs.join("ca-cert.pem")).unwrap())
    );
    let leaf = verify_with_webpki(&issued.cert_chain);
    check_leaf(&leaf, spiffe, DAY);

    // And openssl agrees.
    let out = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = out.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let leaf = write("leaf.pem", &issued.cert_chain[0]);
    let chain = write("chain.pem", &issued.cert_chain[1]);
    let root = write("root.pem", &issued.cert_chain[2]);
    openssl_verify(&root, Some(&chain), &leaf);
}

/// `openssl verify -CAfile ROOT [-untrusted CHAIN] CERT` must say OK.
fn openssl_verify(root: &Path, chain: Option<&Path>, cert: &Path) {
    let Some(openssl) = isthmus_testkit::find_program("openssl") else {
        isthmus_testkit::skip(
            "openssl verify",
            "openssl is not installed (scripts/common.sh installs it)",
        );
        return;
    };
    let mut cmd = Command::new(openssl);
    cmd.arg("verify").arg("-CAfile").arg(root);
    if let Some(chain) = chain {
        cmd.arg("-untrusted").arg(chain);
    }
    let out = cmd.arg(cert).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(": OK"),
        "openssl verify: {text}"
    );
}

#[test]
fn a_csr_for_another_identity_is_refused() {
    let Some(certs) = istio_certs() else { return };
    let (_dir, ca) = sample_ca(&certs);
    let e = ca
        .sign_workload(
            &csr("spiffe://cluster.local/ns/default/sa/admin"),
            "bookinfo",
            "reviews",
            Duration::ZERO,
        )
        .unwrap_err();
    assert_eq!(
        e,
        SignError::IdentityMismatch {
            requested: "spiffe://cluster.local/ns/default/sa/admin".into(),
            allowed: "spiffe://cluster.local/ns/bookinfo/sa/reviews".into(),
        }
    );
    assert!(
        e.to_string()
            .contains("its own namespace and service account"),
        "{e}"
    );
    // Another trust domain is another identity too.
    assert!(
        ca.sign_workload(
            &csr("spiffe://evil.local/ns/bookinfo/sa/reviews"),
            "bookinfo",
            "reviews",
            Duration::ZERO
        )
        .is_err()
    );
    // No identity at all, garbage, too long a life.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::DnsName("x.example".try_into().unwrap())];
    let dns_only = p.serialize_request(&key).unwrap().pem().unwrap();
    assert_eq!(
        ca.sign_workload(&dns_only, "bookinfo", "reviews", Duration::ZERO)
            .unwrap_err(),
        SignError::NoIdentity
    );
    assert!(matches!(
        ca.sign_workload("not a csr", "bookinfo", "reviews", Duration::ZERO),
        Err(SignError::Csr(_))
    ));
    let ok = csr("spiffe://cluster.local/ns/bookinfo/sa/reviews");
    assert!(matches!(
        ca.sign_workload(&ok, "bookinfo", "reviews", 100 * DAY),
        Err(SignError::TtlTooLong { .. })
    ));
    // A requested shorter life is honoured.
    let issued = ca
        .sign_workload(&ok, "bookinfo", "reviews", Duration::from_secs(600))
        .unwrap();
    check_leaf(
        &verify_with_webpki(&issued.cert_chain),
        "spiffe://cluster.local/ns/bookinfo/sa/reviews",
        Duration::from_secs(600),
    );
}

#[test]
fn root_rotation_trusts_both_roots() {
    let Some(certs) = istio_certs() else { return };
    // The old intermediate, with a bundle of the old and the new root.
    let old = plugin_dir(
        &certs,
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert-combined.pem",
        "cert-chain.pem",
    );
    let ca_old = CertificateAuthority::load_plugin(old.path(), "cluster.local").unwrap();
    assert_eq!(ca_old.roots().len(), 2);
    // The new intermediate (signed by the alternative root), with the same bundle.
    // (Not the sample's `-alt-2` pair: its ca-key-alt-2.pem is not ca-cert-alt-2.pem's key.)
    let new = plugin_dir(
        &certs,
        "ca-cert-alt.pem",
        "ca-key-alt.pem",
        "root-cert-combined.pem",
        "cert-chain-alt.pem",
    );
    let ca_new = CertificateAuthority::load_plugin(new.path(), "cluster.local").unwrap();
    let spiffe = "spiffe://cluster.local/ns/a/sa/b";
    let from_old = ca_old
        .sign_workload(&csr(spiffe), "a", "b", Duration::ZERO)
        .unwrap()
        .cert_chain;
    let from_new = ca_new
        .sign_workload(&csr(spiffe), "a", "b", Duration::ZERO)
        .unwrap()
        .cert_chain;
    // Each chain verifies against the bundle either CA hands out.
    for (chain, bundle) in [(&from_old, &from_new), (&from_new, &from_old)] {
        let mut mixed = chain.clone();
        *mixed.last_mut().unwrap() = bundle.last().unwrap().clone();
        verify_with_webpki(&mixed);
    }
    // The new intermediate with only the old root: refused, naming the files.
    let wrong = plugin_dir(
        &certs,
        "ca-cert-alt.pem",
        "ca-key-alt.pem",
        "root-cert.pem",
        "cert-chain-alt.pem",
    );
    let e = CertificateAuthority::load_plugin(wrong.path(), "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("root-cert.pem") && e.contains("not signed by any root"),
        "{e}"
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let Some(certs) = istio_certs() else { return };
    let dir = plugin_dir(
        &certs,
        "ca-cert.pem",
        "ca-key-alt.pem",
        "root-cert.pem",
        "cert-chain.pem",
    );
    let e = CertificateAuthority::load_plugin(dir.path(), "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(dir.path().to_str().unwrap())
            && e.contains("ca-key.pem is not the key of ca-cert.pem"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("root-cert.pem")).unwrap();
    let e = CertificateAuthority::load_plugin(dir.path(), "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("root-cert.pem is missing") && e.contains("create-cacerts"),
        "{e}"
    );
}

#[test]
fn create_cacerts_shares_a_root_not_a_key() {
    let out = tempfile::tempdir().unwrap();
    let made = create_cacerts(out.path(), &["cluster1".into(), "cluster2".into()]).unwrap();
    assert!(made.new_root);
    let root = out.path().join("root-cert.pem");
    let spiffe = "spiffe://cluster.local/ns/ns1/sa/sa1";
    let mut keys = Vec::new();
    for name in ["cluster1", "cluster2"] {
        let dir = out.path().join(name);
        openssl_verify(&root, None, &dir.join("ca-cert.pem"));
        assert_eq!(
            std::fs::read(dir.join("root-cert.pem")).unwrap(),
            std::fs::read(&root).unwrap()
        );
        keys.push(std::fs::read(dir.join("ca-key.pem")).unwrap());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("ca-key.pem"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let ca = CertificateAuthority::load_plugin(&dir, "cluster.local").unwrap();
        let issued = ca
            .sign_workload(&csr(spiffe), "ns1", "sa1", Duration::ZERO)
            .unwrap();
        check_leaf(&verify_with_webpki(&issued.cert_chain), spiffe, DAY);
    }
    assert_ne!(keys[0], keys[1]);
    // A later cluster joins under the same root; an existing one is not overwritten.
    let later = create_cacerts(out.path(), &["cluster3".into()]).unwrap();
    assert!(!later.new_root);
    openssl_verify(&root, None, &out.path().join("cluster3/ca-cert.pem"));
    let e = create_cacerts(out.path(), &["cluster1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn self_signed_root_is_kept_in_the_state_directory() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("ca");
    let first = CertificateAuthority::self_signed(&dir, "cluster.local").unwrap();
    let second = CertificateAuthority::self_signed(&dir, "cluster.local").unwrap();
    assert_eq!(
        first.roots(),
        second.roots(),
        "the same root after a restart"
    );
    let spiffe = "spiffe://cluster.local/ns/x/sa/y";
    let issued = second
        .sign_workload(&csr(spiffe), "x", "y", Duration::ZERO)
        .unwrap();
    assert_eq!(issued.cert_chain.len(), 2, "leaf and root");
    check_leaf(&verify_with_webpki(&issued.cert_chain), spiffe, DAY);
}

fn verifier(clusters: &[(&str, &TokenIssuer)]) -> TokenVerifier {
    let mut v = TokenVerifier::new();
    for (name, issuer) in clusters {
        v.insert(
            name,
            ClusterIssuer::from_jwks(&issuer.jwks(), Some(issuer.issuer().to_string())).unwrap(),
        );
    }
    v
}

#[test]
fn tokens_are_checked_for_signature_audience_expiry_and_cluster() {
    let c1 = TokenIssuer::generate("https://kubernetes.default.svc.cluster.local").unwrap();
    let c2 = TokenIssuer::generate("https://kubernetes.default.svc.cluster.local").unwrap();
    let v = verifier(&[("cluster1", &c1), ("cluster2", &c2)]);
    let good = c1.issue(
        "bookinfo",
        "reviews",
        "reviews-v1-x",
        CA_AUDIENCE,
        Duration::from_secs(3600),
    );
    let caller = v.verify(Some("cluster1"), &good).unwrap();
    assert_eq!(
        (
            caller.cluster.as_str(),
            caller.namespace.as_str(),
            caller.service_account.as_str()
        ),
        ("cluster1", "bookinfo", "reviews")
    );
    // Without a cluster name: the cluster whose issuer signed it.
    assert_eq!(v.verify(None, &good).unwrap().cluster, "cluster1");
    // Signed by cluster1's issuer, presented as cluster2's.
    assert_eq!(
        v.verify(Some("cluster2"), &good).unwrap_err(),
        AuthError::BadSignature("cluster2".into())
    );
    let expired = c1.issue_at(
        "bookinfo",
        "reviews",
        "p",
        CA_AUDIENCE,
        1_000_000,
        Duration::from_secs(3600),
    );
    assert_eq!(
        v.verify(Some("cluster1"), &expired).unwrap_err(),
        AuthError::Expired
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let early = c1.issue_at(
        "bookinfo",
        "reviews",
        "p",
        CA_AUDIENCE,
        now + 3600,
        Duration::from_secs(3600),
    );
    assert_eq!(
        v.verify(Some("cluster1"), &early).unwrap_err(),
        AuthError::NotYetValid
    );
    let wrong_aud = c1.issue(
        "bookinfo",
        "reviews",
        "p",
        "https://kubernetes.default.svc",
        Duration::from_secs(3600),
    );
    assert_eq!(
        v.verify(Some("cluster1"), &wrong_aud).unwrap_err(),
        AuthError::WrongAudience
    );
    assert_eq!(
        v.verify(Some("cluster9"), &good).unwrap_err(),
        AuthError::UnknownCluster("cluster9".into())
    );
    assert!(matches!(
        v.verify(Some("cluster1"), "a.b.c"),
        Err(AuthError::Malformed(_))
    ));
    // A third issuer nobody configured.
    let stranger = TokenIssuer::generate("x").unwrap();
    let forged = stranger.issue(
        "bookinfo",
        "reviews",
        "p",
        CA_AUDIENCE,
        Duration::from_secs(3600),
    );
    assert_eq!(v.verify(None, &forged).unwrap_err(), AuthError::NoIssuer);
    // Another issuer name with the right key.
    let mut strict = TokenVerifier::new();
    strict.insert(
        "cluster1",
        ClusterIssuer::from_jwks(&c1.jwks(), Some("https://other".into())).unwrap(),
    );
    assert!(matches!(
        strict.verify(Some("cluster1"), &good),
        Err(AuthError::WrongIssuer { .. })
    ));
}

#[test]
fn issuer_key_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer-key.pem");
    let a = TokenIssuer::load_or_create(&path, "i").unwrap();
    let b = TokenIssuer::load_or_create(&path, "i").unwrap();
    assert_eq!(a.jwks(), b.jwks());
    let v = verifier(&[("c", &b)]);
    assert!(
        v.verify(
            Some("c"),
            &a.issue("n", "s", "p", CA_AUDIENCE, Duration::from_secs(60))
        )
        .is_ok()
    );
}

#[tokio::test]
async fn create_certificate_over_grpc() {
    use isthmus_ca::proto::IstioCertificateRequest;
    use isthmus_ca::proto::istio_certificate_service_client::IstioCertificateServiceClient;
    let state = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::self_signed(state.path(), "cluster.local").unwrap());
    let issuer = TokenIssuer::generate("iss").unwrap();
    let service = CaService::new(ca, Arc::new(verifier(&[("cluster1", &issuer)])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = IstioCertificateServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let spiffe = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
    let call = |token: Option<String>, csr_pem: String| {
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem,
            subject_id: String::new(),
            validity_duration: 3600,
        });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req.metadata_mut()
            .insert("clusterid", "cluster1".parse().unwrap());
        req
    };
    let token = issuer.issue(
        "bookinfo",
        "reviews",
        "p",
        CA_AUDIENCE,
        Duration::from_secs(600),
    );
    let ok = client
        .create_certificate(call(Some(token.clone()), csr(spiffe)))
        .await
        .unwrap()
        .into_inner();
    check_leaf(
        &verify_with_webpki(&ok.cert_chain),
        spiffe,
        Duration::from_secs(3600),
    );

    let e = client
        .create_certificate(call(None, csr(spiffe)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("bearer token"), "{}", e.message());
    let e = client
        .create_certificate(call(
            Some(token),
            csr("spiffe://cluster.local/ns/bookinfo/sa/admin"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("ns/bookinfo/sa/admin")
            && e.message().contains("ns/bookinfo/sa/reviews"),
        "{}",
        e.message()
    );
}
