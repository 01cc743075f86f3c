//! Prometheus metrics on `prometheus-client`, the Prometheus project's Rust client: one
//! [`Registry`], typed counters, gauges and label sets, rendered in the OpenMetrics text format
//! ([`CONTENT_TYPE`], ending in `# EOF`) by `prometheus_client::encoding::text`.
//!
//! Every name starts with `iotseal_`; counters are registered without the `_total` their
//! samples carry (`iotseal_refusals` → `iotseal_refusals_total{reason="replay"}`). Label sets
//! are bounded: suites, outcomes and refusal reasons come from fixed lists (counted without an
//! allocation), routes from the router's templates, statuses from the HTTP status space, and
//! each family keeps at most [`MAX_LABEL_SETS`] label sets whatever callers pass.
//!
//! The dashboard reads the same metric handles as typed values ([`Metrics::snapshot`]), not
//! the text.

use std::borrow::Cow;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use iotseal_proto::Suite;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of `GET /metrics`: the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Refusal reasons that always appear in `iotseal_refusals_total` (zero until counted).
pub const REFUSAL_REASONS: &[&str] = &[
    "replay",
    "stale",
    "future",
    "tamper",
    "unknown",
    "revoked",
    "policy",
    "malformed",
    "unknown_session",
    "limit",
    "limit_per_ip",
    "oversize",
    "rate_limited",
    "unauthorized",
    "registration",
    "protocol",
    "busy",
    "half_open_per_source",
    "source_unproven",
    "storage",
    "timeout",
];

/// Handshake outcomes besides refusal reasons (`iotseal_handshakes_total{outcome}`).
const HANDSHAKE_OUTCOMES: &[&str] = &[
    "hello",
    "established",
    "retry",
    "retry_address",
    "retransmission",
    "no_partition",
    "api_misuse",
    "none",
];

/// TLS handshake outcomes; each always appears in `iotseal_tls_handshakes_total`.
const TLS_OUTCOMES: &[&str] = &["ok", "failed", "timeout"];

/// The router's route templates (`iotseal_http_requests_total{route}`).
const ROUTES: &[&str] = &[
    "/v1/handshake",
    "/v1/records",
    "/healthz",
    "/metrics",
    "/v1/devices",
    "/v1/devices/{id}",
    "/v1/devices/{id}/revoke",
    "/v1/devices/{id}/readings",
    "/v1/cluster",
    "/v1/openapi.json",
    "other",
];

/// Upper bounds of the `iotseal_storage_commit_seconds` histogram buckets (+Inf follows).
pub const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Most label sets one family keeps (callers pass labels from fixed sets; a cap anyway).
pub const MAX_LABEL_SETS: usize = 4096;

// ---------------------------------------------------------------------------------------
// Label sets

/// A label value: one of a fixed list, borrowed (counting it allocates nothing), or, for a
/// value outside the lists, an owned copy.
type Value = Cow<'static, str>;

fn value(s: &str, known: impl IntoIterator<Item = &'static str>) -> Value {
    known
        .into_iter()
        .find(|k| *k == s)
        .map_or_else(|| Cow::Owned(s.to_owned()), Cow::Borrowed)
}

/// Suite label values: `none` and every suite's name (made once).
fn suites() -> impl Iterator<Item = &'static str> {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| Suite::all().map(|s| s.to_string()).collect());
    ["none"].into_iter().chain(names.iter().map(String::as_str))
}

fn reason_value(reason: &str) -> Value {
    value(reason, REFUSAL_REASONS.iter().copied())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    suite: Value,
    outcome: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Value,
    status: Status,
}

/// An HTTP status label: its code, or `other` for a number outside 100..=999.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Status(Option<StatusCode>);

impl EncodeLabelValue for Status {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.0.as_ref().map_or("other", |s| s.as_str()))
    }
}

/// A counter family that keeps at most [`MAX_LABEL_SETS`] label sets and can list them (the
/// dashboard reads them): prometheus-client's [`Family`] has neither a bound nor iteration.
#[derive(Debug)]
struct Bounded<S> {
    family: Family<S, Counter>,
    /// The family's label sets, in the order they were first counted.
    sets: Mutex<Vec<S>>,
}

