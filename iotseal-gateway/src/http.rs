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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use iotseal_proto::error::{Limit, Malformed};
use iotseal_proto::handshake::messages::{RetryReason, encode_alert};
use iotseal_proto::handshake::{HelloReply, SourceKey};
use iotseal_proto::reading::{self, ReadingRef, SensorKind};
use iotseal_proto::record::{ContentType, Header, batch};
use iotseal_proto::{Error, Refusal, Time};
use tracing::{debug, error, warn};

use crate::server::{Binding, Peer, Shared};
use crate::sessions::{EndReason, SessionEntry, SessionState};
use crate::storage::{NewReading, SensorName};

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

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let max_body = shared.settings.limits.max_body;
    Router::new()
        .route("/v1/handshake", post(handshake))
        .route("/v1/records", post(records))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .merge(crate::admin::routes(shared.clone()))
        .merge(crate::dashboard::routes())
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

/// Per request: a deadline, the security headers, the request counter.
async fn observe(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
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
    let limit = Duration::from_secs(sh.settings.limits.request_timeout_secs);
    let mut resp = match tokio::time::timeout(limit, next.run(req)).await {
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

async fn metrics(State(sh): State<Arc<Shared>>) -> Response {
    sh.refresh_half_open();
    sh.metrics.set_active_sessions(sh.sessions.len());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        sh.metrics.render(),
    )
        .into_response()
}

fn binary(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, OCTET)], body).into_response()
}

/// A refusal: the status of [`status_for`] and the alert as the body. Counts `reason`.
fn refuse(sh: &Shared, reason: &str, r: Refusal) -> Response {
    sh.metrics.refusal(reason);
    refusal_response(sh, r)
}

