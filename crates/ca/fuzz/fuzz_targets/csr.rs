//! Certificate signing requests as a workload sends them to the CA
//! (`CertificateAuthority::sign_workload`): the PEM parser, x509-parser's DER parser
//! underneath it and, for requests whose signature holds, rcgen's reading of the
//! request, the CA's identity check and the signing. Finds panics and unbounded
//! allocation.
//!
//! Input: one selector byte, then the payload.
//! - bits 0-1 pick the caller's namespace and service account (`IDENTITIES`), bits 2-4
//!   the requested validity (`TTLS`);
//! - bit 7 clear: the payload as the CSR text, then the payload as DER wrapped in a PEM
//!   `CERTIFICATE REQUEST` block (so the DER parser sees every byte, not only what
//!   survives the PEM parser);
//! - bit 7 set: the payload is a CertificationRequestInfo (DER), which the target signs
//!   with a fixed Ed25519 key (`SIGNING_SEED`): a request that names that key passes the
//!   signature check, so the fuzzer reaches what comes after it (a mutated request
//!   never has a valid signature otherwise).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use isthmus_ca::{CertificateAuthority, MAX_WORKLOAD_CERT_TTL};
use ring::signature::Ed25519KeyPair;

/// The caller's namespace and service account, as its token would name them.
const IDENTITIES: [(&str, &str); 4] = [
    ("default", "default"),
    ("ns1", "sa1"),
    ("", ""),
    ("a/b", "c:d"),
];

/// Requested validities: the default (zero), short ones, the maximum and beyond it.
const TTLS: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_secs(1),
    Duration::from_secs(3600),
    Duration::from_secs(24 * 3600),
    MAX_WORKLOAD_CERT_TTL,
    Duration::from_secs(MAX_WORKLOAD_CERT_TTL.as_secs() + 1),
    Duration::MAX,
];

/// The seed of the Ed25519 key that signs requests in the signed mode. The committed
/// seeds of that mode (corpus/csr/signed-*) carry its public key.
const SIGNING_SEED: [u8; 32] = [0x42; 32];

/// One CA for the whole run: a self-signed root, made in a temporary directory that is
/// gone once the CA has loaded its keys.
fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        CertificateAuthority::self_signed(dir.path(), "cluster.local").expect("a self-signed CA")
    })
}

fn signing_key() -> &'static Ed25519KeyPair {
    static KEY: OnceLock<Ed25519KeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        Ed25519KeyPair::from_seed_unchecked(&SIGNING_SEED).expect("a 32-byte Ed25519 seed")
    })
}

/// A DER element: `tag`, the definite length, `content`.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A CertificationRequest: `info` as it is, signed with the Ed25519 key.
fn signed_request(info: &[u8]) -> Vec<u8> {
    let signature = signing_key().sign(info);
    let mut bits = vec![0u8]; // no unused bits
    bits.extend_from_slice(signature.as_ref());
    let mut body = info.to_vec();
    // AlgorithmIdentifier { id-Ed25519 } (RFC 8410: no parameters).
    body.extend_from_slice(&[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]);
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

/// `der` as a PEM block labelled `label`, 64 characters a line.
fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let (namespace, service_account) = IDENTITIES[usize::from(selector & 0b11)];
    let ttl = TTLS[usize::from((selector >> 2) & 0b111)];
    let ca = ca();
    if selector & 0x80 == 0 {
        let text = String::from_utf8_lossy(payload);
        let _ = ca.sign_workload(&text, namespace, service_account, ttl);
        let wrapped = pem_block("CERTIFICATE REQUEST", payload);
        let _ = ca.sign_workload(&wrapped, namespace, service_account, ttl);
    } else {
        let wrapped = pem_block("CERTIFICATE REQUEST", &signed_request(payload));
        let _ = ca.sign_workload(&wrapped, namespace, service_account, ttl);
    }
});
