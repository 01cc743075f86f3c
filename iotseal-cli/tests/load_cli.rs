//! `iotseal bench load` against a gateway that is killed mid-run: the run fails (non-zero
//! exit, `target_lost` said), its error kinds add up to its error count, and its rates are
//! over the real measured time. `iotseal bench handshakes` against a gateway process with one
//! worker thread: handshakes counted, the limit measured, the JSON's keys (no timing asserted).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TestGateway, iotseal};

#[test]
fn bench_load_fails_when_its_target_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&tmp.path().join("gw"), Some("ed25519"));
    let (url, pid) = (gateway.url.clone(), gateway.pid().to_string());

    let load = iotseal()
        .args(["bench", "load", "--pins"])
        .arg(gateway.pins())
        .arg("--token-file")
        .arg(gateway.token_file())
        .args(["--gateway", &url, "--gateway-pid", &pid])
        .args(["--suite", "x25519/ed25519/aes128gcm", "--connections", "2"])
        .args(["--duration", "3s", "--warmup", "200ms", "--json"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the devices register, handshake and send for a while; then kill the gateway. The
    // load generator's workers keep running until its duration ends whatever happens, so the
    // kill lands inside the measured time as long as registration takes under ~2.5 s.
    std::thread::sleep(Duration::from_millis(1500));
    drop(gateway);
    let out = load.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "bench load exited 0 after its target died\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("target was lost"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert!(report["target_lost"].is_string(), "{report}");
    let errors = report["errors"].as_u64().unwrap();
    assert!(errors > 0, "{report}");
    let by_kind: u64 = report["errors_by_kind"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_kind, errors, "error kinds must add up: {report}");
    let secs = report["duration"].as_f64().unwrap();
    assert!(secs >= 3.0, "{report}");
    let rate = report["requests_per_s"].as_f64().unwrap();
    let requests = report["requests"].as_f64().unwrap();
    assert!(
        (rate - requests / secs).abs() < 1e-6 * rate.max(1.0),
        "{report}"
    );
}

#[test]
fn bench_handshakes_reports_handshakes_and_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    // One worker thread (the flag `bench handshakes` reports are made with); every handshake
    // comes from 127.0.0.1, so the per-address handshake rate limit is raised.
    let gateway = TestGateway::start_with(
        &tmp.path().join("gw"),
        Some("ed25519"),
        &[
            "--worker-threads",
            "1",
            "--handshake-rate-per-ip",
            "100000",
            "--handshake-burst-per-ip",
            "100000",
        ],
    );
    let (url, pid) = (gateway.url.clone(), gateway.pid().to_string());

    let out = iotseal()
        .args(["bench", "handshakes", "--pins"])
        .arg(gateway.pins())
        .arg("--token-file")
        .arg(gateway.token_file())
        .args(["--gateway", &url, "--gateway-pid", &pid])
        .args(["--suite", "x25519/ed25519/aes256gcm", "--connections", "1"])
        .args(["--duration", "1s", "--warmup", "200ms", "--threads", "1"])
        .args(["--gateway-cores", "1", "--limit-iterations", "11", "--json"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    for key in [
        "suite",
        "url",
        "connections",
        "gateway_cores",
        "handshakes_per_s",
        "limit_per_s",
        "ratio",
        "primitive_us",
        "full_handshake_us",
        "runs",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    assert!(
        report["handshakes_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["limit_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["ratio"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["gateway_cores"], 1, "{report}");
    let run = &report["runs"][0];
    assert!(run["handshakes"].as_u64().unwrap() > 0, "{report}");
    assert!(run["target_lost"].is_null(), "{report}");
    assert!(run["gateway_cpu_percent"].is_number(), "{report}");
}
