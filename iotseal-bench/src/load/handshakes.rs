//! Full handshakes back to back (what `iotseal bench handshakes` runs): `connections` synthetic
//! devices, one keep-alive TLS connection each, each starting a new iotseal session as soon as
//! the previous one is established: M1, M2 (again after an Address retry), M3 and its answer
//! over `/v1/handshake`, no readings. Each device is its own engine (as in [`super::run`];
//! docs/decisions.md D30), which drops its session and connects again for every handshake.
//! Counted: handshakes established in the measured window, their latency, refusals and
//! errors, and the gateway process's CPU.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use iotseal_bench::load::handshakes::{HandshakeConfig, run};
//! use iotseal_device::GatewayPins;
//! let cfg = HandshakeConfig::new(
//!     GatewayPins::load("gw/gateway.pub.toml".as_ref())?,
//!     std::fs::read_to_string("gw/admin.token")?,
//!     "x25519/ed25519/aes256gcm".parse()?,
//!     2,
//! );
//! let report = run(cfg, Default::default()).await?;
//! println!("{:.0} handshakes/s", report.handshakes_per_s);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iotseal_device::GatewayPins;
use iotseal_proto::Suite;
use serde::Serialize;

use super::conn::Endpoint;
use super::{
    Device, Error, Fail, Link, LoadProgress, Window, engine_wait, new_hist, now, procfs,
    random_tag, request,
};

/// A handshake run.
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// The gateway's pins (its URL, TLS certificate and identity keys).
    pub pins: GatewayPins,
    /// Admin token (to register the devices).
    pub token: String,
    /// Suite the devices offer (aws-lc provider).
    pub suite: Suite,
    /// Device id prefix (default `hs-<random>-`).
    pub prefix: Option<String>,
    /// Connections (one device each), kept alive for the whole run.
    pub connections: usize,
    /// Measured time.
    pub duration: Duration,
    /// Handshakes before the measurement starts.
    pub warmup: Duration,
    /// The gateway's process ids; empty: found by the listening port when the URL is local.
    pub gateway_pids: Vec<u32>,
}

impl HandshakeConfig {
    /// `connections` connections for 10 s after 1 s of warm-up.
    pub fn new(pins: GatewayPins, token: String, suite: Suite, connections: usize) -> Self {
        Self {
            pins,
            token,
            suite,
            prefix: None,
            connections,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            gateway_pids: Vec::new(),
        }
    }
}

/// Results of a handshake run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HandshakeReport {
    /// URL loaded.
    pub url: String,
    /// Suite of the devices.
    pub suite: String,
    /// Connections.
    pub connections: usize,
    /// Measured time, seconds (the real window, at least the requested duration).
    pub duration: f64,
    /// Why the target is considered lost, when it is (as in `bench load`).
    pub target_lost: Option<String>,
    /// Handshakes established (M3 answered) in the measured time.
    pub handshakes: u64,
    /// Handshakes per second.
    pub handshakes_per_s: f64,
    /// Hellos the gateway answered with a retry (an Address cookie) in the measured time.
    pub retries: u64,
    /// Mean handshake latency (M1 sent to M3 answered), ms.
    pub mean_ms: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Failed handshakes during the whole run (warm-up included).
    pub errors: u64,
    /// `errors` by kind: the refusal (`Busy`, `http_429` ...), `connect`, `transport` or
    /// `protocol`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Gateway process ids measured (empty: not found).
    pub gateway_pids: Vec<u32>,
    /// Gateway CPU over the measured time, percent of one core.
    pub gateway_cpu_percent: Option<f64>,
    /// Gateway CPU per handshake, µs (`None` without the process).
    pub gateway_cpu_us_per_handshake: Option<f64>,
    /// This client's CPU over the measured time, percent of one core.
    pub client_cpu_percent: Option<f64>,
    /// CPUs of this machine.
    pub cpus: usize,
}

#[derive(Default)]
struct WorkerResult {
    hist: Option<hdrhistogram::Histogram<u64>>,
    handshakes: u64,
    retries: u64,
    errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    ended_unreachable: bool,
}

