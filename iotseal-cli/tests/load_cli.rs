//! `iotseal bench load` against a gateway that is killed mid-run: the run fails (non-zero
//! exit, `target_lost` said), its error kinds add up to its error count, and its rates are
//! over the real measured time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

#[test]
fn bench_load_fails_when_its_target_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = tmp.path().join("gw");
    let init = iotseal()
        .args(["gateway", "init", "--alg", "ed25519", "--dir"])
        .arg(&gw)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let mut child = iotseal()
        .args(["gateway", "run", "--config"])
        .arg(gw.join("gateway.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    let pid = child.id().to_string();
    let gateway = Running(child);

    let load = iotseal()
        .args(["bench", "load", "--pins"])
        .arg(gw.join("gateway.pub.toml"))
        .arg("--token-file")
        .arg(gw.join("admin.token"))
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
