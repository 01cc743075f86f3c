//! Trusting exactly one TLS certificate: the one whose DER has the pinned SHA-256, through
//! the workspace's one verifier, [`iotseal_crypto_rustcrypto::pin`] (TLS 1.3 only, signature
//! always checked, server name not checked), on the SDK's rustls provider
//! ([`tls_provider`]). Used by the device transport, the load generator and the threat lab.

use std::sync::Arc;

use rustls::ClientConfig;

/// A TLS 1.3 client configuration (on [`tls_provider`]) that trusts only the certificate whose DER has
/// SHA-256 `cert_sha256` (32 bytes).
pub fn pinned_tls_config(cert_sha256: &[u8]) -> Result<ClientConfig, rustls::Error> {
    let pin: [u8; 32] = cert_sha256.try_into().map_err(|_| {
        rustls::Error::General(format!(
            "certificate pin: {} bytes, expected a 32-byte SHA-256",
            cert_sha256.len()
        ))
    })?;
    config(Some(pin))
}

/// The rustls provider of the SDK's TLS: aws-lc-rs with the feature `aws-lc` (the default;
/// X25519MLKEM768 preferred), else ring with the feature `ring` (X25519; the readings are
/// protected end to end by the iotseal layer whatever TLS negotiates, docs/decisions.md D28).
pub fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc")]
    let p = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc")))]
    let p = rustls::crypto::ring::default_provider();
    Arc::new(p)
}

#[cfg(not(any(feature = "aws-lc", feature = "ring")))]
compile_error!("iotseal-device needs a TLS provider: the feature `aws-lc` (default) or `ring`");

fn config(pin: Option<[u8; 32]>) -> Result<ClientConfig, rustls::Error> {
    iotseal_crypto_rustcrypto::pin::pinned_client_config(pin, tls_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_must_be_a_sha256() {
        assert!(pinned_tls_config(&[0; 31]).is_err());
        assert!(pinned_tls_config(&[0; 33]).is_err());
        assert!(pinned_tls_config(&[0; 32]).is_ok());
    }
}
