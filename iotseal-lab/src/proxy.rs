//! The intercepting proxy: listens on loopback, takes the device's HTTP requests (plain HTTP:
//! a TLS-terminating middlebox; or TLS with the proxy's OWN certificate, for `mitm-tls`),
//! lets a [`Hook`] read, rewrite, hold or answer them, forwards them to the upstream (the
//! gateway over pinned HTTPS, or the legacy server) and logs every exchange. The attacker
//! also sends its own requests from this position ([`Proxy::inject`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::LabError;
use crate::net::{Answer, HttpClient};

/// What the hook decides for a request.
#[derive(Debug)]
pub enum Verdict {
    /// Forward (the body as the hook left it).
    Forward,
    /// Do not forward: answer the device with this.
    Answer(Answer),
}

/// The attacker's logic on the wire. Both methods run for every request through the proxy
/// (not for [`Proxy::inject`]ed ones).
pub trait Hook: Send + Sync {
    /// A request from the device; may rewrite `body`.
    fn on_request(&self, _path: &str, _body: &mut Vec<u8>) -> Verdict {
        Verdict::Forward
    }
    /// The upstream's answer to `request` (as forwarded); may rewrite it.
    fn on_response(&self, _path: &str, _request: &[u8], _answer: &mut Answer) {}
}

/// One request through the proxy, as seen on both sides.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The request as the device sent it.
    pub from_device: Vec<u8>,
    /// The request as forwarded upstream (None if the hook answered it itself).
    pub forwarded: Option<Vec<u8>>,
    /// The upstream's answer (None if not forwarded or the upstream failed).
    pub upstream: Option<Answer>,
    /// What the device got.
    pub to_device: Answer,
    /// Sent by the attacker, not the device.
    pub injected: bool,
}

struct State {
    upstream: HttpClient,
    base: String,
    hook: Mutex<Option<Arc<dyn Hook>>>,
    log: Mutex<Vec<Exchange>>,
    tls_ok: AtomicU64,
    tls_failed: AtomicU64,
    tls_error: Mutex<Option<String>>,
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    /// SHA-256 (hex) of the proxy's own certificate in TLS mode.
    pub cert_sha256: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("url", &self.url).finish()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A plain-HTTP proxy on 127.0.0.1 in front of `base` (the upstream URL).
    pub(crate) async fn start(upstream: HttpClient, base: &str) -> Result<Self, LabError> {
        Self::start_inner(upstream, base, None).await
    }

    /// A proxy that speaks TLS to the device with its own self-signed certificate.
    pub(crate) async fn start_tls(upstream: HttpClient, base: &str) -> Result<Self, LabError> {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let cert = iotseal_gateway::keys::self_signed_cert(&names)
            .map_err(|e| LabError(format!("MITM certificate: {e}")))?;
        Self::start_inner(upstream, base, Some(cert)).await
    }

    async fn start_inner(
        upstream: HttpClient,
        base: &str,
        cert: Option<iotseal_gateway::keys::SelfSigned>,
    ) -> Result<Self, LabError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| LabError(format!("proxy bind: {e}")))?;
        let addr = listener.local_addr().map_err(|e| LabError(e.to_string()))?;
        let (acceptor, cert_sha256) = match &cert {
            None => (None, None),
            Some(c) => {
                let (acc, sha) = tls_acceptor(c)?;
                (Some(acc), Some(sha))
            }
        };
        let state = Arc::new(State {
            upstream,
            base: base.trim_end_matches('/').to_string(),
            hook: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            tls_ok: AtomicU64::new(0),
            tls_failed: AtomicU64::new(0),
            tls_error: Mutex::new(None),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let st = st.clone();
                let counters = st.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    match acceptor {
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), svc)
                                .await;
                        }
                        Some(acc) => match acc.accept(tcp).await {
                            Ok(tls) => {
                                counters.tls_ok.fetch_add(1, Ordering::Relaxed);
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls), svc)
                                    .await;
                            }
                            Err(e) => {
                                counters.tls_failed.fetch_add(1, Ordering::Relaxed);
                                *counters.tls_error.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(e.to_string());
                            }
                        },
                    }
                });
            }
        });
        let scheme = if cert.is_some() { "https" } else { "http" };
        Ok(Self {
            addr,
            url: format!("{scheme}://{addr}"),
            state,
            task,
            cert_sha256,
        })
    }

    /// The URL devices are pointed at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets (or clears) the attacker's hook.
    pub fn set_hook(&self, hook: Option<Arc<dyn Hook>>) {
        *self.state.hook.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    /// Takes the exchanges logged so far.
    pub fn take_log(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.state.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// TLS handshakes with devices: (completed, failed).
    pub fn tls_counts(&self) -> (u64, u64) {
        (
            self.state.tls_ok.load(Ordering::Relaxed),
            self.state.tls_failed.load(Ordering::Relaxed),
        )
    }

    /// The last TLS handshake error with a device.
    pub fn tls_error(&self) -> Option<String> {
        self.state
            .tls_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The attacker sends its own request upstream from the proxy's position.
    pub async fn inject(&self, method: Method, path: &str, body: Vec<u8>) -> Answer {
        let answer = forward(&self.state, method.clone(), path, body.clone()).await;
        let a = answer.clone().unwrap_or(Answer {
            status: 502,
            body: Vec::new(),
        });
        self.state
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Exchange {
                method: method.to_string(),
                path: path.to_string(),
                from_device: body.clone(),
                forwarded: Some(body),
                upstream: answer,
                to_device: a.clone(),
                injected: true,
            });
        a
    }

    /// POST through [`Proxy::inject`].
    pub async fn inject_post(&self, path: &str, body: Vec<u8>) -> Answer {
        self.inject(Method::POST, path, body).await
    }
}

async fn forward(st: &State, method: Method, path: &str, body: Vec<u8>) -> Option<Answer> {
    let url = format!("{}{}", st.base, path);
    let headers = if method == Method::POST {
        vec![("content-type", "application/octet-stream".to_string())]
    } else {
        Vec::new()
    };
    st.upstream.send(method, &url, &headers, body).await.ok()
}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let hook = st.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut fwd = body.clone();
    let verdict = hook
        .as_ref()
        .map_or(Verdict::Forward, |h| h.on_request(&path, &mut fwd));
    let (forwarded, upstream, mut to_device) = match verdict {
        Verdict::Answer(a) => (None, None, a),
        Verdict::Forward => {
            let up = forward(&st, method.clone(), &path, fwd.clone()).await;
            let a = up.clone().unwrap_or(Answer {
                status: 502,
                body: Vec::new(),
            });
            (Some(fwd), up, a)
        }
    };
    if let (Some(h), Some(f)) = (&hook, &forwarded)
        && upstream.is_some()
    {
        h.on_response(&path, f, &mut to_device);
    }
    st.log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Exchange {
            method: method.to_string(),
            path,
            from_device: body,
            forwarded,
            upstream,
            to_device: to_device.clone(),
            injected: false,
        });
    let resp = Response::builder()
        .status(to_device.status)
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(to_device.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok(resp)
}

fn tls_acceptor(
    c: &iotseal_gateway::keys::SelfSigned,
) -> Result<(tokio_rustls::TlsAcceptor, String), LabError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let der = iotseal_gateway::keys::first_cert_der(&c.cert_pem)
        .map_err(|e| LabError(format!("MITM certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
        .map_err(|e| LabError(format!("MITM key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| LabError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(der.clone())], key)
        .map_err(|e| LabError(format!("MITM TLS: {e}")))?;
    let p = iotseal_crypto_awslc::default_provider();
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        hex::encode(p.hash.hash(&der)),
    ))
}
