//! `iotseal report`: one self-contained HTML file from the measurements of a run.
//!
//! Inputs, all optional, read from one directory by [`ReportInput::load_dir`]:
//!
//! | file | written by | shape |
//! |---|---|---|
//! | `crypto.json` | `iotseal bench crypto --out DIR` | [`crate::matrix::CryptoReport`] |
//! | `load.json` | `iotseal bench load --json` | a [`LoadRun`], a list of them, `{"runs": [...]}`, or JSON lines; an element may also be `{"label": ..., "report": LoadRun}` (as `scripts/bench-load.sh` writes) |
//! | `attacks.json` | the threat lab (`iotseal attack --json`) | a list of attacks, each `{"target": "iotseal" or "legacy", "name", "attempts", "blocked_attempts", "blocked" (verdict, bool or null), "applicable", "reason", "stored_forgeries", "criterion", "judged_by", "service"}` as `iotseal attack --json` prints it (the outputs for both targets may simply be concatenated), or `{"iotseal": [...], "legacy": [...]}` with the same entries, where `blocked` may also be the count; see [`Attack`] |
//! | `simulation.json` | `iotseal simulate --json` | the simulator's `Summary` |
//!
//! plus the sensor time series, which the CLI reads from a gateway database
//! ([`SensorSeries`]). [`write_report`] draws every chart as inline SVG in the HTML and as a
//! PNG beside it (`<stem>-<chart id>.png`). The page opens with results: a section whose input
//! is missing is left out, and listed once at the end under "Not measured in this run" with
//! the command that measures it.

mod charts;
mod html;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use charts::Chart;

use crate::matrix::CryptoReport;

/// File name of the crypto matrix in an input directory.
pub const CRYPTO_FILE: &str = "crypto.json";
/// File name of the load benchmark.
pub const LOAD_FILE: &str = "load.json";
/// File name of the threat-lab results.
pub const ATTACKS_FILE: &str = "attacks.json";
/// File name of the simulator's summary.
pub const SIMULATION_FILE: &str = "simulation.json";

/// One run of `iotseal bench load`. Every field may be missing (shown as "—").
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadRun {
    /// A name for the run (default: mode, connections and batch).
    #[serde(default)]
    pub label: Option<String>,
    /// `sealed` (the iotseal gateway) or `raw` (a plain TLS baseline server).
    #[serde(default)]
    pub mode: Option<String>,
    /// Suite of the load's devices.
    #[serde(default)]
    pub suite: Option<String>,
    /// How the devices reached the gateway: `http` or `mqtt` (missing in runs of versions
    /// that had only HTTPS: see [`LoadRun::transport`]).
    #[serde(default)]
    pub transport: Option<String>,
    /// Readings stored and acknowledged per second.
    #[serde(default)]
    pub readings_per_s: Option<f64>,
    /// HTTP requests per second.
    #[serde(default)]
    pub requests_per_s: Option<f64>,
    /// Request latency, median, ms.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// Request latency, 99th percentile, ms.
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Gateway CPU over the run, % of one core.
    #[serde(default)]
    pub gateway_cpu_percent: Option<f64>,
    /// Failed requests.
    #[serde(default)]
    pub errors: Option<u64>,
    /// Concurrent connections.
    #[serde(default)]
    pub connections: Option<u64>,
    /// Readings per request.
    #[serde(default)]
    pub batch: Option<u64>,
}

impl LoadRun {
    /// The transport: as recorded, or `http` for a run recorded before there was another
    /// (it has a mode but no transport); `None` when nothing says.
    pub fn transport(&self) -> Option<String> {
        match (&self.transport, &self.mode) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => Some("http".into()),
            (None, None) => None,
        }
    }

    fn name(&self) -> String {
        self.label.clone().unwrap_or_else(|| {
            format!(
                "{}{}{} conn × batch {}",
                self.mode
                    .as_ref()
                    .map_or(String::new(), |m| format!("{m} ")),
                self.transport
                    .as_ref()
                    .map_or(String::new(), |t| format!("{t} ")),
                self.connections.map_or("?".into(), |c| c.to_string()),
                self.batch.map_or("?".into(), |b| b.to_string())
            )
        })
    }
}

