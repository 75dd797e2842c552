//! The signing CA: a plug-in `cacerts` directory in Istio's layout, or a self-signed
//! root kept in the state directory; it turns CSRs into short-lived SPIFFE workload
//! certificates.
//!
//! Istio's layout (`istioctl`'s and Istio's samples): `ca-cert.pem` (the signing
//! certificate), `ca-key.pem` (its key), `root-cert.pem` (the root, or several during a
//! root rotation), `cert-chain.pem` (the signing certificate and any intermediates up to
//! the root).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pem_io::{self, certificate_pem};
use crate::{CaError, SignError};

/// Workload certificates live this long unless the caller asks for less (Istio's
/// `DEFAULT_WORKLOAD_CERT_TTL`).
pub const DEFAULT_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest validity a caller may ask for (Istio's `MAX_WORKLOAD_CERT_TTL`).
pub const MAX_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates start this long before they are signed, for clocks that run behind.
const BACKDATE: Duration = Duration::from_secs(60);
/// A self-signed root lives this long (Istio's self-signed root: 10 years).
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub(crate) const CA_CERT: &str = "ca-cert.pem";
pub(crate) const CA_KEY: &str = "ca-key.pem";
pub(crate) const ROOT_CERT: &str = "root-cert.pem";
pub(crate) const CERT_CHAIN: &str = "cert-chain.pem";

/// Where the CA's keys came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// A plug-in `cacerts` directory.
    Plugin(PathBuf),
    /// A self-signed root generated (or kept) in this directory.
    SelfSigned(PathBuf),
}

/// A certificate authority that signs workload certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// DER: the signing certificate first, then the intermediates up to the root (not
    /// included).
    chain: Vec<Vec<u8>>,
    /// DER: every trusted root (more than one during a root rotation).
    roots: Vec<Vec<u8>>,
    trust_domain: String,
    source: CaSource,
    /// Validity of a certificate whose request names none.
    pub default_ttl: Duration,
    /// The longest validity a request may ask for.
    pub max_ttl: Duration,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("source", &self.source)
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// What the CA issued for one request.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// PEM: the leaf, then the intermediates, then the root bundle (all roots in one
    /// string), as Istio's `CreateCertificate` answers.
    pub cert_chain: Vec<String>,
}

impl CertificateAuthority {
    /// Loads a plug-in CA from a `cacerts` directory in Istio's layout, checking that
    /// the key belongs to `ca-cert.pem`, that it is a CA, and that the chain leads to
    /// a root in `root-cert.pem`.
    pub fn load_plugin(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        Self::load(dir, trust_domain, CaSource::Plugin(dir.to_path_buf()))
    }

