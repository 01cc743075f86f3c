//! Loader for the independent test vectors (Wycheproof and NIST ACVP) kept outside the
//! repository, and a [`Report`] that counts what each provider passed, failed or skipped.
//!
//! The vectors folder is `$IOTSEAL_VECTORS` if set, else `<workspace root>/../shared/vectors`.
//! A user's clone usually has no `../shared`: then [`vectors_dir`] prints
//! [`SKIP_MESSAGE`] and returns `None` so the test can return early. When `CI` is set, or
//! `IOTSEAL_VECTORS` names a folder that does not exist, a missing folder is an error instead
//! (a silently skipped conformance suite is worse than a red build).

use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Printed when the vectors folder is missing outside CI.
pub const SKIP_MESSAGE: &str = "skipped: vectors folder not found (set IOTSEAL_VECTORS)";

/// The workspace root (`iotseal-test/..`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the vectors should be, and whether that place was asked for explicitly.
fn vectors_location() -> (PathBuf, bool) {
    match std::env::var_os("IOTSEAL_VECTORS").filter(|v| !v.is_empty()) {
        Some(v) => (PathBuf::from(v), true),
        None => (
            workspace_root().join("..").join("shared").join("vectors"),
            false,
        ),
    }
}

/// The vectors folder, or `None` (after printing [`SKIP_MESSAGE`]) when it is missing and
/// neither `CI` nor `IOTSEAL_VECTORS` is set.
///
/// # Panics
/// When the folder is missing and `CI` or `IOTSEAL_VECTORS` is set.
pub fn vectors_dir() -> Option<PathBuf> {
    let (dir, explicit) = vectors_location();
    if dir.is_dir() {
        return Some(dir);
    }
    let ci = std::env::var_os("CI").is_some();
    if explicit || ci {
        panic!(
            "vectors folder not found at {} ({}); the conformance vectors are required here",
            dir.display(),
            if explicit {
                "from IOTSEAL_VECTORS"
            } else {
                "CI is set"
            },
        );
    }
    println!("{SKIP_MESSAGE}");
    None
}

/// Decodes hex (either case).
pub fn unhex(s: &str) -> Result<Vec<u8>, hex::FromHexError> {
    hex::decode(s)
}

/// Short hex for messages: long values are cut in the middle.
pub fn short_hex(b: &[u8]) -> String {
    if b.len() <= 40 {
        hex::encode(b)
    } else {
        format!(
            "{}..{} ({} bytes)",
            hex::encode(&b[..16]),
            hex::encode(&b[b.len() - 8..]),
            b.len()
        )
    }
}

/// Reads and parses a JSON file `rel` under `dir`.
///
/// # Panics
/// If the file is missing or not JSON: the vector set is incomplete, which is a harness error.
pub fn load_json(dir: &Path, rel: &str) -> Value {
    let path = dir.join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("vector file {} is not valid JSON: {e}", path.display()))
}

/// What a Wycheproof case expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Must be accepted / must reproduce the output.
    Valid,
    /// Legal but questionable input: either accepting or refusing may be correct; the test
    /// decides per primitive what iotseal's policy is.
    Acceptable,
    /// Must be refused.
    Invalid,
}

impl Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Valid => "valid",
            Self::Acceptable => "acceptable",
            Self::Invalid => "invalid",
        })
    }
}

/// One Wycheproof vector file (`wycheproof/<name>`), parsed generically.
#[derive(Debug)]
pub struct WycheproofFile {
    /// Path relative to the vectors folder, for messages (`wycheproof/x25519_test.json`).
    pub name: String,
    /// The `algorithm` field.
    pub algorithm: String,
    /// The `schema` field (the schema file in `wycheproof/schemas/`).
    pub schema: String,
    /// The whole file.
    pub json: Value,
}

