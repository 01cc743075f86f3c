//! `examples/device.c`, built with `make` against `libiotseal.a`, sends readings over HTTPS
//! (libcurl, certificate pin) to a real gateway running in this process; the admin API shows
//! every reading stored once with the values sent. With `IOTSEAL_TEST_VALGRIND=1` (CI) the same
//! runs under valgrind, which must find no invalid access and no definite leak.
//!
//! Needs a C compiler, make and libcurl's headers (Debian: `libcurl4-openssl-dev`); without them
//! the tests say so and pass, unless `IOTSEAL_TEST_C=1` (CI) makes that a failure. The library
//! is `$IOTSEAL_LIB_DIR/libiotseal.a` if set (CI: the release build), else the one cargo built
//! for this test run.
//!
//! The firmware build (no std, docs/footprint.md) runs the same way when
//! `IOTSEAL_FIRMWARE_LIB_DIR` names the folder of its `libiotseal.a`
//! (`iotseal-c/footprint/build-firmware.sh`; CI sets it): the example built with
//! `-DIOTSEAL_FROM_RAW` (examples/raw_keys.h: raw keys, the program's random source) and linked as firmware is,
//! without unwind tables (`footprint/no-eh-frame.ld`), against a real gateway.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use iotseal_device::{AdminClient, GatewayPins, IdentityFile};
use iotseal_gateway::local::{LocalGateway, start_local};
use iotseal_proto::SigAlg;
use iotseal_proto::reading::{SensorKind, decode_batch};
use sha2::Digest;

const COUNT: usize = 50;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn required() -> bool {
    std::env::var_os("IOTSEAL_TEST_C").is_some_and(|v| v == "1")
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("iotseal-c-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the C toolchain cannot build the example, if it cannot.
fn missing_toolchain() -> Option<String> {
    if !runs("cc", &["--version"]) {
        return Some("no C compiler (cc)".into());
    }
    if !runs("make", &["--version"]) {
        return Some("no make".into());
    }
    let dir = temp_dir("probe");
    let probe = dir.join("probe.c");
    std::fs::write(
        &probe,
        "#include <curl/curl.h>\nint main(void) { return curl_global_init(0); }\n",
    )
    .unwrap();
    let ok = runs(
        "cc",
        &[
            probe.to_str().unwrap(),
            "-lcurl",
            "-o",
            dir.join("probe").to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    (!ok).then(|| "no libcurl development files (Debian: libcurl4-openssl-dev)".into())
}

/// The directory of the `libiotseal.a` to link.
fn lib_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IOTSEAL_LIB_DIR") {
        let d = PathBuf::from(d);
        let d = if d.is_relative() {
            // Relative to the workspace, as CI passes it.
            crate_dir().parent().unwrap().join(d)
        } else {
            d
        };
        assert!(
            d.join("libiotseal.a").exists(),
            "IOTSEAL_LIB_DIR={}: no libiotseal.a there",
            d.display()
        );
        return d;
    }
    // This test binary is target/<profile>/deps/c_example-<hash>: cargo built the library's
    // staticlib for this run in deps/ (and `cargo build` puts one in target/<profile>/).
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let profile = deps.parent().unwrap().to_path_buf();
    let newest = [deps, profile]
        .into_iter()
        .filter_map(|d| {
            let m = std::fs::metadata(d.join("libiotseal.a"))
                .ok()?
                .modified()
                .ok()?;
            Some((m, d))
        })
        .max();
    newest
        .map(|(_, d)| d)
        .expect("no libiotseal.a next to this test binary: cargo build -p iotseal-c")
}

/// Builds the example once per test run: `make -C examples` into `target/<profile>/iotseal-c/`.
/// `None` (with the reason printed) when the toolchain is missing and not required.
fn device_binary() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| make_example(&lib_dir(), "device", "", ""))
        .as_deref()
}