    fn load(dir: &Path, trust_domain: &str, source: CaSource) -> Result<Self, CaError> {
        let bundle = |problem: String| CaError::Bundle {
            dir: dir.to_path_buf(),
            problem,
        };
        for file in [CA_CERT, CA_KEY, ROOT_CERT] {
            if !dir.join(file).is_file() {
                return Err(bundle(format!(
                    "{file} is missing (a cacerts directory holds {CA_CERT}, {CA_KEY}, {ROOT_CERT} and {CERT_CHAIN}; `isthmus create-cacerts` makes one)"
                )));
            }
        }
        let cert_path = dir.join(CA_CERT);
        let ca_cert = pem_io::certificates(&cert_path, &pem_io::read(&cert_path)?)?.remove(0);
        let key_path = dir.join(CA_KEY);
        let key = pem_io::private_key(&key_path, &pem_io::read(&key_path)?)?;
        let root_path = dir.join(ROOT_CERT);
        let roots = pem_io::certificates(&root_path, &pem_io::read(&root_path)?)?;
        let chain_path = dir.join(CERT_CHAIN);
        let mut chain = if chain_path.is_file() {
            pem_io::certificates(&chain_path, &pem_io::read(&chain_path)?)?
        } else {
            Vec::new()
        };
        if chain.first() != Some(&ca_cert) {
            chain.insert(0, ca_cert.clone());
        }
        // Roots are the trust bundle's business, not the chain's.
        chain.retain(|c| c == &ca_cert || !roots.contains(c));

        let parsed = parse(&cert_path, &ca_cert)?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bundle(format!(
                "{CA_KEY} is not the key of {CA_CERT} (they must be a pair)"
            )));
        }
        if !parsed.is_ca() {
            return Err(bundle(format!(
                "{CA_CERT} is not a CA certificate (basicConstraints CA:TRUE)"
            )));
        }
        if !parsed.validity().is_valid() {
            return Err(bundle(format!(
                "{CA_CERT} is not valid now (valid {} to {})",
                parsed.validity().not_before,
                parsed.validity().not_after
            )));
        }
        verify_chain(&chain, &roots).map_err(bundle)?;
        if let Some(left) = parsed.validity().time_to_expiration()
            && left < time::Duration::days(30)
        {
            tracing::warn!(cert = %cert_path.display(), days_left = left.whole_days(), "the CA's signing certificate expires soon; plug in a new one");
        }
        let issuer = Issuer::from_ca_cert_der(&ca_cert.clone().into(), key)?;
        Ok(CertificateAuthority {
            issuer,
            chain,
            roots,
            trust_domain: trust_domain.to_string(),
            source,
            default_ttl: DEFAULT_WORKLOAD_CERT_TTL,
            max_ttl: MAX_WORKLOAD_CERT_TTL,
        })
    }

    /// The self-signed CA kept in `state_dir` (made there the first time): a root that
    /// signs workload certificates itself. Clusters with separate self-signed roots do
    /// not trust each other; plug in a shared root for a multicluster mesh.
    pub fn self_signed(state_dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let source = CaSource::SelfSigned(state_dir.to_path_buf());
        if !state_dir.join(CA_CERT).is_file() {
            let key = KeyPair::generate()?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, trust_domain);
            let mut params = ca_params(dn, ROOT_TTL);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key)?;
            let pem = cert.pem();
            pem_io::write(&state_dir.join(CA_KEY), &key.serialize_pem(), true)?;
            for file in [CA_CERT, ROOT_CERT, CERT_CHAIN] {
                pem_io::write(&state_dir.join(file), &pem, false)?;
            }
            tracing::info!(dir = %state_dir.display(), "generated a self-signed root CA");
        }
        let ca = Self::load(state_dir, trust_domain, source)?;
        tracing::warn!(
            dir = %state_dir.display(),
            "using a SELF-SIGNED root CA: workloads of clusters with other roots will NOT trust these; plug in shared cacerts (mesh.yaml ca.cacerts; `isthmus create-cacerts`) for a multicluster mesh"
        );
        Ok(ca)
    }

    /// Where the CA's keys came from.
    pub fn source(&self) -> &CaSource {
        &self.source
    }

    /// The trust domain of the identities it signs.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trusted roots as one PEM bundle.
    pub fn root_bundle_pem(&self) -> String {
        self.roots.iter().map(|r| certificate_pem(r)).collect()
    }

    /// The trusted roots (DER).
    pub fn roots(&self) -> &[Vec<u8>] {
        &self.roots
    }

    /// Signs `csr_pem` for the workload `namespace`/`service_account`: the CSR's URI
    /// SANs must all be that workload's SPIFFE identity (the CSR's key is what is
    /// certified; everything else in the certificate is the CA's choice, as in Istio's
    /// `CreateCertificate`). `ttl` of zero means the default.
    pub fn sign_workload(
        &self,
        csr_pem: &str,
        namespace: &str,
        service_account: &str,
        ttl: Duration,
    ) -> Result<IssuedCertificate, SignError> {
        let allowed = isthmus_model::spiffe_id(&self.trust_domain, namespace, service_account);
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| SignError::Csr(e.to_string()))?;
        let requested: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::URI(uri) => Some(uri.as_str().to_string()),
                _ => None,
            })
            .collect();
        if requested.is_empty() {
            return Err(SignError::NoIdentity);
        }
        if let Some(other) = requested.iter().find(|r| **r != allowed) {
            return Err(SignError::IdentityMismatch {
                requested: other.clone(),
                allowed,
            });
        }
        let ttl = self.checked_ttl(ttl)?;
        let uri = rcgen::string::Ia5String::try_from(allowed.as_str())
            .map_err(|e| SignError::Sign(e.to_string()))?;
        let leaf = self
            .leaf_params(vec![SanType::URI(uri)], ttl)
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        Ok(self.issued(leaf.der()))
    }

    /// A certificate and its new key for a server of the control plane itself (DNS
    /// names), e.g. the xDS/CA listener on 15012. Returns (chain PEM, key PEM).
    pub fn sign_server(
        &self,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate()?;
        let sans = dns_names
            .iter()
            .map(|n| {
                Ok(SanType::DnsName(rcgen::string::Ia5String::try_from(
                    n.as_str(),
                )?))
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        let cert = self.leaf_params(sans, ttl).signed_by(&key, &self.issuer)?;
        let issued = self.issued(cert.der());
        let chain: String = issued.cert_chain[..issued.cert_chain.len() - 1].concat();
        Ok((chain, key.serialize_pem()))
    }

    fn checked_ttl(&self, ttl: Duration) -> Result<Duration, SignError> {
        if ttl.is_zero() {
            return Ok(self.default_ttl);
        }
        if ttl > self.max_ttl {
            return Err(SignError::TtlTooLong {
                requested_s: ttl.as_secs() as i64,
                max_s: self.max_ttl.as_secs() as i64,
            });
        }
        Ok(ttl)
    }

    /// A leaf: no subject, the given SANs, not a CA, digitalSignature +
    /// keyEncipherment, serverAuth + clientAuth, a random serial.
    fn leaf_params(&self, sans: Vec<SanType>, ttl: Duration) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ttl;
        params
    }

    fn issued(&self, leaf: &[u8]) -> IssuedCertificate {
        let mut cert_chain = vec![certificate_pem(leaf)];
        cert_chain.extend(
            self.chain
                .iter()
                .filter(|c| !self.roots.contains(c))
                .map(|c| certificate_pem(c)),
        );
        cert_chain.push(self.root_bundle_pem());
        IssuedCertificate { cert_chain }
    }
}

