//! Starting, running and stopping the gateway: the accept loop (TLS 1.3 or plain HTTP), one
//! task per connection, the sweeper, the audit writer, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use iotseal_proto::handshake::{GatewayConfig, HandshakeServer};
use iotseal_proto::{CryptoProvider, Time};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::sessions::{EndReason, SessionEntry, SessionTable};
use crate::settings::{StorageSpec, StorageSync};
use crate::storage::{SessionEvent, Storage};
use crate::{GatewayError, Settings, http, keys, tls};

/// The peer address of a request's connection (a request extension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// The transport binding a message arrived over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binding {
    /// HTTP/1.1 (over TLS 1.3 or behind a proxy).
    Http,
    /// MQTT through a broker (store and forward: its own record freshness setting).
    Mqtt,
}

/// State shared by every connection and task.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) hs: Mutex<HandshakeServer>,
    pub(crate) sessions: SessionTable,
    pub(crate) registry: Registry,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limiter: RateLimiter,
    pub(crate) admin_token_sha256: [u8; 32],
    pub(crate) provider: CryptoProvider,
    /// Bounds the handshakes doing public-key work at once (on blocking threads).
    pub(crate) hs_permits: tokio::sync::Semaphore,
    /// The live dashboard's state (recent readings, rate history, cookie key).
    pub(crate) dashboard: crate::dashboard::Dashboard,
    /// The handshake server of the MQTT binding (its sessions may be configured without record
    /// freshness); `None` without MQTT.
    pub(crate) mqtt_hs: Option<Mutex<HandshakeServer>>,
    /// Half-open handshakes per binding (the gauge shows the sum).
    half_open: [AtomicUsize; 2],
    /// Cluster membership (`None`: a single node, the default).
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
    audit: mpsc::Sender<SessionEvent>,
    clock: AtomicU64,
}

impl Shared {
    /// Wall-clock time that never goes backwards (the core needs non-decreasing times).
    pub(crate) fn now(&self) -> Time {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let prev = self.clock.fetch_max(wall, Ordering::Relaxed);
        Time(prev.max(wall))
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
        if self.audit.try_send(ev).is_err() {
            self.metrics.audit_dropped();
            warn!(
                session = session.id,
                event, "audit queue full; event dropped"
            );
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

    pub(crate) fn lock_hs(&self) -> std::sync::MutexGuard<'_, HandshakeServer> {
        self.hs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handshake server of a binding (MQTT has its own when it is configured).
    pub(crate) fn lock_hs_of(&self, b: Binding) -> std::sync::MutexGuard<'_, HandshakeServer> {
        match (b, &self.mqtt_hs) {
            (Binding::Mqtt, Some(m)) => m.lock().unwrap_or_else(|e| e.into_inner()),
            _ => self.lock_hs(),
        }
    }

    /// Records a binding's half-open count and updates the gauge with the total.
    pub(crate) fn set_half_open(&self, b: Binding, n: usize) {
        let i = usize::from(b == Binding::Mqtt && self.mqtt_hs.is_some());
        self.half_open[i].store(n, Ordering::Relaxed);
        let total =
            self.half_open[0].load(Ordering::Relaxed) + self.half_open[1].load(Ordering::Relaxed);
        self.metrics.set_half_open(total);
    }

    /// Expires old half-open handshakes and cached answers of every binding, then updates
    /// the gauge (one lock at a time).
    pub(crate) fn expire_half_open(&self, now: Option<Time>) {
        for b in [Binding::Http, Binding::Mqtt] {
            if b == Binding::Mqtt && self.mqtt_hs.is_none() {
                continue;
            }
            let mut hs = self.lock_hs_of(b);
            if let Some(now) = now {
                hs.expire(now);
            }
            let n = hs.half_open_len();
            drop(hs);
            self.set_half_open(b, n);
        }
    }

    /// Updates the half-open gauge.
    pub(crate) fn refresh_half_open(&self) {
        self.expire_half_open(None);
    }
}

/// Opens the storage the settings name.
pub async fn open_storage(settings: &Settings) -> Result<Arc<dyn Storage>, GatewayError> {
    match settings.storage_spec()? {
        StorageSpec::Memory => Ok(Arc::new(crate::testing::MemoryStorage::default())),
        StorageSpec::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let s = crate::storage::sqlite::SqliteStorage::open(
                &path,
                crate::storage::sqlite::SqliteOptions {
                    synchronous_full: settings.storage_sync == StorageSync::Full,
                    queue_capacity: settings.limits.storage_queue,
                    max_batch: settings.limits.storage_batch,
                    read_connections: settings.limits.storage_read_connections,
                    ..Default::default()
                },
            )?;
            Ok(Arc::new(s))
        }
        StorageSpec::Postgres(url) => {
            let s = crate::storage::postgres::PgStorage::connect(
                &url,
                crate::storage::postgres::PgOptions {
                    synchronous_commit: settings.storage_sync == StorageSync::Full,
                    queue_capacity: settings.limits.storage_queue,
                    max_batch: settings.limits.storage_batch,
                    read_connections: settings.limits.storage_read_connections,
                    ..Default::default()
                },
            )
            .await?;
            Ok(Arc::new(s))
        }
    }
}

