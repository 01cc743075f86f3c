//! The gateway's engine: what a handshake message or a batch of records does, whatever
//! carried it. HTTP, MQTT and requests another cluster node forwarded all enter through
//! [`Pipeline::handle`] (or, for a request already routed here, [`Pipeline::handle_local`])
//! and get the same [`Answer`]; the bindings only turn bytes on their transport into a
//! [`Request`] and an [`Answer`] back into bytes on it.
//!
//! ```text
//!  binding ─▶ Pipeline::handle ─▶ Route (cluster: forward to the owner)  ─▶ Answer
//!                              └▶ handle_local ─▶ handshake: check ─▶ compute ─▶ commit
//!                                              └▶ records: open ─▶ store ─▶ accept ─▶ seal ack
//!                                                                    └▶ CommitHook (dashboard)
//! ```
//!
//! Locks: each binding's `HandshakeServer` sits behind a `std::sync::Mutex` held only for
//! the check and commit steps of a hello or finish (never across public-key work or an
//! await); a session's state behind its own `tokio::sync::Mutex`, taken in session-id order;
//! the session table and registry have their own short locks.

mod handshake;
mod readings;
mod records;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use iotseal_proto::handshake::messages::encode_alert;
use iotseal_proto::handshake::{HandshakeServer, SessionIdPolicy, SourceKey};
use iotseal_proto::{CryptoProvider, Refusal, Time};
use tokio::sync::mpsc;
use tracing::{debug, warn};

pub use readings::sensor_name;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::sessions::{EndReason, SessionEntry, SessionTable};
use crate::settings::Settings;
use crate::storage::{BoxFuture, DeviceRecord, NewReading, SessionEvent, Storage};

/// The transport binding a message arrived over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// HTTP/1.1 (over TLS 1.3 or behind a proxy).
    Http,
    /// MQTT through a broker (store and forward: its own record freshness setting).
    Mqtt,
}

impl Binding {
    /// The binding's name on the cluster's wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Mqtt => "mqtt",
        }
    }
}

/// What a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A handshake message: M1 (hello), or M3 (finish) with a batch of records.
    Handshake,
    /// A batch of records of established sessions.
    Records,
}

/// One request, as every binding hands it to the pipeline.
#[derive(Clone, Debug)]
pub struct Request {
    /// The binding it arrived over.
    pub binding: Binding,
    /// Handshake or records.
    pub kind: Kind,
    /// The transport's peer address, if it has one (the per-address handshake rate limit).
    pub peer: Option<SocketAddr>,
    /// The hello's source key, if the transport names one (Address retries, the per-source
    /// share of the half-open table: docs/protocol.md §4.2, §7.3).
    pub source: Option<SourceKey>,
    /// The message bytes.
    pub body: Bytes,
}

/// The answer to a request, whatever carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Bytes to send back: Retry, M2, or a batch of acknowledgement records.
    Bytes(Bytes),
    /// A refusal, sent as an alert.
    Refused(Refusal),
    /// The source address is over its handshake rate (HTTP: 429 with a Busy alert).
    RateLimited,
}

impl Answer {
    /// The answer's bytes on a transport without statuses (MQTT, the cluster's wire): the
    /// bytes, or the 2-byte alert.
    pub fn to_payload(&self) -> Bytes {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Refused(r) => Bytes::copy_from_slice(&encode_alert(*r)),
            Self::RateLimited => Bytes::copy_from_slice(&encode_alert(Refusal::Busy)),
        }
    }
}

/// Which session ids new sessions may get (a cluster node: ids in the partitions it owns).
pub trait SessionIds: Send + Sync {
    /// The policy now, or why this node cannot start a session now.
    fn policy(&self) -> Result<SessionIdPolicy, iotseal_proto::Error>;
}

/// Sends a request that another node must serve to that node (the cluster layer).
pub trait Route: Send + Sync {
    /// `None`: serve it here; else the other node's answer (or the refusal when it could
    /// not be reached).
    fn route<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Option<Answer>>;
}

/// Told of every batch of readings once it is durably stored (the live dashboard).
pub trait CommitHook: Send + Sync {
    /// `readings` were committed (duplicates included: the storage dropped those).
    fn committed(&self, readings: &[NewReading]);
}

