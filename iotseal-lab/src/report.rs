//! Tables of outcomes: text for the terminal, HTML for the report.

use std::fmt::Write as _;

use serde::Serialize;

use crate::outcome::AttackOutcome;

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

/// The attack table: attack, attempts, blocked, reason, stored forgeries.
pub fn table(outcomes: &[AttackOutcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>8} {:>8} {:>9}  reason",
        "attack", "attempts", "blocked", "forgeries"
    );
    for o in outcomes {
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>8} {:>9}  {}",
            o.name,
            o.attempts,
            o.blocked_label(),
            o.stored_forgeries,
            cut(&o.reason, 150)
        );
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

fn short(o: &AttackOutcome) -> String {
    match o.blocked_label() {
        "n/a" => "n/a".into(),
        "yes" => format!("blocked ({}/{})", o.blocked_attempts, o.attempts),
        "NO" => format!(
            "NOT blocked ({} of {} through, {} forged)",
            o.attempts - o.blocked_attempts,
            o.attempts,
            o.stored_forgeries
        ),
        other => other.into(),
    }
}

/// Both targets, one row per attack.
pub fn side_by_side_table(rows: &[SideBySide]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<22} {:<36} {:<36}", "attack", "iotseal", "legacy");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<22} {:<36} {:<36}",
            r.name,
            short(&r.iotseal),
            short(&r.legacy)
        );
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
        "<style>table.attacks{border-collapse:collapse}table.attacks td,table.attacks th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}td.blocked{background:#e6f4ea}td.through{background:#fce8e6}td.na{background:#f1f3f4;color:#555}</style>\n<table class=\"attacks\">\n<tr><th>attack</th><th>what was tried</th><th>iotseal</th><th>legacy</th></tr>\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td><small>{}</small></td>{}{}</tr>",
            esc(&r.name),
            esc(&r.iotseal.description),
            cell(&r.iotseal),
            cell(&r.legacy)
        );
    }
    out.push_str("</table>\n");
    out
}