/// Entry point to start a gateway.
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// Loads keys, TLS and storage as `settings` say, binds, and starts serving. Returns once
    /// the socket is bound.
    pub async fn start(settings: Settings) -> Result<GatewayHandle, GatewayError> {
        let storage = open_storage(&settings).await?;
        Self::start_with_storage(settings, storage).await
    }

    /// As [`Gateway::start`] with a given storage.
    pub async fn start_with_storage(
        settings: Settings,
        storage: Arc<dyn Storage>,
    ) -> Result<GatewayHandle, GatewayError> {
        settings.validate()?;
        let provider = iotseal_crypto_awslc::default_provider();
        let key_files: Vec<_> = settings
            .identity_keys
            .iter()
            .map(|p| settings.resolve(p))
            .collect();
        let gateway_config = |session| -> Result<GatewayConfig, GatewayError> {
            let identities = keys::load_identities(&provider, &key_files)?;
            let mut gc = GatewayConfig::new(provider, identities)
                .map_err(|e| GatewayError::Key(format!("gateway configuration: {e}")))?;
            gc.policy = settings.suite_policy();
            gc.skew_secs = settings.skew_secs;
            gc.max_half_open = settings.limits.half_open;
            gc.max_half_open_per_source = settings.limits.half_open_per_source;
            gc.cookie_threshold = settings.limits.half_open_cookie_threshold;
            gc.half_open_secs = settings.limits.half_open_secs;
            gc.nonce_cache_capacity = settings.limits.nonce_cache;
            gc.response_cache_capacity = settings.limits.response_cache;
            gc.session = session;
            Ok(gc)
        };
        let gc = gateway_config(settings.session_config())?;
        // MQTT sessions get their own handshake server: same keys and limits, their own
        // record freshness (off by default: a broker stores and forwards).
        let mqtt_hs = if settings.mqtt.enabled() {
            let mut session = settings.session_config();
            session.max_record_age_secs = settings.mqtt.record_max_age();
            Some(Mutex::new(HandshakeServer::new(gateway_config(session)?)))
        } else {
            None
        };

        let token_path = settings.resolve(&settings.admin_token_file);
        let token = std::fs::read_to_string(&token_path)
            .map_err(|e| GatewayError::Config(format!("{}: {e}", token_path.display())))?;
        let token = token.trim();
        if token.len() < 16 {
            return Err(GatewayError::Config(format!(
                "{}: admin token too short",
                token_path.display()
            )));
        }
        let admin_token_sha256 = provider.hash.hash(token.as_bytes());

        let acceptor = if settings.plain_http {
            None
        } else {
            let cfg = tls::server_config(
                &settings.resolve(&settings.tls.cert),
                &settings.resolve(&settings.tls.key),
                settings
                    .tls
                    .client_ca
                    .as_ref()
                    .map(|p| settings.resolve(p))
                    .as_deref(),
            )?;
            Some(tokio_rustls::TlsAcceptor::from(cfg))
        };

        let devices = storage.devices().await?;
        let registry = Registry::load(&devices);
        let listener = TcpListener::bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let url = settings.url_for(addr);

        let cluster = if settings.cluster.enabled() {
            Some(crate::cluster::Cluster::connect(&settings, &url).await?)
        } else {
            None
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let dashboard = crate::dashboard::Dashboard::new(&provider, shutdown_rx.clone())?;
        let storage = dashboard.observe(storage);
        let (audit_tx, audit_rx) = mpsc::channel(settings.limits.audit_queue);
        let l = &settings.limits;
        let shared = Arc::new(Shared {
            sessions: SessionTable::new(l.max_sessions, l.max_sessions_per_device),
            limiter: RateLimiter::new(
                l.handshake_rate_per_ip,
                l.handshake_burst_per_ip,
                l.rate_limit_table,
            ),
            hs: Mutex::new(HandshakeServer::new(gc)),
            registry,
            metrics: Arc::new(Metrics::default()),
            admin_token_sha256,
            provider,
            hs_permits: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            ),
            storage,
            dashboard,
            cluster,
            mqtt_hs,
            half_open: [AtomicUsize::new(0), AtomicUsize::new(0)],
            audit: audit_tx,
            clock: AtomicU64::new(0),
            settings,
        });
        let mut router = http::router(shared.clone());
        if let Some(cluster) = &shared.cluster {
            // Requests whose session another node owns are forwarded to it.
            router = cluster.start(&shared, router, shutdown_rx.clone());
        }
        let mqtt = if shared.settings.mqtt.enabled() {
            Some(crate::mqtt::start(shared.clone(), shutdown_rx.clone()).await?)
        } else {
            None
        };
        let task = tokio::spawn(run(
            shared.clone(),
            listener,
            acceptor,
            router,
            shutdown_rx,
            audit_rx,
            mqtt,
        ));
        info!(%url, devices = devices.len(), "gateway listening");
        Ok(GatewayHandle {
            addr,
            url,
            shutdown: shutdown_tx,
            task,
            shared,
        })
    }
}

