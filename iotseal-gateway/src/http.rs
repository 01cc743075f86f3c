//! The HTTP binding: routes, body limits, security headers, refusals as alerts.
//!
//! | Refusal          | HTTP status                         |
//! |------------------|-------------------------------------|
//! | Malformed        | 400 Bad Request                     |
//! | AuthFailed       | 403 Forbidden                       |
//! | Replay           | 409 Conflict                        |
//! | UnknownSession   | 404 Not Found                       |
//! | NoCommonSuite    | 406 Not Acceptable                  |
//! | Busy             | 503 Service Unavailable + Retry-After (429 Too Many Requests when rate limited) |
//! | SessionEnded     | 410 Gone                            |
//! | Stale            | 400 Bad Request                     |
//!
//! The body of a refusal is the 2-byte alert (`0x7f`, code); nothing else is told. An
//! oversized body is answered 413 with a Malformed alert, a request that takes too long 408.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use iotseal_proto::Refusal;
use iotseal_proto::handshake::SourceKey;
use iotseal_proto::handshake::messages::encode_alert;
use tracing::debug;

use crate::pipeline::{self, Answer, Binding, Kind, Pipeline};

/// The peer address of a request's connection (a request extension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// The HTTP status for a refusal.
pub fn status_for(r: Refusal) -> StatusCode {
    match r {
        Refusal::Malformed | Refusal::Stale => StatusCode::BAD_REQUEST,
        Refusal::AuthFailed => StatusCode::FORBIDDEN,
        Refusal::Replay => StatusCode::CONFLICT,
        Refusal::UnknownSession => StatusCode::NOT_FOUND,
        Refusal::NoCommonSuite => StatusCode::NOT_ACCEPTABLE,
        Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::SessionEnded => StatusCode::GONE,
        _ => StatusCode::BAD_REQUEST,
    }
}

const OCTET: &str = "application/octet-stream";

/// The gateway's HTTP surface: the device routes and `extra` (admin, dashboard, metrics:
/// routers already given their state) under one body limit and, outermost, [`observe`]:
/// every answer, forwarded or not, gets the same deadline, headers and request metric.
pub(crate) fn router(p: Arc<Pipeline>, extra: Router) -> Router {
    let max_body = p.settings.limits.max_body;
    Router::new()
        .route("/v1/handshake", post(handshake))
        .route("/v1/records", post(records))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(p.clone())
        .merge(extra)
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(p, observe))
}

/// Per request: a deadline, the security headers, the request counter (see [`observed`]).
async fn observe(State(sh): State<Arc<Pipeline>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |m| match m.as_str() {
            "/v1/handshake" => "/v1/handshake",
            "/v1/records" => "/v1/records",
            "/healthz" => "/healthz",
            "/metrics" => "/metrics",
            "/v1/devices" => "/v1/devices",
            "/v1/devices/{id}" => "/v1/devices/{id}",
            "/v1/devices/{id}/revoke" => "/v1/devices/{id}/revoke",
            "/v1/devices/{id}/readings" => "/v1/devices/{id}/readings",
            "/v1/cluster" => "/v1/cluster",
            "/v1/openapi.json" => "/v1/openapi.json",
            _ => "other",
        });
    observed(&sh, route, next.run(req)).await
}

/// Whether a request is a device's `POST /v1/records`, which the connection hands to
/// [`records_direct`] instead of the router (the one-reading path: no route lookup, no
/// middleware boxes; the same deadline, headers, metric and body limit).
pub(crate) fn is_records<B>(req: &axum::http::Request<B>) -> bool {
    req.method() == axum::http::Method::POST && req.uri().path() == "/v1/records"
}

/// `POST /v1/records` without the router: what the router's route, body limit and
/// [`observe`] would do, in one future.
pub(crate) async fn records_direct(
    p: Arc<Pipeline>,
    peer: std::net::SocketAddr,
    req: Request,
) -> Response {
    let answer = device_request(&p, Kind::Records, Some(peer), req);
    observed(&p, "/v1/records", answer).await
}

