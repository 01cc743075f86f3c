//! Layering: the declared defaults, then a file, then `IOTSEAL_*` environment variables, then
//! command-line flags. Every layer goes through the same per-setting assignment (the field's
//! own `Deserialize`), refuses a name that is not a setting, and names the setting and where
//! its value came from (`gateway.toml:12`, `IOTSEAL_MAX_BODY`, `--max-body`) when it fails.

use std::path::Path;
use std::sync::LazyLock;

use super::Settings;
use super::declare::{Field, Input, SectionDoc};
use crate::GatewayError;

static FIELDS: LazyLock<Vec<Field>> = LazyLock::new(|| {
    let mut v = Vec::new();
    Settings::collect_fields(&mut v);
    v
});

static SECTIONS: LazyLock<Vec<SectionDoc>> = LazyLock::new(|| {
    let mut v = Vec::new();
    Settings::collect_sections(&mut v);
    v
});

/// Why one setting could not be set.
enum Refused {
    /// No such setting.
    Unknown,
    /// The value does not fit the setting.
    Value(String),
}

fn config(m: String) -> GatewayError {
    GatewayError::Config(m)
}

impl Settings {
    /// Every setting, in declaration order (top level first, then each section).
    pub fn fields() -> &'static [Field] {
        &FIELDS
    }

    /// Every section, in declaration order; the first is the top level (empty name).
    pub fn sections() -> &'static [SectionDoc] {
        &SECTIONS
    }

    /// The setting with this dotted name.
    pub fn field(key: &str) -> Option<&'static Field> {
        let (section, name) = split(key);
        FIELDS
            .iter()
            .find(|f| f.section == section && f.name == name)
    }

    /// Every setting's dotted name, sorted (`limits.max_body`, `listen`, ...).
    pub fn keys() -> Vec<String> {
        let mut v: Vec<String> = FIELDS.iter().map(Field::key).collect();
        v.sort();
        v
    }

    /// Reads a configuration file and checks it ([`Settings::validate`]); relative paths
    /// resolve against its directory.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let s = Self::from_file(path)?;
        s.validate()?;
        Ok(s)
    }

    /// Reads a configuration file over the defaults, without [`Settings::validate`] (for
    /// layering further values on top); relative paths resolve against its directory.
    pub fn from_file(path: &Path) -> Result<Self, GatewayError> {
        Self::from_file_noting(path, &mut Vec::new())
    }

    fn from_file_noting(path: &Path, seen: &mut Seen) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| config(format!("{}: {e}", path.display())))?;
        let mut s = Self::default();
        s.merge_toml_noting(&text, &path.display().to_string(), seen)?;
        s.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(s)
    }

    /// Sets every setting a TOML document names; `origin` (a file name) starts each error
    /// message, with the line of the setting when it can be found. A name that is not a
    /// setting is refused.
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> Result<(), GatewayError> {
        self.merge_toml_noting(text, origin, &mut Vec::new())
    }

    fn merge_toml_noting(
        &mut self,
        text: &str,
        origin: &str,
        seen: &mut Seen,
    ) -> Result<(), GatewayError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(":{}", line_at(text, s.start)))
                .unwrap_or_default();
            config(format!("{origin}{at}: {}", e.message().trim()))
        })?;
        for (k, v) in table {
            let is_section = SECTIONS.iter().any(|s| !s.name.is_empty() && s.name == k);
            match (v, is_section) {
                (toml::Value::Table(t), true) => {
                    for (name, v) in t {
                        self.merge_one(text, origin, &k, &name, v, seen)?;
                    }
                }
                (_, true) => {
                    let at = line_of(text, "", &k);
                    return Err(config(format!("{origin}{at}: {k} is a section ([{k}])")));
                }
                (v, false) => self.merge_one(text, origin, "", &k, v, seen)?,
            }
        }
        Ok(())
    }

    fn merge_one(
        &mut self,
        text: &str,
        origin: &str,
        section: &str,
        name: &str,
        v: toml::Value,
        seen: &mut Seen,
    ) -> Result<(), GatewayError> {
        let key = join(section, name);
        let at = line_of(text, section, name);
        self.set_key(&key, Input::Toml(v))
            .map_err(|r| config(format!("{origin}{at}: {}", describe(&key, r))))?;
        seen.push((key, format!("{origin}{at}")));
        Ok(())
    }

    /// Applies the `IOTSEAL_*` environment variables among `vars` (each setting's variable
    /// is `IOTSEAL_` and its flag in capitals: [`Field::env`]). Any other `IOTSEAL_*` variable
    /// is refused unless `is_other` says it belongs to something else (another command's
    /// option, a test harness): a mistyped setting is an error, not silently ignored.
    pub fn apply_env<I, K, V>(
        &mut self,
        vars: I,
        is_other: impl Fn(&str) -> bool,
    ) -> Result<(), GatewayError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        self.apply_env_noting(vars, is_other, &mut Vec::new())
    }

    fn apply_env_noting<I, K, V>(
        &mut self,
        vars: I,
        is_other: impl Fn(&str) -> bool,
        seen: &mut Seen,
    ) -> Result<(), GatewayError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut vars: Vec<(String, V)> = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let k = k.as_ref().to_str()?.to_string();
                k.starts_with("IOTSEAL_").then_some((k, v))
            })
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (var, value) in vars {
            let Some(field) = FIELDS.iter().find(|f| f.env() == var) else {
                if is_other(&var) {
                    continue;
                }
                let hint = closest(&var, FIELDS.iter().map(Field::env))
                    .map(|e| format!(" (did you mean {e}?)"))
                    .unwrap_or_default();
                return Err(config(format!(
                    "environment variable {var} is not a setting{hint}; docs/settings.md lists them"
                )));
            };
            let value = value
                .as_ref()
                .to_str()
                .ok_or_else(|| config(format!("environment variable {var}: not UTF-8")))?;
            self.set_key(&field.key(), Input::Text(value))
                .map_err(|r| {
                    config(format!(
                        "environment variable {var}: {}",
                        describe(&field.key(), r)
                    ))
                })?;
            seen.push((field.key(), format!("environment variable {var}")));
        }
        Ok(())
    }

    /// The layers of `iotseal gateway run`, later ones winning: the defaults, the file `config`
    /// (if any; relative paths resolve against its directory), the `IOTSEAL_*` variables among
    /// `env` (as [`Settings::apply_env`]), the `flags` (dotted name and text, as
    /// [`Settings::apply_flag`]); then [`Settings::validate`], whose message then ends with
    /// where the settings it names were set (`--half-open`, `gateway.toml:40`, ...).
    pub fn layered<I, K, V>(
        config_file: Option<&Path>,
        env: I,
        is_other: impl Fn(&str) -> bool,
        flags: &[(String, String)],
    ) -> Result<Self, GatewayError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut seen = Vec::new();
        let mut s = match config_file {
            Some(p) => Self::from_file_noting(p, &mut seen)?,
            None => Self::default(),
        };
        s.apply_env_noting(env, is_other, &mut seen)?;
        for (key, value) in flags {
            s.apply_flag(key, value)?;
            let flag = Self::field(key).map_or_else(|| key.clone(), Field::flag);
            seen.push((key.clone(), format!("--{flag}")));
        }
        match s.validate() {
            Ok(()) => Ok(s),
            Err(GatewayError::Config(m)) => Err(config(with_sources(m, &seen))),
            Err(e) => Err(e),
        }
    }

    /// Sets one setting from its command-line flag's text (as [`Settings::set`] reads it); an
    /// error names the flag.
    pub fn apply_flag(&mut self, key: &str, value: &str) -> Result<(), GatewayError> {
        let flag = Self::field(key).map_or_else(|| key.to_string(), Field::flag);
        self.set_key(key, Input::Text(value))
            .map_err(|r| config(format!("--{flag}: {}", describe(key, r))))
    }

    /// Sets one setting by its dotted name (`listen`, `limits.max_body`, ...) from text: a
    /// TOML value (`42`, `true`, `["a", "b"]`), or else a plain string; text for a string
    /// stays a string, and a list may also be given as `a,b,c`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), GatewayError> {
        self.set_key(key, Input::Text(value))
            .map_err(|r| config(describe(key, r)))
    }

    fn set_key(&mut self, key: &str, input: Input<'_>) -> Result<(), Refused> {
        let (section, name) = split(key);
        match self.set_field(section, name, input) {
            None => Err(Refused::Unknown),
            Some(r) => r.map_err(Refused::Value),
        }
    }

    /// The value of one setting as TOML (`None` for an unset optional one or an unknown key).
    pub fn value(&self, key: &str) -> Option<toml::Value> {
        let (section, name) = split(key);
        self.field_value(section, name)
    }
}