/// A CA certificate's parameters: subject `dn`, certificate and CRL signing, a random
/// serial, valid for `ttl` from a minute ago. The caller sets the CA constraints.
pub(crate) fn ca_params(dn: DistinguishedName, ttl: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + ttl;
    params
}

/// A positive random 128-bit serial number.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source works");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

pub(crate) fn parse<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, CaError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CaError::invalid(path, format!("not a valid X.509 certificate: {e}")))
}

/// Checks that each certificate of `chain` is signed by the next, and the last by one
/// of `roots`.
pub(crate) fn verify_chain(chain: &[Vec<u8>], roots: &[Vec<u8>]) -> Result<(), String> {
    fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
        X509Certificate::from_der(der)
            .map(|(_, c)| c)
            .map_err(|e| format!("a certificate does not parse: {e}"))
    }
    let chain: Vec<X509Certificate> = chain.iter().map(|c| parse(c)).collect::<Result<_, _>>()?;
    let roots: Vec<X509Certificate> = roots.iter().map(|c| parse(c)).collect::<Result<_, _>>()?;
    for pair in chain.windows(2) {
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .map_err(|_| {
                format!(
                    "{} is not signed by {} ({CERT_CHAIN} must run from {CA_CERT} up to the root)",
                    pair[0].subject(),
                    pair[1].subject()
                )
            })?;
    }
    let Some(top) = chain.last() else {
        return Err("the chain is empty".into());
    };
    // A self-signed signing certificate is its own root.
    if roots
        .iter()
        .any(|root| top.verify_signature(Some(root.public_key())).is_ok())
    {
        return Ok(());
    }
    Err(format!(
        "{} (issuer {}) is not signed by any root in {ROOT_CERT} ({})",
        top.subject(),
        top.issuer(),
        roots
            .iter()
            .map(|r| r.subject().to_string())
            .collect::<Vec<_>>()
            .join("; ")
    ))
}
