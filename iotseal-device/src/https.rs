//! HTTP/1.1 over TLS 1.3 to the gateway, trusting exactly the pinned certificate.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use iotseal_device_core::Endpoint;

use crate::files::GatewayPins;
use crate::transport::{BoxFuture, Reply, Transport, TransportError};

/// Largest answer accepted from a gateway.
const MAX_ANSWER: usize = 1 << 20;

/// A keep-alive HTTP/1.1 client that trusts exactly the pinned certificate (TLS 1.3 only).
pub(crate) fn connector(
    pins: &GatewayPins,
) -> Result<
    Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let tls = crate::pin::pinned_tls_config(&hex::decode(pins.tls_cert_sha256.trim())?)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        // Below the gateway's keep-alive limit (its header-read timeout, 30 s by default), so a
        // pooled connection is not reused just as the gateway closes it.
        .pool_idle_timeout(Duration::from_secs(20))
        .build(connector);
    Ok(client)
}

/// An HTTPS transport with keep-alive connections to one gateway.
#[derive(Clone, Debug)]
pub struct HttpsTransport {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    timeout: Duration,
}

impl HttpsTransport {
    /// A transport to `pins.url` trusting only the pinned certificate (TLS 1.3 only,
    /// X25519MLKEM768 preferred). A `http://` URL (a deployment behind a TLS-terminating
    /// proxy) is spoken in plain HTTP; the end-to-end layer still protects every reading.
    pub fn new(pins: &GatewayPins) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self {
            client: connector(pins)?,
            base: pins.url.trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(10),
        })
    }

    /// Sets the per-request timeout (default 10 s).
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Reply, TransportError> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{}", self.base, path))
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TransportError::Unavailable(e.to_string()))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| TransportError::Unavailable(e.to_string()))?;
            let status = resp.status().as_u16();
            let retry_after_secs = retry_after_secs(resp.headers());
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| TransportError::Unavailable(e.to_string()))?
                .to_bytes();
            Ok(Reply::Http {
                status,
                body: body.to_vec(),
                retry_after_secs,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| Err(TransportError::Unavailable("timeout".into())))
    }
}

/// The `Retry-After` header in seconds (§18.9; the HTTP-date form is not used by the
/// gateway), for the engine's backoff.
pub(crate) fn retry_after_secs(headers: &hyper::HeaderMap) -> Option<u32> {
    headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
}

impl Transport for HttpsTransport {
    fn send(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Reply, TransportError>> {
        Box::pin(self.post(endpoint.path(), body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain HTTP/1.1 server on loopback answering every request with 200 and `len` bytes.
    async fn server_answering(len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // The request: headers, then a body of content-length bytes (tiny here).
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&vec![0x5a; len]).await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn transport(url: String) -> HttpsTransport {
        let pins = GatewayPins {
            url,
            tls_cert_pem: String::new(),
            tls_cert_sha256: "00".repeat(32),
            identity: Vec::new(),
        };
        HttpsTransport::new(&pins).unwrap()
    }

    /// The answer bound at its edge: 1 MiB is read whole, one byte more is an error (the
    /// client retries it like any transport failure), never a larger allocation.
    #[tokio::test]
    async fn answers_are_bounded_at_one_mib() {
        let at = transport(server_answering(MAX_ANSWER).await);
        assert_eq!(at.handshake(vec![1]).await.unwrap().len(), MAX_ANSWER);
        let over = transport(server_answering(MAX_ANSWER + 1).await);
        match over.records(vec![1]).await {
            Err(TransportError::Unavailable(m)) => assert!(m.contains("length limit"), "{m}"),
            other => panic!("an answer over 1 MiB was not refused: {other:?}"),
        }
    }
}
