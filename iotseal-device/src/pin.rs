//! Trusting exactly one TLS certificate: the one whose DER has the pinned SHA-256 (compared in
//! constant time). The TLS 1.3 handshake signature is always verified with that certificate's
//! key; the server name is not checked (the pin is the identity). TLS 1.3 only. Used by the
//! device transport, the load generator and the threat lab.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct};
use subtle::ConstantTimeEq;

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
    let verifier = PinnedCert {
        sha256: pin,
        provider: provider.clone(),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The verifier: `sha256` `None` accepts any certificate (baseline mode only).
#[derive(Debug)]
struct PinnedCert {
    sha256: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(want) = &self.sha256 else {
            return Ok(ServerCertVerified::assertion());
        };
        let got = iotseal_crypto_awslc::default_provider()
            .hash
            .hash(end_entity.as_ref());
        if bool::from(got.ct_eq(want)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
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

    #[test]
    fn only_the_pinned_certificate_is_accepted() {
        let cert = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let sha = iotseal_crypto_awslc::default_provider()
            .hash
            .hash(cert.as_ref());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let name = ServerName::try_from("gateway").unwrap();
        let check = |pin: Option<[u8; 32]>| {
            PinnedCert {
                sha256: pin,
                provider: provider.clone(),
            }
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .is_ok()
        };
        assert!(check(Some(sha)));
        let mut other = sha;
        other[31] ^= 1;
        assert!(!check(Some(other)));
        assert!(check(None), "baseline mode");
    }
}
