//! SDS for Envoy on a Unix socket, as Istio's agent serves it: the workload's
//! certificate chain and key as the secret `default`, the mesh's roots as `ROOTCA`.
//! A renewed certificate is pushed to every open stream; Envoy swaps it in for new
//! connections and keeps the ones it has.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::identity::WorkloadCertificate;

/// The secret holding the workload's certificate chain and key (Istio's name).
pub const WORKLOAD_SECRET: &str = "default";
/// The secret holding the trusted roots (Istio's name).
pub const ROOT_SECRET: &str = "ROOTCA";
/// The name of the static cluster in the bootstrap that reaches the SDS socket.
pub const SDS_CLUSTER: &str = "sds-grpc";
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

type Certs = watch::Receiver<Option<Arc<WorkloadCertificate>>>;

/// The SDS server's state: the current certificate.
#[derive(Clone)]
pub struct SdsServer {
    certs: Certs,
}

impl SdsServer {
    pub fn new(certs: Certs) -> Self {
        SdsServer { certs }
    }

    /// Serves SDS on a Unix socket at `path` until the task is dropped.
    pub fn serve(self, path: &Path) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let path: PathBuf = path.to_path_buf();
        Ok(tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(SecretDiscoveryServiceServer::new(self))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
            if let Err(e) = result {
                tracing::error!(socket = %path.display(), error = %e, "the SDS server stopped");
            }
        }))
    }
}

/// The named secrets from `cert`; unknown names are left out.
pub fn secrets(cert: &WorkloadCertificate, names: &[String]) -> Vec<Secret> {
    let inline = |text: &str| {
        Some(DataSource {
            specifier: Some(Specifier::InlineBytes(text.as_bytes().to_vec())),
            ..Default::default()
        })
    };
    names
        .iter()
        .filter_map(|name| {
            let kind = match name.as_str() {
                WORKLOAD_SECRET => secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(&cert.chain_pem),
                    private_key: inline(&cert.key_pem),
                    ..Default::default()
                }),
                ROOT_SECRET => secret::Type::ValidationContext(CertificateValidationContext {
                    trusted_ca: inline(&cert.roots_pem),
                    ..Default::default()
                }),
                other => {
                    tracing::warn!(secret = other, "Envoy asked for an unknown secret (only {WORKLOAD_SECRET} and {ROOT_SECRET} are served)");
                    return None;
                }
            };
            Some(Secret {
                name: name.clone(),
                r#type: Some(kind),
            })
        })
        .collect()
}

fn response(cert: &WorkloadCertificate, names: &[String], nonce: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: cert.serial.clone(),
        resources: secrets(cert, names)
            .into_iter()
            .map(|s| Any {
                type_url: SECRET_TYPE.into(),
                value: s.encode_to_vec(),
            })
            .collect(),
        type_url: SECRET_TYPE.into(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for SdsServer {
    type StreamSecretsStream = ResponseStream<DiscoveryResponse>;
    type DeltaSecretsStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut inbound = request.into_inner();
        let mut certs = self.certs.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut names: Vec<String> = Vec::new();
            let mut nonce = 0u64;
            // Whether the names asked for have been answered with the current certificate.
            let mut answered = true;
            loop {
                tokio::select! {
                    message = inbound.message() => {
                        let Ok(Some(req)) = message else { return };
                        if let Some(error) = &req.error_detail {
                            tracing::warn!(secrets = ?req.resource_names, message = %error.message, "Envoy rejected a secret");
                        }
                        if req.resource_names != names {
                            names = req.resource_names;
                            answered = false;
                        }
                    }
                    changed = certs.changed() => {
                        if changed.is_err() { return }
                        answered = false;
                    }
                }
                if answered || names.is_empty() {
                    continue;
                }
                let current = certs.borrow_and_update().clone();
                let Some(cert) = current else { continue };
                nonce += 1;
                if tx.send(Ok(response(&cert, &names, nonce))).await.is_err() {
                    return;
                }
                answered = true;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("SDS is served as State of the World"))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let current = self.certs.borrow().clone();
        let cert = current.ok_or_else(|| Status::unavailable("no workload certificate yet"))?;
        Ok(Response::new(response(
            &cert,
            &request.get_ref().resource_names,
            1,
        )))
    }
}
