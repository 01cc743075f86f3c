//! The gateway's settings (`gateway.toml`): every field has a default, relative paths are
//! resolved against the directory of the configuration file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use iotseal_proto::Suite;
use iotseal_proto::handshake::SuitePolicy;
use iotseal_proto::record::SessionConfig;
use serde::{Deserialize, Serialize};

use crate::GatewayError;

/// Everything the gateway can be told. See [`Settings::commented_toml`] for the meaning of
/// each field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory for data files (relative to the configuration file's directory).
    pub data_dir: PathBuf,
    /// Storage: `sqlite:PATH` (relative to `data_dir`), `postgres://USER@HOST:PORT/DB` or
    /// `memory:` (volatile, for tests).
    pub storage: String,
    /// When a commit counts as durable (and its readings may be acknowledged).
    pub storage_sync: StorageSync,
    /// Serve plain HTTP instead of TLS (only behind a TLS-terminating proxy).
    pub plain_http: bool,
    /// Every connection starts with a PROXY protocol v2 header (from a layer-4 proxy such as
    /// HAProxy with `send-proxy-v2`), whose client address the gateway uses; a connection
    /// without one is closed.
    pub proxy_protocol: bool,
    /// Identity key files (several during a key rotation).
    pub identity_keys: Vec<PathBuf>,
    /// File holding the admin API token (hex).
    pub admin_token_file: PathBuf,
    /// Allowed clock skew for hellos, seconds.
    pub skew_secs: u32,
    /// TLS.
    pub tls: TlsSettings,
    /// Suite policy.
    pub policy: PolicySettings,
    /// Bounds and timeouts.
    pub limits: Limits,
    /// Record-layer settings.
    pub records: RecordSettings,
    /// The MQTT binding (off unless a broker is named).
    pub mqtt: MqttSettings,
    /// Cluster mode (off unless a NATS server is named; see `docs/cluster.md`).
    pub cluster: ClusterSettings,
    /// Directory that relative paths are resolved against (the configuration file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// When the storage considers a commit durable, so that its readings may be acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageSync {
    /// Every commit reaches the disk before it is acknowledged (SQLite `synchronous=FULL`):
    /// acknowledged readings survive a gateway crash, `kill -9`, a kernel panic and a power
    /// loss.
    #[default]
    Full,
    /// Commits are atomic and acknowledged once in the operating system's cache (SQLite
    /// `synchronous=NORMAL` in WAL mode, PostgreSQL `synchronous_commit=off`): they survive a
    /// gateway crash or `kill -9`, but the last commits before a power loss or kernel panic
    /// can be lost after their acknowledgement. Several times faster on slow disks.
    Normal,
}

/// TLS settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8 or SEC1).
    pub key: PathBuf,
    /// If set, devices must present a client certificate issued by one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
}

/// The gateway's suite policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// Suites accepted (`kem/sig/aead`); empty accepts every supported suite.
    pub allowed_suites: Vec<Suite>,
    /// Require a post-quantum key exchange.
    pub require_pq_kem: bool,
    /// Require a post-quantum signature.
    pub require_pq_sig: bool,
}

