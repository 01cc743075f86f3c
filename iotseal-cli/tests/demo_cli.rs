//! The README's main command, `iotseal demo --json`, as a user runs it: a gateway in the
//! process, a short mixed-suite simulation, the threat lab and the report; the JSON must say
//! that nothing was lost, every reading was verified and every attack was blocked.

use std::process::Command;

#[test]
fn demo_stores_every_reading_and_blocks_every_attack() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_iotseal"))
        .args(["demo", "--json", "--duration", "3s", "--devices", "1"])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(n("readings_sent") > 0, "{v}");
    assert_eq!(n("readings_stored"), n("readings_sent"));
    assert_eq!(n("readings_verified"), n("readings_sent"));
    assert_eq!(n("lost"), 0);
    assert_eq!(n("duplicates"), 0);
    assert_eq!(
        v["suites"].as_array().unwrap().len(),
        5,
        "five suite groups"
    );
    let attacks = v["attacks"].as_array().unwrap();
    assert!(attacks.len() >= 20, "{} attacks", attacks.len());
    for a in attacks {
        assert_eq!(a["blocked"], true, "{a}");
    }
    let report = v["report"].as_str().expect("a report path");
    assert!(std::fs::read_to_string(report).unwrap().contains("<svg"));
    assert_eq!(v["data_dir"].as_str().unwrap(), data.to_str().unwrap());
}
