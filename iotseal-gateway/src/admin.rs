//! The admin JSON API (`/v1/devices...`, `/v1/cluster`, `/v1/openapi.json`), behind a bearer
//! token (compared in constant time; anything else gets a bare 401).
//!
//! Each route is declared once, on its handler (`#[utoipa::path]`: method, path, parameters,
//! bodies, answers), and [`api`] collects them with utoipa-axum's `routes!`, the only way this
//! module adds routes: the router and the OpenAPI 3.1 document both come from that one
//! declaration (tests/admin_api.rs checks them against each other over a running gateway). The
//! document is served at `GET /v1/openapi.json` and kept in `docs/openapi.json` (a test
//! compares them byte for byte).

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use iotseal_proto::SigAlg;
use iotseal_proto::handshake::{MAX_DEVICE_ID, key_id};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tracing::{error, info};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cluster::Cluster;
use crate::pipeline::Pipeline;
use crate::registry::{DeviceState, RegisterError};
use crate::storage::json::non_finite;
use crate::storage::{DeviceRecord, ReadingQuery, StoredReading};

/// Readings returned when the query names no `limit`.
const DEFAULT_LIMIT: u32 = 1000;
/// Most readings one query returns (a larger `limit` is clamped).
const MAX_LIMIT: u32 = 100_000;

/// The API's description: what the operations share.
const DESCRIPTION: &str = "\
The operator API of an iotseal gateway: register, list and revoke devices, read the readings \
stored for them, see the cluster. It is served on the gateway's listener (HTTPS, or plain HTTP \
behind a proxy with `plain_http`). This document is generated from the gateway's code \
(`iotseal-gateway/src/admin.rs`) and served at `GET /v1/openapi.json`; `docs/openapi.json` is \
the same document, checked by a test.

**Authentication.** Every operation needs the admin token (the file `admin_token_file` of the \
gateway's settings; at least 16 characters, surrounding whitespace ignored) as \
`Authorization: Bearer <token>`, compared in constant time. Without it, or with another token, \
the answer is `401` with `WWW-Authenticate: Bearer` and no body.

**Conventions.** Times are integers: milliseconds since the Unix epoch (1970-01-01T00:00:00Z). \
A reading's message id (`msg_id`, up to 2^62 − 1) is a decimal string, always: JavaScript's \
numbers are exact only up to 2^53. A reading's value is a JSON number, or one of the strings \
`\"NaN\"`, `\"Infinity\"` and `\"-Infinity\"` (JSON has no number for them). \
Binary values (public keys, key ids, reading encodings) are lowercase hex. Errors other than \
401 are JSON `{\"error\": \"<message>\"}`; the message is for people and may change, the status \
is what a program tests. A request still running after `limits.request_timeout_secs` (default \
30 s) is answered `408` with no body; an unknown path `404`, and (with the token) a method a \
path does not have `405`, both with no body.

**Not described here.** `POST /v1/handshake` and `POST /v1/records` are the devices' binary \
protocol endpoints (`application/octet-stream` bodies, refusals as 2-byte alerts), specified in \
docs/protocol.md §18, \"HTTP binding\". `GET /healthz` (`ok`), `GET /metrics` (Prometheus \
text, no token) and `/dashboard` (a browser page with its own login) are not part of this API.";

#[derive(OpenApi)]
#[openapi(
    info(title = "iotseal gateway admin API", description = DESCRIPTION),
    modifiers(&AdminToken),
    security(("admin_token" = [])),
    tags(
        (name = "devices", description = "The device registry and the readings stored for each device."),
        (name = "cluster", description = "Cluster mode (docs/cluster.md): this node's view of the cluster."),
        (name = "meta", description = "This document."),
    )
)]
struct AdminApi;

/// The bearer-token security scheme every operation requires.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The gateway's admin token (file `admin_token_file` of its settings, at least \
                 16 characters), sent as `Authorization: Bearer <token>`. An opaque string, not \
                 a JWT; compared in constant time.",
            ))
            .build();
        api.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

/// Every admin route with its documentation: the one declaration of both (see the module
/// documentation).
/// What the admin API (and the dashboard, through it) works with: the engine, the admin
/// token's hash and, in cluster mode, the cluster (announcements, `GET /v1/cluster`).
pub(crate) struct AdminState {
    pub(crate) pipeline: Arc<Pipeline>,
    /// SHA-256 of the admin token.
    pub(crate) token_sha256: [u8; 32],
    pub(crate) cluster: Option<Arc<Cluster>>,
}

