//! `iotseal gateway init|rotate-key|run` and `iotseal device add|list|show|revoke`, as a user
//! runs them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn iotseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iotseal"))
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn init_run_manage_devices_and_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gw");
    let out = ok(iotseal()
        .args(["gateway", "init", "--dir"])
        .arg(&dir)
        .output()
        .unwrap());
    assert!(out.contains("gateway.pub.toml"), "{out}");
    for f in [
        "gateway.toml",
        "gateway.pub.toml",
        "identity-1.key",
        "tls-cert.pem",
        "tls-key.pem",
        "admin.token",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    #[cfg(unix)]
    for f in ["identity-1.key", "tls-key.pem", "admin.token"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    assert_eq!(token.trim().len(), 64);
    let config = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
    for key in [
        "max_body",
        "max_sessions_per_device",
        "require_pq_kem",
        "client_ca",
    ] {
        assert!(config.contains(key), "gateway.toml lacks {key}");
    }
    let public: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("gateway.pub.toml")).unwrap()).unwrap();
    assert_eq!(public["url"].as_str(), Some("https://127.0.0.1:8443"));
    assert_eq!(public["tls_cert_sha256"].as_str().unwrap().len(), 64);
    // One identity key per signature algorithm, so that every suite can be served.
    let algs: Vec<&str> = public["identity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["alg"].as_str().unwrap())
        .collect();
    assert_eq!(
        algs,
        ["ed25519", "ecdsa-p256", "mldsa65", "ed25519+mldsa65"],
        "{public:?}"
    );
    #[cfg(unix)]
    for f in ["identity-2.key", "identity-3.key", "identity-4.key"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    // Rotation without --alg is ambiguous with several algorithms.
    let out = iotseal()
        .args(["gateway", "rotate-key", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--alg"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second init refuses to overwrite.
    assert!(
        !iotseal()
            .args(["gateway", "init", "--dir"])
            .arg(&dir)
            .output()
            .unwrap()
            .status
            .success()
    );

    // One algorithm only (the rest of this test rotates it and runs that gateway).
    let dir = tmp.path().join("gw-ed25519");
    ok(iotseal()
        .args(["gateway", "init", "--alg", "ed25519", "--dir"])
        .arg(&dir)
        .output()
        .unwrap());
    assert!(!dir.join("identity-2.key").exists());

    // Key rotation: add, then retire the first.
    let out = ok(iotseal()
        .args(["gateway", "rotate-key", "--dir"])
        .arg(&dir)
        .output()
        .unwrap());
    assert!(out.contains("both keys are valid"), "{out}");
    let public: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("gateway.pub.toml")).unwrap()).unwrap();
    let ids = public["identity"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    let first = ids[0]["key_id"].as_str().unwrap().to_string();
    ok(iotseal()
        .args(["gateway", "rotate-key", "--dir"])
        .arg(&dir)
        .args(["--retire", &first])
        .output()
        .unwrap());
    let public: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("gateway.pub.toml")).unwrap()).unwrap();
    assert_eq!(public["identity"].as_array().unwrap().len(), 1);
    assert!(dir.join("identity-1.key.retired").exists());
    assert!(
        std::fs::read_to_string(dir.join("gateway.toml"))
            .unwrap()
            .contains("identity_keys = [\"identity-2.key\"]")
    );

    // Run it on a free port.
    let mut child = iotseal()
        .args(["gateway", "run", "--config"])
        .arg(dir.join("gateway.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut gw = Running(child);
    let mut first_line = String::new();
    stdout.read_line(&mut first_line).unwrap();
    let first_line = first_line.trim_end();
    assert!(
        first_line.starts_with("listening on https://127.0.0.1:"),
        "{first_line:?}"
    );
    let url = first_line.trim_start_matches("listening on ").to_string();
    assert!(!url.ends_with(":0"));

    let device = |args: &[&str]| {
        iotseal()
            .arg("device")
            .args(args)
            .args(["--gateway", &url, "--pins"])
            .arg(dir.join("gateway.pub.toml"))
            .arg("--token-file")
            .arg(dir.join("admin.token"))
            .output()
            .unwrap()
    };

    // Register: a public key on the command line, and a key file from `iotseal keygen`.
    let pk = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
    let out = ok(device(&[
        "add",
        "--id",
        "sensor-a",
        "--alg",
        "ed25519",
        "--public-key",
        pk,
    ]));
    assert!(out.contains("registered sensor-a"), "{out}");
    let key_file = tmp.path().join("b.key");
    ok(iotseal()
        .args(["keygen", "--alg", "ecdsa-p256", "--out"])
        .arg(&key_file)
        .output()
        .unwrap());
    ok(device(&[
        "add",
        "--id",
        "sensor-b",
        "--key-file",
        key_file.to_str().unwrap(),
    ]));
    // The same key twice is refused.
    assert!(
        !device(&["add", "--id", "sensor-c", "--public-key", pk])
            .status
            .success()
    );

    let table = ok(device(&["list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("sensor-a") && l.contains("ed25519"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("sensor-b") && l.contains("ecdsa-p256"))
    );
    let json: serde_json::Value = serde_json::from_str(&ok(device(&["list", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    let shown = ok(device(&["show", "sensor-a"]));
    assert!(shown.contains("status           active"), "{shown}");
    ok(device(&["revoke", "sensor-a"]));
    let v: serde_json::Value =
        serde_json::from_str(&ok(device(&["show", "sensor-a", "--json"]))).unwrap();
    assert_eq!(v["revoked"], true);
    assert!(!device(&["show", "nobody"]).status.success());

    // A wrong token is refused.
    let out = iotseal()
        .args(["device", "list", "--gateway", &url, "--pins"])
        .arg(dir.join("gateway.pub.toml"))
        .args(["--token", "00"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));

    // SIGTERM: a clean exit.
    let pid = gw.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = gw.0.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // The devices persisted (SQLite).
    assert!(dir.join("iotseal.db").exists());
}
