//! Runs a scenario against a gateway: registers the devices through the admin API, runs them
//! concurrently, then checks that every reading sent is stored byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iotseal_proto::reading::Reading;
use serde::Serialize;

use super::impair::Impaired;
use super::rng::SimRng;
use super::scenario::{Group, Scenario, TransportKind};
use super::sensors::SensorModel;
use crate::admin::AdminClient;
use crate::client::{DeviceClient, DeviceError, DeviceOptions};
use crate::files::{GatewayPins, IdentityFile};
use crate::https::HttpsTransport;
use crate::mqtt::{MqttConfig, MqttTransport};
use crate::transport::Transport;

/// The transport of a simulated device.
type SimTransport = Impaired<Arc<dyn Transport>>;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct SimProgress {
    /// Readings produced.
    pub sent: AtomicU64,
    /// Readings acknowledged.
    pub acknowledged: AtomicU64,
    /// Failed deliveries (refusals and unanswered requests).
    pub errors: AtomicU64,
    /// Devices registered.
    pub registered: AtomicU64,
    /// Devices finished.
    pub finished: AtomicU64,
}

/// Results of one group.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GroupSummary {
    /// Group name.
    pub name: String,
    /// Suite.
    pub suite: String,
    /// Devices.
    pub devices: u32,
    /// Readings sent.
    pub sent: u64,
    /// Readings acknowledged.
    pub acknowledged: u64,
    /// Readings found in storage.
    pub stored: u64,
    /// Stored readings equal byte for byte to what was sent.
    pub verified: u64,
    /// Handshakes.
    pub handshakes: u64,
    /// Retried requests.
    pub retries: u64,
    /// Refusals seen by devices.
    pub refusals: u64,
    /// Acknowledgement latency p50, ms.
    pub p50_ms: f64,
    /// Acknowledgement latency p99, ms.
    pub p99_ms: f64,
}

/// Results of a simulation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Per group.
    pub groups: Vec<GroupSummary>,
    /// Readings sent.
    pub readings_sent: u64,
    /// Readings acknowledged.
    pub readings_acknowledged: u64,
    /// Readings found in storage.
    pub readings_stored: u64,
    /// Stored readings equal to what was sent.
    pub readings_verified: u64,
    /// Sent but not stored.
    pub lost: u64,
    /// Stored more than once (by message id).
    pub duplicates: u64,
    /// Refusals seen by devices.
    pub refusals: u64,
    /// Acknowledgement latency p50, ms (all devices).
    pub p50_ms: f64,
    /// Acknowledgement latency p99, ms.
    pub p99_ms: f64,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Acknowledged readings per second.
    pub readings_per_s: f64,
}

struct DeviceResult {
    group: usize,
    id: String,
    sent: BTreeMap<u64, Vec<u8>>,
    stats: crate::client::DeviceStats,
    pending: usize,
}

/// A simulation ready to run against a gateway.
pub struct Simulation {
    scenario: Scenario,
    pins: GatewayPins,
    admin: AdminClient,
    progress: Arc<SimProgress>,
    prefix: String,
}

impl Simulation {
    /// A simulation of `scenario` against the gateway in `pins`, registering devices with the
    /// admin `token`. Device ids get `prefix` (so several runs can share a gateway).
    pub fn new(
        scenario: Scenario,
        pins: GatewayPins,
        token: &str,
        prefix: &str,
    ) -> Result<Self, Error> {
        scenario.validate()?;
        let admin = AdminClient::new(&pins, token)?;
        Ok(Self {
            scenario,
            pins,
            admin,
            progress: Arc::new(SimProgress::default()),
            prefix: prefix.to_string(),
        })
    }

    /// Live counters.
    pub fn progress(&self) -> Arc<SimProgress> {
        self.progress.clone()
    }