/// A running gateway.
pub struct GatewayHandle {
    addr: SocketAddr,
    url: String,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), GatewayError>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("addr", &self.addr)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl GatewayHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL (`https://IP:PORT`, or `http://` with plain HTTP).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The storage.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.shared.storage.clone()
    }

    /// Cluster membership, when the gateway runs in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.shared.cluster.as_ref()
    }

    /// Established sessions.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }

    /// Starts a graceful shutdown: stop accepting, let in-flight requests finish, flush.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the gateway has stopped.
    pub async fn wait(self) -> Result<(), GatewayError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(GatewayError::Io(std::io::Error::other(e.to_string()))),
        }
    }

    /// [`GatewayHandle::shutdown`], then [`GatewayHandle::wait`].
    pub async fn stop(self) -> Result<(), GatewayError> {
        self.shutdown();
        self.wait().await
    }
}

/// Runs a gateway until `shutdown` completes, then stops it gracefully. `on_listening` is
/// called with the URL once the socket is bound.
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(&str),
) -> Result<(), GatewayError> {
    let h = Gateway::start(settings).await?;
    on_listening(h.url());
    shutdown.await;
    h.stop().await
}

async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    audit_rx: mpsc::Receiver<SessionEvent>,
    mqtt: Option<tokio::task::JoinHandle<()>>,
) -> Result<(), GatewayError> {
    let l = shared.settings.limits.clone();
    let (audit_stop, audit_stop_rx) = tokio::sync::oneshot::channel();
    let audit_task = tokio::spawn(audit_writer(
        shared.storage.clone(),
        audit_rx,
        audit_stop_rx,
    ));
    let sweeper = tokio::spawn(sweeper(shared.clone(), shutdown.clone()));
    let permits = Arc::new(tokio::sync::Semaphore::new(l.max_connections));
    let per_source = crate::addrlimit::ConnectionsPerSource::new(l.max_connections_per_ip);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => {
                let (tcp, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: back off briefly.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // The source's share first: one source at its cap never uses a global slot.
                // Behind a PROXY-protocol proxy the source is known only once the header is
                // read: the connection task checks it then.
                let slot = if shared.settings.proxy_protocol {
                    None
                } else {
                    let Some(slot) = per_source.acquire(peer.ip()) else {
                        shared.metrics.refusal("limit_per_ip");
                        debug!(%peer, "per-address connection limit reached");
                        continue;
                    };
                    Some(slot)
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    shared.metrics.refusal("limit");
                    debug!(%peer, "connection limit reached");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                conns.spawn(connection(
                    shared.clone(),
                    acceptor.clone(),
                    router.clone(),
                    tcp,
                    peer,
                    shutdown.clone(),
                    Admission {
                        _permit: permit,
                        slot,
                        per_source: per_source.clone(),
                    },
                ));
            }
        }
    }
    drop(listener);
    info!(
        connections = conns.len(),
        "shutting down: finishing in-flight requests"
    );
    let grace = Duration::from_secs(l.shutdown_grace_secs);
    if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!("shutdown grace period over; closing remaining connections");
        conns.abort_all();
    }
    if let Some(m) = mqtt {
        // The MQTT worker finishes its in-flight messages within the same grace period.
        let _ = m.await;
    }
    let _ = sweeper.await;
    flush_last_seen(&shared).await;
    // Write what the audit queue holds, then make everything durable.
    let _ = audit_stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), audit_task).await;
    shared.storage.flush().await?;
    info!("gateway stopped");
    Ok(())
}