/// What the audit writer (a background task) is sent.
#[derive(Debug)]
pub enum AuditMsg {
    /// An event to store.
    Event(SessionEvent),
    /// Answer once everything sent before is stored.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// What the pipeline is built from.
pub struct Parts {
    /// The settings.
    pub settings: Settings,
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// The HTTP binding's handshake server.
    pub hs: HandshakeServer,
    /// The MQTT binding's handshake server (its own record freshness), if MQTT is on.
    pub mqtt_hs: Option<HandshakeServer>,
    /// The devices.
    pub registry: Registry,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The crypto provider.
    pub provider: CryptoProvider,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where session audit events go (a background writer).
    pub audit: mpsc::Sender<AuditMsg>,
    /// Session id policy of a cluster node.
    pub session_ids: Option<Arc<dyn SessionIds>>,
}

/// The engine's state: handshake servers, sessions, devices, storage, limits.
pub struct Pipeline {
    pub(crate) settings: Settings,
    pub(crate) storage: Arc<dyn Storage>,
    hs: Mutex<HandshakeServer>,
    mqtt_hs: Option<Mutex<HandshakeServer>>,
    pub(crate) sessions: SessionTable,
    pub(crate) registry: Registry,
    pub(crate) metrics: Arc<Metrics>,
    limiter: RateLimiter,
    pub(crate) provider: CryptoProvider,
    /// Bounds the handshakes doing public-key work at once (on blocking threads).
    hs_permits: tokio::sync::Semaphore,
    /// Half-open handshakes per binding (the gauge shows the sum).
    half_open: [AtomicUsize; 2],
    session_ids: Option<Arc<dyn SessionIds>>,
    route: OnceLock<Arc<dyn Route>>,
    pub(super) commit_hook: OnceLock<Arc<dyn CommitHook>>,
    audit: mpsc::Sender<AuditMsg>,
    clock: Arc<dyn Clock>,
    last_ms: AtomicU64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline from its parts.
    pub fn new(p: Parts) -> Self {
        let l = &p.settings.limits;
        Self {
            sessions: SessionTable::new(l.max_sessions, l.max_sessions_per_device),
            limiter: RateLimiter::new(
                l.handshake_rate_per_ip,
                l.handshake_burst_per_ip,
                l.rate_limit_table,
            ),
            hs: Mutex::new(p.hs),
            mqtt_hs: p.mqtt_hs.map(Mutex::new),
            registry: p.registry,
            metrics: p.metrics,
            provider: p.provider,
            hs_permits: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            ),
            storage: p.storage,
            half_open: [AtomicUsize::new(0), AtomicUsize::new(0)],
            session_ids: p.session_ids,
            route: OnceLock::new(),
            commit_hook: OnceLock::new(),
            audit: p.audit,
            clock: p.clock,
            last_ms: AtomicU64::new(0),
            settings: p.settings,
        }
    }

    /// Installs the cluster's routing (once).
    pub fn set_route(&self, r: Arc<dyn Route>) {
        let _ = self.route.set(r);
    }

    /// Installs the post-commit hook (once).
    pub fn set_commit_hook(&self, h: Arc<dyn CommitHook>) {
        let _ = self.commit_hook.set(h);
    }

