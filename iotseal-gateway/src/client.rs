//! A small HTTP/1.1 client for the gateway (admin commands, tests, tools): one keep-alive
//! connection, TLS 1.3 with a pinned certificate or plain HTTP.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
pub use hyper::{HeaderMap, Method};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// A client error (connection, TLS, or HTTP framing).
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

fn err(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError(format!("{what}: {e}"))
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Client {
    host: String,
    port: u16,
    authority: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

/// One open connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    /// The TLS key exchange group negotiated (None for plain HTTP).
    pub key_exchange_group: Option<rustls::NamedGroup>,
    /// The TLS version negotiated.
    pub protocol_version: Option<rustls::ProtocolVersion>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("authority", &self.authority)
            .field("key_exchange_group", &self.key_exchange_group)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `url` (`https://host:port` needs `tls`; `http://` must not have it).
    pub fn new(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, ClientError> {
        let uri: Uri = url.parse().map_err(|e| err("gateway URL", e))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ClientError(
                    "gateway URL: expected https:// or http://".into(),
                ));
            }
        };
        if https && tls.is_none() {
            return Err(ClientError("https URL without a TLS configuration".into()));
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError("gateway URL: no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map_or_else(|| host.clone(), |a| a.as_str().to_string());
        Ok(Self {
            host,
            port,
            authority,
            tls: if https { tls } else { None },
        })
    }

    /// Opens a connection.
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| err("connecting", e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.handshake(tcp, None, None).await,
            Some(cfg) => {
                let name =
                    ServerName::try_from(self.host.clone()).map_err(|e| err("server name", e))?;
                let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| err("TLS", e))?;
                let c = stream.get_ref().1;
                let group = c.negotiated_key_exchange_group().map(|g| g.name());
                let version = c.protocol_version();
                self.handshake(stream, group, version).await
            }
        }
    }

    async fn handshake<S>(
        &self,
        io: S,
        key_exchange_group: Option<rustls::NamedGroup>,
        protocol_version: Option<rustls::ProtocolVersion>,
    ) -> Result<Connection, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| err("HTTP", e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            authority: self.authority.clone(),
            key_exchange_group,
            protocol_version,
        })
    }

    /// One request on a new connection.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        self.connect()
            .await?
            .request(method, path, headers, body)
            .await
    }
}

impl Connection {
    /// Sends a request and reads the whole response.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        self.sender
            .ready()
            .await
            .map_err(|e| err("connection", e))?;
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| err("request", e))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| err("request", e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err("response", e))?
            .to_bytes()
            .to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// POSTs binary protocol bytes.
    pub async fn post_binary(
        &mut self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/octet-stream")],
            body,
        )
        .await
    }
}
