//! iotseal threat lab: a live attacker on the wire between honest devices and a gateway.
//!
//! The lab runs an intercepting proxy on loopback. Devices talk plain HTTP to it (a
//! TLS-terminating middlebox: exactly where end-to-end protection matters), and it forwards
//! to the gateway over pinned HTTPS; for `mitm-tls` it presents its own certificate instead.
//! Each attack reads, replays, reorders, rewrites, truncates, extends, floods or impersonates
//! through the live system, and its verdict is computed from what the lab observes: refusal
//! counters at the gateway, errors at the device, and storage compared with what the honest
//! devices really sent.
//!
//! Two targets: `iotseal` (a gateway started in-process with small limits, or a running one),
//! and `legacy`, the original design rebuilt inside the lab only (unauthenticated P-256 ECDH
//! per message, HKDF, AES-CFB, HMAC-SHA256 over data and timestamp, a 300-second window, no
//! replay memory, a global server key rotated every 5 messages).
//!
//! Each outcome says what "blocked" means for its attack ([`criterion`], the same for both
//! targets). Most attacks are judged by each attempt; floods and slow clients
//! ([`Judged::Service`]) by whether honest devices running at the same time were served
//! ([`Service`]): none of their requests refused, every reading stored within
//! [`SERVICE_DEADLINE_MS`].
//!
//! ```no_run
//! # async fn f() {
//! use iotseal_lab::{LabOptions, Target, run_all};
//! let outcomes = run_all(Target::Iotseal, &LabOptions::default()).await;
//! for o in &outcomes {
//!     println!("{}: {} ({})", o.name, o.blocked_label(), o.criterion);
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attacks;
mod broker;
mod device;
mod floods;
pub mod legacy;
mod mqtt_attacks;
mod net;
mod outcome;
mod proxy;
mod report;
mod service;
mod target;
mod wire;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

pub use net::Answer;
pub use outcome::{
    AttackOutcome, Check, Judged, SERVICE_DEADLINE_MS, Service, criterion, judged_by,
};
pub use proxy::{Exchange, Hook, Proxy, Verdict};
pub use report::{SideBySide, side_by_side_html, side_by_side_table, table};
pub use service::{OPENING_A_SESSION, SENDING_READINGS};
pub use target::{GatewayLimits, GatewaySpec};

/// A lab failure (setup, I/O): not a verdict about the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabError(pub String);

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}

/// What is attacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The iotseal gateway.
    Iotseal,
    /// The original design, rebuilt inside the lab.
    Legacy,
}

impl Target {
    /// `iotseal` or `legacy`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Iotseal => "iotseal",
            Self::Legacy => "legacy",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = LabError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "iotseal" => Ok(Self::Iotseal),
            "legacy" => Ok(Self::Legacy),
            o => Err(LabError(format!(
                "unknown target {o:?} (expected iotseal or legacy)"
            ))),
        }
    }
}

/// Every attack, in the order they run.
pub const ATTACKS: &[&str] = &[
    "mitm-key-substitution",
    "mitm-tls",
    "replay-immediate",
    "replay-delayed",
    "replay-cross-session",
    "replay-after-rekey",
    "replay-handshake",
    "reorder",
    "tamper",
    "truncate",
    "extend",
    "downgrade",
    "impersonate-unknown",
    "impersonate-wrong-key",
    "revoked-device",
    "stale-timestamp",
    "future-timestamp",
    "oversize-body",
    "malformed",
    "slow-client",
    "handshake-flood",
    "connection-hog",
    "hello-flood-addresses",
    "proxy-bucket-drain",
];

/// The broker-side attacks ([`run_mqtt`]), in the order they run.
pub const MQTT_ATTACKS: &[&str] = &[
    "mqtt-eavesdrop",
    "mqtt-replay",
    "mqtt-inject",
    "mqtt-replay-answers",
    "mqtt-cross-device",
];

/// Checks attack names (for `--only`).
pub fn check_names(names: &[String]) -> Result<(), LabError> {
    check_in(names, ATTACKS)
}

