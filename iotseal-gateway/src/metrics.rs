//! Prometheus metrics, hand-rolled on atomics (text exposition format 0.0.4).
//!
//! Every name starts with `iotseal_`. Label sets are bounded: suites and refusal reasons come
//! from fixed lists, routes from the router's templates, statuses from the HTTP status space.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// Upper bounds of the `storage_commit_seconds` histogram buckets.
const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Most label sets one family keeps (callers pass labels from fixed sets; a cap anyway).
const MAX_LABEL_SETS: usize = 4096;

/// A counter family with one label set per key. Counting an existing label set allocates
/// nothing (it runs on every request): label sets are found by a hash of the borrowed labels.
#[derive(Debug, Default)]
struct Family(Mutex<FamilyMap>);

#[derive(Debug, Default)]
struct FamilyMap {
    by_hash: HashMap<u64, Vec<(Vec<String>, u64)>>,
    len: usize,
}

fn hash_labels(labels: &[&str]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    labels.hash(&mut h);
    h.finish()
}

fn same(key: &[String], labels: &[&str]) -> bool {
    key.len() == labels.len() && key.iter().zip(labels).all(|(a, b)| a == b)
}

impl Family {
    fn inc(&self, labels: &[&str], by: u64) {
        let h = hash_labels(labels);
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let full = m.len >= MAX_LABEL_SETS;
        let bucket = m.by_hash.entry(h).or_default();
        if let Some((_, v)) = bucket.iter_mut().find(|(k, _)| same(k, labels)) {
            *v += by;
            return;
        }
        if full {
            return;
        }
        bucket.push((to_key(labels), by));
        m.len += 1;
    }

    fn get(&self, labels: &[&str]) -> u64 {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.by_hash
            .get(&hash_labels(labels))
            .and_then(|b| b.iter().find(|(k, _)| same(k, labels)))
            .map_or(0, |(_, v)| *v)
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let sorted: BTreeMap<Vec<String>, u64> = {
            let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
            m.by_hash.values().flatten().cloned().collect()
        };
        for (labels, v) in &sorted {
            let _ = write!(out, "{name}{{");
            for (i, (n, l)) in label_names.iter().zip(labels).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{n}=\"{}\"", escape(l));
            }
            let _ = writeln!(out, "}} {v}");
        }
    }
}

fn to_key(labels: &[&str]) -> Vec<String> {
    labels.iter().map(|s| (*s).to_string()).collect()
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A histogram with fixed buckets (seconds).
#[derive(Debug)]
struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: COMMIT_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, le) in self.buckets.iter().zip(COMMIT_BUCKETS) {
            if s <= *le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, le) in self.buckets.iter().zip(COMMIT_BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    handshakes: Family,
    refusals: Family,
    tls_handshakes: Family,
    http_requests: Family,
    records_accepted: AtomicU64,
    readings_stored: AtomicU64,
    readings_duplicate: AtomicU64,
    acks_sent: AtomicU64,
    replay_acks_suppressed: AtomicU64,
    half_open_evicted: AtomicU64,
    nonces_evicted: AtomicU64,
    audit_dropped: AtomicU64,
    active_sessions: AtomicU64,
    parked_sessions: AtomicU64,
    sessions_parked: AtomicU64,
    half_open: AtomicU64,
    open_connections: AtomicU64,
    storage_commit: Histogram,
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
        let m = Self {
            handshakes: Family::default(),
            refusals: Family::default(),
            tls_handshakes: Family::default(),
            http_requests: Family::default(),
            records_accepted: AtomicU64::new(0),
            readings_stored: AtomicU64::new(0),
            readings_duplicate: AtomicU64::new(0),
            acks_sent: AtomicU64::new(0),
            replay_acks_suppressed: AtomicU64::new(0),
            half_open_evicted: AtomicU64::new(0),
            nonces_evicted: AtomicU64::new(0),
            audit_dropped: AtomicU64::new(0),
            active_sessions: AtomicU64::new(0),
            parked_sessions: AtomicU64::new(0),
            sessions_parked: AtomicU64::new(0),
            half_open: AtomicU64::new(0),
            open_connections: AtomicU64::new(0),
            storage_commit: Histogram::new(),
            refusal_log: RefusalLog::default(),
        };
        for r in REFUSAL_REASONS {
            m.refusals.inc(&[r], 0);
        }
        for o in ["ok", "failed", "timeout"] {
            m.tls_handshakes.inc(&[o], 0);
        }
        m
    }
}

