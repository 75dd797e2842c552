//! Service-account tokens as a caller presents them to the CA
//! (`TokenVerifier::verify`): jsonwebtoken's splitting and base64, the header's JSON,
//! the key choice and, for tokens whose signature holds, the claims' JSON, their
//! validation and Isthmus's reading of them. Finds panics, unbounded allocation, and
//! a token accepted for its cluster but not (or as someone else) without one.
//!
//! The verifier knows two clusters:
//! - `c1`: the JWKS of a `TokenIssuer` whose key is committed here
//!   (`token-issuer-key.pem`, a test key of no other use), `iss` required; the
//!   committed valid tokens (corpus/token/valid-*) are signed with it;
//! - `c2`: an HS256 (`kty: oct`) JWKS whose secret the target knows, no `iss` required,
//!   so that the target can sign fuzzed claims and they reach the claims parser (a
//!   mutated ES256 token never has a valid signature).
//!
//! Input: one selector byte, then the payload; by `selector & 3`:
//! - 0 or 3: the payload is the token (lossy UTF-8);
//! - 1: the payload split at 0xFF bytes into header, claims and signature, each
//!   base64url-encoded, joined with '.';
//! - 2: the payload split at 0xFF into header and claims, each base64url-encoded,
//!   signed HS256 with `c2`'s secret.
//!
//! Each token is verified for its cluster (`c1`; `c2` for 2) and for any cluster.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use isthmus_ca::{ClusterIssuer, TokenIssuer, TokenVerifier};

/// The `iss` of `c1`'s tokens.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// `c2`'s HS256 secret.
const HMAC_SECRET: &[u8] = b"isthmus-ca-fuzz-hmac-secret-0001";
/// The `kid` of `c2`'s key.
const HMAC_KID: &str = "fuzz-hmac";

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        // TokenIssuer loads its key from a file; the directory is gone once it has.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("token-issuer-key.pem");
        std::fs::write(&path, include_str!("../token-issuer-key.pem")).expect("write the key");
        let issuer = TokenIssuer::load_or_create(&path, ISSUER).expect("the committed key loads");
        let mut verifier = TokenVerifier::new();
        verifier.insert(
            "c1",
            ClusterIssuer::from_jwks(&issuer.jwks(), Some(ISSUER.to_string()))
                .expect("a TokenIssuer's JWKS"),
        );
        let oct = format!(
            r#"{{"keys":[{{"kty":"oct","alg":"HS256","kid":"{HMAC_KID}","k":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(HMAC_SECRET)
        );
        verifier.insert(
            "c2",
            ClusterIssuer::from_jwks(&oct, None).expect("an oct JWKS"),
        );
        verifier
    })
}

fn hmac_key() -> &'static ring::hmac::Key {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HMAC_SECRET))
}

/// The first `N` pieces of `payload` split at 0xFF bytes (missing ones empty; the last
/// takes the rest, 0xFF bytes included).
fn pieces<const N: usize>(payload: &[u8]) -> [&[u8]; N] {
    let mut out = [&[][..]; N];
    for (slot, piece) in out.iter_mut().zip(payload.splitn(N, |b| *b == 0xFF)) {
        *slot = piece;
    }
    out
}

fn check(cluster: &str, token: &str) {
    let verifier = verifier();
    let named = verifier.verify(Some(cluster), token);
    let any = verifier.verify(None, token);
    // The clusters' keys differ, so a token good for its cluster is that cluster's
    // caller without one too (clusters are tried in order, `c1` first).
    if let Ok(caller) = &named {
        assert_eq!(
            any.as_ref(),
            Ok(caller),
            "accepted for {cluster} but not the same without a cluster"
        );
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    match selector & 0b11 {
        1 => {
            let [header, claims, signature] = pieces::<3>(payload);
            let token = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims),
                URL_SAFE_NO_PAD.encode(signature)
            );
            check("c1", &token);
        }
        2 => {
            let [header, claims] = pieces::<2>(payload);
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let tag = ring::hmac::sign(hmac_key(), message.as_bytes());
            let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
            check("c2", &token);
        }
        _ => check("c1", &String::from_utf8_lossy(payload)),
    }
});