impl std::ops::Deref for AdminState {
    type Target = Pipeline;
    fn deref(&self) -> &Pipeline {
        &self.pipeline
    }
}

fn api() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::with_openapi(AdminApi::openapi())
        .routes(routes!(list, register))
        .routes(routes!(show))
        .routes(routes!(revoke))
        .routes(routes!(readings))
        .routes(routes!(cluster))
        .routes(routes!(openapi_document))
}

/// The admin routes, behind the token.
pub(crate) fn routes(state: Arc<AdminState>) -> Router {
    let (router, _) = api().split_for_parts();
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// The admin API's OpenAPI 3.1 document as served at `GET /v1/openapi.json` and kept in
/// `docs/openapi.json`: pretty-printed JSON and a final newline.
pub fn openapi_json() -> Result<String, serde_json::Error> {
    let mut doc = api().into_openapi().to_pretty_json()?;
    doc.push('\n');
    Ok(doc)
}

/// [`openapi_json`], made once.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| openapi_json().map_err(|e| e.to_string()));

/// Whether the request carries the admin token as `Authorization: Bearer T`.
pub(crate) fn token_ok(sh: &AdminState, headers: &axum::http::HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.strip_prefix("Bearer "))
        .map(str::trim);
    // Compare hashes: constant time, and the same work whatever the presented length.
    presented.is_some_and(|t| {
        let h = sh.provider.hash.hash(t.as_bytes());
        bool::from(h.ct_eq(&sh.token_sha256))
    })
}

/// The 401 of the admin API (counted as an `unauthorized` refusal).
pub(crate) fn unauthorized(sh: &AdminState) -> Response {
    sh.metrics.refusal("unauthorized");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
    )
        .into_response()
}

async fn require_token(State(sh): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    if !token_ok(&sh, req.headers()) {
        return unauthorized(&sh);
    }
    next.run(req).await
}

/// A device as the admin API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DeviceInfo {
    /// The device's id: 1 to 32 bytes of UTF-8 (the characters allowed: see the registration).
    #[schema(min_length = 1, max_length = 32, example = "sensor-0042")]
    id: String,
    /// The signature algorithm of the device's identity key.
    #[schema(schema_with = alg_schema)]
    alg: SigAlg,
    /// The device's public key, lowercase hex (its length is set by `alg`).
    #[schema(pattern = "^([0-9a-f]{2})+$")]
    public_key: String,
    /// An identifier of the public key, lowercase hex (16 characters): the first 8 bytes of
    /// SHA-256(algorithm code || public key), the formula of the protocol's `key_id` for
    /// gateway keys (docs/protocol.md §4.3). Handshakes name a device by its id, not by this.
    #[schema(pattern = "^[0-9a-f]{16}$", example = "3f9a0c51d2e47b86")]
    key_id: String,
    /// Whether the device is revoked: it cannot complete a handshake and its sessions ended.
    revoked: bool,
    /// When the device was registered: ms since the Unix epoch (gateway clock).
    created_ms: u64,
    /// The device's last completed handshake or accepted record: ms since the Unix epoch
    /// (gateway clock); `null` if it was never seen. Written to storage by the sweeper
    /// (`limits.sweep_interval_secs`) and at shutdown, so after a crash it can be older.
    last_seen_ms: Option<u64>,
    /// The device's sessions in this gateway's session table now (idle, parked ones
    /// included).
    active_sessions: usize,
    /// Handshakes the device completed with this gateway process (not persisted: 0 after a
    /// restart).
    handshakes: u64,
    /// Records of the device this gateway process accepted (data and close records; not
    /// persisted: 0 after a restart). A record received again (a replay or retransmission)
    /// is not accepted again.
    records_accepted: u64,
    /// Readings stored for the device: rows in storage, after deduplication by (device,
    /// message id). A reading the device sends again, in the same record or another one, is
    /// stored once and counted once. It is the count the storage held when this gateway
    /// started plus the rows this gateway has stored since; in cluster mode another node's
    /// rows show here only after this node restarts.
    readings: u64,
}