impl Metrics {
    /// Counts a handshake step outcome (`established`, `retry`, or a refusal reason).
    pub fn handshake(&self, suite: &str, outcome: &str) {
        self.handshakes.inc(&[suite, outcome], 1);
    }

    /// Counts a refusal by reason (see [`REFUSAL_REASONS`]).
    pub fn refusal(&self, reason: &str) {
        self.refusals_n(reason, 1);
    }

    /// Counts `n` refusals by reason, and logs them (a warning per reason at most every
    /// [`REFUSAL_LOG_EVERY`], with the count since the last one).
    pub fn refusals_n(&self, reason: &str, n: u64) {
        if n > 0 {
            self.refusals.inc(&[reason], n);
            self.refusal_log.note(reason, n);
        }
    }

    /// The refusal count of one reason.
    pub fn refusals(&self, reason: &str) -> u64 {
        self.refusals.get(&[reason])
    }

    /// Counts a TLS handshake (`ok`, `failed`, `timeout`).
    pub fn tls_handshake(&self, outcome: &str) {
        self.tls_handshakes.inc(&[outcome], 1);
    }

    /// Counts an HTTP response.
    pub fn http_request(&self, route: &str, status: u16) {
        // Valid codes have a static text form; anything else is counted under "other".
        let code = axum::http::StatusCode::from_u16(status).ok();
        let text = code.as_ref().map_or("other", |s| s.as_str());
        self.http_requests.inc(&[route, text], 1);
    }

    /// Counts accepted records.
    pub fn records_accepted(&self, n: u64) {
        self.records_accepted.fetch_add(n, Ordering::Relaxed);
    }

    /// Accepted records so far.
    pub fn records_accepted_total(&self) -> u64 {
        self.records_accepted.load(Ordering::Relaxed)
    }

    /// Counts stored and duplicate readings.
    pub fn readings(&self, stored: u64, duplicate: u64) {
        self.readings_stored.fetch_add(stored, Ordering::Relaxed);
        self.readings_duplicate
            .fetch_add(duplicate, Ordering::Relaxed);
    }

