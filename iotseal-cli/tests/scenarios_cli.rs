//! Every shipped scenario (scenarios/*.toml) runs against a fresh `gateway init` exactly as the
//! README shows (`simulate --scenario FILE --pins gw/gateway.pub.toml --token-file
//! gw/admin.token`), briefly: exit 0, nothing lost, nothing duplicated, every group stored
//! readings.

mod common;

use std::path::PathBuf;

use common::{TestGateway, iotseal};

fn scenarios() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_scenario_runs_against_a_fresh_gateway() {
    let files = scenarios();
    assert!(files.len() >= 4, "{files:?}");
    let tmp = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&tmp.path().join("gw"), None);

    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        // Brief: three devices per group for two seconds (the scenario's suites, sensors,
        // batching and impairments as shipped).
        let out = iotseal()
            .args(["simulate", "--scenario"])
            .arg(&file)
            .arg("--pins")
            .arg(gw.pins())
            .arg("--token-file")
            .arg(gw.token_file())
            .args(["--gateway", &gw.url, "--devices", "3", "--duration", "2s"])
            .args(["--prefix", &format!("{name}-"), "--json"])
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: simulate failed\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(summary["lost"], 0, "{name}: {summary}");
        assert_eq!(summary["duplicates"], 0, "{name}: {summary}");
        let sent = summary["readings_sent"].as_u64().unwrap();
        assert!(sent > 0, "{name}: {summary}");
        assert_eq!(summary["readings_verified"].as_u64(), Some(sent), "{name}");
        for g in summary["groups"].as_array().unwrap() {
            assert!(
                g["stored"].as_u64().unwrap() > 0,
                "{name}: group {} stored nothing: {g}",
                g["name"]
            );
        }
    }
}
