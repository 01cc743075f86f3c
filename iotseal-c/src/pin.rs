//! libcurl's pin for the gateway's TLS certificate (feature `tls-pin`).
//!
//! The pins file names the certificate by SHA-256 of its DER (docs/protocol.md §18.2); libcurl's
//! `CURLOPT_PINNEDPUBLICKEY` names the public key instead: `sha256//` and the base64 of SHA-256
//! over the DER SubjectPublicKeyInfo. The certificate of the pins file is checked against its
//! hash before its key is taken, so the pin curl enforces is the key of exactly that
//! certificate.

use base64ct::{Base64, Encoding};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::{Decode, Encode};

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The first certificate of `pem` as DER.
fn first_der(pem: &str) -> Result<Vec<u8>, String> {
    let start = pem.find(BEGIN).ok_or("tls_cert_pem holds no certificate")?;
    let end = pem[start..]
        .find(END)
        .map(|e| start + e + END.len())
        .ok_or("tls_cert_pem: certificate without its END line")?;
    let (label, der) = x509_cert::der::pem::decode_vec(&pem.as_bytes()[start..end])
        .map_err(|e| format!("tls_cert_pem: {e}"))?;
    if label != "CERTIFICATE" {
        return Err("tls_cert_pem: not a certificate".to_string());
    }
    Ok(der)
}

/// `sha256//<base64>` for the certificate's public key, after checking the certificate
/// against `expected_sha256` (SHA-256 of its DER).
pub(crate) fn curl_pin(pem: &str, expected_sha256: &[u8; 32]) -> Result<String, String> {
    let der = first_der(pem)?;
    if Sha256::digest(&der).as_slice() != expected_sha256 {
        return Err(
            "tls_cert_pem does not match tls_cert_sha256: the pins file is damaged".to_string(),
        );
    }
    let cert = Certificate::from_der(&der).map_err(|e| format!("tls_cert_pem: {e}"))?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| format!("tls_cert_pem: {e}"))?;
    Ok(format!(
        "sha256//{}",
        Base64::encode_string(&Sha256::digest(&spki))
    ))
}