    /// Counts a session audit event dropped because the audit queue was full.
    pub fn audit_dropped(&self) {
        self.audit_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an acknowledgement sealed.
    pub fn ack_sent(&self) {
        self.acks_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an acknowledgement not sent because a session's replay-ack budget was spent.
    pub fn replay_ack_suppressed(&self) {
        self.replay_acks_suppressed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts half-open handshakes evicted from a full table (docs/protocol.md §7.3 step 9).
    pub fn half_open_evicted(&self, n: u64) {
        self.half_open_evicted.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts hello nonces evicted from a full nonce cache (docs/protocol.md §7.3 step 8).
    pub fn nonces_evicted(&self, n: u64) {
        self.nonces_evicted.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the live session gauge.
    pub fn set_active_sessions(&self, n: usize) {
        self.active_sessions.store(n as u64, Ordering::Relaxed);
    }

    /// Sessions parked (key objects dropped) as the last sweep left them, and how many it
    /// newly parked.
    pub fn set_parked_sessions(&self, parked: usize, newly: usize) {
        self.parked_sessions.store(parked as u64, Ordering::Relaxed);
        self.sessions_parked
            .fetch_add(newly as u64, Ordering::Relaxed);
    }

    /// Sets the half-open handshake gauge.
    pub fn set_half_open(&self, n: usize) {
        self.half_open.store(n as u64, Ordering::Relaxed);
    }

    /// Connection gauge: one more.
    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Connection gauge: one less.
    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records a storage commit's duration.
    pub fn storage_commit(&self, d: Duration) {
        self.storage_commit.observe(d);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.handshakes.render(
            &mut out,
            "iotseal_handshakes_total",
            "Handshake messages handled, by suite and outcome.",
            &["suite", "outcome"],
        );
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "iotseal_records_accepted_total",
            "Records authenticated, stored and marked in their session's window.",
            &self.records_accepted,
        );
        counter(
            &mut out,
            "iotseal_readings_stored_total",
            "Readings written to storage.",
            &self.readings_stored,
        );
        counter(
            &mut out,
            "iotseal_readings_duplicate_total",
            "Readings already stored (same device and message id).",
            &self.readings_duplicate,
        );
        counter(
            &mut out,
            "iotseal_acks_sent_total",
            "Acknowledgement records sealed.",
            &self.acks_sent,
        );
        counter(
            &mut out,
            "iotseal_replay_acks_suppressed_total",
            "Replays not answered with an acknowledgement (per-session rate bound).",
            &self.replay_acks_suppressed,
        );
        counter(
            &mut out,
            "iotseal_audit_events_dropped_total",
            "Session audit events dropped: the audit queue (limits.audit_queue) was full.",
            &self.audit_dropped,
        );
        self.refusals.render(
            &mut out,
            "iotseal_refusals_total",
            "Refused messages and records, by reason.",
            &["reason"],
        );
        gauge(
            &mut out,
            "iotseal_active_sessions",
            "Established sessions in memory.",
            &self.active_sessions,
        );
        gauge(
            &mut out,
            "iotseal_parked_sessions",
            "Established sessions parked at the last sweep (idle, key objects dropped).",
            &self.parked_sessions,
        );
        counter(
            &mut out,
            "iotseal_sessions_parked_total",
            "Times an idle session was parked (its key objects dropped).",
            &self.sessions_parked,
        );
        gauge(
            &mut out,
            "iotseal_half_open_handshakes",
            "Handshakes waiting for M3.",
            &self.half_open,
        );
        counter(
            &mut out,
            "iotseal_half_open_evictions_total",
            "Half-open handshakes evicted from a full table by a hello from a source holding fewer.",
            &self.half_open_evicted,
        );
        counter(
            &mut out,
            "iotseal_nonce_evictions_total",
            "Hello nonces evicted from a full nonce cache by a hello from a source holding fewer.",
            &self.nonces_evicted,
        );
        gauge(
            &mut out,
            "iotseal_open_connections",
            "Open client connections.",
            &self.open_connections,
        );
        self.storage_commit.render(
            &mut out,
            "iotseal_storage_commit_seconds",
            "Time to store one request's readings durably.",
        );
        self.tls_handshakes.render(
            &mut out,
            "iotseal_tls_handshakes_total",
            "TLS handshakes, by outcome.",
            &["outcome"],
        );
        self.http_requests.render(
            &mut out,
            "iotseal_http_requests_total",
            "HTTP responses, by route and status.",
            &["route", "status"],
        );
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

    #[test]
    fn renders_every_family() {
        let m = Metrics::default();
        m.handshake("x25519/ed25519/aes256gcm", "established");
        m.refusal("replay");
        m.http_request("/healthz", 200);
        m.storage_commit(Duration::from_millis(3));
        let t = m.render();
        for name in [
            "iotseal_handshakes_total{suite=\"x25519/ed25519/aes256gcm\",outcome=\"established\"} 1",
            "iotseal_refusals_total{reason=\"replay\"} 1",
            "iotseal_refusals_total{reason=\"tamper\"} 0",
            "iotseal_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
            "iotseal_storage_commit_seconds_bucket{le=\"0.005\"} 1",
            "iotseal_storage_commit_seconds_count 1",
            "iotseal_active_sessions 0",
            "iotseal_tls_handshakes_total{outcome=\"ok\"} 0",
        ] {
            assert!(t.contains(name), "missing {name} in\n{t}");
        }
    }

    /// A family keeps at most `MAX_LABEL_SETS` label sets: new ones beyond are not counted
    /// (memory stays bounded), existing ones still are.
    #[test]
    fn label_sets_are_bounded() {
        let f = Family::default();
        let names: Vec<String> = (0..MAX_LABEL_SETS + 10).map(|i| format!("s{i}")).collect();
        for n in &names {
            f.inc(&[n, "x"], 1);
        }
        assert_eq!(f.0.lock().unwrap().len, MAX_LABEL_SETS);
        assert_eq!(f.get(&[&names[MAX_LABEL_SETS + 5], "x"]), 0);
        f.inc(&[&names[0], "x"], 2);
        assert_eq!(f.get(&[&names[0], "x"]), 3);
        let mut out = String::new();
        f.render(&mut out, "n", "h", &["a", "b"]);
        assert_eq!(
            out.lines().filter(|l| l.starts_with("n{")).count(),
            MAX_LABEL_SETS
        );
    }
}
