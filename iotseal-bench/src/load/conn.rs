//! One HTTP/1.1 keep-alive connection over TLS 1.3 (or plain TCP), driven directly with
//! hyper's connection API: no pool, no per-request URI parsing beyond the path, so the load
//! generator spends as little of the shared CPUs as it can. The connections of one
//! [`Endpoint`] share its TLS client configuration and so its session cache: a new connection
//! resumes the TLS session of an earlier one when the server allows it
//! ([`Endpoint::with_own_session_cache`]: one cache per reconnecting device).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Largest response body read.
const MAX_ANSWER: usize = 1 << 20;

/// Where to connect and how.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    authority: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    /// `url` is `https://host:port` or `http://host:port`. `pin_sha256`: the certificate's
    /// SHA-256 (None trusts any certificate).
    pub(crate) fn new(url: &str, pin_sha256: Option<Vec<u8>>) -> Result<Self, String> {
        let uri: Uri = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("URL {url}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("URL {url}: expected https:// or http://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("URL {url}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map_or_else(|| host.clone(), |a| a.as_str().to_string());
        let tls = if https {
            let mut cfg = match &pin_sha256 {
                Some(pin) => iotseal_device::pinned_tls_config(pin),
                // Any certificate (the handshake signature is still checked): only for the
                // baseline mode, which sends nothing secret.
                None => iotseal_crypto_rustcrypto::pin::pinned_client_config(
                    None,
                    iotseal_device::tls_provider(),
                ),
            }
            .map_err(|e| format!("TLS: {e}"))?;
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(cfg))
        } else {
            None
        };
        Ok(Self {
            host,
            port,
            authority,
            tls,
        })
    }

    /// The same endpoint with a TLS session cache of its own (a device that resumes only its
    /// own sessions); the other settings are shared.
    pub(crate) fn with_own_session_cache(&self) -> Self {
        let tls = self.tls.as_ref().map(|cfg| {
            let mut cfg = rustls::ClientConfig::clone(cfg);
            cfg.resumption = rustls::client::Resumption::in_memory_sessions(4);
            Arc::new(cfg)
        });
        Self {
            tls,
            ..self.clone()
        }
    }

    /// The port (to find the server's process).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Whether the host is this machine (only then can its process be measured).
    pub(crate) fn is_local(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1")
            || self.host.starts_with("127.")
    }

    /// Opens a connection (TCP, TLS 1.3 handshake, HTTP/1.1).
    pub(crate) async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (sender, resumed) = match &self.tls {
            None => (handshake(tcp).await?, false),
            Some(cfg) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("server name: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
                (handshake(tls).await?, resumed)
            }
        };
        Ok(Conn {
            sender,
            authority: self.authority.clone(),
            resumed,
        })
    }
}

async fn handshake<S>(io: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// An open keep-alive connection.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    /// Its TLS handshake resumed an earlier session (from its endpoint's session cache:
    /// rustls' default store, shared by the connections of one [`Endpoint`]).
    pub(crate) resumed: bool,
}

impl Conn {
    /// POSTs `body` to `path`; returns the status, the whole response body and the
    /// `Retry-After` seconds (for the engine's backoff). An error means the connection is no
    /// longer usable.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes, Option<u32>), String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let retry_after = retry_after_secs(resp.headers());
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("response: {e}"))?
            .to_bytes();
        Ok((status, body, retry_after))
    }
}

/// The `Retry-After` header in seconds (§18.9; the HTTP-date form is not used by the
/// gateway), for the engine's backoff.
fn retry_after_secs(headers: &hyper::HeaderMap) -> Option<u32> {
    headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
}
