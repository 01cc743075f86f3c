//! A load generator (what `iotseal bench load` runs): many synthetic devices, one keep-alive
//! HTTPS connection each, sending sealed readings as fast as the gateway acknowledges them (or
//! at a fixed total rate), measuring throughput, acknowledgement latency (HDR histogram),
//! refusals and errors, and the gateway process's CPU and memory from `/proc`.
//!
//! Each device is registered through the admin API and driven by its own device engine
//! ([`iotseal_device::engine::Engine`], piggybacking off): it handshakes before the warm-up
//! ([`Engine::connect`]), then loops: queue `batch` readings, send the engine's request to
//! `/v1/records`, and hand the answer back. A request counts as acknowledged when nothing is
//! left pending after its answer; it counts only if it was sent after the warm-up and
//! answered before the end of the measured window. What a refusal or a lost answer means
//! (a new session, a backoff) is the engine's decision.
//!
//! With [`LoadTransport::Mqtt`] each device instead holds one MQTT connection to a broker
//! (the SDK's [`MqttTransport`]: QoS 1 requests with a response topic and correlation data)
//! and the gateway takes the requests through its MQTT binding; everything else (sealing,
//! acknowledgement check, latency from publish to answer) is the same, so the two transports
//! can be compared run for run.
//!
//! With [`LoadConfig::reconnect`] every request goes over a new TLS connection (battery
//! devices that wake, connect, send and sleep): each device resumes its own TLS session (a
//! session cache per device), the iotseal session is kept; the baseline can be run the same
//! way.
//!
//! The same client also drives a baseline server ([`Target::Raw`]): POSTs of a fixed body,
//! counting 2xx answers, so a plain TLS server (nginx returning 204) can be measured with the
//! very same connection code and connection count.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use iotseal_device::GatewayPins;
//! use iotseal_bench::load::{LoadConfig, LoadProgress, Target, run};
//! let target = Target::Gateway {
//!     pins: GatewayPins::load("gw/gateway.pub.toml".as_ref())?,
//!     token: std::fs::read_to_string("gw/admin.token")?,
//!     suite: "x25519/ed25519/aes256gcm".parse()?,
//!     prefix: None,
//! };
//! let report = run(LoadConfig::new(target, 8), Default::default()).await?;
//! println!("{:.0} readings/s, p99 {:.2} ms", report.readings_per_s, report.p99_ms);
//! # Ok(()) }
//! ```

mod conn;
pub mod handshakes;
pub mod procfs;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::StatusCode;
use iotseal_device::engine::{Engine, Event, Sample, Transmit};
use iotseal_proto::handshake::messages::decode_alert;
use iotseal_proto::reading::{MAX_READINGS, SensorKind};
use iotseal_proto::{Refusal, Suite, Time};
use serde::Serialize;

use self::conn::{Conn, Endpoint};
use iotseal_device::{
    AdminClient, DeviceOptions, GatewayPins, IdentityFile, MqttConfig, MqttTransport, Reply,
    Transport, engine_config,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

const OCTET: &str = "application/octet-stream";

/// What to load.
#[derive(Clone, Debug)]
pub enum Target {
    /// An iotseal gateway: sealed readings from synthetic devices registered with `token`.
    Gateway {
        /// The gateway's pins (its URL, TLS certificate and identity keys).
        pins: GatewayPins,
        /// Admin token (to register the devices).
        token: String,
        /// Suite the devices offer (aws-lc provider).
        suite: Suite,
        /// Device id prefix (default `load-<random>-`).
        prefix: Option<String>,
    },
    /// A baseline server: POST `body_len` bytes to `url` (any TLS certificate is accepted:
    /// nothing secret is sent), count 2xx answers.
    Raw {
        /// `https://host:port/path` (or `http://`).
        url: String,
        /// Request body size, bytes.
        body_len: usize,
    },
}

/// How the synthetic devices reach the gateway.
#[derive(Clone, Debug, Default)]
pub enum LoadTransport {
    /// HTTPS keep-alive, one connection per device (the default).
    #[default]
    Http,
    /// MQTT through a broker, one MQTT connection per device; the gateway must run its MQTT
    /// binding on the same broker and topic prefix.
    Mqtt(MqttConfig),
}

impl LoadTransport {
    /// `http` or `mqtt`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Mqtt(_) => "mqtt",
        }
    }
}