/// Loads `wycheproof/<name>` and checks that `numberOfTests` matches the cases present.
///
/// # Panics
/// If the file is missing, malformed, or its case count disagrees with `numberOfTests`.
pub fn load_wycheproof(dir: &Path, name: &str) -> WycheproofFile {
    let rel = format!("wycheproof/{name}");
    let json = load_json(dir, &rel);
    let s = |k: &str| {
        json.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let file = WycheproofFile {
        name: rel,
        algorithm: s("algorithm"),
        schema: s("schema"),
        json,
    };
    let groups = file.groups();
    assert!(!groups.is_empty(), "{}: no testGroups", file.name);
    let count: usize = groups
        .iter()
        .map(|g| g.get("tests").and_then(Value::as_array).map_or(0, Vec::len))
        .sum();
    if let Some(n) = file.json.get("numberOfTests").and_then(Value::as_u64) {
        assert_eq!(
            count as u64, n,
            "{}: numberOfTests says {n}, found {count} cases",
            file.name
        );
    }
    file
}

impl WycheproofFile {
    /// The test groups.
    pub fn groups(&self) -> &[Value] {
        self.json
            .get("testGroups")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// Every case of every group, in file order.
    ///
    /// # Panics
    /// If a case has no `tcId` or an unknown `result`.
    pub fn cases(&self) -> Vec<Case<'_>> {
        let mut out = Vec::new();
        for group in self.groups() {
            let tests = group
                .get("tests")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            for test in tests {
                out.push(Case::new(&self.name, group, test));
            }
        }
        out
    }
}

/// One case with its group.
#[derive(Clone, Debug)]
pub struct Case<'a> {
    /// File name, for messages.
    pub file: &'a str,
    /// The enclosing test group (group-level keys live here).
    pub group: &'a Value,
    /// The case itself.
    pub test: &'a Value,
    /// `tcId` as text (Wycheproof uses integers; some files use strings).
    pub id: String,
    /// `result`.
    pub expected: Expected,
    /// `flags` (empty if absent).
    pub flags: Vec<&'a str>,
    /// `comment` (empty if absent).
    pub comment: &'a str,
}

fn value_id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn get_hex(v: &Value, key: &str) -> Option<Result<Vec<u8>, hex::FromHexError>> {
    v.get(key).and_then(Value::as_str).map(unhex)
}

impl<'a> Case<'a> {
    fn new(file: &'a str, group: &'a Value, test: &'a Value) -> Self {
        let id = value_id(test.get("tcId"))
            .unwrap_or_else(|| panic!("{file}: a case has no tcId: {}", short_json(test)));
        let expected = match test.get("result").and_then(Value::as_str) {
            Some("valid") => Expected::Valid,
            Some("acceptable") => Expected::Acceptable,
            Some("invalid") => Expected::Invalid,
            other => panic!("{file} tcId {id}: unknown result {other:?}"),
        };
        let flags = test
            .get("flags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let comment = test
            .get("comment")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Self {
            file,
            group,
            test,
            id,
            expected,
            flags,
            comment,
        }
    }

    /// Whether the case has `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// Whether the case has the field `key`.
    pub fn has(&self, key: &str) -> bool {
        self.test.get(key).is_some()
    }

    /// A hex field of the case, if present.
    ///
    /// # Panics
    /// If present but not hex.
    pub fn opt_hex(&self, key: &str) -> Option<Vec<u8>> {
        get_hex(self.test, key).map(|r| {
            r.unwrap_or_else(|e| {
                panic!(
                    "{} tcId {}: field {key} is not hex: {e}",
                    self.file, self.id
                )
            })
        })
    }

    /// A hex field of the case.
    ///
    /// # Panics
    /// If missing or not hex.
    pub fn hex(&self, key: &str) -> Vec<u8> {
        self.opt_hex(key)
            .unwrap_or_else(|| panic!("{} tcId {}: missing field {key}", self.file, self.id))
    }

    /// A hex field of the group, if present.
    ///
    /// # Panics
    /// If present but not hex.
    pub fn group_opt_hex(&self, key: &str) -> Option<Vec<u8>> {
        get_hex(self.group, key).map(|r| {
            r.unwrap_or_else(|e| {
                panic!(
                    "{} (group of tcId {}): {key} is not hex: {e}",
                    self.file, self.id
                )
            })
        })
    }

    /// A hex field of the group.
    ///
    /// # Panics
    /// If missing or not hex.
    pub fn group_hex(&self, key: &str) -> Vec<u8> {
        self.group_opt_hex(key)
            .unwrap_or_else(|| panic!("{} (group of tcId {}): missing {key}", self.file, self.id))
    }

    /// A number of the group (`keySize`, `ivSize`, `tagSize`), if present.
    pub fn group_u64(&self, key: &str) -> Option<u64> {
        self.group.get(key).and_then(Value::as_u64)
    }

    /// A number of the case (`size`), if present.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.test.get(key).and_then(Value::as_u64)
    }

