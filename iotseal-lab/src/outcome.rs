//! What an attack produced: attempts, which checks held, refusals seen, stored forgeries.

use std::collections::BTreeMap;

use serde::Serialize;

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
    /// Messages, records or connections the attacker sent (or altered) through the live system.
    pub attempts: u64,
    /// How many of those were refused or had no effect.
    pub blocked_attempts: u64,
    /// Whether the attack was stopped: every check held and nothing forged was stored. Null
    /// when not applicable, or when the lab itself failed (see `error`).
    pub blocked: Option<bool>,
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
            attempts: 0,
            blocked_attempts: 0,
            blocked: None,
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
            attempts: 0,
            blocked_attempts: 0,
            blocked: None,
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
