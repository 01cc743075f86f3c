//! What an attack produced: attempts, which checks held, refusals seen, stored forgeries, and
//! for floods and exhaustion attacks the legitimate traffic served while they ran.

use std::collections::BTreeMap;

use serde::Serialize;

/// How an attack's verdict is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Judged {
    /// By the attacker's attempts: each must be refused or have no effect, and nothing forged
    /// may be stored.
    EachAttempt,
    /// By the legitimate traffic served while the attack ran (floods and exhaustion attacks):
    /// an honest device running at the same time must be served. Refusing the attacker's own
    /// requests is how a target may get there, not the measure.
    Service,
}

/// Legitimate traffic while an attack ran: honest devices, running concurrently with the
/// attack, take readings at a steady rate and deliver them through sessions they open as
/// needed (a handshake; for the legacy design its per-message key fetch), retrying on Busy
/// or no answer as a device does.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Service {
    /// How long the honest device ran alongside the attack, seconds.
    pub secs: f64,
    /// Sessions the honest devices set out to open (for the legacy design: key fetches).
    pub handshakes_attempted: u64,
    /// Sessions opened within [`SERVICE_DEADLINE_MS`] of setting out, retrying when refused
    /// with Busy or not answered.
    pub handshakes_completed: u64,
    /// Requests of the honest devices the target refused or left unanswered (each retry
    /// counts).
    pub requests_refused: u64,
    /// Refused or unanswered requests by what the device was doing and why (`opening a
    /// session: gateway refused: Busy`, `sending readings: no answer: ...`).
    pub refusals: BTreeMap<String, u64>,
    /// Readings the honest devices took while the attack ran (and set out to deliver).
    pub readings_sent: u64,
    /// Of those, readings acknowledged within [`SERVICE_DEADLINE_MS`] of being taken and found
    /// in storage byte for byte.
    pub readings_stored: u64,
    /// Median time to open a session, or from taking a reading to its acknowledgement, ms.
    pub median_latency_ms: f64,
    /// Worst of those, ms (a session never opened, or a reading never acknowledged, counts
    /// until the device gave up).
    pub worst_latency_ms: f64,
}

/// How long an honest device waits to open a session or get a reading acknowledged before it
/// counts as not served, milliseconds.
pub const SERVICE_DEADLINE_MS: u64 = 5000;

impl Service {
    /// Whether legitimate traffic was served: the devices tried, none of their requests was
    /// refused or left unanswered, every session they set out to open was opened and every
    /// reading they took was stored, each within [`SERVICE_DEADLINE_MS`]. A Busy answer to a
    /// legitimate device is a refusal of legitimate traffic, however soon a retry gets through.
    pub fn served(&self) -> bool {
        self.handshakes_attempted > 0
            && self.requests_refused == 0
            && self.handshakes_completed == self.handshakes_attempted
            && self.readings_sent > 0
            && self.readings_stored == self.readings_sent
            && self.worst_latency_ms <= SERVICE_DEADLINE_MS as f64
    }

    /// `sessions 12/12, readings 48/48 stored, worst 210 ms`.
    pub fn summary(&self) -> String {
        format!(
            "sessions {}/{}, readings {}/{} stored, worst {:.0} ms{}",
            self.handshakes_completed,
            self.handshakes_attempted,
            self.readings_stored,
            self.readings_sent,
            self.worst_latency_ms,
            if self.requests_refused > 0 {
                format!(
                    ", {} requests refused ({})",
                    self.requests_refused,
                    tally(&self.refusals)
                )
            } else {
                String::new()
            }
        )
    }
}