/// The example built with `-DIOTSEAL_FROM_RAW` against the firmware build in
/// `$IOTSEAL_FIRMWARE_LIB_DIR`; `None` (said) if that is not set or the toolchain is missing.
fn firmware_binary() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let Some(dir) = std::env::var_os("IOTSEAL_FIRMWARE_LIB_DIR") else {
            eprintln!("SKIPPED: IOTSEAL_FIRMWARE_LIB_DIR is not set (the firmware build's folder)");
            return None;
        };
        let dir = crate_dir().parent().unwrap().join(dir);
        assert!(
            dir.join("libiotseal.a").exists(),
            "IOTSEAL_FIRMWARE_LIB_DIR={}: no libiotseal.a there",
            dir.display()
        );
        // Linked as measured (docs/footprint.md): no .eh_frame in the program.
        let script = crate_dir().join("footprint/no-eh-frame.ld");
        make_example(
            &dir,
            "device-raw",
            " -DIOTSEAL_FROM_RAW",
            &format!("-Wl,-T,{}", script.display()),
        )
    })
    .as_deref()
}

/// `make -C examples` with the library in `lib`, into `target/<profile>/iotseal-c/<name>`
/// (`cflags` added to `-O2 -g`, `ldflags` as make's `LDFLAGS`).
fn make_example(lib: &Path, name: &str, cflags: &str, ldflags: &str) -> Option<PathBuf> {
    if let Some(why) = missing_toolchain() {
        assert!(!required(), "IOTSEAL_TEST_C=1 but {why}");
        eprintln!("SKIPPED: examples/device.c cannot be built here: {why}");
        return None;
    }
    // target/<profile>/iotseal-c/<name> (this binary is target/<profile>/deps/…).
    let exe = std::env::current_exe().unwrap();
    let out = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("iotseal-c")
        .join(name);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    // -B: always link anew (the program may have been linked with another library).
    let made = Command::new("make")
        .arg("-B")
        .arg("-C")
        .arg(crate_dir().join("examples"))
        .arg(format!("IOTSEAL_LIB_DIR={}", lib.display()))
        .arg(format!("OUT={}", out.display()))
        .arg(format!("CFLAGS=-O2 -g{cflags}"))
        .arg(format!("LDFLAGS={ldflags}"))
        .output()
        .expect("running make");
    assert!(
        made.status.success(),
        "make failed:\n{}{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    eprintln!(
        "built {} against {}/libiotseal.a",
        out.display(),
        lib.display()
    );
    Some(out)
}

/// Runs `cmd` to its end, killing it after `limit`.
fn run(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the device");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

struct Setup {
    rt: tokio::runtime::Runtime,
    gw: LocalGateway,
    admin: AdminClient,
    pins_path: PathBuf,
    dir: PathBuf,
}

fn gateway() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = temp_dir("gw");
    let gw = rt.block_on(start_local(&dir, |_| {})).expect("gateway");
    let pins_path = dir.join("gateway.pub.toml");
    let pins = GatewayPins::load(&pins_path).unwrap();
    let admin = AdminClient::new(&pins, &gw.token).unwrap();
    Setup {
        rt,
        gw,
        admin,
        pins_path,
        dir,
    }
}

impl Setup {
    /// A device key file in the `iotseal device keygen` format, registered if `register`.
    fn device(&self, id: &str, register: bool) -> PathBuf {
        let p = iotseal_crypto_rustcrypto::default_provider();
        let ident = IdentityFile::generate(&p, id, SigAlg::Ed25519).unwrap();
        let path = self.dir.join(format!("{id}.key"));
        ident.save(&path).unwrap();
        if register {
            self.rt
                .block_on(self.admin.add_device(id, ident.alg, &ident.public_key))
                .unwrap();
        }
        path
    }

