//! `iotseal bench load`: sealed readings per second over HTTPS keep-alive (or, with
//! `--transport mqtt`, through an MQTT broker to the gateway's MQTT binding) against a running
//! gateway (its own process), with latency percentiles and the gateway's CPU and memory; or
//! the same client against a baseline server (`--baseline URL`, e.g. nginx returning 204); or
//! both side by side (`--pins` and `--baseline`: the same connections, duration and mode,
//! alternating `--runs` times, medians and their ratio). `--reconnect`: a new TLS connection
//! per request (TLS session resumed, iotseal session kept). The library is
//! [`iotseal_bench::load`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use iotseal_bench::load::{LoadConfig, LoadProgress, LoadReport, LoadTransport, Target};
use iotseal_device::GatewayPins;
use iotseal_device::MqttConfig;
use iotseal_proto::Suite;

/// The gateway a benchmark loads (`bench load`, `bench handshakes`): where it is, what devices
/// pin, the admin token that registers the synthetic devices.
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    /// Gateway URL (default: the URL in --pins).
    #[arg(long, env = "IOTSEAL_GATEWAY")]
    gateway: Option<String>,
    /// The gateway's pins file (gateway.pub.toml).
    #[arg(long, env = "IOTSEAL_PINS")]
    pins: Option<PathBuf>,
    /// File with the admin token (to register the synthetic devices).
    #[arg(long, env = "IOTSEAL_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The admin token itself.
    #[arg(long, env = "IOTSEAL_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl GatewayArgs {
    /// The pins (their URL replaced by --gateway) and the admin token; `None` without --pins.
    pub(crate) fn load(&self) -> Result<Option<(GatewayPins, String)>> {
        let Some(path) = &self.pins else {
            return Ok(None);
        };
        let mut pins = GatewayPins::load(path).map_err(|e| anyhow!("{e}"))?;
        if let Some(u) = &self.gateway {
            pins.url = u.clone();
        }
        let token = crate::cmd::simulate::admin_token(self.token.clone(), self.token_file.clone())?;
        Ok(Some((pins, token)))
    }
}

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    target: GatewayArgs,
    /// Concurrent keep-alive connections, one synthetic device each.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measured time: `30`, `30s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = crate::cmd::duration::parse)]
    duration: Duration,
    /// Load before the measurement starts (connections are open and handshaken already).
    #[arg(long, default_value = "1s", value_parser = crate::cmd::duration::parse)]
    warmup: Duration,
    /// Readings per request (one record of up to 1024 readings; more make several records).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Total requests per second (paced per connection); default: as fast as acknowledgements
    /// come back.
    #[arg(long)]
    rate: Option<f64>,
    /// Suite of the synthetic devices (aws-lc provider).
    #[arg(long, default_value = "x25519/ed25519/aes256gcm", value_parser = parse_suite)]
    suite: Suite,
    /// Process id of the gateway (repeatable); default: whoever listens on the URL's port
    /// (found through /proc).
    #[arg(long = "gateway-pid")]
    gateway_pid: Vec<u32>,
    /// Prefix of the synthetic device ids (default `load-<random>-`).
    #[arg(long)]
    prefix: Option<String>,
    /// Baseline mode: POST --body-size bytes to this URL with the same client and count 2xx
    /// answers (any TLS certificate is accepted; nothing secret is sent). For a plain TLS
    /// server such as nginx returning 204. With --pins too: both, side by side (the same
    /// connections, duration and --reconnect), and the ratio of their requests/s.
    #[arg(long, value_name = "URL")]
    baseline: Option<String>,
    /// A new TLS connection for every request (devices that wake, connect, send and sleep):
    /// TLS sessions resumed from the client's session cache, the iotseal session kept; the
    /// latency includes the connection's set-up. HTTP only.
    #[arg(long)]
    reconnect: bool,
    /// Side by side (--pins and --baseline): this many runs of each, alternating; the JSON
    /// has every run and the medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Request body size in baseline mode, bytes.
    #[arg(long, default_value_t = 200)]
    body_size: usize,
    /// How the devices reach the gateway: http (HTTPS keep-alive) or mqtt (through
    /// --mqtt-broker to the gateway's MQTT binding; the admin API stays HTTPS).
    #[arg(long, default_value = "http", value_parser = ["http", "mqtt"])]
    transport: String,
    /// The broker with --transport mqtt: mqtt://HOST:PORT, mqtts://HOST:PORT or HOST:PORT.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    mqtt_broker: String,
    /// The gateway's mqtt.topic_prefix, with --transport mqtt.
    #[arg(long, default_value = "iotseal/v1")]
    mqtt_topic_prefix: String,
    /// CA certificates (PEM) of an mqtts:// broker (default: the system's roots).
    #[arg(long)]
    mqtt_ca_file: Option<PathBuf>,
    /// Leave Nagle's algorithm on for the devices' broker connections (to measure what
    /// TCP_NODELAY saves).
    #[arg(long)]
    mqtt_nagle: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_suite(s: &str) -> Result<Suite, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

