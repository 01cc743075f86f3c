//! The C API's contract, called from Rust as C would: NULL pointers, buffers too small,
//! options out of range, files that are not valid, error messages, the curl pin against
//! OpenSSL's own computation, and one request's round trip without a gateway.

use std::ffi::{CStr, CString, c_char};
use std::ptr::{null, null_mut};

use iotseal::iotseal_endpoint::*;
use iotseal::iotseal_event_kind::*;
use iotseal::iotseal_status::*;
use iotseal::*;
use iotseal_device_core::files::{GatewayPins, IdentityFile, PinnedIdentity};
use iotseal_proto::SigAlg;
use sha2::Digest;

/// A pins file (with a fresh self-signed certificate) and an identity file, as text.
fn files(alg: SigAlg) -> (String, String) {
    let p = iotseal_crypto_rustcrypto::default_provider();
    let gw = p
        .signature(SigAlg::Ed25519)
        .unwrap()
        .generate(p.random)
        .unwrap();
    let cert = iotseal_gateway::keys::self_signed_cert(&[]).unwrap();
    let der = iotseal_gateway::keys::first_cert_der(&cert.cert_pem).unwrap();
    let pins = GatewayPins {
        url: "https://127.0.0.1:8443".into(),
        tls_cert_pem: cert.cert_pem,
        tls_cert_sha256: hex::encode(sha2::Sha256::digest(&der)),
        identity: vec![PinnedIdentity {
            alg: SigAlg::Ed25519,
            public_key: hex::encode(gw.public_key()),
            key_id: String::new(),
        }],
    };
    let key = IdentityFile::generate(&iotseal_crypto_rustcrypto::default_provider(), "api-1", alg)
        .unwrap();
    (pins.to_toml().unwrap(), key.to_toml().unwrap().to_string())
}

