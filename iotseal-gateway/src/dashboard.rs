//! The live dashboard: `GET /dashboard` serves a self-contained page (HTML, JS and CSS
//! embedded in the binary, no CDN, charts drawn as inline SVG by plain JS) that shows
//! devices online, readings per second, acknowledgement latency (the storage commit
//! histogram), refusals by reason, handshakes by suite and each device's latest readings
//! with sparklines. It updates from server-sent events.
//!
//! | Route | Auth | Answer |
//! |-------|------|--------|
//! | `GET /dashboard` | token | the page; `?token=T` sets the cookie and redirects to drop the token from the URL; without a valid token or cookie: 401 and a sign-in form |
//! | `POST /dashboard/login` | form field `token` | 303 to `/dashboard` with the cookie, or 401 |
//! | `POST /dashboard/logout` | | 303 to `/dashboard`, the cookie cleared |
//! | `GET /dashboard/data` | token | the JSON snapshot |
//! | `GET /dashboard/events` | token | `text/event-stream`: a `snapshot` event every second |
//! | `GET /dashboard/assets/{file}` | none | the page's JS and CSS (no data in them) |
//!
//! **Authentication.** The dashboard shows readings, so it needs the admin token, presented
//! as `Authorization: Bearer T` (scripts) or exchanged once, through the sign-in form or
//! `?token=T`, for a cookie `iotseal_dashboard` (`HttpOnly; SameSite=Strict; Secure;
//! Path=/dashboard`, 12 hours). The cookie holds an expiry, a random session id and an
//! HMAC-SHA256 of both and of the admin token's hash, under a key drawn at start; the gateway
//! also keeps the live session ids (at most [`MAX_COOKIE_SESSIONS`]; the one closest to expiry
//! is dropped for a new one). Signing out forgets the session at once; a restart or a new admin
//! token signs everyone out. The cookie grants the dashboard only, never the admin API, and it
//! is not the token. Failures count as `unauthorized` refusals.
//!
//! `?token=T` puts the admin token in a URL: it can stay in the browser's history and in the
//! logs of a proxy in front of the gateway (the answer is a redirect that drops it, and pages
//! send no Referer). Prefer the sign-in form (a POST) or a Bearer header; `?token=` is kept for
//! links from scripts on the operator's own machine.
//!
//! **Content Security Policy.** Dashboard responses get [`CSP`]: scripts, styles and
//! connections from the gateway itself only, no inline script or style, no framing. Every
//! other route keeps the gateway's `default-src 'none'`. The page writes strings (device ids
//! are chosen by whoever registers a device) with `textContent` and SVG attributes only.
//!
//! **Data and bounds.** Numbers are the gateway's metrics, read as typed values
//! ([`Metrics::snapshot`](crate::metrics::Metrics::snapshot): the handles `GET /metrics`
//! renders, not its text), the session table and the registry; the latest readings come from a
//! ring the pipeline fills after each commit (its post-commit hook): at most
//! [`RING_DEVICES`] devices (least recently active dropped), [`RING_SENSORS`] sensors each,
//! [`RING_POINTS`] values per sensor. A snapshot is computed at most once a second whoever
//! asks; at most [`MAX_STREAMS`] event streams at once, each closed after [`STREAM_LIFETIME`]
//! (the browser reconnects) and when the gateway shuts down.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use iotseal_proto::CryptoProvider;
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::warn;

use crate::GatewayError;
use crate::admin::AdminState;
use crate::metrics::MetricsSnapshot;
use crate::pipeline::CommitHook;
use crate::storage::{NewReading, SensorName};

/// The Content-Security-Policy of every dashboard response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self'; connect-src 'self'; form-action 'self'; \
                       base-uri 'none'; frame-ancestors 'none'";