impl<S: Clone + Hash + Eq + EncodeLabelSet + fmt::Debug + Send + Sync + 'static> Bounded<S> {
    fn new() -> Self {
        Self {
            family: Family::default(),
            sets: Mutex::new(Vec::new()),
        }
    }

    /// Registers the family under `name`.
    fn register(&self, r: &mut Registry, name: &str, help: &str) {
        r.register(name, help, self.family.clone());
    }

    /// Adds `n` to the counter of `labels`; a new label set beyond the bound is not counted.
    fn inc_by(&self, labels: &S, n: u64) {
        if let Some(c) = self.family.get(labels) {
            c.inc_by(n);
            return;
        }
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if self.family.get(labels).is_none() {
            if sets.len() >= MAX_LABEL_SETS {
                return;
            }
            sets.push(labels.clone());
        }
        self.family.get_or_create(labels).inc_by(n);
    }

    fn get(&self, labels: &S) -> u64 {
        self.family.get(labels).map_or(0, |c| c.get())
    }

    /// Every label set with its count.
    fn values(&self) -> Vec<(S, u64)> {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner()).clone();
        sets.into_iter()
            .map(|s| {
                let v = self.get(&s);
                (s, v)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The commit histogram

/// The storage commit histogram: [`COMMIT_BUCKETS`] on atomics. prometheus-client encodes it
/// like its own histograms; it is ours so that the dashboard can read its buckets
/// (prometheus-client's `Histogram` shows only its sum and count) and observing takes no lock.
#[derive(Clone, Debug)]
struct CommitHistogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    /// Observations per bucket (not cumulative); the last is the +Inf bucket.
    buckets: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl CommitHistogram {
    fn new() -> Self {
        Self(Arc::new(HistogramInner {
            buckets: (0..=COMMIT_BUCKETS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|le| s <= *le)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (upper bound, observations in that bucket), +Inf last; the sum in seconds.
    fn read(&self) -> (Vec<(f64, u64)>, f64) {
        let buckets = COMMIT_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.0.buckets)
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (buckets, sum)
    }
}

impl TypedMetric for CommitHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CommitHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let (buckets, sum) = self.read();
        let count = buckets.iter().map(|b| b.1).sum();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots

/// The metrics' values at one moment, read from the same handles the exposition renders (each
/// value an atomic read; the set as a whole is not one atomic cut).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// `iotseal_records_accepted_total`.
    pub records_accepted: u64,
    /// `iotseal_readings_stored_total`.
    pub readings_stored: u64,
    /// `iotseal_readings_duplicate_total`.
    pub readings_duplicate: u64,
    /// `iotseal_active_sessions`.
    pub active_sessions: u64,
    /// `iotseal_half_open_handshakes`.
    pub half_open: u64,
    /// `iotseal_open_connections`.
    pub open_connections: u64,
    /// `iotseal_refusals_total` by reason, sorted by reason.
    pub refusals: Vec<(String, u64)>,
    /// `iotseal_handshakes_total`: (suite, outcome, count), sorted.
    pub handshakes: Vec<(String, String, u64)>,
    /// `iotseal_tls_handshakes_total` by outcome, sorted.
    pub tls_handshakes: Vec<(String, u64)>,
    /// `iotseal_storage_commit_seconds`.
    pub storage_commit: HistogramSnapshot,
}

impl MetricsSnapshot {
    /// All refusals, whatever the reason.
    pub fn refusals_total(&self) -> u64 {
        self.refusals.iter().map(|r| r.1).sum()
    }
}

/// A histogram's values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts: (upper bound in seconds, observations ≤ it); the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, seconds.
    pub sum_s: f64,
}

impl HistogramSnapshot {
    /// Observations.
    pub fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.1)
    }
}

// ---------------------------------------------------------------------------------------
// Cluster

/// A cluster node's state for one scrape of `GET /metrics` (the cluster fills it); rendered as
/// the `iotseal_cluster_*` families, each series labelled with the node.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClusterMetrics {
    pub(crate) node: String,
    pub(crate) partitions_owned: u64,
    pub(crate) live_nodes: u64,
    pub(crate) forwarded_out: u64,
    pub(crate) forwarded_in: u64,
    pub(crate) no_owner: u64,
    pub(crate) timeouts: u64,
    pub(crate) errors: u64,
    pub(crate) claimed: u64,
    pub(crate) lost: u64,
    pub(crate) mqtt_here: u64,
    pub(crate) mqtt_forwarded: u64,
}

