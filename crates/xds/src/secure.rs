//! Istio's 15012: xDS and the CA over TLS. The control plane's own certificate comes
//! from the mesh's CA (DNS names `istiod.NS.svc` and the others Istio's istiod
//! certificate carries), and is issued anew at half its life; connections already open
//! keep the certificate they started with.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use isthmus_ca::CertificateAuthority;
use isthmus_model::sync::lock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a TLS handshake on 15012 may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error("cannot issue the control plane's TLS certificate: {0}")]
    Issue(#[from] isthmus_ca::CaError),
    #[error("the control plane's TLS certificate is not usable: {0}")]
    Key(String),
}

/// The DNS names of the control plane's certificate: those of Istio's istiod
/// certificate for the system namespace (`istiod`, `istiod-remote`, `istio-pilot`).
pub fn dns_names(system_namespace: &str) -> Vec<String> {
    ["istiod", "istiod-remote", "istio-pilot"]
        .iter()
        .map(|name| format!("{name}.{system_namespace}.svc"))
        .collect()
}

/// The serving certificate, replaced in place on rotation.
#[derive(Debug)]
struct ServingCert {
    current: Mutex<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(lock(&self.current).clone())
    }
}

/// The control plane's TLS identity and the acceptor that serves it.
#[derive(Clone)]
pub struct TlsIdentity {
    cert: Arc<ServingCert>,
    acceptor: TlsAcceptor,
    names: Vec<String>,
    ttl: Duration,
}

impl TlsIdentity {
    /// Issues a certificate for `names` valid for `ttl`.
    pub fn issue(
        ca: &CertificateAuthority,
        names: Vec<String>,
        ttl: Duration,
    ) -> Result<Self, SecureError> {
        let cert = Arc::new(ServingCert {
            current: Mutex::new(certified_key(ca, &names, ttl)?),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| SecureError::Key(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsIdentity {
            cert,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            names,
            ttl,
        })
    }

    /// The certificate chain served now (PEM), for tests and the debug API.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        lock(&self.cert.current).cert.clone()
    }

    /// Issues the certificate anew every half of its life, until the task is dropped.
    pub fn rotate(&self, ca: Arc<CertificateAuthority>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(this.ttl / 2).await;
                match certified_key(&ca, &this.names, this.ttl) {
                    Ok(key) => {
                        *lock(&this.cert.current) = key;
                        tracing::info!(ttl = ?this.ttl, "the control plane's TLS certificate was renewed");
                    }
                    // The current one is still valid for half its life: retry soon.
                    Err(e) => {
                        tracing::error!(error = %e, "cannot renew the control plane's TLS certificate; retrying in 1 min");
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }
            }
        })
    }

    /// TLS connections accepted on `listener`; each handshake runs on its own task, so
    /// a slow or silent client holds up no one.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<tokio::net::TcpStream>>>
    {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "15012: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let out = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = out.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "15012: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "15012: TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Installs ring as the process's default rustls provider, before any TLS is set up (a
/// second provider compiled in by a dependency would otherwise make rustls panic).
pub fn install_crypto_provider() {
    let _ = provider().as_ref().clone().install_default();
}

/// The one crypto provider of the project: ring (kube's default; rcgen, tonic and the
/// CA use it too). rustls marks it deprecated for lacking post-quantum key exchange,
/// which the mesh's internal TLS does not offer yet either.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(
    ca: &CertificateAuthority,
    names: &[String],
    ttl: Duration,
) -> Result<Arc<CertifiedKey>, SecureError> {
    let (chain_pem, key_pem) = ca.sign_server(names, ttl)?;
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecureError::Key(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| SecureError::Key(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| SecureError::Key(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}
