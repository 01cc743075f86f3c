//! The admin JSON API under `/v1/devices`, behind a bearer token (compared in constant time;
//! anything else gets a bare 401).

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iotseal_proto::SigAlg;
use iotseal_proto::handshake::{MAX_DEVICE_ID, key_id};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::{error, info};

use crate::registry::{DeviceState, RegisterError};
use crate::server::Shared;
use crate::sessions::EndReason;
use crate::storage::{DeviceRecord, ReadingQuery};

pub(crate) fn routes(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/devices", get(list).post(register))
        .route("/v1/devices/{id}", get(show))
        .route("/v1/devices/{id}/revoke", post(revoke))
        .route("/v1/devices/{id}/readings", get(readings))
        .route_layer(middleware::from_fn_with_state(shared, require_token))
}

/// Whether the request carries the admin token as `Authorization: Bearer T`.
pub(crate) fn token_ok(sh: &Shared, headers: &axum::http::HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.strip_prefix("Bearer "))
        .map(str::trim);
    // Compare hashes: constant time, and the same work whatever the presented length.
    presented.is_some_and(|t| {
        let h = sh.provider.hash.hash(t.as_bytes());
        bool::from(h.ct_eq(&sh.admin_token_sha256))
    })
}

/// The 401 of the admin API (counted as an `unauthorized` refusal).
pub(crate) fn unauthorized(sh: &Shared) -> Response {
    sh.metrics.refusal("unauthorized");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
    )
        .into_response()
}

async fn require_token(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if !token_ok(&sh, req.headers()) {
        return unauthorized(&sh);
    }
    next.run(req).await
}

/// A device as the admin API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DeviceInfo {
    id: String,
    alg: SigAlg,
    public_key: String,
    key_id: String,
    revoked: bool,
    created_ms: u64,
    last_seen_ms: Option<u64>,
    active_sessions: usize,
    handshakes: u64,
    records_accepted: u64,
    readings: u64,
}

fn info(sh: &Shared, d: &DeviceState) -> DeviceInfo {
    let (handshakes, records_accepted, _) = d.counters();
    DeviceInfo {
        id: d.id.to_string(),
        alg: d.alg,
        public_key: hex::encode(&d.public_key),
        key_id: hex::encode(key_id(&sh.provider, d.alg, &d.public_key)),
        revoked: d.is_revoked(),
        created_ms: d.created_ms,
        last_seen_ms: d.last_seen_ms(),
        active_sessions: sh.sessions.count_for(&d.id),
        handshakes,
        records_accepted,
        readings: d.readings_total(),
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

fn internal() -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

async fn list(State(sh): State<Arc<Shared>>) -> Response {
    let v: Vec<DeviceInfo> = sh.registry.all().iter().map(|d| info(&sh, d)).collect();
    Json(v).into_response()
}

async fn show(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match sh.registry.get(id.as_bytes()) {
        Some(d) => Json(info(&sh, &d)).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown device"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterReq {
    id: String,
    alg: String,
    public_key: String,
}

async fn register(
    State(sh): State<Arc<Shared>>,
    body: Result<Json<RegisterReq>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {id, alg, public_key}",
        );
    };
    if req.id.is_empty()
        || req.id.len() > MAX_DEVICE_ID
        || req.id.chars().any(|c| c.is_control() || c == '/')
    {
        return error(
            StatusCode::BAD_REQUEST,
            "id: 1 to 32 bytes of UTF-8, no control characters or '/'",
        );
    }
    let Ok(alg) = req.alg.parse::<SigAlg>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "alg: ed25519, ecdsa-p256, mldsa65 or ed25519+mldsa65",
        );
    };
    let Ok(pk) = hex::decode(req.public_key.trim()) else {
        return error(StatusCode::BAD_REQUEST, "public_key: not hex");
    };
    if pk.len() != alg.public_key_len() {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("public_key: {alg} keys are {} bytes", alg.public_key_len()),
        );
    }
    let rec = DeviceRecord {
        id: req.id.clone(),
        alg,
        public_key_hex: hex::encode(&pk),
        revoked: false,
        created_ms: sh.now().as_millis(),
        last_seen_ms: None,
        readings: 0,
    };
    match sh.registry.check_new(&rec) {
        Ok(()) => {}
        Err(RegisterError::IdExists) => {
            return error(StatusCode::CONFLICT, "id already registered");
        }
        Err(RegisterError::KeyExists) => {
            return error(StatusCode::CONFLICT, "public key already registered");
        }
        Err(RegisterError::Invalid) => return error(StatusCode::BAD_REQUEST, "invalid device"),
    }
    if let Err(e) = sh.storage.add_device(rec.clone()).await {
        // Most likely a concurrent registration of the same id or key.
        error!(device = %rec.id, error = %e, "registering a device failed");
        return error(StatusCode::CONFLICT, "device could not be registered");
    }
    match sh.registry.insert(&rec) {
        Ok(d) => {
            info!(device = %rec.id, %alg, "device registered");
            (StatusCode::CREATED, Json(info(&sh, &d))).into_response()
        }
        Err(_) => error(StatusCode::CONFLICT, "id already registered"),
    }
}

async fn revoke(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if sh.registry.get(id.as_bytes()).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown device");
    }
    // In memory first: from here on no handshake completes and no record is accepted.
    sh.registry.revoke(id.as_bytes());
    let ended = sh.sessions.remove_device(&id);
    let now = sh.now();
    sh.ended(&ended, EndReason::Revoked, now);
    match sh.storage.revoke_device(id.clone()).await {
        Ok(_) => {
            info!(device = %id, sessions = ended.len(), "device revoked");
            Json(json!({ "id": id, "revoked": true, "sessions_ended": ended.len() }))
                .into_response()
        }
        Err(e) => {
            error!(device = %id, error = %e, "storing a revocation failed (revoked in memory)");
            internal()
        }
    }
}

#[derive(Debug, Deserialize)]
struct ReadingsParams {
    from: Option<u64>,
    to: Option<u64>,
    limit: Option<u32>,
    format: Option<String>,
}

async fn readings(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    q: Result<Query<ReadingsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "query: from=MS&to=MS&limit=N&format=json|csv",
        );
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return error(StatusCode::BAD_REQUEST, "format: json or csv"),
    };
    if sh.registry.get(id.as_bytes()).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown device");
    }
    let query = ReadingQuery {
        device_id: id,
        from_ms: q.from,
        to_ms: q.to,
        limit: Some(q.limit.unwrap_or(1000).min(100_000)),
    };
    let rows = match sh.storage.readings(query).await {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "reading readings failed");
            return internal();
        }
    };
    if !csv {
        return Json(rows).into_response();
    }
    let mut out = String::from("device_id,msg_id,device_time_ms,received_ms,payload_hex,values\n");
    for r in rows {
        let values = r
            .values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            csv_field(&r.device_id),
            r.msg_id,
            r.device_time_ms,
            r.received_ms,
            r.payload_hex,
            csv_field(&values)
        ));
    }
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response()
}

/// A CSV field, quoted when needed (RFC 4180); a leading formula character is prefixed with
/// a quote so spreadsheets do not evaluate it.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
