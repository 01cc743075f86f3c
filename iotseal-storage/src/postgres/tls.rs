//! TLS to PostgreSQL (rustls with aws-lc-rs) and libpq's `sslmode`.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and negotiates TLS given a connector
//! (prefer: TLS if the server offers it, else plain; require: refuse plain). Its URL parser
//! refuses `verify-ca`, `verify-full` and `sslrootcert`, so [`parse`] takes them out of the URL
//! first and hands tokio-postgres `sslmode=require` for the two verifying modes; the
//! verification itself is this module's rustls configuration:
//!
//! | sslmode | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | if offered | not verified (as libpq), unless `sslrootcert` is given |
//! | `require` | always | not verified (as libpq), unless `sslrootcert` is given |
//! | `verify-ca` | always | chains to `sslrootcert` (else the system roots) |
//! | `verify-full` | always | `verify-ca` plus the host name |
//!
//! As in libpq, `require` or `prefer` with an `sslrootcert` behaves like `verify-ca`.
//! Channel binding (SCRAM-SHA-256-PLUS) is not offered.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::StorageError;

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A URL without the parameters tokio-postgres refuses, and what they said.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) url: String,
    pub(super) mode: SslMode,
    pub(super) root_cert: Option<String>,
}

/// Takes `sslmode=verify-ca|verify-full` and `sslrootcert=PATH` out of a URL's query.
pub(super) fn parse(url: &str) -> Result<Parsed, StorageError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = match value {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(StorageError(format!(
                            "postgres: invalid URL: sslmode {other:?} (expected disable, \
                             prefer, require, verify-ca or verify-full)"
                        )));
                    }
                };
                let for_parser = match mode {
                    SslMode::VerifyCa | SslMode::VerifyFull => "require",
                    _ => value,
                };
                kept.push(format!("sslmode={for_parser}"));
            }
            "sslrootcert" => root_cert = Some(percent_decode(value)?),
            _ => kept.push(pair.to_owned()),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Parsed {
        url,
        mode,
        root_cert,
    })
}

fn percent_decode(s: &str) -> Result<String, StorageError> {
    let bad = || StorageError("postgres: invalid URL: sslrootcert is badly percent-encoded".into());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The rustls client configuration for a mode (None for `disable`).
pub(super) fn client_config(
    mode: SslMode,
    root_cert: Option<&str>,
) -> Result<Option<MakeRustls>, StorageError> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StorageError(format!("postgres: TLS: {e}")))?;
    let verify = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) || root_cert.is_some();
    let config = if verify {
        let roots = Arc::new(roots(root_cert)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| StorageError(format!("postgres: TLS: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(AnyHostName(webpki))
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    } else {
        static WARN: Once = Once::new();
        WARN.call_once(|| {
            tracing::warn!(
                "postgres: sslmode={} encrypts but does not authenticate the server (libpq's \
                 semantics); use sslmode=verify-full with sslrootcert to authenticate it",
                if mode == SslMode::Require {
                    "require"
                } else {
                    "prefer"
                }
            );
        });
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(UnauthenticatedServer(provider)))
            .with_no_client_auth()
    };
    Ok(Some(MakeRustls(Arc::new(config))))
}

/// `sslrootcert`'s certificates, else the system's.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, StorageError> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                StorageError(format!("postgres: cannot read sslrootcert {path:?}: {e}"))
            })?;
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert =
                    cert.map_err(|e| StorageError(format!("postgres: sslrootcert {path:?}: {e}")))?;
                store
                    .add(cert)
                    .map_err(|e| StorageError(format!("postgres: sslrootcert {path:?}: {e}")))?;
            }
            if store.is_empty() {
                return Err(StorageError(format!(
                    "postgres: sslrootcert {path:?} holds no PEM certificate"
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("postgres: system root certificates: {e}");
            }
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(StorageError(
                    "postgres: no system root certificate found; set sslrootcert".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted root, whatever host name it names.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // webpki checks the name after the chain: a name error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `sslmode=require`/`prefer` without `sslrootcert`: libpq's documented semantics, encryption
/// without authentication of the server. ANY certificate is accepted (a man in the middle can
/// present its own); the handshake signatures are still checked, so the session key is bound
/// to the certificate presented. A warning is logged once when this is used.
#[derive(Debug)]
struct UnauthenticatedServer(Arc<CryptoProvider>);

impl ServerCertVerifier for UnauthenticatedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres's TLS connector over tokio-rustls.
#[derive(Clone)]
pub(super) struct MakeRustls(Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        // Unix sockets give "" (and never negotiate TLS): fail only if TLS is attempted.
        Ok(RustlsConnect {
            config: self.0.clone(),
            name: ServerName::try_from(domain.to_owned()).ok(),
        })
    }
}

pub(super) struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: Option<ServerName<'static>>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "host is not a valid TLS name")
            })?;
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_are_taken_out_of_the_url() {
        let p =
            parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&x=1").unwrap();
        assert_eq!(p.url, "postgres://u@h/db?sslmode=require&x=1");
        assert_eq!(p.mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert.as_deref(), Some("/tmp/ca.pem"));
        let p = parse("postgres://u@h/db").unwrap();
        assert_eq!(
            (p.url.as_str(), p.mode),
            ("postgres://u@h/db", SslMode::Prefer)
        );
        assert!(parse("postgres://h/db?sslmode=allow").is_err());
    }
}