/// Bounds, rates and timeouts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, bytes (larger gets 413 before it is read).
    pub max_body: usize,
    /// Most established sessions in memory.
    pub max_sessions: usize,
    /// Most sessions per device; a new one evicts the device's oldest.
    pub max_sessions_per_device: usize,
    /// A session unused this long is dropped, seconds.
    pub idle_timeout_secs: u64,
    /// Absolute session lifetime, seconds.
    pub session_lifetime_secs: u64,
    /// Update the gateway's sending key after this many records.
    pub rekey_after_records: u64,
    /// ... or this many plaintext bytes.
    pub rekey_after_bytes: u64,
    /// ... or this many seconds.
    pub rekey_after_secs: u64,
    /// Records under the previous device key are accepted this long after a key update, s.
    pub grace_secs: u64,
    /// Most half-open handshakes (waiting for M3).
    pub half_open: usize,
    /// Most half-open handshakes of one source (an IPv4 address or IPv6 /64; over MQTT a
    /// response-topic client level); 0: no cap. A source holding half as many or more gets
    /// Address retries (docs/protocol.md §7.3).
    pub half_open_per_source: usize,
    /// From this many half-open handshakes on, every first hello gets an Address retry
    /// (return routability under load, docs/protocol.md §11).
    pub half_open_cookie_threshold: usize,
    /// How long a half-open handshake waits for M3, seconds (at most `skew_secs` is used).
    pub half_open_secs: u32,
    /// Most hello nonces remembered.
    pub nonce_cache: usize,
    /// Most cached handshake answers (for retransmissions).
    pub response_cache: usize,
    /// New handshakes per second per source IP (token bucket rate).
    pub handshake_rate_per_ip: f64,
    /// Token bucket size per source IP.
    pub handshake_burst_per_ip: f64,
    /// Most source IPs tracked by the rate limiter (beyond: one shared bucket).
    pub rate_limit_table: usize,
    /// At most one acknowledgement answering only replays per session per this many ms.
    pub replay_ack_interval_ms: u64,
    /// Most open client connections.
    pub max_connections: usize,
    /// Most open connections from one source (an IPv4 address or an IPv6 /64), so that no
    /// single source takes every slot.
    pub max_connections_per_ip: usize,
    /// A client must send a request's headers within this time (also the keep-alive idle
    /// limit), seconds.
    pub header_read_timeout_secs: u64,
    /// A request (body included) must complete within this time, seconds.
    pub request_timeout_secs: u64,
    /// A TLS handshake must complete within this time, seconds.
    pub tls_handshake_timeout_secs: u64,
    /// On shutdown, in-flight requests get this long to finish, seconds.
    pub shutdown_grace_secs: u64,
    /// How often expired sessions and rate-limiter entries are swept, seconds.
    pub sweep_interval_secs: u64,
    /// Sessions unused this long are parked at the next sweep, seconds: their expanded key
    /// objects are dropped (only the 32-byte traffic secrets stay) and derived again at their
    /// next record, a few microseconds. 0 parks every session not in use at each sweep.
    pub park_after_secs: u64,
    /// `Retry-After` sent with 503 Busy and 429, seconds.
    pub retry_after_secs: u64,
    /// Storage requests queued for the single writer; when full, requests wait for room
    /// (back-pressure, nothing is dropped).
    pub storage_queue: usize,
    /// Most readings committed in one storage transaction (one larger request still commits
    /// alone, in one transaction).
    pub storage_batch: usize,
    /// Most storage connections reading at once (queries, dashboard).
    pub storage_read_connections: usize,
    /// Session audit events (established, closed, evicted, ...) queued for storage; when
    /// full, new events are dropped, counted and logged (requests never wait for the audit).
    pub audit_queue: usize,
}

/// Record-layer settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordSettings {
    /// Refuse records whose time is further than this from now, seconds; 0 turns the check
    /// off (store-and-forward paths).
    pub max_record_age_secs: u64,
}

/// Cluster mode: several gateway nodes share the sessions through NATS JetStream, each
/// session owned by exactly one node (see [`crate::cluster`] and `docs/cluster.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// NATS server with JetStream, `nats://HOST:PORT`; empty: a single node (the default).
    pub url: String,
    /// This node's name, unique in the cluster; empty: a random one at each start.
    pub node_id: String,
    /// Partitions of the session-id space (the unit of ownership); the same on every node.
    pub partitions: u32,
    /// A node owns a partition for this long after its last renewal, milliseconds.
    pub lease_ms: u64,
    /// Prefix of the NATS subjects and JetStream buckets (one cluster per prefix).
    pub prefix: String,
    /// How long a request forwarded to its owner may take, milliseconds.
    pub forward_timeout_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            node_id: String::new(),
            partitions: 64,
            lease_ms: 6000,
            prefix: "iotseal".into(),
            forward_timeout_ms: 5000,
        }
    }
}

impl ClusterSettings {
    /// Whether cluster mode is on (a NATS server is named).
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    fn validate(&self) -> Result<(), GatewayError> {
        if !self.enabled() {
            return Ok(());
        }
        let bad = |m: &str| Err(GatewayError::Config(format!("cluster: {m}")));
        if !(self.url.starts_with("nats://") || self.url.starts_with("tls://")) {
            return bad("url must be nats://HOST:PORT or tls://HOST:PORT");
        }
        if self.partitions == 0 || self.partitions > 4096 {
            return bad("partitions must be 1 to 4096");
        }
        if self.lease_ms < 500 {
            return bad("lease_ms must be at least 500");
        }
        let ok = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if self.prefix.is_empty() || !ok(&self.prefix) {
            return bad("prefix: letters, digits, '_' and '-' only");
        }
        if !ok(&self.node_id) {
            return bad("node_id: letters, digits, '_' and '-' only");
        }
        if self.forward_timeout_ms == 0 {
            return bad("forward_timeout_ms must be > 0");
        }
        Ok(())
    }
}