/// What "blocked" means for an attack: the same criterion for both targets.
pub fn criterion(name: &str) -> &'static str {
    match name {
        "mitm-key-substitution" => {
            "no session with the attacker in the middle, no reading read by it, nothing altered stored"
        }
        "mitm-tls" => {
            "the device refuses the attacker's certificate, and a TLS middlebox it trusts reads no reading"
        }
        "replay-immediate" | "replay-delayed" | "replay-cross-session" | "replay-after-rekey" => {
            "no replayed message accepted, nothing stored twice"
        }
        "replay-handshake" => {
            "a replayed hello or finish opens no session and stores nothing again"
        }
        "reorder" => "reordered readings stored exactly once; re-deliveries not processed again",
        "tamper" | "truncate" | "extend" => "no altered message accepted, nothing altered stored",
        "downgrade" => "no session on the weaker suite the attacker tries to force",
        "impersonate-unknown" | "impersonate-wrong-key" => {
            "no message accepted and nothing stored under the claimed id"
        }
        "revoked-device" => "nothing accepted from the device after its revocation",
        "stale-timestamp" | "future-timestamp" => {
            "every message dated outside the allowed clock skew or record age refused"
        }
        "oversize-body" => "every body above the size limit refused (413)",
        "malformed" => {
            "every random body refused, nothing accepted; an honest device served afterwards"
        }
        "slow-client" => {
            "honest devices served while slow connections are open (no request refused, every reading stored within 5 s); each slow one cut off at its timeout"
        }
        "handshake-flood" => {
            "honest devices served during the flood (no request refused, every session opened and reading stored within 5 s); the flood opens no session, memory bounded"
        }
        "connection-hog" => {
            "another address served while one tries to hold up to 10,000 connections (nothing refused, all stored within 2 s); the hog held to the per-address cap"
        }
        "hello-flood-addresses" => {
            "honest devices served during valid hellos from 250 addresses (nothing refused, every session opened and reading stored within 5 s); no session for the flood"
        }
        "proxy-bucket-drain" => {
            "honest devices behind a shared proxy served while an attacker there exceeds the per-address handshake rate (nothing refused, all stored within 5 s)"
        }
        "mqtt-eavesdrop" => "no reading, payload or device id visible to the broker",
        "mqtt-replay" | "mqtt-cross-device" => {
            "no replayed or moved request accepted, opens a session, or is stored again"
        }
        "mqtt-inject" => "no injected request accepted; no answer published outside the inbox",
        "mqtt-replay-answers" => {
            "forged answers acknowledge nothing: every reading stored once, none lost"
        }
        _ => "every attempt refused or without effect, nothing forged stored",
    }
}

/// How the verdict of attack `name` is reached.
pub fn judged_by(name: &str) -> Judged {
    match name {
        "handshake-flood"
        | "slow-client"
        | "connection-hog"
        | "hello-flood-addresses"
        | "proxy-bucket-drain" => Judged::Service,
        _ => Judged::EachAttempt,
    }
}

/// The result of one attack against one target.
#[derive(Clone, Debug, Serialize)]
pub struct AttackOutcome {
    /// Attack name (`replay-immediate`, ...).
    pub name: String,
    /// `iotseal` or `legacy`.
    pub target: String,
    /// What was tried.
    pub description: String,
    /// False when the attack does not apply to this target (then `blocked` is null).
    pub applicable: bool,
    /// What "blocked" means for this attack ([`criterion`]; the same for both targets).
    pub criterion: String,
    /// How the verdict is reached: by each attempt, or by the legitimate traffic served
    /// while the attack ran.
    pub judged_by: Judged,
    /// Messages, records or connections the attacker sent (or altered) through the live system.
    pub attempts: u64,
    /// How many of those were refused or had no effect. For attacks judged by service (floods,
    /// slow clients) the count of the attacker's requests the target refused outright: the
    /// verdict does not depend on it (a target may serve a flood's requests and still serve
    /// honest devices).
    pub blocked_attempts: u64,
    /// Whether the attack was stopped: every check in `checks` held (for attacks judged by
    /// service, among them that legitimate traffic was served) and nothing forged was stored.
    /// Null when not applicable, or when the lab itself failed (see `error`).
    pub blocked: Option<bool>,
    /// For attacks judged by service: the honest device's traffic while the attack ran.
    pub service: Option<Service>,
    /// Which check stopped it (refusal counters seen at the gateway, device-side errors), or
    /// why it succeeded.
    pub reason: String,
    /// Readings in storage that the honest device did not send (or altered), plus duplicates
    /// beyond one per message id.
    pub stored_forgeries: u64,
    /// Refusal counter deltas at the gateway during the attack, by reason.
    pub refusals: BTreeMap<String, u64>,
    /// Errors the honest device reported, by kind.
    pub device_errors: BTreeMap<String, u64>,
    /// The checks the verdict is computed from.
    pub checks: Vec<Check>,
    /// Observations (what the attacker read, what was stored, timings).
    pub evidence: Vec<String>,
    /// The lab could not run this attack.
    pub error: Option<String>,
    /// Wall time, milliseconds.
    pub elapsed_ms: u64,
}

/// One observed condition.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What must hold for the attack to count as blocked.
    pub what: String,
    /// Whether it held.
    pub held: bool,
}

impl AttackOutcome {
    /// An outcome for an attack that does not apply to `target`.
    pub fn not_applicable(name: &str, target: &str, why: &str) -> Self {
        Self {
            name: name.into(),
            target: target.into(),
            description: why.into(),
            applicable: false,
            criterion: criterion(name).into(),
            judged_by: judged_by(name),
            attempts: 0,
            blocked_attempts: 0,
            blocked: None,
            service: None,
            reason: format!("not applicable: {why}"),
            stored_forgeries: 0,
            refusals: BTreeMap::new(),
            device_errors: BTreeMap::new(),
            checks: Vec::new(),
            evidence: Vec::new(),
            error: None,
            elapsed_ms: 0,
        }
    }

