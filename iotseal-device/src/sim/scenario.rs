//! Scenario files (TOML): groups of devices with their suite, sensors and rates, network
//! impairments, duration and seed. Examples live in `scenarios/`.

use std::path::Path;

use iotseal_proto::Suite;
use serde::{Deserialize, Serialize};

use super::impair::Impairments;
use super::sensors::SensorModelKind;

/// A group of identical devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Name (device ids are `<name>-<n>`).
    pub name: String,
    /// Number of devices.
    pub devices: u32,
    /// Suite (`kem/sig/aead`).
    #[serde(default = "default_suite")]
    pub suite: Suite,
    /// Sensors on each device.
    pub sensors: Vec<SensorModelKind>,
    /// Readings per second per device.
    #[serde(default = "default_rate")]
    pub rate_hz: f64,
    /// Readings sent together (one flush).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Opaque extra bytes per reading (payload size).
    #[serde(default)]
    pub payload_extra: usize,
    /// Crypto provider of the devices: `rustcrypto` or `aws-lc`.
    #[serde(default = "default_provider")]
    pub provider: String,
}

fn default_suite() -> Suite {
    Suite::DEFAULT
}
fn default_rate() -> f64 {
    1.0
}
fn default_batch() -> usize {
    10
}
fn default_provider() -> String {
    "rustcrypto".into()
}

/// A whole simulation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed: the same seed gives the same sensor values and impairments.
    #[serde(default)]
    pub seed: u64,
    /// How long devices produce readings, seconds.
    #[serde(default = "default_duration")]
    pub duration_secs: f64,
    /// Simulated seconds per real second for the daily cycles (time-lapse).
    #[serde(default = "default_speedup")]
    pub time_lapse: f64,
    /// Network impairments between devices and gateway.
    #[serde(default)]
    pub network: Impairments,
    /// How devices reach the gateway: `http` (HTTPS to the pinned URL) or `mqtt` (through the
    /// broker of `[mqtt]`).
    #[serde(default)]
    pub transport: TransportKind,
    /// The broker, for `transport = "mqtt"`.
    #[serde(default)]
    pub mqtt: MqttScenario,
    /// Device groups.
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
}

/// The transport of a simulation's devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// HTTP/1.1 over TLS 1.3 to the gateway.
    #[default]
    Http,
    /// MQTT v5 through a broker (one connection per device).
    Mqtt,
}

impl std::str::FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http" | "https" => Ok(Self::Http),
            "mqtt" => Ok(Self::Mqtt),
            _ => Err(format!("transport {s:?}: expected http or mqtt")),
        }
    }
}

/// The broker of an MQTT simulation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttScenario {
    /// `mqtt://HOST:PORT` or `mqtts://HOST:PORT`.
    pub broker: String,
    /// The gateway's topic prefix.
    pub topic_prefix: String,
    /// CA certificates (PEM) of the broker, for `mqtts://`; default: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for MqttScenario {
    fn default() -> Self {
        Self {
            broker: "mqtt://127.0.0.1:1883".into(),
            topic_prefix: "iotseal/v1".into(),
            ca_file: None,
        }
    }
}