impl Collector for ClusterMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let node = self.node.as_str();
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(m.encode_family(&[("node", node)])?)
        };
        let counters = |enc: &mut DescriptorEncoder,
                        name: &str,
                        help: &str,
                        label: &str,
                        vs: &[(&str, u64)]| {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (l, v) in vs {
                ConstCounter::new(*v).encode(m.encode_family(&[("node", node), (label, l)])?)?;
            }
            Ok::<_, fmt::Error>(())
        };
        gauge(
            &mut enc,
            "iotseal_cluster_partitions_owned",
            "Partitions this node owns.",
            self.partitions_owned,
        )?;
        gauge(
            &mut enc,
            "iotseal_cluster_nodes",
            "Live nodes seen by this node.",
            self.live_nodes,
        )?;
        counters(
            &mut enc,
            "iotseal_cluster_forwarded",
            "Requests forwarded to their owner (out) and served for other nodes (in).",
            "direction",
            &[("out", self.forwarded_out), ("in", self.forwarded_in)],
        )?;
        counters(
            &mut enc,
            "iotseal_cluster_forward_failures",
            "Forwarded requests that got no answer.",
            "reason",
            &[
                ("no_owner", self.no_owner),
                ("timeout", self.timeouts),
                ("error", self.errors),
            ],
        )?;
        counters(
            &mut enc,
            "iotseal_cluster_partition_changes",
            "Partitions claimed and lost by this node.",
            "change",
            &[("claimed", self.claimed), ("lost", self.lost)],
        )?;
        counters(
            &mut enc,
            "iotseal_cluster_mqtt_requests",
            "MQTT requests the broker delivered to this node: processed here or forwarded to their owner.",
            "routed",
            &[("here", self.mqtt_here), ("forwarded", self.mqtt_forwarded)],
        )
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

/// The gateway's metrics: the registry and the handles it renders.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The stored-readings count, for whoever waits for it ([`Metrics::stored_readings`]).
    stored_watch: tokio::sync::watch::Sender<u64>,
    handshakes: Bounded<HandshakeLabels>,
    refusals: Bounded<ReasonLabels>,
    tls_handshakes: Bounded<OutcomeLabels>,
    http_requests: Bounded<RequestLabels>,
    records_accepted: Counter,
    readings_stored: Counter,
    readings_duplicate: Counter,
    acks_sent: Counter,
    replay_acks_suppressed: Counter,
    half_open_evicted: Counter,
    nonces_evicted: Counter,
    audit_dropped: Counter,
    sessions_parked: Counter,
    active_sessions: Gauge<u64, AtomicU64>,
    parked_sessions: Gauge<u64, AtomicU64>,
    half_open: Gauge<u64, AtomicU64>,
    open_connections: Gauge<u64, AtomicU64>,
    storage_commit: CommitHistogram,
    refusal_log: RefusalLog,
}

