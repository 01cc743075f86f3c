//! The gateway's settings (`gateway.toml`), each declared once below with its documentation,
//! type and default: the structs, their defaults, the layering (defaults, then the file, then
//! `IOTSEAL_*` environment variables, then command-line flags), the flags of
//! `iotseal gateway run`, the commented template ([`Settings::commented_toml`],
//! `docs/gateway.example.toml`) and the reference (`docs/settings.md`) all come from that one
//! declaration. Relative paths are resolved against the directory of the configuration file.

#[macro_use]
mod declare;
mod broker_url;
mod layers;
mod render;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use iotseal_proto::Suite;
use iotseal_proto::handshake::SuitePolicy;
use iotseal_proto::record::SessionConfig;
use serde::{Deserialize, Serialize};

use crate::GatewayError;

pub use broker_url::BrokerUrl;
pub use declare::{Field, SectionDoc};

section! {
    /// Everything the gateway can be told; `docs/settings.md` lists every setting.
    pub struct Settings in "", flags "" {
        /// Address to listen on; port 0 picks a free port.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8443));
        /// Directory for data files (relative to the configuration file's directory).
        data_dir: PathBuf = PathBuf::from(".");
        /// Storage: `sqlite:PATH` (relative to `data_dir`), `postgres://USER@HOST:PORT/DB` or
        /// `memory:` (volatile, for tests).
        storage: String = "sqlite:iotseal.db".into();
        /// When a commit is durable enough to acknowledge its readings: `full` (fsynced:
        /// survives a power loss) or `normal` (atomic, in the OS cache: survives a crash or
        /// `kill -9` of the gateway, not a power loss; much faster on slow disks).
        storage_sync: StorageSync = StorageSync::Full;
        /// Serve plain HTTP instead of TLS 1.3: only behind a TLS-terminating proxy. Readings
        /// stay sealed end to end either way.
        plain_http: bool = false;
        /// Every connection starts with a PROXY protocol v2 header (HAProxy `send-proxy-v2`),
        /// whose client address is used for the per-address limits and logs; a connection
        /// without one is closed. Only behind such a proxy: anyone reaching the port could
        /// name any address.
        proxy_protocol: bool = false;
        /// Identity key files (`iotseal gateway rotate-key` adds one; during a rotation both
        /// are listed and valid; the device's first pin picks the one that signs).
        identity_keys: Vec<PathBuf> = vec![PathBuf::from("identity-1.key")];
        /// File holding the admin API bearer token (hex), for `/v1/devices`.
        admin_token_file: PathBuf = PathBuf::from("admin.token");
        /// Allowed clock skew of device hellos, seconds.
        skew_secs: u32 = 30;
    }
    sections {
        /// TLS.
        tls: TlsSettings,
        /// Suite policy.
        policy: PolicySettings,
        /// Bounds and timeouts.
        limits: Limits,
        /// Record-layer settings.
        records: RecordSettings,
        /// The MQTT binding (off unless a broker is named).
        mqtt: MqttSettings,
        /// Cluster mode (off unless a NATS server is named; see `docs/cluster.md`).
        cluster: ClusterSettings,
    }
    internal {
        /// Directory that relative paths are resolved against (the configuration file's).
        base_dir: PathBuf = PathBuf::from("."),
    }
}

section! {
    /// TLS: the gateway's certificate and, optionally, client certificates of devices.
    pub struct TlsSettings [derive(Eq)] in "tls", flags "tls-" {
        /// Certificate chain (PEM).
        cert: PathBuf = PathBuf::from("tls-cert.pem");
        /// Private key (PEM, PKCS#8 or SEC1).
        key: PathBuf = PathBuf::from("tls-key.pem");
        /// If set, devices must present a client certificate issued by one of these CAs
        /// (PEM). Off by default.
        client_ca: Option<PathBuf> = None, example "client-ca.pem";
    }
}

