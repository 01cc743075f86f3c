//! Starting, running and stopping the gateway: the accept loop (TLS 1.3 or plain HTTP), one
//! task per connection, the sweeper, the audit writer, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use iotseal_proto::handshake::{GatewayConfig, HandshakeServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{debug, error, info, warn};

use crate::admin::AdminState;
use crate::clock::{Clock, SystemClock};
use crate::cluster::Cluster;
use crate::dashboard::{Dashboard, DashboardState};
use crate::http::Peer;
use crate::metrics::Metrics;
use crate::pipeline::{AuditMsg, Parts, Pipeline, SessionIds};
use crate::registry::Registry;
use crate::settings::{StorageSpec, StorageSync};
use crate::storage::Storage;
use crate::{GatewayError, Settings, http, keys, tls};

/// Opens the storage the settings name.
pub async fn open_storage(settings: &Settings) -> Result<Arc<dyn Storage>, GatewayError> {
    match settings.storage_spec()? {
        StorageSpec::Memory => Ok(Arc::new(crate::storage::memory::MemoryStorage::default())),
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
        Self::builder(settings).start().await
    }

    /// As [`Gateway::start`] with a given storage.
    pub async fn start_with_storage(
        settings: Settings,
        storage: Arc<dyn Storage>,
    ) -> Result<GatewayHandle, GatewayError> {
        Self::builder(settings).storage(storage).start().await
    }

    /// A gateway with parts other than the settings' (a storage, a clock).
    pub fn builder(settings: Settings) -> GatewayBuilder {
        GatewayBuilder {
            settings,
            storage: None,
            clock: None,
        }
    }
}

/// A gateway to start, with parts given instead of the settings' defaults.
pub struct GatewayBuilder {
    settings: Settings,
    storage: Option<Arc<dyn Storage>>,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// Stores into `storage` instead of the storage the settings name.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Reads time from `clock` instead of the system clock (tests: a
    /// [`crate::clock::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Loads keys and TLS, binds, and starts serving. Returns once the socket is bound.
    pub async fn start(self) -> Result<GatewayHandle, GatewayError> {
        let settings = self.settings;
        settings.validate()?;
        let storage = match self.storage {
            Some(s) => s,
            None => open_storage(&settings).await?,
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
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
        let hs = HandshakeServer::new(gateway_config(settings.session_config())?);
        // MQTT sessions get their own handshake server: same keys and limits, their own
        // record freshness (off by default: a broker stores and forwards).
        let mqtt_hs = if settings.mqtt.enabled() {
            let mut session = settings.session_config();
            session.max_record_age_secs = settings.mqtt.record_max_age();
            Some(HandshakeServer::new(gateway_config(session)?))
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
        let token_sha256 = provider.hash.hash(token.as_bytes());

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
            Some(Cluster::connect(&settings, &url).await?)
        } else {
            None
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let dashboard = Dashboard::new(&provider, shutdown_rx.clone())?;
        let (audit_tx, audit_rx) = mpsc::channel(settings.limits.audit_queue);
        let pipeline = Arc::new(Pipeline::new(Parts {
            storage,
            hs,
            mqtt_hs,
            registry,
            metrics: Arc::new(Metrics::default()),
            provider,
            clock,
            audit: audit_tx,
            session_ids: cluster.clone().map(|c| -> Arc<dyn SessionIds> { c }),
            settings,
        }));
        pipeline.set_commit_hook(dashboard.commit_hook());
        if let Some(c) = &cluster {
            // Requests whose session another node owns are forwarded to it.
            pipeline.set_route(c.clone());
            c.start(&pipeline, shutdown_rx.clone());
        }
        let admin = Arc::new(AdminState {
            pipeline: pipeline.clone(),
            token_sha256,
            cluster: cluster.clone(),
        });
        let extra = Router::new()
            .route("/metrics", get(metrics))
            .with_state((pipeline.clone(), cluster.clone()))
            .merge(crate::admin::routes(admin.clone()))
            .merge(crate::dashboard::routes(Arc::new(DashboardState {
                admin,
                dashboard,
            })));
        let router = http::router(pipeline.clone(), extra);
        let mqtt = if pipeline.settings.mqtt.enabled() {
            let node = cluster.as_ref().map(|c| c.node_id().to_string());
            Some(crate::mqtt::start(pipeline.clone(), node, shutdown_rx.clone()).await?)
        } else {
            None
        };
        let task = tokio::spawn(run(
            pipeline.clone(),
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
            pipeline,
            cluster,
        })
    }
}

/// `GET /metrics`: the gateway's metrics and, in cluster mode, the cluster's.
async fn metrics(State((p, cluster)): State<(Arc<Pipeline>, Option<Arc<Cluster>>)>) -> Response {
    p.refresh_gauges();
    let text = p.metrics.render_with(cluster.as_ref().map(|c| c.metrics()));
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// A running gateway.
pub struct GatewayHandle {
    addr: SocketAddr,
    url: String,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), GatewayError>>,
    pipeline: Arc<Pipeline>,
    cluster: Option<Arc<Cluster>>,
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
        self.pipeline.metrics.clone()
    }

    /// The storage.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.pipeline.storage.clone()
    }

    /// Cluster membership, when the gateway runs in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Established sessions.
    pub fn session_count(&self) -> usize {
        self.pipeline.sessions.len()
    }

    /// Completes once every session audit event so far is stored (the audit trail is
    /// written by a background task; await this rather than waiting for it).
    pub async fn audit_settled(&self) {
        self.pipeline.audit_settled().await;
    }

    /// Runs one round of housekeeping now (what the sweeper does every
    /// `limits.sweep_interval_secs`): expiries by the gateway's clock, last-seen times.
    pub async fn sweep(&self) {
        self.pipeline.sweep().await;
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
    shared: Arc<Pipeline>,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    audit_rx: mpsc::Receiver<AuditMsg>,
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
    shared.flush_last_seen().await;
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
    shared: Arc<Pipeline>,
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
    // A device's records go straight to the pipeline (the one-reading path); everything
    // else through the router. Both answer through `http::observed`.
    let direct = shared.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if http::is_records(&req) {
            let req = req.map(axum::body::Body::new);
            Either::Left(
                http::records_direct(direct.clone(), peer, req)
                    .map(Ok::<_, std::convert::Infallible>),
            )
        } else {
            req.extensions_mut().insert(Peer(peer));
            Either::Right(router.clone().oneshot(req))
        }
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
    mut rx: mpsc::Receiver<AuditMsg>,
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
        match ev {
            None => break,
            Some(AuditMsg::Event(ev)) => {
                if let Err(e) = storage.session_event(ev).await {
                    error!(error = %e, "writing the session audit trail failed");
                }
            }
            Some(AuditMsg::Barrier(done)) => {
                let _ = done.send(());
            }
        }
    }
}

async fn sweeper(shared: Arc<Pipeline>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs(shared.settings.limits.sweep_interval_secs.max(1));
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = iv.tick() => shared.sweep().await,
            _ = stopped(&mut shutdown) => break,
        }
    }
}
