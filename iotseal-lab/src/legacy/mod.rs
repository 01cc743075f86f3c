//! The ORIGINAL design, rebuilt inside the lab only (never a mode of the gateway), so the
//! same attacks can be run against it.
//!
//! Per message, the client fetches the server's current public key (`GET /v0/key`, an
//! unauthenticated P-256 point), makes an ephemeral P-256 key, and derives
//! `enc_key || mac_key = HKDF-SHA256(ikm = ECDH(ephemeral, server), info = "legacy telemetry v0")`.
//! The readings (JSON) are encrypted with AES-256-CFB under a random IV, and
//! `mac = HMAC-SHA256(mac_key, plaintext || be64(timestamp))` covers the data and the
//! timestamp. The server accepts a timestamp within 300 seconds of its clock, keeps no
//! replay memory, stores every accepted message, and rotates its one global key every 5
//! accepted messages (the previous key stays valid, so a client that fetched the key just
//! before a rotation still gets through). Devices are known by id (an allow-list with
//! revocation); the id itself is not authenticated: nothing in the design binds it to a key.
//! The server is a plain `axum::serve` with its defaults.

pub(crate) mod attacks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cfb_mode::cipher::KeyIvInit;
use hmac::{KeyInit, Mac};
use p256::elliptic_curve::sec1::ToSec1Point;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::LabError;
use crate::net::HttpClient;

/// The replay window of the original design, seconds.
pub const WINDOW_SECS: u64 = 300;
/// Accepted messages between key rotations.
pub const ROTATE_EVERY: u32 = 5;
const INFO: &[u8] = b"legacy telemetry v0";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// One reading in the legacy plaintext.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyReading {
    /// Message id.
    pub msg_id: u64,
    /// Device time, ms.
    pub time_ms: u64,
    /// (sensor, value).
    pub values: Vec<(String, f32)>,
}

