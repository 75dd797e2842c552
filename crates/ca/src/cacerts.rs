//! `isthmus create-cacerts`: a root and one intermediate CA per cluster, in Istio's
//! plug-in layout, so clusters share a root of trust but not a signing key.
//!
//! ```text
//! DIR/root-cert.pem  DIR/root-key.pem
//! DIR/NAME/ca-cert.pem  ca-key.pem  root-cert.pem  cert-chain.pem (ca-cert + root)
//! ```
//! An existing root in DIR is reused, so clusters can be added later.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

use crate::CaError;
use crate::authority::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};
use crate::pem_io;

/// The root's key, beside `root-cert.pem` in DIR.
pub const ROOT_KEY: &str = "root-key.pem";
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const INTERMEDIATE_TTL: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

/// What `create_cacerts` made.
#[derive(Debug)]
pub struct CreatedCacerts {
    /// Whether the root was made now (else an existing one in DIR was used).
    pub new_root: bool,
    /// Each cluster's cacerts directory.
    pub clusters: Vec<PathBuf>,
}

/// Makes (or reuses) the root in `out` and an intermediate for each cluster. A
/// cluster that already has a directory there is refused rather than overwritten
/// (its workloads hold certificates from that key).
pub fn create_cacerts(out: &Path, clusters: &[String]) -> Result<CreatedCacerts, CaError> {
    let bundle = |problem: String| CaError::Bundle {
        dir: out.to_path_buf(),
        problem,
    };
    if clusters.is_empty() {
        return Err(bundle("name at least one cluster (--cluster NAME)".into()));
    }
    for name in clusters {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(bundle(format!(
                "{name:?} is not a usable cluster name (a directory is made for it)"
            )));
        }
        if out.join(name).join(CA_KEY).exists() {
            return Err(bundle(format!(
                "{name}/{CA_KEY} already exists; remove {} to make a new intermediate for {name}",
                out.join(name).display()
            )));
        }
    }
    let (root_cert, root_key, new_root) = root(out)?;
    let root_pem = pem_io::certificate_pem(&root_cert);
    let issuer = Issuer::from_ca_cert_der(&root_cert.clone().into(), root_key)?;
    let mut made = Vec::new();
    for name in clusters {
        let dir = out.join(name);
        let key = KeyPair::generate()?;
        let mut params = ca_params("Intermediate CA", INTERMEDIATE_TTL);
        params
            .distinguished_name
            .push(DnType::LocalityName, name.as_str());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        pem_io::write(&dir.join(CA_KEY), &key.serialize_pem(), true)?;
        pem_io::write(&dir.join(CA_CERT), &cert.pem(), false)?;
        pem_io::write(&dir.join(ROOT_CERT), &root_pem, false)?;
        pem_io::write(
            &dir.join(CERT_CHAIN),
            &format!("{}{root_pem}", cert.pem()),
            false,
        )?;
        made.push(dir);
    }
    Ok(CreatedCacerts {
        new_root,
        clusters: made,
    })
}

/// The root in `out`, made there if there is none.
fn root(out: &Path) -> Result<(Vec<u8>, KeyPair, bool), CaError> {
    let (cert_path, key_path) = (out.join(ROOT_CERT), out.join(ROOT_KEY));
    if cert_path.exists() || key_path.exists() {
        let cert = pem_io::certificates(&cert_path, &pem_io::read(&cert_path)?)?.remove(0);
        let key = pem_io::private_key(&key_path, &pem_io::read(&key_path)?)?;
        let parsed = crate::authority::parse(&cert_path, &cert)?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::invalid(
                &key_path,
                format!("is not the key of {ROOT_CERT}"),
            ));
        }
        return Ok((cert, key, false));
    }
    let key = KeyPair::generate()?;
    let mut params = ca_params("Root CA", ROOT_TTL);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    pem_io::write(&key_path, &key.serialize_pem(), true)?;
    pem_io::write(&cert_path, &cert.pem(), false)?;
    Ok((cert.der().to_vec(), key, true))
}

/// An Isthmus CA's subject: `O=Isthmus, CN=common_name`.
fn ca_params(common_name: &str, ttl: Duration) -> CertificateParams {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Isthmus");
    dn.push(DnType::CommonName, common_name);
    crate::authority::ca_params(dn, ttl)
}
