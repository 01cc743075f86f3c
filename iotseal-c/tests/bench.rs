//! `footprint/bench.c` (the C benchmark, docs/performance.md "Devices in C") builds with
//! `make` against the `libiotseal.a` cargo built for this test run and runs for a tiny count:
//! both sides acknowledge every reading. Needs the cargo feature `bench`
//! (`cargo test -p iotseal-c --features bench --test bench`; without it this file is empty), a
//! C compiler and make; without them the test says so and passes, unless `IOTSEAL_TEST_C=1`
//! (CI) makes that a failure.
#![cfg(feature = "bench")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The folder of the newest `libiotseal.a` of this profile (this binary is
/// target/<profile>/deps/bench-<hash>: cargo built the staticlib, with `bench`, in deps/).
fn lib_dir() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let profile = deps.parent().unwrap().to_path_buf();
    [deps, profile]
        .into_iter()
        .filter_map(|d| {
            let t = std::fs::metadata(d.join("libiotseal.a"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((t, d))
        })
        .max()
        .map(|(_, d)| d)
        .expect("no libiotseal.a next to this test binary")
}

#[test]
fn bench_program_builds_and_runs() {
    let missing = if !runs("cc", &["--version"]) {
        Some("no C compiler (cc)")
    } else if !runs("make", &["--version"]) {
        Some("no make")
    } else {
        None
    };
    if let Some(why) = missing {
        assert!(
            std::env::var_os("IOTSEAL_TEST_C").is_none_or(|v| v != "1"),
            "IOTSEAL_TEST_C=1 but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let footprint = Path::new(env!("CARGO_MANIFEST_DIR")).join("footprint");
    let out = std::env::temp_dir().join(format!("iotseal-c-bench-{}", std::process::id()));
    let made = Command::new("make")
        .arg("-C")
        .arg(&footprint)
        .arg("-B")
        .arg(format!("IOTSEAL_LIB_DIR={}", lib_dir().display()))
        .arg(format!("OUT={}", out.display()))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "make: {}{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    let run = Command::new(&out).args(["300", "1"]).output().unwrap();
    let _ = std::fs::remove_file(&out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The table: a line per batch (1 and 100) with the Rust and C rates and their ratio.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| matches!(w.first(), Some(&"1" | &"100")))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for w in rows {
        for f in &w[1..4] {
            let v: f64 = f.parse().unwrap_or_else(|_| panic!("{f:?} in {stdout}"));
            assert!(v > 0.0, "{stdout}");
        }
    }
}