/// How often at most one reason's refusals are logged.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate-limited warnings for refusals: at most one line per reason per
/// [`REFUSAL_LOG_EVERY`], carrying how many were refused since the last line. Lock-free on
/// the refusal path (a flood refuses at full speed).
#[derive(Debug)]
struct RefusalLog {
    start: std::time::Instant,
    /// Per reason of [`REFUSAL_REASONS`] (and one slot for any other): the time of the last
    /// line (ms since `start`, +1 so 0 means never) and the refusals not yet logged.
    last_ms: Vec<AtomicU64>,
    pending: Vec<AtomicU64>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        let n = REFUSAL_REASONS.len() + 1;
        Self {
            start: std::time::Instant::now(),
            last_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            pending: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What each refusal reason means, for the log line.
fn refusal_hint(reason: &str) -> &'static str {
    match reason {
        "limit" => "connection cap reached (limits.max_connections)",
        "limit_per_ip" => "one address at its connection cap (limits.max_connections_per_ip)",
        "busy" => "a table is full (half-open handshakes, hello nonces) or storage is behind",
        "half_open_per_source" => {
            "one source at its half-open handshake cap (limits.half_open_per_source)"
        }
        "source_unproven" => {
            "under load, retried hellos with a clock or key-share cookie (must start again)"
        }
        "rate_limited" => "per-address handshake rate (limits.handshake_rate_per_ip)",
        "oversize" => "request body over limits.max_body",
        "timeout" => "a client too slow to send its request",
        "unauthorized" => "admin token or dashboard sign-in refused",
        "registration" => "device registration refused (id or public key)",
        "replay" => "replayed hellos or records",
        "stale" | "future" => "timestamps outside the allowed skew or age",
        "tamper" => "messages that failed authentication",
        "unknown" | "revoked" | "policy" => "devices or suites refused at the handshake",
        "malformed" | "protocol" => "messages that did not parse or broke the protocol",
        "unknown_session" => "records for sessions the gateway does not hold",
        "storage" => "storage failed",
        _ => "refused",
    }
}

impl RefusalLog {
    fn note(&self, reason: &str, n: u64) {
        let i = REFUSAL_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REFUSAL_REASONS.len());
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms[i].load(Ordering::Relaxed);
        let every = REFUSAL_LOG_EVERY.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < every {
            self.pending[i].fetch_add(n, Ordering::Relaxed);
            return;
        }
        // One caller per window wins the right to log.
        if self.last_ms[i]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.pending[i].fetch_add(n, Ordering::Relaxed);
            return;
        }
        let count = self.pending[i].swap(0, Ordering::Relaxed) + n;
        tracing::warn!(
            reason,
            count,
            window_secs = if last == 0 { 0 } else { (now - last) / 1000 },
            "refused: {}",
            refusal_hint(reason)
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("iotseal"),
            stored_watch: tokio::sync::watch::Sender::new(0),
            handshakes: Bounded::new(),
            refusals: Bounded::new(),
            tls_handshakes: Bounded::new(),
            http_requests: Bounded::new(),
            records_accepted: Counter::default(),
            readings_stored: Counter::default(),
            readings_duplicate: Counter::default(),
            acks_sent: Counter::default(),
            replay_acks_suppressed: Counter::default(),
            half_open_evicted: Counter::default(),
            nonces_evicted: Counter::default(),
            audit_dropped: Counter::default(),
            sessions_parked: Counter::default(),
            active_sessions: Gauge::default(),
            parked_sessions: Gauge::default(),
            half_open: Gauge::default(),
            open_connections: Gauge::default(),
            storage_commit: CommitHistogram::new(),
            refusal_log: RefusalLog::default(),
        };
        // Names without `iotseal_` (the registry's prefix) and, for counters, without `_total`
        // (the encoding adds it); help texts without the full stop (the registry adds it).
        let r = &mut m.registry;
        m.handshakes.register(
            r,
            "handshakes",
            "Handshake messages handled, by suite and outcome",
        );
        let counters = [
            (
                "records_accepted",
                "Records authenticated, stored and marked in their session's window",
                &m.records_accepted,
            ),
            (
                "readings_stored",
                "Readings written to storage",
                &m.readings_stored,
            ),
            (
                "readings_duplicate",
                "Readings already stored (same device and message id)",
                &m.readings_duplicate,
            ),
            ("acks_sent", "Acknowledgement records sealed", &m.acks_sent),
            (
                "replay_acks_suppressed",
                "Replays not answered with an acknowledgement (per-session rate bound)",
                &m.replay_acks_suppressed,
            ),
            (
                "audit_events_dropped",
                "Session audit events dropped: the audit queue (limits.audit_queue) was full",
                &m.audit_dropped,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        m.refusals
            .register(r, "refusals", "Refused messages and records, by reason");
        r.register(
            "active_sessions",
            "Established sessions in memory",
            m.active_sessions.clone(),
        );
        r.register(
            "parked_sessions",
            "Established sessions parked at the last sweep (idle, key objects dropped)",
            m.parked_sessions.clone(),
        );
        r.register(
            "sessions_parked",
            "Times an idle session was parked (its key objects dropped)",
            m.sessions_parked.clone(),
        );
        r.register(
            "half_open_handshakes",
            "Handshakes waiting for M3",
            m.half_open.clone(),
        );
        r.register(
            "half_open_evictions",
            "Half-open handshakes evicted from a full table by a hello from a source holding fewer",
            m.half_open_evicted.clone(),
        );
        r.register(
            "nonce_evictions",
            "Hello nonces evicted from a full nonce cache by a hello from a source holding fewer",
            m.nonces_evicted.clone(),
        );
        r.register(
            "open_connections",
            "Open client connections",
            m.open_connections.clone(),
        );
        r.register_with_unit(
            "storage_commit",
            "Time to store one request's readings durably",
            Unit::Seconds,
            m.storage_commit.clone(),
        );
        m.tls_handshakes
            .register(r, "tls_handshakes", "TLS handshakes, by outcome");
        m.http_requests
            .register(r, "http_requests", "HTTP responses, by route and status");
        for reason in REFUSAL_REASONS {
            m.refusals.inc_by(
                &ReasonLabels {
                    reason: Cow::Borrowed(reason),
                },
                0,
            );
        }
        for outcome in TLS_OUTCOMES {
            m.tls_handshakes.inc_by(
                &OutcomeLabels {
                    outcome: Cow::Borrowed(outcome),
                },
                0,
            );
        }
        m
    }
}

impl Metrics {
    /// Counts a handshake step outcome (`established`, `retry`, or a refusal reason).
    pub fn handshake(&self, suite: &str, outcome: &str) {
        let labels = HandshakeLabels {
            suite: value(suite, suites()),
            outcome: value(
                outcome,
                HANDSHAKE_OUTCOMES.iter().chain(REFUSAL_REASONS).copied(),
            ),
        };
        self.handshakes.inc_by(&labels, 1);
    }