section! {
    /// The suite policy: which suites devices may use.
    pub struct PolicySettings [derive(Eq)] in "policy", flags "" {
        /// Suites accepted, as `kem/sig/aead`; empty accepts every supported suite.
        allowed_suites: Vec<Suite> = Vec::new();
        /// Require a post-quantum key exchange (mlkem768, x25519mlkem768).
        require_pq_kem: bool = false;
        /// Require a post-quantum signature (mldsa65, ed25519+mldsa65).
        require_pq_sig: bool = false;
    }
}

section! {
    /// Bounds, rates and timeouts (docs/limits.md: what happens at each bound).
    pub struct Limits in "limits", flags "" {
        /// Largest request body, bytes (larger gets 413 before it is read).
        max_body: usize = 1 << 20;
        /// Most established sessions in memory.
        max_sessions: usize = 100_000;
        /// Most sessions per device; a new one evicts the device's oldest.
        max_sessions_per_device: usize = 4;
        /// A session unused this long is dropped, seconds.
        idle_timeout_secs: u64 = 3600;
        /// Absolute session lifetime, seconds.
        session_lifetime_secs: u64 = SessionConfig::default().lifetime_secs;
        /// Update the gateway's sending key after this many records...
        rekey_after_records: u64 = SessionConfig::default().rekey_after_records;
        /// ... or this many plaintext bytes...
        rekey_after_bytes: u64 = SessionConfig::default().rekey_after_bytes;
        /// ... or this many seconds.
        rekey_after_secs: u64 = SessionConfig::default().rekey_after_secs;
        /// Records under a device's previous key are accepted this long after its key
        /// update, seconds.
        grace_secs: u64 = SessionConfig::default().grace_secs;
        /// Most half-open handshakes (waiting for M3).
        half_open: usize = 4096;
        /// Most half-open handshakes of one source (an IPv4 address or IPv6 /64; over MQTT a
        /// response-topic client level); 0: no cap. A full table makes room by evicting the
        /// oldest of the source holding the most; a source holding half its cap or more gets
        /// Address retries (docs/protocol.md §7.3).
        half_open_per_source: usize = 64;
        /// From this many half-open handshakes on, every first hello gets an Address retry
        /// (a cookie it must echo from the same source: return routability under load,
        /// docs/protocol.md §11). At most `half_open`.
        half_open_cookie_threshold: usize = 2048;
        /// How long a half-open handshake waits for M3, seconds (at most `skew_secs` is used).
        half_open_secs: u32 = 10;
        /// Most hello nonces remembered.
        nonce_cache: usize = 65536;
        /// Most cached handshake answers (retransmissions get the same bytes).
        response_cache: usize = 8192;
        /// New handshakes per second per source IP (token bucket rate).
        handshake_rate_per_ip: f64 = 20.0;
        /// Token bucket size per source IP (the burst allowed).
        handshake_burst_per_ip: f64 = 40.0;
        /// Most source IPs tracked by the rate limiter (beyond: one shared bucket).
        rate_limit_table: usize = 65536;
        /// At most one acknowledgement answering only replays per session per this many ms.
        replay_ack_interval_ms: u64 = 1000;
        /// Most open client connections.
        max_connections: usize = 10_000;
        /// Most open connections from one source (an IPv4 address or an IPv6 /64), so that no
        /// single source takes every slot. Raise it for many devices behind one NAT address.
        max_connections_per_ip: usize = 1_000;
        /// A client must send a request's headers within this time (also the keep-alive idle
        /// limit), seconds.
        header_read_timeout_secs: u64 = 30;
        /// A request (body included) must complete within this time, seconds.
        request_timeout_secs: u64 = 30;
        /// A TLS handshake must complete within this time, seconds.
        tls_handshake_timeout_secs: u64 = 10;
        /// On shutdown, in-flight requests get this long to finish, seconds.
        shutdown_grace_secs: u64 = 30;
        /// How often expired sessions and rate-limiter entries are swept, seconds.
        sweep_interval_secs: u64 = 5;
        /// Sessions unused this long are parked at the next sweep, seconds: their expanded key
        /// objects are dropped (only the 32-byte traffic secrets stay, ~1.3 KB saved per idle
        /// session) and derived again at their next record, a few microseconds. 0 parks every
        /// session not in use at each sweep.
        park_after_secs: u64 = 10;
        /// `Retry-After` sent with 503 Busy and 429 (rate limited), seconds.
        retry_after_secs: u64 = 1;
        /// Storage requests queued for the single writer; when full, requests wait for room
        /// (back-pressure, nothing is dropped).
        storage_queue: usize = 1024;
        /// Most readings committed in one storage transaction (one larger request still
        /// commits alone, in one transaction).
        storage_batch: usize = 4096;
        /// Most storage connections reading at once (queries, dashboard).
        storage_read_connections: usize = 4;
        /// Session audit events (established, closed, evicted, ...) queued for storage; when
        /// full, new events are dropped, counted and logged (requests never wait for the
        /// audit).
        audit_queue: usize = 16_384;
    }
}