pub(crate) fn run(a: LoadArgs) -> Result<()> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if a.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let raw = a.baseline.as_ref().map(|url| Target::Raw {
        url: url.clone(),
        body_len: a.body_size,
    });
    let sealed = a.target.load()?.map(|(pins, token)| Target::Gateway {
        pins,
        token,
        suite: a.suite,
        prefix: a.prefix.clone(),
    });
    let transport = match a.transport.as_str() {
        "mqtt" => {
            if a.baseline.is_some() {
                bail!("--baseline is measured over HTTP only; drop --transport mqtt");
            }
            if a.reconnect {
                bail!("--reconnect is measured over HTTP only; drop --transport mqtt");
            }
            LoadTransport::Mqtt(MqttConfig {
                topic_prefix: a.mqtt_topic_prefix.clone(),
                ca_file: a.mqtt_ca_file.clone(),
                tcp_nodelay: !a.mqtt_nagle,
                ..MqttConfig::new(&a.mqtt_broker)
            })
        }
        _ => LoadTransport::Http,
    };
    let cfg = |target: Target| LoadConfig {
        target,
        transport: transport.clone(),
        connections: a.connections,
        duration: a.duration,
        warmup: a.warmup,
        batch: a.batch,
        rate: a.rate,
        gateway_pids: a.gateway_pid.clone(),
        reconnect: a.reconnect,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (sealed, raw) = match (sealed, raw) {
        (Some(s), Some(r)) => (s, r),
        (Some(t), None) | (None, Some(t)) => {
            let report = measure(&rt, cfg(t), &a)?;
            return finish(&a, &report);
        }
        (None, None) => bail!("--pins (a gateway) or --baseline URL needed"),
    };
    // Side by side: alternating, so both see the same machine load over time.
    let mut side = SideBySide {
        mode: "side_by_side",
        reconnect: a.reconnect,
        connections: a.connections,
        ..SideBySide::default()
    };
    for _ in 0..a.runs {
        side.sealed.push(measure(&rt, cfg(sealed.clone()), &a)?);
        side.baseline.push(measure(&rt, cfg(raw.clone()), &a)?);
    }
    let med = |rs: &[LoadReport]| {
        iotseal_bench::stats::median(&rs.iter().map(|r| r.requests_per_s).collect::<Vec<_>>())
    };
    side.sealed_requests_per_s = med(&side.sealed);
    side.baseline_requests_per_s = med(&side.baseline);
    side.ratio = side.sealed_requests_per_s / side.baseline_requests_per_s;
    if a.json {
        println!("{}", serde_json::to_string(&side)?);
    } else {
        for (s, b) in side.sealed.iter().zip(&side.baseline) {
            print_report(s);
            print_report(b);
        }
        println!(
            "side by side{}: {:.0} requests/s sealed, {:.0} baseline (medians of {} runs): ratio {:.2}",
            if a.reconnect {
                ", a new TLS connection per request"
            } else {
                ""
            },
            side.sealed_requests_per_s,
            side.baseline_requests_per_s,
            a.runs,
            side.ratio
        );
    }
    let lost = side
        .sealed
        .iter()
        .chain(&side.baseline)
        .find_map(|r| r.target_lost.clone());
    if let Some(why) = lost {
        bail!(
            "a target was lost during the run: {why}; the figures above are not a measurement of it"
        );
    }
    Ok(())
}

/// `bench load` with both a gateway and a baseline: every run of each and the medians.
#[derive(Debug, Default, serde::Serialize)]
struct SideBySide {
    /// `side_by_side`.
    mode: &'static str,
    reconnect: bool,
    connections: usize,
    /// Median requests/s of the gateway runs.
    sealed_requests_per_s: f64,
    /// Median requests/s of the baseline runs.
    baseline_requests_per_s: f64,
    /// sealed / baseline.
    ratio: f64,
    sealed: Vec<LoadReport>,
    baseline: Vec<LoadReport>,
}