    fn stop(self) {
        let Self { rt, gw, dir, .. } = self;
        rt.block_on(gw.handle.stop()).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every reading the device sent is stored exactly once, with its values: the example sends
/// temperature 20 + i/4 and humidity 40 + i mod 20 for its i-th reading, with consecutive
/// message ids.
fn check_stored(s: &Setup, id: &str) {
    let stored = s.rt.block_on(s.admin.readings(id)).unwrap();
    assert_eq!(stored.len(), COUNT, "rows stored for {id}");
    let mut ids: Vec<u64> = stored.iter().map(|r| r.msg_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), COUNT, "distinct message ids");
    let first = ids[0];
    assert_eq!(ids[COUNT - 1] - first, COUNT as u64 - 1, "consecutive ids");
    for r in &stored {
        let mut batch = vec![1u8];
        batch.extend(hex::decode(&r.payload_hex).unwrap());
        let reading = decode_batch(&batch).unwrap().remove(0);
        assert_eq!(reading.msg_id, r.msg_id);
        let i = (r.msg_id - first) as f32;
        assert_eq!(
            reading.values,
            vec![
                (SensorKind::Temperature, 20.0 + i * 0.25),
                (SensorKind::Humidity, 40.0 + (i as u64 % 20) as f32)
            ],
            "values of reading {}",
            r.msg_id
        );
    }
}

#[test]
fn c_device_sends_every_reading_once_over_pinned_https() {
    let Some(bin) = device_binary() else { return };
    let s = gateway();
    let key = s.device("c-device-1", true);
    let mut cmd = Command::new(bin);
    cmd.arg(&s.pins_path)
        .arg(&key)
        .arg(COUNT.to_string())
        .arg(s.gw.handle.url());
    let out = run(cmd, Duration::from_secs(90));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{COUNT} readings acknowledged")),
        "{}",
        text(&out)
    );
    check_stored(&s, "c-device-1");

    // The URL from the pins file when none is given.
    let out = run(
        {
            let mut c = Command::new(bin);
            c.arg(&s.pins_path).arg(&key).arg("3");
            c
        },
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out));

    if std::env::var_os("IOTSEAL_TEST_VALGRIND").is_some_and(|v| v == "1") {
        assert!(
            runs("valgrind", &["--version"]),
            "IOTSEAL_TEST_VALGRIND=1 but valgrind is not installed"
        );
        let key = s.device("c-device-vg", true);
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
        ])
        .arg(bin)
        .arg(&s.pins_path)
        .arg(&key)
        .arg(COUNT.to_string())
        .arg(s.gw.handle.url());
        let out = run(cmd, Duration::from_secs(300));
        let report = text(&out);
        assert_eq!(out.status.code(), Some(0), "under valgrind:\n{report}");
        assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
        assert!(
            !report.contains("definitely lost: ") || report.contains("definitely lost: 0 bytes"),
            "{report}"
        );
        check_stored(&s, "c-device-vg");
        eprintln!("valgrind: no invalid access, no definite leak");
    } else {
        eprintln!("valgrind run skipped (IOTSEAL_TEST_VALGRIND=1 runs it)");
    }
    s.stop();
}

#[test]
fn c_device_stops_on_a_refusal_and_on_a_foreign_certificate() {
    let Some(bin) = device_binary() else { return };
    let s = gateway();

    // Not registered: the gateway refuses M3 (AuthFailed); the device stops at once.
    let key = s.device("c-device-unknown", false);
    let mut cmd = Command::new(bin);
    cmd.arg(&s.pins_path)
        .arg(&key)
        .arg("5")
        .arg(s.gw.handle.url());
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused by the gateway: auth_failed"),
        "{}",
        text(&out)
    );

    // A pins file naming another certificate (with its correct hash): curl's pin fails.
    let key = s.device("c-device-2", true);
    let other = iotseal_gateway::keys::self_signed_cert(&[]).unwrap();
    let der = iotseal_gateway::keys::first_cert_der(&other.cert_pem).unwrap();
    let mut pins = GatewayPins::load(&s.pins_path).unwrap();
    pins.tls_cert_pem = other.cert_pem.clone();
    pins.tls_cert_sha256 = hex::encode(sha2::Sha256::digest(&der));
    let foreign = s.dir.join("foreign.pub.toml");
    std::fs::write(&foreign, pins.to_toml().unwrap()).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(&foreign).arg(&key).arg("5").arg(s.gw.handle.url());
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match the pins file"),
        "{}",
        text(&out)
    );

    // A pins file whose certificate does not match its own hash: refused before any I/O.
    let mut damaged = GatewayPins::load(&s.pins_path).unwrap();
    damaged.tls_cert_pem = other.cert_pem;
    let damaged_path = s.dir.join("damaged.pub.toml");
    std::fs::write(&damaged_path, damaged.to_toml().unwrap()).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(&damaged_path).arg(&key).arg("5");
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("IOTSEAL_ERR_PIN"),
        "{}",
        text(&out)
    );
    s.stop();
}

