//! Trusting exactly one TLS certificate (feature `rustls`): the one whose DER has the pinned
//! SHA-256, compared in constant time. The TLS 1.3 handshake signature is always verified
//! with that certificate's key; the server name is not checked (the pin is the identity).
//! TLS 1.2 signatures are refused. The one implementation of the pin check, shared by the
//! gateway's clients (through `iotseal_crypto_awslc::pin`), the device SDK and the threat lab,
//! whatever rustls provider does the TLS (aws-lc-rs, or ring in the SDK built without aws-lc):
//! the hash is SHA-256 of this crate, which needs neither.

use std::sync::Arc;
use std::vec::Vec;

use iotseal_proto::crypto::Hash;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use subtle::ConstantTimeEq;

/// A TLS 1.3 only client configuration on `provider` (any rustls provider) without client
/// authentication that trusts only the certificate whose DER has SHA-256 `pin`.
///
/// `None` accepts any certificate (the handshake signature is still checked): only for the
/// load generator's baseline benchmark mode, which sends nothing secret.
pub fn pinned_client_config(
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
) -> Result<ClientConfig, rustls::Error> {
    let verifier = Arc::new(PinnedCert {
        sha256: pin,
        provider: provider.clone(),
    });
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
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
        let got = crate::Sha256.hash(end_entity.as_ref());
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    #[test]
    fn only_the_pinned_certificate_is_accepted() {
        let cert = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let sha = crate::Sha256.hash(cert.as_ref());
        let name = ServerName::try_from("gateway").unwrap();
        let check = |pin: Option<[u8; 32]>| {
            PinnedCert {
                sha256: pin,
                provider: provider(),
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

    #[test]
    fn the_configuration_has_no_client_auth() {
        for pin in [Some([7; 32]), None] {
            let cfg = pinned_client_config(pin, provider()).unwrap();
            assert!(!cfg.client_auth_cert_resolver.has_certs());
        }
    }
}