    /// Counts a refusal by reason (see [`REFUSAL_REASONS`]).
    pub fn refusal(&self, reason: &str) {
        self.refusals_n(reason, 1);
    }

    /// Counts `n` refusals by reason, and logs them (a warning per reason at most every
    /// [`REFUSAL_LOG_EVERY`], with the count since the last one).
    pub fn refusals_n(&self, reason: &str, n: u64) {
        if n > 0 {
            self.refusals.inc_by(
                &ReasonLabels {
                    reason: reason_value(reason),
                },
                n,
            );
            self.refusal_log.note(reason, n);
        }
    }

    /// The refusal count of one reason.
    pub fn refusals(&self, reason: &str) -> u64 {
        self.refusals.get(&ReasonLabels {
            reason: reason_value(reason),
        })
    }

    /// Counts a TLS handshake (`ok`, `failed`, `timeout`).
    pub fn tls_handshake(&self, outcome: &str) {
        let labels = OutcomeLabels {
            outcome: value(outcome, TLS_OUTCOMES.iter().copied()),
        };
        self.tls_handshakes.inc_by(&labels, 1);
    }

    /// Counts an HTTP response.
    pub fn http_request(&self, route: &str, status: u16) {
        let labels = RequestLabels {
            route: value(route, ROUTES.iter().copied()),
            status: Status(StatusCode::from_u16(status).ok()),
        };
        self.http_requests.inc_by(&labels, 1);
    }

    /// Counts accepted records.
    pub fn records_accepted(&self, n: u64) {
        self.records_accepted.inc_by(n);
    }

    /// Accepted records so far.
    pub fn records_accepted_total(&self) -> u64 {
        self.records_accepted.get()
    }

    /// Counts stored and duplicate readings.
    pub fn readings(&self, stored: u64, duplicate: u64) {
        self.readings_stored.inc_by(stored);
        self.readings_duplicate.inc_by(duplicate);
        // Only while someone waits (an atomic read otherwise).
        if stored > 0 && self.stored_watch.receiver_count() > 0 {
            self.stored_watch.send_replace(self.readings_stored.get());
        }
    }

    /// The number of readings stored by this gateway so far, updated after each commit:
    /// `wait_for(|n| *n >= k)` on it instead of waiting for time to pass.
    pub fn stored_readings(&self) -> tokio::sync::watch::Receiver<u64> {
        let rx = self.stored_watch.subscribe();
        self.stored_watch.send_replace(self.readings_stored.get());
        rx
    }

    /// Counts a session audit event dropped because the audit queue was full.
    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    /// Counts an acknowledgement sealed.
    pub fn ack_sent(&self) {
        self.acks_sent.inc();
    }

    /// Counts an acknowledgement not sent because a session's replay-ack budget was spent.
    pub fn replay_ack_suppressed(&self) {
        self.replay_acks_suppressed.inc();
    }

    /// Counts half-open handshakes evicted from a full table (docs/protocol.md §7.3 step 9).
    pub fn half_open_evicted(&self, n: u64) {
        self.half_open_evicted.inc_by(n);
    }

    /// Counts hello nonces evicted from a full nonce cache (docs/protocol.md §7.3 step 8).
    pub fn nonces_evicted(&self, n: u64) {
        self.nonces_evicted.inc_by(n);
    }

    /// Sets the live session gauge.
    pub fn set_active_sessions(&self, n: usize) {
        self.active_sessions.set(n as u64);
    }

    /// Sessions parked (key objects dropped) as the last sweep left them, and how many it
    /// newly parked.
    pub fn set_parked_sessions(&self, parked: usize, newly: usize) {
        self.parked_sessions.set(parked as u64);
        self.sessions_parked.inc_by(newly as u64);
    }

    /// Sets the half-open handshake gauge.
    pub fn set_half_open(&self, n: usize) {
        self.half_open.set(n as u64);
    }

    /// Connection gauge: one more.
    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    /// Connection gauge: one less.
    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// Records a storage commit's duration.
    pub fn storage_commit(&self, d: Duration) {
        self.storage_commit.observe(d);
    }