impl LegacyReading {
    /// Canonical bytes (what the lab compares storage with).
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A message on the wire (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyMessage {
    /// Claimed device id (not authenticated).
    pub device_id: String,
    /// Which server key the ephemeral key agreed with.
    pub key_id: u32,
    /// The client's ephemeral public key, SEC1 uncompressed, hex.
    pub ephemeral: String,
    /// AES-CFB IV, hex (16 bytes).
    pub iv: String,
    /// AES-256-CFB ciphertext of the readings JSON, hex.
    pub ciphertext: String,
    /// Unix seconds.
    pub timestamp: u64,
    /// HMAC-SHA256(mac_key, plaintext || be64(timestamp)), hex.
    pub mac: String,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = iotseal_crypto_awslc::default_provider().random.fill(&mut b);
    b
}

/// A fresh P-256 private key.
pub(crate) fn new_key() -> p256::SecretKey {
    loop {
        let b = random_bytes::<32>();
        if let Ok(k) = p256::SecretKey::from_bytes((&b).into()) {
            return k;
        }
    }
}

pub(crate) fn public_hex(k: &p256::SecretKey) -> String {
    hex::encode(k.public_key().to_sec1_point(false).as_bytes())
}

pub(crate) fn parse_public(hex_str: &str) -> Option<p256::PublicKey> {
    let b = hex::decode(hex_str).ok()?;
    if b.len() != 65 || b[0] != 0x04 {
        return None;
    }
    p256::PublicKey::from_sec1_bytes(&b).ok()
}

/// `(enc_key, mac_key)` from an ECDH.
pub(crate) fn derive(secret: &p256::SecretKey, peer: &p256::PublicKey) -> ([u8; 32], [u8; 32]) {
    let shared = secret.diffie_hellman(peer);
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, shared.raw_secret_bytes());
    let mut okm = [0u8; 64];
    let _ = hk.expand(INFO, &mut okm);
    let mut e = [0u8; 32];
    let mut m = [0u8; 32];
    e.copy_from_slice(&okm[..32]);
    m.copy_from_slice(&okm[32..]);
    (e, m)
}

fn mac(mac_key: &[u8; 32], plain: &[u8], ts: u64) -> [u8; 32] {
    let mut h = <HmacSha256 as KeyInit>::new_from_slice(mac_key).expect("any key length");
    h.update(plain);
    h.update(&ts.to_be_bytes());
    h.finalize().into_bytes().into()
}

fn cfb_encrypt(key: &[u8; 32], iv: &[u8; 16], buf: &mut [u8]) {
    cfb_mode::Encryptor::<aes::Aes256>::new(key.into(), iv.into()).encrypt(buf);
}

fn cfb_decrypt(key: &[u8; 32], iv: &[u8; 16], buf: &mut [u8]) {
    cfb_mode::Decryptor::<aes::Aes256>::new(key.into(), iv.into()).decrypt(buf);
}

/// Seals `plain` for the server key `(key_id, server)`, with a fresh ephemeral key.
pub(crate) fn seal(
    device_id: &str,
    key_id: u32,
    server: &p256::PublicKey,
    plain: &[u8],
    timestamp: u64,
) -> LegacyMessage {
    let eph = new_key();
    let (ek, mk) = derive(&eph, server);
    let iv = random_bytes::<16>();
    let mut ct = plain.to_vec();
    cfb_encrypt(&ek, &iv, &mut ct);
    LegacyMessage {
        device_id: device_id.to_string(),
        key_id,
        ephemeral: public_hex(&eph),
        iv: hex::encode(iv),
        ciphertext: hex::encode(ct),
        timestamp,
        mac: hex::encode(mac(&mk, plain, timestamp)),
    }
}

/// Opens a message with the private key it was sealed for: the plaintext if the MAC holds.
pub(crate) fn open(m: &LegacyMessage, key: &p256::SecretKey) -> Result<Vec<u8>, &'static str> {
    let eph = parse_public(&m.ephemeral).ok_or("malformed")?;
    let iv: [u8; 16] = hex::decode(&m.iv)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or("malformed")?;
    let mut buf = hex::decode(&m.ciphertext).map_err(|_| "malformed")?;
    let tag = hex::decode(&m.mac).map_err(|_| "malformed")?;
    let (ek, mk) = derive(key, &eph);
    cfb_decrypt(&ek, &iv, &mut buf);
    let mut h = <HmacSha256 as KeyInit>::new_from_slice(&mk).expect("any key length");
    h.update(&buf);
    h.update(&m.timestamp.to_be_bytes());
    h.verify_slice(&tag).map_err(|_| "mac")?;
    Ok(buf)
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A stored legacy reading.
#[derive(Clone, Debug, Serialize)]
pub struct LegacyStored {
    /// The claimed device id.
    pub device_id: String,
    /// The reading.
    pub reading: LegacyReading,
}

struct Inner {
    key_id: u32,
    key: p256::SecretKey,
    prev: Option<(u32, p256::SecretKey)>,
    since_rotation: u32,
    devices: BTreeMap<String, bool>,
    readings: Vec<LegacyStored>,
    refusals: BTreeMap<String, u64>,
    accepted: u64,
    ecdh: u64,
}

struct LState(Mutex<Inner>);

impl LState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The legacy server, running on loopback.
pub struct LegacyServer {
    addr: SocketAddr,
    state: Arc<LState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LegacyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for LegacyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Counters of the legacy server.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LegacyStats {
    /// Refusals by reason.
    pub refusals: BTreeMap<String, u64>,
    /// Accepted messages.
    pub accepted: u64,
    /// ECDH operations done for incoming messages.
    pub ecdh: u64,
    /// Stored readings.
    pub stored: usize,
    /// Current key id.
    pub key_id: u32,
}

impl LegacyServer {
    /// Starts the server on 127.0.0.1 (any free port).
    pub async fn start() -> Result<Self, LabError> {
        let state = Arc::new(LState(Mutex::new(Inner {
            key_id: 1,
            key: new_key(),
            prev: None,
            since_rotation: 0,
            devices: BTreeMap::new(),
            readings: Vec::new(),
            refusals: BTreeMap::new(),
            accepted: 0,
            ecdh: 0,
        })));
        let app = Router::new()
            .route("/v0/key", get(key))
            .route("/v0/data", post(data))
            .route("/v0/admin/devices/{id}", post(add_device))
            .route("/v0/admin/devices/{id}/revoke", post(revoke))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| LabError(format!("legacy bind: {e}")))?;
        let addr = listener.local_addr().map_err(|e| LabError(e.to_string()))?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers a device id.
    pub fn add_device(&self, id: &str) {
        self.state.lock().devices.insert(id.to_string(), false);
    }

    /// Revokes a device id.
    pub fn revoke(&self, id: &str) {
        self.state.lock().devices.insert(id.to_string(), true);
    }

    /// Counters.
    pub fn stats(&self) -> LegacyStats {
        let g = self.state.lock();
        LegacyStats {
            refusals: g.refusals.clone(),
            accepted: g.accepted,
            ecdh: g.ecdh,
            stored: g.readings.len(),
            key_id: g.key_id,
        }
    }