fn info(sh: &AdminState, d: &DeviceState) -> DeviceInfo {
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

/// The body of every error answer but 401.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "unknown device"}))]
pub(crate) struct ErrorBody {
    /// What went wrong, for people (the text may change; the status is what programs test).
    error: String,
}

fn error(status: StatusCode, msg: &str) -> Response {
    let body = ErrorBody {
        error: msg.to_string(),
    };
    (status, Json(body)).into_response()
}

fn internal() -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// The 400 for a path whose `id` is not UTF-8 once percent-decoded.
fn bad_id() -> Response {
    error(StatusCode::BAD_REQUEST, "id: not UTF-8")
}

/// Every device.
///
/// Every registered device, revoked ones included, sorted by id (byte order).
#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "devices",
    operation_id = "list_devices",
    responses(
        (status = 200, description = "Every device, sorted by id.", body = Vec<DeviceInfo>),
        (status = 401, description = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
    )
)]
async fn list(State(sh): State<Arc<AdminState>>) -> Response {
    let v: Vec<DeviceInfo> = sh.registry.all().iter().map(|d| info(&sh, d)).collect();
    Json(v).into_response()
}

/// What 401 answers say.
const UNAUTHORIZED: &str = "No admin token, or another one: no body.";

/// One device.
#[utoipa::path(
    get,
    path = "/v1/devices/{id}",
    tag = "devices",
    operation_id = "get_device",
    params(DeviceId),
    responses(
        (status = 200, description = "The device.", body = DeviceInfo),
        (status = 400, description = "The id is not UTF-8 once percent-decoded.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No device has this id (`unknown device`).", body = ErrorBody),
    )
)]
async fn show(
    State(sh): State<Arc<AdminState>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return bad_id();
    };
    match sh.registry.get(id.as_bytes()) {
        Some(d) => Json(info(&sh, &d)).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown device"),
    }
}

/// The `{id}` of a device's paths.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "documentation only: the handlers extract `Path<String>`"
)]
struct DeviceId {
    /// The device's id (1 to 32 bytes of UTF-8), percent-encoded where a URL needs it.
    #[param(min_length = 1, max_length = 32, example = "sensor-0042")]
    id: String,
}

/// A registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "sensor-0042", "alg": "ed25519", "public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"}))]
struct RegisterReq {
    /// The new device's id: 1 to 32 bytes of UTF-8 (`maxLength` counts characters: at most
    /// 32 *bytes* are accepted). Refused: control (Cc), format (Cf: bidi controls such as
    /// U+202E, the BOM, zero-width joiners), surrogate, private-use and unassigned code points,
    /// line and paragraph separators (U+2028, U+2029), `/`, white space at either end, and
    /// an id of white space only. Unique.
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f/]+$"
    )]
    id: String,
    /// The signature algorithm of the device's identity key.
    #[schema(schema_with = alg_schema)]
    alg: String,
    /// The device's public key in hex (either case; surrounding whitespace ignored), of the
    /// length `alg` sets, and not weak (see the 400 answer). Unique: a key registered to
    /// another device is refused.
    public_key: String,
}

/// Registers a device.
///
/// The device can handshake as soon as the answer is sent.
#[utoipa::path(
    post,
    path = "/v1/devices",
    tag = "devices",
    operation_id = "register_device",
    request_body(
        content = RegisterReq,
        content_type = "application/json",
        description = "The device. The body must be sent as `Content-Type: application/json`, hold exactly these three fields and fit `limits.max_body` (default 1 MiB).",
    ),
    responses(
        (status = 201, description = "Registered (stored durably).", body = DeviceInfo),
        (status = 400, description = "Not JSON with exactly `id`, `alg` and `public_key` (or not sent as `application/json`, or larger than `limits.max_body`); an invalid id; an unknown algorithm; a public key that is not hex or not of the algorithm's length; a weak public key (Ed25519: small order, the identity or all zeros, non-canonical, not a point; ECDSA P-256: not an uncompressed point on the curve; ed25519+mldsa65: its Ed25519 half likewise).", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 409, description = "The id or the public key is already registered; also when the storage refused the registration (a concurrent registration of the same id or key, or a storage failure: see the gateway's log).", body = ErrorBody),
    )
)]
async fn register(
    State(sh): State<Arc<AdminState>>,
    body: Result<Json<RegisterReq>, JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {id, alg, public_key}",
        );
    };
    if let Err(why) = check_device_id(&req.id) {
        sh.metrics.refusal("registration");
        return error(StatusCode::BAD_REQUEST, &format!("id: {why}"));
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
    // A weak key (small order, off the curve, non-canonical) is refused whatever provider
    // verifies signatures later: checked with the RustCrypto implementations.
    if let Err(weak) = iotseal_crypto_rustcrypto::check_public_key(alg, &pk) {
        sh.metrics.refusal("registration");
        return error(
            StatusCode::BAD_REQUEST,
            &format!("public_key: {alg} key refused: {weak}"),
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
            if let Some(c) = &sh.cluster {
                c.announce_device(&rec.id).await;
            }
            (StatusCode::CREATED, Json(info(&sh, &d))).into_response()
        }
        Err(_) => error(StatusCode::CONFLICT, "id already registered"),
    }
}