/// Devices whose latest readings are kept.
pub const RING_DEVICES: usize = 256;
/// Sensors kept per device.
pub const RING_SENSORS: usize = 8;
/// Values kept per sensor.
pub const RING_POINTS: usize = 60;
/// Devices shown with their readings (the most recently active).
pub const DEVICES_SHOWN: usize = 24;
/// Event streams served at once.
pub const MAX_STREAMS: usize = 16;
/// How long one event stream lasts before the server ends it (the browser reconnects).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// The cookie's lifetime.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Dashboard sign-ins kept at once (each a browser that signed in and has not signed out).
pub const MAX_COOKIE_SESSIONS: usize = 256;

const COOKIE: &str = "iotseal_dashboard";
const MAC_LABEL: &[u8] = b"iotseal dashboard cookie v2|";
/// Snapshots are shared by everyone asking within this interval.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(900);
/// Rate history kept (and shown), seconds.
const HISTORY_SECS: u64 = 120;
/// The latency histogram's window, seconds.
const LATENCY_WINDOW_SECS: u64 = 60;

const PAGE: &str = include_str!("../assets/dashboard/index.html");
const LOGIN: &str = include_str!("../assets/dashboard/login.html");
const JS: &str = include_str!("../assets/dashboard/dashboard.js");
const CSS: &str = include_str!("../assets/dashboard/dashboard.css");

// ---------------------------------------------------------------------------------------
// State

/// The dashboard's state, part of the gateway's shared state.
pub(crate) struct Dashboard {
    recent: Arc<Recent>,
    cookie_key: [u8; 32],
    /// Live sign-ins: session id → expiry (ms).
    cookie_sessions: Mutex<HashMap<[u8; 16], u64>>,
    shutdown: watch::Receiver<bool>,
    streams: Arc<Semaphore>,
    history: Mutex<History>,
}

impl Dashboard {
    /// A dashboard whose event streams end when `shutdown` turns true.
    pub(crate) fn new(
        provider: &CryptoProvider,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, GatewayError> {
        let key = provider
            .random_vec(32)
            .map_err(|e| GatewayError::Key(format!("dashboard cookie key: {e}")))?;
        let mut cookie_key = [0u8; 32];
        cookie_key.copy_from_slice(&key);
        Ok(Self {
            recent: Arc::new(Recent::default()),
            cookie_key,
            cookie_sessions: Mutex::new(HashMap::new()),
            shutdown,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            history: Mutex::new(History::default()),
        })
    }

    /// The pipeline's post-commit hook: each committed reading is noted in the ring.
    pub(crate) fn commit_hook(&self) -> Arc<dyn CommitHook> {
        self.recent.clone()
    }

    /// The JSON snapshot, computed at most once per [`SNAPSHOT_EVERY`].
    fn snapshot_json(&self, sh: &DashboardState) -> Arc<str> {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, json)) = &h.cached
            && at.elapsed() < SNAPSHOT_EVERY
        {
            return json.clone();
        }
        let snap = snapshot(sh, &mut h, &self.recent);
        let json: Arc<str> = serde_json::to_string(&snap)
            .unwrap_or_else(|_| "{}".into())
            .into();
        h.cached = Some((Instant::now(), json.clone()));
        json
    }
}

/// Recent readings per device, bounded in devices, sensors and values.
#[derive(Debug, Default)]
struct Recent {
    devices: Mutex<HashMap<Arc<str>, DeviceRing>>,
}

#[derive(Debug, Default)]
struct DeviceRing {
    /// Gateway receive time of the latest reading, ms.
    last_ms: u64,
    /// Message ids of the kept readings (a retransmission is stored once, shown once).
    msg_ids: VecDeque<u64>,
    series: Vec<(SensorName, VecDeque<f32>)>,
}

/// A device's latest readings: (id, last receive time in ms, values per sensor).
type Latest = (String, u64, Vec<(String, Vec<f32>)>);

/// What the ring keeps of a reading.
struct Note {
    device_id: Arc<str>,
    msg_id: u64,
    received_ms: u64,
    values: Vec<(SensorName, f32)>,
}