fn refusal_response(sh: &Shared, r: Refusal) -> Response {
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

fn retry_after(sh: &Shared) -> HeaderValue {
    HeaderValue::from(sh.settings.limits.retry_after_secs.max(1))
}

fn too_large(sh: &Shared) -> Response {
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
async fn read_body(sh: &Shared, req: Request) -> Result<Bytes, Response> {
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
// Handshake

async fn handshake(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let body = match read_body(&sh, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // The hello's source key is the address the per-address limits use (after PROXY v2).
    let source = peer.map(|p| SourceKey::from_ip(p.ip()));
    http_answer(
        &sh,
        handle_handshake(&sh, Binding::Http, peer, source, body).await,
    )
}

/// The answer to a handshake or records message, whatever carried it.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Bytes to send back: Retry, M2, or a batch of acknowledgement records.
    Bytes(Vec<u8>),
    /// A refusal, sent as an alert.
    Refused(Refusal),
    /// The source address is over its handshake rate (HTTP: 429 with a Busy alert).
    RateLimited,
}

/// An [`Answer`] as an HTTP response.
fn http_answer(sh: &Shared, a: Answer) -> Response {
    match a {
        Answer::Bytes(b) => binary(b),
        Answer::Refused(r) => refusal_response(sh, r),
        Answer::RateLimited => {
            let mut r = refusal_response(sh, Refusal::Busy);
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            r
        }
    }
}

/// Counts `reason` and refuses with `r`.
fn refused(sh: &Shared, reason: &str, r: Refusal) -> Answer {
    sh.metrics.refusal(reason);
    Answer::Refused(r)
}

/// Processes a handshake message (M1, or M3 with records) that arrived over `binding`, from
/// `peer` if the transport knows it (for the per-address rate limit), with the hello's
/// `source` key if the transport has one (Address retries, the per-source share of the
/// half-open table: docs/protocol.md §4.2, §7.3). Transport-independent: the HTTP and MQTT
/// bindings both call it.
pub(crate) async fn handle_handshake(
    sh: &Arc<Shared>,
    binding: Binding,
    peer: Option<std::net::SocketAddr>,
    source: Option<SourceKey>,
    body: Bytes,
) -> Answer {
    // Public-key work runs on blocking threads, a bounded number at once; the rest wait
    // (within the request timeout).
    let Ok(_permit) = sh.hs_permits.acquire().await else {
        return Answer::Refused(Refusal::Busy);
    };
    match body.first() {
        Some(0x01) => {
            let sh2 = sh.clone();
            // Public-key work: off the async workers.
            match tokio::task::spawn_blocking(move || hello(&sh2, binding, peer, source, &body))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    error!(error = %e, "hello task failed");
                    Answer::Refused(Refusal::Busy)
                }
            }
        }
        Some(0x04) => finish(sh.clone(), binding, body).await,
        _ => {
            sh.metrics.handshake("none", "malformed");
            refused(sh, "malformed", Refusal::Malformed)
        }
    }
}

fn hello(
    sh: &Shared,
    binding: Binding,
    peer: Option<std::net::SocketAddr>,
    source: Option<SourceKey>,
    body: &[u8],
) -> Answer {
    let now = sh.now();
    let mut hs = sh.lock_hs_of(binding);
    if let Some(answer) = hs.cached_answer(now, body) {
        drop(hs);
        sh.metrics.handshake("none", "retransmission");
        return Answer::Bytes(answer);
    }
    if let Some(p) = peer
        && !sh.limiter.allow(p.ip(), now.as_millis())
    {
        drop(hs);
        sh.metrics.handshake("none", "rate_limited");
        sh.metrics.refusal("rate_limited");
        return Answer::RateLimited;
    }
    // In a cluster, the core draws new session ids only in partitions this node owns now.
    if let Some(c) = &sh.cluster {
        match c.session_id_policy() {
            Ok(policy) => hs.set_session_id_policy(policy),
            Err(e) => {
                // Nothing owned (this node is joining, or lost its leases): another node
                // will answer the device's retry.
                drop(hs);
                sh.metrics.handshake("none", "no_partition");
                debug!(error = %e, "hello refused: no owned partition");
                return refused(sh, "busy", Refusal::Busy);
            }
        }
    }
    let in_use = |id| sh.sessions.contains(id);
    let evictions = hs.half_open_evictions();
    let nonce_evictions = hs.nonce_evictions();
    let result = match source {
        Some(s) => hs.handle_hello_from(now, body, s, &in_use),
        None => hs.handle_hello(now, body, &in_use),
    };
    let evicted = hs.half_open_evictions() - evictions;
    let nonces_evicted = hs.nonce_evictions() - nonce_evictions;
    sh.set_half_open(binding, hs.half_open_len());
    drop(hs);
    if evicted > 0 {
        // The full table made room by evicting from the source holding the most.
        sh.metrics.half_open_evicted(evicted);
    }
    if nonces_evicted > 0 {
        sh.metrics.nonces_evicted(nonces_evicted);
    }
    match result {
        Ok(HelloReply::GatewayHello { suite, bytes, .. }) => {
            sh.metrics.handshake(&suite.to_string(), "hello");
            Answer::Bytes(bytes)
        }
        Ok(HelloReply::Retry { reason, bytes, .. }) => {
            let outcome = match reason {
                RetryReason::Address => "retry_address",
                RetryReason::Clock | RetryReason::KeyShare => "retry",
            };
            sh.metrics.handshake("none", outcome);
            Answer::Bytes(bytes)
        }
        Err(e) => {
            debug!(error = %e, "hello refused");
            // The per-source bounds of the half-open table get their own refusal reason (they
            // answer Busy like the other full tables).
            let reason = match e {
                Error::Limit(Limit::HalfOpenPerSource) => "half_open_per_source",
                Error::Limit(Limit::SourceUnproven) => "source_unproven",
                _ => e.reason(),
            };
            sh.metrics.handshake("none", reason);
            refused(sh, reason, e.refusal())
        }
    }
}

enum FinishStep {
    Cached(Vec<u8>),
    Refused(Error),
    Established {
        session: Box<iotseal_proto::record::Session>,
        device_id: Vec<u8>,
        records: Vec<u8>,
    },
}

async fn finish(sh: Arc<Shared>, binding: Binding, body: Bytes) -> Answer {
    let sh2 = sh.clone();
    let body2 = body.clone();
    let step = tokio::task::spawn_blocking(move || {
        let now = sh2.now();
        let mut hs = sh2.lock_hs_of(binding);
        if let Some(a) = hs.cached_answer(now, &body2) {
            return FinishStep::Cached(a);
        }
        let r = match hs.handle_finish(now, &body2, &sh2.registry) {
            Ok(est) => FinishStep::Established {
                session: Box::new(est.session),
                device_id: est.device_id,
                records: est.records.to_vec(),
            },
            Err(e) => FinishStep::Refused(e),
        };
        sh2.set_half_open(binding, hs.half_open_len());
        r
    })
    .await;
    let (session, device_id, records) = match step {
        Ok(FinishStep::Cached(a)) => {
            sh.metrics.handshake("none", "retransmission");
            return Answer::Bytes(a);
        }
        Ok(FinishStep::Refused(e)) => {
            debug!(error = %e, "finish refused");
            sh.metrics.handshake("none", e.reason());
            return refused(&sh, e.reason(), e.refusal());
        }
        Ok(FinishStep::Established {
            session,
            device_id,
            records,
        }) => (session, device_id, records),
        Err(e) => {
            error!(error = %e, "finish task failed");
            return Answer::Refused(Refusal::Busy);
        }
    };
    let now = sh.now();
    let suite = session.suite().to_string();
    // The registry said yes a moment ago; a revocation since then still wins.
    let device = match sh.registry.get(&device_id) {
        Some(d) if !d.is_revoked() => d,
        _ => {
            sh.metrics.handshake(&suite, "revoked");
            return refused(&sh, "revoked", Refusal::AuthFailed);
        }
    };
    let entry = SessionEntry::new(*session, device.clone(), now.as_millis());
    let mut guard = entry.state.lock().await;
    let evicted = sh.sessions.insert(entry.clone());
    sh.ended(&evicted, EndReason::Evicted, now);
    sh.audit(&entry, "established", now);
    if device.is_revoked() {
        // Revoked while we were inserting: the revocation's sweep may have missed us.
        if let Some(e) = sh.sessions.remove(entry.id) {
            sh.ended(&[e], EndReason::Revoked, now);
        }
        sh.metrics.handshake(&suite, "revoked");
        return refused(&sh, "revoked", Refusal::AuthFailed);
    }
    device.handshake_done();
    device.seen(now.as_millis());
    sh.metrics.handshake(&suite, "established");
    sh.metrics.set_active_sessions(sh.sessions.len());
    debug!(session = entry.id, device = %device.id, %suite, "session established");

    let recs = match batch::split(&records) {
        Ok(r) => r,
        Err(_) => {
            sh.metrics.refusal("malformed");
            Vec::new()
        }
    };
    let mut groups = vec![Group {
        entry: &entry,
        state: &mut guard,
        records: recs.into_iter().enumerate().collect(),
        force_ack: true,
    }];
    let out = process(&sh, now, &mut groups).await;
    drop(groups);
    drop(guard);
    let mut answer = Vec::new();
    for a in &out.acks {
        batch::push(&mut answer, a);
    }
    if out.acks.is_empty() {
        // Sealing the first ack of a new session cannot fail short of a broken provider.
        return Answer::Refused(Refusal::Busy);
    }
    sh.lock_hs_of(binding)
        .remember_answer(now, &body, answer.clone());
    Answer::Bytes(answer)
}

// ---------------------------------------------------------------------------------------
// Records

async fn records(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let body = match read_body(&sh, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    http_answer(&sh, handle_records(&sh, &body).await)
}

/// Processes a batch of records, whatever carried it: opens them, stores the readings, marks
/// them only after the commit and answers with one acknowledgement per session. The HTTP and
/// MQTT bindings both call it.
pub(crate) async fn handle_records(sh: &Shared, body: &[u8]) -> Answer {
    let Ok(recs) = batch::split(body) else {
        return refused(sh, "malformed", Refusal::Malformed);
    };
    if recs.is_empty() {
        return refused(sh, "malformed", Refusal::Malformed);
    }
    let now = sh.now();
    let mut first: Option<(usize, Refusal)> = None;
    let note = |idx: usize, r: Refusal, first: &mut Option<(usize, Refusal)>| {
        if first.is_none_or(|(i, _)| idx < i) {
            *first = Some((idx, r));
        }
    };
    // Group by session, in session id order (the lock order, so requests never deadlock).
    let mut by_session: std::collections::BTreeMap<u32, Vec<(usize, &[u8])>> =
        std::collections::BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        match Header::peek_session_id(r) {
            Ok(id) => by_session.entry(id).or_default().push((i, r)),
            Err(_) => {
                sh.metrics.refusal("malformed");
                note(i, Refusal::Malformed, &mut first);
            }
        }
    }
    let mut entries = Vec::new();
    for (id, rs) in by_session {
        match sh.sessions.get(id) {
            Some(e) => entries.push((e, rs)),
            None => {
                sh.metrics.refusals_n("unknown_session", rs.len() as u64);
                note(rs[0].0, Refusal::UnknownSession, &mut first);
            }
        }
    }
    let mut guards = Vec::with_capacity(entries.len());
    for (e, _) in &entries {
        guards.push(e.state.lock().await);
    }
    let mut groups: Vec<Group<'_, '_>> = entries
        .iter()
        .zip(guards.iter_mut())
        .map(|((e, rs), g)| Group {
            entry: e,
            state: g,
            records: rs.clone(),
            force_ack: false,
        })
        .collect();
    let out = process(sh, now, &mut groups).await;
    drop(groups);
    drop(guards);
    if let Some((i, r)) = out.first_refusal {
        note(i, r, &mut first);
    }
    if !out.acks.is_empty() {
        let mut answer = Vec::new();
        for a in &out.acks {
            batch::push(&mut answer, a);
        }
        return Answer::Bytes(answer);
    }
    if out.storage_failed {
        return Answer::Refused(Refusal::Busy);
    }
    Answer::Refused(first.map_or(Refusal::Malformed, |(_, r)| r))
}

/// One session's share of a request, with its lock held.
struct Group<'a, 'g> {
    entry: &'a Arc<SessionEntry>,
    state: &'g mut SessionState,
    /// (index in the request, record bytes).
    records: Vec<(usize, &'a [u8])>,
    /// Seal an ack even if nothing new was accepted (the answer to M3).
    force_ack: bool,
}

#[derive(Default)]
struct Processed {
    acks: Vec<Vec<u8>>,
    first_refusal: Option<(usize, Refusal)>,
    storage_failed: bool,
}

#[derive(Default)]
struct GroupWork {
    pending: Vec<u64>,
    replays: usize,
    close: bool,
    ended: bool,
}

/// Opens every record of every group, stores all readings in one call, marks the records
/// only after the commit, and seals one ack per session.
async fn process(sh: &Shared, now: Time, groups: &mut [Group<'_, '_>]) -> Processed {
    let mut out = Processed::default();
    let note = |idx: usize, r: Refusal, out: &mut Processed| {
        if out.first_refusal.is_none_or(|(i, _)| idx < i) {
            out.first_refusal = Some((idx, r));
        }
    };
    let mut new_readings = Vec::new();
    let mut work: Vec<GroupWork> = Vec::with_capacity(groups.len());
    for g in groups.iter_mut() {
        let mut w = GroupWork::default();
        if g.entry.is_ended() {
            let reason = if g.entry.device.is_revoked() {
                "revoked"
            } else {
                "unknown_session"
            };
            sh.metrics.refusals_n(reason, g.records.len() as u64);
            if let Some((i, _)) = g.records.first() {
                note(*i, Refusal::SessionEnded, &mut out);
            }
            w.ended = true;
            work.push(w);
            continue;
        }
        g.entry.touch(now.as_millis());
        let device_id = &g.entry.device.id;
        let mut seen: HashSet<u64> = HashSet::new();
        let mut buf = Vec::new();
        for &(idx, rec) in &g.records {
            buf.clear();
            buf.extend_from_slice(rec);
            match g.state.session.open(now, &mut buf) {
                Ok(o) if seen.contains(&o.seq) => {
                    // The same record twice in one request: once is enough.
                    w.replays += 1;
                    sh.metrics.refusal("replay");
                    note(idx, Refusal::Replay, &mut out);
                }
                Ok(o) => match o.content_type {
                    ContentType::Data => {
                        match push_readings(&mut new_readings, device_id, o.plaintext, now) {
                            Ok(_) => {
                                seen.insert(o.seq);
                                w.pending.push(o.seq);
                            }
                            Err(e) => {
                                warn!(session = g.entry.id, error = ?e, "authenticated record with malformed readings");
                                sh.metrics.refusal("malformed");
                                note(idx, Refusal::Malformed, &mut out);
                            }
                        }
                    }
                    ContentType::Close => {
                        seen.insert(o.seq);
                        w.pending.push(o.seq);
                        w.close = true;
                    }
                    _ => {
                        sh.metrics.refusal("protocol");
                        note(idx, Refusal::AuthFailed, &mut out);
                    }
                },
                Err(Error::Replay) => {
                    w.replays += 1;
                    sh.metrics.refusal("replay");
                    note(idx, Refusal::Replay, &mut out);
                }
                Err(e) => {
                    debug!(session = g.entry.id, error = %e, "record refused");
                    sh.metrics.refusal(e.reason());
                    note(idx, e.refusal(), &mut out);
                    if e.refusal() == Refusal::SessionEnded {
                        w.ended = true;
                    }
                }
            }
        }
        work.push(w);
    }

    let stored_ok = if new_readings.is_empty() {
        true
    } else {
        let t0 = Instant::now();
        let r = sh.storage.store_readings(new_readings).await;
        sh.metrics.storage_commit(t0.elapsed());
        match r {
            Ok(o) => {
                sh.metrics.readings(o.inserted as u64, o.duplicates as u64);
                // The device counters count rows stored, not readings received: a reading
                // sent again in another record is a duplicate and adds nothing.
                for (device, n) in &o.per_device {
                    if let Some(g) = groups.iter().find(|g| g.entry.device.id == *device) {
                        g.entry.device.stored(*n as u64);
                    }
                }
                true
            }
            Err(e) => {
                error!(error = %e, "storing readings failed; records not acknowledged");
                sh.metrics.refusal("storage");
                out.storage_failed = true;
                false
            }
        }
    };

    let interval = sh.settings.limits.replay_ack_interval_ms;
    for (g, w) in groups.iter_mut().zip(work) {
        if w.ended && !g.force_ack {
            end_session(sh, g.entry, EndReason::Expired, now);
            continue;
        }
        let mut accepted = 0u64;
        if stored_ok {
            for seq in &w.pending {
                if g.state.session.accept(*seq).is_ok() {
                    accepted += 1;
                }
            }
            if accepted > 0 {
                sh.metrics.records_accepted(accepted);
                g.entry.device.accepted(accepted);
                g.entry.device.seen(now.as_millis());
            }
        }
        // Replays are answered with an ack, at most one such ack per interval per session,
        // so a replaying relay cannot burn the gateway's sequence numbers.
        let replay_ack =
            w.replays > 0 && now.as_millis().saturating_sub(g.state.last_replay_ack_ms) >= interval;
        if accepted > 0 || g.force_ack || replay_ack {
            let mut rec = Vec::new();
            match g.state.session.seal_ack(now, &mut rec) {
                Ok(_) => {
                    sh.metrics.ack_sent();
                    if accepted == 0 && !g.force_ack {
                        g.state.last_replay_ack_ms = now.as_millis();
                    }
                    out.acks.push(rec);
                }
                Err(e) => {
                    debug!(session = g.entry.id, error = %e, "sealing an ack failed");
                    end_session(sh, g.entry, EndReason::Expired, now);
                    continue;
                }
            }
        } else if w.replays > 0 {
            sh.metrics.replay_ack_suppressed();
        }
        if w.close && accepted > 0 {
            end_session(sh, g.entry, EndReason::Closed, now);
        } else if w.ended {
            end_session(sh, g.entry, EndReason::Expired, now);
        }
    }
    out
}

fn end_session(sh: &Shared, e: &SessionEntry, reason: EndReason, now: Time) {
    let reason = if e.device.is_revoked() {
        EndReason::Revoked
    } else {
        reason
    };
    if let Some(e) = sh.sessions.remove(e.id) {
        sh.ended(&[e], reason, now);
    }
}

/// The name a value is stored under (borrowed for the built-in kinds).
pub fn sensor_name(k: SensorKind) -> SensorName {
    match k {
        SensorKind::Other(c) => SensorName::Owned(format!("other_{c}")),
        k => SensorName::Borrowed(k.name()),
    }
}

/// Appends the readings of a data record's plaintext to `out`, all of them or (on an error)
/// none; returns how many. Their payloads are slices of one copy of the plaintext.
fn push_readings(
    out: &mut Vec<NewReading>,
    device_id: &Arc<str>,
    plaintext: &[u8],
    now: Time,
) -> Result<usize, Malformed> {
    let plain = Bytes::copy_from_slice(plaintext);
    let readings = reading::iter_batch(&plain)?;
    let start = out.len();
    out.reserve(readings.size_hint().1.unwrap_or(0));
    for r in readings {
        match r {
            Ok(r) => out.push(new_reading(device_id, &plain, r, now)),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(out.len() - start)
}

/// `r`'s payload is sliced out of `plain`, the buffer it was decoded from.
fn new_reading(device_id: &Arc<str>, plain: &Bytes, r: ReadingRef<'_>, now: Time) -> NewReading {
    NewReading {
        device_id: device_id.clone(),
        msg_id: r.msg_id,
        device_time_ms: r.time_ms,
        received_ms: now.as_millis(),
        payload: plain.slice_ref(r.encoded()),
        values: r
            .values()
            .map(|(k, v)| (sensor_name(k), shortest_f64(v)))
            .collect(),
    }
}

/// The f32's shortest decimal form, as f64 (21.3, not 21.299999237060547); formatted on the
/// stack, not the heap.
fn shortest_f64(v: f32) -> f64 {
    use std::io::Write;
    if !v.is_finite() {
        return f64::from(v);
    }
    // The exponent form ("2.13e1"): at most ~15 bytes for any finite f32.
    let mut buf = [0u8; 48];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    if write!(cur, "{v:e}").is_err() {
        return f64::from(v);
    }
    let n = usize::try_from(cur.position()).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::from(v))
}

#[cfg(test)]
mod tests {
    use super::shortest_f64;

    /// Same as going through a heap string, for every kind of f32 (random bit patterns,
    /// extremes, subnormals, signed zeros, non-finite).
    #[test]
    fn shortest_f64_matches_the_decimal_round_trip() {
        let mut x: u32 = 0x1234_5678;
        let mut cases = vec![
            0.0f32,
            -0.0,
            21.3,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-45,
            f32::EPSILON,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            cases.push(f32::from_bits(x));
        }
        for v in cases {
            let want = v.to_string().parse::<f64>().unwrap_or(f64::from(v));
            let got = shortest_f64(v);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{v:e}: {got} != {want}"
            );
        }
    }
}
