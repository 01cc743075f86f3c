//! Tables of outcomes: text for the terminal, HTML for the report.

use std::fmt::Write as _;

use serde::Serialize;

use crate::outcome::{AttackOutcome, Judged};

/// One attack against both targets.
#[derive(Clone, Debug, Serialize)]
pub struct SideBySide {
    /// Attack name.
    pub name: String,
    /// Against iotseal.
    pub iotseal: AttackOutcome,
    /// Against the legacy design.
    pub legacy: AttackOutcome,
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The attack table: attack, attempts, verdict, stored forgeries, what "blocked" means; then
/// the reason (and, for attacks judged by service, the honest device's traffic) under it.
pub fn table(outcomes: &[AttackOutcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>8} {:>8} {:>9}  blocked means",
        "attack", "attempts", "blocked", "forgeries"
    );
    let pad = " ".repeat(51);
    for o in outcomes {
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>8} {:>9}  {}",
            o.name,
            o.attempts,
            o.blocked_label(),
            o.stored_forgeries,
            o.criterion
        );
        if let Some(s) = &o.service {
            let _ = writeln!(out, "{pad}honest device: {}", s.summary());
        }
        if !o.reason.is_empty() {
            let _ = writeln!(out, "{pad}why: {}", cut(&o.reason, 150));
        }
    }
    let applicable: Vec<_> = outcomes.iter().filter(|o| o.applicable).collect();
    let blocked = applicable
        .iter()
        .filter(|o| o.blocked == Some(true))
        .count();
    let _ = writeln!(
        out,
        "\n{blocked} of {} applicable attacks blocked; {} not applicable; {} stored forgeries in total",
        applicable.len(),
        outcomes.len() - applicable.len(),
        outcomes.iter().map(|o| o.stored_forgeries).sum::<u64>()
    );
    out
}

/// One target's verdict in a few words: for attacks judged by service the honest device's
/// traffic, otherwise the attempts refused.
fn short(o: &AttackOutcome) -> String {
    let label = o.blocked_label();
    let verdict = match label {
        "yes" => "blocked",
        "NO" => "NOT blocked",
        other => return other.into(),
    };
    let failed = o.checks.iter().find(|c| !c.held);
    match (o.judged_by, &o.service) {
        // Served, yet not blocked: say which other condition failed.
        (Judged::Service, Some(s)) if label == "NO" && s.served() && failed.is_some() => {
            // Whole: a cut condition could read as its opposite.
            format!(
                "{verdict} (failed: {})",
                failed.map(|c| c.what.as_str()).unwrap_or_default()
            )
        }
        (Judged::Service, Some(s)) => format!(
            "{verdict} (honest: {}/{} sessions, {}/{} readings{})",
            s.handshakes_completed,
            s.handshakes_attempted,
            s.readings_stored,
            s.readings_sent,
            if s.requests_refused > 0 {
                format!(", {} refused", s.requests_refused)
            } else {
                String::new()
            }
        ),
        _ if label == "yes" => format!(
            "{verdict} ({}/{} attempts stopped)",
            o.blocked_attempts, o.attempts
        ),
        _ => format!(
            "{verdict} ({} of {} through, {} forged)",
            o.attempts - o.blocked_attempts,
            o.attempts,
            o.stored_forgeries
        ),
    }
}

/// Both targets, one row per attack.
pub fn side_by_side_table(rows: &[SideBySide]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<22} {:<48} {:<48}", "attack", "iotseal", "legacy");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<22} {:<48} {:<48}",
            r.name,
            short(&r.iotseal),
            short(&r.legacy)
        );
        let _ = writeln!(out, "{:<22} blocked means: {}", "", r.iotseal.criterion);
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cell(o: &AttackOutcome) -> String {
    let class = match o.blocked_label() {
        "yes" => "blocked",
        "NO" => "through",
        _ => "na",
    };
    format!(
        "<td class=\"{class}\"><b>{}</b><br><small>{}</small></td>",
        esc(&short(o)),
        esc(&cut(&o.reason, 300))
    )
}

/// An HTML table (a fragment with its own small style), iotseal vs legacy, attack by attack.
pub fn side_by_side_html(rows: &[SideBySide]) -> String {
    let mut out = String::from(
        "<style>table.attacks{border-collapse:collapse}table.attacks td,table.attacks th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}td.blocked{background:#e6f4ea}td.through{background:#fce8e6}td.na{background:#f1f3f4;color:#555}</style>\n<table class=\"attacks\">\n<tr><th>attack</th><th>what was tried</th><th>blocked means</th><th>iotseal</th><th>legacy</th></tr>\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td><small>{}</small></td><td><small>{}</small></td>{}{}</tr>",
            esc(&r.name),
            esc(&r.iotseal.description),
            esc(&r.iotseal.criterion),
            cell(&r.iotseal),
            cell(&r.legacy)
        );
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Service, criterion, judged_by};

    fn outcome(
        name: &str,
        target: &str,
        attempts: u64,
        refused: u64,
        blocked: bool,
    ) -> AttackOutcome {
        let mut o = AttackOutcome::failed(name, target, "", String::new());
        o.error = None;
        o.reason = String::new();
        o.criterion = criterion(name).into();
        o.judged_by = judged_by(name);
        o.attempts = attempts;
        o.blocked_attempts = refused;
        o.blocked = Some(blocked);
        o
    }

    #[test]
    fn a_flood_is_shown_by_the_honest_device_not_by_refused_packets() {
        let mut flood = outcome("handshake-flood", "iotseal", 1536, 1024, true);
        flood.service = Some(Service {
            handshakes_attempted: 3,
            handshakes_completed: 3,
            readings_sent: 12,
            readings_stored: 12,
            worst_latency_ms: 3600.0,
            ..Service::default()
        });
        let mut legacy = outcome("handshake-flood", "legacy", 1200, 1200, true);
        legacy.service = flood.service.clone();
        let rows = [
            SideBySide {
                name: "handshake-flood".into(),
                iotseal: flood.clone(),
                legacy,
            },
            SideBySide {
                name: "replay-immediate".into(),
                iotseal: outcome("replay-immediate", "iotseal", 24, 24, true),
                legacy: outcome("replay-immediate", "legacy", 24, 0, false),
            },
        ];
        let t = side_by_side_table(&rows);
        assert!(
            t.contains("blocked (honest: 3/3 sessions, 12/12 readings)"),
            "{t}"
        );
        assert!(!t.contains("1024"), "no share of the flood's packets: {t}");
        assert!(t.contains("blocked (24/24 attempts stopped)"), "{t}");
        assert!(t.contains("NOT blocked (24 of 24 through"), "{t}");
        assert!(t.contains(&format!("blocked means: {}", criterion("handshake-flood"))));
        let html = side_by_side_html(&rows);
        assert!(html.contains("<th>blocked means</th>"));
        let t = table(std::slice::from_ref(&flood));
        assert!(
            t.contains("honest device: sessions 3/3, readings 12/12 stored"),
            "{t}"
        );
        // Served, but slow connections never cut off: the failed condition is what is shown.
        let mut slow = flood.clone();
        slow.name = "slow-client".into();
        slow.blocked = Some(false);
        slow.checks = vec![crate::outcome::Check {
            what: "every slow connection was cut off in time (0 of 9)".into(),
            held: false,
        }];
        let t = side_by_side_table(&[SideBySide {
            name: "slow-client".into(),
            iotseal: flood,
            legacy: slow,
        }]);
        assert!(
            t.contains("NOT blocked (failed: every slow connection was cut off in time (0 of 9))"),
            "{t}"
        );
    }
}