/// `(dotted name, where it was set)` in the order the layers set them.
type Seen = Vec<(String, String)>;

/// `message`, followed by where each setting it names was last set (if not by default).
fn with_sources(message: String, seen: &Seen) -> String {
    let mut last: Vec<(&str, &str)> = Vec::new();
    for (key, source) in seen {
        last.retain(|(k, _)| k != key);
        last.push((key, source));
    }
    let named: Vec<String> = last
        .iter()
        .filter(|(key, _)| {
            let (section, name) = split(key);
            has_word(&message, key)
                || (has_word(&message, name)
                    && (section.is_empty() || message.contains(&format!("{section}:"))))
        })
        .map(|(key, source)| format!("{key} from {source}"))
        .collect();
    if named.is_empty() {
        message
    } else {
        format!("{message} ({})", named.join("; "))
    }
}

/// Whether `word` occurs in `text` not as part of a longer name.
fn has_word(text: &str, word: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word)
        .any(|(i, _)| !text[..i].ends_with(part) && !text[i + word.len()..].starts_with(part))
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('.').unwrap_or(("", key))
}

fn join(section: &str, name: &str) -> String {
    if section.is_empty() {
        name.to_string()
    } else {
        format!("{section}.{name}")
    }
}

fn describe(key: &str, r: Refused) -> String {
    match r {
        Refused::Value(m) => format!("{key}: {m}"),
        Refused::Unknown => {
            let hint = closest(key, FIELDS.iter().map(Field::key))
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            format!("{key} is not a setting{hint}; docs/settings.md lists them")
        }
    }
}

/// The 1-based line of byte offset `at`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// `:LINE` of `name = ...` in `[section]` (empty: before the first header), or nothing when
/// it is not written that way (dotted keys, inline tables).
fn line_of(text: &str, section: &str, name: &str) -> String {
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim();
            if section.is_empty() && current == name {
                return format!(":{}", i + 1);
            }
        } else if current == section
            && l.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return format!(":{}", i + 1);
        }
    }
    String::new()
}

/// The candidate nearest to `s` if it is close (a typo): at most two edits.
fn closest(s: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    candidates
        .map(|c| (edits(s, &c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