/// Reads `load.json` in any of the shapes the module documentation lists.
fn parse_load(text: &str) -> Result<Vec<LoadRun>> {
    use serde_json::Value;
    let mut values = Vec::new();
    for doc in json_values(text)? {
        match doc {
            Value::Array(a) => values.extend(a),
            Value::Object(mut o) => match o.remove("runs") {
                Some(Value::Array(a)) => values.extend(a),
                Some(_) => anyhow::bail!("\"runs\" is not a list"),
                None => values.push(Value::Object(o)),
            },
            _ => anyhow::bail!("expected objects or lists of runs"),
        }
    }
    values
        .into_iter()
        .map(|v| {
            let v = match v {
                Value::Object(mut o) if o.get("report").is_some_and(Value::is_object) => {
                    let label = o.remove("label");
                    let mut r = o.remove("report").unwrap_or_default();
                    if let (Some(l), Some(obj)) = (label, r.as_object_mut()) {
                        obj.insert("label".into(), l);
                    }
                    r
                }
                v => v,
            };
            Ok(serde_json::from_value(v)?)
        })
        .collect()
}

/// One attack of the threat lab against one target.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Attack {
    /// What the attack is (`replay-immediate`, `tamper`, …).
    pub name: String,
    /// Attempts made.
    pub attempts: u64,
    /// Attempts the target refused or that had no effect (`blocked_attempts` in
    /// `iotseal attack --json`).
    pub blocked: u64,
    /// The verdict, when the lab gives one: stopped entirely (every check held, nothing
    /// forged stored). `None`: no verdict (not applicable, or the lab failed).
    #[serde(default)]
    pub stopped: Option<bool>,
    /// Whether the attack applies to this target.
    #[serde(default = "yes")]
    pub applicable: bool,
    /// How the target refused the attempts (its error or status), or why it did not.
    #[serde(default)]
    pub reason: String,
    /// Forged or replayed readings that ended up in the target's storage.
    #[serde(default)]
    pub stored_forgeries: u64,
    /// What "blocked" means for this attack (`criterion` in `iotseal attack --json`); empty
    /// when the input does not say (then see [`Attack::criterion_or_default`]).
    #[serde(default)]
    pub criterion: String,
    /// How the verdict was reached: `each-attempt` or `service` (floods and exhaustion
    /// attacks, judged by the legitimate traffic served while they ran).
    #[serde(default)]
    pub judged_by: Option<String>,
    /// For attacks judged by service: what an honest device running at the same time got.
    #[serde(default)]
    pub service: Option<AttackService>,
    /// The lab's checks that did not hold (`checks` with `held: false`), in order.
    #[serde(default)]
    pub failed_checks: Vec<String>,
}

/// The legitimate traffic served while an attack ran (`service` in `iotseal attack --json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttackService {
    /// Seconds the honest device ran alongside the attack.
    pub secs: f64,
    /// Sessions it set out to open.
    pub handshakes_attempted: u64,
    /// Sessions it opened in time.
    pub handshakes_completed: u64,
    /// Its requests the target refused or left unanswered.
    pub requests_refused: u64,
    /// Readings it sent.
    pub readings_sent: u64,
    /// Of those, readings acknowledged during the attack and found in storage as sent.
    pub readings_stored: u64,
    /// Median time to open a session or get readings acknowledged, ms.
    pub median_latency_ms: f64,
    /// Worst of those, ms.
    pub worst_latency_ms: f64,
}

impl AttackService {
    /// Whether no request was refused, every session was opened and every reading stored (the
    /// lab's verdict also bounds the latency).
    pub fn all_served(&self) -> bool {
        self.handshakes_attempted > 0
            && self.requests_refused == 0
            && self.handshakes_completed == self.handshakes_attempted
            && self.readings_sent > 0
            && self.readings_stored == self.readings_sent
    }

    /// `sessions 12/12, readings 24/24 stored, worst 210 ms` (and `, 7 requests refused`).
    pub fn summary(&self) -> String {
        format!(
            "sessions {}/{}, readings {}/{} stored, worst {:.0} ms{}",
            self.handshakes_completed,
            self.handshakes_attempted,
            self.readings_stored,
            self.readings_sent,
            self.worst_latency_ms,
            if self.requests_refused > 0 {
                format!(", {} requests refused", self.requests_refused)
            } else {
                String::new()
            }
        )
    }
}