    /// Everything stored.
    pub fn stored(&self) -> Vec<LegacyStored> {
        self.state.lock().readings.clone()
    }
}

async fn key(State(st): State<Arc<LState>>) -> Response {
    let g = st.lock();
    axum::Json(json!({"key_id": g.key_id, "public_key": public_hex(&g.key)})).into_response()
}

async fn add_device(State(st): State<Arc<LState>>, Path(id): Path<String>) -> StatusCode {
    st.lock().devices.insert(id, false);
    StatusCode::CREATED
}

async fn revoke(State(st): State<Arc<LState>>, Path(id): Path<String>) -> StatusCode {
    st.lock().devices.insert(id, true);
    StatusCode::OK
}

fn refuse(g: &mut Inner, status: StatusCode, reason: &str) -> Response {
    *g.refusals.entry(reason.to_string()).or_default() += 1;
    (status, axum::Json(json!({"error": reason}))).into_response()
}

async fn data(State(st): State<Arc<LState>>, body: Bytes) -> Response {
    let mut g = st.lock();
    let Ok(m) = serde_json::from_slice::<LegacyMessage>(&body) else {
        return refuse(&mut g, StatusCode::BAD_REQUEST, "malformed");
    };
    match g.devices.get(&m.device_id) {
        None => return refuse(&mut g, StatusCode::FORBIDDEN, "unknown_device"),
        Some(true) => return refuse(&mut g, StatusCode::FORBIDDEN, "revoked"),
        Some(false) => {}
    }
    let key = if m.key_id == g.key_id {
        g.key.clone()
    } else if let Some((_, k)) = g.prev.as_ref().filter(|(id, _)| *id == m.key_id) {
        k.clone()
    } else {
        return refuse(&mut g, StatusCode::FORBIDDEN, "unknown_key");
    };
    if parse_public(&m.ephemeral).is_some() {
        g.ecdh += 1;
    }
    let plain = match open(&m, &key) {
        Ok(p) => p,
        Err(r) => {
            let s = if r == "mac" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            return refuse(&mut g, s, r);
        }
    };
    let now = unix_now();
    if m.timestamp + WINDOW_SECS < now {
        return refuse(&mut g, StatusCode::BAD_REQUEST, "stale");
    }
    if m.timestamp > now + WINDOW_SECS {
        return refuse(&mut g, StatusCode::BAD_REQUEST, "future");
    }
    let Ok(readings) = serde_json::from_slice::<Vec<LegacyReading>>(&plain) else {
        return refuse(&mut g, StatusCode::BAD_REQUEST, "malformed");
    };
    let n = readings.len();
    for r in readings {
        g.readings.push(LegacyStored {
            device_id: m.device_id.clone(),
            reading: r,
        });
    }
    g.accepted += 1;
    g.since_rotation += 1;
    if g.since_rotation >= ROTATE_EVERY {
        let old = std::mem::replace(&mut g.key, new_key());
        let old_id = g.key_id;
        g.prev = Some((old_id, old));
        g.key_id += 1;
        g.since_rotation = 0;
    }
    axum::Json(json!({"stored": n})).into_response()
}

/// A legacy device: fetches the key, seals, posts, per message.
#[derive(Clone, Debug)]
pub struct LegacyClient {
    http: HttpClient,
    base: String,
    /// The device id it claims.
    pub device_id: String,
    /// Seconds added to its clock.
    pub clock_offset: i64,
}

impl LegacyClient {
    /// A client of the server at `base` (directly, or through the proxy).
    pub fn new(base: &str, device_id: &str) -> Result<Self, LabError> {
        Ok(Self {
            http: HttpClient::new(crate::net::NO_TLS_PIN)?,
            base: base.trim_end_matches('/').to_string(),
            device_id: device_id.to_string(),
            clock_offset: 0,
        })
    }

    /// `GET /v0/key`.
    pub async fn fetch_key(&self) -> Result<(u32, p256::PublicKey), LabError> {
        let a = self
            .http
            .send(
                hyper::Method::GET,
                &format!("{}/v0/key", self.base),
                &[],
                Vec::new(),
            )
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&a.body)
            .map_err(|e| LabError(format!("legacy key answer: {e}")))?;
        let id = v
            .get("key_id")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| LabError("legacy key answer: key_id".into()))?;
        let pk = v
            .get("public_key")
            .and_then(serde_json::Value::as_str)
            .and_then(parse_public)
            .ok_or_else(|| LabError("legacy key answer: public_key".into()))?;
        Ok((id as u32, pk))
    }

    /// Seals readings for the current key (fetched now) without sending: the message bytes.
    pub async fn seal(&self, readings: &[LegacyReading]) -> Result<Vec<u8>, LabError> {
        let (id, pk) = self.fetch_key().await?;
        let plain = serde_json::to_vec(readings).map_err(|e| LabError(e.to_string()))?;
        let ts = (unix_now() as i64 + self.clock_offset).max(0) as u64;
        let m = seal(&self.device_id, id, &pk, &plain, ts);
        serde_json::to_vec(&m).map_err(|e| LabError(e.to_string()))
    }

    /// Posts a sealed message.
    pub async fn post(&self, message: Vec<u8>) -> Result<crate::Answer, LabError> {
        self.http
            .send(
                hyper::Method::POST,
                &format!("{}/v0/data", self.base),
                &[("content-type", "application/json".into())],
                message,
            )
            .await
    }

    /// Fetches the key, seals, posts.
    pub async fn send(&self, readings: &[LegacyReading]) -> Result<crate::Answer, LabError> {
        let m = self.seal(readings).await?;
        self.post(m).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_mac() {
        let server = new_key();
        let plain = br#"[{"msg_id":1,"time_ms":2,"values":[["temperature",21.5]]}]"#;
        let m = seal("d", 1, &server.public_key(), plain, 1000);
        assert_eq!(open(&m, &server).unwrap(), plain.to_vec());
        let mut bad = m.clone();
        bad.timestamp += 1;
        assert_eq!(open(&bad, &server), Err("mac"));
        assert_eq!(open(&m, &new_key()), Err("mac"));
    }
}
