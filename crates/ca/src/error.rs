//! What the CA can fail at; each message names the file or the caller and what to do.

use std::path::PathBuf;

/// Loading, creating or using the CA's keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
    #[error("cacerts directory {}: {problem}", dir.display())]
    Bundle { dir: PathBuf, problem: String },
    #[error("cannot create a certificate: {0}")]
    Generate(String),
}

impl CaError {
    pub(crate) fn invalid(path: &std::path::Path, problem: impl Into<String>) -> Self {
        CaError::Invalid {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Generate(e.to_string())
    }
}

/// Why a certificate request is refused. Each says which rule the caller broke.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("the CSR is not valid: {0}")]
    Csr(String),
    #[error(
        "the CSR asks for {requested}, but the caller's token is for {allowed} (a workload may only get a certificate for its own namespace and service account)"
    )]
    IdentityMismatch { requested: String, allowed: String },
    #[error("the CSR names no identity: it needs one URI SAN spiffe://TRUST_DOMAIN/ns/NS/sa/SA")]
    NoIdentity,
    #[error("the requested validity {requested_s} s exceeds the CA's maximum {max_s} s")]
    TtlTooLong { requested_s: i64, max_s: i64 },
    #[error("cannot sign: {0}")]
    Sign(String),
}
