//! docs/vectors: regenerated and compared byte for byte (set IOTSEAL_REGEN_VECTORS=1 to
//! rewrite them after an intended change), then checked on both providers as receivers.

use std::path::PathBuf;

use iotseal_proto::Suite;
use iotseal_test::protocol_vectors::{check, file_name, generate};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors")
}

#[test]
fn vectors_regenerate_identically() {
    let regen = std::env::var_os("IOTSEAL_REGEN_VECTORS").is_some();
    let mut n = 0;
    for s in Suite::all() {
        let path = dir().join(file_name(s));
        let fresh = serde_json::to_string_pretty(&generate(s)).unwrap() + "\n";
        if regen {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, &fresh).unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with IOTSEAL_REGEN_VECTORS=1)", path.display())
        });
        assert!(
            stored == fresh,
            "{} differs from a fresh generation",
            path.display()
        );
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
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
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