    /// The values of every metric, typed (what the dashboard shows).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut refusals: Vec<(String, u64)> = self
            .refusals
            .values()
            .into_iter()
            .map(|(l, n)| (l.reason.into_owned(), n))
            .collect();
        refusals.sort();
        let mut handshakes: Vec<(String, String, u64)> = self
            .handshakes
            .values()
            .into_iter()
            .map(|(l, n)| (l.suite.into_owned(), l.outcome.into_owned(), n))
            .collect();
        handshakes.sort();
        let mut tls_handshakes: Vec<(String, u64)> = self
            .tls_handshakes
            .values()
            .into_iter()
            .map(|(l, n)| (l.outcome.into_owned(), n))
            .collect();
        tls_handshakes.sort();
        let (per_bucket, sum_s) = self.storage_commit.read();
        let buckets = per_bucket
            .iter()
            .scan(0, |cum, &(le, n)| {
                *cum += n;
                Some((le, *cum))
            })
            .collect();
        MetricsSnapshot {
            records_accepted: self.records_accepted.get(),
            readings_stored: self.readings_stored.get(),
            readings_duplicate: self.readings_duplicate.get(),
            active_sessions: self.active_sessions.get(),
            half_open: self.half_open.get(),
            open_connections: self.open_connections.get(),
            refusals,
            handshakes,
            tls_handshakes,
            storage_commit: HistogramSnapshot { buckets, sum_s },
        }
    }

    /// The exposition: OpenMetrics text ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        self.render_with(None)
    }

    /// The exposition with, in cluster mode, the cluster's families before the `# EOF`.
    pub(crate) fn render_with(&self, cluster: Option<ClusterMetrics>) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(8192);
        // Writing into a String fails only if a metric's encoding does, and none of ours do.
        let _ = encode_registry(&mut out, &self.registry);
        if let Some(c) = cluster {
            let mut r = Registry::default();
            r.register_collector(Box::new(c));
            let _ = encode_registry(&mut out, &r);
        }
        let _ = encode_eof(&mut out);
        out
    }
}

#[cfg(test)]
mod refusal_log_tests {
    use super::*;

    /// The first refusal of a reason is logged at once, the rest of its window only counted;
    /// another reason has its own window.
    #[test]
    fn refusals_are_logged_at_most_once_per_window_per_reason() {
        // A log whose clock started a minute ago (no sleeping: the window is moved by hand).
        let log = RefusalLog {
            start: std::time::Instant::now()
                .checked_sub(Duration::from_secs(60))
                .unwrap(),
            ..RefusalLog::default()
        };
        let i = REFUSAL_REASONS.iter().position(|r| *r == "busy").unwrap();
        let j = REFUSAL_REASONS.iter().position(|r| *r == "limit").unwrap();
        log.note("busy", 1);
        let first = log.last_ms[i].load(Ordering::Relaxed);
        assert!(first >= 60_000);
        for _ in 0..1000 {
            log.note("busy", 2);
        }
        assert_eq!(
            log.last_ms[i].load(Ordering::Relaxed),
            first,
            "no second line"
        );
        assert_eq!(
            log.pending[i].load(Ordering::Relaxed),
            2000,
            "held for the next line"
        );
        log.note("limit", 5);
        assert_ne!(log.last_ms[j].load(Ordering::Relaxed), 0);
        assert_eq!(
            log.pending[j].load(Ordering::Relaxed),
            0,
            "logged, not held"
        );
        // The last line a window ago: the next refusal logs (and clears) the held count.
        log.last_ms[i].store(
            first - REFUSAL_LOG_EVERY.as_millis() as u64,
            Ordering::Relaxed,
        );
        log.note("busy", 1);
        assert_eq!(log.pending[i].load(Ordering::Relaxed), 0);
        assert!(log.last_ms[i].load(Ordering::Relaxed) >= first);
        // Unknown reasons share one slot and never panic.
        log.note("something-else", 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each family renders under its documented name, labels and values, in OpenMetrics text.
    #[test]
    fn renders_every_family() {
        let m = Metrics::default();
        m.handshake("x25519/ed25519/aes256gcm", "established");
        m.handshake("none", "retry_address");
        m.refusal("replay");
        m.refusals_n("malformed", 3);
        m.tls_handshake("ok");
        m.http_request("/healthz", 200);
        m.http_request("/v1/records", 1000);
        m.records_accepted(4);
        m.readings(7, 2);
        m.ack_sent();
        m.replay_ack_suppressed();
        m.audit_dropped();
        m.half_open_evicted(5);
        m.nonces_evicted(6);
        m.set_active_sessions(3);
        m.set_parked_sessions(2, 9);
        m.set_half_open(8);
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.storage_commit(Duration::from_millis(3));
        let t = m.render();
        for line in [
            "# TYPE iotseal_handshakes counter",
            "iotseal_handshakes_total{suite=\"x25519/ed25519/aes256gcm\",outcome=\"established\"} 1",
            "iotseal_handshakes_total{suite=\"none\",outcome=\"retry_address\"} 1",
            "# HELP iotseal_refusals Refused messages and records, by reason.",
            "iotseal_refusals_total{reason=\"replay\"} 1",
            "iotseal_refusals_total{reason=\"malformed\"} 3",
            "iotseal_refusals_total{reason=\"tamper\"} 0",
            "iotseal_tls_handshakes_total{outcome=\"ok\"} 1",
            "iotseal_tls_handshakes_total{outcome=\"timeout\"} 0",
            "iotseal_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
            "iotseal_http_requests_total{route=\"/v1/records\",status=\"other\"} 1",
            "iotseal_records_accepted_total 4",
            "iotseal_readings_stored_total 7",
            "iotseal_readings_duplicate_total 2",
            "iotseal_acks_sent_total 1",
            "iotseal_replay_acks_suppressed_total 1",
            "iotseal_audit_events_dropped_total 1",
            "iotseal_half_open_evictions_total 5",
            "iotseal_nonce_evictions_total 6",
            "# TYPE iotseal_active_sessions gauge",
            "iotseal_active_sessions 3",
            "iotseal_parked_sessions 2",
            "iotseal_sessions_parked_total 9",
            "iotseal_half_open_handshakes 8",
            "iotseal_open_connections 1",
            "# TYPE iotseal_storage_commit_seconds histogram",
            "# UNIT iotseal_storage_commit_seconds seconds",
            "iotseal_storage_commit_seconds_bucket{le=\"0.0025\"} 0",
            "iotseal_storage_commit_seconds_bucket{le=\"0.005\"} 1",
            "iotseal_storage_commit_seconds_bucket{le=\"+Inf\"} 1",
            "iotseal_storage_commit_seconds_count 1",
            "iotseal_storage_commit_seconds_sum 0.003",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line} in\n{t}");
        }
        for reason in REFUSAL_REASONS {
            let line = format!("iotseal_refusals_total{{reason=\"{reason}\"}} ");
            assert!(t.contains(&line), "missing {line}");
        }
        // Every bucket bound, in order, then +Inf.
        let les: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("iotseal_storage_commit_seconds_bucket{le=\""))
            .filter_map(|l| l.split('"').next())
            .collect();
        let want: Vec<String> = COMMIT_BUCKETS
            .iter()
            .map(|b| format!("{b:?}"))
            .chain(["+Inf".to_string()])
            .collect();
        assert_eq!(les, want);
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(!t.contains(".."), "help texts end in one full stop");
        assert!(
            t.lines()
                .all(|l| l.starts_with('#') || l.starts_with("iotseal_")),
            "{t}"
        );
    }