    /// An outcome for an attack the lab failed to run.
    pub fn failed(name: &str, target: &str, description: &str, error: String) -> Self {
        Self {
            name: name.into(),
            target: target.into(),
            description: description.into(),
            applicable: true,
            criterion: criterion(name).into(),
            judged_by: judged_by(name),
            attempts: 0,
            blocked_attempts: 0,
            blocked: None,
            service: None,
            reason: format!("lab error: {error}"),
            stored_forgeries: 0,
            refusals: BTreeMap::new(),
            device_errors: BTreeMap::new(),
            checks: Vec::new(),
            evidence: Vec::new(),
            error: Some(error),
            elapsed_ms: 0,
        }
    }

    /// `yes`, `NO` or `n/a` (and `error`).
    pub fn blocked_label(&self) -> &'static str {
        match (self.applicable, self.blocked, &self.error) {
            (false, _, _) => "n/a",
            (_, _, Some(_)) => "error",
            (_, Some(true), _) => "yes",
            (_, Some(false), _) => "NO",
            (_, None, None) => "?",
        }
    }
}

/// What an attack function reports before the common bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) attempts: u64,
    pub(crate) blocked_attempts: u64,
    pub(crate) checks: Vec<Check>,
    pub(crate) evidence: Vec<String>,
    pub(crate) device_errors: BTreeMap<String, u64>,
    /// Legitimate traffic while the attack ran (attacks judged by service).
    pub(crate) service: Option<Service>,
    /// Extra words for the reason (what stopped it, or what went through).
    pub(crate) notes: Vec<String>,
}

impl Findings {
    /// Counts an attempt; `blocked` says whether it was refused or had no effect.
    pub(crate) fn attempt(&mut self, blocked: bool) {
        self.attempts += 1;
        if blocked {
            self.blocked_attempts += 1;
        }
    }

    /// Adds a check.
    pub(crate) fn check(&mut self, what: impl Into<String>, held: bool) {
        self.checks.push(Check {
            what: what.into(),
            held,
        });
    }

    /// Adds an observation.
    pub(crate) fn saw(&mut self, what: impl Into<String>) {
        self.evidence.push(what.into());
    }

    /// Counts a device-side error by kind.
    pub(crate) fn device_error(&mut self, kind: impl Into<String>) {
        *self.device_errors.entry(kind.into()).or_default() += 1;
    }

    /// Records the legitimate traffic served while the attack ran, and the check the verdict
    /// of an attack judged by service rests on.
    pub(crate) fn served(&mut self, s: Service, during: &str) {
        self.check(
            format!("honest devices were served {during} ({})", s.summary()),
            s.served(),
        );
        self.service = Some(s);
    }

    /// Adds a note to the reason.
    pub(crate) fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }
}

/// `a×3, b×1`.
pub(crate) fn tally(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Service {
        Service {
            secs: 5.0,
            handshakes_attempted: 3,
            handshakes_completed: 3,
            readings_sent: 12,
            readings_stored: 12,
            median_latency_ms: 10.0,
            worst_latency_ms: 3600.0,
            ..Service::default()
        }
    }

    #[test]
    fn served_needs_every_session_every_reading_in_time() {
        assert!(served().served());
        let mut s = served();
        s.handshakes_completed = 2;
        assert!(!s.served(), "a session not opened");
        let mut s = served();
        s.readings_stored = 11;
        assert!(!s.served(), "a reading not stored");
        let mut s = served();
        s.worst_latency_ms = SERVICE_DEADLINE_MS as f64 + 1.0;
        assert!(!s.served(), "too slow");
        assert!(!Service::default().served(), "nothing tried is not served");
        // A Busy answer to an honest device is legitimate traffic refused, even if a retry got
        // through in time.
        let mut s = served();
        s.requests_refused = 20;
        assert!(!s.served());
        assert!(
            s.summary()
                .contains("sessions 3/3, readings 12/12 stored, worst 3600 ms")
        );
    }

    #[test]
    fn every_attack_says_what_blocked_means() {
        let fallback = criterion("no such attack");
        for n in crate::ATTACKS.iter().chain(crate::MQTT_ATTACKS) {
            assert_ne!(criterion(n), fallback, "{n} has its own criterion");
            assert!(criterion(n).len() < 170, "{n}: keep it short");
        }
        assert_eq!(judged_by("handshake-flood"), Judged::Service);
        assert_eq!(judged_by("slow-client"), Judged::Service);
        assert_eq!(judged_by("replay-immediate"), Judged::EachAttempt);
        let o = AttackOutcome::not_applicable("downgrade", "legacy", "no negotiation");
        assert_eq!(o.criterion, criterion("downgrade"));
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["judged_by"], "each-attempt");
        assert!(json["criterion"].as_str().is_some_and(|c| !c.is_empty()));
    }
}