    /// Handles a request: sent to the node that must serve it (cluster mode), else served
    /// here.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Answer {
        if let Some(r) = self.route.get()
            && let Some(a) = r.route(&req).await
        {
            return a;
        }
        self.handle_local(req).await
    }

    /// Serves a request here (it was routed here, or arrived here and belongs here).
    pub async fn handle_local(self: &Arc<Self>, req: Request) -> Answer {
        match req.kind {
            Kind::Handshake => {
                handshake::handle(self, req.binding, req.peer, req.source, req.body).await
            }
            Kind::Records => records::handle(self, &req.body).await,
        }
    }

    /// The gateway's time: the injected clock, never going backwards (the core needs
    /// non-decreasing times).
    pub fn now(&self) -> Time {
        let t = self.clock.now_ms();
        let prev = self.last_ms.fetch_max(t, Ordering::Relaxed);
        Time(prev.max(t))
    }

    /// Queues an audit event (written by a background task; never blocks a request).
    pub(crate) fn audit(&self, session: &SessionEntry, event: &str, now: Time) {
        let ev = SessionEvent {
            at_ms: now.as_millis(),
            device_id: Some(session.device.id.to_string()),
            session_id: session.id,
            event: event.to_string(),
            suite: session.suite.to_string(),
        };
        if self.audit.try_send(AuditMsg::Event(ev)).is_err() {
            self.metrics.audit_dropped();
            warn!(
                session = session.id,
                event, "audit queue full; event dropped"
            );
        }
    }

    /// Completes once every audit event queued before the call is stored (tests and
    /// operators await this instead of waiting for the background writer).
    pub async fn audit_settled(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.audit.send(AuditMsg::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Audits sessions that left the table and updates the gauge.
    pub(crate) fn ended(&self, ended: &[Arc<SessionEntry>], reason: EndReason, now: Time) {
        for e in ended {
            debug!(session = e.id, device = %e.device.id, reason = reason.as_str(), "session ended");
            self.audit(e, reason.as_str(), now);
        }
        self.metrics.set_active_sessions(self.sessions.len());
    }

    /// Ends every session of device `id` (it was revoked); returns how many.
    pub(crate) fn end_device_sessions(&self, id: &str) -> usize {
        let ended = self.sessions.remove_device(id);
        self.ended(&ended, EndReason::Revoked, self.now());
        ended.len()
    }

    /// Brings one device of the shared storage into the registry: a new device is added, a
    /// revoked one is revoked here too and its sessions end.
    pub(crate) fn apply_device(&self, d: &DeviceRecord) {
        match self.registry.get(d.id.as_bytes()) {
            Some(s) if d.revoked && !s.is_revoked() => {
                self.registry.revoke(d.id.as_bytes());
                let _ = self.end_device_sessions(&d.id);
            }
            Some(_) => {}
            None => {
                let _ = self.registry.insert(d);
            }
        }
    }

    /// The handshake server of a binding (MQTT has its own when it is configured).
    fn lock_hs(&self, b: Binding) -> MutexGuard<'_, HandshakeServer> {
        match (b, &self.mqtt_hs) {
            (Binding::Mqtt, Some(m)) => m.lock().unwrap_or_else(|e| e.into_inner()),
            _ => self.hs.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Records a binding's half-open count and updates the gauge with the total.
    fn set_half_open(&self, b: Binding, n: usize) {
        let i = usize::from(b == Binding::Mqtt && self.mqtt_hs.is_some());
        self.half_open[i].store(n, Ordering::Relaxed);
        let total =
            self.half_open[0].load(Ordering::Relaxed) + self.half_open[1].load(Ordering::Relaxed);
        self.metrics.set_half_open(total);
    }

    /// Expires old half-open handshakes and cached answers of every binding, then updates
    /// the gauge (one lock at a time).
    fn expire_half_open(&self, now: Option<Time>) {
        for b in [Binding::Http, Binding::Mqtt] {
            if b == Binding::Mqtt && self.mqtt_hs.is_none() {
                continue;
            }
            let mut hs = self.lock_hs(b);
            if let Some(now) = now {
                hs.expire(now);
            }
            let n = hs.half_open_len();
            drop(hs);
            self.set_half_open(b, n);
        }
    }

    /// Updates the gauges a metrics scrape shows (half-open handshakes, sessions).
    pub fn refresh_gauges(&self) {
        self.expire_half_open(None);
        self.metrics.set_active_sessions(self.sessions.len());
    }

    /// One round of housekeeping: expires half-open handshakes, idle, parked and old
    /// sessions, rate-limit buckets, and writes last-seen times. The sweeper runs it every
    /// `limits.sweep_interval_secs`; tests call it after advancing a manual clock.
    pub async fn sweep(&self) {
        let now = self.now();
        self.expire_half_open(Some(now));
        let l = &self.settings.limits;
        let swept = self.sessions.sweep(
            now,
            l.idle_timeout_secs.saturating_mul(1000),
            l.session_lifetime_secs.saturating_mul(1000),
            l.park_after_secs.saturating_mul(1000),
        );
        for (e, reason) in &swept.ended {
            self.ended(std::slice::from_ref(e), *reason, now);
        }
        self.metrics.set_active_sessions(self.sessions.len());
        self.metrics
            .set_parked_sessions(swept.parked, swept.newly_parked);
        self.limiter.sweep(now.as_millis());
        self.flush_last_seen().await;
    }

    /// Writes every device's new last-seen time in one storage call (one group commit), so
    /// a large fleet does not queue one transaction per device ahead of readings.
    pub(crate) async fn flush_last_seen(&self) {
        let seen: Vec<(String, u64)> = self
            .registry
            .all()
            .into_iter()
            .filter_map(|d| d.take_unflushed_seen().map(|t| (d.id.to_string(), t)))
            .collect();
        let n = seen.len();
        if n > 0
            && let Err(e) = self.storage.touch_devices(seen).await
        {
            warn!(devices = n, error = %e, "storing last-seen times failed");
        }
    }

    /// Counts `reason` and refuses with `r`.
    fn refused(&self, reason: &str, r: Refusal) -> Answer {
        self.metrics.refusal(reason);
        Answer::Refused(r)
    }
}
