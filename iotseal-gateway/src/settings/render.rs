//! Text generated from the declaration: the commented `gateway.toml` and the reference
//! `docs/settings.md`. The committed copies (`docs/gateway.example.toml`, `docs/settings.md`)
//! are checked against these by a test; `IOTSEAL_BLESS=1 cargo test -p iotseal-gateway --lib
//! settings` rewrites them.

use std::fmt::Write as _;

use super::Settings;
use super::declare::Field;

/// The command that rewrites the generated files.
pub(crate) const REGENERATE: &str = "IOTSEAL_BLESS=1 cargo test -p iotseal-gateway --lib settings";

impl Settings {
    /// `gateway.toml` listing every setting with its documentation, with the values of
    /// `self` (for a new gateway: the defaults, plus its listen address, key files and TLS
    /// files). Parsing it gives `self` back.
    pub fn commented_toml(&self) -> String {
        let mut out = String::from(
            "# iotseal gateway configuration: every setting, with its default unless it was set when\n\
             # this file was written. Relative paths are relative to this file's directory. Each\n\
             # setting is also an IOTSEAL_* environment variable and a flag of\n\
             # `iotseal gateway run`, which override this file (docs/settings.md names them).\n",
        );
        for section in Self::sections() {
            if !section.name.is_empty() {
                let _ = write!(out, "\n[{}]\n", section.name);
                for l in section.doc {
                    push_comment(&mut out, l);
                }
                out.push('\n');
            } else {
                out.push('\n');
            }
            for f in Self::fields().iter().filter(|f| f.section == section.name) {
                for l in f.doc_lines() {
                    push_comment(&mut out, l);
                }
                match self.value(&f.key()) {
                    Some(v) => {
                        let _ = writeln!(out, "{} = {v}", f.name);
                    }
                    None => {
                        let example = toml::Value::String(f.example().unwrap_or("").to_string());
                        let _ = writeln!(out, "# {} = {example}", f.name);
                    }
                }
            }
        }
        out
    }

    /// The commented `gateway.toml` of the defaults (`docs/gateway.example.toml`).
    pub fn template() -> String {
        Self::default().commented_toml()
    }

    /// The settings reference, `docs/settings.md`.
    pub fn reference_markdown() -> String {
        let d = Self::default();
        let mut out = format!(
            "# Gateway settings\n\
             \n\
             <!-- Generated from the declaration in iotseal-gateway/src/settings/mod.rs by\n\
             `{REGENERATE}`; do not edit. -->\n\
             \n\
             Each setting of `iotseal gateway run` is read from, later ones winning: its default,\n\
             the configuration file (`--config gateway.toml`; `iotseal gateway init` writes one\n\
             listing every setting, like [gateway.example.toml](gateway.example.toml)), its\n\
             `IOTSEAL_*` environment variable, its flag. Variables and flags take a TOML value\n\
             (`42`, `true`, `[\"a\", \"b\"]`) or else a plain string; a list may also be given as\n\
             `a,b`. A name in the file, or an `IOTSEAL_*` variable, that is not a setting is\n\
             refused, and so is a value out of its bounds (docs/limits.md). Relative paths are\n\
             relative to the configuration file's directory.\n"
        );
        for section in Self::sections() {
            if section.name.is_empty() {
                out.push_str("\n## Top level\n\n");
            } else {
                let _ = write!(out, "\n## `[{}]`\n\n", section.name);
                let doc: Vec<&str> = section
                    .doc
                    .iter()
                    .map(|l| l.strip_prefix(' ').unwrap_or(l))
                    .collect();
                let _ = writeln!(out, "{}\n", doc.join(" "));
            }
            out.push_str("| Setting | Type | Default | Flag, variable | Meaning |\n");
            out.push_str("|---|---|---|---|---|\n");
            for f in Self::fields().iter().filter(|f| f.section == section.name) {
                let default = d
                    .value(&f.key())
                    .map_or_else(|| "unset".to_string(), |v| format!("`{v}`"));
                let doc = f.doc_lines().collect::<Vec<_>>().join(" ");
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | `--{}` `{}` | {} |",
                    f.key(),
                    kind(f),
                    cell(&default),
                    f.flag(),
                    f.env(),
                    cell(&doc),
                );
            }
        }
        out
    }
}

fn push_comment(out: &mut String, line: &str) {
    let line = line.strip_prefix(' ').unwrap_or(line);
    if line.is_empty() {
        out.push_str("#\n");
    } else {
        let _ = writeln!(out, "# {line}");
    }
}

/// A setting's type in words.
fn kind(f: &Field) -> &'static str {
    match f.ty.replace(' ', "").as_str() {
        "usize" | "u64" | "u32" | "u16" => "integer",
        "f64" => "number",
        "bool" => "boolean",
        "String" => "string",
        "PathBuf" => "path",
        "Option<PathBuf>" => "path (optional)",
        "Vec<PathBuf>" => "list of paths",
        "Vec<Suite>" => "list of suites",
        "SocketAddr" => "address",
        "StorageSync" => "`full` or `normal`",
        _ => f.ty,
    }
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}
