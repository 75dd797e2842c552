//! PEM files as the CA reads them: certificates (one or several per file) and private
//! keys in PKCS #8 or, as Istio's tools write them, PKCS #1 (`RSA PRIVATE KEY`).

use std::path::Path;

use rcgen::KeyPair;

use crate::CaError;

/// Reads a file whole, naming it when it cannot.
pub(crate) fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file, creating its directory; private keys get mode 0600.
pub(crate) fn write(path: &Path, text: &str, private: bool) -> Result<(), CaError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CaError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(err)
}

/// The DER certificates in PEM text (`CERTIFICATE` blocks), in order.
pub(crate) fn certificates(path: &Path, text: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let blocks =
        pem::parse_many(text).map_err(|e| CaError::invalid(path, format!("not valid PEM: {e}")))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(CaError::invalid(path, "holds no CERTIFICATE"));
    }
    Ok(certs)
}

/// A DER certificate as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The private key in a PEM file (PKCS #8 `PRIVATE KEY` of RSA, ECDSA P-256/P-384 or
/// Ed25519, or PKCS #1 `RSA PRIVATE KEY`).
pub(crate) fn private_key(path: &Path, text: &str) -> Result<KeyPair, CaError> {
    let block =
        pem::parse(text).map_err(|e| CaError::invalid(path, format!("not valid PEM: {e}")))?;
    let pkcs8 = match block.tag() {
        "PRIVATE KEY" => block.contents().to_vec(),
        "RSA PRIVATE KEY" => pkcs1_to_pkcs8(block.contents()),
        "EC PRIVATE KEY" => {
            return Err(CaError::invalid(
                path,
                "an SEC1 `EC PRIVATE KEY` is not supported; convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pkcs8`",
            ));
        }
        other => {
            return Err(CaError::invalid(
                path,
                format!("holds a {other:?} block, not a private key"),
            ));
        }
    };
    KeyPair::try_from(pkcs8.as_slice()).map_err(|e| {
        CaError::invalid(
            path,
            format!("not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519): {e}"),
        )
    })
}

/// Wraps a PKCS #1 `RSAPrivateKey` in a PKCS #8 `PrivateKeyInfo` (RFC 5208):
/// `SEQUENCE { INTEGER 0, AlgorithmIdentifier { rsaEncryption, NULL }, OCTET STRING key }`.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const VERSION_0: &[u8] = &[0x02, 0x01, 0x00];
    const RSA_ENCRYPTION: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let key = der_tlv(0x04, pkcs1);
    let body = [VERSION_0, RSA_ENCRYPTION, &key].concat();
    der_tlv(0x30, &body)
}

/// One DER tag-length-value.
fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der_tlv(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        assert_eq!(&der_tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(&der_tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn istio_sample_pkcs1_key_loads() {
        let path =
            isthmus_testkit::workspace_root().join("../shared/istio/samples/certs/ca-key.pem");
        let Ok(text) = std::fs::read_to_string(&path) else {
            isthmus_testkit::skip(
                "istio sample key",
                "../shared/istio is not beside the checkout",
            );
            return;
        };
        let key = private_key(&path, &text).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_RSA_SHA256);
    }

    #[test]
    fn not_a_key_says_what_it_holds() {
        let e = private_key(
            Path::new("x.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.pem") && e.contains("CERTIFICATE"), "{e}");
    }
}
