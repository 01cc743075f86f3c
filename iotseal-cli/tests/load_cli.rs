//! `iotseal bench load` against a gateway that is killed mid-run: the run fails (non-zero
//! exit, `target_lost` said), its error kinds add up to its error count, and its rates are
//! over the real measured time.

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
