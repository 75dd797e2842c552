//! The mesh's certificate authority.
//!
//! - [`CertificateAuthority`]: a plug-in CA from a `cacerts` directory in Istio's layout
//!   (Istio's own sample cacerts load unchanged) or a self-signed root kept in the state
//!   directory; signs CSRs into SPIFFE workload certificates
//!   (`spiffe://TRUST_DOMAIN/ns/NS/sa/SA`, 24 h by default).
//! - [`create_cacerts`]: a root and one intermediate per cluster, Istio's layout.
//! - [`TokenVerifier`]: service-account tokens (JWT, audience `istio-ca`) checked against
//!   each cluster's issuer keys; [`TokenIssuer`] signs such tokens where no kubelet does
//!   (the lab).
//! - [`CaService`]: Istio's CA API (`istio.v1.auth.IstioCertificateService`) on gRPC.
//!
//! It must not know about xDS or proxies: the control plane mounts the service, the
//! agent is its client.
#![forbid(unsafe_code)]

mod authority;
mod cacerts;
mod error;
mod mesh;
mod pem_io;
mod service;
mod token;

/// Istio's CA messages and service (package `istio.v1.auth`).
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("istio.v1.auth");
}

pub use authority::{
    CaSource, CertificateAuthority, DEFAULT_WORKLOAD_CERT_TTL, IssuedCertificate,
    MAX_WORKLOAD_CERT_TTL,
};
pub use cacerts::{CreatedCacerts, ROOT_KEY, create_cacerts};
pub use error::{CaError, SignError};
pub use mesh::{SELF_SIGNED_DIR, authority_for_mesh, verifier_for_mesh};
pub use pem_io::certificate_pem;
pub use service::{CLUSTER_ID_METADATA, CaService};
pub use token::{AuthError, CA_AUDIENCE, Caller, ClusterIssuer, TokenIssuer, TokenVerifier};
