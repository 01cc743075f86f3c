//! Replays every seed (`corpus/<target>/`) and every reproducer (`regressions/<target>/`)
//! through the same harness functions the fuzz targets call, without libFuzzer:
//! `cargo test --manifest-path fuzz/Cargo.toml`. (CI replays them with the fuzz binaries
//! themselves; see `ci.sh`.)

use std::fs;
use std::path::Path;

use iotseal_fuzz::targets::{self, TARGETS};

fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut n = 0;
    for t in TARGETS {
        let Ok(entries) = fs::read_dir(root.join(t)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.expect("entry").path()).collect();
        files.sort();
        for f in files {
            let data = fs::read(&f).expect("read");
            println!("{t}: {}", f.display());
            targets::run(t, &data);
            n += 1;
        }
    }
    n
}

#[test]
fn corpus_passes() {
    assert!(replay("corpus") > 0, "no corpus found");
}

#[test]
fn regressions_pass() {
    replay("regressions");
}

/// Found by the `scenario` target: `Scenario::validate` summed the groups' device counts in
/// a `u32` (a panic with overflow checks; without, the total wrapped and 4294967297 devices
/// validated). Fixed: summed in u64 and refused.
#[test]
fn scenario_device_total_overflow_is_refused() {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("regressions/scenario/devices-total-overflows-u32.toml"),
    )
    .expect("reproducer");
    let s: iotseal_device::sim::Scenario = toml::from_str(&text).expect("parses");
    assert!(s.validate().is_err());
}
