//! Service-account tokens: who is asking the CA. A token is a JWT as a kubelet
//! projects it into a pod (audience `istio-ca`), verified against the public keys
//! (JWKS) of the issuer of the caller's cluster: signature, audience, expiry and,
//! when configured, issuer. The identity is the token's namespace and service account.
//!
//! [`TokenIssuer`] is the other side, for clusters without a kubelet (the lab): an
//! ES256 key that signs such tokens and publishes its JWKS.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::CaError;
use crate::pem_io;

/// The audience Istio's agents request for the CA (`istio-ca`).
pub const CA_AUDIENCE: &str = "istio-ca";

/// Why a caller is not authenticated; each says what is wrong with its token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "no bearer token: send the pod's service-account token in the `authorization: Bearer TOKEN` metadata"
    )]
    NoToken,
    #[error(
        "unknown cluster {0:?}: the control plane has no issuer keys for it (mesh.yaml clusters[].serviceAccountIssuer)"
    )]
    UnknownCluster(String),
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (its nbf is in the future; check the clocks)")]
    NotYetValid,
    #[error(
        "the token's audience is not {CA_AUDIENCE:?} (project the token with audience {CA_AUDIENCE})"
    )]
    WrongAudience,
    #[error("the token's issuer is not {expected:?}")]
    WrongIssuer { expected: String },
    #[error(
        "the token is not signed by the issuer of cluster {0} (a token of another cluster, or a forged one)"
    )]
    BadSignature(String),
    #[error("the token is not signed by the issuer of any known cluster")]
    NoIssuer,
    #[error(
        "the token names no service account (claim kubernetes.io.serviceaccount or sub system:serviceaccount:NS:SA)"
    )]
    NoServiceAccount,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub cluster: String,
    pub namespace: String,
    pub service_account: String,
}

/// One cluster's token issuer: its public keys and, optionally, its `iss`.
#[derive(Clone)]
pub struct ClusterIssuer {
    keys: JwkSet,
    issuer: Option<String>,
}

impl ClusterIssuer {
    /// The issuer whose public keys are the JWKS document `jwks` (as the API server
    /// serves at `/openid/v1/jwks`).
    pub fn from_jwks(jwks: &str, issuer: Option<String>) -> Result<Self, String> {
        let keys: JwkSet =
            serde_json::from_str(jwks).map_err(|e| format!("not a JWKS document: {e}"))?;
        if keys.keys.is_empty() {
            return Err("the JWKS document holds no keys".into());
        }
        Ok(ClusterIssuer { keys, issuer })
    }

    /// Reads a JWKS file.
    pub fn load(path: &Path, issuer: Option<String>) -> Result<Self, CaError> {
        Self::from_jwks(&pem_io::read(path)?, issuer).map_err(|p| CaError::invalid(path, p))
    }
}

/// Verifies tokens against each cluster's issuer.
#[derive(Clone, Default)]
pub struct TokenVerifier {
    clusters: BTreeMap<String, ClusterIssuer>,
}

/// The claims Isthmus reads.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(rename = "kubernetes.io", default)]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Debug, Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: NamedClaim,
}

#[derive(Debug, Deserialize)]
struct NamedClaim {
    name: String,
}

impl TokenVerifier {
    pub fn new() -> Self {
        TokenVerifier::default()
    }

    /// Adds (or replaces) a cluster's issuer.
    pub fn insert(&mut self, cluster: &str, issuer: ClusterIssuer) {
        self.clusters.insert(cluster.to_string(), issuer);
    }

    /// Whether any cluster's issuer is known.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Authenticates `token` as a workload of `cluster`; without a cluster, of the one
    /// cluster whose issuer signed it.
    pub fn verify(&self, cluster: Option<&str>, token: &str) -> Result<Caller, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        match cluster {
            Some(name) => {
                let issuer = self
                    .clusters
                    .get(name)
                    .ok_or_else(|| AuthError::UnknownCluster(name.to_string()))?;
                verify_with(name, issuer, &header, token)
            }
            None => {
                let mut last = AuthError::NoIssuer;
                for (name, issuer) in &self.clusters {
                    match verify_with(name, issuer, &header, token) {
                        Ok(caller) => return Ok(caller),
                        Err(AuthError::BadSignature(_)) => {}
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }
}

fn verify_with(
    cluster: &str,
    issuer: &ClusterIssuer,
    header: &jsonwebtoken::Header,
    token: &str,
) -> Result<Caller, AuthError> {
    // Keys named by the token's `kid` first; without a match, every key of the set.
    let named: Vec<_> = issuer
        .keys
        .keys
        .iter()
        .filter(|k| header.kid.is_some() && k.common.key_id == header.kid)
        .collect();
    let candidates = if named.is_empty() {
        issuer.keys.keys.iter().collect()
    } else {
        named
    };
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[CA_AUDIENCE]);
    // `exp` required; a missing `aud` fails the audience check. (With both required the
    // error for a token missing both would depend on a hash set's order.)
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_nbf = true;
    if let Some(iss) = &issuer.issuer {
        validation.set_issuer(&[iss]);
    }
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
            Ok(data) => return caller(cluster, data.claims),
            Err(e) => match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidKeyFormat => {}
                ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                ErrorKind::ImmatureSignature => return Err(AuthError::NotYetValid),
                ErrorKind::InvalidAudience => return Err(AuthError::WrongAudience),
                ErrorKind::InvalidIssuer => {
                    return Err(AuthError::WrongIssuer {
                        expected: issuer.issuer.clone().unwrap_or_default(),
                    });
                }
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                    return Err(AuthError::WrongAudience);
                }
                _ => return Err(AuthError::Malformed(e.to_string())),
            },
        }
    }
    Err(AuthError::BadSignature(cluster.to_string()))
}

