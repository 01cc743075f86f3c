//! Trusting exactly one TLS certificate: the one whose DER has the pinned SHA-256, through
//! the shared verifier of [`iotseal_crypto_awslc::pin`] (TLS 1.3 only, signature always
//! checked, server name not checked). Used by the device transport, the load generator and
//! the threat lab.

use std::sync::Arc;

use rustls::ClientConfig;

/// A TLS 1.3 client configuration (aws-lc-rs) that trusts only the certificate whose DER has
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

/// A TLS 1.3 client configuration that accepts any certificate (the handshake signature is
/// still checked): only for the load generator's baseline mode, which sends nothing secret.
pub(crate) fn any_certificate_tls_config() -> Result<ClientConfig, rustls::Error> {
    config(None)
}

fn config(pin: Option<[u8; 32]>) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    iotseal_crypto_awslc::pin::pinned_client_config(pin, provider)
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