impl Recent {
    fn record(&self, notes: Vec<Note>) {
        let mut m = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        for n in notes {
            if !m.contains_key(&*n.device_id) && m.len() >= RING_DEVICES {
                // Make room: drop the least recently active device.
                if let Some(old) = m
                    .iter()
                    .min_by_key(|(_, d)| d.last_ms)
                    .map(|(k, _)| k.clone())
                {
                    m.remove(&old);
                }
            }
            let d = m.entry(n.device_id).or_default();
            if d.msg_ids.contains(&n.msg_id) {
                continue;
            }
            d.last_ms = d.last_ms.max(n.received_ms);
            if d.msg_ids.len() >= RING_POINTS {
                d.msg_ids.pop_front();
            }
            d.msg_ids.push_back(n.msg_id);
            for (name, v) in n.values {
                if !v.is_finite() {
                    continue;
                }
                let i = match d.series.iter().position(|(s, _)| *s == name) {
                    Some(i) => i,
                    None if d.series.len() < RING_SENSORS => {
                        d.series.push((name, VecDeque::with_capacity(RING_POINTS)));
                        d.series.len() - 1
                    }
                    None => continue,
                };
                let s = &mut d.series[i].1;
                if s.len() >= RING_POINTS {
                    s.pop_front();
                }
                s.push_back(v);
            }
        }
    }

    /// The `n` most recently active devices.
    fn latest(&self, n: usize) -> Vec<Latest> {
        let m = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by(|a, b| b.1.last_ms.cmp(&a.1.last_ms).then_with(|| a.0.cmp(b.0)));
        v.into_iter()
            .take(n)
            .map(|(id, d)| {
                let series = d
                    .series
                    .iter()
                    .map(|(s, p)| (s.to_string(), p.iter().copied().collect()))
                    .collect();
                (id.to_string(), d.last_ms, series)
            })
            .collect()
    }
}

impl CommitHook for Recent {
    fn committed(&self, readings: &[NewReading]) {
        // Only the last RING_POINTS readings of each device can stay in its ring.
        let mut per_device: Vec<(&str, usize)> = Vec::new();
        let mut notes: Vec<Note> = readings
            .iter()
            .rev()
            .filter(|r| {
                let i = match per_device.iter().position(|(d, _)| *d == &*r.device_id) {
                    Some(i) => i,
                    None => {
                        per_device.push((&*r.device_id, 0));
                        per_device.len() - 1
                    }
                };
                per_device[i].1 += 1;
                per_device[i].1 <= RING_POINTS
            })
            .map(|r| Note {
                device_id: r.device_id.clone(),
                msg_id: r.msg_id,
                received_ms: r.received_ms,
                // Decoded from the payload (the storage keeps nothing else): shown as the
                // f32s the device sent. A payload the storage accepted always decodes.
                values: r.decode_values().unwrap_or_default(),
            })
            .collect();
        notes.reverse();
        self.record(notes);
    }
}

/// The dashboard's routes' state: the admin API's (engine, token, cluster) and the
/// dashboard's own.
pub(crate) struct DashboardState {
    pub(crate) admin: Arc<AdminState>,
    pub(crate) dashboard: Dashboard,
}