/// The answer to a revocation.
#[derive(Debug, Serialize, ToSchema)]
struct Revoked {
    /// The device's id.
    id: String,
    /// Always `true`.
    revoked: bool,
    /// The device's sessions this revocation ended (0 when it had none, or was revoked
    /// before).
    sessions_ended: usize,
}

/// Revokes a device.
///
/// From the answer on, the device cannot complete a handshake, its sessions are ended and its
/// records refused. Revoking a revoked device again succeeds (ending nothing). A revocation
/// cannot be undone through this API.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/revoke",
    tag = "devices",
    operation_id = "revoke_device",
    params(DeviceId),
    responses(
        (status = 200, description = "Revoked, and stored durably.", body = Revoked, example = json!({"id": "sensor-0042", "revoked": true, "sessions_ended": 1})),
        (status = 400, description = "The id is not UTF-8 once percent-decoded.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No device has this id (`unknown device`).", body = ErrorBody),
        (status = 500, description = "Storing the revocation failed: the device is revoked in this gateway's memory (its sessions ended) but, after a restart, would not be. Retry.", body = ErrorBody),
    )
)]
async fn revoke(
    State(sh): State<Arc<AdminState>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return bad_id();
    };
    if sh.registry.get(id.as_bytes()).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown device");
    }
    // In memory first: from here on no handshake completes and no record is accepted.
    sh.registry.revoke(id.as_bytes());
    let ended = sh.end_device_sessions(&id);
    match sh.storage.revoke_device(id.clone()).await {
        Ok(_) => {
            info!(device = %id, sessions = ended, "device revoked");
            if let Some(c) = &sh.cluster {
                c.announce_device(&id).await;
            }
            Json(Revoked {
                id,
                revoked: true,
                sessions_ended: ended,
            })
            .into_response()
        }
        Err(e) => {
            error!(device = %id, error = %e, "storing a revocation failed (revoked in memory)");
            internal()
        }
    }
}

/// The query of `GET /v1/devices/{id}/readings`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadingsParams {
    /// The earliest device time to return (inclusive): ms since the Unix epoch. Default: no
    /// lower bound.
    #[param(minimum = 0, example = 1767225600000_u64)]
    from: Option<u64>,
    /// The device time to stop before (exclusive): ms since the Unix epoch. Default: no upper
    /// bound.
    #[param(minimum = 0, example = 1767229200000_u64)]
    to: Option<u64>,
    /// The most readings to return: default 1000; values above 100000 are taken as 100000; 0
    /// returns none. To read more, page by time: the next `from` is the last reading's
    /// `device_time_ms` (readings at that time already returned come again; skip them by
    /// `msg_id`).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4294967295_u64, default = 1000)]
    limit: Option<u32>,
    /// The answer's format: `json` (default; `application/json`) or `csv` (`text/csv`).
    #[param(inline)]
    format: Option<Format>,
}

/// The format of a readings answer.
#[derive(Debug, Default, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Format {
    /// `application/json`: a list of readings.
    #[default]
    Json,
    /// `text/csv`: a header line, then a line per reading.
    Csv,
}

