//! `iotseal bench`: `crypto`, what each cryptographic choice costs (this module, on
//! [`iotseal_bench::matrix`]), `load`, a running gateway under load (`cmd/load.rs`), and
//! `handshakes`, full handshakes back to back against a running gateway next to the
//! primitive-bound limit measured in the same run (this module, on
//! [`iotseal_bench::load::handshakes`] and [`iotseal_bench::limit`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use iotseal_bench::load::handshakes::{HandshakeConfig, HandshakeReport};
use iotseal_bench::matrix::{self, Config};
use iotseal_bench::report::CRYPTO_FILE;
use iotseal_proto::Suite;

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The crypto matrix: provider × key exchange × signature × record protection (plus a
    /// no-encryption baseline): handshake time per side and bytes on the wire, record seal/open
    /// time and throughput at 64 B–16 KiB, overhead and memory per session, and an analysis of
    /// the ciphertext (entropy, chi-square, bit flips).
    Crypto(CryptoArgs),
    /// Load a running gateway with sealed readings over HTTPS keep-alive, or through an MQTT
    /// broker (--transport mqtt).
    Load(Box<super::load::LoadArgs>),
    /// Full handshakes back to back against a running gateway (a new iotseal session each over
    /// keep-alive TLS connections), next to the gateway's primitive-bound limit (its public-key
    /// work per handshake, measured here in the same run, times --gateway-cores).
    Handshakes(Box<HandshakesArgs>),
}