impl std::ops::Deref for DashboardState {
    type Target = AdminState;
    fn deref(&self) -> &AdminState {
        &self.admin
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots

/// Counters read from the metrics at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
struct Sample {
    t_ms: u64,
    readings: u64,
    records: u64,
    refusals: u64,
    /// Cumulative commit histogram: (upper bound in seconds, count); the last is +Inf.
    commit: Vec<(f64, u64)>,
    commit_sum_s: f64,
}

#[derive(Default)]
struct History {
    samples: VecDeque<Sample>,
    cached: Option<(Instant, Arc<str>)>,
}

#[derive(Debug, Serialize)]
struct Snapshot {
    /// Gateway time, ms since the Unix epoch.
    t_ms: u64,
    devices: DeviceCounts,
    sessions: u64,
    half_open: u64,
    connections: u64,
    readings_total: u64,
    records_total: u64,
    /// Readings stored per second over the last interval (None on the first snapshot).
    readings_per_s: Option<f64>,
    refusals_per_s: Option<f64>,
    refusals_total: u64,
    /// (t_ms, readings/s, refusals/s) over the last two minutes.
    rate_history: Vec<(u64, f64, f64)>,
    latency: Latency,
    refusals: Vec<Count>,
    handshakes: Vec<SuiteCount>,
    tls: BTreeMap<String, u64>,
    device_list: Vec<DeviceView>,
    /// Cluster mode: every node this gateway knows (empty on a single gateway).
    nodes: Vec<crate::cluster::NodeView>,
}

#[derive(Debug, Serialize)]
struct DeviceCounts {
    registered: usize,
    revoked: usize,
    online: usize,
}

#[derive(Debug, Serialize)]
struct Count {
    reason: String,
    count: u64,
}

#[derive(Debug, Serialize)]
struct SuiteCount {
    suite: String,
    established: u64,
}

#[derive(Debug, Serialize)]
struct Latency {
    /// The window the histogram covers, seconds (0: since the gateway started).
    window_s: u64,
    count: u64,
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Commits per bucket (not cumulative); `le_ms` None is the overflow bucket.
    buckets: Vec<Bucket>,
    total_count: u64,
    total_mean_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Bucket {
    le_ms: Option<f64>,
    n: u64,
}

#[derive(Debug, Serialize)]
struct DeviceView {
    id: String,
    alg: String,
    sessions: usize,
    revoked: bool,
    readings: u64,
    last_ms: u64,
    sensors: Vec<SensorView>,
}

#[derive(Debug, Serialize)]
struct SensorView {
    name: String,
    last: f32,
    min: f32,
    max: f32,
    values: Vec<f32>,
}

fn sample(m: &MetricsSnapshot, t_ms: u64) -> Sample {
    Sample {
        t_ms,
        readings: m.readings_stored,
        records: m.records_accepted,
        refusals: m.refusals_total(),
        commit: m.storage_commit.buckets.clone(),
        commit_sum_s: m.storage_commit.sum_s,
    }
}

/// Per-bucket counts of `new` minus `old` (cumulative histograms with the same bounds).
fn histogram_delta(new: &Sample, old: Option<&Sample>) -> Vec<(f64, u64)> {
    let mut prev_cum = 0;
    new.commit
        .iter()
        .enumerate()
        .map(|(i, &(le, cum))| {
            let base = old
                .and_then(|o| o.commit.get(i))
                .filter(|o| o.0 == le)
                .map_or(0, |o| o.1);
            let c = cum.saturating_sub(base);
            let n = c.saturating_sub(prev_cum);
            prev_cum = c;
            (le, n)
        })
        .collect()
}

/// The `q` quantile of a histogram (per-bucket counts), interpolated linearly within its
/// bucket as Prometheus does; in the overflow bucket, its lower bound.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut cum = 0u64;
    let mut lower = 0.0;
    for &(le, n) in buckets {
        if n > 0 && (cum + n) as f64 >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let within = ((rank - cum as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lower + (le - lower) * within);
        }
        cum += n;
        if le.is_finite() {
            lower = le;
        }
    }
    Some(lower)
}

fn ms(s: f64) -> f64 {
    (s * 1e6).round() / 1e3
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn snapshot(sh: &DashboardState, h: &mut History, recent: &Recent) -> Snapshot {
    // (The half-open gauge is kept current by the handshake path and the sweeper.)
    sh.metrics.set_active_sessions(sh.sessions.len());
    let now = sh.now().as_millis();
    let m = sh.metrics.snapshot();
    let cur = sample(&m, now);

    // History: drop what is older than the rate chart and the latency window need.
    let keep_ms = HISTORY_SECS.max(LATENCY_WINDOW_SECS) * 1000 + 5000;
    while h
        .samples
        .front()
        .is_some_and(|s| now.saturating_sub(s.t_ms) > keep_ms || h.samples.len() > 512)
    {
        h.samples.pop_front();
    }
    let prev = h.samples.back().cloned();
    h.samples.push_back(cur.clone());

    let rate = |a: &Sample, b: &Sample| -> Option<(f64, f64)> {
        let dt = b.t_ms.saturating_sub(a.t_ms) as f64 / 1000.0;
        (dt > 0.05).then(|| {
            (
                round2(b.readings.saturating_sub(a.readings) as f64 / dt),
                round2(b.refusals.saturating_sub(a.refusals) as f64 / dt),
            )
        })
    };
    let now_rate = prev.as_ref().and_then(|p| rate(p, &cur));
    let rate_history: Vec<(u64, f64, f64)> = h
        .samples
        .iter()
        .zip(h.samples.iter().skip(1))
        .filter(|(_, b)| now.saturating_sub(b.t_ms) <= HISTORY_SECS * 1000)
        .filter_map(|(a, b)| rate(a, b).map(|(r, f)| (b.t_ms, r, f)))
        .collect();

    // Latency over the window: the oldest sample inside it is the base.
    let base = h
        .samples
        .iter()
        .find(|s| now.saturating_sub(s.t_ms) <= LATENCY_WINDOW_SECS * 1000 && s.t_ms < now);
    let window_s = base.map_or(0, |b| now.saturating_sub(b.t_ms).div_ceil(1000));
    let buckets = histogram_delta(&cur, base);
    let count: u64 = buckets.iter().map(|b| b.1).sum();
    let sum_s = cur.commit_sum_s - base.map_or(0.0, |b| b.commit_sum_s);
    let total_count = cur.commit.last().map_or(0, |b| b.1);
    let latency = Latency {
        window_s,
        count,
        mean_ms: (count > 0).then(|| ms(sum_s / count as f64)),
        p50_ms: quantile(&buckets, 0.5).map(ms),
        p90_ms: quantile(&buckets, 0.9).map(ms),
        p99_ms: quantile(&buckets, 0.99).map(ms),
        buckets: buckets
            .iter()
            .map(|&(le, n)| Bucket {
                le_ms: le.is_finite().then(|| ms(le)),
                n,
            })
            .collect(),
        total_count,
        total_mean_ms: (total_count > 0).then(|| ms(cur.commit_sum_s / total_count as f64)),
    };

    let refusals = m
        .refusals
        .iter()
        .map(|(reason, count)| Count {
            reason: reason.clone(),
            count: *count,
        })
        .collect();
    let mut handshakes: Vec<SuiteCount> = m
        .handshakes
        .iter()
        .filter(|(suite, outcome, _)| outcome == "established" && suite != "none")
        .map(|(suite, _, n)| SuiteCount {
            suite: suite.clone(),
            established: *n,
        })
        .collect();
    handshakes.sort_by_key(|h| std::cmp::Reverse(h.established));
    let tls = m.tls_handshakes.iter().cloned().collect();

    let all = sh.registry.all();
    let revoked = all.iter().filter(|d| d.is_revoked()).count();
    let online = all
        .iter()
        .filter(|d| sh.sessions.count_for(&d.id) > 0)
        .count();
    let mut device_list: Vec<DeviceView> = recent
        .latest(DEVICES_SHOWN)
        .into_iter()
        .map(|(id, last_ms, series)| {
            let d = sh.registry.get(id.as_bytes());
            DeviceView {
                alg: d.as_ref().map_or(String::new(), |d| d.alg.to_string()),
                sessions: sh.sessions.count_for(&id),
                revoked: d.as_ref().is_some_and(|d| d.is_revoked()),
                readings: d.as_ref().map_or(0, |d| d.readings_total()),
                last_ms,
                sensors: series
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(name, values)| SensorView {
                        last: values.last().copied().unwrap_or(0.0),
                        min: values.iter().copied().fold(f32::INFINITY, f32::min),
                        max: values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                        name,
                        values,
                    })
                    .collect(),
                id,
            }
        })
        .collect();
    device_list.sort_by(|a, b| a.id.cmp(&b.id));

    Snapshot {
        t_ms: now,
        devices: DeviceCounts {
            registered: all.len(),
            revoked,
            online,
        },
        sessions: m.active_sessions,
        half_open: m.half_open,
        connections: m.open_connections,
        readings_total: cur.readings,
        records_total: cur.records,
        readings_per_s: now_rate.map(|r| r.0),
        refusals_per_s: now_rate.map(|r| r.1),
        refusals_total: cur.refusals,
        rate_history,
        latency,
        refusals,
        handshakes,
        tls,
        device_list,
        nodes: sh.cluster.as_ref().map_or_else(Vec::new, |c| c.nodes()),
    }
}

// ---------------------------------------------------------------------------------------
// Routes

pub(crate) fn routes(state: Arc<DashboardState>) -> Router {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/data", get(data))
        .route("/dashboard/events", get(events))
        .route("/dashboard/assets/{file}", get(asset))
        .with_state(state)
}

/// A dashboard response: its content type and the dashboard's CSP.
fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = (status, body.into()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

const HTML: &str = "text/html; charset=utf-8";

fn token_ok(sh: &DashboardState, presented: &str) -> bool {
    let h = sh.provider.hash.hash(presented.trim().as_bytes());
    bool::from(h.ct_eq(&sh.token_sha256))
}

fn cookie_mac(sh: &DashboardState, expires_ms: &str, sid: &[u8; 16]) -> [u8; 32] {
    sh.provider.hmac.mac(
        &sh.dashboard.cookie_key,
        &[
            MAC_LABEL,
            &sh.token_sha256,
            expires_ms.as_bytes(),
            b"|",
            sid,
        ],
    )
}

/// A fresh sign-in: `EXPIRES_MS.SESSION_ID.HMAC`, remembered until it expires or signs out.
fn issue_cookie(sh: &DashboardState) -> Option<String> {
    let now = sh.now().as_millis();
    let exp_ms = now + COOKIE_LIFETIME.as_millis() as u64;
    let exp = exp_ms.to_string();
    let mut sid = [0u8; 16];
    sh.provider.random.fill(&mut sid).ok()?;
    let mac = cookie_mac(sh, &exp, &sid);
    let mut live = sh
        .dashboard
        .cookie_sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    live.retain(|_, e| *e > now);
    if live.len() >= MAX_COOKIE_SESSIONS
        && let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
    {
        live.remove(&oldest);
        warn!(
            max = MAX_COOKIE_SESSIONS,
            "dashboard: sign-in table full; the sign-in closest to expiry was dropped"
        );
    }
    live.insert(sid, exp_ms);
    Some(format!("{exp}.{}.{}", hex::encode(sid), hex::encode(mac)))
}

/// The session id of a cookie whose MAC verifies and which has not expired (whether it is
/// still signed in is the caller's question).
fn cookie_session(sh: &DashboardState, value: &str) -> Option<[u8; 16]> {
    let mut parts = value.split('.');
    let (exp, sid, mac) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let sid: [u8; 16] = hex::decode(sid).ok()?.try_into().ok()?;
    let mac = hex::decode(mac).ok()?;
    let exp_ms = exp.parse::<u64>().ok()?;
    let want = cookie_mac(sh, exp, &sid);
    (bool::from(want.as_slice().ct_eq(&mac)) && exp_ms > sh.now().as_millis()).then_some(sid)
}

fn cookie_valid(sh: &DashboardState, value: &str) -> bool {
    cookie_session(sh, value).is_some_and(|sid| {
        sh.dashboard
            .cookie_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&sid)
    })
}

/// The dashboard cookies a request carries.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Whether a request carries the admin token (Bearer) or a valid dashboard cookie.
fn authorized(sh: &DashboardState, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|s| s.strip_prefix("Bearer "))
        .any(|t| token_ok(sh, t));
    bearer || cookies(headers).any(|v| cookie_valid(sh, v))
}

fn set_cookie_header(sh: &DashboardState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if sh.settings.plain_http {
        ""
    } else {
        "; Secure"
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/dashboard; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// 303 to the page, with the cookie set (or cleared).
fn to_page(sh: &DashboardState, cookie: Option<String>) -> Response {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
    let v = match cookie {
        Some(v) => set_cookie_header(sh, &v, COOKIE_LIFETIME.as_secs()),
        None => set_cookie_header(sh, "", 0),
    };
    h.insert(header::SET_COOKIE, v);
    r
}

fn unauthorized(sh: &DashboardState, html: bool) -> Response {
    sh.metrics.refusal("unauthorized");
    let mut r = if html {
        respond(StatusCode::UNAUTHORIZED, HTML, LOGIN)
    } else {
        respond(
            StatusCode::UNAUTHORIZED,
            "application/json",
            r#"{"error":"unauthorized"}"#,
        )
    };
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn page(
    State(sh): State<Arc<DashboardState>>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Ok(Query(q)) = q
        && let Some(t) = q.get("token")
    {
        // Exchange the token for the cookie, and drop it from the address bar.
        if token_ok(&sh, t)
            && let Some(c) = issue_cookie(&sh)
        {
            return to_page(&sh, Some(c));
        }
        return unauthorized(&sh, true);
    }
    if !authorized(&sh, &headers) {
        return unauthorized(&sh, true);
    }
    respond(StatusCode::OK, HTML, PAGE)
}

/// The `token` field of an `application/x-www-form-urlencoded` body.
fn form_token(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let v = s
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))?
        .replace('+', " ");
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn login(State(sh): State<Arc<DashboardState>>, req: Request) -> Response {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return unauthorized(&sh, true),
    };
    match form_token(&body) {
        Some(t) if token_ok(&sh, &t) => match issue_cookie(&sh) {
            Some(c) => to_page(&sh, Some(c)),
            None => unauthorized(&sh, true),
        },
        _ => unauthorized(&sh, true),
    }
}

/// Signs out: the presented sign-in is forgotten by the gateway (the cookie no longer works,
/// even if the browser kept a copy) and the browser is told to drop it.
async fn logout(State(sh): State<Arc<DashboardState>>, headers: HeaderMap) -> Response {
    let sids: Vec<[u8; 16]> = cookies(&headers)
        .filter_map(|v| cookie_session(&sh, v))
        .collect();
    if !sids.is_empty() {
        let mut live = sh
            .dashboard
            .cookie_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for sid in &sids {
            live.remove(sid);
        }
    }
    to_page(&sh, None)
}

async fn data(State(sh): State<Arc<DashboardState>>, headers: HeaderMap) -> Response {
    if !authorized(&sh, &headers) {
        return unauthorized(&sh, false);
    }
    let json = sh.dashboard.snapshot_json(&sh);
    respond(StatusCode::OK, "application/json", json.to_string())
}

async fn events(State(sh): State<Arc<DashboardState>>, headers: HeaderMap) -> Response {
    if !authorized(&sh, &headers) {
        return unauthorized(&sh, false);
    }
    let Ok(permit) = sh.dashboard.streams.clone().try_acquire_owned() else {
        sh.metrics.refusal("busy");
        let mut r = respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "too many dashboard streams\n",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        return r;
    };
    // A slow reader misses snapshots instead of queueing them: two at most are buffered.
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let mut shutdown = sh.dashboard.shutdown.clone();
    tokio::spawn(async move {
        let _permit = permit;
        if tx.try_send(Bytes::from_static(b"retry: 3000\n\n")).is_err() {
            return;
        }
        let deadline = tokio::time::sleep(STREAM_LIFETIME);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let json = sh.dashboard.snapshot_json(&sh);
                    let ev = Bytes::from(format!("event: snapshot\ndata: {json}\n\n"));
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(ev) {
                        break;
                    }
                }
                _ = shutdown.wait_for(|s| *s) => break,
                _ = &mut deadline => break,
            }
        }
    });
    let mut r = respond(
        StatusCode::OK,
        "text/event-stream",
        Body::new(EventBody(rx)),
    );
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// The event stream's body: what the stream task sends, until it stops.
struct EventBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "dashboard.js" => respond(StatusCode::OK, "text/javascript; charset=utf-8", JS),
        "dashboard.css" => respond(StatusCode::OK, "text/css; charset=utf-8", CSS),
        _ => respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    /// A sample holds the metrics' values after known increments (typed reads, no text).
    #[test]
    fn samples_equal_the_counters() {
        let m = Metrics::default();
        m.handshake("x25519/ed25519/aes256gcm", "established");
        m.handshake("none", "tamper");
        m.refusal("replay");
        m.refusals_n("malformed", 3);
        m.records_accepted(5);
        m.readings(7, 1);
        m.storage_commit(Duration::from_micros(700));
        m.storage_commit(Duration::from_millis(3));
        let s = sample(&m.snapshot(), 1000);
        assert_eq!(s.t_ms, 1000);
        assert_eq!(s.readings, 7);
        assert_eq!(s.records, 5);
        assert_eq!(s.refusals, 4);
        assert_eq!(s.commit.len(), 14);
        assert_eq!(s.commit.last(), Some(&(f64::INFINITY, 2)));
        assert!((s.commit_sum_s - 0.0037).abs() < 1e-12);
        let d = histogram_delta(&s, None);
        assert_eq!(d.iter().map(|b| b.1).sum::<u64>(), 2);
        assert_eq!(d[1], (0.001, 1));
        assert_eq!(d[3], (0.005, 1));
        // Against an older sample: only what came after it.
        m.storage_commit(Duration::from_millis(3));
        let later = sample(&m.snapshot(), 2000);
        let d = histogram_delta(&later, Some(&s));
        assert_eq!(d.iter().map(|b| b.1).sum::<u64>(), 1);
        assert_eq!(d[3], (0.005, 1));
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [(0.001, 0), (0.002, 10), (0.004, 10), (f64::INFINITY, 0)];
        assert_eq!(quantile(&b, 0.5), Some(0.002));
        assert_eq!(quantile(&b, 0.25), Some(0.0015));
        assert_eq!(quantile(&b, 1.0), Some(0.004));
        assert_eq!(quantile(&[(0.001, 0)], 0.5), None);
        let over = [(0.001, 1), (f64::INFINITY, 9)];
        assert_eq!(quantile(&over, 0.99), Some(0.001));
    }

    fn note(dev: &str, msg: u64, t: u64, v: f32) -> Note {
        Note {
            device_id: dev.into(),
            msg_id: msg,
            received_ms: t,
            values: vec![("temperature".into(), v), ("humidity".into(), v * 2.0)],
        }
    }

    #[test]
    fn ring_is_bounded_and_shows_each_reading_once() {
        let r = Recent::default();
        r.record((0..200).map(|i| note("a", i, i, i as f32)).collect());
        r.record(vec![note("a", 199, 500, -1.0)]); // a retransmission
        let l = r.latest(10);
        assert_eq!(l.len(), 1);
        let (_, last, series) = &l[0];
        assert_eq!(*last, 199);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].1.len(), RING_POINTS);
        assert_eq!(*series[0].1.last().unwrap(), 199.0);
        // Many devices: the least recently active go.
        r.record(
            (0..RING_DEVICES as u64 + 50)
                .map(|i| note(&format!("d{i}"), 1, 1000 + i, 1.0))
                .collect(),
        );
        assert_eq!(r.devices.lock().unwrap().len(), RING_DEVICES);
        let l = r.latest(3);
        assert_eq!(l[0].0, format!("d{}", RING_DEVICES + 49));
        // Too many sensors: the first RING_SENSORS are kept.
        r.record(vec![Note {
            device_id: "many".into(),
            msg_id: 1,
            received_ms: 99_999,
            values: (0..20).map(|i| (format!("s{i}").into(), 1.0)).collect(),
        }]);
        assert_eq!(r.latest(1)[0].2.len(), RING_SENSORS);
    }

    #[test]
    fn form_token_decodes() {
        assert_eq!(form_token(b"token=ab%2Bc+d").as_deref(), Some("ab+c d"));
        assert_eq!(form_token(b"x=1&token=abc").as_deref(), Some("abc"));
        assert_eq!(form_token(b"x=1"), None);
        assert_eq!(form_token(b"token=%zz"), None);
        assert_eq!(form_token(b"token=%4"), Some("%4".into()));
    }
}
