//! HTTP plumbing of the lab: a client that trusts exactly the pinned gateway certificate (or
//! speaks plain HTTP to `http://` URLs), and raw TLS/TCP connections for attacks that need to
//! control the bytes on the socket (slow clients, oversized bodies).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use crate::LabError;

/// Largest answer the lab reads.
const MAX_ANSWER: usize = 64 << 20;

/// An HTTP answer: status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

/// A pin no certificate matches, for clients that only speak plain HTTP (the legacy design).
pub(crate) const NO_TLS_PIN: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// A TLS 1.3 client configuration trusting exactly the certificate with this SHA-256 (hex).
pub(crate) fn pinned_tls(cert_sha256_hex: &str) -> Result<Arc<rustls::ClientConfig>, LabError> {
    let pin = hex::decode(cert_sha256_hex.trim()).map_err(|e| LabError(format!("pin: {e}")))?;
    let cfg = iotseal_device::pinned_tls_config(&pin).map_err(|e| LabError(e.to_string()))?;
    Ok(Arc::new(cfg))
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A keep-alive HTTP/1.1 client: pinned TLS 1.3 for `https://`, plain for `http://`.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    client: HttpsClient,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl HttpClient {
    /// A client trusting the certificate with SHA-256 `cert_sha256_hex`.
    pub(crate) fn new(cert_sha256_hex: &str) -> Result<Self, LabError> {
        Self::from_source(cert_sha256_hex, None)
    }

    /// Like [`Self::new`], its connections made from the local address `source` (one of
    /// loopback's many addresses, so that one process can be many clients).
    pub(crate) fn from_source(
        cert_sha256_hex: &str,
        source: Option<IpAddr>,
    ) -> Result<Self, LabError> {
        let tls = pinned_tls(cert_sha256_hex)?;
        let mut http = HttpConnector::new();
        http.set_local_address(source);
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // Idle connections are dropped before a gateway with a short keep-alive limit closes
        // them, so a request never races a closing connection.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(700))
            .build(connector);
        Ok(Self {
            client,
            tls,
            timeout: Duration::from_secs(15),
        })
    }

    /// The TLS configuration (for raw connections).
    pub(crate) fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    /// Sends a request; `headers` are added as given.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, LabError> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| LabError(format!("request: {e}")))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| LabError(format!("{url}: {e}")))?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| LabError(format!("{url}: body: {e}")))?
                .to_bytes()
                .to_vec();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| Err(LabError(format!("{url}: timeout"))))
    }

    /// POST with an octet-stream body.
    pub(crate) async fn post(&self, url: &str, body: Vec<u8>) -> Result<Answer, LabError> {
        self.send(
            Method::POST,
            url,
            &[("content-type", "application/octet-stream".into())],
            body,
        )
        .await
    }
}

/// A byte stream to a server: TLS or plain TCP.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Host and port of an `http(s)://host:port` URL, and whether it is TLS.
pub(crate) fn host_port(url: &str) -> Result<(String, u16, bool), LabError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| LabError(format!("URL {url}: {e}")))?;
    let tls = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or_else(|| LabError(format!("URL {url}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, tls))
}

/// Opens a raw connection to `url` (TLS with `tls` for `https://`).
pub(crate) async fn connect_raw(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Box<dyn Stream>, LabError> {
    connect_raw_from(url, tls, None).await
}

/// Like [`connect_raw`], from the local address `source` if given.
pub(crate) async fn connect_raw_from(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    source: Option<IpAddr>,
) -> Result<Box<dyn Stream>, LabError> {
    let (host, port, is_tls) = host_port(url)?;
    let tcp = match source {
        None => TcpStream::connect((host.as_str(), port)).await,
        Some(ip) => connect_from(ip, &host, port).await,
    }
    .map_err(|e| LabError(format!("connect {url}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if !is_tls {
        return Ok(Box::new(tcp));
    }
    let name = ServerName::try_from(host.clone())
        .map_err(|e| LabError(format!("server name {host}: {e}")))?;
    let conn = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| LabError(format!("TLS to {url}: {e}")))?;
    Ok(Box::new(conn))
}

/// A TCP connection to `host:port` (an IP address) from `source`.
async fn connect_from(source: IpAddr, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let ip: IpAddr = host
        .parse()
        .map_err(|_| std::io::Error::other(format!("{host}: not an IP address")))?;
    let sock = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.bind(SocketAddr::new(source, 0))?;
    sock.connect(SocketAddr::new(ip, port)).await
}