    /// Runs the scenario to the end and verifies storage.
    pub async fn run(&self) -> Result<Summary, Error> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut n = 0u64;
        for (gi, g) in self.scenario.groups.iter().enumerate() {
            for i in 0..g.devices {
                let id = format!("{}{}-{}", self.prefix, g.name, i);
                let provider = match g.provider.as_str() {
                    #[cfg(feature = "aws-lc")]
                    "aws-lc" => iotseal_crypto_awslc::default_provider(),
                    // Without the `aws-lc` feature an aws-lc group runs on RustCrypto too.
                    _ => iotseal_crypto_rustcrypto::default_provider(),
                };
                let identity = IdentityFile::generate(&provider, &id, g.suite.sig)?;
                self.admin
                    .add_device(&id, g.suite.sig, &identity.public_key)
                    .await?;
                self.progress.registered.fetch_add(1, Ordering::Relaxed);
                let cfg = identity.device_config_with(provider, &self.pins, Some(vec![g.suite]))?;
                let inner: Arc<dyn Transport> = match self.scenario.transport {
                    TransportKind::Http => Arc::new(
                        HttpsTransport::new(&self.pins)?.with_timeout(Duration::from_secs(5)),
                    ),
                    TransportKind::Mqtt => {
                        let m = &self.scenario.mqtt;
                        let cfg = MqttConfig {
                            topic_prefix: m.topic_prefix.clone(),
                            ca_file: m.ca_file.clone(),
                            timeout: Duration::from_secs(5),
                            ..MqttConfig::new(&m.broker)
                        };
                        Arc::new(MqttTransport::connect(&cfg).await?)
                    }
                };
                let transport = Impaired::new(
                    inner,
                    self.scenario.network.clone(),
                    self.scenario.seed ^ (n << 20) ^ 0x5eed,
                );
                let opts = DeviceOptions {
                    readings_per_record: g.batch.min(100),
                    records_per_request: g.batch.div_ceil(100).max(1),
                    flush_timeout: Duration::from_secs(30),
                    backoff_max: Duration::from_millis(500),
                    ..DeviceOptions::default()
                };
                let device = DeviceClient::new(cfg, transport, opts);
                let rng = SimRng::new(self.scenario.seed.wrapping_mul(1_000_003).wrapping_add(n));
                let group = g.clone();
                let sc = self.scenario.clone();
                let progress = self.progress.clone();
                tasks.spawn(run_device(gi, id, group, sc, device, rng, progress));
                n += 1;
            }
        }
        let mut results = Vec::new();
        while let Some(r) = tasks.join_next().await {
            results.push(r?);
        }
        self.verify(results, started.elapsed()).await
    }

    async fn verify(
        &self,
        results: Vec<DeviceResult>,
        elapsed: Duration,
    ) -> Result<Summary, Error> {
        let mut groups: Vec<GroupSummary> = self
            .scenario
            .groups
            .iter()
            .map(|g| GroupSummary {
                name: g.name.clone(),
                suite: g.suite.to_string(),
                devices: g.devices,
                ..Default::default()
            })
            .collect();
        let mut hists: Vec<hdrhistogram::Histogram<u64>> = (0..=groups.len())
            .map(|_| hdrhistogram::Histogram::new(3).expect("histogram"))
            .collect();
        let mut s = Summary::default();
        for r in results {
            let stored = self.admin.readings(&r.id).await?;
            let mut by_id: HashMap<u64, usize> = HashMap::new();
            let mut verified = 0u64;
            for row in &stored {
                *by_id.entry(row.msg_id).or_default() += 1;
                if let Some(sent) = r.sent.get(&row.msg_id)
                    && hex::decode(&row.payload_hex).ok().as_deref() == Some(sent.as_slice())
                {
                    verified += 1;
                }
            }
            let dups: u64 = by_id.values().map(|&c| c as u64 - 1).sum();
            let g = &mut groups[r.group];
            g.sent += r.sent.len() as u64;
            g.acknowledged += r.stats.acknowledged;
            g.stored += stored.len() as u64;
            g.verified += verified;
            g.handshakes += r.stats.handshakes;
            g.retries += r.stats.retries;
            g.refusals += r.stats.refusals.values().sum::<u64>();
            s.duplicates += dups;
            for &us in &r.stats.ack_latency_us {
                let _ = hists[r.group].record(us.max(1));
                let _ = hists[groups.len()].record(us.max(1));
            }
            let _ = r.pending;
        }
        for (i, g) in groups.iter_mut().enumerate() {
            g.p50_ms = hists[i].value_at_quantile(0.5) as f64 / 1000.0;
            g.p99_ms = hists[i].value_at_quantile(0.99) as f64 / 1000.0;
            s.readings_sent += g.sent;
            s.readings_acknowledged += g.acknowledged;
            s.readings_stored += g.stored;
            s.readings_verified += g.verified;
            s.refusals += g.refusals;
        }
        let all = &hists[groups.len()];
        s.p50_ms = all.value_at_quantile(0.5) as f64 / 1000.0;
        s.p99_ms = all.value_at_quantile(0.99) as f64 / 1000.0;
        s.lost = s.readings_sent.saturating_sub(s.readings_verified);
        s.elapsed_secs = elapsed.as_secs_f64();
        s.readings_per_s = s.readings_acknowledged as f64 / s.elapsed_secs.max(1e-9);
        s.groups = groups;
        Ok(s)
    }
}