/// One load run with a progress bar.
fn measure(rt: &tokio::runtime::Runtime, cfg: LoadConfig, a: &LoadArgs) -> Result<LoadReport> {
    rt.block_on(async {
        let progress = Arc::new(LoadProgress::default());
        let bar = indicatif::ProgressBar::new(
            (a.warmup + a.duration)
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        let ticker = tokio::spawn(tick(progress.clone(), bar.clone(), a.connections));
        let r = iotseal_bench::load::run(cfg, progress)
            .await
            .map_err(|e| anyhow!("{e}"));
        ticker.abort();
        bar.finish_and_clear();
        r
    })
}

fn finish(a: &LoadArgs, report: &LoadReport) -> Result<()> {
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(report);
    }
    if let Some(why) = &report.target_lost {
        bail!(
            "the target was lost during the run: {why}; the figures above are not a measurement of it"
        );
    }
    Ok(())
}

async fn tick(p: Arc<LoadProgress>, bar: indicatif::ProgressBar, connections: usize) {
    let mut iv = tokio::time::interval(Duration::from_millis(250));
    let mut last = (0u64, 0u64);
    let mut started: Option<tokio::time::Instant> = None;
    loop {
        iv.tick().await;
        let ready = p.ready.load(Ordering::Relaxed);
        let reqs = p.requests.load(Ordering::Relaxed);
        let readings = p.readings.load(Ordering::Relaxed);
        let errors = p.errors.load(Ordering::Relaxed);
        if (ready as usize) < connections {
            bar.set_message(format!(
                "setting up: {} registered, {ready}/{connections} connected",
                p.registered.load(Ordering::Relaxed)
            ));
        } else {
            let t = *started.get_or_insert_with(tokio::time::Instant::now);
            bar.set_position(t.elapsed().as_millis() as u64);
            bar.set_message(format!(
                "{} req/s, {} readings/s, errors {errors}",
                (reqs - last.0) * 4,
                (readings - last.1) * 4
            ));
        }
        last = (reqs, readings);
        bar.tick();
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.1}{unit}"))
}

fn print_report(r: &LoadReport) {
    println!(
        "{} load over {} of {} ({}), {} connections, {} reading(s) per request, {:.1} s measured{}",
        r.mode,
        match &r.broker {
            Some(b) => format!("MQTT (broker {b})"),
            None if r.reconnect => format!(
                "HTTPS, a new TLS connection per request ({} of {} TLS handshakes resumed)",
                r.tls_resumed, r.connections_opened
            ),
            None => "HTTPS".into(),
        },
        r.url,
        r.suite.as_deref().unwrap_or("plain HTTPS POST"),
        r.connections,
        r.batch,
        r.duration,
        r.target_rate
            .map(|x| format!(", paced at {x:.0} req/s"))
            .unwrap_or_default()
    );
    println!(
        "  throughput: {:.0} requests/s, {:.0} readings/s ({} requests, {} readings)",
        r.requests_per_s, r.readings_per_s, r.requests, r.readings
    );
    println!(
        "  latency:    mean {:.3} ms, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        r.mean_ms, r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms
    );
    let kinds: Vec<String> = r
        .errors_by_kind
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "  errors:     {} ({} refusals){}",
        r.errors,
        r.refusals,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(": {}", kinds.join(", "))
        }
    );
    if r.gateway_pids.is_empty() {
        println!("  server:     process not found (not local, or no permission): no CPU/RSS");
    } else {
        println!(
            "  server:     pid {:?}: CPU {} of one core ({} CPUs), RSS {} MiB (before {}, max {}), {} fds",
            r.gateway_pids,
            opt(r.gateway_cpu_percent, "%"),
            r.cpus,
            opt(r.gateway_rss_mb, ""),
            opt(r.gateway_rss_mb_before, ""),
            opt(r.gateway_rss_mb_max, ""),
            r.gateway_fds
                .map_or_else(|| "n/a".into(), |f| f.to_string())
        );
    }
    println!(
        "  client:     CPU {} of one core",
        opt(r.client_cpu_percent, "%")
    );
}