/// The criterion of inputs that give none: what a verdict derived from the counts means.
pub const COUNT_CRITERION: &str =
    "every attempt refused or without effect, nothing forged stored (from the counts)";

impl Attack {
    /// The verdict: the lab's when it gives one; for inputs with counts only, whether every
    /// attempt was blocked and nothing forged was stored. `None`: does not apply, or no
    /// attempt was made.
    pub fn verdict(&self) -> Option<bool> {
        if !self.applicable {
            return None;
        }
        match self.stopped {
            Some(v) => Some(v),
            None if self.attempts == 0 => None,
            None => Some(self.blocked == self.attempts && self.stored_forgeries == 0),
        }
    }

    /// What "blocked" means: the input's criterion, or [`COUNT_CRITERION`] when it gives
    /// none.
    pub fn criterion_or_default(&self) -> &str {
        if self.criterion.is_empty() {
            COUNT_CRITERION
        } else {
            &self.criterion
        }
    }

    /// Whether the verdict rests on the legitimate traffic served (floods, slow clients).
    pub fn judged_by_service(&self) -> bool {
        self.judged_by.as_deref() == Some("service") || self.service.is_some()
    }
}

fn yes() -> bool {
    true
}

/// The threat lab's results: `attacks.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Attacks {
    /// Against iotseal.
    pub iotseal: Vec<Attack>,
    /// Against the legacy design, when it was run.
    #[serde(default)]
    pub legacy: Option<Vec<Attack>>,
}

/// Every JSON value in `text`: one document, JSON lines, or documents one after the other.
fn json_values(text: &str) -> Result<Vec<serde_json::Value>> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

/// One attack from either shape: ours (`blocked` a count) or `iotseal attack --json`'s
/// (`blocked_attempts` a count, `blocked` the verdict).
fn parse_attack(v: &serde_json::Value) -> Result<Attack> {
    use serde_json::Value;
    let u = |k: &str| v.get(k).and_then(Value::as_u64);
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("an attack without a name"))?
        .to_string();
    let attempts = u("attempts").ok_or_else(|| anyhow::anyhow!("{name}: no attempts"))?;
    let (blocked, stopped) = match (u("blocked_attempts"), v.get("blocked")) {
        (Some(n), b) => (n, b.and_then(Value::as_bool)),
        (None, Some(Value::Number(n))) => (n.as_u64().unwrap_or(0), None),
        (None, Some(Value::Bool(b))) => (if *b { attempts } else { 0 }, Some(*b)),
        _ => anyhow::bail!("{name}: neither blocked nor blocked_attempts"),
    };
    let service = match v.get("service") {
        None | Some(Value::Null) => None,
        Some(s) => Some(
            serde_json::from_value(s.clone())
                .map_err(|e| anyhow::anyhow!("{name}: service: {e}"))?,
        ),
    };
    let failed_checks = v
        .get("checks")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter(|c| c.get("held").and_then(Value::as_bool) == Some(false))
                .filter_map(|c| c.get("what").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Attack {
        name,
        attempts,
        blocked,
        stopped,
        applicable: v.get("applicable").and_then(Value::as_bool).unwrap_or(true),
        reason: v
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        stored_forgeries: u("stored_forgeries").unwrap_or(0),
        criterion: v
            .get("criterion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        judged_by: v
            .get("judged_by")
            .and_then(Value::as_str)
            .map(str::to_string),
        service,
        failed_checks,
    })
}

/// Reads `attacks.json` in the shapes the module documentation lists.
fn parse_attacks(text: &str) -> Result<Attacks> {
    use serde_json::Value;
    let mut out = Attacks::default();
    for doc in json_values(text)? {
        match doc {
            Value::Object(o) if o.contains_key("iotseal") || o.contains_key("legacy") => {
                for (target, list) in o {
                    let Value::Array(list) = list else {
                        anyhow::bail!("{target}: not a list");
                    };
                    for v in &list {
                        push_attack(&mut out, &target, parse_attack(v)?);
                    }
                }
            }
            Value::Array(list) => {
                for v in &list {
                    let target = v.get("target").and_then(Value::as_str).unwrap_or("iotseal");
                    push_attack(&mut out, target, parse_attack(v)?);
                }
            }
            v @ Value::Object(_) => {
                let target = v.get("target").and_then(Value::as_str).unwrap_or("iotseal");
                push_attack(&mut out, target, parse_attack(&v)?);
            }
            _ => anyhow::bail!("expected objects or lists of attacks"),
        }
    }
    Ok(out)
}