/// Registers `connections` devices, then runs handshakes back to back on every connection.
pub async fn run(
    cfg: HandshakeConfig,
    progress: Arc<LoadProgress>,
) -> Result<HandshakeReport, Error> {
    if cfg.connections == 0 {
        return Err("at least one connection".into());
    }
    let mut report = HandshakeReport {
        url: cfg.pins.url.clone(),
        suite: cfg.suite.to_string(),
        connections: cfg.connections,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..HandshakeReport::default()
    };
    let pin = hex::decode(cfg.pins.tls_cert_sha256.trim())?;
    let endpoint = Arc::new(Endpoint::new(&cfg.pins.url, Some(pin))?);
    let prefix = cfg
        .prefix
        .clone()
        .unwrap_or_else(|| format!("hs-{}-", random_tag()));
    let devices = register(&cfg, &prefix, &progress).await?;

    let mut pids = cfg.gateway_pids.clone();
    if pids.is_empty() && endpoint.is_local() {
        pids = procfs::pids_listening_on(endpoint.port());
    }
    report.gateway_pids = pids.clone();

    let barrier = Arc::new(tokio::sync::Barrier::new(cfg.connections + 1));
    let start = Arc::new(std::sync::OnceLock::new());
    let mut tasks = tokio::task::JoinSet::new();
    for mut device in devices {
        let (endpoint, barrier, start, progress) = (
            endpoint.clone(),
            barrier.clone(),
            start.clone(),
            progress.clone(),
        );
        let (warmup, duration) = (cfg.warmup, cfg.duration);
        tasks.spawn(async move {
            let mut conn = endpoint.connect().await.ok().map(Link::Http);
            progress.ready.fetch_add(1, Ordering::Relaxed);
            barrier.wait().await;
            let t0: Instant = *start.get_or_init(Instant::now);
            worker(
                &endpoint,
                &mut conn,
                &mut device,
                (t0 + warmup, t0 + warmup + duration),
                &progress,
            )
            .await
        });
    }
    barrier.wait().await;
    let t0 = *start.get_or_init(Instant::now);
    let from = t0 + cfg.warmup;
    let end = from + cfg.duration;
    let w = Window::measure(&pids, from, end).await;
    report.gateway_cpu_percent = w.gateway_cpu_percent;
    report.client_cpu_percent = w.client_cpu_percent;

    let mut hist = new_hist();
    let (mut workers, mut unreachable) = (0u64, 0u64);
    let collect = async {
        while let Some(r) = tasks.join_next().await {
            let Ok(r) = r else { continue };
            if let Some(h) = &r.hist {
                let _ = hist.add(h);
            }
            report.handshakes += r.handshakes;
            report.retries += r.retries;
            report.errors += r.errors;
            for (k, v) in r.errors_by_kind {
                *report.errors_by_kind.entry(k).or_default() += v;
            }
            workers += 1;
            unreachable += u64::from(r.ended_unreachable);
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), collect)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    report.target_lost = w.target_lost(&pids, workers, unreachable, &report.url);
    report.duration = w.secs;
    report.handshakes_per_s = report.handshakes as f64 / w.secs;
    report.gateway_cpu_us_per_handshake = report
        .gateway_cpu_percent
        .filter(|_| report.handshakes > 0)
        .map(|pct| pct / 100.0 * w.secs * 1e6 / report.handshakes as f64);
    if !hist.is_empty() {
        report.mean_ms = hist.mean() / 1000.0;
        report.p50_ms = hist.value_at_quantile(0.50) as f64 / 1000.0;
        report.p99_ms = hist.value_at_quantile(0.99) as f64 / 1000.0;
    }
    Ok(report)
}

/// Registers the devices through the load generator's registration (engines without
/// piggybacking, a short backoff).
async fn register(
    cfg: &HandshakeConfig,
    prefix: &str,
    progress: &LoadProgress,
) -> Result<Vec<Device>, Error> {
    let devices = super::register(
        &cfg.pins,
        &cfg.token,
        cfg.suite,
        prefix,
        cfg.connections,
        (&super::load_options(1), false),
        progress,
    )
    .await?;
    Ok(devices.into_iter().flatten().collect())
}

async fn worker(
    endpoint: &Endpoint,
    conn: &mut Option<Link>,
    device: &mut Device,
    (from, end): (Instant, Instant),
    progress: &LoadProgress,
) -> WorkerResult {
    let mut res = WorkerResult::default();
    let mut hist = new_hist();
    let mut backoff = Duration::from_millis(5);
    while Instant::now() < end {
        let c = match conn {
            Some(c) => c,
            None => match endpoint.connect().await {
                Ok(c) => conn.insert(Link::Http(c)),
                Err(e) => {
                    fail(&mut res, progress, &Fail::Connect(e));
                    res.ended_unreachable = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let retries_before = device.engine.stats().hello_retries;
        match handshake(c, device).await {
            Ok(Some(wait)) => {
                tokio::time::sleep(wait.min(end.saturating_duration_since(Instant::now()))).await;
            }
            Ok(None) => {
                let done = Instant::now();
                res.ended_unreachable = false;
                backoff = Duration::from_millis(5);
                progress.requests.fetch_add(1, Ordering::Relaxed);
                if sent >= from && done <= end {
                    res.handshakes += 1;
                    res.retries += device.engine.stats().hello_retries - retries_before;
                    let us = done.duration_since(sent).as_micros() as u64;
                    let _ = hist.record(us.max(1));
                }
            }
            Err(f) => {
                fail(&mut res, progress, &f);
                res.ended_unreachable = matches!(f, Fail::Transport(_));
                if res.ended_unreachable {
                    *conn = None;
                }
                if matches!(f, Fail::Refused(_)) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }
    res.hist = Some(hist);
    res
}

fn fail(res: &mut WorkerResult, progress: &LoadProgress, f: &Fail) {
    res.errors += 1;
    progress.errors.fetch_add(1, Ordering::Relaxed);
    let kind = match f {
        Fail::Connect(_) => "connect".to_string(),
        Fail::Transport(_) => "transport".to_string(),
        Fail::Refused(k) => k.clone(),
        Fail::Protocol(_) => "protocol".to_string(),
    };
    *res.errors_by_kind.entry(kind).or_default() += 1;
    if let Fail::Connect(e) | Fail::Transport(e) | Fail::Protocol(e) = f {
        tracing::debug!("handshake failed: {e}");
    }
}

/// A full handshake (a new session) over `c`: the engine forgets its session and connects
/// again; its handshake messages go out until the session is open. `Some(wait)`: the engine
/// backs off (after a refusal) and may send nothing for that long.
async fn handshake(c: &mut Link, d: &mut Device) -> Result<Option<Duration>, Fail> {
    if d.engine.refusal().is_some() {
        // Stopped by a refusal retrying cannot fix: in a benchmark, try again.
        d.engine.resume();
    }
    d.engine.drop_session();
    d.engine.connect();
    while !d.engine.is_established() {
        let Some(t) = d.engine.poll_transmit(now()) else {
            return Ok(Some(engine_wait(d, Duration::from_millis(500))));
        };
        request(c, d, t).await?;
    }
    Ok(None)
}
