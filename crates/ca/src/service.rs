//! Istio's CA API, `istio.v1.auth.IstioCertificateService/CreateCertificate`: the caller
//! is authenticated by its service-account token, and gets a certificate for exactly
//! that identity.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::proto::{IstioCertificateRequest, IstioCertificateResponse};
use crate::{AuthError, CertificateAuthority, SignError, TokenVerifier};

/// The gRPC metadata that names the caller's cluster (Istio's agents send it).
pub const CLUSTER_ID_METADATA: &str = "clusterid";

/// The CA service; add it to a tonic server with [`CaService::server`].
#[derive(Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    verifier: Arc<TokenVerifier>,
}

impl CaService {
    pub fn new(ca: Arc<CertificateAuthority>, verifier: Arc<TokenVerifier>) -> Self {
        CaService { ca, verifier }
    }

    pub fn server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }

    /// Authenticates and signs one request (what the RPC does, without gRPC).
    pub fn create(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        request: &IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, Status> {
        let token = bearer(metadata).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let cluster = metadata
            .get(CLUSTER_ID_METADATA)
            .and_then(|v| v.to_str().ok())
            .filter(|c| !c.is_empty());
        let caller = self.verifier.verify(cluster, token).map_err(|e| {
            tracing::warn!(cluster = cluster.unwrap_or("?"), error = %e, "CA: caller refused");
            Status::unauthenticated(format!("authentication failed: {e}"))
        })?;
        if request.validity_duration < 0 {
            return Err(Status::invalid_argument(format!(
                "validity_duration {} is negative",
                request.validity_duration
            )));
        }
        let ttl = Duration::from_secs(request.validity_duration as u64);
        let issued = self
            .ca
            .sign_workload(&request.csr, &caller.namespace, &caller.service_account, ttl)
            .map_err(|e| {
                tracing::warn!(cluster = %caller.cluster, namespace = %caller.namespace, service_account = %caller.service_account, error = %e, "CA: request refused");
                match e {
                    SignError::IdentityMismatch { .. } => Status::permission_denied(e.to_string()),
                    SignError::Sign(_) => Status::internal(e.to_string()),
                    _ => Status::invalid_argument(e.to_string()),
                }
            })?;
        tracing::debug!(cluster = %caller.cluster, namespace = %caller.namespace, service_account = %caller.service_account, "CA: certificate issued");
        Ok(IstioCertificateResponse {
            cert_chain: issued.cert_chain,
        })
    }
}

/// The token of `authorization: Bearer TOKEN`.
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<&str, AuthError> {
    let value = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::NoToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NoToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::NoToken);
    }
    Ok(token.trim())
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let this = self.clone();
        // Signing (RSA above all) is CPU work: off the async threads.
        tokio::task::spawn_blocking(move || this.create(request.metadata(), request.get_ref()))
            .await
            .map_err(|e| Status::internal(format!("the signer failed: {e}")))?
            .map(Response::new)
    }
}