/// The MQTT binding: the gateway subscribes at a broker for handshake messages and record
/// batches and publishes its answers to each request's response topic (`docs/protocol.md`,
/// "MQTT binding").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSettings {
    /// Broker URL: `mqtt://HOST:PORT` (plain) or `mqtts://HOST:PORT` (TLS); empty: MQTT off.
    pub broker: String,
    /// MQTT client id of the gateway (one per gateway process: the broker keeps its session).
    pub client_id: String,
    /// Topics are `PREFIX/hs/+`, `PREFIX/rec/+` (requests) and `PREFIX/inbox/+` (answers).
    pub topic_prefix: String,
    /// CA certificates (PEM) that sign the broker's certificate; empty: the system's roots.
    pub ca_file: PathBuf,
    /// User name at the broker; empty: none.
    pub username: String,
    /// File holding the password at the broker; empty: none.
    pub password_file: PathBuf,
    /// Record freshness for sessions established over MQTT, seconds; 0 (the default) turns
    /// it off: a broker stores and forwards, the replay window alone stops replays.
    pub max_record_age_secs: u64,
    /// How long the broker keeps the gateway's subscriptions and queued messages while it is
    /// disconnected, seconds (0: forgotten at once).
    pub session_expiry_secs: u32,
    /// Most requests being processed at once (the MQTT receive maximum).
    pub max_in_flight: u16,
    /// Most QoS 0 requests being processed at once. QoS 0 is at most once by contract and the
    /// receive maximum does not cover it: a QoS 0 request beyond this bound is dropped and
    /// counted (`refusals_total{reason="busy"}`). Devices use QoS 1.
    pub qos0_in_flight: u16,
    /// TCP_NODELAY on the connection to the broker (default on: without it, Nagle's
    /// algorithm and delayed ACKs hold answers back by tens of milliseconds). The broker must
    /// set it towards its clients too (Mosquitto: `set_tcp_nodelay true`).
    pub tcp_nodelay: bool,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            broker: String::new(),
            client_id: "iotseal-gateway".into(),
            topic_prefix: "iotseal/v1".into(),
            ca_file: PathBuf::new(),
            username: String::new(),
            password_file: PathBuf::new(),
            max_record_age_secs: 0,
            session_expiry_secs: 3600,
            max_in_flight: 256,
            qos0_in_flight: 64,
            tcp_nodelay: true,
        }
    }
}

impl MqttSettings {
    /// Whether the MQTT binding runs (a broker is named).
    pub fn enabled(&self) -> bool {
        !self.broker.trim().is_empty()
    }

    /// The record freshness of MQTT sessions.
    pub fn record_max_age(&self) -> Option<u64> {
        match self.max_record_age_secs {
            0 => None,
            n => Some(n),
        }
    }

    fn validate(&self) -> Result<(), GatewayError> {
        if !self.enabled() {
            return Ok(());
        }
        let bad = |m: String| Err(GatewayError::Config(format!("mqtt: {m}")));
        if let Err(e) = crate::mqtt::BrokerUrl::parse(&self.broker) {
            return bad(e);
        }
        if self.client_id.is_empty() {
            return bad("client_id must not be empty".into());
        }
        let p = &self.topic_prefix;
        if p.is_empty()
            || p.starts_with('/')
            || p.ends_with('/')
            || p.contains(['+', '#', '\0'])
            || p.starts_with('$')
        {
            return bad(format!(
                "topic_prefix {p:?}: non-empty, no wildcards, no leading or trailing '/'"
            ));
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be > 0".into());
        }
        if self.qos0_in_flight == 0 {
            return bad("qos0_in_flight must be > 0".into());
        }
        Ok(())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            data_dir: PathBuf::from("."),
            storage: "sqlite:iotseal.db".into(),
            storage_sync: StorageSync::Full,
            plain_http: false,
            proxy_protocol: false,
            identity_keys: vec![PathBuf::from("identity-1.key")],
            admin_token_file: PathBuf::from("admin.token"),
            skew_secs: 30,
            tls: TlsSettings::default(),
            policy: PolicySettings::default(),
            limits: Limits::default(),
            records: RecordSettings::default(),
            mqtt: MqttSettings::default(),
            cluster: ClusterSettings::default(),
            base_dir: PathBuf::from("."),
        }
    }
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert: PathBuf::from("tls-cert.pem"),
            key: PathBuf::from("tls-key.pem"),
            client_ca: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let s = SessionConfig::default();
        Self {
            max_body: 1 << 20,
            max_sessions: 100_000,
            max_sessions_per_device: 4,
            idle_timeout_secs: 3600,
            session_lifetime_secs: s.lifetime_secs,
            rekey_after_records: s.rekey_after_records,
            rekey_after_bytes: s.rekey_after_bytes,
            rekey_after_secs: s.rekey_after_secs,
            grace_secs: s.grace_secs,
            half_open: 4096,
            half_open_per_source: 64,
            half_open_cookie_threshold: 2048,
            half_open_secs: 10,
            nonce_cache: 65536,
            response_cache: 8192,
            handshake_rate_per_ip: 20.0,
            handshake_burst_per_ip: 40.0,
            rate_limit_table: 65536,
            replay_ack_interval_ms: 1000,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            header_read_timeout_secs: 30,
            request_timeout_secs: 30,
            tls_handshake_timeout_secs: 10,
            shutdown_grace_secs: 30,
            sweep_interval_secs: 5,
            park_after_secs: 10,
            retry_after_secs: 1,
            storage_queue: 1024,
            storage_batch: 4096,
            storage_read_connections: 4,
            audit_queue: 16_384,
        }
    }
}