/// A device's readings.
///
/// The readings stored for the device with a device time in `[from, to)`, oldest first (by
/// `device_time_ms`, then `msg_id`), at most `limit`.
///
/// As CSV (`format=csv`, `text/csv; charset=utf-8`, RFC 4180, `\n` line ends): a header line
/// `device_id,msg_id,device_time_ms,received_ms,payload_hex,values`, then one line per reading
/// with the fields of the JSON answer; `values` is `name=value` pairs joined by `;`
/// (`temperature=21.5;humidity=40`; NaN and ±infinity as `NaN`, `Infinity` and `-Infinity`,
/// the JSON answer's names). A field holding `,`, `"`, CR or LF is quoted (`"` doubled); a
/// `device_id` or `values` starting with `=`, `+`, `-` or `@` is prefixed with `'` so that
/// spreadsheets do not evaluate it.
#[utoipa::path(
    get,
    path = "/v1/devices/{id}/readings",
    tag = "devices",
    operation_id = "device_readings",
    params(DeviceId, ReadingsParams),
    responses(
        (status = 200, description = "The readings, oldest first (an empty list when none match).", content(
            (Vec<StoredReading> = "application/json"),
            (String = "text/csv", example = "device_id,msg_id,device_time_ms,received_ms,payload_hex,values\nsensor-0042,17,1767225600000,1767225600412,11c000019b76daa800020141ac0000024220000000,temperature=21.5;humidity=40\n"),
        )),
        (status = 400, description = "A query parameter that is not a number in range (`from`, `to`, `limit`), or a `format` other than `json` and `csv`; an id that is not UTF-8 once percent-decoded.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "No device has this id (`unknown device`).", body = ErrorBody),
        (status = 500, description = "The storage failed (see the gateway's log).", body = ErrorBody),
    )
)]
async fn readings(
    State(sh): State<Arc<AdminState>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<ReadingsParams>, QueryRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return bad_id();
    };
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "query: from=MS&to=MS&limit=N&format=json|csv",
        );
    };
    let csv = q.format.unwrap_or_default() == Format::Csv;
    if sh.registry.get(id.as_bytes()).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown device");
    }
    let query = ReadingQuery {
        device_id: id,
        from_ms: q.from,
        to_ms: q.to,
        limit: Some(q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT)),
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
            .map(|(k, v)| match non_finite(*v) {
                Some(name) => format!("{k}={name}"),
                None => format!("{k}={v}"),
            })
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

/// The characters a device id may hold (docs/openapi.json, `id`): 1 to 32 bytes of UTF-8;
/// no control (Cc), format (Cf: bidi controls, BOM, zero-width joiners), surrogate, private-use
/// or unassigned code points, no line or paragraph separators, no `/`; not blank, and no white
/// space at either end. The id appears in logs, URLs, CSV files and the dashboard: a character
/// that renders as nothing or reorders text would let one id pass for another.
pub(crate) fn check_device_id(id: &str) -> Result<(), &'static str> {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    if id.is_empty() || id.len() > MAX_DEVICE_ID {
        return Err("1 to 32 bytes of UTF-8");
    }
    if id.trim() != id || id.chars().all(char::is_whitespace) {
        return Err("no white space at either end, and not blank");
    }
    for c in id.chars() {
        if c == '/' {
            return Err("no '/'");
        }
        match c.general_category() {
            G::Control | G::Format | G::Surrogate | G::PrivateUse | G::Unassigned => {
                return Err(
                    "no control, format (bidi, BOM, zero-width), private-use or unassigned characters",
                );
            }
            G::LineSeparator | G::ParagraphSeparator => {
                return Err("no line or paragraph separators");
            }
            _ => {}
        }
    }
    Ok(())
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

// Only its schema is used: the cluster layer (cluster.rs `status_json`) writes this JSON; a
// test over a cluster node checks that the two name the same fields.
#[derive(Debug, Serialize, ToSchema)]
#[schema(description = "This node's view of the cluster (the answer of `GET /v1/cluster`).")]
struct ClusterStatus {
    /// This node's name (`cluster.node_id`).
    node: String,
    /// The URL this node serves devices at.
    address: String,
    /// Live nodes as of the latest heartbeat round, this one included.
    nodes: u64,
    /// The number of partitions the session-id space is cut into (`cluster.partitions`).
    #[schema(minimum = 1, maximum = 4096)]
    partitions: u32,
    /// The partitions this node owns now (holds the lease of), in order.
    owned: Vec<u32>,
    /// Requests this node forwarded to the owner of their partition, since it started.
    forwarded_out: u64,
    /// Requests this node served for other nodes, since it started.
    forwarded_in: u64,
    /// Every node this node knows of, sorted by name: the live ones, and the ones that
    /// stopped answering (`alive: false`) until they are forgotten (10 lease periods; at most
    /// 256 kept). This node is always listed.
    members: Vec<ClusterNode>,
}

// The schema of `crate::cluster::NodeView`, which the cluster layer writes; a unit test
// compares their fields.
#[derive(Debug, Serialize, ToSchema)]
#[schema(description = "A node of the cluster, as this node last heard of it.")]
struct ClusterNode {
    /// The node's name.
    node: String,
    /// The URL it serves devices at, as it reports it (empty if it reported none).
    address: String,
    /// The partitions it owned at its last heartbeat answer, in order.
    owned: Vec<u32>,
    /// When this node last heard from it: ms since the Unix epoch (this node's clock; now,
    /// for this node).
    last_heartbeat_ms: u64,
    /// Whether it answered the latest heartbeat round.
    alive: bool,
    /// Whether it is the node answering this request.
    this_node: bool,
    /// Requests it forwarded to their owners, as it last reported.
    forwarded_out: u64,
    /// Requests it served for other nodes, as it last reported.
    forwarded_in: u64,
}

