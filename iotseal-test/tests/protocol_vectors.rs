//! docs/vectors: regenerated and compared byte for byte (set IOTSEAL_REGEN_VECTORS=1 to
//! rewrite them after an intended change), then checked on both providers as receivers. The
//! per-suite files (one handshake, three records and an ack per suite) and the scenario files
//! (key-update, retry, ack, close) alike; a last test changes the files one byte or number at
//! a time and requires every change to be caught.

use std::path::PathBuf;

use iotseal_proto::Suite;
use iotseal_test::protocol_vectors::{check, file_name, generate};
use iotseal_test::scenario_vectors::{self, SCENARIOS};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors")
}

/// Compares `fresh` with the stored file `name` (after rewriting it under
/// IOTSEAL_REGEN_VECTORS).
fn compare_or_regen(name: &str, fresh: &Value) {
    let path = dir().join(name);
    let fresh = serde_json::to_string_pretty(fresh).unwrap() + "\n";
    if std::env::var_os("IOTSEAL_REGEN_VECTORS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
    }
    let stored = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with IOTSEAL_REGEN_VECTORS=1)", path.display()));
    assert!(
        stored == fresh,
        "{} differs from a fresh generation",
        path.display()
    );
}

fn load(name: &str) -> Value {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn vectors_regenerate_identically() {
    let mut n = 0;
    for s in Suite::all() {
        compare_or_regen(&file_name(s), &generate(s));
        n += 1;
    }
    assert_eq!(n, 64);
}

#[test]
fn vectors_check_on_every_provider() {
    let mut failures = Vec::new();
    let mut n = 0;
    for s in Suite::all() {
        let path = dir().join(file_name(s));
        let Ok(text) = std::fs::read_to_string(&path) else {
            failures.push(format!("{}: missing", path.display()));
            continue;
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        for p in iotseal_test::providers() {
            match check(p, &v) {
                Ok(()) => n += 1,
                Err(e) => failures.push(format!("{s} on {}: {e}", p.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(n, 128);
}

#[test]
fn scenario_vectors_regenerate_identically() {
    for s in SCENARIOS {
        compare_or_regen(
            &scenario_vectors::file_name(s),
            &scenario_vectors::generate(s),
        );
    }
}

#[test]
fn scenario_vectors_check_on_every_provider() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for s in SCENARIOS {
        let v = load(&scenario_vectors::file_name(s));
        for p in iotseal_test::providers() {
            match scenario_vectors::check(p, &v) {
                Ok(n) => cases += n,
                Err(e) => failures.push(format!("{s} on {}: {e}", p.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // key-update 2, retry 5, ack 2, close 3 cases, on 2 providers.
    assert_eq!(cases, 24);
}

/// Every change of one byte or number in a vector is caught: `(JSON pointer, changed value)`.
/// Hex strings get two changes, bit 4 of the first byte and bit 0 of the last (never bits
/// that X25519 clamps away); with `numbers`, integers too: times (`…_ms`) + 1 s (the record
/// header counts whole seconds), others + 1. The times of key updates, later deliveries and
/// session ends are left alone: the core takes them (key-update timer, freshness, grace
/// period) but no byte depends on them.
fn mutations(v: &Value, numbers: bool) -> Vec<(String, Value)> {
    fn walk(v: &Value, ptr: String, numbers: bool, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                let skip = matches!(
                    m.get("step").and_then(Value::as_str),
                    Some("key_update" | "deliver" | "end_session")
                );
                for (k, x) in m {
                    if skip && k == "time_ms" {
                        continue;
                    }
                    walk(x, format!("{ptr}/{k}"), numbers, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{ptr}/{i}"), numbers, out);
                }
            }
            Value::String(s)
                if !s.is_empty()
                    && s.len() % 2 == 0
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                let b = hex::decode(s).unwrap();
                let mut first = b.clone();
                first[0] ^= 0x10;
                let mut last = b;
                *last.last_mut().unwrap() ^= 0x01;
                out.push((ptr.clone(), Value::String(hex::encode(first))));
                out.push((ptr, Value::String(hex::encode(last))));
            }
            Value::Number(n) if numbers => {
                let n = n.as_u64().unwrap();
                let step = if ptr.ends_with("_ms") { 1000 } else { 1 };
                out.push((ptr, Value::from(n + step)));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), numbers, &mut out);
    out
}

/// The checks can fail: a vector changed anywhere (one byte of any hex field, any number of
/// the scenario files) fails on at least one provider.
#[test]
fn vector_mutations_are_detected() {
    let mut missed = Vec::new();
    let mut tried = 0;
    let providers = iotseal_test::providers();
    for s in SCENARIOS {
        let name = scenario_vectors::file_name(s);
        let v = load(&name);
        for (ptr, new) in mutations(&v, true) {
            let mut m = v.clone();
            *m.pointer_mut(&ptr).unwrap() = new;
            tried += 1;
            if providers
                .iter()
                .all(|&p| scenario_vectors::check(p, &m).is_ok())
            {
                missed.push(format!("{name}{ptr}"));
            }
        }
    }
    // One per-suite file for each signature algorithm (and each KEM and AEAD).
    for suite in [
        "x25519mlkem768/ed25519/aes256gcm",
        "mlkem768/ecdsa-p256/chacha20poly1305",
        "p256/mldsa65/aes128gcm",
        "x25519/ed25519+mldsa65/aes256ctr-hmacsha256",
    ] {
        let name = file_name(suite.parse().unwrap());
        let v = load(&name);
        for (ptr, new) in mutations(&v, false) {
            let mut m = v.clone();
            *m.pointer_mut(&ptr).unwrap() = new;
            tried += 1;
            if providers.iter().all(|&p| check(p, &m).is_ok()) {
                missed.push(format!("{name}{ptr}"));
            }
        }
    }
    assert!(missed.is_empty(), "changes not caught: {missed:#?}");
    assert!(tried > 1000, "only {tried} changes");
}
