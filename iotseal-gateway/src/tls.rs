//! TLS configuration: TLS 1.3 only, on aws-lc-rs, key exchange X25519MLKEM768 first, then
//! X25519 and secp256r1; ALPN `http/1.1`; optional client certificates.
//!
//! Also the client side used by `iotseal device` and the tests: trust exactly one pinned
//! certificate (the shared verifier of `iotseal_crypto_awslc::pin`).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::GatewayError;

/// The rustls provider: aws-lc-rs with the key exchange groups in our order.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
        ],
        ..aws_lc_rs::default_provider()
    })
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Tls(format!("{what}: {e}"))
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(&path.display().to_string(), e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(&path.display().to_string(), e))?;
    if certs.is_empty() {
        return Err(tls_err(&path.display().to_string(), "no certificate"));
    }
    Ok(certs)
}

/// The server configuration. `client_ca`: require client certificates issued by these CAs.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    let provider = provider();
    let chain = load_certs(cert)?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(&key.display().to_string(), e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("TLS versions", e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| tls_err(&ca.display().to_string(), e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| tls_err("client CA", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("certificate and key", e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No resumption state worth keeping for small devices' long connections; tickets would
    // also tie a connection to this process. Stateful resumption cache stays bounded.
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    Ok(Arc::new(cfg))
}

/// A TLS 1.3 client configuration that trusts exactly the certificate `cert_der` (by the
/// SHA-256 of its DER, through [`iotseal_crypto_awslc::pin`]) on [`provider`]; ALPN `http/1.1`.
pub fn pinned_client_config(cert_der: &[u8]) -> Result<Arc<rustls::ClientConfig>, GatewayError> {
    let pin = iotseal_crypto_awslc::PROVIDER.hash.hash(cert_der);
    let mut cfg = iotseal_crypto_awslc::pin::pinned_client_config(Some(pin), provider())
        .map_err(|e| tls_err("TLS versions", e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