    /// A string field of the case, if present.
    pub fn str(&self, key: &str) -> Option<&'a str> {
        self.test.get(key).and_then(Value::as_str)
    }
}

fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..120])
    } else {
        s
    }
}

/// The outcome of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every check that applies passed.
    Pass,
    /// Not checked, for this reason (counted per reason).
    Skip(String),
}

/// What a per-case check returns: `Err` is a failure with its explanation.
pub type Check = Result<Outcome, String>;

/// Shorthand for `Ok(Outcome::Skip(reason))`.
pub fn skip(reason: impl Into<String>) -> Check {
    Ok(Outcome::Skip(reason.into()))
}

/// `Err` unless `got == want`, with both in short hex.
pub fn expect_eq(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what} differs: got {}, want {}",
            short_hex(got),
            short_hex(want)
        ))
    }
}

/// Counts of one vector file against one provider.
#[derive(Debug)]
pub struct Report {
    /// The vector file (`wycheproof/x25519_test.json`).
    pub file: String,
    /// The provider's name.
    pub provider: String,
    /// Cases that passed.
    pub passed: usize,
    /// Failed cases: `(tcId, why)`.
    pub failures: Vec<(String, String)>,
    /// Skipped cases, counted per reason.
    pub skipped: BTreeMap<String, usize>,
    /// Sub-checks that could not be run on cases otherwise counted, per reason.
    pub notes: BTreeMap<String, usize>,
}

impl Report {
    /// An empty report.
    pub fn new(file: &str, provider: &str) -> Self {
        Self {
            file: file.to_owned(),
            provider: provider.to_owned(),
            passed: 0,
            failures: Vec::new(),
            skipped: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }

    /// Counts a pass.
    pub fn pass(&mut self) {
        self.passed += 1;
    }

    /// Counts a failure.
    pub fn fail(&mut self, id: impl Display, why: impl Display) {
        self.failures.push((id.to_string(), why.to_string()));
    }

    /// Counts a skipped case.
    pub fn skip(&mut self, reason: impl Into<String>) {
        *self.skipped.entry(reason.into()).or_default() += 1;
    }

    /// Counts a sub-check that could not be run (the case itself is counted separately).
    pub fn note(&mut self, reason: impl Into<String>) {
        *self.notes.entry(reason.into()).or_default() += 1;
    }

    /// Counts a case from its [`Check`].
    pub fn record(&mut self, id: impl Display, check: Check) {
        match check {
            Ok(Outcome::Pass) => self.pass(),
            Ok(Outcome::Skip(r)) => self.skip(r),
            Err(why) => self.fail(id, why),
        }
    }

    /// Number of skipped cases.
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// Number of failed cases.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Whether this report fails the test: a failure, or nothing passed.
    pub fn is_bad(&self) -> bool {
        !self.failures.is_empty() || self.passed == 0
    }

    /// One line of counts.
    pub fn counts(&self) -> String {
        format!(
            "[{}] {}: {} passed, {} failed, {} skipped",
            self.provider,
            self.file,
            self.passed,
            self.failed(),
            self.skipped_total()
        )
    }
}

impl Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.counts())?;
        for (reason, n) in &self.skipped {
            writeln!(f, "    skipped {n:>4}: {reason}")?;
        }
        for (reason, n) in &self.notes {
            writeln!(f, "    partial {n:>4}: {reason}")?;
        }
        for (id, why) in &self.failures {
            writeln!(f, "    FAILED tcId {id}: {why}")?;
        }
        if self.passed == 0 {
            writeln!(f, "    FAILED: no case passed")?;
        }
        Ok(())
    }
}

/// Prints every report, then panics with the list of failures if any report failed a case or
/// passed none.
///
/// # Panics
/// As described.
pub fn finish(reports: &[Report]) {
    for r in reports {
        print!("{r}");
    }
    let bad: Vec<&Report> = reports.iter().filter(|r| r.is_bad()).collect();
    if bad.is_empty() {
        return;
    }
    let mut msg = String::from("vector failures:\n");
    for r in bad {
        if r.passed == 0 {
            msg.push_str(&format!("  [{}] {}: no case passed\n", r.provider, r.file));
        }
        for (id, why) in &r.failures {
            msg.push_str(&format!("  [{}] {} tcId {id}: {why}\n", r.provider, r.file));
        }
    }
    panic!("{msg}");
}