fn default_duration() -> f64 {
    20.0
}
fn default_speedup() -> f64 {
    3600.0
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let s: Self = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        s.validate()?;
        Ok(s)
    }

    /// Checks bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.groups.is_empty() {
            return Err("a scenario needs at least one [[group]]".into());
        }
        // Summed in u64: group sizes are u32 and must not wrap (found by the fuzzer).
        let total: u64 = self.groups.iter().map(|g| u64::from(g.devices)).sum();
        if total == 0 || total > 100_000 {
            return Err(format!("{total} devices: must be 1 to 100000"));
        }
        if !(self.duration_secs > 0.0 && self.duration_secs <= 30.0 * 86_400.0) {
            return Err("duration_secs must be in (0, 2592000]".into());
        }
        if !(self.time_lapse >= 0.0 && self.time_lapse <= 1.0e7) {
            return Err("time_lapse must be in [0, 10000000]".into());
        }
        for g in &self.groups {
            if !(g.rate_hz > 0.0 && g.rate_hz <= 1000.0) {
                return Err(format!("group {}: rate_hz must be in (0, 1000]", g.name));
            }
            if g.batch == 0 || g.batch > 1024 {
                return Err(format!("group {}: batch must be 1 to 1024", g.name));
            }
            if g.payload_extra > iotseal_proto::reading::MAX_EXTRA {
                return Err(format!(
                    "group {}: payload_extra at most {}",
                    g.name,
                    iotseal_proto::reading::MAX_EXTRA
                ));
            }
            if g.sensors.is_empty() {
                return Err(format!("group {}: no sensors", g.name));
            }
            if !["rustcrypto", "aws-lc"].contains(&g.provider.as_str()) {
                return Err(format!("group {}: unknown provider {}", g.name, g.provider));
            }
        }
        if self.transport == TransportKind::Mqtt {
            crate::mqtt::parse_broker(&self.mqtt.broker)
                .map_err(|e| format!("mqtt.broker: {e}"))?;
        }
        self.network.validate()
    }

    /// A mixed default: classical, hybrid and post-quantum groups with various sensors.
    pub fn mixed(devices_per_group: u32, duration_secs: f64, seed: u64) -> Self {
        let g =
            |name: &str, suite: &str, sensors: Vec<SensorModelKind>, rate: f64, provider: &str| {
                Group {
                    name: name.into(),
                    devices: devices_per_group,
                    suite: suite.parse().expect("valid suite"),
                    sensors,
                    rate_hz: rate,
                    batch: 5,
                    payload_extra: 0,
                    provider: provider.into(),
                }
            };
        use SensorModelKind as K;
        Self {
            seed,
            duration_secs,
            time_lapse: 3600.0,
            network: Impairments::default(),
            transport: TransportKind::Http,
            mqtt: MqttScenario::default(),
            groups: vec![
                g(
                    "greenhouse",
                    "x25519mlkem768/ed25519/aes256gcm",
                    vec![K::Temperature, K::Humidity],
                    4.0,
                    "rustcrypto",
                ),
                g(
                    "truck",
                    "x25519/ed25519/chacha20poly1305",
                    vec![K::Gps, K::Accelerometer],
                    5.0,
                    "rustcrypto",
                ),
                g(
                    "meter",
                    "p256/ecdsa-p256/aes128gcm",
                    vec![K::PowerMeter],
                    2.0,
                    "aws-lc",
                ),
                g(
                    "wearable",
                    "mlkem768/mldsa65/aes256ctr-hmacsha256",
                    vec![K::HeartRate],
                    2.0,
                    "rustcrypto",
                ),
                g(
                    "station",
                    "x25519mlkem768/ed25519+mldsa65/aes256gcm",
                    vec![K::Pressure, K::Temperature],
                    1.0,
                    "aws-lc",
                ),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 4);
        Scenario::mixed(2, 5.0, 1).validate().unwrap();
    }

    #[test]
    fn mqtt_transport_in_scenario() {
        let s: Scenario = toml::from_str(
            "transport = 'mqtt'\n[mqtt]\nbroker = 'mqtt://127.0.0.1:1884'\n[[group]]\nname='a'\ndevices=1\nsensors=['temperature']",
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.transport, TransportKind::Mqtt);
        assert_eq!(s.mqtt.topic_prefix, "iotseal/v1");
        let d: Scenario =
            toml::from_str("[[group]]\nname='a'\ndevices=1\nsensors=['temperature']").unwrap();
        assert_eq!(d.transport, TransportKind::Http);
    }

    #[test]
    fn bad_scenarios_refused() {
        let bad = [
            "[[group]]\nname='a'\ndevices=1\nsensors=[]",
            "[[group]]\nname='a'\ndevices=1\nsensors=['temperature']\nrate_hz=0",
            "[[group]]\nname='a'\ndevices=1\nsensors=['temperature']\nbatch=5000",
            "[[group]]\nname='a'\ndevices=1\nsensors=['thermometer']",
            "[network]\ndrop_request=1.5\n[[group]]\nname='a'\ndevices=1\nsensors=['temperature']",
            "[[group]]\nname='a'\ndevices=1\nsensors=['temperature']\nsuite='x25519/ed25519'",
            "[[group]]\nname='a'\ndevices=1\nsensors=['temperature']\nunknown_knob=1",
            "[[group]]\nname='a'\ndevices=4294967295\nsensors=['temperature']\n[[group]]\nname='b'\ndevices=2\nsensors=['temperature']",
            "duration_secs=nan\n[[group]]\nname='a'\ndevices=1\nsensors=['temperature']",
            "duration_secs=inf\n[[group]]\nname='a'\ndevices=1\nsensors=['temperature']",
            "time_lapse=-1\n[[group]]\nname='a'\ndevices=1\nsensors=['temperature']",
            "transport='pigeon'\n[[group]]\nname='a'\ndevices=1\nsensors=['temperature']",
            "transport='mqtt'\n[mqtt]\nbroker='http://x'\n[[group]]\nname='a'\ndevices=1\nsensors=['temperature']",
        ];
        for b in bad {
            let r: Result<Scenario, _> = toml::from_str(b);
            assert!(r.is_err() || r.unwrap().validate().is_err(), "{b}");
        }
    }
}