/// Arguments of `bench handshakes`.
#[derive(Debug, clap::Args)]
pub(crate) struct HandshakesArgs {
    #[command(flatten)]
    target: super::load::GatewayArgs,
    /// Concurrent keep-alive connections, one synthetic device each, each handshaking back to
    /// back.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measured time per run: `30`, `30s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = crate::cmd::duration::parse)]
    duration: Duration,
    /// Handshakes before each run's measurement starts.
    #[arg(long, default_value = "1s", value_parser = crate::cmd::duration::parse)]
    warmup: Duration,
    /// Suite of the synthetic devices (aws-lc provider; default: the protocol's default suite);
    /// the limit is the gateway's cost of it.
    #[arg(long, default_value_t = Suite::DEFAULT, value_parser = parse_suite)]
    suite: Suite,
    /// Runs (each with its own limit measurement); the JSON has each and the medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Worker threads of this client's runtime (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Cores the gateway's handshakes may use: the limit is this times one core's limit.
    /// Default: this machine's CPUs (the gateway runs here); with `iotseal gateway run
    /// --worker-threads N`, N.
    #[arg(long)]
    gateway_cores: Option<usize>,
    /// Timed iterations of the limit measurement per run.
    #[arg(long, default_value_t = iotseal_bench::limit::DEFAULT_ITERATIONS)]
    limit_iterations: usize,
    /// Process id of the gateway (repeatable); default: whoever listens on the URL's port.
    #[arg(long = "gateway-pid")]
    gateway_pid: Vec<u32>,
    /// Prefix of the synthetic device ids (default `hs-<random>-`; a run number is added).
    #[arg(long)]
    prefix: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_suite(s: &str) -> Result<Suite, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

/// Arguments of `bench crypto`.
#[derive(Debug, clap::Args)]
pub(crate) struct CryptoArgs {
    /// Fewer iterations (the whole matrix still): under a minute on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object (the crypto.json format) instead of the tables.
    #[arg(long)]
    json: bool,
    /// Also write crypto.json into this directory (the input of `iotseal report`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Only these providers (comma-separated: aws-lc, rustcrypto).
    #[arg(long, value_delimiter = ',')]
    provider: Vec<String>,
    /// Timed handshakes per suite (default: 101, or 21 with --quick).
    #[arg(long)]
    iterations: Option<usize>,
}

pub(crate) fn run(a: Args) -> Result<()> {
    match a.command {
        BenchCommand::Crypto(c) => crypto(c),
        BenchCommand::Load(l) => super::load::run(*l),
        BenchCommand::Handshakes(h) => handshakes(*h),
    }
}

/// What `bench handshakes --json` prints.
#[derive(Debug, serde::Serialize)]
struct HandshakesOutput {
    suite: String,
    url: String,
    connections: usize,
    /// This client's worker threads (`None`: one per CPU).
    threads: Option<usize>,
    gateway_cores: usize,
    /// Median handshakes per second over the runs.
    handshakes_per_s: f64,
    /// Median primitive-bound limit over the runs: `gateway_cores` / the gateway's primitive
    /// cost per handshake.
    limit_per_s: f64,
    /// handshakes_per_s / limit_per_s.
    ratio: f64,
    /// Median primitive cost per handshake on one core (KEM respond, sign, verify), µs.
    primitive_us: f64,
    /// Median in-process gateway side of one handshake on one core, µs (for reference).
    full_handshake_us: f64,
    /// Every run: its limit and its report.
    runs: Vec<HandshakesRun>,
}

#[derive(Debug, serde::Serialize)]
struct HandshakesRun {
    limit_per_s: f64,
    primitive_us: f64,
    full_handshake_us: f64,
    #[serde(flatten)]
    report: HandshakeReport,
}

fn handshakes(a: HandshakesArgs) -> Result<()> {
    if a.connections == 0 || a.runs == 0 {
        bail!("--connections and --runs must be at least 1");
    }
    let (pins, token) = a
        .target
        .load()?
        .ok_or_else(|| anyhow!("--pins (the gateway's gateway.pub.toml) needed"))?;
    let cores = a.gateway_cores.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    if cores == 0 {
        bail!("--gateway-cores must be at least 1");
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build()?;
    let prefix = a
        .prefix
        .clone()
        .unwrap_or_else(|| format!("hs-{}-", hex::encode(rand_tag())));
    let mut runs = Vec::new();
    for run in 0..a.runs {
        // The limit first, while the gateway is idle: the same machine, the same minute.
        let cost = iotseal_bench::limit::measure(a.suite, a.limit_iterations)?;
        let cfg = HandshakeConfig {
            prefix: Some(format!("{prefix}{run}-")),
            duration: a.duration,
            warmup: a.warmup,
            gateway_pids: a.gateway_pid.clone(),
            ..HandshakeConfig::new(pins.clone(), token.clone(), a.suite, a.connections)
        };
        let report = rt
            .block_on(iotseal_bench::load::handshakes::run(cfg, Arc::default()))
            .map_err(|e| anyhow!("{e}"))?;
        if !a.json {
            print_handshakes(&report, cost.limit_per_s(cores), cores);
        }
        runs.push(HandshakesRun {
            limit_per_s: cost.limit_per_s(cores),
            primitive_us: cost.primitives.as_secs_f64() * 1e6,
            full_handshake_us: cost.full_handshake.as_secs_f64() * 1e6,
            report,
        });
    }
    let med = |f: &dyn Fn(&HandshakesRun) -> f64| {
        iotseal_bench::stats::median(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let out = HandshakesOutput {
        suite: a.suite.to_string(),
        url: pins.url,
        connections: a.connections,
        threads: a.threads,
        gateway_cores: cores,
        handshakes_per_s: med(&|r| r.report.handshakes_per_s),
        limit_per_s: med(&|r| r.limit_per_s),
        ratio: 0.0,
        primitive_us: med(&|r| r.primitive_us),
        full_handshake_us: med(&|r| r.full_handshake_us),
        runs,
    };
    let out = HandshakesOutput {
        ratio: out.handshakes_per_s / out.limit_per_s,
        ..out
    };
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{}: {:.0} handshakes/s against a limit of {:.0}/s ({} gateway cores × {:.0}/s, primitives {:.1} µs): ratio {:.2}{}",
            out.suite,
            out.handshakes_per_s,
            out.limit_per_s,
            cores,
            1e6 / out.primitive_us,
            out.primitive_us,
            out.ratio,
            if a.runs > 1 { " (medians)" } else { "" }
        );
    }
    if let Some(why) = out.runs.iter().find_map(|r| r.report.target_lost.clone()) {
        bail!(
            "the gateway was lost during the run: {why}; the figures are not a measurement of it"
        );
    }
    Ok(())
}

fn rand_tag() -> Vec<u8> {
    iotseal_crypto_awslc::default_provider()
        .random_vec(3)
        .unwrap_or_else(|_| vec![0; 3])
}

fn print_handshakes(r: &HandshakeReport, limit: f64, cores: usize) {
    println!(
        "{} handshakes against {}, {} connections, {:.1} s measured",
        r.suite, r.url, r.connections, r.duration
    );
    println!(
        "  throughput: {:.0} handshakes/s ({} handshakes, {} hello retries); limit {:.0}/s on {cores} cores",
        r.handshakes_per_s, r.handshakes, r.retries, limit
    );
    println!(
        "  latency:    mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
        r.mean_ms, r.p50_ms, r.p99_ms
    );
    println!("  errors:     {} {:?}", r.errors, r.errors_by_kind);
    match (r.gateway_cpu_percent, r.gateway_cpu_us_per_handshake) {
        (Some(c), Some(us)) => println!(
            "  server:     CPU {c:.0}% of one core, {us:.0} µs per handshake (pid {:?})",
            r.gateway_pids
        ),
        _ => println!("  server:     process not found: no CPU"),
    }
}

fn crypto(a: CryptoArgs) -> Result<()> {
    let mut config = if a.quick {
        Config::quick()
    } else {
        Config::full()
    };
    if !a.provider.is_empty() {
        for p in &a.provider {
            crate::providers::by_name(p)?;
        }
        config.providers = a.provider.clone();
    }
    if let Some(n) = a.iterations {
        config.handshake_iterations = n.max(1);
    }
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .expect("template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let report = matrix::run(&config, &mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(p.what.clone());
    });
    bar.finish_and_clear();
    let report = report?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        let path = dir.join(CRYPTO_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("{}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.write_table(&mut std::io::stdout().lock())?;
    }
    Ok(())
}