impl Default for RecordSettings {
    fn default() -> Self {
        Self {
            max_record_age_secs: 120,
        }
    }
}

/// Where readings go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageSpec {
    /// SQLite database file.
    Sqlite(PathBuf),
    /// PostgreSQL database (`postgres://` or `postgresql://` URL).
    Postgres(String),
    /// In memory (volatile; tests and demos).
    Memory,
}

impl Settings {
    /// Reads a configuration file; relative paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))?;
        let mut s: Self = toml::from_str(&text)
            .map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))?;
        s.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        s.validate()?;
        Ok(s)
    }

    /// Sets one setting by its dotted name (`listen`, `limits.max_body`, ...) from text: a
    /// TOML value (`42`, `true`, `["a", "b"]`), or else a plain string.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), GatewayError> {
        let bad = |e: &dyn std::fmt::Display| GatewayError::Config(format!("{key}: {e}"));
        let mut table = toml::Table::try_from(&*self).map_err(|e| bad(&e))?;
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().ok_or_else(|| bad(&"empty key"))?;
        let mut t = &mut table;
        for p in parts {
            t = t
                .entry(p)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| bad(&"not a section"))?;
        }
        // A string where a string is expected stays a string even if it parses as a number.
        let value = match (t.get(last), parsed) {
            (Some(toml::Value::String(_)), v) if !v.is_str() => {
                toml::Value::String(value.to_string())
            }
            // A list may be given as `a,b,c`.
            (Some(toml::Value::Array(_)), v) if !v.is_array() => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(|x| toml::Value::String(x.to_string()))
                    .collect(),
            ),
            (_, v) => v,
        };
        t.insert(last.to_string(), value);
        let base = std::mem::take(&mut self.base_dir);
        let mut s: Self = table.try_into().map_err(|e| bad(&e))?;
        s.base_dir = base;
        *self = s;
        Ok(())
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let l = &self.limits;
        let bad = |m: &str| Err(GatewayError::Config(m.to_string()));
        if self.identity_keys.is_empty() {
            return bad("identity_keys: at least one identity key is needed");
        }
        if l.max_body == 0 || l.max_sessions == 0 || l.max_sessions_per_device == 0 {
            return bad("limits: max_body, max_sessions and max_sessions_per_device must be > 0");
        }
        if l.audit_queue == 0 {
            return bad("limits: audit_queue must be > 0");
        }
        if l.storage_queue == 0 || l.storage_batch == 0 || l.storage_read_connections == 0 {
            return bad(
                "limits: storage_queue, storage_batch and storage_read_connections must be > 0",
            );
        }
        if l.half_open == 0
            || l.nonce_cache == 0
            || l.max_connections == 0
            || l.max_connections_per_ip == 0
        {
            return bad(
                "limits: half_open, nonce_cache, max_connections and max_connections_per_ip must be > 0",
            );
        }
        if l.half_open_secs == 0 {
            return bad("limits: half_open_secs must be > 0");
        }
        if l.half_open_cookie_threshold > l.half_open {
            // A threshold the table never reaches would turn the cookie off without a word.
            return bad(
                "limits: half_open_cookie_threshold must be <= half_open (the table never holds more)",
            );
        }
        if l.handshake_rate_per_ip.is_nan()
            || l.handshake_rate_per_ip <= 0.0
            || l.handshake_burst_per_ip.is_nan()
            || l.handshake_burst_per_ip < 1.0
        {
            return bad("limits: handshake_rate_per_ip must be > 0, handshake_burst_per_ip >= 1");
        }
        if l.request_timeout_secs == 0
            || l.header_read_timeout_secs == 0
            || l.tls_handshake_timeout_secs == 0
        {
            return bad("limits: timeouts must be > 0");
        }
        if l.idle_timeout_secs == 0 || l.session_lifetime_secs == 0 {
            return bad("limits: idle_timeout_secs and session_lifetime_secs must be > 0");
        }
        self.storage_spec()?;
        self.mqtt.validate()?;
        self.cluster.validate()?;
        Ok(())
    }

    /// A path from the configuration, resolved against [`Settings::base_dir`].
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The data directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.data_dir)
    }

    /// The storage backend, resolved.
    pub fn storage_spec(&self) -> Result<StorageSpec, GatewayError> {
        if let Some(p) = self.storage.strip_prefix("sqlite:") {
            let p = Path::new(p);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                self.data_dir().join(p)
            };
            Ok(StorageSpec::Sqlite(p))
        } else if self.storage.starts_with("postgres://")
            || self.storage.starts_with("postgresql://")
        {
            Ok(StorageSpec::Postgres(self.storage.clone()))
        } else if self.storage == "memory:" {
            Ok(StorageSpec::Memory)
        } else {
            Err(GatewayError::Config(format!(
                "storage: expected sqlite:PATH, postgres://URL or memory:, got {:?}",
                self.storage
            )))
        }
    }

    /// The core's suite policy.
    pub fn suite_policy(&self) -> SuitePolicy {
        SuitePolicy {
            allowed: self.policy.allowed_suites.clone(),
            require_pq_kem: self.policy.require_pq_kem,
            require_pq_sig: self.policy.require_pq_sig,
        }
    }

    /// The core's record-layer settings.
    pub fn session_config(&self) -> SessionConfig {
        let l = &self.limits;
        SessionConfig {
            rekey_after_records: l.rekey_after_records,
            rekey_after_bytes: l.rekey_after_bytes,
            rekey_after_secs: l.rekey_after_secs,
            grace_secs: l.grace_secs,
            max_record_age_secs: match self.records.max_record_age_secs {
                0 => None,
                n => Some(n),
            },
            lifetime_secs: l.session_lifetime_secs,
        }
    }

    /// The URL clients use, for a bound address.
    pub fn url_for(&self, addr: SocketAddr) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        if addr.ip().is_unspecified() {
            format!("{scheme}://localhost:{}", addr.port())
        } else {
            format!("{scheme}://{addr}")
        }
    }

    /// `gateway.toml` listing every setting with a comment, with the values of `self` (for a
    /// new gateway: the defaults, plus its listen address, key files and TLS files). Parsing
    /// it gives `self` back.
    pub fn commented_toml(&self) -> String {
        let d = self;
        let l = &d.limits;
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let client_ca = match &d.tls.client_ca {
            Some(p) => format!("client_ca = {}", q(p)),
            None => "# client_ca = \"client-ca.pem\"".to_string(),
        };
        let suites = d
            .policy
            .allowed_suites
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let keys = d
            .identity_keys
            .iter()
            .map(|p| q(p))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"# iotseal gateway configuration. Every setting is shown with its default.
# Relative paths are relative to this file's directory. Every setting can also be given as a
# flag of `iotseal gateway run` or an IOTSEAL_* environment variable, named after the key
# without its section (--max-body / IOTSEAL_MAX_BODY, --skew-secs / IOTSEAL_SKEW_SECS; TLS
# keys as --tls-cert, --tls-key, --tls-client-ca); flags and environment override this file.

# Address to listen on (port 0 picks a free one).
listen = "{listen}"
# Directory for data files.
data_dir = {data_dir}
# Storage: "sqlite:PATH" (relative to data_dir), "postgres://USER@HOST:PORT/DB" or
# "memory:" (volatile).
storage = "{storage}"
# When a commit is durable enough to acknowledge its readings: "full" (fsynced: survives a
# power loss) or "normal" (atomic, in the OS cache: survives a crash or kill -9 of the
# gateway, not a power loss; much faster on slow disks).
storage_sync = "{storage_sync}"
# Serve plain HTTP instead of TLS 1.3: only behind a TLS-terminating proxy. Readings stay
# sealed end to end either way.
plain_http = {plain_http}
# Every connection starts with a PROXY protocol v2 header (HAProxy `send-proxy-v2`); the
# client address in it is used for the per-address limits and logs. A connection without
# one is closed. Only behind such a proxy: anyone reaching the port could name any address.
proxy_protocol = {proxy_protocol}
# Gateway identity keys (`iotseal gateway rotate-key` adds one; during a rotation both are
# listed and valid; the device's first pin picks the one that signs).
identity_keys = [{keys}]
# Admin API bearer token (hex), for /v1/devices.
admin_token_file = {token}
# Allowed clock skew of device hellos, seconds.
skew_secs = {skew}

[tls]
# Certificate chain and private key (PEM).
cert = {cert}
key = {key}
# Require device client certificates issued by these CAs (PEM). Off by default.
{client_ca}

[policy]
# Suites accepted, as "kem/sig/aead"; empty accepts every supported suite.
allowed_suites = [{suites}]
# Require a post-quantum key exchange (mlkem768, x25519mlkem768).
require_pq_kem = {pq_kem}
# Require a post-quantum signature (mldsa65, ed25519+mldsa65).
require_pq_sig = {pq_sig}

[limits]
# Largest request body, bytes (larger: 413 before reading it).
max_body = {max_body}
# Most established sessions in memory.
max_sessions = {max_sessions}
# Most sessions per device; a new one evicts the device's oldest.
max_sessions_per_device = {per_device}
# Sessions unused this long are dropped, seconds.
idle_timeout_secs = {idle}
# Absolute session lifetime, seconds.
session_lifetime_secs = {lifetime}
# The gateway's sending key is updated after this many records, bytes or seconds.
rekey_after_records = {rr}
rekey_after_bytes = {rb}
rekey_after_secs = {rs}
# Records under a device's previous key are accepted this long after its key update, s.
grace_secs = {grace}
# Most half-open handshakes (waiting for M3).
half_open = {half_open}
# Most half-open handshakes of one source (IPv4 address or IPv6 /64; MQTT: a client level);
# 0 = no cap. A full table makes room by evicting the oldest of the source holding the most.
half_open_per_source = {half_open_per_source}
# From this many half-open handshakes on (or for a source holding half its cap), a first
# hello is answered with a cookie Retry it must echo from the same source (one round trip).
half_open_cookie_threshold = {half_open_cookie}
# A half-open handshake waits this long for M3, seconds (at most skew_secs).
half_open_secs = {half_open_secs}
# Most hello nonces remembered.
nonce_cache = {nonce_cache}
# Most cached handshake answers (retransmissions get the same bytes).
response_cache = {response_cache}
# New handshakes per second per source IP, and the burst allowed.
handshake_rate_per_ip = {rate:?}
handshake_burst_per_ip = {burst:?}
# Most source IPs tracked by the rate limiter (beyond that they share one bucket).
rate_limit_table = {rate_table}
# At most one acknowledgement answering only replays per session per this many ms.
replay_ack_interval_ms = {replay_ack}
# Most open client connections.
max_connections = {max_conn}
# Most open connections from one source (an IPv4 address or an IPv6 /64): no single source
# takes every slot. Raise it for many devices behind one NAT address.
max_connections_per_ip = {max_conn_ip}
# Request headers must arrive within this time (also the keep-alive idle limit), seconds.
header_read_timeout_secs = {hrt}
# A whole request must complete within this time, seconds.
request_timeout_secs = {rt}
# A TLS handshake must complete within this time, seconds.
tls_handshake_timeout_secs = {tht}
# On shutdown, in-flight requests get this long to finish, seconds.
shutdown_grace_secs = {sg}
# How often expired sessions are swept, seconds.
sweep_interval_secs = {sweep}
# Sessions unused this long are parked at the next sweep, seconds: their key objects are
# dropped (the traffic secrets stay) and derived again at their next record (a few
# microseconds). Saves ~1.3 KB per idle session. 0: every session not in use at a sweep.
park_after_secs = {park}
# Retry-After of 503 (busy) and 429 (rate limited) answers, seconds.
retry_after_secs = {retry_after}
# Storage requests queued for the single writer (when full, requests wait: nothing dropped).
storage_queue = {st_queue}
# Most readings committed in one storage transaction.
storage_batch = {st_batch}
# Most storage connections reading at once (queries, dashboard).
storage_read_connections = {st_read}
# Session audit events queued for storage (when full: dropped, counted, logged).
audit_queue = {audit_queue}

[records]
# Refuse records further than this from now, seconds (0: off, for store-and-forward).
max_record_age_secs = {max_age}

[mqtt]
# MQTT binding: devices reach the gateway through this broker, which sees only ciphertext.
# Flags and variables of this section keep the prefix: --mqtt-broker / IOTSEAL_MQTT_BROKER.
# "mqtt://HOST:PORT" (plain) or "mqtts://HOST:PORT" (TLS); empty: off.
broker = {m_broker:?}
# The gateway's MQTT client id (one per gateway process).
client_id = {m_client:?}
# Requests on PREFIX/hs/+ and PREFIX/rec/+, answers to PREFIX/inbox/... topics.
topic_prefix = {m_prefix:?}
# CA certificates (PEM) of the broker's TLS certificate; empty: the system's roots.
ca_file = {m_ca}
# Broker login: user name and a file with the password; empty: none.
username = {m_user:?}
password_file = {m_pass}
# Record freshness of sessions over MQTT, seconds (0: off, since the broker stores and forwards).
max_record_age_secs = {m_age}
# The broker keeps the gateway's subscriptions and queued requests this long while it is
# away, seconds (0: not at all).
session_expiry_secs = {m_expiry}
# Most requests processed at once (MQTT receive maximum).
max_in_flight = {m_inflight}
# Most QoS 0 requests processed at once; beyond it a QoS 0 request is dropped and counted
# (refusals_total{{reason="busy"}}). Devices publish with QoS 1, which the line above bounds.
qos0_in_flight = {m_qos0}
# TCP_NODELAY towards the broker (off: Nagle and delayed ACKs add ~40 ms per answer). The
# broker needs it towards its clients too (Mosquitto: set_tcp_nodelay true).
tcp_nodelay = {m_nodelay}

[cluster]
# Cluster mode (docs/cluster.md): gateway nodes behind a load balancer share the sessions
# through NATS JetStream; use a shared PostgreSQL storage. Flags and variables keep the
# prefix (--cluster-node-id / IOTSEAL_CLUSTER_NODE_ID), except the URL: --cluster /
# IOTSEAL_CLUSTER. "nats://HOST:PORT"; empty: a single node.
url = {c_url:?}
# This node's name, unique in the cluster; empty: a random one at each start.
node_id = {c_node:?}
# Partitions of the session-id space (the unit of ownership); the same on every node.
partitions = {c_parts}
# A node owns its partitions this long after its last renewal, milliseconds.
lease_ms = {c_lease}
# Prefix of the NATS subjects and JetStream buckets (one cluster per prefix).
prefix = {c_prefix:?}
# Requests forwarded to their owner node must be answered within this time, milliseconds.
forward_timeout_ms = {c_fwd}
"#,
            listen = d.listen,
            data_dir = q(&d.data_dir),
            storage = d.storage,
            storage_sync = match d.storage_sync {
                StorageSync::Full => "full",
                StorageSync::Normal => "normal",
            },
            plain_http = d.plain_http,
            proxy_protocol = d.proxy_protocol,
            token = q(&d.admin_token_file),
            skew = d.skew_secs,
            cert = q(&d.tls.cert),
            key = q(&d.tls.key),
            pq_kem = d.policy.require_pq_kem,
            pq_sig = d.policy.require_pq_sig,
            max_body = l.max_body,
            max_sessions = l.max_sessions,
            per_device = l.max_sessions_per_device,
            idle = l.idle_timeout_secs,
            lifetime = l.session_lifetime_secs,
            rr = l.rekey_after_records,
            rb = l.rekey_after_bytes,
            rs = l.rekey_after_secs,
            grace = l.grace_secs,
            half_open = l.half_open,
            half_open_per_source = l.half_open_per_source,
            half_open_cookie = l.half_open_cookie_threshold,
            half_open_secs = l.half_open_secs,
            nonce_cache = l.nonce_cache,
            response_cache = l.response_cache,
            rate = l.handshake_rate_per_ip,
            burst = l.handshake_burst_per_ip,
            rate_table = l.rate_limit_table,
            replay_ack = l.replay_ack_interval_ms,
            max_conn = l.max_connections,
            max_conn_ip = l.max_connections_per_ip,
            hrt = l.header_read_timeout_secs,
            rt = l.request_timeout_secs,
            tht = l.tls_handshake_timeout_secs,
            sg = l.shutdown_grace_secs,
            sweep = l.sweep_interval_secs,
            park = l.park_after_secs,
            retry_after = l.retry_after_secs,
            st_queue = l.storage_queue,
            st_batch = l.storage_batch,
            st_read = l.storage_read_connections,
            audit_queue = l.audit_queue,
            max_age = d.records.max_record_age_secs,
            m_broker = d.mqtt.broker,
            m_client = d.mqtt.client_id,
            m_prefix = d.mqtt.topic_prefix,
            m_ca = q(&d.mqtt.ca_file),
            m_user = d.mqtt.username,
            m_pass = q(&d.mqtt.password_file),
            m_age = d.mqtt.max_record_age_secs,
            m_expiry = d.mqtt.session_expiry_secs,
            m_inflight = d.mqtt.max_in_flight,
            m_qos0 = d.mqtt.qos0_in_flight,
            m_nodelay = d.mqtt.tcp_nodelay,
            c_url = d.cluster.url,
            c_node = d.cluster.node_id,
            c_parts = d.cluster.partitions,
            c_lease = d.cluster.lease_ms,
            c_prefix = d.cluster.prefix,
            c_fwd = d.cluster.forward_timeout_ms,
        )
    }

    /// Every setting's dotted name (for flags and environment variables).
    pub fn keys() -> Vec<String> {
        let t = toml::Table::try_from(Self::default()).unwrap_or_default();
        let mut out = Vec::new();
        for (k, v) in &t {
            match v {
                toml::Value::Table(sub) => out.extend(sub.keys().map(|s| format!("{k}.{s}"))),
                _ => out.push(k.clone()),
            }
        }
        out.push("tls.client_ca".into());
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_file_parses_to_defaults() {
        let text = Settings::default().commented_toml();
        let s: Settings = toml::from_str(&text).unwrap();
        assert_eq!(s, Settings::default());
        let mut custom = Settings::default();
        custom.set("tls.client_ca", "/etc/ca.pem").unwrap();
        custom.set("identity_keys", "a.key,b.key").unwrap();
        custom
            .set("policy.allowed_suites", "x25519/ed25519/aes128gcm")
            .unwrap();
        custom.set("policy.require_pq_kem", "true").unwrap();
        let back: Settings = toml::from_str(&custom.commented_toml()).unwrap();
        assert_eq!(back, custom);
        // Every key is in the file (commented out or not).
        for k in Settings::keys() {
            let leaf = k.rsplit('.').next().unwrap();
            assert!(text.contains(&format!("{leaf} =")), "{k} missing");
        }
    }

    #[test]
    fn set_by_dotted_name() {
        let mut s = Settings::default();
        s.set("listen", "127.0.0.1:0").unwrap();
        s.set("limits.max_body", "4096").unwrap();
        s.set("plain_http", "true").unwrap();
        s.set("tls.client_ca", "ca.pem").unwrap();
        s.set("policy.allowed_suites", r#"["x25519/ed25519/aes128gcm"]"#)
            .unwrap();
        s.set("storage", "memory:").unwrap();
        assert_eq!(s.listen.port(), 0);
        assert_eq!(s.limits.max_body, 4096);
        assert!(s.plain_http);
        assert_eq!(s.tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(s.policy.allowed_suites.len(), 1);
        assert_eq!(s.storage_spec().unwrap(), StorageSpec::Memory);
        assert_eq!(s.storage_sync, StorageSync::Full);
        s.set("storage_sync", "normal").unwrap();
        assert_eq!(s.storage_sync, StorageSync::Normal);
        assert!(s.set("storage_sync", "sometimes").is_err());
        assert!(s.set("limits.max_body", "lots").is_err());
        assert!(s.set("nonsense", "1").is_err());
    }

    /// Bounds that must be positive, or within a range, are checked at load: each at its edge.
    #[test]
    fn bounds_are_validated_at_their_edges() {
        for (key, bad, good) in [
            ("limits.max_sessions", "0", "1"),
            ("limits.nonce_cache", "0", "1"),
            ("limits.half_open_secs", "0", "1"),
            ("limits.half_open_cookie_threshold", "4097", "4096"),
            ("limits.storage_queue", "0", "1"),
            ("limits.storage_batch", "0", "1"),
            ("limits.storage_read_connections", "0", "1"),
            ("limits.audit_queue", "0", "1"),
            ("mqtt.max_in_flight", "0", "1"),
            ("mqtt.qos0_in_flight", "0", "1"),
            ("cluster.partitions", "0", "1"),
            ("cluster.partitions", "4097", "4096"),
        ] {
            let mut s = Settings::default();
            s.set("cluster.url", "nats://127.0.0.1:4222").unwrap();
            s.set("mqtt.broker", "mqtt://127.0.0.1:1883").unwrap();
            s.set(key, bad).unwrap();
            assert!(s.validate().is_err(), "{key} = {bad} accepted");
            s.set(key, good).unwrap();
            s.validate()
                .unwrap_or_else(|e| panic!("{key} = {good} refused: {e}"));
        }
    }
}