fn push_attack(out: &mut Attacks, target: &str, a: Attack) {
    if target == "legacy" {
        out.legacy.get_or_insert_with(Vec::new).push(a);
    } else {
        out.iotseal.push(a);
    }
}

/// One sensor of one device over time, from the gateway's database.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SensorSeries {
    /// Device id.
    pub device: String,
    /// Sensor name (`temperature`, `humidity`, …).
    pub sensor: String,
    /// Unit (`°C`, `%`, …), empty if unknown.
    pub unit: String,
    /// (device time in ms since the Unix epoch, value), oldest first.
    pub points: Vec<(u64, f64)>,
}

/// Everything a report is made from.
#[derive(Clone, Debug, Default)]
pub struct ReportInput {
    /// `crypto.json`.
    pub crypto: Option<CryptoReport>,
    /// `load.json`.
    pub load: Option<Vec<LoadRun>>,
    /// `attacks.json`.
    pub attacks: Option<Attacks>,
    /// `simulation.json` (the simulator's `Summary`, kept as JSON).
    pub simulation: Option<serde_json::Value>,
    /// Sensor time series from a gateway database.
    pub series: Option<Vec<SensorSeries>>,
    /// Where each input came from, for the report's header.
    pub sources: Vec<String>,
}

/// `parse(contents)` of `path`; `None` if there is no such file.
fn read_text<T>(path: &Path, parse: fn(&str) -> Result<T>) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(
            parse(&t).with_context(|| format!("{}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(
            serde_json::from_str(&s).with_context(|| format!("{}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

impl ReportInput {
    /// Reads the JSON files of `dir` (missing files are left out, malformed ones are errors).
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let mut input = Self::default();
        let note = |name: &str, found: bool| found.then(|| dir.join(name).display().to_string());
        let crypto: Option<CryptoReport> = read_json(&dir.join(CRYPTO_FILE))?;
        let load = read_text(&dir.join(LOAD_FILE), parse_load)?;
        let attacks = read_text(&dir.join(ATTACKS_FILE), parse_attacks)?;
        let simulation: Option<serde_json::Value> = read_json(&dir.join(SIMULATION_FILE))?;
        input.sources.extend(note(CRYPTO_FILE, crypto.is_some()));
        input.sources.extend(note(LOAD_FILE, load.is_some()));
        input.sources.extend(note(ATTACKS_FILE, attacks.is_some()));
        input
            .sources
            .extend(note(SIMULATION_FILE, simulation.is_some()));
        input.crypto = crypto;
        input.load = load;
        input.attacks = attacks;
        input.simulation = simulation;
        Ok(input)
    }
}

/// What [`write_report`] wrote.
#[derive(Clone, Debug)]
pub struct ReportOutput {
    /// The HTML file.
    pub html: PathBuf,
    /// The charts, in the order of the report (each with its PNG).
    pub charts: Vec<Chart>,
    /// Sections listed at the end as "not measured in this run".
    pub missing: Vec<String>,
}

/// Writes the report to `out` (HTML) and its charts as PNG files beside it.
pub fn write_report(input: &ReportInput, out: &Path) -> Result<ReportOutput> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("report")
        .to_string();
    let png = |id: &str| dir.join(format!("{stem}-{id}.png"));
    let (page, charts, missing) = html::build(input, &png)?;
    std::fs::write(out, page).with_context(|| format!("{}", out.display()))?;
    Ok(ReportOutput {
        html: out.to_path_buf(),
        charts,
        missing,
    })
}

/// Groups series by sensor, in sensor-name order.
fn by_sensor(series: &[SensorSeries]) -> BTreeMap<(String, String), Vec<&SensorSeries>> {
    let mut m: BTreeMap<(String, String), Vec<&SensorSeries>> = BTreeMap::new();
    for s in series {
        m.entry((s.sensor.clone(), s.unit.clone()))
            .or_default()
            .push(s);
    }
    m
}
