//! Every shipped scenario (scenarios/*.toml) runs against a fresh `gateway init` exactly as the
//! README shows (`simulate --scenario FILE --pins gw/gateway.pub.toml --token-file
//! gw/admin.token`), briefly: exit 0, nothing lost, nothing duplicated, every group stored
//! readings.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn iotseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iotseal"))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let gw = tmp.path().join("gw");
    let init = iotseal()
        .args(["gateway", "init", "--dir"])
        .arg(&gw)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let mut child = iotseal()
        .args(["gateway", "run", "--config"])
        .arg(gw.join("gateway.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let _gw = Running(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();

    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        // Brief: three devices per group for two seconds (the scenario's suites, sensors,
        // batching and impairments as shipped).
        let out = iotseal()
            .args(["simulate", "--scenario"])
            .arg(&file)
            .arg("--pins")
            .arg(gw.join("gateway.pub.toml"))
            .arg("--token-file")
            .arg(gw.join("admin.token"))
            .args(["--gateway", &url, "--devices", "3", "--duration", "2s"])
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
