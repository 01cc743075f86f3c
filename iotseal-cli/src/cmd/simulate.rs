//! `iotseal simulate`: a fleet of simulated devices against a running gateway.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use iotseal_device::GatewayPins;
use iotseal_device::sim::{Scenario, SimProgress, Simulation, Summary, TransportKind};

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scenario file (see scenarios/); without it, a mixed fleet.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// The gateway's pins file (gateway.pub.toml).
    #[arg(long, env = "IOTSEAL_PINS")]
    pins: PathBuf,
    /// Gateway URL (default: the URL in the pins file).
    #[arg(long, env = "IOTSEAL_GATEWAY")]
    gateway: Option<String>,
    /// File with the admin token (to register the simulated devices).
    #[arg(long, env = "IOTSEAL_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The admin token itself.
    #[arg(long, env = "IOTSEAL_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Devices per group (overrides the scenario).
    #[arg(long)]
    devices: Option<u32>,
    /// How long the devices send (`20`, `20s`, `500ms`, `2m`; overrides the scenario).
    #[arg(long, value_parser = crate::cmd::duration::parse)]
    duration: Option<Duration>,
    /// Seed (overrides the scenario).
    #[arg(long)]
    seed: Option<u64>,
    /// How devices reach the gateway: http or mqtt (overrides the scenario).
    #[arg(long)]
    transport: Option<TransportKind>,
    /// MQTT broker, mqtt://HOST:PORT or mqtts://HOST:PORT (overrides the scenario; implies
    /// --transport mqtt unless given).
    #[arg(long, env = "IOTSEAL_MQTT")]
    mqtt: Option<String>,
    /// MQTT topic prefix (the gateway's mqtt.topic_prefix).
    #[arg(long)]
    mqtt_prefix: Option<String>,
    /// CA certificates (PEM) of an mqtts:// broker.
    #[arg(long)]
    mqtt_ca: Option<PathBuf>,
    /// Prefix of the device ids (so runs can share a gateway).
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Reads the admin token from the flag, the file or the environment.
pub(crate) fn admin_token(token: Option<String>, file: Option<PathBuf>) -> Result<String> {
    if let Some(t) = token {
        return Ok(t);
    }
    let f = file.ok_or_else(|| {
        anyhow!("admin token needed: --token-file FILE, IOTSEAL_ADMIN_TOKEN or --token")
    })?;
    Ok(std::fs::read_to_string(&f)
        .with_context(|| format!("{}", f.display()))?
        .trim()
        .to_string())
}

pub(crate) fn run(a: Args) -> Result<()> {
    let mut scenario = match &a.scenario {
        Some(p) => Scenario::load(p).map_err(|e| anyhow!("{e}"))?,
        None => Scenario::mixed(4, 20.0, 42),
    };
    if let Some(d) = a.devices {
        for g in &mut scenario.groups {
            g.devices = d;
        }
    }
    if let Some(d) = a.duration {
        scenario.duration_secs = d.as_secs_f64();
    }
    if let Some(s) = a.seed {
        scenario.seed = s;
    }
    if let Some(u) = &a.mqtt {
        scenario.mqtt.broker = u.clone();
        scenario.transport = TransportKind::Mqtt;
    }
    if let Some(t) = a.transport {
        scenario.transport = t;
    }
    if let Some(p) = &a.mqtt_prefix {
        scenario.mqtt.topic_prefix = p.clone();
    }
    if let Some(c) = &a.mqtt_ca {
        scenario.mqtt.ca_file = Some(c.clone());
    }
    scenario.validate().map_err(|e| anyhow!("{e}"))?;
    let mut pins = GatewayPins::load(&a.pins).map_err(|e| anyhow!("{e}"))?;
    if let Some(u) = &a.gateway {
        pins.url = u.clone();
    }
    let token = admin_token(a.token.clone(), a.token_file.clone())?;
    let rt = tokio::runtime::Runtime::new()?;
    let summary = rt.block_on(async {
        let sim = Simulation::new(scenario, pins, &token, &a.prefix).map_err(|e| anyhow!("{e}"))?;
        run_with_progress(&sim, !a.json).await
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    if summary.lost > 0 || summary.duplicates > 0 {
        let refused: Vec<&str> = summary
            .groups
            .iter()
            .filter(|g| g.refusals > 0 && g.stored < g.sent)
            .map(|g| g.name.as_str())
            .collect();
        let hint = if refused.is_empty() {
            String::new()
        } else {
            format!(
                " (refused by the gateway: {}; a device refused with NoCommonSuite or AuthFailed \
                 stops: does the gateway hold an identity key for the group's signature \
                 algorithm and allow its suite? `gateway init` creates one key per algorithm)",
                refused.join(", ")
            )
        };
        return Err(anyhow!(
            "{} readings lost, {} duplicated{hint}",
            summary.lost,
            summary.duplicates
        ));
    }
    Ok(())
}

/// Runs a simulation with a live progress bar (readings/s, errors) on stderr.
pub(crate) async fn run_with_progress(sim: &Simulation, show: bool) -> Result<Summary> {
    let progress = sim.progress();
    let bar = if show {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .expect("template"),
    );
    let ticker = tokio::spawn(tick(progress, bar.clone()));
    let r = sim.run().await.map_err(|e| anyhow!("{e}"));
    ticker.abort();
    bar.finish_and_clear();
    r
}

async fn tick(p: Arc<SimProgress>, bar: indicatif::ProgressBar) {
    let mut last = 0u64;
    let mut iv = tokio::time::interval(Duration::from_millis(500));
    loop {
        iv.tick().await;
        let acked = p.acknowledged.load(Ordering::Relaxed);
        let rate = (acked - last) * 2;
        last = acked;
        bar.set_message(format!(
            "devices {} registered, {} done | readings sent {} acknowledged {} ({rate}/s) | errors {}",
            p.registered.load(Ordering::Relaxed),
            p.finished.load(Ordering::Relaxed),
            p.sent.load(Ordering::Relaxed),
            acked,
            p.errors.load(Ordering::Relaxed),
        ));
        bar.tick();
    }
}

/// The summary table.
pub(crate) fn print_summary(s: &Summary) {
    println!(
        "{:<12} {:<42} {:>7} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>7} {:>8} {:>8}",
        "group",
        "suite",
        "devices",
        "sent",
        "acked",
        "stored",
        "verified",
        "hs",
        "retries",
        "refused",
        "p50 ms",
        "p99 ms"
    );
    for g in &s.groups {
        println!(
            "{:<12} {:<42} {:>7} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>7} {:>8.2} {:>8.2}",
            g.name,
            g.suite,
            g.devices,
            g.sent,
            g.acknowledged,
            g.stored,
            g.verified,
            g.handshakes,
            g.retries,
            g.refusals,
            g.p50_ms,
            g.p99_ms
        );
    }
    println!(
        "\ntotal: {} sent, {} acknowledged, {} stored, {} verified byte for byte, {} lost, {} duplicates; {:.0} readings/s over {:.1} s; ack latency p50 {:.2} ms, p99 {:.2} ms",
        s.readings_sent,
        s.readings_acknowledged,
        s.readings_stored,
        s.readings_verified,
        s.lost,
        s.duplicates,
        s.readings_per_s,
        s.elapsed_secs,
        s.p50_ms,
        s.p99_ms
    );
}