/// Checks broker-side attack names (for `--only` with `--mqtt`).
pub fn check_mqtt_names(names: &[String]) -> Result<(), LabError> {
    check_in(names, MQTT_ATTACKS)
}

fn check_in(names: &[String], known: &[&str]) -> Result<(), LabError> {
    for n in names {
        if !known.contains(&n.as_str()) {
            return Err(LabError(format!(
                "unknown attack {n:?}; known: {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// How to run the lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// The iotseal gateway to attack (ignored by the legacy target, which always runs in this
    /// process).
    pub gateway: GatewaySpec,
    /// Run only these attacks (empty: all).
    pub only: Vec<String>,
    /// Print each attack's name to stderr as it starts.
    pub progress: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            gateway: GatewaySpec::InProcess { data_dir: None },
            only: Vec::new(),
            progress: false,
        }
    }
}

impl LabOptions {
    fn selected(&self) -> Vec<&'static str> {
        ATTACKS
            .iter()
            .copied()
            .filter(|a| self.only.is_empty() || self.only.iter().any(|o| o == a))
            .collect()
    }
}

/// Runs the selected attacks against `target`, one after the other, through the live system.
pub async fn run_all(target: Target, options: &LabOptions) -> Vec<AttackOutcome> {
    let mut out = Vec::new();
    for n in &options.only {
        if !ATTACKS.contains(&n.as_str()) {
            out.push(AttackOutcome::failed(
                n,
                target.name(),
                "",
                format!("unknown attack {n:?}"),
            ));
        }
    }
    let names = options.selected();
    out.extend(match target {
        Target::Iotseal => attacks::run(&names, options).await,
        Target::Legacy => legacy::attacks::run(&names, options).await,
    });
    out
}

/// Runs the selected broker-side attacks (`options.only` names among [`MQTT_ATTACKS`]; empty:
/// all) against iotseal over MQTT: the lab starts its gateway in this process with the MQTT
/// binding on the broker at `broker` (`HOST:PORT`, plain MQTT) under a topic prefix of its own;
/// honest SDK devices talk to it through the broker, and an attacker client of the same broker
/// records, replays, injects and answers on the iotseal topics.
///
/// ```no_run
/// # async fn f() {
/// use iotseal_lab::{LabOptions, run_mqtt};
/// let outcomes = run_mqtt(&LabOptions::default(), "127.0.0.1:1883").await;
/// assert!(outcomes.iter().all(|o| o.blocked == Some(true)));
/// # }
/// ```
pub async fn run_mqtt(options: &LabOptions, broker: &str) -> Vec<AttackOutcome> {
    let mut out = Vec::new();
    for n in &options.only {
        if !MQTT_ATTACKS.contains(&n.as_str()) {
            out.push(AttackOutcome::failed(
                n,
                "iotseal",
                "",
                format!("unknown attack {n:?}"),
            ));
        }
    }
    let names: Vec<&str> = MQTT_ATTACKS
        .iter()
        .copied()
        .filter(|a| options.only.is_empty() || options.only.iter().any(|o| o == a))
        .collect();
    out.extend(mqtt_attacks::run(&names, options, broker).await);
    out
}

/// Runs the selected attacks against both targets, for the report: one row per attack.
pub async fn side_by_side(options: &LabOptions) -> Vec<SideBySide> {
    let a = run_all(Target::Iotseal, options).await;
    let b = run_all(Target::Legacy, options).await;
    a.into_iter()
        .zip(b)
        .map(|(iotseal, legacy)| SideBySide {
            name: iotseal.name.clone(),
            iotseal,
            legacy,
        })
        .collect()
}

/// A new directory under the system's temporary directory.
pub(crate) fn temp_dir(prefix: &str) -> Result<PathBuf, LabError> {
    let p = iotseal_crypto_awslc::default_provider();
    let tag = hex::encode(p.random_vec(6).map_err(|e| LabError(format!("{e:?}")))?);
    let d = std::env::temp_dir().join(format!("{prefix}-{tag}"));
    std::fs::create_dir_all(&d).map_err(|e| LabError(format!("{}: {e}", d.display())))?;
    Ok(d)
}

/// Resident memory of this process, KiB (Linux; None elsewhere).
pub(crate) fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