section! {
    /// Record-layer settings.
    pub struct RecordSettings [derive(Eq)] in "records", flags "" {
        /// Refuse records whose time is further than this from now, seconds; 0 turns the check
        /// off (store-and-forward paths).
        max_record_age_secs: u64 = 120;
    }
}

section! {
    /// The MQTT binding: the gateway subscribes at a broker for handshake messages and record
    /// batches and publishes its answers to each request's response topic (docs/protocol.md,
    /// "MQTT binding"); the broker sees only ciphertext.
    pub struct MqttSettings [derive(Eq)] in "mqtt", flags "mqtt-" {
        /// Broker URL: `mqtt://HOST:PORT` (plain) or `mqtts://HOST:PORT` (TLS); empty: MQTT off.
        broker: String = String::new();
        /// MQTT client id of the gateway (one per gateway process: the broker keeps its
        /// session).
        client_id: String = "iotseal-gateway".into();
        /// Requests arrive on `PREFIX/hs/+` and `PREFIX/rec/+`, answers go to `PREFIX/inbox/...`
        /// topics.
        topic_prefix: String = "iotseal/v1".into();
        /// CA certificates (PEM) that sign the broker's certificate; empty: the system's roots.
        ca_file: PathBuf = PathBuf::new();
        /// User name at the broker; empty: none.
        username: String = String::new();
        /// File holding the password at the broker; empty: none.
        password_file: PathBuf = PathBuf::new();
        /// Record freshness for sessions established over MQTT, seconds; 0 (the default) turns
        /// it off: a broker stores and forwards, the replay window alone stops replays.
        max_record_age_secs: u64 = 0;
        /// How long the broker keeps the gateway's subscriptions and queued messages while it
        /// is disconnected, seconds (0: forgotten at once).
        session_expiry_secs: u32 = 3600;
        /// Most requests being processed at once (the MQTT receive maximum).
        max_in_flight: u16 = 256;
        /// Most QoS 0 requests being processed at once. QoS 0 is at most once by contract and
        /// the receive maximum does not cover it: a QoS 0 request beyond this bound is dropped
        /// and counted (`refusals_total{reason="busy"}`). Devices use QoS 1.
        qos0_in_flight: u16 = 64;
        /// TCP_NODELAY on the connection to the broker (default on: without it, Nagle's
        /// algorithm and delayed ACKs hold answers back by tens of milliseconds). The broker
        /// must set it towards its clients too (Mosquitto: `set_tcp_nodelay true`).
        tcp_nodelay: bool = true;
    }
}

