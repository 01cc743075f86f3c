//! ML-KEM-768 of every provider against the NIST ACVP vectors (`acvp/` in the vectors folder,
//! see its `SOURCES.md`), through the `CryptoProvider` trait objects only.
//!
//! - keyGen (AFT): `d`, `z` -> `ek`, `dk` (ML-KEM.KeyGen_internal).
//! - encapDecap, encapsulation (AFT): `ek`, `m` -> `c`, `k`; the given `dk` also decapsulates
//!   `c` to `k`.
//! - encapDecap, decapsulation (VAL): group `dk`, per-case `c` -> `k`, including the implicit
//!   rejection cases ("modify ciphertext").
//! - encapsulationKeyCheck / decapsulationKeyCheck groups, when the file has them: a key with
//!   `testPassed: false` must be refused.
//!
//! A provider that keeps its own randomness (aws-lc) cannot be fed `d || z` or `m`: those
//! checks are counted as skipped or partial with the reason, and what is deterministic
//! (decapsulation of an imported `dk`, the `ek` of an imported `dk`) is still checked.
//!
//! Run with `cargo test -p iotseal-test --test acvp -- --nocapture` to see the counts.

use std::panic::{AssertUnwindSafe, catch_unwind};

use iotseal_proto::crypto::{CryptoProvider, Kem};
use iotseal_proto::suite::KemId;
use iotseal_test::providers;
use iotseal_test::rng::{Drawn, SeededRandom, with_fixed};
use iotseal_test::vectors::{
    Check, Outcome, Report, expect_eq, finish, load_json, skip, unhex, vectors_dir,
};
use serde_json::Value;

const KEYGEN_OWN_RNG: &str = "keygen from d || z not compared: provider keeps its own randomness \
     (only checked that the vector's dk imports and yields its ek)";
const ENCAPS_OWN_RNG: &str =
    "exact encapsulation with fixed m not compared: provider keeps its own randomness";

/// One ACVP case: its group, itself and its id.
struct AcvpCase<'a> {
    group: &'a Value,
    test: &'a Value,
}

impl AcvpCase<'_> {
    fn field(&self, key: &str) -> Result<Vec<u8>, String> {
        let s = self
            .test
            .get(key)
            .or_else(|| self.group.get(key))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("missing field {key}"))?;
        unhex(s).map_err(|e| format!("field {key} is not hex: {e}"))
    }

    fn function(&self) -> &str {
        self.group
            .get("function")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

fn run(file: &str, check: impl Fn(&AcvpCase<'_>, &CryptoProvider, &Kem, &mut Report) -> Check) {
    let Some(dir) = vectors_dir() else { return };
    let rel = format!("acvp/{file}");
    let json = load_json(&dir, &rel);
    let groups = json
        .get("testGroups")
        .and_then(Value::as_array)
        .expect("ACVP file without testGroups");
    let mut reports = Vec::new();
    for provider in providers() {
        let mut report = Report::new(&rel, provider.name);
        for group in groups {
            let tests = group
                .get("tests")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            for test in tests {
                let id = test
                    .get("tcId")
                    .map_or_else(|| "?".to_owned(), Value::to_string);
                let case = AcvpCase { group, test };
                let ps = group
                    .get("parameterSet")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let outcome = if ps != "ML-KEM-768" {
                    skip(format!("parameter set {ps}: iotseal uses ML-KEM-768 only"))
                } else {
                    catch_unwind(AssertUnwindSafe(|| {
                        let kem = provider
                            .kem(KemId::MlKem768)
                            .map_err(|e| format!("provider has no mlkem768: {e}"))?;
                        check(&case, &provider, &kem, &mut report)
                    }))
                    .unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(format!("panicked: {msg}"))
                    })
                };
                report.record(&id, outcome);
            }
        }
        reports.push(report);
    }
    finish(&reports);
}

fn pass() -> Check {
    Ok(Outcome::Pass)
}

/// Decapsulates `c` with an imported `dk`; checks the imported key's `ek` when given.
fn decaps(kem: &Kem, dk: &[u8], ek: Option<&[u8]>, c: &[u8], k: &[u8]) -> Result<(), String> {
    let kp = kem
        .dangerous_import_ephemeral(dk)
        .map_err(|e| format!("import of dk refused: {e}"))?;
    if let Some(ek) = ek {
        expect_eq("ek of the imported dk", kp.share(), ek)?;
    }
    let got = kp
        .complete(c)
        .map_err(|e| format!("decapsulation refused: {e}"))?;
    expect_eq("decapsulated k", got.as_bytes(), k)
}

