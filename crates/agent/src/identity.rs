//! The workload's identity: the agent makes a private key and a CSR in the pod (the key
//! never leaves it), has the control plane's CA sign it — authenticated by the pod's
//! service-account token, over TLS checked against the mesh's root — and renews the
//! certificate at about half its life, retrying with backoff when the CA is away.
//! [`crate::sds`] hands the result to Envoy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use isthmus_ca::proto::IstioCertificateRequest;
use isthmus_ca::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Backoff, DiscoveryAddress};

/// Renew when this share of the certificate's life has passed (Istio's
/// `SECRET_GRACE_PERIOD_RATIO` default, 0.5).
pub const RENEW_AT: f64 = 0.5;
/// How long one call to the CA may take.
const CA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how the agent gets its certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityConfig {
    /// The CA (the control plane's 15012).
    pub ca_address: DiscoveryAddress,
    /// The name the CA's certificate must carry (`istiod.istio-system.svc`).
    pub ca_server_name: String,
    /// The mesh's root certificate(s), PEM: what the CA's and xDS's TLS is checked against.
    pub root_cert: PathBuf,
    /// The pod's service-account token (audience `istio-ca`), read anew for each request:
    /// the kubelet rotates it.
    pub token_file: PathBuf,
    /// The identity's trust domain (`cluster.local`).
    pub trust_domain: String,
    /// Requested validity; zero for the CA's default.
    pub requested_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {}: {source} ({hint})", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("cannot make the key or CSR: {0}")]
    Csr(String),
    #[error("cannot reach the CA at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("the CA at {address} refused: {message}")]
    Refused { address: String, message: String },
    #[error("the CA's answer is not usable: {0}")]
    Answer(String),
}

/// A certificate the CA signed for this workload, with its key.
#[derive(Clone)]
pub struct WorkloadCertificate {
    /// PKCS #8 PEM; never leaves the pod.
    pub key_pem: String,
    /// PEM: the leaf, then the intermediates.
    pub chain_pem: String,
    /// PEM: the trusted roots.
    pub roots_pem: String,
    /// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
    pub identity: String,
    /// The leaf's serial number, hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When the agent got it.
    pub received: SystemTime,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// When to renew: at [`RENEW_AT`] of the life it had when it arrived (the CA
    /// backdates `notBefore` a little for clock skew; that minute is not counted).
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.received)
            .unwrap_or_default();
        self.received + life.mul_f64(RENEW_AT)
    }
}

/// Asks the CA for a certificate for `namespace`/`service_account` of `cluster_id`.
pub async fn fetch(
    config: &IdentityConfig,
    cluster_id: &str,
    namespace: &str,
    service_account: &str,
) -> Result<WorkloadCertificate, IdentityError> {
    let read = |path: &PathBuf, hint| {
        std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
            path: path.clone(),
            source,
            hint,
        })
    };
    let root = read(
        &config.root_cert,
        "the mesh's root certificate, as Istio mounts it from istio-ca-root-cert",
    )?;
    let token = read(
        &config.token_file,
        "the pod's service-account token for audience istio-ca",
    )?;
    let identity = isthmus_model::spiffe_id(&config.trust_domain, namespace, service_account);

    let key = rcgen::KeyPair::generate().map_err(|e| IdentityError::Csr(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let uri = rcgen::string::Ia5String::try_from(identity.as_str())
        .map_err(|e| IdentityError::Csr(e.to_string()))?;
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| IdentityError::Csr(e.to_string()))?;

    let address = config.ca_address.to_string();
    let connect = |message: String| IdentityError::Connect {
        address: address.clone(),
        message,
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&root))
        .domain_name(config.ca_server_name.clone());
    let channel = Channel::from_shared(format!("https://{address}"))
        .map_err(|e| connect(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| connect(e.to_string()))?
        .connect_timeout(CA_TIMEOUT)
        .timeout(CA_TIMEOUT)
        .connect()
        .await
        .map_err(|e| connect(error_chain(&e)))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        subject_id: String::new(),
        validity_duration: config.requested_ttl.as_secs() as i64,
    });
    let bearer = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| IdentityError::Csr("the token holds characters a header cannot".into()))?;
    request.metadata_mut().insert("authorization", bearer);
    if let Ok(cluster) = cluster_id.parse() {
        request
            .metadata_mut()
            .insert(isthmus_ca::CLUSTER_ID_METADATA, cluster);
    }
    let answer = IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await
        .map_err(|s| IdentityError::Refused {
            address: address.clone(),
            message: format!("{:?}: {}", s.code(), s.message()),
        })?
        .into_inner();
    let (roots_pem, chain) = answer
        .cert_chain
        .split_last()
        .ok_or_else(|| IdentityError::Answer("an empty certificate chain".into()))?;
    if chain.is_empty() {
        return Err(IdentityError::Answer("no leaf certificate".into()));
    }
    let leaf_der =
        pem_der(&chain[0]).ok_or_else(|| IdentityError::Answer("the leaf is not PEM".into()))?;
    let (_, leaf) = X509Certificate::from_der(&leaf_der)
        .map_err(|e| IdentityError::Answer(format!("the leaf does not parse: {e}")))?;
    if leaf.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(IdentityError::Answer(
            "the leaf does not certify the key the CSR carried".into(),
        ));
    }
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Ok(WorkloadCertificate {
        key_pem: key.serialize_pem(),
        chain_pem: chain.concat(),
        roots_pem: roots_pem.clone(),
        identity,
        serial: leaf.raw_serial_as_string(),
        not_before: time(leaf.validity().not_before),
        not_after: time(leaf.validity().not_after),
        received: SystemTime::now(),
    })
}

fn pem_der(text: &str) -> Option<Vec<u8>> {
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()
}

/// An error with its sources, for a message that says what really failed (a TLS
/// error sits several levels down in a transport error).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Keeps a certificate: fetches one, publishes it, renews it at half-life; retries a
/// failed request with backoff (0.5 s doubling to 30 s). Runs until dropped.
pub async fn keep_certificate(
    config: IdentityConfig,
    cluster_id: String,
    namespace: String,
    service_account: String,
    publish: watch::Sender<Option<Arc<WorkloadCertificate>>>,
) {
    let mut backoff = Backoff::default();
    loop {
        match fetch(&config, &cluster_id, &namespace, &service_account).await {
            Ok(cert) => {
                backoff = Backoff::default();
                let renew_in = cert
                    .renew_at()
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::from_secs(1));
                tracing::info!(identity = %cert.identity, serial = %cert.serial, renew_in = ?renew_in, "workload certificate issued");
                publish.send_replace(Some(Arc::new(cert)));
                tokio::time::sleep(renew_in).await;
            }
            Err(e) => {
                let delay = backoff.after_exit(Duration::ZERO);
                tracing::warn!(error = %e, retry_in = ?delay, "cannot get a workload certificate");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