section! {
    /// Cluster mode (docs/cluster.md): gateway nodes behind a load balancer share the sessions
    /// through NATS JetStream, each session owned by exactly one node; use a shared PostgreSQL
    /// storage.
    pub struct ClusterSettings [derive(Eq)] in "cluster", flags "cluster-" {
        /// NATS server with JetStream, `nats://HOST:PORT`; empty: a single node (the default).
        url: String = String::new(), flag "cluster";
        /// This node's name, unique in the cluster; empty: a random one at each start.
        node_id: String = String::new();
        /// Partitions of the session-id space (the unit of ownership); the same on every node.
        partitions: u32 = 64;
        /// A node owns a partition for this long after its last renewal, milliseconds.
        lease_ms: u64 = 6000;
        /// Prefix of the NATS subjects and JetStream buckets (one cluster per prefix).
        prefix: String = "iotseal".into();
        /// How long a request forwarded to its owner node may take, milliseconds.
        forward_timeout_ms: u64 = 5000;
    }
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
        if let Err(e) = BrokerUrl::parse(&self.broker) {
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
    /// Checks what the types alone cannot (bounds, relations between settings, URLs).
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

    /// The committed generated files match the declaration.
    #[test]
    fn generated_files_are_current() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        let bless = std::env::var_os("IOTSEAL_BLESS").is_some();
        for (name, text) in [
            ("gateway.example.toml", Settings::template()),
            ("settings.md", Settings::reference_markdown()),
        ] {
            let path = docs.join(name);
            if bless {
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == text,
                "docs/{name} is not what the settings' declaration generates; regenerate it \
                 with `{}`",
                render::REGENERATE
            );
        }
    }

    #[test]
    fn declaration_is_consistent() {
        let fields = Settings::fields();
        let mut keys = Settings::keys();
        keys.dedup();
        assert_eq!(keys.len(), fields.len(), "a key declared twice");
        let mut flags: Vec<String> = fields.iter().map(Field::flag).collect();
        flags.sort();
        flags.dedup();
        assert_eq!(flags.len(), fields.len(), "two settings share a flag");
        let d = Settings::default();
        for f in fields {
            assert!(!f.doc.is_empty(), "{} has no documentation", f.key());
            // Each section's name is the field that holds it, so dotted names reach it.
            assert!(
                d.value(&f.key()).is_some() || f.example().is_some(),
                "{}: no value and no example for the template",
                f.key()
            );
        }
        // The flags and variables `iotseal gateway run` has always had.
        let f = |k: &str| Settings::field(k).unwrap();
        assert_eq!(f("limits.max_body").flag(), "max-body");
        assert_eq!(f("limits.max_body").env(), "IOTSEAL_MAX_BODY");
        assert_eq!(f("tls.client_ca").env(), "IOTSEAL_TLS_CLIENT_CA");
        assert_eq!(f("policy.allowed_suites").flag(), "allowed-suites");
        assert_eq!(
            f("records.max_record_age_secs").flag(),
            "max-record-age-secs"
        );
        assert_eq!(
            f("mqtt.max_record_age_secs").flag(),
            "mqtt-max-record-age-secs"
        );
        assert_eq!(f("cluster.url").env(), "IOTSEAL_CLUSTER");
        assert_eq!(f("cluster.node_id").env(), "IOTSEAL_CLUSTER_NODE_ID");
    }

    #[test]
    fn file_errors_name_the_key_and_line() {
        let mut s = Settings::default();
        let e = s
            .merge_toml(
                "listen = \"127.0.0.1:1\"\n\n[limits]\nmax_body = \"lots\"\n",
                "gw.toml",
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gw.toml:4: limits.max_body: invalid type"),
            "{e}"
        );
        let e = s
            .merge_toml("[limits]\nmax_bodyy = 1\n", "gw.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "gw.toml:2: limits.max_bodyy is not a setting (did you mean limits.max_body?)"
            ),
            "{e}"
        );
        let e = s
            .merge_toml("[limitz]\nmax_body = 1\n", "gw.toml")
            .unwrap_err();
        assert!(
            e.to_string().contains("gw.toml:1: limitz is not a setting"),
            "{e}"
        );
        let e = s.merge_toml("limits = 3\n", "gw.toml").unwrap_err();
        assert!(
            e.to_string().contains("gw.toml:1: limits is a section"),
            "{e}"
        );
        let e = s.merge_toml("x = [\n", "gw.toml").unwrap_err();
        assert!(e.to_string().contains("gw.toml:"), "{e}");
        // Dotted keys and inline tables are TOML too.
        s.merge_toml(
            "limits.max_body = 7\nmqtt = { client_id = \"g\" }\n",
            "gw.toml",
        )
        .unwrap();
        assert_eq!((s.limits.max_body, s.mqtt.client_id.as_str()), (7, "g"));
    }

    #[test]
    fn layers_apply_in_order_and_refuse_unknown_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            "skew_secs = 5\n[limits]\nmax_body = 100\nmax_sessions = 9\n",
        )
        .unwrap();
        let mut s = Settings::from_file(&path).unwrap();
        assert_eq!(s.base_dir, dir.path());
        assert_eq!((s.skew_secs, s.limits.max_body), (5, 100));
        s.apply_env(
            [
                ("IOTSEAL_MAX_BODY", "200"),
                ("IOTSEAL_MQTT_CLIENT_ID", "42"),
                ("IOTSEAL_IDENTITY_KEYS", "a.key, b.key"),
                ("IOTSEAL_TEST_PG", "ignored"),
                ("HOME", "/root"),
            ],
            |v| v.starts_with("IOTSEAL_TEST_"),
        )
        .unwrap();
        assert_eq!(s.limits.max_body, 200);
        assert_eq!(s.mqtt.client_id, "42");
        assert_eq!(
            s.identity_keys,
            [PathBuf::from("a.key"), PathBuf::from("b.key")]
        );
        s.apply_flag("limits.max_body", "300").unwrap();
        assert_eq!((s.limits.max_body, s.limits.max_sessions), (300, 9));

        let e = s
            .apply_env([("IOTSEAL_MAX_BODDY", "1")], |_| false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("environment variable IOTSEAL_MAX_BODDY is not a setting (did you mean IOTSEAL_MAX_BODY?)"),
            "{e}"
        );
        let e = s
            .apply_env([("IOTSEAL_MAX_BODY", "lots")], |_| false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("environment variable IOTSEAL_MAX_BODY: limits.max_body: invalid type"),
            "{e}"
        );
        let e = s
            .apply_flag("limits.max_body", "-1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--max-body: limits.max_body: invalid value"),
            "{e}"
        );
        let e = s.set("limits.nonsense", "1").unwrap_err().to_string();
        assert!(e.contains("limits.nonsense is not a setting"), "{e}");
    }

    #[test]
    fn validation_errors_say_where_the_settings_were_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, "[limits]\nhalf_open = 100\nmax_body = 5\n").unwrap();
        let flags = [(
            "limits.half_open_cookie_threshold".to_string(),
            "101".to_string(),
        )];
        let env = [("IOTSEAL_MAX_SESSIONS", "7")];
        let e = Settings::layered(Some(&path), env, |_| false, &flags)
            .unwrap_err()
            .to_string();
        let file = path.display();
        assert!(
            e.contains(&format!(
                "(limits.half_open from {file}:2; limits.half_open_cookie_threshold from \
                 --half-open-cookie-threshold)"
            )),
            "{e}"
        );
        let ok = [(
            "limits.half_open_cookie_threshold".to_string(),
            "100".to_string(),
        )];
        let s = Settings::layered(Some(&path), env, |_| false, &ok).unwrap();
        assert_eq!((s.limits.max_body, s.limits.max_sessions), (5, 7));
        assert_eq!(s.base_dir, dir.path());
    }

    #[test]
    fn half_open_cookie_threshold_is_at_most_half_open() {
        let mut s = Settings::default();
        s.set("limits.half_open", "100").unwrap();
        s.set("limits.half_open_cookie_threshold", "101").unwrap();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("half_open_cookie_threshold"), "{e}");
        s.set("limits.half_open_cookie_threshold", "100").unwrap();
        s.validate().unwrap();
    }
}