/// The deadline, the security headers and the request counter around `answer`: every
/// answer, routed or direct.
async fn observed(
    sh: &Pipeline,
    route: &'static str,
    answer: impl Future<Output = Response>,
) -> Response {
    let limit = Duration::from_secs(sh.settings.limits.request_timeout_secs);
    let mut resp = match tokio::time::timeout(limit, answer).await {
        Ok(r) => r,
        Err(_) => {
            sh.metrics.refusal("timeout");
            let mut r = StatusCode::REQUEST_TIMEOUT.into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    };
    let h = resp.headers_mut();
    // One allocation for the headers below instead of growing the map as they come.
    h.reserve(7);
    if !sh.settings.plain_http {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The dashboard sets its own (scripts and styles from 'self'); every other route this.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    sh.metrics.http_request(route, resp.status().as_u16());
    resp
}

/// A refusal: the status of [`status_for`] and the alert as the body. Counts `reason`.
fn refuse(sh: &Pipeline, reason: &str, r: Refusal) -> Response {
    sh.metrics.refusal(reason);
    refusal_response(sh, r)
}

fn refusal_response(sh: &Pipeline, r: Refusal) -> Response {
    let mut resp = (
        status_for(r),
        [(header::CONTENT_TYPE, OCTET)],
        encode_alert(r).to_vec(),
    )
        .into_response();
    if r == Refusal::Busy {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, retry_after(sh));
    }
    resp
}

fn retry_after(sh: &Pipeline) -> HeaderValue {
    HeaderValue::from(sh.settings.limits.retry_after_secs.max(1))
}

fn too_large(sh: &Pipeline) -> Response {
    sh.metrics.refusal("oversize");
    let mut r = (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONTENT_TYPE, OCTET)],
        encode_alert(Refusal::Malformed).to_vec(),
    )
        .into_response();
    // The rest of the body is not read: do not try to reuse the connection.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// How long an oversized body is read and thrown away before the 413 goes out.
const LINGER_TIME: Duration = Duration::from_secs(1);

/// Reads a body of at most `max_body` bytes: refused from its Content-Length without keeping
/// anything, and cut off while streaming if it grows past the limit.
///
/// Before answering 413 the gateway reads and discards up to another `max_body` bytes for at
/// most [`LINGER_TIME`] (nginx's "lingering close") when the body would end within that
/// budget: closing a connection with unread bytes
/// in the kernel's buffer sends a TCP reset, which can destroy the 413 before a client that
/// is still writing reads it. The cost is bounded by what an honest largest body costs.
async fn read_body(sh: &Pipeline, req: Request) -> Result<Bytes, Response> {
    let max = sh.settings.limits.max_body;
    let mut announced = 0;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if n > max as u64 => {
                // Only a body that ends within the lingering budget is drained; a client
                // announcing more than twice the limit is answered at once, and so is one
                // waiting for `100 Continue` (reading its body would send it, inviting the
                // upload the 413 refuses; RFC 9110 §10.1.1 lets a server answer instead).
                if n <= 2 * max as u64 && !expects_continue(req.headers()) {
                    linger(req.into_body(), max).await;
                }
                return Err(too_large(sh));
            }
            Some(n) => announced = n as usize,
            None => return Err(refuse(sh, "malformed", Refusal::Malformed)),
        }
    }
    let mut body = req.into_body();
    // Bounded: `announced` is at most `max`.
    let mut buf = bytes::BytesMut::with_capacity(announced);
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(e) => {
                debug!(error = %e, "reading a request body failed");
                return Err(refuse(sh, "malformed", Refusal::Malformed));
            }
        };
        if buf.len() + data.len() > max {
            linger(body, max).await;
            return Err(too_large(sh));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Whether the client waits for `100 Continue` before sending its body.
fn expects_continue(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Reads and discards at most `budget` more bytes of `body`, for at most [`LINGER_TIME`].
async fn linger(mut body: axum::body::Body, budget: usize) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut left = budget;
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len());
            if n >= left {
                return;
            }
            left -= n;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Device requests

async fn handshake(State(p): State<Arc<Pipeline>>, req: Request) -> Response {
    let peer = req.extensions().get::<Peer>().map(|x| x.0);
    device_request(&p, Kind::Handshake, peer, req).await
}

async fn records(State(p): State<Arc<Pipeline>>, req: Request) -> Response {
    let peer = req.extensions().get::<Peer>().map(|x| x.0);
    device_request(&p, Kind::Records, peer, req).await
}

/// Reads the body (bounded) and hands the request to the pipeline.
async fn device_request(
    p: &Arc<Pipeline>,
    kind: Kind,
    peer: Option<std::net::SocketAddr>,
    req: Request,
) -> Response {
    let body = match read_body(p, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // The hello's source key is the address the per-address limits use (after PROXY v2).
    let source = peer.map(|x| SourceKey::from_ip(x.ip()));
    let answer = p
        .handle(pipeline::Request {
            binding: Binding::Http,
            kind,
            peer,
            source,
            body,
        })
        .await;
    http_answer(p, answer)
}

/// An [`Answer`] as an HTTP response.
fn http_answer(p: &Pipeline, a: Answer) -> Response {
    match a {
        Answer::Bytes(b) => ([(header::CONTENT_TYPE, OCTET)], b).into_response(),
        Answer::Refused(r) => refusal_response(p, r),
        Answer::RateLimited => {
            let mut r = refusal_response(p, Refusal::Busy);
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            r
        }
    }
}