/// A load run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// What to load.
    pub target: Target,
    /// How the devices reach it (sealed mode; the baseline is HTTP only).
    pub transport: LoadTransport,
    /// Connections (one device each), all kept alive for the whole run.
    pub connections: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before the measurement starts (connections are already open and handshaken).
    pub warmup: Duration,
    /// Readings per request (sealed into records of at most 1024 readings).
    pub batch: usize,
    /// Total requests per second over all connections; `None`: each connection sends its next
    /// request as soon as the previous one is answered.
    pub rate: Option<f64>,
    /// The gateway's process ids; empty: found by the listening port when the URL is local.
    pub gateway_pids: Vec<u32>,
    /// A new TLS connection for every request (devices that wake, connect, send and sleep):
    /// each device's TLS session resumed (a cache per device), the iotseal session kept; a
    /// request's latency includes its connection's set-up. HTTP only.
    pub reconnect: bool,
}

impl LoadConfig {
    /// `connections` connections for 10 s after 1 s of warm-up, one reading per request, as
    /// fast as possible.
    pub fn new(target: Target, connections: usize) -> Self {
        Self {
            target,
            transport: LoadTransport::Http,
            connections,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            batch: 1,
            rate: None,
            gateway_pids: Vec::new(),
            reconnect: false,
        }
    }
}

/// Live counters (for a progress display).
#[derive(Debug, Default)]
pub struct LoadProgress {
    /// Devices registered.
    pub registered: AtomicU64,
    /// Connections open and handshaken.
    pub ready: AtomicU64,
    /// Requests answered successfully (warm-up included).
    pub requests: AtomicU64,
    /// Readings acknowledged (warm-up included).
    pub readings: AtomicU64,
    /// Failed requests (refusals, connection errors, missing acknowledgements).
    pub errors: AtomicU64,
}

/// Results of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// `sealed` (iotseal gateway) or `raw` (baseline server).
    pub mode: String,
    /// `http` (HTTPS keep-alive) or `mqtt` (through a broker).
    pub transport: String,
    /// The MQTT broker (with `mqtt`).
    pub broker: Option<String>,
    /// URL loaded.
    pub url: String,
    /// Suite of the devices (sealed mode).
    pub suite: Option<String>,
    /// Connections.
    pub connections: usize,
    /// Readings per request (1 in raw mode).
    pub batch: usize,
    /// Requested total rate, requests/s (None: as fast as possible).
    pub target_rate: Option<f64>,
    /// Measured time, seconds: the real time from the end of the warm-up to the end of the
    /// measurement (at least the requested duration; the rates are over this).
    pub duration: f64,
    /// The requested duration, seconds.
    pub requested_duration: f64,
    /// Why the target is considered lost, when it is: its process exited during the run, or
    /// every connection's last attempt failed to reach it. `None`: it served to the end.
    pub target_lost: Option<String>,
    /// Requests acknowledged in the measured time.
    pub requests: u64,
    /// Readings acknowledged in the measured time (raw mode: requests).
    pub readings: u64,
    /// Readings per second.
    pub readings_per_s: f64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Mean acknowledgement latency, ms (send to acknowledgement, per request; over MQTT from
    /// the publish to the answer on the device's inbox).
    pub mean_ms: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// Failed requests during the whole run (warm-up included): refusals, connection errors,
    /// answers without the acknowledgement.
    pub errors: u64,
    /// Of `errors`, the refusals by the server (an alert or an error status).
    pub refusals: u64,
    /// `errors` by kind: the refusal (`Busy`, `UnknownSession`, `http_503` ...), `connect`
    /// (no connection could be opened), `transport` (connection failed or reset) or `protocol`
    /// (no acknowledgement). The kinds add up to `errors`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Connections opened beyond the first per device (after errors; with `reconnect`, one per
    /// request).
    pub reconnects: u64,
    /// A new TLS connection per request (`reconnect`).
    pub reconnect: bool,
    /// Connections opened during the whole run (warm-up included).
    pub connections_opened: u64,
    /// Of those, TLS handshakes that resumed an earlier session (abbreviated handshake).
    pub tls_resumed: u64,
    /// Handshakes (sealed mode).
    pub handshakes: u64,
    /// Gateway process ids measured (empty: not found, e.g. a remote gateway).
    pub gateway_pids: Vec<u32>,
    /// Gateway CPU over the measured time, percent of one core (200 = both of 2 cores).
    pub gateway_cpu_percent: Option<f64>,
    /// Gateway resident memory at the end, MiB.
    pub gateway_rss_mb: Option<f64>,
    /// Gateway resident memory before the devices connected, MiB.
    pub gateway_rss_mb_before: Option<f64>,
    /// Largest gateway resident memory seen during the run, MiB.
    pub gateway_rss_mb_max: Option<f64>,
    /// Gateway open file descriptors at the end.
    pub gateway_fds: Option<u64>,
    /// This load generator's CPU over the measured time, percent of one core.
    pub client_cpu_percent: Option<f64>,
    /// CPUs of this machine.
    pub cpus: usize,
}

