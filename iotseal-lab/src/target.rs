//! The iotseal gateway under attack, as the lab observes it: its admin API (register, revoke,
//! stored readings) and its Prometheus metrics, reached directly over pinned HTTPS (never
//! through the proxy). In-process, the lab starts it itself with small limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hyper::Method;
use iotseal_device::{GatewayPins, IdentityFile, StoredReadingJson};
use iotseal_gateway::local::LocalGateway;
use serde::{Deserialize, Serialize};

use crate::LabError;
use crate::net::HttpClient;

/// The gateway settings the attacks depend on (timeouts to outlast, caps to exceed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayLimits {
    /// Hello clock skew, seconds (also the half-open and answer-cache lifetime).
    pub skew_secs: u64,
    /// Record freshness bound, seconds (0: off).
    pub max_record_age_secs: u64,
    /// Header read timeout, seconds.
    pub header_read_timeout_secs: u64,
    /// Request timeout, seconds.
    pub request_timeout_secs: u64,
    /// Half-open handshake cap.
    pub half_open: usize,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Most connections from one source address.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
}

fn default_max_connections_per_ip() -> usize {
    iotseal_gateway::Settings::default()
        .limits
        .max_connections_per_ip
}

impl Default for GatewayLimits {
    /// The gateway's defaults (for a remote gateway whose settings were not given).
    fn default() -> Self {
        let s = iotseal_gateway::Settings::default();
        Self::of(&s)
    }
}

impl GatewayLimits {
    /// The limits the lab's own gateway runs with: small, so delayed replays, slow clients
    /// and floods do not need long waits.
    pub fn lab() -> Self {
        Self {
            skew_secs: 2,
            max_record_age_secs: 2,
            header_read_timeout_secs: 2,
            request_timeout_secs: 3,
            half_open: 4096,
            max_body: 1 << 20,
            max_connections_per_ip: default_max_connections_per_ip(),
        }
    }

    /// The limits of a settings value.
    pub fn of(s: &iotseal_gateway::Settings) -> Self {
        Self {
            skew_secs: u64::from(s.skew_secs),
            max_record_age_secs: s.records.max_record_age_secs,
            header_read_timeout_secs: s.limits.header_read_timeout_secs,
            request_timeout_secs: s.limits.request_timeout_secs,
            half_open: s.limits.half_open,
            max_body: s.limits.max_body,
            max_connections_per_ip: s.limits.max_connections_per_ip,
        }
    }

    /// Applies them to settings.
    pub fn apply(&self, s: &mut iotseal_gateway::Settings) {
        s.skew_secs = self.skew_secs as u32;
        s.records.max_record_age_secs = self.max_record_age_secs;
        s.limits.header_read_timeout_secs = self.header_read_timeout_secs;
        s.limits.request_timeout_secs = self.request_timeout_secs;
        s.limits.half_open = self.half_open;
        // Address cookies once half the table is taken, as with the defaults.
        s.limits.half_open_cookie_threshold = self.half_open / 2;
        s.limits.max_body = self.max_body;
        s.limits.max_connections_per_ip = self.max_connections_per_ip;
    }
}

/// Which gateway to attack.
#[derive(Clone, Debug)]
pub enum GatewaySpec {
    /// Start one in this process (fresh keys, SQLite in a temporary directory, lab limits).
    InProcess {
        /// Data directory (default: a new temporary one, removed afterwards).
        data_dir: Option<PathBuf>,
    },
    /// A running gateway.
    Remote {
        /// What devices pin (its `url` is the gateway).
        pins: GatewayPins,
        /// The admin token.
        token: String,
        /// Its settings, as far as the attacks depend on them.
        limits: GatewayLimits,
    },
}

/// A metrics scrape: `name{labels}` → value.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics(pub(crate) BTreeMap<String, f64>);

impl Metrics {
    pub(crate) fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((k, v)) = line.rsplit_once(' ')
                && let Ok(x) = v.parse::<f64>()
            {
                m.insert(k.to_string(), x);
            }
        }
        Self(m)
    }

    pub(crate) fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }

    /// Sum of every series of `name` whose labels contain `label`.
    fn sum(&self, name: &str, label: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(label))
            .map(|(_, v)| *v)
            .sum()
    }

    pub(crate) fn refusals(&self) -> BTreeMap<String, f64> {
        let prefix = "iotseal_refusals_total{reason=\"";
        self.0
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix("\"}"))
                    .map(|r| (r.to_string(), *v))
            })
            .collect()
    }

    pub(crate) fn established(&self) -> f64 {
        self.sum("iotseal_handshakes_total", "outcome=\"established\"")
    }

    pub(crate) fn established_with(&self, suite: &str) -> f64 {
        self.get(&format!(
            "iotseal_handshakes_total{{suite=\"{suite}\",outcome=\"established\"}}"
        ))
    }

    pub(crate) fn outcome(&self, outcome: &str) -> f64 {
        self.sum(
            "iotseal_handshakes_total",
            &format!("outcome=\"{outcome}\""),
        )
    }
}

/// Differences between two scrapes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Delta {
    pub(crate) refusals: BTreeMap<String, u64>,
    pub(crate) established: u64,
    pub(crate) records_accepted: u64,
    pub(crate) readings_stored: u64,
    pub(crate) readings_duplicate: u64,
    pub(crate) retries: u64,
    pub(crate) retransmissions: u64,
}

