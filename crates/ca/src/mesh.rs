//! The CA and the token verifier as mesh.yaml describes them.

use isthmus_model::MeshConfig;

use crate::{CaError, CertificateAuthority, ClusterIssuer, TokenVerifier};

/// The directory under the state directory that holds a self-signed root.
pub const SELF_SIGNED_DIR: &str = "ca";

/// The CA of `mesh.ca` (plug-in `cacerts`, else a self-signed root in
/// `stateDir/ca`) with the mesh's certificate lifetimes.
pub fn authority_for_mesh(mesh: &MeshConfig) -> Result<CertificateAuthority, CaError> {
    let mut ca = match &mesh.ca.cacerts {
        Some(dir) => CertificateAuthority::load_plugin(&mesh.resolve(dir), &mesh.trust_domain)?,
        None => CertificateAuthority::self_signed(
            &mesh.resolve(&mesh.ca.state_dir).join(SELF_SIGNED_DIR),
            &mesh.trust_domain,
        )?,
    };
    ca.default_ttl = mesh.workload_cert_ttl();
    ca.max_ttl = mesh.max_workload_cert_ttl();
    Ok(ca)
}

/// Each cluster's `serviceAccountIssuer` keys. A cluster without one cannot get
/// certificates for its workloads; that is logged once here.
pub fn verifier_for_mesh(mesh: &MeshConfig) -> Result<TokenVerifier, CaError> {
    let mut verifier = TokenVerifier::new();
    for cluster in &mesh.clusters {
        match &cluster.service_account_issuer {
            Some(issuer) => verifier.insert(
                cluster.name.as_str(),
                ClusterIssuer::load(&mesh.resolve(&issuer.jwks), issuer.issuer.clone())?,
            ),
            None => tracing::warn!(
                cluster = %cluster.name,
                "cluster has no serviceAccountIssuer in mesh.yaml: the CA will refuse its workloads (name the JWKS of its token issuer)"
            ),
        }
    }
    Ok(verifier)
}