/// A device's part of the run: its engine.
struct Device {
    engine: Engine,
}

/// The engine's clock: system time, ms since the Unix epoch.
fn now() -> Time {
    Time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// What the workers share.
struct Shared {
    endpoint: Endpoint,
    /// Devices connect through this broker instead of to `endpoint`.
    mqtt: Option<MqttConfig>,
    /// `/v1/records` or the raw URL's path.
    path: String,
    raw_body: Option<Vec<u8>>,
    batch: usize,
    /// Per-connection interval when paced.
    interval: Option<Duration>,
    warmup: Duration,
    duration: Duration,
    start: OnceLock<Instant>,
    barrier: tokio::sync::Barrier,
    /// A new connection per request.
    reconnect: bool,
}

#[derive(Default)]
struct WorkerResult {
    hist: Option<Histogram<u64>>,
    requests: u64,
    readings: u64,
    errors: u64,
    refusals: u64,
    errors_by_kind: BTreeMap<String, u64>,
    reconnects: u64,
    connections_opened: u64,
    tls_resumed: u64,
    handshakes: u64,
    /// The worker's last attempt could not reach the target (connect or transport failure).
    ended_unreachable: bool,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn random_tag() -> String {
    let p = iotseal_device::default_provider();
    hex::encode(p.random_vec(3).unwrap_or_else(|_| vec![0, 0, 0]))
}

/// Runs the load and returns the report. Sealed mode registers `connections` new devices
/// first (they stay registered).
pub async fn run(cfg: LoadConfig, progress: Arc<LoadProgress>) -> Result<LoadReport, Error> {
    if cfg.connections == 0 {
        return Err("at least one connection".into());
    }
    if cfg.batch == 0 {
        return Err("batch must be at least 1".into());
    }
    if let Some(r) = cfg.rate
        && !(r > 0.0 && r.is_finite())
    {
        return Err("rate must be positive".into());
    }
    let mqtt = match (&cfg.transport, &cfg.target) {
        (LoadTransport::Http, _) => None,
        (LoadTransport::Mqtt(m), Target::Gateway { .. }) => Some(m.clone()),
        (LoadTransport::Mqtt(_), Target::Raw { .. }) => {
            return Err("the baseline is measured over HTTP only".into());
        }
    };
    if cfg.reconnect && mqtt.is_some() {
        return Err("reconnect is measured over HTTP only".into());
    }
    let mut report = LoadReport {
        transport: cfg.transport.name().into(),
        broker: mqtt.as_ref().map(|m| m.broker.clone()),
        connections: cfg.connections,
        batch: cfg.batch,
        target_rate: cfg.rate,
        reconnect: cfg.reconnect,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..LoadReport::default()
    };
    let (endpoint, path, raw_body, devices) = match &cfg.target {
        Target::Gateway {
            pins,
            token,
            suite,
            prefix,
        } => {
            report.mode = "sealed".into();
            report.url = pins.url.clone();
            report.suite = Some(suite.to_string());
            let pin = hex::decode(pins.tls_cert_sha256.trim())?;
            let endpoint = Endpoint::new(&pins.url, Some(pin))?;
            let prefix = prefix
                .clone()
                .unwrap_or_else(|| format!("load-{}-", random_tag()));
            let opts = load_options(cfg.batch);
            let devices = register(
                pins,
                token,
                *suite,
                &prefix,
                cfg.connections,
                (&opts, mqtt.is_some()),
                &progress,
            )
            .await?;
            (endpoint, "/v1/records".to_string(), None, devices)
        }
        Target::Raw { url, body_len } => {
            report.mode = "raw".into();
            report.url = url.clone();
            report.batch = 1;
            let uri: hyper::Uri = url.parse()?;
            let path = match uri.path() {
                "" => "/".to_string(),
                p => p.to_string(),
            };
            let base = format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("https"),
                uri.authority().map_or("", |a| a.as_str())
            );
            let endpoint = Endpoint::new(&base, None)?;
            (
                endpoint,
                path,
                Some(vec![b'x'; *body_len]),
                (0..cfg.connections).map(|_| None).collect(),
            )
        }
    };

    let mut pids = cfg.gateway_pids.clone();
    if pids.is_empty() && endpoint.is_local() {
        pids = procfs::pids_listening_on(endpoint.port());
    }
    report.gateway_pids = pids.clone();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    report.gateway_rss_mb_before = procfs::sample(&pids).map(|s| mib(s.rss_bytes));

    let shared = Arc::new(Shared {
        endpoint,
        mqtt,
        path,
        raw_body,
        batch: if matches!(cfg.target, Target::Raw { .. }) {
            1
        } else {
            cfg.batch
        },
        interval: cfg
            .rate
            .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r)),
        warmup: cfg.warmup,
        duration: cfg.duration,
        start: OnceLock::new(),
        barrier: tokio::sync::Barrier::new(cfg.connections + 1),
        reconnect: cfg.reconnect,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let n = devices.len();
    for (i, d) in devices.into_iter().enumerate() {
        // Paced connections start at evenly spread phases (not all at once, every interval).
        let phase = i as f64 / n as f64;
        tasks.spawn(worker(shared.clone(), d, phase, progress.clone()));
    }
    // Everyone connected (and handshaken): start.
    shared.barrier.wait().await;
    let start = *shared.start.get_or_init(Instant::now);
    let from = start + cfg.warmup;
    let end = from + cfg.duration;
    let w = Window::measure(&pids, from, end).await;
    report.gateway_cpu_percent = w.gateway_cpu_percent;
    report.client_cpu_percent = w.client_cpu_percent;
    report.gateway_rss_mb = w.last.map(|s| mib(s.rss_bytes));
    report.gateway_fds = w.last.map(|s| s.fds);
    report.gateway_rss_mb_max = w.max_rss.map(mib);

    // Workers stop at `end`; requests in flight then get a few seconds to finish.
    let mut hist = new_hist();
    let (mut workers, mut unreachable) = (0u64, 0u64);
    let collect = async {
        while let Some(r) = tasks.join_next().await {
            let Ok(r) = r else { continue };
            if let Some(h) = &r.hist {
                let _ = hist.add(h);
            }
            report.requests += r.requests;
            report.readings += r.readings;
            report.errors += r.errors;
            report.reconnects += r.reconnects;
            report.connections_opened += r.connections_opened;
            report.tls_resumed += r.tls_resumed;
            report.handshakes += r.handshakes;
            report.refusals += r.refusals;
            workers += 1;
            unreachable += u64::from(r.ended_unreachable);
            for (k, v) in r.errors_by_kind {
                *report.errors_by_kind.entry(k).or_default() += v;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), collect)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    report.target_lost = w.target_lost(&pids, workers, unreachable, &report.url);
    let secs = w.secs;
    report.duration = secs;
    report.requested_duration = cfg.duration.as_secs_f64();
    report.requests_per_s = report.requests as f64 / secs;
    report.readings_per_s = report.readings as f64 / secs;
    let ms = |us: u64| us as f64 / 1000.0;
    if !hist.is_empty() {
        report.mean_ms = hist.mean() / 1000.0;
        report.p50_ms = ms(hist.value_at_quantile(0.50));
        report.p90_ms = ms(hist.value_at_quantile(0.90));
        report.p99_ms = ms(hist.value_at_quantile(0.99));
        report.p999_ms = ms(hist.value_at_quantile(0.999));
        report.max_ms = ms(hist.max());
    }
    Ok(report)
}

/// The measured window: the gateway's and this process's CPU from the end of the warm-up
/// (`from`) to `end`, the gateway's largest resident memory, whether it exited.
struct Window {
    gateway_cpu_percent: Option<f64>,
    client_cpu_percent: Option<f64>,
    /// The gateway's sample at the end.
    last: Option<procfs::ProcSample>,
    max_rss: Option<u64>,
    /// The real window, seconds: from `from` until the end of the sampling (at least the
    /// requested duration; rates are over this).
    secs: f64,
    /// A local target whose process was there when the measurement started and is gone.
    pids_gone: bool,
}

impl Window {
    /// Samples `pids` and this process at `from`, every 500 ms (memory) and at `end`.
    async fn measure(pids: &[u32], from: Instant, end: Instant) -> Self {
        tokio::time::sleep_until(from.into()).await;
        let g0 = procfs::sample(pids);
        let c0 = procfs::sample_self();
        let t0 = Instant::now();
        let mut max_rss = g0.map(|s| s.rss_bytes);
        while Instant::now() + Duration::from_millis(500) < end {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(s) = procfs::sample(pids) {
                max_rss = max_rss.max(Some(s.rss_bytes));
            }
        }
        tokio::time::sleep_until(end.into()).await;
        let g1 = procfs::sample(pids);
        let c1 = procfs::sample_self();
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        let hz = procfs::clock_ticks_per_sec() as f64;
        let cpu = |a: Option<procfs::ProcSample>, b: Option<procfs::ProcSample>| match (a, b) {
            (Some(a), Some(b)) => {
                Some(b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / hz / secs * 100.0)
            }
            _ => None,
        };
        if let Some(s) = g1 {
            max_rss = max_rss.max(Some(s.rss_bytes));
        }
        Self {
            gateway_cpu_percent: cpu(g0, g1),
            client_cpu_percent: cpu(c0, c1),
            last: g1,
            max_rss,
            secs: Instant::now().saturating_duration_since(from).as_secs_f64(),
            pids_gone: g0.is_some()
                && !pids.is_empty()
                && pids.iter().all(|p| procfs::sample_pid(*p).is_none()),
        }
    }

    /// Why the target is considered lost (its process exited, or every worker's last attempt
    /// failed to reach it), if it is.
    fn target_lost(
        &self,
        pids: &[u32],
        workers: u64,
        unreachable: u64,
        url: &str,
    ) -> Option<String> {
        if self.pids_gone {
            Some(format!("gateway process {pids:?} exited during the run"))
        } else if workers > 0 && unreachable == workers {
            Some(format!(
                "every connection's last attempt failed to reach {url} ({workers} connections)"
            ))
        } else {
            None
        }
    }
}

/// The engine settings of a load device: `batch` readings in one request, no piggybacking
/// (the handshake is done before the warm-up), a short backoff.
fn load_options(batch: usize) -> DeviceOptions {
    DeviceOptions {
        readings_per_record: batch.clamp(1, MAX_READINGS),
        records_per_request: batch.div_ceil(MAX_READINGS).max(1),
        queue_capacity: batch.max(1),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(500),
        piggyback: false,
        ..DeviceOptions::default()
    }
}

/// Registers `n` devices (a few calls at a time) and builds their engines.
async fn register(
    pins: &GatewayPins,
    token: &str,
    suite: Suite,
    prefix: &str,
    n: usize,
    (opts, mqtt): (&DeviceOptions, bool),
    progress: &LoadProgress,
) -> Result<Vec<Option<Device>>, Error> {
    let admin = AdminClient::new(pins, token)?;
    let provider = iotseal_device::default_provider();
    let mut out: Vec<Option<Device>> = (0..n).map(|_| None).collect();
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0usize;
    let mut running = 0usize;
    loop {
        while running < 8 && next < n {
            let id = format!("{prefix}{next}");
            if id.len() > 32 {
                return Err(
                    format!("device id {id:?} longer than 32 bytes: shorten the prefix").into(),
                );
            }
            let identity = IdentityFile::generate(&provider, &id, suite.sig)?;
            let config = identity.device_config_with(provider, pins, Some(vec![suite]))?;
            let admin = admin.clone();
            let i = next;
            set.spawn(async move {
                let r = admin
                    .add_device(&identity.id, suite.sig, &identity.public_key)
                    .await;
                (i, r, config)
            });
            next += 1;
            running += 1;
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        running -= 1;
        let (i, r, config) = done?;
        r?;
        progress.registered.fetch_add(1, Ordering::Relaxed);
        let (engine_cfg, provider) = engine_config(config, opts, mqtt);
        let engine = Engine::new(engine_cfg, provider).map_err(|e| e.to_string())?;
        out[i] = Some(Device { engine });
    }
    Ok(out)
}

/// One device's connection: HTTPS keep-alive, or MQTT through the broker.
enum Link {
    Http(Conn),
    Mqtt(MqttTransport),
}

impl Shared {
    /// A connection to the target through `endpoint` (this worker's: with `reconnect`, its
    /// own TLS session cache).
    async fn connect(&self, endpoint: &Endpoint) -> Result<Link, String> {
        match &self.mqtt {
            None => endpoint.connect().await.map(Link::Http),
            Some(m) => MqttTransport::connect(m)
                .await
                .map(Link::Mqtt)
                .map_err(|e| e.to_string()),
        }
    }
}

impl Link {
    /// Whether the connection's TLS handshake resumed an earlier session.
    fn resumed(&self) -> bool {
        matches!(self, Self::Http(c) if c.resumed)
    }

    /// A request to `path` (the baseline's); the status and the answer. An error means the
    /// connection is no longer usable.
    async fn post(&mut self, path: &str, body: Vec<u8>) -> Result<StatusCode, String> {
        match self {
            Self::Http(c) => c.post(path, OCTET, body).await.map(|(s, ..)| s),
            Self::Mqtt(_) => Err("the baseline is measured over HTTP only".into()),
        }
    }

    /// The engine's request; the answer as received. An error means the connection is no
    /// longer usable (over MQTT: no answer in time).
    async fn send(&mut self, t: Transmit) -> Result<Reply, String> {
        match self {
            Self::Http(c) => {
                c.post(t.endpoint.path(), OCTET, t.body)
                    .await
                    .map(|(s, b, retry_after_secs)| Reply::Http {
                        status: s.as_u16(),
                        body: b.to_vec(),
                        retry_after_secs,
                    })
            }
            Self::Mqtt(m) => m.send(t.endpoint, t.body).await.map_err(|e| e.to_string()),
        }
    }
}

/// Why one exchange failed.
enum Fail {
    /// No connection could be opened.
    Connect(String),
    /// The connection is unusable.
    Transport(String),
    /// The server refused (kind).
    Refused(String),
    /// The answer did not acknowledge what was sent, or did not parse.
    Protocol(String),
}

/// The refusal an answer is, named as in the report (`Busy`, `http_503` ...), if it is one.
fn refusal_name(reply: &Reply) -> Option<String> {
    match reply {
        Reply::Http { status: 200, .. } => None,
        Reply::Http { status, body, .. } => Some(match decode_alert(body) {
            Some(r) => format!("{r:?}"),
            None => format!("http_{status}"),
        }),
        Reply::Payload(p) => match p.as_slice() {
            [iotseal_proto::handshake::messages::msg_type::ALERT, code] => {
                Some(match Refusal::from_code(*code) {
                    Some(r) => format!("{r:?}"),
                    None => format!("alert_{code}"),
                })
            }
            _ => None,
        },
    }
}

/// Sends the engine's request `t` and hands the answer (or the transport failure) back to
/// the engine; returns the readings it acknowledged. An answer that is a refusal, or that the
/// engine could not use for a handshake, is a failure (the engine has already decided what
/// comes next: a new session, a backoff).
async fn request(conn: &mut Link, d: &mut Device, t: Transmit) -> Result<u64, Fail> {
    let reply = match conn.send(t).await {
        Ok(r) => r,
        Err(e) => {
            d.engine.handle_transport_error(now());
            drain(d);
            return Err(Fail::Transport(e));
        }
    };
    let refused = refusal_name(&reply);
    d.engine.handle_response(now(), reply.response());
    let (acked, handshake_failed) = drain(d);
    if let Some(kind) = refused {
        return Err(Fail::Refused(kind));
    }
    if let Some(e) = handshake_failed {
        return Err(Fail::Protocol(format!("handshake: {e}")));
    }
    Ok(acked)
}

/// Polls the engine's events: the readings acknowledged, and a failed handshake.
fn drain(d: &mut Device) -> (u64, Option<iotseal_proto::Error>) {
    let (mut acked, mut failed) = (0, None);
    while let Some(e) = d.engine.poll_event() {
        match e {
            Event::Acknowledged { msg_ids } => acked += msg_ids.len() as u64,
            Event::HandshakeFailed(e) => failed = Some(e),
            _ => {}
        }
    }
    (acked, failed)
}

/// Queues `n` readings (stamped by the engine).
fn queue_readings(d: &mut Device, n: usize) {
    let t = now();
    for _ in 0..n {
        let id = d.engine.next_msg_id().0;
        let sample = Sample {
            time: None,
            values: vec![(SensorKind::Temperature, 20.0 + (id % 100) as f32 / 10.0)],
            extra: Vec::new(),
        };
        if d.engine.push(t, sample).is_err() {
            break;
        }
    }
}

/// How long until the engine has something to send (its backoff), at most `cap`.
fn engine_wait(d: &Device, cap: Duration) -> Duration {
    match d.engine.poll_timeout() {
        Some(t) => Duration::from_millis(t.millis_since(now()).max(1)).min(cap),
        None => cap,
    }
}

/// The outcome of one turn of a sealed device.
enum Turn {
    /// A records request was answered and left nothing pending: readings acknowledged.
    Acked(u64),
    /// A handshake message was answered (the session is not open yet).
    Handshaking,
    /// Nothing may be sent yet (backoff): wait this long.
    Wait(Duration),
}

/// One request of a sealed device: a handshake message, or `batch` readings (queued first
/// when nothing is pending).
async fn sealed_turn(sh: &Shared, conn: &mut Link, d: &mut Device) -> Result<Turn, Fail> {
    if d.engine.refusal().is_some() {
        // Stopped by a refusal retrying cannot fix: in a load run, try again after a pause.
        d.engine.resume();
        return Ok(Turn::Wait(Duration::from_millis(100)));
    }
    if d.engine.is_established() && d.engine.pending() == 0 {
        queue_readings(d, sh.batch);
    }
    let Some(t) = d.engine.poll_transmit(now()) else {
        return Ok(Turn::Wait(engine_wait(d, Duration::from_millis(500))));
    };
    let records = t.endpoint == iotseal_device::engine::Endpoint::Records;
    let n = request(conn, d, t).await?;
    if !records {
        return Ok(Turn::Handshaking);
    }
    if d.engine.pending() == 0 {
        Ok(Turn::Acked(n))
    } else {
        Err(Fail::Protocol("answer without the acknowledgement".into()))
    }
}

async fn worker(
    sh: Arc<Shared>,
    mut device: Option<Device>,
    phase: f64,
    progress: Arc<LoadProgress>,
) -> WorkerResult {
    let mut res = WorkerResult::default();
    let mut hist = new_hist();
    let mut conn: Option<Link> = None;
    // Reconnecting devices resume their own TLS sessions, as a real device would (one shared
    // cache would hand each ticket to whichever connection comes first).
    let endpoint = if sh.reconnect {
        sh.endpoint.with_own_session_cache()
    } else {
        sh.endpoint.clone()
    };
    let mut opened = 0u64;
    // Set up before the start: connect and handshake (a few tries).
    if let Some(d) = device.as_mut() {
        d.engine.connect();
    }
    for attempt in 0..40u32 {
        if conn.is_none() {
            match sh.connect(&endpoint).await {
                Ok(c) => {
                    conn = Some(c);
                    opened += 1;
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                    continue;
                }
            }
        }
        let Some(d) = device.as_mut() else { break };
        if d.engine.is_established() {
            break;
        }
        match sealed_turn(&sh, conn.as_mut().expect("connected"), d).await {
            Ok(Turn::Wait(w)) => tokio::time::sleep(w).await,
            Ok(_) => {}
            Err(Fail::Transport(_)) => conn = None,
            Err(_) => {}
        }
    }
    progress.ready.fetch_add(1, Ordering::Relaxed);
    sh.barrier.wait().await;
    let start = *sh.start.get_or_init(Instant::now);
    let from = start + sh.warmup;
    let end = from + sh.duration;
    let mut next_at = start + sh.interval.map_or(Duration::ZERO, |iv| iv.mul_f64(phase));
    let mut backoff = Duration::from_millis(5);
    loop {
        if let Some(iv) = sh.interval {
            next_at += iv;
            if next_at >= end {
                break;
            }
            let now = Instant::now();
            if next_at > now {
                tokio::time::sleep_until(next_at.into()).await;
            } else if now.duration_since(next_at) > Duration::from_secs(1) {
                // Far behind (after an outage): do not send a burst to catch up.
                next_at = now;
            }
        }
        if Instant::now() >= end {
            break;
        }
        // With `reconnect`, a request's time includes its connection's set-up.
        let began = Instant::now();
        if conn.is_none() {
            match sh.connect(&endpoint).await {
                Ok(c) => {
                    res.tls_resumed += u64::from(c.resumed());
                    conn = Some(c);
                    opened += 1;
                }
                Err(e) => {
                    fail(&mut res, &progress, &Fail::Connect(e));
                    res.ended_unreachable = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let sent = if sh.reconnect { began } else { Instant::now() };
        let outcome = match device.as_mut() {
            // The handshake messages of a new session go out in the same turn.
            Some(d) => loop {
                match sealed_turn(&sh, c, d).await {
                    Ok(Turn::Handshaking) => {
                        res.ended_unreachable = false;
                        if Instant::now() >= end {
                            break Ok(None);
                        }
                    }
                    Ok(Turn::Wait(w)) => {
                        let w = w.min(end.saturating_duration_since(Instant::now()));
                        tokio::time::sleep(w).await;
                        break Ok(None);
                    }
                    Ok(Turn::Acked(n)) => break Ok(Some(n)),
                    Err(f) => break Err(f),
                }
            },
            None => {
                let body = sh.raw_body.clone().unwrap_or_default();
                match c.post(&sh.path, body).await {
                    Ok(s) if s.is_success() => Ok(Some(1)),
                    Ok(s) => Err(Fail::Refused(format!("http_{}", s.as_u16()))),
                    Err(e) => Err(Fail::Transport(e)),
                }
            }
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(n)) => {
                let done = Instant::now();
                res.ended_unreachable = false;
                backoff = Duration::from_millis(5);
                progress.requests.fetch_add(1, Ordering::Relaxed);
                progress.readings.fetch_add(n, Ordering::Relaxed);
                if sent >= from && done <= end {
                    res.requests += 1;
                    res.readings += n;
                    let us = done.duration_since(sent).as_micros() as u64;
                    let _ = hist.record(us.max(1));
                }
            }
            Err(f) => {
                fail(&mut res, &progress, &f);
                res.ended_unreachable = matches!(f, Fail::Transport(_) | Fail::Connect(_));
                if res.ended_unreachable {
                    conn = None;
                }
                if device.is_none() && matches!(f, Fail::Refused(_)) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
        if sh.reconnect {
            // Close it: the next request opens a new connection (the iotseal session stays).
            conn = None;
        }
    }
    if let Some(d) = &device {
        res.handshakes = d.engine.stats().handshakes;
    }
    res.reconnects = opened.saturating_sub(1);
    res.connections_opened = opened;
    res.hist = Some(hist);
    res
}

fn fail(res: &mut WorkerResult, progress: &LoadProgress, f: &Fail) {
    res.errors += 1;
    progress.errors.fetch_add(1, Ordering::Relaxed);
    let kind = match f {
        Fail::Connect(_) => "connect".to_string(),
        Fail::Transport(_) => "transport".to_string(),
        Fail::Refused(k) => {
            res.refusals += 1;
            k.clone()
        }
        Fail::Protocol(_) => "protocol".to_string(),
    };
    *res.errors_by_kind.entry(kind).or_default() += 1;
    if let Fail::Connect(e) | Fail::Transport(e) | Fail::Protocol(e) = f {
        tracing::debug!("load request failed: {e}");
    }
}