impl Delta {
    pub(crate) fn between(a: &Metrics, b: &Metrics) -> Self {
        let d = |x: f64, y: f64| (y - x).max(0.0) as u64;
        let ra = a.refusals();
        let refusals = b
            .refusals()
            .into_iter()
            .map(|(k, v)| {
                let before = ra.get(&k).copied().unwrap_or(0.0);
                (k, d(before, v))
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        let g = |k: &str| d(a.get(k), b.get(k));
        Self {
            refusals,
            established: d(a.established(), b.established()),
            records_accepted: g("iotseal_records_accepted_total"),
            readings_stored: g("iotseal_readings_stored_total"),
            readings_duplicate: g("iotseal_readings_duplicate_total"),
            retries: d(a.outcome("retry"), b.outcome("retry")),
            retransmissions: d(a.outcome("retransmission"), b.outcome("retransmission")),
        }
    }
}

/// The gateway, as the lab reaches it.
pub(crate) struct Gw {
    pub(crate) http: HttpClient,
    /// Pins with the gateway's own URL.
    pub(crate) pins: GatewayPins,
    pub(crate) token: String,
    pub(crate) limits: GatewayLimits,
    /// The lab runs the gateway itself: nothing else writes to it, so global counters can be
    /// attributed to the attack.
    pub(crate) exclusive: bool,
    pub(crate) local: Option<LocalGateway>,
    /// Temporary directory to remove at the end.
    pub(crate) temp_dir: Option<PathBuf>,
}

impl Gw {
    pub(crate) async fn open(spec: &GatewaySpec) -> Result<Self, LabError> {
        Self::open_with(spec, |_| {}).await
    }

    /// Like [`Self::open`]; `tweak` adjusts the settings of an in-process gateway after the
    /// lab's limits (the MQTT attacks turn its MQTT binding on with it).
    pub(crate) async fn open_with(
        spec: &GatewaySpec,
        tweak: impl FnOnce(&mut iotseal_gateway::Settings),
    ) -> Result<Self, LabError> {
        match spec {
            GatewaySpec::Remote {
                pins,
                token,
                limits,
            } => Ok(Self {
                http: HttpClient::new(&pins.tls_cert_sha256)?,
                pins: pins.clone(),
                token: token.trim().to_string(),
                limits: limits.clone(),
                exclusive: false,
                local: None,
                temp_dir: None,
            }),
            GatewaySpec::InProcess { data_dir } => {
                let (dir, temp) = match data_dir {
                    Some(d) => (d.clone(), None),
                    None => {
                        let d = crate::temp_dir("iotseal-lab")?;
                        (d.clone(), Some(d))
                    }
                };
                let limits = GatewayLimits::lab();
                let l2 = limits.clone();
                let gw = iotseal_gateway::local::start_local(&dir, move |s| {
                    l2.apply(s);
                    s.limits.sweep_interval_secs = 1;
                    tweak(s);
                })
                .await
                .map_err(|e| LabError(format!("starting the lab's gateway: {e}")))?;
                let pins: GatewayPins = toml::from_str(
                    &gw.public
                        .to_toml()
                        .map_err(|e| LabError(format!("pins: {e}")))?,
                )
                .map_err(|e| LabError(format!("pins: {e}")))?;
                Ok(Self {
                    http: HttpClient::new(&pins.tls_cert_sha256)?,
                    pins,
                    token: gw.token.clone(),
                    limits,
                    exclusive: true,
                    local: Some(gw),
                    temp_dir: temp,
                })
            }
        }
    }

    pub(crate) async fn close(self) {
        if let Some(gw) = self.local {
            let _ = gw.handle.stop().await;
        }
        if let Some(d) = self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    pub(crate) fn url(&self) -> &str {
        self.pins.url.trim_end_matches('/')
    }

    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<crate::net::Answer, LabError> {
        let headers = [
            ("authorization", format!("Bearer {}", self.token)),
            ("content-type", "application/json".to_string()),
        ];
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.http
            .send(method, &format!("{}{path}", self.url()), &headers, body)
            .await
    }

    pub(crate) async fn metrics(&self) -> Result<Metrics, LabError> {
        let a = self.admin(Method::GET, "/metrics", None).await?;
        if a.status != 200 {
            return Err(LabError(format!("/metrics: HTTP {}", a.status)));
        }
        Ok(Metrics::parse(&String::from_utf8_lossy(&a.body)))
    }

    pub(crate) async fn register(&self, id: &IdentityFile) -> Result<(), LabError> {
        let a = self
            .admin(
                Method::POST,
                "/v1/devices",
                Some(serde_json::json!({"id": id.id, "alg": id.alg.name(), "public_key": id.public_key})),
            )
            .await?;
        if a.status / 100 != 2 {
            return Err(LabError(format!(
                "registering {}: HTTP {} {}",
                id.id,
                a.status,
                String::from_utf8_lossy(&a.body)
            )));
        }
        Ok(())
    }

    pub(crate) async fn revoke(&self, id: &str) -> Result<(), LabError> {
        let a = self
            .admin(Method::POST, &format!("/v1/devices/{id}/revoke"), None)
            .await?;
        if a.status / 100 != 2 {
            return Err(LabError(format!("revoking {id}: HTTP {}", a.status)));
        }
        Ok(())
    }

    /// Stored readings of a device (empty for an unknown device).
    pub(crate) async fn readings(&self, id: &str) -> Result<Vec<StoredReadingJson>, LabError> {
        let a = self
            .admin(
                Method::GET,
                &format!("/v1/devices/{id}/readings?limit=100000&format=json"),
                None,
            )
            .await?;
        match a.status {
            404 => Ok(Vec::new()),
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&a.body)
                    .map_err(|e| LabError(format!("readings of {id}: {e}")))?;
                let arr = if v.is_array() {
                    v
                } else {
                    v.get("readings")
                        .cloned()
                        .unwrap_or(serde_json::Value::Null)
                };
                serde_json::from_value(arr).map_err(|e| LabError(format!("readings of {id}: {e}")))
            }
            s => Err(LabError(format!("readings of {id}: HTTP {s}"))),
        }
    }
}