/// `iotseal_device_from_buffers` with the message it leaves.
fn create(
    pins: &str,
    key: &str,
    options: Option<&iotseal_options>,
) -> (iotseal_status, *mut iotseal_device, String) {
    let mut dev = std::ptr::dangling_mut::<iotseal_device>(); // must become NULL on failure
    let mut err = [0 as c_char; 256];
    // SAFETY: the buffers are valid for their lengths; `dev` and `err` are writable.
    let st = unsafe {
        iotseal_device_from_buffers(
            pins.as_ptr(),
            pins.len(),
            key.as_ptr(),
            key.len(),
            options.map_or(null(), |o| o as *const _),
            &mut dev,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    // SAFETY: NUL-terminated by the library (or still all zeros).
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    (st, dev, msg)
}

fn last_error(dev: *const iotseal_device) -> String {
    let mut buf = [0 as c_char; 512];
    // SAFETY: a live handle; `buf` has 512 bytes.
    unsafe { iotseal_last_error(dev, buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by iotseal_last_error.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn creation_checks_its_arguments_and_says_why() {
    let (pins, key) = files(SigAlg::Ed25519);
    let (st, dev, msg) = create(&pins, &key, None);
    assert_eq!(st, IOTSEAL_OK, "{msg}");
    assert!(!dev.is_null());
    // SAFETY: a live handle, freed once.
    unsafe { iotseal_device_free(dev) };
    // SAFETY: NULL is ignored.
    unsafe { iotseal_device_free(null_mut()) };

    // NULL `out`.
    // SAFETY: valid buffers; `out` NULL on purpose.
    let st = unsafe {
        iotseal_device_from_buffers(
            pins.as_ptr(),
            pins.len(),
            key.as_ptr(),
            key.len(),
            null(),
            null_mut(),
            null_mut(),
            0,
        )
    };
    assert_eq!(st, IOTSEAL_ERR_NULL);
    // NULL text with a length.
    let mut dev = null_mut();
    // SAFETY: `pins_toml` NULL on purpose with a length; the rest valid.
    let st = unsafe {
        iotseal_device_from_buffers(
            null(),
            10,
            key.as_ptr(),
            key.len(),
            null(),
            &mut dev,
            null_mut(),
            0,
        )
    };
    assert_eq!(st, IOTSEAL_ERR_NULL);
    assert!(dev.is_null());

    // Not a pins file; not UTF-8; a key that does not match; an algorithm left out.
    let (st, dev, msg) = create("url = 3", &key, None);
    assert_eq!((st, dev.is_null()), (IOTSEAL_ERR_CONFIG, true));
    assert!(msg.contains("not a valid file"), "{msg}");
    let (st, _, msg) = create(&pins, "\u{fffd}", None);
    assert_eq!(st, IOTSEAL_ERR_CONFIG, "{msg}");
    let (other_pins, other_key) = files(SigAlg::Ed25519);
    let mixed = key.replace(
        key.lines().find(|l| l.starts_with("public_key")).unwrap(),
        other_key
            .lines()
            .find(|l| l.starts_with("public_key"))
            .unwrap(),
    );
    let (st, _, msg) = create(&other_pins, &mixed, None);
    assert_eq!(st, IOTSEAL_ERR_CONFIG);
    assert!(msg.contains("does not match"), "{msg}");
    if !cfg!(feature = "all-algorithms") {
        let (_, mldsa) = files(SigAlg::MlDsa65);
        let (st, _, msg) = create(&pins, &mldsa, None);
        assert_eq!(st, IOTSEAL_ERR_CONFIG);
        assert!(msg.contains("this build"), "{msg}");
    }

    // Options out of range.
    let o = iotseal_options {
        readings_per_record: 5000,
        ..Default::default()
    };
    let (st, _, msg) = create(&pins, &key, Some(&o));
    assert_eq!(st, IOTSEAL_ERR_CONFIG);
    assert!(msg.contains("5000"), "{msg}");
    let o = iotseal_options {
        max_request_len: 100,
        ..Default::default()
    };
    assert_eq!(create(&pins, &key, Some(&o)).0, IOTSEAL_ERR_CONFIG);

    // A message cut to a small buffer, NUL-terminated.
    let mut dev = null_mut();
    let mut small = [0x55 as c_char; 8];
    let bad = "url = 3";
    // SAFETY: valid buffers and lengths.
    let st = unsafe {
        iotseal_device_from_buffers(
            bad.as_ptr(),
            bad.len(),
            key.as_ptr(),
            key.len(),
            null(),
            &mut dev,
            small.as_mut_ptr(),
            small.len(),
        )
    };
    assert_eq!(st, IOTSEAL_ERR_CONFIG);
    assert_eq!(small[7], 0);

    // Files: a missing one is an I/O error naming the path.
    let dir = std::env::temp_dir().join(format!("iotseal-c-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pins_path = CString::new(dir.join("gateway.pub.toml").to_str().unwrap()).unwrap();
    let key_path = CString::new(dir.join("missing.key").to_str().unwrap()).unwrap();
    std::fs::write(dir.join("gateway.pub.toml"), &pins).unwrap();
    let mut err = [0 as c_char; 256];
    // SAFETY: NUL-terminated paths, writable `dev` and `err`.
    let st = unsafe {
        iotseal_device_from_files(
            pins_path.as_ptr(),
            key_path.as_ptr(),
            null(),
            &mut dev,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert_eq!(st, IOTSEAL_ERR_IO);
    // SAFETY: NUL-terminated by the library.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
    assert!(msg.contains("missing.key"), "{msg}");
    std::fs::write(dir.join("d.key"), &key).unwrap();
    let key_path = CString::new(dir.join("d.key").to_str().unwrap()).unwrap();
    // SAFETY: as above; no error buffer.
    let st = unsafe {
        iotseal_device_from_files(
            pins_path.as_ptr(),
            key_path.as_ptr(),
            null(),
            &mut dev,
            null_mut(),
            0,
        )
    };
    assert_eq!(st, IOTSEAL_OK);
    // SAFETY: a live handle, freed once.
    unsafe { iotseal_device_free(dev) };
    // SAFETY: NULL path on purpose.
    let st = unsafe {
        iotseal_device_from_files(null(), key_path.as_ptr(), null(), &mut dev, null_mut(), 0)
    };
    assert_eq!(st, IOTSEAL_ERR_NULL);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn strings_buffers_and_the_curl_pin() {
    let (pins, key) = files(SigAlg::Ed25519);
    let (st, dev, msg) = create(&pins, &key, None);
    assert_eq!(st, IOTSEAL_OK, "{msg}");

    let mut len = 0usize;
    let mut small = [0 as c_char; 4];
    // SAFETY: a live handle; `small` has 4 bytes.
    let st = unsafe { iotseal_gateway_url(dev, small.as_mut_ptr(), small.len(), &mut len) };
    assert_eq!((st, len), (IOTSEAL_ERR_BUFFER_TOO_SMALL, 22));
    assert!(
        last_error(dev).contains("23 bytes needed"),
        "{}",
        last_error(dev)
    );
    let mut url = [0 as c_char; 23];
    // SAFETY: as above; `url` has 23 bytes, `len` may be NULL.
    let st = unsafe { iotseal_gateway_url(dev, url.as_mut_ptr(), url.len(), null_mut()) };
    assert_eq!(st, IOTSEAL_OK);
    // SAFETY: NUL-terminated by the library.
    let url = unsafe { CStr::from_ptr(url.as_ptr()) };
    assert_eq!(url.to_str().unwrap(), "https://127.0.0.1:8443");
    // SAFETY: NULL buffer with capacity 0: a size query.
    let st = unsafe { iotseal_gateway_curl_pin(dev, null_mut(), 0, &mut len) };
    assert_eq!(st, IOTSEAL_ERR_BUFFER_TOO_SMALL);
    let mut pin = vec![0 as c_char; len + 1];
    // SAFETY: `pin` has len + 1 bytes.
    let st = unsafe { iotseal_gateway_curl_pin(dev, pin.as_mut_ptr(), pin.len(), &mut len) };
    assert_eq!(st, IOTSEAL_OK, "{}", last_error(dev));
    // SAFETY: NUL-terminated by the library.
    let pin = unsafe { CStr::from_ptr(pin.as_ptr()) }
        .to_str()
        .unwrap()
        .to_string();
    assert!(pin.starts_with("sha256//") && pin.len() == 8 + 44, "{pin}");
    if let Some(expected) = openssl_pin(&pins) {
        assert_eq!(pin, expected, "libcurl's documented openssl recipe");
    } else {
        eprintln!("openssl not found: the pin was not compared with its computation");
    }
    // SAFETY: a live handle, freed once.
    unsafe { iotseal_device_free(dev) };

    // A certificate that does not match its hash.
    let pins_toml: GatewayPins = GatewayPins::from_toml(&pins).unwrap();
    let mut damaged = pins_toml;
    damaged.tls_cert_sha256 = "00".repeat(32);
    let (st, dev, msg) = create(&damaged.to_toml().unwrap(), &key, None);
    assert_eq!(st, IOTSEAL_OK, "{msg}");
    let mut buf = [0 as c_char; 128];
    // SAFETY: a live handle; `buf` has 128 bytes.
    let st = unsafe { iotseal_gateway_curl_pin(dev, buf.as_mut_ptr(), buf.len(), null_mut()) };
    assert_eq!(st, IOTSEAL_ERR_PIN);
    assert!(
        last_error(dev).contains("does not match"),
        "{}",
        last_error(dev)
    );
    // A message cut to a small buffer.
    let mut tiny = [0 as c_char; 5];
    // SAFETY: `tiny` has 5 bytes.
    let st = unsafe { iotseal_last_error(dev, tiny.as_mut_ptr(), tiny.len()) };
    assert_eq!((st, tiny[4]), (IOTSEAL_ERR_BUFFER_TOO_SMALL, 0));
    // SAFETY: NULL buffer on purpose.
    let r = unsafe { iotseal_last_error(dev, null_mut(), 0) };
    assert_eq!(r, IOTSEAL_ERR_NULL);
    // SAFETY: a live handle, freed once.
    unsafe { iotseal_device_free(dev) };
}

/// libcurl's recipe for a pin, by OpenSSL: the certificate's public key, DER, SHA-256, base64.
fn openssl_pin(pins: &str) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let pem = GatewayPins::from_toml(pins).ok()?.tls_cert_pem;
    let run = |args: &[&str], input: &[u8]| -> Option<Vec<u8>> {
        let mut c = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        c.stdin.take()?.write_all(input).ok()?;
        let o = c.wait_with_output().ok()?;
        o.status.success().then_some(o.stdout)
    };
    let public = run(&["x509", "-noout", "-pubkey"], pem.as_bytes())?;
    let der = run(&["pkey", "-pubin", "-outform", "DER"], &public)?;
    let digest = sha2::Sha256::digest(&der);
    let b64 = run(&["base64", "-A"], &digest)?;
    Some(format!("sha256//{}", String::from_utf8(b64).ok()?.trim()))
}

#[test]
fn one_request_round_trip_without_a_gateway() {
    let (pins, key) = files(SigAlg::Ed25519);
    let o = iotseal_options {
        queue_capacity: 2,
        first_msg_id: 1000,
        ..Default::default()
    };
    let (st, dev, msg) = create(&pins, &key, Some(&o));
    assert_eq!(st, IOTSEAL_OK, "{msg}");
    let now = 1_767_225_600_000u64;
    let kinds = [IOTSEAL_SENSOR_TEMPERATURE, IOTSEAL_SENSOR_HUMIDITY];
    let values = [21.5f32, 40.0];
    let mut id = 0u64;
    // SAFETY: a live handle; arrays of 2; `id` writable.
    let st = unsafe { iotseal_push(dev, now, kinds.as_ptr(), values.as_ptr(), 2, &mut id) };
    assert_eq!((st, id), (IOTSEAL_OK, 1000));
    // SAFETY: NULL arrays with n = 0 (a reading without values), NULL msg_id.
    let st = unsafe { iotseal_push(dev, now, null(), null(), 0, null_mut()) };
    assert_eq!(st, IOTSEAL_OK);
    // SAFETY: as above.
    let st = unsafe { iotseal_push(dev, now, kinds.as_ptr(), values.as_ptr(), 2, &mut id) };
    assert_eq!(st, IOTSEAL_ERR_QUEUE_FULL);
    assert!(
        last_error(dev).contains("queue full"),
        "{}",
        last_error(dev)
    );
    // SAFETY: NULL arrays with n > 0.
    let st = unsafe { iotseal_push(dev, now, null(), values.as_ptr(), 2, null_mut()) };
    assert_eq!(st, IOTSEAL_ERR_NULL);
    let many = [1u8; 33];
    let vals = [0f32; 33];
    // SAFETY: arrays of 33.
    let st = unsafe { iotseal_push(dev, now, many.as_ptr(), vals.as_ptr(), 33, null_mut()) };
    assert_eq!(st, IOTSEAL_ERR_INVALID_ARGUMENT);
    let mut pending = 0usize;
    let mut next = 0u64;
    // SAFETY: a writable output.
    assert_eq!(unsafe { iotseal_pending(dev, &mut pending) }, IOTSEAL_OK);
    // SAFETY: a writable output.
    assert_eq!(unsafe { iotseal_next_msg_id(dev, &mut next) }, IOTSEAL_OK);
    assert_eq!((pending, next), (2, 1002));

    // The hello: asked with no buffer first (its size), then taken.
    let mut ep = IOTSEAL_ENDPOINT_RECORDS;
    let mut len = 0usize;
    // SAFETY: NULL buffer with capacity 0; writable outputs.
    let st = unsafe { iotseal_poll_transmit(dev, now, &mut ep, null_mut(), 0, &mut len) };
    assert_eq!(st, IOTSEAL_ERR_BUFFER_TOO_SMALL);
    assert!(len > 1000, "a hybrid hello carries an ML-KEM share: {len}");
    let mut buf = vec![0u8; len];
    let needed = len;
    // SAFETY: `buf` has `len` bytes.
    let st =
        unsafe { iotseal_poll_transmit(dev, now, &mut ep, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(
        (st, ep, len),
        (IOTSEAL_OK, IOTSEAL_ENDPOINT_HANDSHAKE, needed)
    );
    assert_eq!(buf[0], 0x01, "M1");
    // SAFETY: as above.
    let st =
        unsafe { iotseal_poll_transmit(dev, now, &mut ep, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((st, len), (IOTSEAL_NONE, 0), "one request in flight");
    // SAFETY: NULL outputs on purpose.
    let st = unsafe { iotseal_poll_transmit(dev, now, null_mut(), buf.as_mut_ptr(), 1, &mut len) };
    assert_eq!(st, IOTSEAL_ERR_NULL);

    // The refused push left an event.
    let mut ev = iotseal_event {
        kind: IOTSEAL_EVENT_OTHER,
        count: 0,
        refusal: 0,
        session_id: 0,
        epoch: 0,
        until_ms: 0,
    };
    // SAFETY: writable event.
    assert_eq!(unsafe { iotseal_poll_event(dev, &mut ev) }, IOTSEAL_OK);
    assert_eq!(ev.kind, IOTSEAL_EVENT_QUEUE_FULL);

    // Busy with Retry-After: 2 → a backoff of at least 2 s, reported as an event.
    let busy = [0x7fu8, 6];
    // SAFETY: `busy` has 2 bytes.
    let st = unsafe { iotseal_handle_response(dev, now, 503, busy.as_ptr(), 2, 2) };
    assert_eq!(st, IOTSEAL_OK);
    // SAFETY: writable event.
    assert_eq!(unsafe { iotseal_poll_event(dev, &mut ev) }, IOTSEAL_OK);
    assert_eq!((ev.kind, ev.refusal), (IOTSEAL_EVENT_BACKING_OFF, 6));
    assert!(ev.until_ms >= now + 2000);
    // SAFETY: as above.
    assert_eq!(unsafe { iotseal_poll_event(dev, &mut ev) }, IOTSEAL_NONE);
    let mut deadline = 0u64;
    // SAFETY: writable output.
    let r = unsafe { iotseal_poll_timeout(dev, &mut deadline) };
    assert_eq!(r, IOTSEAL_OK);
    assert_eq!(deadline, ev.until_ms);
    // Nothing before the deadline; the same hello after it; then no answer at all.
    // SAFETY: `buf` has its length.
    let st = unsafe {
        iotseal_poll_transmit(
            dev,
            now + 1000,
            &mut ep,
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        )
    };
    assert_eq!(st, IOTSEAL_NONE);
    // SAFETY: as above.
    let st = unsafe {
        iotseal_poll_transmit(
            dev,
            deadline,
            &mut ep,
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        )
    };
    assert_eq!((st, len), (IOTSEAL_OK, needed));
    // SAFETY: a live handle.
    let r = unsafe { iotseal_handle_transport_error(dev, deadline) };
    assert_eq!(r, IOTSEAL_OK);
    // SAFETY: writable event.
    assert_eq!(unsafe { iotseal_poll_event(dev, &mut ev) }, IOTSEAL_OK);
    assert_eq!((ev.kind, ev.refusal), (IOTSEAL_EVENT_BACKING_OFF, 0));
    // A NULL body with a length.
    // SAFETY: NULL body on purpose.
    let r = unsafe { iotseal_handle_response(dev, now, 200, null(), 5, 0) };
    assert_eq!(r, IOTSEAL_ERR_NULL);

    let mut stats = iotseal_stats::default();
    // SAFETY: writable output.
    assert_eq!(unsafe { iotseal_device_stats(dev, &mut stats) }, IOTSEAL_OK);
    assert_eq!(
        (stats.requests, stats.transport_errors, stats.backoffs),
        (2, 1, 2)
    );
    let mut n = 0usize;
    // SAFETY: NULL ids with capacity 0.
    let r = unsafe { iotseal_acknowledged_ids(dev, null_mut(), 0, &mut n) };
    assert_eq!(r, IOTSEAL_OK);
    assert_eq!(n, 0);
    // SAFETY: a live handle, freed once.
    unsafe { iotseal_device_free(dev) };

    // NULL handles.
    // SAFETY: NULL handles on purpose (four calls).
    let nulls = [
        unsafe { iotseal_pending(null(), &mut pending) },
        // SAFETY: as above.
        unsafe { iotseal_connect(null_mut()) },
        // SAFETY: as above.
        unsafe { iotseal_resume(null_mut()) },
        // SAFETY: as above.
        unsafe { iotseal_handle_timeout(null_mut(), now) },
    ];
    assert_eq!(nulls, [IOTSEAL_ERR_NULL; 4]);
}

/// The caller's random source of `iotseal_device_from_raw`: counts the bytes drawn (`ctx` is an
/// `AtomicUsize`) and takes them from the operating system.
unsafe extern "C" fn counting_random(ctx: *mut std::ffi::c_void, buf: *mut u8, len: usize) -> i32 {
    // SAFETY: the test passes a live AtomicUsize as ctx.
    let drawn = unsafe { &*ctx.cast::<std::sync::atomic::AtomicUsize>() };
    drawn.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the library passes a buffer valid for `len` writes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    use iotseal_proto::crypto::SecureRandom;
    i32::from(iotseal_crypto_rustcrypto::OsRandom.fill(out).is_err())
}

#[test]
fn from_raw_keys_with_the_callers_random_source() {
    let p = iotseal_crypto_rustcrypto::default_provider();
    let sig = p.signature(SigAlg::Ed25519).unwrap();
    let gateway = sig.generate(p.random).unwrap().public_key();
    let ident = IdentityFile::generate(&p, "raw-1", SigAlg::Ed25519).unwrap();
    let private = hex::decode(ident.private_key.as_str()).unwrap();
    let drawn = std::sync::atomic::AtomicUsize::new(0);
    let pinned = [iotseal_pinned_key {
        alg: IOTSEAL_SIG_ED25519,
        public_key: gateway.as_ptr(),
        public_key_len: gateway.len(),
    }];
    let config = iotseal_raw_config {
        device_id: ident.id.as_ptr(),
        device_id_len: ident.id.len(),
        alg: IOTSEAL_SIG_ED25519,
        private_key: private.as_ptr(),
        private_key_len: private.len(),
        pins: pinned.as_ptr(),
        pins_len: 1,
        random: Some(counting_random),
        random_ctx: (&raw const drawn).cast_mut().cast(),
    };
    let raw = |c: &iotseal_raw_config| {
        let mut dev = std::ptr::dangling_mut::<iotseal_device>();
        let mut err = [0 as c_char; 256];
        // SAFETY: `c`'s pointers are valid for their lengths; outputs writable.
        let st = unsafe { iotseal_device_from_raw(c, null(), &mut dev, err.as_mut_ptr(), 256) };
        // SAFETY: NUL-terminated by the library (or still all zeros).
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        (st, dev, msg)
    };

    let (st, dev, msg) = raw(&config);
    assert_eq!(st, IOTSEAL_OK, "{msg}");
    let before = drawn.load(std::sync::atomic::Ordering::Relaxed);
    let (mut ep, mut len, mut buf) = (IOTSEAL_ENDPOINT_RECORDS, 0usize, vec![0u8; 4096]);
    // SAFETY: a live handle; `buf` has its length.
    let st = unsafe { iotseal_connect(dev) };
    assert_eq!(st, IOTSEAL_OK);
    // SAFETY: as above.
    let st = unsafe { iotseal_poll_transmit(dev, 1, &mut ep, buf.as_mut_ptr(), 4096, &mut len) };
    assert_eq!(
        (st, ep, buf[0]),
        (IOTSEAL_OK, IOTSEAL_ENDPOINT_HANDSHAKE, 0x01)
    );
    assert!(
        drawn.load(std::sync::atomic::Ordering::Relaxed) >= before + 32,
        "the hello's key share came from the caller's source"
    );
    // No pins file: no URL, no curl pin.
    // SAFETY: a live handle; `buf` has its length.
    let st = unsafe { iotseal_gateway_url(dev, buf.as_mut_ptr().cast(), 4096, null_mut()) };
    assert_eq!(st, IOTSEAL_ERR_UNSUPPORTED);
    assert!(last_error(dev).contains("iotseal_device_from_raw"));
    // SAFETY: a live handle, freed once.
    unsafe { iotseal_device_free(dev) };

    // NULL random: the operating system's (builds with std).
    let (st, dev, msg) = raw(&iotseal_raw_config {
        random: None,
        ..config
    });
    assert_eq!(st, IOTSEAL_OK, "{msg}");
    // SAFETY: a live handle, freed once.
    unsafe { iotseal_device_free(dev) };

    let refused = [
        (
            iotseal_raw_config { alg: 99, ..config },
            IOTSEAL_ERR_INVALID_ARGUMENT,
            "alg: unknown algorithm code 99",
        ),
        (
            iotseal_raw_config {
                private_key_len: 31,
                ..config
            },
            IOTSEAL_ERR_CONFIG,
            "private_key",
        ),
        (
            iotseal_raw_config {
                pins: null(),
                ..config
            },
            IOTSEAL_ERR_NULL,
            "pins is NULL",
        ),
    ];
    for (c, status, why) in refused {
        let (st, dev, msg) = raw(&c);
        assert_eq!((st, dev), (status, null_mut()), "{msg}");
        assert!(msg.contains(why), "{msg}");
    }
    let mut dev = null_mut();
    // SAFETY: NULL config on purpose.
    let st = unsafe { iotseal_device_from_raw(null(), null(), &mut dev, null_mut(), 0) };
    assert_eq!(st, IOTSEAL_ERR_NULL);
}