async fn run_device(
    group_index: usize,
    id: String,
    g: Group,
    sc: Scenario,
    mut device: DeviceClient<SimTransport>,
    mut rng: SimRng,
    progress: Arc<SimProgress>,
) -> DeviceResult {
    let mut models: Vec<SensorModel> = g
        .sensors
        .iter()
        .map(|&k| SensorModel::new(k, &mut rng))
        .collect();
    let start = Instant::now();
    let mut produced = 0u64;
    let mut sent = BTreeMap::new();
    let period = Duration::from_secs_f64(1.0 / g.rate_hz);
    // Devices start at random phases so they do not all send at once.
    tokio::time::sleep(period.mul_f64(rng.unit())).await;
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= sc.duration_secs {
            break;
        }
        let due = (elapsed * g.rate_hz) as u64 + 1;
        while produced < due {
            produced += 1;
            let t = produced as f64 / g.rate_hz;
            let mut values = Vec::new();
            for m in &mut models {
                if let Some(v) = m.sample(t, (t * sc.time_lapse) % 86_400.0, &mut rng) {
                    values.extend(v);
                }
            }
            if values.is_empty() {
                continue; // every sensor dropped out
            }
            let extra: Vec<u8> = (0..g.payload_extra).map(|_| rng.next_u64() as u8).collect();
            let now = device.clock().now().0;
            if let Ok(msg_id) = device.push_at(now, values.clone(), extra.clone()) {
                let mut enc = Vec::new();
                Reading {
                    msg_id,
                    time_ms: now,
                    values,
                    extra,
                }
                .encode(&mut enc);
                sent.insert(msg_id, enc);
                progress.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        if device.pending() >= g.batch {
            if rng.chance(sc.network.disconnect) {
                device.drop_session();
            }
            if !flush(&mut device, &progress).await {
                break;
            }
        }
        tokio::time::sleep(period).await;
    }
    // Deliver what is left, however long the impairments make it take (bounded by the
    // flush timeout, retried a few times).
    for _ in 0..4 {
        if device.pending() == 0 {
            break;
        }
        if !flush(&mut device, &progress).await {
            break;
        }
    }
    progress.finished.fetch_add(1, Ordering::Relaxed);
    let pending = device.pending();
    DeviceResult {
        group: group_index,
        id,
        sent,
        stats: device.stats().clone(),
        pending,
    }
}

/// One flush; false when the gateway refused the device for good (the device stops: what it
/// still holds is counted as lost).
async fn flush(device: &mut DeviceClient<SimTransport>, progress: &SimProgress) -> bool {
    let before_errors = device.stats().retries + device.stats().refusals.values().sum::<u64>();
    let r = device.flush().await;
    let after_errors = device.stats().retries + device.stats().refusals.values().sum::<u64>();
    progress
        .errors
        .fetch_add(after_errors - before_errors, Ordering::Relaxed);
    if let Ok(rep) = &r {
        progress
            .acknowledged
            .fetch_add(rep.acknowledged, Ordering::Relaxed);
    } else if let Err(e) = r {
        tracing::warn!("device flush: {e}");
        if matches!(e, DeviceError::Refused { .. }) {
            return false;
        }
    }
    true
}