fn caller(cluster: &str, claims: Claims) -> Result<Caller, AuthError> {
    let (namespace, service_account) = match claims.kubernetes {
        Some(k) => (k.namespace, k.serviceaccount.name),
        None => {
            let rest = claims
                .sub
                .strip_prefix("system:serviceaccount:")
                .ok_or(AuthError::NoServiceAccount)?;
            let (ns, sa) = rest.split_once(':').ok_or(AuthError::NoServiceAccount)?;
            (ns.to_string(), sa.to_string())
        }
    };
    if namespace.is_empty() || service_account.is_empty() {
        return Err(AuthError::NoServiceAccount);
    }
    Ok(Caller {
        cluster: cluster.to_string(),
        namespace,
        service_account,
    })
}

/// A token issuer like a cluster's API server: an ECDSA P-256 key that signs
/// service-account tokens (ES256) and whose public key is published as a JWKS.
pub struct TokenIssuer {
    key: rcgen::KeyPair,
    encoding: EncodingKey,
    kid: String,
    issuer: String,
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    sub: String,
    aud: Vec<&'a str>,
    exp: u64,
    iat: u64,
    nbf: u64,
    #[serde(rename = "kubernetes.io")]
    kubernetes: serde_json::Value,
}

impl TokenIssuer {
    /// A new issuer with a fresh key.
    pub fn generate(issuer: &str) -> Result<Self, CaError> {
        Self::from_key(
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            issuer,
        )
    }

    /// The issuer whose key is in `path`, made there (mode 0600) if there is none yet.
    pub fn load_or_create(path: &Path, issuer: &str) -> Result<Self, CaError> {
        if path.exists() {
            let key = pem_io::private_key(path, &pem_io::read(path)?)?;
            if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
                return Err(CaError::invalid(
                    path,
                    "a token issuer key must be ECDSA P-256",
                ));
            }
            return Self::from_key(key, issuer);
        }
        let made = Self::generate(issuer)?;
        pem_io::write(path, &made.key.serialize_pem(), true)?;
        Ok(made)
    }

    fn from_key(key: rcgen::KeyPair, issuer: &str) -> Result<Self, CaError> {
        let encoding = EncodingKey::from_ec_der(&key.serialize_der());
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        Ok(TokenIssuer {
            key,
            encoding,
            kid,
            issuer: issuer.to_string(),
        })
    }

    /// The `iss` of its tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> String {
        // The uncompressed point: 0x04 || x || y.
        let point = self.key.public_key_raw();
        let (x, y) = point[1..].split_at(32);
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
        .to_string()
    }

    /// A token for `namespace`/`service_account` (pod `pod`) with `audience`, valid
    /// for `ttl` from now.
    pub fn issue(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
        audience: &str,
        ttl: Duration,
    ) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.issue_at(namespace, service_account, pod, audience, now, ttl)
    }

    /// As [`TokenIssuer::issue`], issued at `iat` (seconds since the epoch).
    pub fn issue_at(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
        audience: &str,
        iat: u64,
        ttl: Duration,
    ) -> String {
        let claims = IssuedClaims {
            iss: &self.issuer,
            sub: format!("system:serviceaccount:{namespace}:{service_account}"),
            aud: vec![audience],
            exp: iat + ttl.as_secs(),
            iat,
            nbf: iat,
            kubernetes: serde_json::json!({
                "namespace": namespace,
                "pod": {"name": pod},
                "serviceaccount": {"name": service_account},
            }),
        };
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("an ES256 key from rcgen signs")
    }
}