/// What a connection holds while it is open: a global slot and its source's share (taken
/// at accept, or once the PROXY header has named the source).
struct Admission {
    _permit: tokio::sync::OwnedSemaphorePermit,
    slot: Option<crate::addrlimit::SourceSlot>,
    per_source: Arc<crate::addrlimit::ConnectionsPerSource>,
}

async fn connection(
    shared: Arc<Shared>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    mut admission: Admission,
) {
    let m = shared.metrics.clone();
    let l = &shared.settings.limits;
    if shared.settings.proxy_protocol {
        let t = Duration::from_secs(l.tls_handshake_timeout_secs);
        match crate::proxy_protocol::read_header(&mut tcp, peer, t).await {
            Ok(client) => peer = client,
            Err(e) => {
                m.refusal("malformed");
                debug!(%peer, error = %e, "connection closed");
                return;
            }
        }
        let Some(slot) = admission.per_source.acquire(peer.ip()) else {
            m.refusal("limit_per_ip");
            debug!(%peer, "per-address connection limit reached");
            return;
        };
        admission.slot = Some(slot);
    }
    m.connection_opened();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(l.header_read_timeout_secs))
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        router.clone().oneshot(req)
    });
    match acceptor {
        None => serve_conn(&builder, TokioIo::new(tcp), svc, shutdown).await,
        Some(acc) => {
            let t = Duration::from_secs(l.tls_handshake_timeout_secs);
            match tokio::time::timeout(t, acc.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    m.tls_handshake("ok");
                    serve_conn(&builder, TokioIo::new(stream), svc, shutdown).await;
                }
                Ok(Err(e)) => {
                    m.tls_handshake("failed");
                    debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    m.tls_handshake("timeout");
                    debug!(%peer, "TLS handshake timed out");
                }
            }
        }
    }
    m.connection_closed();
}

async fn serve_conn<I, S>(
    builder: &http1::Builder,
    io: I,
    svc: S,
    mut shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send,
    S::Future: Send,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "connection ended");
            }
        }
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Completes once shutdown was requested (at once if it already was).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn audit_writer(
    storage: Arc<dyn Storage>,
    mut rx: mpsc::Receiver<SessionEvent>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut stopping = false;
    loop {
        let ev = if stopping {
            rx.recv().await
        } else {
            tokio::select! {
                biased;
                ev = rx.recv() => ev,
                _ = &mut stop => {
                    // Drain what is queued, then end.
                    stopping = true;
                    rx.close();
                    rx.recv().await
                }
            }
        };
        let Some(ev) = ev else { break };
        if let Err(e) = storage.session_event(ev).await {
            error!(error = %e, "writing the session audit trail failed");
        }
    }
}

async fn sweeper(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs(shared.settings.limits.sweep_interval_secs.max(1));
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = iv.tick() => sweep_once(&shared).await,
            _ = stopped(&mut shutdown) => break,
        }
    }
}

pub(crate) async fn sweep_once(shared: &Shared) {
    let now = shared.now();
    shared.expire_half_open(Some(now));
    let l = &shared.settings.limits;
    let swept = shared.sessions.sweep(
        now,
        l.idle_timeout_secs.saturating_mul(1000),
        l.session_lifetime_secs.saturating_mul(1000),
        l.park_after_secs.saturating_mul(1000),
    );
    for (e, reason) in &swept.ended {
        shared.ended(std::slice::from_ref(e), *reason, now);
    }
    shared.metrics.set_active_sessions(shared.sessions.len());
    shared
        .metrics
        .set_parked_sessions(swept.parked, swept.newly_parked);
    shared.limiter.sweep(now.as_millis());
    flush_last_seen(shared).await;
}

/// Writes every device's new last-seen time in one storage call (one group commit), so a
/// large fleet does not queue one transaction per device ahead of readings.
async fn flush_last_seen(shared: &Shared) {
    let seen: Vec<(String, u64)> = shared
        .registry
        .all()
        .into_iter()
        .filter_map(|d| d.take_unflushed_seen().map(|t| (d.id.to_string(), t)))
        .collect();
    let n = seen.len();
    if n > 0
        && let Err(e) = shared.storage.touch_devices(seen).await
    {
        warn!(devices = n, error = %e, "storing last-seen times failed");
    }
}