/// This node's view of the cluster.
///
/// This node's state and the nodes it knows (docs/cluster.md, "Nodes view"). Each node's view
/// is its own; after a membership change the views agree once every node has run a heartbeat
/// round (`cluster.lease_ms / 3`).
///
/// In cluster mode the cluster layer answers this route before the router does; a gateway
/// that is not in cluster mode answers 404 (after checking the token like every operation).
#[utoipa::path(
    get,
    path = "/v1/cluster",
    tag = "cluster",
    operation_id = "cluster_status",
    responses(
        (status = 200, description = "This node's view of the cluster.", body = ClusterStatus),
        (status = 401, description = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "The gateway is not in cluster mode (`not in cluster mode`).", body = ErrorBody),
    )
)]
async fn cluster(State(sh): State<Arc<AdminState>>) -> Response {
    match &sh.cluster {
        Some(c) => Json(c.status_json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "not in cluster mode"),
    }
}

/// This document.
///
/// The admin API's OpenAPI 3.1 description, generated from the gateway's code: the same, byte
/// for byte, as `docs/openapi.json` of the gateway's source.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi_document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document (pretty-printed, with a final newline).", content_type = "application/json", body = Object),
        (status = 401, description = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 500, description = "The document could not be written (see the gateway's log).", body = ErrorBody),
    )
)]
async fn openapi_document() -> Response {
    match &*DOCUMENT {
        Ok(doc) => ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response(),
        Err(e) => {
            error!(error = %e, "writing the OpenAPI document failed");
            internal()
        }
    }
}

/// The schema of a signature algorithm's name, from the algorithms this build knows.
fn alg_schema() -> Schema {
    let lengths: Vec<String> = SigAlg::ALL
        .iter()
        .map(|a| format!("`{}` ({}-byte keys)", a.name(), a.public_key_len()))
        .collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(SigAlg::ALL.iter().map(|a| a.name())))
        .description(Some(format!(
            "A signature algorithm (docs/protocol.md §3.1): {}.",
            lengths.join(", ")
        )))
        .build()
        .into()
}

#[cfg(test)]
mod id_tests {
    use super::check_device_id;

    #[test]
    fn device_ids_refuse_invisible_and_reordering_characters() {
        for ok in [
            "sensor-1",
            "Gewächshaus 3",
            "温度计",
            "a",
            "x".repeat(32).as_str(),
            "a b",
        ] {
            assert_eq!(check_device_id(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            " ",
            "   ",
            " lead",
            "trail ",
            "a\tb",
            "a\nb",
            "evil\u{202e}gnp.exe",
            "\u{feff}bom",
            "zero\u{200d}width",
            "line\u{2028}sep",
            "para\u{2029}sep",
            "a/b",
            "priv\u{e000}",
            "\u{0}",
            &"x".repeat(33),
            "\u{2066}isolate",
        ] {
            assert!(check_device_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeView;

    fn keys<T: Serialize>(v: &T) -> Vec<String> {
        let mut k: Vec<String> = serde_json::to_value(v)
            .ok()
            .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
            .unwrap_or_default();
        k.sort();
        k
    }

    /// `ClusterNode` documents `NodeView`, which the cluster layer writes: the same fields
    /// (a field added to `NodeView` breaks this literal, and so this test, until documented).
    #[test]
    fn cluster_node_documents_node_view() {
        let view = NodeView {
            node: "n".into(),
            address: "https://a".into(),
            owned: vec![1],
            last_heartbeat_ms: 1,
            alive: true,
            this_node: true,
            forwarded_out: 0,
            forwarded_in: 0,
        };
        let doc = ClusterNode {
            node: view.node.clone(),
            address: view.address.clone(),
            owned: view.owned.clone(),
            last_heartbeat_ms: view.last_heartbeat_ms,
            alive: view.alive,
            this_node: view.this_node,
            forwarded_out: view.forwarded_out,
            forwarded_in: view.forwarded_in,
        };
        assert!(!keys(&view).is_empty());
        assert_eq!(keys(&view), keys(&doc));
        assert_eq!(
            serde_json::to_value(&view).ok(),
            serde_json::to_value(&doc).ok()
        );
    }
}