#[test]
fn mlkem768_keygen() {
    run(
        "ML-KEM-768-keyGen-FIPS203.internalProjection.json",
        |c, _, kem, r| {
            let (d, z, ek, dk) = (c.field("d")?, c.field("z")?, c.field("ek")?, c.field("dk")?);
            // Deterministic for every provider: the vector's dk imports and yields its ek.
            let imported = kem
                .dangerous_import_ephemeral(&dk)
                .map_err(|e| format!("import of dk refused: {e}"))?;
            expect_eq("ek of the imported dk", imported.share(), &ek)?;
            let seed = [d.as_slice(), z.as_slice()].concat();
            let (kp, drawn) = with_fixed(&seed, |rng| kem.start(rng));
            let kp = kp.map_err(|e| format!("start() with d || z failed: {e}"))?;
            match drawn {
                Drawn::All => {}
                Drawn::Nothing => {
                    // Only the deterministic half (the vector's dk parses to its ek) was checked.
                    r.note(KEYGEN_OWN_RNG);
                    return pass();
                }
                Drawn::Partly(n) => {
                    return Err(format!("start() drew {n} of the 64 bytes of d || z"));
                }
            }
            expect_eq("ek", kp.share(), &ek)?;
            let got = kp
                .dangerous_private_bytes()
                .map_err(|e| format!("private bytes: {e}"))?;
            expect_eq("dk", got.as_bytes(), &dk)?;
            pass()
        },
    );
}

#[test]
fn mlkem768_encap_decap() {
    run(
        "ML-KEM-768-encapDecap-FIPS203.internalProjection.json",
        |c, _, kem, r| match c.function() {
            "encapsulation" => {
                let (ek, dk, m) = (c.field("ek")?, c.field("dk")?, c.field("m")?);
                let (ct, k) = (c.field("c")?, c.field("k")?);
                decaps(kem, &dk, Some(&ek), &ct, &k)?;
                let (resp, drawn) = with_fixed(&m, |rng| kem.respond(&ek, rng));
                let resp = resp.map_err(|e| format!("respond refused a valid ek: {e}"))?;
                match drawn {
                    Drawn::All => {
                        expect_eq("ciphertext", &resp.share, &ct)?;
                        expect_eq("encapsulated k", resp.secret.as_bytes(), &k)?;
                    }
                    Drawn::Nothing => r.note(ENCAPS_OWN_RNG),
                    Drawn::Partly(n) => {
                        return Err(format!("respond drew {n} of the 32 bytes of m"));
                    }
                }
                pass()
            }
            "decapsulation" => {
                let (ek, dk) = (c.field("ek")?, c.field("dk")?);
                decaps(kem, &dk, Some(&ek), &c.field("c")?, &c.field("k")?)?;
                pass()
            }
            "encapsulationKeyCheck" => {
                let ok = c
                    .test
                    .get("testPassed")
                    .and_then(Value::as_bool)
                    .ok_or("no testPassed")?;
                let rng = SeededRandom::new(3);
                match (ok, kem.respond(&c.field("ek")?, &rng)) {
                    (true, Ok(_)) | (false, Err(_)) => pass(),
                    (true, Err(e)) => Err(format!("a valid ek was refused: {e}")),
                    (false, Ok(_)) => {
                        Err("an ek failing the FIPS 203 §7.2 check was accepted".into())
                    }
                }
            }
            "decapsulationKeyCheck" => {
                let ok = c
                    .test
                    .get("testPassed")
                    .and_then(Value::as_bool)
                    .ok_or("no testPassed")?;
                let dk = c.field("dk")?;
                let r = kem
                    .dangerous_import_ephemeral(&dk)
                    .and_then(|kp| kp.complete(&[0u8; 1088]));
                match (ok, r) {
                    (true, Ok(_)) | (false, Err(_)) => pass(),
                    (true, Err(e)) => Err(format!("a valid dk was refused: {e}")),
                    (false, Ok(_)) => {
                        Err("a dk failing the FIPS 203 §7.3 check was accepted".into())
                    }
                }
            }
            other => skip(format!("ACVP function {other:?} not covered")),
        },
    );
}