/// libcurl's pin of the gateway's certificate, from the pins file (the std build's C API).
fn curl_pin(pins_path: &Path, key_path: &Path) -> String {
    let c = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let (pins, key) = (c(pins_path), c(key_path));
    let (mut dev, no_error) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: NUL-terminated paths; `dev` is writable; no options, no error buffer.
    let st = unsafe {
        let options = std::ptr::null();
        iotseal::iotseal_device_from_files(
            pins.as_ptr(),
            key.as_ptr(),
            options,
            &mut dev,
            no_error,
            0,
        )
    };
    assert_eq!(st, iotseal::iotseal_status::IOTSEAL_OK);
    let mut pin = [0u8; 128];
    // SAFETY: a live handle; `pin` has 128 bytes.
    let st = unsafe {
        iotseal::iotseal_gateway_curl_pin(
            dev,
            pin.as_mut_ptr().cast(),
            pin.len(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(st, iotseal::iotseal_status::IOTSEAL_OK);
    // SAFETY: a live handle, freed once.
    unsafe { iotseal::iotseal_device_free(dev) };
    std::ffi::CStr::from_bytes_until_nul(&pin)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn c_firmware_build_sends_every_reading_once() {
    let Some(bin) = firmware_binary() else { return };
    let s = gateway();
    let key = s.device("c-firmware-1", true);
    let ident = IdentityFile::load(&key).unwrap();
    let pins = GatewayPins::load(&s.pins_path).unwrap();
    // Under valgrind too with IOTSEAL_TEST_VALGRIND=1 (CI): the allocator over C malloc.
    let valgrind = std::env::var_os("IOTSEAL_TEST_VALGRIND").is_some_and(|v| v == "1");
    let mut cmd = if valgrind {
        let mut c = Command::new("valgrind");
        c.args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
        ])
        .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    // device GATEWAY KEY COUNT (examples/raw_keys.h).
    cmd.arg(format!(
        "{},{},{}",
        s.gw.handle.url(),
        curl_pin(&s.pins_path, &key),
        pins.identity[0].public_key
    ))
    .arg(format!("{},{}", ident.id, ident.private_key.as_str()))
    .arg(COUNT.to_string());
    let out = run(cmd, Duration::from_secs(if valgrind { 300 } else { 90 }));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{COUNT} readings acknowledged")),
        "{}",
        text(&out)
    );
    if valgrind {
        let report = text(&out);
        assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
    }
    check_stored(&s, "c-firmware-1");
    s.stop();
}

/// `footprint/bench.c` (the C benchmark, docs/performance.md "Devices in C"; cargo feature
/// `bench`, which the library linked must have) builds with make and runs for a tiny count:
/// both sides acknowledge every reading and print a rate. CI: `cargo test -p iotseal-c
/// --features bench --test c_example c_bench`. Needs a C compiler and make (not libcurl).
#[cfg(feature = "bench")]
#[test]
fn c_bench_builds_and_runs() {
    let missing = if !runs("cc", &["--version"]) {
        Some("no C compiler (cc)")
    } else if !runs("make", &["--version"]) {
        Some("no make")
    } else {
        None
    };
    if let Some(why) = missing {
        assert!(!required(), "IOTSEAL_TEST_C=1 but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let out = temp_dir("bench").join("bench");
    let made = Command::new("make")
        .arg("-C")
        .arg(crate_dir().join("footprint"))
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
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The table: a line per batch (1 and 100) with the Rust and C rates and their ratio.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| matches!(w.first(), Some(&"1" | &"100")))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for w in rows {
        for f in &w[1..4] {
            let v: f64 = f.parse().unwrap_or_else(|_| panic!("{f:?} in {stdout}"));
            assert!(v > 0.0, "{stdout}");
        }
    }
}