    /// The cluster's families come before the `# EOF`, each series labelled with the node.
    #[test]
    fn renders_the_cluster_families() {
        let m = Metrics::default();
        let c = ClusterMetrics {
            node: "node-1".into(),
            partitions_owned: 12,
            live_nodes: 3,
            forwarded_out: 1,
            forwarded_in: 2,
            no_owner: 3,
            timeouts: 4,
            errors: 5,
            claimed: 6,
            lost: 7,
            mqtt_here: 8,
            mqtt_forwarded: 9,
        };
        let t = m.render_with(Some(c));
        for line in [
            "# TYPE iotseal_cluster_partitions_owned gauge",
            "iotseal_cluster_partitions_owned{node=\"node-1\"} 12",
            "iotseal_cluster_nodes{node=\"node-1\"} 3",
            "# TYPE iotseal_cluster_forwarded counter",
            "iotseal_cluster_forwarded_total{node=\"node-1\",direction=\"out\"} 1",
            "iotseal_cluster_forwarded_total{node=\"node-1\",direction=\"in\"} 2",
            "iotseal_cluster_forward_failures_total{node=\"node-1\",reason=\"no_owner\"} 3",
            "iotseal_cluster_forward_failures_total{node=\"node-1\",reason=\"timeout\"} 4",
            "iotseal_cluster_forward_failures_total{node=\"node-1\",reason=\"error\"} 5",
            "iotseal_cluster_partition_changes_total{node=\"node-1\",change=\"claimed\"} 6",
            "iotseal_cluster_partition_changes_total{node=\"node-1\",change=\"lost\"} 7",
            "iotseal_cluster_mqtt_requests_total{node=\"node-1\",routed=\"here\"} 8",
            "iotseal_cluster_mqtt_requests_total{node=\"node-1\",routed=\"forwarded\"} 9",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line} in\n{t}");
        }
        assert_eq!(t.matches("# EOF").count(), 1);
        assert!(t.ends_with("# EOF\n"));
    }

    /// Label values are escaped as the text format wants (`\\`, `\"`, `\n`).
    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.refusal("odd\"reason\\\n");
        assert!(
            m.render()
                .contains("iotseal_refusals_total{reason=\"odd\\\"reason\\\\\\n\"} 1"),
            "{}",
            m.render()
        );
    }

    /// A family keeps at most [`MAX_LABEL_SETS`] label sets: new ones beyond are not counted
    /// (memory stays bounded), existing ones still are.
    #[test]
    fn label_sets_are_bounded() {
        let f: Bounded<ReasonLabels> = Bounded::new();
        let label = |s: &str| ReasonLabels {
            reason: Cow::Owned(s.to_string()),
        };
        for i in 0..MAX_LABEL_SETS + 10 {
            f.inc_by(&label(&format!("s{i}")), 1);
        }
        assert_eq!(f.values().len(), MAX_LABEL_SETS);
        assert_eq!(f.get(&label(&format!("s{}", MAX_LABEL_SETS + 5))), 0);
        f.inc_by(&label("s0"), 2);
        assert_eq!(f.get(&label("s0")), 3);
    }

    /// Known label values are borrowed (counting them allocates nothing); others are copied.
    #[test]
    fn known_label_values_are_borrowed() {
        assert!(matches!(reason_value("busy"), Cow::Borrowed("busy")));
        assert!(matches!(
            value("/metrics", ROUTES.iter().copied()),
            Cow::Borrowed("/metrics")
        ));
        assert!(matches!(reason_value("api_misuse"), Cow::Owned(_)));
        let suite = Suite::DEFAULT.to_string();
        assert!(matches!(value(&suite, suites()), Cow::Borrowed(_)));
        assert!(matches!(value("none", suites()), Cow::Borrowed("none")));
    }

    /// The snapshot (the dashboard's reads) equals the counters after known increments.
    #[test]
    fn snapshot_equals_the_counters() {
        let m = Metrics::default();
        m.handshake("x25519/ed25519/aes256gcm", "established");
        m.handshake("x25519/ed25519/aes256gcm", "established");
        m.handshake("none", "tamper");
        m.refusal("replay");
        m.refusals_n("malformed", 3);
        m.refusals_n("busy", 0);
        m.tls_handshake("failed");
        m.records_accepted(5);
        m.readings(7, 1);
        m.set_active_sessions(2);
        m.set_half_open(4);
        m.connection_opened();
        m.storage_commit(Duration::from_micros(700));
        m.storage_commit(Duration::from_millis(3));
        m.storage_commit(Duration::from_secs(9));
        let s = m.snapshot();
        assert_eq!(s.records_accepted, 5);
        assert_eq!(s.records_accepted, m.records_accepted_total());
        assert_eq!(s.readings_stored, 7);
        assert_eq!(s.readings_duplicate, 1);
        assert_eq!(s.active_sessions, 2);
        assert_eq!(s.half_open, 4);
        assert_eq!(s.open_connections, 1);
        assert_eq!(s.refusals.len(), REFUSAL_REASONS.len());
        for (reason, n) in &s.refusals {
            assert_eq!(*n, m.refusals(reason), "{reason}");
        }
        assert_eq!(s.refusals_total(), 4);
        assert_eq!(
            s.handshakes,
            vec![
                ("none".into(), "tamper".into(), 1),
                ("x25519/ed25519/aes256gcm".into(), "established".into(), 2),
            ]
        );
        assert_eq!(
            s.tls_handshakes,
            vec![
                ("failed".into(), 1),
                ("ok".into(), 0),
                ("timeout".into(), 0)
            ]
        );
        let h = &s.storage_commit;
        assert_eq!(h.buckets.len(), COMMIT_BUCKETS.len() + 1);
        assert_eq!(h.buckets[0], (0.0005, 0));
        assert_eq!(h.buckets[1], (0.001, 1));
        assert_eq!(h.buckets[3], (0.005, 2));
        assert_eq!(h.buckets[COMMIT_BUCKETS.len() - 1], (5.0, 2));
        assert_eq!(h.buckets.last(), Some(&(f64::INFINITY, 3)));
        assert_eq!(h.count(), 3);
        assert!((h.sum_s - 9.0037).abs() < 1e-9, "{}", h.sum_s);
        // The rendered text says the same.
        let t = m.render();
        assert!(t.contains("iotseal_storage_commit_seconds_count 3\n"));
        assert!(t.contains("iotseal_storage_commit_seconds_bucket{le=\"5.0\"} 2\n"));
        assert!(t.contains("iotseal_readings_stored_total 7\n"));
    }
}
